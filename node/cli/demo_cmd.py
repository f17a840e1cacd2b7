"""``derot demo``: narrated demonstrations.

``derot demo`` runs the mission end to end on a devnet (:mod:`derot.cli.mission`).
``derot demo crypto`` runs the threshold cryptography in one process (no chain, no network): a DKG,
key derivation for an app, a threshold signature, and a reshare that keeps the group keys and the
app's key.
"""

from __future__ import annotations

import time

from derot.cli.errors import guarded


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the mission end to end (default), or `demo crypto` for the in-process cryptography"
    )
    parser.add_argument("--dir", help="keep the devnet in this directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="do not delete the devnet directory afterwards")
    sub = parser.add_subparsers(dest="demo", metavar="DEMO")
    crypto = sub.add_parser("crypto", help="in-process DKG, key derivation, threshold signing and resharing")
    crypto.add_argument("--nodes", type=int, default=5)
    crypto.add_argument("--threshold", type=int, default=3)
    crypto.set_defaults(func=guarded(run_crypto_demo))
    parser.set_defaults(func=_default_demo)


def _default_demo(args) -> int:
    from derot.cli import mission

    return mission.run(args)


def _step(n: int, text: str) -> None:
    print(f"\n[{n}] {text}")


def run_crypto_demo(args) -> int:
    from derot.constants import DST_CERT
    from derot.crypto import kd
    from derot.crypto import threshold as th
    from derot.crypto.appkeys import derive_app_keys
    from derot.crypto.bls import G1
    from derot.crypto.dkg import DkgConfig
    from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions

    n, t = args.nodes, args.threshold
    network = b"derot-crypto-demo"
    print(f"derot crypto demo: {n} nodes, threshold {t}, all in this process")

    _step(1, f"distributed key generation (joint-Feldman with complaints) among {n} nodes")
    identities = generate_identities(n)
    names = {f"node-{i}": ident for i, ident in enumerate(identities, start=1)}
    config = DkgConfig(network, 1, committee_of(identities, t))
    started = time.perf_counter()
    sessions = make_sessions(config, names)
    LocalBroadcast(sessions).run()
    results = {name: s.result for name, s in sessions.items()}
    first = next(iter(results.values()))
    print(f"    done in {time.perf_counter() - started:.2f} s; qualified dealers {list(first.qualified)}")
    print(f"    group key (sig) {first.sig.group_key.to_bytes().hex()[:32]}…")
    print(f"    group key (kd)  {first.kd.group_key.to_bytes().hex()[:32]}…")
    print("    every node holds only its own shares; no node ever held either secret")

    app_id = bytes.fromhex("a1" * 32)

    def derive(results_by_node, label: str, corrupt: str | None = None):
        transport = kd.TransportKey.generate()
        hashed = kd.kd_point(app_id, 1)
        any_result = next(iter(results_by_node.values()))
        answers = {}
        for name, result in results_by_node.items():
            share = kd.derive_share(result.shares.kd, hashed, transport.public)
            if name == corrupt:
                share = kd.EncryptedKey(share.c1, share.c2, share.c3 + G1.generator())
            answers[result.index] = share
        combined = kd.combine_verified(
            answers, any_result.threshold, any_result.kd.group_key, any_result.kd.share_keys, hashed, transport.public
        )
        root = kd.decrypt(combined.key, transport, any_result.kd.group_key, hashed)
        keys = derive_app_keys(root)
        bad = f"; excluded bad share from node index {list(combined.bad)}" if combined.bad else ""
        print(f"    {label}: Ethereum address {keys.ethereum_address} (shares {list(combined.used)}{bad})")
        return keys.ethereum_address

    _step(2, "an app derives its identity key (vetKD): nodes answer encrypted shares, the app decrypts")
    address = derive(results, "derived", corrupt="node-2")

    _step(3, "threshold-sign a certificate digest and verify it against the group key")
    digest = b"\x07" * 32
    partials = {r.index: th.partial_sign(r.shares.sig, digest, DST_CERT) for r in results.values()}
    signed = th.combine_verified(partials, t, first.sig.group_key, first.sig.share_keys, digest, DST_CERT)
    print(f"    signature {signed.signature.to_bytes().hex()[:32]}… verifies: "
          f"{th.verify(first.sig.group_key, digest, signed.signature, DST_CERT)}")

    new_n, new_t = n + 2, t + 1
    _step(4, f"reshare to {new_n} nodes, threshold {new_t} (two new members join)")
    newcomers = generate_identities(2)
    all_names = dict(names, **{f"node-{n + i}": ident for i, ident in enumerate(newcomers, start=1)})
    new_config = DkgConfig(network, 2, committee_of(identities + newcomers, new_t), first.as_previous_epoch())
    old_shares = {name: r.shares for name, r in results.items()}
    reshare = make_sessions(new_config, all_names, old_shares=old_shares)
    LocalBroadcast(reshare).run()
    new_results = {name: s.result for name, s in reshare.items() if s.result.shares is not None}
    after = next(iter(new_results.values()))
    same = after.sig.group_key == first.sig.group_key and after.kd.group_key == first.kd.group_key
    print(f"    group keys unchanged: {same}")
    again = derive(new_results, "derived after reshare")
    print(f"    same app key after reshare: {again == address}")
    return 0 if same and again == address else 1
