"""In-process DKG, per-member CPU with warm caches vs with the caches flushed before every delivery."""
import sys, time, statistics
sys.path.insert(0, "bench")  # run from the repository root
import dkg
from derot.crypto.dkg import DkgConfig
from derot.crypto.dkg.local import LocalBroadcast, committee_of, generate_identities, make_sessions
n = int(sys.argv[1]); mb = int(sys.argv[2]) if len(sys.argv) > 2 else 48
t = dkg.default_threshold(n)
identities = dict(enumerate(generate_identities(n), start=1))
config = DkgConfig(dkg.NETWORK, 1, committee_of(list(identities.values()), t))
target, source = bytearray(mb << 20), bytes(mb << 20)
for mode in ("warm", "cold", "warm", "cold"):
    sessions = make_sessions(config, identities)
    def flush(sender, recipient, message, data):
        target[:] = source
        return data
    net = LocalBroadcast(sessions, intercept=flush if mode == "cold" else None)
    t0 = time.perf_counter(); net.run(); wall = time.perf_counter() - t0
    cpu = list(net.cpu_seconds.values())
    print(f"n={n} {mode}: CPU/member median {statistics.median(cpu):.3f} s (wall {wall:.1f} s)", flush=True)
