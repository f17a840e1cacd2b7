"""Node configuration: a TOML file, overridden by environment variables.

Every key can be overridden with ``DEROT_<SECTION>_<KEY>`` (upper case), e.g.
``DEROT_CHAIN_RPC_URL=http://10.0.0.5:8545``. Secrets are never read from the TOML file: the sealing
passphrase and the operator key come from the environment or from files named in the config.

Example::

    [node]
    data_dir = "/var/lib/derot"
    public_listen = "0.0.0.0:7400"
    peer_listen = "0.0.0.0:7401"
    advertise_host = "node1.example.org"

    [chain]
    rpc_url = "http://127.0.0.1:8545"
    rpc_urls = "https://rpc-b.example,https://rpc-c.example"   # optional: more providers
    rpc_quorum = 2               # how many of them must agree on every read
    registry = "0x…"
    confirmations = 2
    finality = "tag"             # erase old shares only at the `finalized` block ("depth": head − finality_depth)
    max_staleness = 120          # seconds; past it the node refuses with chain_stale and reports NOT_SERVING

    [attest]
    mode = "production"          # or "devnet"
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from derot.errors import DerotError


class ConfigError(DerotError):
    """The configuration is missing, malformed or inconsistent; the message names the key."""

    reason = "config_invalid"


@dataclass(frozen=True)
class NodeSection:
    data_dir: str = "./derot-data"
    public_listen: str = "127.0.0.1:7400"
    peer_listen: str = "127.0.0.1:7401"
    advertise_host: str = "127.0.0.1"
    name: str = "derot-node"
    #: devnet-only deliberate misbehaviour for fault tests (derot.service.faults); empty in production
    faults: str = ""
    #: devnet-only: "HOST:PORT=HOST:PORT,..." dial the second address for a peer registered with the first
    #: (a benchmark's WAN delay proxies, bench/wan.py); empty in production
    peer_routes: str = ""


@dataclass(frozen=True)
class SealSection:
    #: "keyfile" (32 random bytes in data_dir/seal.key), "passphrase" (env DEROT_SEAL_PASSPHRASE) or "snp"
    #: (the SEV-SNP secure processor's derived key); see docs/tee-guests.md for what each protects
    method: str = "keyfile"
    key_file: str = ""


@dataclass(frozen=True)
class ChainSection:
    rpc_url: str = "http://127.0.0.1:8545"
    #: more RPC endpoints, comma-separated, followed together with ``rpc_url`` (docs/chain-trust.md)
    rpc_urls: str = ""
    #: how many endpoints must give the same answer for every read (1 <= rpc_quorum <= endpoints)
    rpc_quorum: int = 1
    registry: str = ""
    confirmations: int = 1
    poll_interval: float = 0.5
    #: when a block is final, before any one-way action (erasing shares): "tag" = the chain's `finalized`
    #: block, "depth" = head − finality_depth (chains without finality)
    finality: str = "tag"
    finality_depth: int = 64
    #: seconds the followed block may lag the wall clock before the node refuses with chain_stale
    max_staleness: float = 120.0
    #: first block to follow (the registry's deployment block)
    start_block: int = 0
    #: file holding the operator's hex private key (env DEROT_OPERATOR_KEY takes precedence)
    operator_key_file: str = ""


@dataclass(frozen=True)
class AttestSection:
    #: "production" (pinned vendor roots only) or "devnet" (also trusts the devnet roots below)
    mode: str = "production"
    devnet_roots: str = ""
    pccs_url: str = "https://api.trustedservices.intel.com/sgx/certification/v4/"
    collateral_cache: str = ""
    #: accepted age of an app request's timestamp, seconds
    freshness_window: int = 300
    #: where this node's own membership evidence comes from: "devnet:tdx", "devnet:snp", "tdx" or "snp"
    node_tee: str = ""
    #: SEV-SNP: a VCEK/VLEK file (DER or PEM) for hosts that do not supply one (docs/tee-guests.md)
    vek_path: str = ""
    #: TDX: an offline collateral bundle (dcap-qvl JSON) attached to this node's evidence
    collateral_path: str = ""
    #: SEV-SNP: the VMPL to ask reports for; -1 = the guest's own (privlevel_floor)
    privlevel: int = -1
    #: NVIDIA golden measurements (RIMs, docs/attestation.md): an offline bundle directory of signed SWID tags
    #: and/or a RIM service URL (NVIDIA's is derot.attest.nvidia_rim.NVIDIA_RIM_SERVICE). Either one set: every
    #: GPU's measurement blocks are compared with its driver and VBIOS RIMs (``gpu_rim`` policy rule)
    rim_dir: str = ""
    rim_url: str = ""
    #: where fetched RIMs are cached (default: <data_dir>/rim)
    rim_cache: str = ""

    def device_options(self) -> dict:
        """Keyword arguments for :func:`derot.app.tee.detect_device` (``expect`` included for "tdx"/"snp")."""
        from derot.constants import Platform

        options: dict = {"vek_path": self.vek_path or None, "collateral_path": self.collateral_path or None,
                         "privlevel": None if self.privlevel < 0 else self.privlevel}
        if self.node_tee in ("tdx", "snp"):
            options["expect"] = Platform.TDX if self.node_tee == "tdx" else Platform.SEV_SNP
        return options


@dataclass(frozen=True)
class LimitsSection:
    max_request_bytes: int = 256 * 1024
    max_concurrent_requests: int = 64
    request_deadline: float = 10.0
    peer_deadline: float = 5.0
    #: a gateway first asks t members (itself and the t-1 peers it measured fastest) plus this many more;
    #: everyone else if one of them fails or a share is bad, and the next peer in line whenever one stays
    #: silent past its hedge delay: clamp(its round-trip estimate × hedge_factor, hedge_floor, hedge_cap),
    #: or ``hedge_after`` while it has no estimate yet (derot.service.latency); hedges before ``hedge_cap`` are
    #: at most ``hedge_budget`` per request in the long run (plus a burst of 10), later ones always allowed
    extra_peers: int = 0
    hedge_after: float = 0.05
    hedge_factor: float = 2.0
    hedge_floor: float = 0.01
    hedge_cap: float = 0.5
    hedge_budget: float = 0.1
    certificate_lifetime: int = 24 * 3600
    max_certificate_lifetime: int = 7 * 24 * 3600


@dataclass(frozen=True)
class DkgSection:
    #: per-phase timeout; a phase ends early once every expected message has arrived
    phase_timeout: float = 30.0


@dataclass(frozen=True)
class MqttSection:
    #: e.g. "mqtt://127.0.0.1:1883"; empty disables the notice publisher
    url: str = ""
    #: seconds of chain time after which an unchanged notice is signed and published again (freshness)
    heartbeat: float = 300.0


@dataclass(frozen=True)
class MetricsSection:
    #: host:port of the Prometheus endpoint; empty disables it
    listen: str = ""


@dataclass(frozen=True)
class LogSection:
    level: str = "info"
    #: "json" (structured, default) or "text"
    format: str = "json"
    #: a log file (created 0600, its folder 0700); empty = standard error
    file: str = ""


@dataclass(frozen=True)
class NodeConfig:
    node: NodeSection = field(default_factory=NodeSection)
    seal: SealSection = field(default_factory=SealSection)
    chain: ChainSection = field(default_factory=ChainSection)
    attest: AttestSection = field(default_factory=AttestSection)
    limits: LimitsSection = field(default_factory=LimitsSection)
    dkg: DkgSection = field(default_factory=DkgSection)
    mqtt: MqttSection = field(default_factory=MqttSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    source: str = "<defaults>"

    @property
    def rpc_endpoints(self) -> tuple[str, ...]:
        """``[chain].rpc_url`` and ``[chain].rpc_urls``, in order, without duplicates."""
        urls = [self.chain.rpc_url, *(u.strip() for u in self.chain.rpc_urls.split(","))]
        return tuple(dict.fromkeys(u for u in urls if u))

    @property
    def data_dir(self) -> Path:
        return Path(self.node.data_dir)

    @property
    def store_path(self) -> Path:
        return self.data_dir / "node.db"

    @property
    def seal_key_file(self) -> Path:
        return Path(self.seal.key_file) if self.seal.key_file else self.data_dir / "seal.key"


_SECTIONS = {f.name: f.type for f in dataclasses.fields(NodeConfig) if f.name != "source"}


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> NodeConfig:
    """Read ``path`` (optional) and apply ``DEROT_<SECTION>_<KEY>`` overrides from ``env``."""
    env = os.environ if env is None else env
    raw: dict = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
    sections = {}
    for name, cls in _SECTIONS.items():
        section_cls = globals()[cls] if isinstance(cls, str) else cls
        values = dict(raw.get(name, {}))
        known = {f.name: f for f in dataclasses.fields(section_cls)}
        for key in values:
            if key not in known:
                raise ConfigError(f"unknown key [{name}].{key}")
        for key, spec in known.items():
            env_value = env.get(f"DEROT_{name.upper()}_{key.upper()}")
            if env_value is not None:
                values[key] = env_value
            if key in values:
                values[key] = _coerce(f"[{name}].{key}", values[key], spec.default)
        sections[name] = section_cls(**values)
    config = NodeConfig(**sections, source=str(path) if path else "<defaults>")
    _validate(config)
    return config


def _coerce(where: str, value, default):
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {type(default).__name__}, got {value!r}") from None


def _validate(config: NodeConfig) -> None:
    if config.attest.mode not in ("production", "devnet"):
        raise ConfigError("[attest].mode must be 'production' or 'devnet'")
    if config.attest.mode == "devnet" and not config.attest.devnet_roots:
        raise ConfigError("[attest].devnet_roots is required in devnet mode")
    if config.node.faults:
        from derot.service import faults

        try:
            faults.parse(config.node.faults)
        except ValueError as exc:
            raise ConfigError(f"[node].faults: {exc}") from None
        if config.attest.mode != "devnet":
            raise ConfigError("[node].faults is refused outside devnet mode")
    if config.node.peer_routes:
        from derot.net.peers import parse_routes

        try:
            parse_routes(config.node.peer_routes)
        except ValueError as exc:
            raise ConfigError(f"[node].peer_routes: {exc}") from None
        if config.attest.mode != "devnet":
            raise ConfigError("[node].peer_routes is refused outside devnet mode")
    if config.seal.method not in ("keyfile", "passphrase", "snp"):
        raise ConfigError("[seal].method must be 'keyfile', 'passphrase' or 'snp'")
    if config.attest.rim_url and not config.attest.rim_url.startswith(("https://", "http://")):
        raise ConfigError(f"[attest].rim_url must be an http(s) URL, got {config.attest.rim_url!r}")
    if config.attest.rim_dir and not Path(config.attest.rim_dir).is_dir():
        raise ConfigError(f"[attest].rim_dir {config.attest.rim_dir} is not a directory")
    if not -1 <= config.attest.privlevel <= 3:
        raise ConfigError("[attest].privlevel must be 0..3, or -1 for the guest's own VMPL")
    if config.chain.confirmations < 0:
        raise ConfigError("[chain].confirmations must be >= 0")
    if not 1 <= config.chain.rpc_quorum <= len(config.rpc_endpoints):
        raise ConfigError(f"[chain].rpc_quorum must be 1..{len(config.rpc_endpoints)} (the number of RPC URLs)")
    if config.chain.finality not in ("tag", "depth") or config.chain.finality_depth < 1:
        raise ConfigError("[chain].finality must be 'tag' or 'depth', with finality_depth >= 1")
    if config.chain.max_staleness <= 0:
        raise ConfigError("[chain].max_staleness must be positive (seconds)")
    if config.mqtt.url:
        from derot.certs.notices import BrokerAddress

        try:
            BrokerAddress.parse(config.mqtt.url)
        except ValueError as exc:
            raise ConfigError(f"[mqtt].url: {exc}") from None
    limits = config.limits
    if not (0 < limits.hedge_floor <= limits.hedge_cap and limits.hedge_after > 0 and limits.hedge_factor >= 1):
        raise ConfigError("[limits] needs 0 < hedge_floor <= hedge_cap, hedge_after > 0 and hedge_factor >= 1")
    if not 0 <= limits.hedge_budget <= 1:
        raise ConfigError("[limits] hedge_budget must be 0..1 (early hedges per request)")
    for key in ("public_listen", "peer_listen"):
        value = getattr(config.node, key)
        if value.rpartition(":")[2].isdigit() is False:
            raise ConfigError(f"[node].{key} must be host:port, got {value!r}")


def operator_key(config: NodeConfig, env: dict[str, str] | None = None) -> str:
    """The operator's Ethereum private key (hex) from DEROT_OPERATOR_KEY or ``chain.operator_key_file``."""
    env = os.environ if env is None else env
    if env.get("DEROT_OPERATOR_KEY"):
        return env["DEROT_OPERATOR_KEY"].strip()
    if config.chain.operator_key_file:
        try:
            return Path(config.chain.operator_key_file).read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"operator key file {config.chain.operator_key_file} not found") from None
    raise ConfigError("no operator key: set DEROT_OPERATOR_KEY or [chain].operator_key_file")
