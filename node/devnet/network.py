"""A whole derot network on one machine: anvil, the contracts, devnet TEE roots and N node processes.

:class:`Devnet` is what ``derot devnet up/status/down``, ``make demo`` and the end-to-end tests use.
Everything lives in one directory::

    DIR/devnet.json        what is running (pids, ports, addresses): read by status and down
    DIR/deployment.json    contract addresses
    DIR/anvil.log          the chain's log
    DIR/roots/             devnet "Intel" and "AMD" roots (public certs and the devnet's private keys)
    DIR/node-i/            each node: node.toml, operator.key, seal.key, node.db, node.log
    DIR/accounts.json      which dev account plays which role (governance voters, council, app owner)
    DIR/keys/              the role accounts' keys (voter-1.key, voter-2.key, council.key, app-owner.key; 0600):
                           anvil's public dev keys, for --key-file / $DEROT_KEY in the README's guides

``down`` stops exactly the processes recorded in ``devnet.json`` (checking each one's command line) and
nothing else.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from derot.constants import Platform, TcbStatus
from derot.devnet.processes import (alive, is_ours, metric, send_signal, spawn_node_process, wait_exit, write_private,
                                    write_role_keys)
from derot.errors import DerotError

STATE_FILE = "devnet.json"
#: dev accounts: 0 deployer + voter, 1 voter, 2 council, 3 app owner, 4.. node operators
VOTERS = (0, 1)
COUNCIL = 2
APP_OWNER = 3
FIRST_OPERATOR = 4
#: dev accounts funded beyond the initial nodes, for nodes added later (add_node)
SPARE_ACCOUNTS = 2


class DevnetError(DerotError, RuntimeError):
    """The devnet could not be started, or is not in the state asked for."""

    reason = "devnet_failed"


@dataclass
class NodeProcess:
    index: int
    directory: Path
    config_path: Path
    operator: str
    public_port: int
    peer_port: int
    metrics_port: int
    pid: int | None = None
    platform: str = "tdx"

    @property
    def public_endpoint(self) -> str:
        return f"127.0.0.1:{self.public_port}"


@dataclass
class Devnet:
    directory: Path
    nodes: int = 5
    threshold: int = 3
    phase_timeout: float = 10.0
    confirmations: int = 1
    block_time: float = 1.0
    mqtt_url: str = ""
    #: devnet fault injection per node index, e.g. {4: "corrupt_shares"} (derot.service.faults)
    node_faults: dict = field(default_factory=dict)
    #: per node index, ``[node].peer_routes`` (derot.net.peers.parse_routes): the WAN benchmark's delay proxies
    peer_routes: dict = field(default_factory=dict)
    progress: Callable[[str], None] = field(default=lambda message: None, repr=False)
    anvil_port: int | None = None
    node_processes: list[NodeProcess] = field(default_factory=list)
    anvil_pid: int | None = None
    rpc_url: str = ""
    registry: str = ""
    deployment: object = None
    broker_pid: int | None = None

    def __post_init__(self) -> None:
        self.directory = Path(self.directory).resolve()
        if not self.nodes // 2 + 1 <= self.threshold <= self.nodes:
            raise DevnetError(f"threshold must be in [{self.nodes // 2 + 1}, {self.nodes}] for {self.nodes} nodes")

    # ---------------------------------------------------------------------------------------------
    # up

    def up(self, *, wait: bool = True, timeout: float = 180.0) -> Devnet:
        """Start everything and (with ``wait``) wait until the first epoch is ACTIVE."""
        if (self.directory / STATE_FILE).exists() and alive(self._load_state().get("anvil_pid")):
            raise DevnetError(f"a devnet is already running in {self.directory} (derot devnet down first)")
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self._start_chain()
            self._start_broker()
            self._deploy()
            self._make_roots()
            self._setup_nodes()
            self._interval_mining()  # the registrations confirm, and the nodes boot on a moving chain
            self._start_nodes()
            self._wait_nodes_listening(timeout=max(180.0, 8.0 * self.nodes))  # a node boots in ~2 s of CPU
            self._wait_evidence_checked(timeout=max(60.0, 3.0 * self.nodes))
            self._bootstrap_governance()
            self._save_state()
            if wait:
                self.wait_for_epoch(1, timeout=timeout)
        except BaseException:
            self._save_state()
            self.down()
            raise
        return self

    def _start_chain(self) -> None:
        from derot.devnet.anvil import Anvil

        self.progress("starting anvil")
        self._anvil = Anvil(
            port=self.anvil_port or self._port(),
            accounts=FIRST_OPERATOR + self.nodes + SPARE_ACCOUNTS,
            log_path=self.directory / "anvil.log",
            detach=True,
        ).start()
        self.anvil_port = self._anvil.port
        self.anvil_pid = self._anvil._proc.pid
        self.rpc_url = self._anvil.url

    def _start_broker(self) -> None:
        """With ``mqtt_url == "embedded"``, start the embedded (amqtt) broker for the signed notice feed."""
        if self.mqtt_url != "embedded":
            return
        from derot.devnet.broker import BrokerProcess

        self.progress("starting the embedded MQTT broker (no broker URL configured)")
        self._broker = BrokerProcess.embedded(self.directory / "mqtt.log").start()
        self.broker_pid = self._broker.pid
        self.mqtt_url = self._broker.url

    @property
    def accounts(self):
        """The dev accounts (derived once: each derivation from the mnemonic costs ~20 ms of CPU)."""
        from derot.devnet.anvil import dev_accounts

        count = FIRST_OPERATOR + self.nodes + SPARE_ACCOUNTS
        cached = self.__dict__.get("_accounts")
        if cached is None or len(cached) != count:
            cached = self.__dict__["_accounts"] = dev_accounts(count)
        return cached

    def w3(self):
        from web3 import Web3

        return Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 15}))

    def _deploy(self) -> None:
        from derot.chain.actions import AllowPlatform, SetTcbFloor
        from derot.chain.deploy import TOKEN_UNIT, DeployParams, deploy

        self.progress("deploying the contracts (token, timelock, governor, registry)")
        accounts = self.accounts
        voters = [accounts[i] for i in VOTERS]
        params = DeployParams.devnet(
            [(v.address, 1_000_000 * TOKEN_UNIT) for v in voters],
            accounts[COUNCIL].address,
            bootstrap=(
                AllowPlatform(int(Platform.TDX)),
                AllowPlatform(int(Platform.SEV_SNP)),
                SetTcbFloor(int(Platform.TDX), int(TcbStatus.UP_TO_DATE)),
                SetTcbFloor(int(Platform.SEV_SNP), int(TcbStatus.UP_TO_DATE)),
            ),
        )
        self.deployment = deploy(self.w3(), accounts[0], params, self_delegate=voters)
        self.deployment.save(self.directory / "deployment.json")
        self.registry = self.deployment.registry
        roles = {
            "voters": [v.address for v in voters],
            "council": accounts[COUNCIL].address,
            "app_owner": accounts[APP_OWNER].address,
            "operators": [accounts[FIRST_OPERATOR + i].address for i in range(self.nodes)],
        }
        keys = {f"voter-{n}": v for n, v in enumerate(voters, 1)} | {"council": accounts[COUNCIL],
                                                                   "app-owner": accounts[APP_OWNER]}
        roles["key_files"] = write_role_keys(self.directory, {role: a.key.hex() for role, a in keys.items()})
        (self.directory / "accounts.json").write_text(json.dumps(roles, indent=2) + "\n")

    def _make_roots(self) -> None:
        from derot.attest.devnet import DevnetRoots

        roots_dir = self.directory / "roots"
        if (roots_dir / "devnet.json").exists():
            return
        self.progress("creating devnet TEE roots (Intel-style PCK chain and collateral, AMD ARK/ASK/VCEK)")
        DevnetRoots.generate(roots_dir)

    def _setup_nodes(self) -> None:
        self.node_processes = [self._setup_node(i) for i in range(1, self.nodes + 1)]

    def _setup_node(self, i: int) -> NodeProcess:
        """Write node ``i``'s config and keys, create its sealed store and register it on-chain."""
        from derot.service.config import load_config
        from derot.service.setup import init_node, register_node
        from derot.service.storage import private_dir

        directory = self.directory / f"node-{i}"
        private_dir(directory)
        account = self.accounts[FIRST_OPERATOR + i - 1]
        key_file = directory / "operator.key"
        write_private(key_file, account.key.hex())
        platform = "tdx" if i % 2 else "snp"
        proc = NodeProcess(i, directory, directory / "node.toml", account.address, self._port(), self._port(),
                           self._port(), platform=platform)
        proc.config_path.write_text(self._node_toml(proc, key_file))
        config = load_config(proc.config_path)
        if not (directory / "node.db").exists():
            init_node(config)
        self.progress(f"registering node {i} ({account.address}, {platform.upper()} membership evidence)")
        register_node(config)
        return proc

    def _port(self) -> int:
        """A free port below the kernel's ephemeral range (32768+), so that outgoing connections made before
        the node binds it (anvil, peers, the broker) cannot take it first; never the same one twice."""
        taken = getattr(self, "_ports", set())
        self._ports = taken
        for _ in range(1000):
            port = random.randint(20000, 32000)
            if port in taken:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            taken.add(port)
            return port
        raise DevnetError("no free port found in 20000-32000")

    def add_node(self, faults: str = "") -> NodeProcess:
        """Set up, register and start one more node (governance must still approve it and reshare);
        ``faults``: its ``[node].faults`` (devnet fault injection, :mod:`derot.service.faults`)."""
        if len(self.node_processes) >= self.nodes + SPARE_ACCOUNTS:
            raise DevnetError(f"this devnet has dev accounts for {SPARE_ACCOUNTS} extra nodes only")
        index = len(self.node_processes) + 1
        if faults:
            self.node_faults[index] = faults
        proc = self._setup_node(index)
        self.node_processes.append(proc)
        self.start_node(proc)
        self._wait_nodes_listening(procs=[proc])  # a reshare that starts before it boots would exclude it
        return proc

    def node_addresses(self, proc: NodeProcess) -> dict[str, str]:
        """Where node ``proc`` listens and which host it advertises (a compose network overrides this)."""
        return {
            "public_listen": f"127.0.0.1:{proc.public_port}",
            "peer_listen": f"127.0.0.1:{proc.peer_port}",
            "advertise_host": "127.0.0.1",
            "metrics_listen": f"127.0.0.1:{proc.metrics_port}",
        }

    #: how often nodes poll the chain (seconds): half the block time
    poll_interval = 0.5

    def _node_toml(self, proc: NodeProcess, key_file: Path) -> str:
        from derot.devnet.node_toml import node_toml

        return node_toml(self, proc, key_file)

    def deploy_only(self) -> None:
        """Every set-up step of :meth:`up` except starting processes (a compose deploy job runs this against an
        existing chain): deploy, roots, node configs and registrations, the bootstrap governance vote."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._deploy()
        self._make_roots()
        self._setup_nodes()
        self._bootstrap_governance()

    def _bootstrap_governance(self) -> None:
        from derot.attest.devnet import devnet_measurement_digest, node_measurements
        from derot.chain.actions import AddNode, AllowNodeMeasurement, StartDkg

        actions = [
            AllowNodeMeasurement(int(p), devnet_measurement_digest(p, node_measurements(p)))
            for p in (Platform.TDX, Platform.SEV_SNP)
        ]
        actions += [AddNode(p.operator) for p in self.node_processes]
        actions.append(StartDkg(tuple(p.operator for p in self.node_processes), self.threshold))
        self.progress(
            f"governance vote: allow the node image, approve {self.nodes} nodes, start a {self.threshold}-of-"
            f"{self.nodes} DKG"
        )
        self.enact(actions, "devnet bootstrap: committee and DKG")

    def enact(self, actions, description: str) -> int:
        """Propose, vote, queue and execute ``actions`` through the Governor (anvil time travel)."""
        from derot.chain.governance import Governance
        from derot.devnet.governance import enact

        accounts = self.accounts
        gov = Governance(self.w3(), self._deployment())
        return enact(gov, accounts[VOTERS[0]], actions, description, [accounts[i] for i in VOTERS])

    def _interval_mining(self) -> None:
        """Setup ran with automine (one block per transaction); from now on blocks come every
        ``block_time`` seconds too, so confirmations advance on a quiet chain (the last registration's block
        among them: without a block after it, no node would see that registrant before the vote)."""
        from derot.devnet.anvil import rpc

        if self.block_time:
            rpc(self.rpc_url, "evm_setIntervalMining", [max(1, int(self.block_time))])

    def _deployment(self):
        from derot.chain.deploy import Deployment

        if self.deployment is None:
            self.deployment = Deployment.load(self.directory / "deployment.json")
        return self.deployment

    def _start_nodes(self) -> None:
        for proc in self.node_processes:
            self.start_node(proc)

    def _wait_nodes_listening(self, procs: list[NodeProcess] | None = None, timeout: float = 90.0) -> None:
        """Wait until every node answers TLS on its public port (booted, following the chain), so that the DKG
        the bootstrap vote starts finds every member up and its evidence already checked by its peers."""
        from derot.net import tls

        waiting = list(self.node_processes if procs is None else procs)
        self.progress(f"waiting for {len(waiting)} nodes to boot")
        deadline = time.monotonic() + timeout
        while waiting:
            self._check_nodes_alive()
            if time.monotonic() > deadline:
                raise DevnetError(f"nodes {[p.index for p in waiting]} did not start listening within {timeout:.0f} s")
            still = []
            for proc in waiting:
                try:
                    tls.fetch_certificate("127.0.0.1", proc.public_port, timeout=1.0)
                except OSError:
                    still.append(proc)
            waiting = still
            if waiting:
                time.sleep(0.25)

    def _wait_evidence_checked(self, timeout: float) -> None:
        """Wait until every node has a verdict on every other node's membership evidence
        (``derot_member_evidence_checked``), so the bootstrap vote starts the DKG on a committee whose n² boot-time
        checks are over rather than competing with them, and finds every member's evidence checked."""
        self.progress(f"waiting for {len(self.node_processes)} nodes to check each other's membership evidence")
        self._wait_metric("derot_member_evidence_checked", len(self.node_processes) - 1, None, timeout, every=1.0)

    def start_node(self, proc: NodeProcess) -> None:
        from derot.service.logs import open_private

        log = open_private(proc.directory / "node.log")
        env = dict(os.environ, PYTHONUNBUFFERED="1", GRPC_VERBOSITY="ERROR")
        process = spawn_node_process(
            [sys.executable, "-m", "derot.cli.main", "node", "run", "--config", str(proc.config_path)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        proc.pid = process.pid
        self._save_state()

    def stop_node(self, proc: NodeProcess, *, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (graceful) or SIGKILL one node and wait for it to exit."""
        if proc.pid is None:
            return
        send_signal(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        wait_exit(proc.pid, timeout)
        proc.pid = None
        self._save_state()

    # ---------------------------------------------------------------------------------------------
    # waiting and inspecting

    def registry_client(self):
        from derot.chain.registry import Registry

        return Registry(self.w3(), self.registry)

    def wait_for_epoch(self, epoch: int, *, timeout: float = 120.0, poll: float = 0.5) -> None:
        """Wait until ``epoch`` is ACTIVE on-chain (progress shows the members' reports)."""
        from derot.chain.types import EpochPhase

        registry = self.registry_client()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self._check_nodes_alive()
            try:
                record = registry.epoch(epoch)
            except Exception:
                record = None
            if record is not None and record.phase in (EpochPhase.ACTIVE, EpochPhase.RETIRED):
                self.progress(f"epoch {epoch} active: threshold {record.threshold} of {len(record.members)}")
                return
            reports = 0
            if record is not None:
                reports = sum(1 for m in record.members if any(registry.report_of(epoch, m)))
                message = f"epoch {epoch}: {record.phase.name.lower()}, {reports}/{len(record.members)} members reported"
                if message != last:
                    self.progress(message)
                    last = message
            time.sleep(poll)
        self.dump_stacks()
        raise DevnetError(f"epoch {epoch} did not activate within {timeout:.0f} s (see {self.directory}/node-*/node.log)")

    def _check_nodes_alive(self) -> None:
        dead = [p.index for p in self.node_processes if p.pid is not None and not alive(p.pid)]
        if dead:
            raise DevnetError(f"node(s) {dead} exited; see their node.log in {self.directory}")

    def wait_for_block(self, number: int, timeout: float = 30.0) -> None:
        w3 = self.w3()
        deadline = time.monotonic() + timeout
        while w3.eth.block_number < number:
            if time.monotonic() > deadline:
                raise DevnetError(f"block {number} not reached")
            time.sleep(0.2)

    def wait_confirmed(self, timeout: float = 60.0) -> int:
        """Wait until every change made so far sits at a block the nodes treat as confirmed, and every running
        node has applied that block (its ``derot_confirmed_block`` metric); returns that block."""
        target = self.w3().eth.block_number + self.confirmations
        self.wait_for_block(target, timeout=timeout)
        self._wait_metric("derot_confirmed_block", target - self.confirmations, None, timeout)
        return target

    def wait_serving(self, epoch: int, indices: list[int] | None = None, timeout: float = 60.0) -> None:
        """Wait until the nodes ``indices`` (default: every running node) serve ``epoch`` (``derot_epoch``)."""
        self._wait_metric("derot_epoch", epoch, indices, timeout)

    def dump_stacks(self) -> None:
        """Ask every running node to write its threads' (SIGUSR1) and tasks' (SIGUSR2) stacks into its node.log, for a post-mortem
        of a wait that timed out."""
        for proc in self.node_processes:
            if proc.pid is not None and alive(proc.pid):
                send_signal(proc.pid, signal.SIGUSR1)  # threads
                send_signal(proc.pid, signal.SIGUSR2)  # asyncio tasks

    def _wait_metric(self, name: str, at_least: float, indices: list[int] | None, timeout: float,
                     every: float = 0.2) -> None:
        """Wait until each node's ``name`` (summed over its labels) is at least ``at_least``, asking the nodes still
        behind every ``every`` seconds (each ask renders the node's metrics page)."""
        behind = [p for p in self.node_processes if p.pid is not None and (indices is None or p.index in indices)]
        deadline = time.monotonic() + timeout
        while True:
            behind = [p for p in behind if alive(p.pid) and metric(p.metrics_port, name) < at_least]
            if not behind:
                return
            if time.monotonic() > deadline:
                self.dump_stacks()
                raise DevnetError(f"node(s) {[p.index for p in behind]} did not reach {name} >= {at_least} "
                                  f"in {timeout:.0f} s")
            time.sleep(every)

    def status(self) -> dict:
        state = self._load_state()
        out = {"directory": str(self.directory), "rpc_url": state.get("rpc_url"), "registry": state.get("registry"),
               "mqtt_url": state.get("mqtt_url", ""),
               "anvil": "running" if alive(state.get("anvil_pid")) else "stopped", "nodes": []}
        for node in state.get("nodes", []):
            out["nodes"].append({
                "index": node["index"], "operator": node["operator"],
                "public": f"127.0.0.1:{node['public_port']}", "metrics": f"127.0.0.1:{node['metrics_port']}",
                "state": "running" if alive(node.get("pid")) else "stopped",
            })
        if out["anvil"] == "running":
            try:
                self.rpc_url, self.registry = state["rpc_url"], state["registry"]
                registry = self.registry_client()
                out["chain_head"] = self.w3().eth.block_number
                current = registry.current_epoch()
                out["epoch"] = current
                if current:
                    record = registry.epoch(current)
                    out["threshold"] = record.threshold
                    out["members"] = len(record.members)
                    out["group_key_sig"] = record.group_key_sig.to_bytes().hex()
                    out["group_key_kd"] = record.group_key_kd.to_bytes().hex()
                pending = registry.pending_epoch()
                if pending:
                    out["pending_epoch"] = pending
                out["exclusions"] = [
                    {"epoch": e.epoch, **e.to_json_dict()}
                    for epoch_id in (current, pending) if epoch_id
                    for e in registry.epoch_exclusions(registry.epoch(epoch_id))
                ]
            except Exception as exc:  # status must always answer
                out["chain_error"] = str(exc)
        return out

    # ---------------------------------------------------------------------------------------------
    # down

    def down(self) -> list[int]:
        """Stop every process this devnet started (and only those); returns the pids signalled."""
        state = self._load_state() if (self.directory / STATE_FILE).exists() else {}
        pids = [n.get("pid") for n in state.get("nodes", [])] + [p.pid for p in self.node_processes]
        stopped = []
        for pid in {p for p in pids if p}:
            if alive(pid) and is_ours(pid, str(self.directory)):
                send_signal(pid, signal.SIGTERM)
                stopped.append(pid)
        for pid in stopped:
            wait_exit(pid, 10.0)
        anvil_pid = state.get("anvil_pid") or self.anvil_pid
        if getattr(self, "_anvil", None) is not None:
            self._anvil.stop()
            stopped.append(anvil_pid)
        elif anvil_pid and alive(anvil_pid) and is_ours(anvil_pid, f"--port {state.get('anvil_port')}"):
            send_signal(anvil_pid, signal.SIGTERM)
            wait_exit(anvil_pid, 10.0)
            stopped.append(anvil_pid)
        broker_pid = state.get("broker_pid") or self.broker_pid
        if broker_pid and alive(broker_pid) and is_ours(broker_pid, str(self.directory)):
            send_signal(broker_pid, signal.SIGTERM)
            wait_exit(broker_pid, 10.0)
            stopped.append(broker_pid)
        for proc in self.node_processes:
            proc.pid = None
        self.anvil_pid = self.broker_pid = None
        if (self.directory / STATE_FILE).exists():
            (self.directory / STATE_FILE).unlink()
        return stopped

    # ---------------------------------------------------------------------------------------------
    # state file

    def _save_state(self) -> None:
        state = {
            "rpc_url": self.rpc_url,
            "registry": self.registry,
            "anvil_pid": self.anvil_pid,
            "anvil_port": self.anvil_port,
            "mqtt_url": self.mqtt_url if self.mqtt_url != "embedded" else "",
            "broker_pid": self.broker_pid,
            "threshold": self.threshold,
            "nodes": [
                {"index": p.index, "operator": p.operator, "pid": p.pid, "public_port": p.public_port,
                 "peer_port": p.peer_port, "metrics_port": p.metrics_port, "config": str(p.config_path),
                 "platform": p.platform}
                for p in self.node_processes
            ],
        }
        (self.directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def _load_state(self) -> dict:
        try:
            return json.loads((self.directory / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @classmethod
    def attach(cls, directory: Path) -> Devnet:
        """A handle on a devnet started earlier (by another process) in ``directory``."""
        devnet = cls(Path(directory))
        state = devnet._load_state()
        if not state:
            raise DevnetError(f"no devnet recorded in {directory}")
        devnet.rpc_url, devnet.registry = state["rpc_url"], state["registry"]
        devnet.anvil_pid, devnet.anvil_port = state["anvil_pid"], state["anvil_port"]
        devnet.mqtt_url, devnet.broker_pid = state.get("mqtt_url", ""), state.get("broker_pid")
        devnet.threshold = state.get("threshold", devnet.threshold)
        devnet.nodes = len(state["nodes"])
        devnet.node_processes = [
            NodeProcess(n["index"], Path(n["config"]).parent, Path(n["config"]), n["operator"], n["public_port"],
                        n["peer_port"], n["metrics_port"], n["pid"], n.get("platform", "tdx"))
            for n in state["nodes"]
        ]
        return devnet
