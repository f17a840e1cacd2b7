"""docker-compose.yml and node/Dockerfile, checked without a Docker engine (none runs here).

Static checks parse the files (PyYAML; commands through the real ``derot`` argument parser). The slow test
runs the compose file's own commands for real: anvil with the ``anvil`` service's arguments, the ``deploy``
job's ``derot compose deploy`` into a temporary "volume", an anvil restart from its state file followed by a
re-run of the job, and one node started from the config the job wrote, probed with the node services'
health check command.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from derot.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
NODE_SERVICE = re.compile(r"node-(\d+)$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def nodes(services) -> dict[int, dict]:
    return {int(m.group(1)): s for name, s in services.items() if (m := NODE_SERVICE.match(name))}


@pytest.fixture(scope="module")
def deploy_args(services):
    """The deploy job's command, parsed by the real ``derot`` parser."""
    command = services["deploy"]["command"]
    assert command[:3] == ["derot", "compose", "deploy"]
    return build_parser().parse_args(command[1:])


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def published(service: dict) -> dict[int, int]:
    """container port → host port."""
    out = {}
    for entry in service.get("ports", []):
        host, container = str(entry).rsplit(":", 1)
        out[int(container)] = int(host.rsplit(":", 1)[-1])
    return out


def mounts(service: dict) -> dict[str, str]:
    """container path → named volume."""
    return {target: source for source, target in (str(v).split(":")[:2] for v in service.get("volumes", []))}


# ------------------------------------------------------------------------------------------------
# services, images, ports, volumes, dependencies


def test_services(services, nodes):
    assert set(services) == {"anvil", "mosquitto", "deploy", *(f"node-{i}" for i in nodes)}
    assert sorted(nodes) == [1, 2, 3, 4, 5]
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    for name, service in services.items():
        if name == "mosquitto":
            continue
        assert service["build"] == {"context": ".", "dockerfile": "node/Dockerfile"}, name
        assert (REPO / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        assert service["image"] == services["anvil"]["image"]  # one image for the chain, the job and the nodes


def test_the_deploy_job_matches_the_services(services, nodes, deploy_args):
    args = deploy_args
    assert args.nodes == len(nodes) and args.nodes // 2 + 1 <= args.threshold <= args.nodes
    assert args.rpc == f"http://anvil:{option(services['anvil']['command'], '--port')}"
    assert args.mqtt == "mqtt://mosquitto:1883"
    for i in nodes:  # each node advertises its compose service name: peers reach it by DNS
        assert args.host_template.format(i=i) == f"node-{i}"
    funded = int(option(services["anvil"]["command"], "--accounts"))
    assert funded >= 4 + args.nodes + 2  # voters, council, app owner, one operator per node, spare
    assert services["deploy"]["restart"] == "no"


def test_ports(services, nodes, deploy_args):
    anvil_port = int(option(services["anvil"]["command"], "--port"))
    assert published(services["anvil"]) == {anvil_port: 8545}
    assert published(services["mosquitto"]) == {1883: 1883}
    assert "ports" not in services["deploy"]
    for i, node in nodes.items():
        # public RootOfTrust and metrics are published; the peer port stays on the compose network
        assert published(node) == {deploy_args.public_port: 7400 + 10 * i, deploy_args.metrics_port: 9100 + i}
    host_ports = [p for s in services.values() for p in published(s).values()]
    assert len(host_ports) == len(set(host_ports))


def test_volumes(compose, services, nodes, deploy_args):
    assert set(compose["volumes"]) == {"shared", "chain"} | {f"node-{i}" for i in nodes}
    shared = str(deploy_args.shared)
    # the deploy job provisions every node's own volume; a node sees only its own secrets
    assert mounts(services["deploy"]) == {shared: "shared", **{f"{shared}/node-{i}": f"node-{i}" for i in nodes}}
    for i, node in nodes.items():
        assert mounts(node) == {shared: "shared", f"{shared}/node-{i}": f"node-{i}"}  # no other node's secrets
        assert f"shared:{shared}:ro" in node["volumes"]  # public data, read-only
        config = Path(option(node["command"], "--config"))
        assert config == Path(shared) / f"node-{i}" / "node.toml"  # written by the job (see the slow test)
    state = Path(option(services["anvil"]["command"], "--state"))
    assert mounts(services["anvil"]) == {str(state.parent): "chain"}


def test_dependencies(services, nodes):
    healthy = {"condition": "service_healthy"}
    assert services["deploy"]["depends_on"] == {"anvil": healthy, "mosquitto": healthy}
    for node in nodes.values():
        assert node["depends_on"] == {"deploy": {"condition": "service_completed_successfully"},
                                      "anvil": healthy, "mosquitto": healthy}
    for service in services.values():
        for name, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert services[name]["healthcheck"]["test"][0] == "CMD", name


def test_health_checks_probe_the_right_ports(services, nodes, deploy_args):
    anvil_port = option(services["anvil"]["command"], "--port")
    assert services["anvil"]["healthcheck"]["test"][1:] == [
        "derot", "compose", "health", "--rpc", f"http://127.0.0.1:{anvil_port}"]
    for node in nodes.values():
        assert node["healthcheck"]["test"][1:] == [
            "derot", "compose", "health", "--grpc", f"127.0.0.1:{deploy_args.public_port}"]
    mqtt = services["mosquitto"]["healthcheck"]["test"]
    assert mqtt[1] == "mosquitto_sub" and option(mqtt, "-t") == "$$SYS/broker/uptime"  # $$ is compose's escape


def derot_commands(services) -> list[list[str]]:
    commands = []
    for service in services.values():
        for argv in (service.get("command"), service.get("healthcheck", {}).get("test", [None])[1:]):
            if argv and argv[0] == "derot":
                commands.append(argv)
    return commands


def test_commands_are_real_derot_commands(services):
    commands = derot_commands(services)
    assert len(commands) == 1 + 1 + 2 * 5  # deploy; anvil's health; each node's run and health
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv[1:])  # every option exists and parses
        assert callable(args.func), argv
    for group, command in sorted({tuple(argv[1:3]) for argv in commands}):
        result = subprocess.run([sys.executable, "-m", "derot.cli.main", group, command, "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (group, command, result.stderr)


def test_the_console_script_is_derot():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["derot"] == "derot.cli.main:main"


def test_deploy_refuses_a_bad_threshold_before_touching_anything(tmp_path):
    result = derot("compose", "deploy", "--shared", str(tmp_path / "s"), "--nodes", "5", "--threshold", "2",
                   "--rpc", "http://127.0.0.1:9", "--wait", "0")
    assert result.returncode == 2 and "threshold must be in [3, 5] for 5 nodes" in result.stderr
    assert not (tmp_path / "s").exists()


def test_deploy_and_health_report_an_absent_chain(tmp_path):
    result = derot("compose", "deploy", "--shared", str(tmp_path), "--rpc", "http://127.0.0.1:9", "--wait", "0")
    assert result.returncode == 1 and result.stderr.startswith("error: no JSON-RPC answer at http://127.0.0.1:9")
    result = derot("compose", "health", "--rpc", "http://127.0.0.1:9")
    assert result.returncode == 1 and result.stderr.startswith("unhealthy: ")


# ------------------------------------------------------------------------------------------------
# the Dockerfile


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, rest = text.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile(services) -> list[tuple[str, str]]:
    return dockerfile_instructions(REPO / services["deploy"]["build"]["dockerfile"])


def copies(dockerfile) -> list[tuple[str | None, list[str], str]]:
    """(from-stage or None, sources, destination) of every COPY."""
    out = []
    for keyword, rest in dockerfile:
        if keyword != "COPY":
            continue
        words = shlex.split(rest)
        flags = {w.split("=", 1)[0]: w.split("=", 1)[1] for w in words if w.startswith("--")}
        paths = [w for w in words if not w.startswith("--")]
        out.append((flags.get("--from"), paths[:-1], paths[-1]))
    return out


def test_dockerfile_copy_sources_exist(dockerfile):
    stages = {rest.split()[-1] for keyword, rest in dockerfile if keyword == "FROM" and " AS " in rest.upper()}
    local = [(sources, dest) for stage, sources, dest in copies(dockerfile) if stage is None]
    assert len(local) >= 5
    for sources, _ in local:
        for source in sources:
            assert (REPO / source).exists(), f"COPY source {source} is not in the repository"
    for stage, _, _ in copies(dockerfile):
        assert stage is None or stage in stages


def test_the_image_holds_what_the_package_reads_beside_it(dockerfile):
    """The package is installed editable: node/ reads ../protocol and ../contracts at run time."""
    from derot import _proto
    from derot.devnet import compile as contracts

    workdir = [rest for keyword, rest in dockerfile if keyword == "WORKDIR"][-1]
    copied = {Path(workdir, dest).resolve() for stage, _, dest in copies(dockerfile) if stage is None}
    needed = {"protocol": _proto.PROTO_ROOT, "contracts/build": contracts.BUILD_DIR, "node": REPO / "node"}
    for name, path in needed.items():
        assert Path(workdir, path.relative_to(REPO)).resolve() in copied, name
    run = " ".join(rest for keyword, rest in dockerfile if keyword == "RUN")
    assert re.search(r"pip install -e '?\.", run)
    import tomllib

    readme = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["readme"]
    assert any(readme in sources for stage, sources, _ in copies(dockerfile) if stage is None)
    # the anvil the compose file runs is the npm package's binary, linked onto PATH
    from derot.devnet.anvil import ANVIL_BIN

    link = re.search(r"ln -s (\S+) /usr/local/bin/anvil", run)
    assert link and Path(link.group(1)) == Path(workdir, ANVIL_BIN.relative_to(REPO))


def build_products(directory: str, names: list[str]) -> set[str]:
    """What a checkout holds but a clean build context would not: bytecode and generated stubs."""
    generated = {"derot"} if Path(directory).resolve() == (REPO / "node" / "_proto").resolve() else set()
    return {n for n in names if n == "__pycache__" or n in generated}


def test_the_image_file_set_is_enough_to_run(dockerfile, tmp_path):
    """Lay out exactly what the COPY lines put in the image (the npm stage's node_modules linked in) and run
    the package from there: the CLI, the protobuf stubs (regenerated), the contract artifacts, anvil."""
    image = tmp_path / "opt-derot"
    for stage, sources, dest in copies(dockerfile):
        target = image / dest
        if stage == "npm":
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(REPO / "contracts" / "node_modules", target)
            continue
        for source in sources:
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True, ignore=build_products)
            else:
                (target if dest.endswith("/") else target.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name if dest.endswith("/") else target)
    package = image / "node"
    script = (
        # what the image's editable install does: the import name derot maps to /opt/derot/node
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('derot', {str(package / '__init__.py')!r}, "
        f"submodule_search_locations=[{str(package)!r}])\n"
        "derot = importlib.util.module_from_spec(spec); sys.modules['derot'] = derot; spec.loader.exec_module(derot)\n"
        "from derot import _proto; _proto.generate(force=True); _proto.load('node_pb2')\n"
        f"assert _proto.__file__.startswith({str(image)!r}), _proto.__file__\n"
        "from derot.devnet.compile import load_artifact; assert load_artifact('DerotRegistry')['abi']\n"
        f"from derot.chain import artifacts; assert str(artifacts.artifact_dir()).startswith({str(image)!r})\n"
        "from derot.devnet.anvil import find_anvil; assert find_anvil().is_file()\n"
        "from derot.cli import main as cli\n"
        f"assert all(m.__file__.startswith({str(image)!r}) for n, m in sys.modules.items() "
        "if n.startswith('derot') and getattr(m, '__file__', None)), 'a derot module came from outside the image'\n"
        "sys.exit(cli.main(['compose', 'deploy', '--help']))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(image))
    env.pop("DEROT_ANVIL", None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "derot compose deploy" in result.stdout


def test_dockerfile_runs_unprivileged_and_owns_the_volume_paths(dockerfile, compose, services):
    users = [rest for keyword, rest in dockerfile if keyword == "USER"]
    assert users == ["derot"]
    run = " ".join(rest for keyword, rest in dockerfile if keyword == "RUN")
    for path in {p for s in services.values() if s.get("build") for p in mounts(s)}:
        assert path in run.split() and "chown derot:derot" in run, path


def test_docker_compose_accepts_the_file():
    """With a Docker Compose CLI on the machine (v2, or Debian's docker-compose 1.29, which also rejects a
    top-level ``name:``), its own parser validates the file."""
    candidates = [[os.environ["DEROT_COMPOSE"]]] if os.environ.get("DEROT_COMPOSE") else []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cli in candidates:
        version = subprocess.run([*cli, "version", "--short"], capture_output=True, text=True)
        if version.returncode == 0 and version.stdout.strip().lstrip("v")[:2] in ("1.", "2."):
            result = subprocess.run([*cli, "-f", str(COMPOSE_FILE), "config", "--quiet"], capture_output=True,
                                    text=True, timeout=60)
            assert result.returncode == 0, result.stderr
            return
    pytest.skip("no Docker Compose CLI here (apt-get install docker-compose, or set $DEROT_COMPOSE)")


# ------------------------------------------------------------------------------------------------
# the compose file's commands, run for real


def local(argv: list[str], replace: dict[str, str]) -> list[str]:
    """``argv`` with the value after each option in ``replace`` swapped."""
    out = list(argv)
    for name, value in replace.items():
        out[out.index(name) + 1] = value
    return out


def start_anvil(command: list[str], port: int, state: Path, log: Path) -> subprocess.Popen:
    from derot.devnet.anvil import find_anvil, rpc

    argv = [str(find_anvil()), *local(command[1:], {"--host": "127.0.0.1", "--port": str(port),
                                                     "--state": str(state)})]
    proc = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            rpc(f"http://127.0.0.1:{port}", "eth_chainId", timeout=1)
            return proc
        except Exception:  # noqa: BLE001
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def derot(*argv: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derot.cli.main", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deploy_job_output_runs_a_node(services, nodes, deploy_args, tmp_path):
    from web3 import Web3

    from derot.devnet.anvil import free_port
    from derot.chain.registry import Registry
    from derot.chain.types import EpochPhase
    from derot.service.config import load_config

    shared, port = tmp_path / "shared", free_port()
    rpc_url = f"http://127.0.0.1:{port}"
    anvil_command = services["anvil"]["command"]
    job = local(services["deploy"]["command"][1:], {"--shared": str(shared), "--rpc": rpc_url})
    anvil = node = None
    try:
        anvil = start_anvil(anvil_command, port, tmp_path / "state.json", tmp_path / "anvil.log")
        first = derot(*job)
        assert first.returncode == 0, first.stdout + first.stderr

        # the layout the node services expect, and what the job registered on-chain
        registry = Registry(Web3(Web3.HTTPProvider(rpc_url)), load_config(shared / "node-1" / "node.toml").chain.registry)
        pending = registry.epoch(registry.pending_epoch())
        assert pending.phase == EpochPhase.DKG
        assert (len(pending.members), pending.threshold) == (deploy_args.nodes, deploy_args.threshold)
        for i, service in nodes.items():
            config_path = shared / Path(option(service["command"], "--config")).relative_to(deploy_args.shared)
            config = load_config(config_path)
            assert config.node.advertise_host == f"node-{i}" and config.node.public_listen.startswith("0.0.0.0:")
            assert config.chain.rpc_url == rpc_url and config.mqtt.url == deploy_args.mqtt
            assert Path(config.node.data_dir) == config_path.parent and (config_path.parent / "node.db").exists()
            assert Path(config.attest.devnet_roots).is_relative_to(shared)
            record = registry.node(pending.members[i - 1])
            assert record.endpoint == f"public=node-{i}:{deploy_args.public_port};peer=node-{i}:{deploy_args.peer_port}"

        # anvil restarts from its state file; the job, run again, sees the deployment and does nothing
        stop(anvil)
        anvil = start_anvil(anvil_command, port, tmp_path / "state.json", tmp_path / "anvil.log")
        again = derot(*job)
        assert again.returncode == 0 and "already deployed" in again.stdout, again.stdout + again.stderr

        # node-1 from the job's config (listening on loopback ports here), probed by the services' health check
        public = free_port()
        env = dict(os.environ, GRPC_VERBOSITY="ERROR", DEROT_NODE_PUBLIC_LISTEN=f"127.0.0.1:{public}",
                   DEROT_NODE_PEER_LISTEN=f"127.0.0.1:{free_port()}", DEROT_METRICS_LISTEN=f"127.0.0.1:{free_port()}")
        in_volume = shared / Path(option(nodes[1]["command"], "--config")).relative_to(deploy_args.shared)
        node_command = local(nodes[1]["command"][1:], {"--config": str(in_volume)})
        node = subprocess.Popen([sys.executable, "-m", "derot.cli.main", *node_command],
                                stdout=open(tmp_path / "node-1.log", "ab"), stderr=subprocess.STDOUT, env=env,
                                cwd=tmp_path)
        # Alone, it cannot finish the DKG (its peers are other containers), so gRPC health answers NOT_SERVING:
        # the probe reaches the node's TLS port and reports that (a node holding epoch shares says SERVING,
        # see tests/app/test_app_cli.py).
        probe = local(nodes[1]["healthcheck"]["test"][2:], {"--grpc": f"127.0.0.1:{public}"})
        deadline = time.monotonic() + 60
        while "NOT_SERVING" not in (health := derot(*probe, timeout=30)).stderr:
            assert health.returncode == 1 and health.stderr.startswith("unhealthy: "), health
            assert node.poll() is None, (tmp_path / "node-1.log").read_text()
            assert time.monotonic() < deadline, health.stderr
            time.sleep(0.5)
        assert health.returncode == 1 and health.stderr.strip() == f"unhealthy: 127.0.0.1:{public} reports NOT_SERVING"
        chain = derot(*local(services["anvil"]["healthcheck"]["test"][2:], {"--rpc": rpc_url}))
        assert chain.returncode == 0 and "chain 31337 answers" in chain.stdout
    finally:
        stop(node)
        stop(anvil)
    closed = derot(*local(nodes[1]["healthcheck"]["test"][2:], {"--grpc": f"127.0.0.1:{public}"}))
    assert closed.returncode == 1 and closed.stderr.startswith("unhealthy: ")
