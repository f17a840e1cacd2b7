"""MQTT broker processes for devnets and tests: the embedded pure-Python ``amqtt`` broker (no root, nothing outside
the venv) and a real mosquitto. Devnet tooling only: the node runtime never imports this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from derot.errors import DerotError

log = logging.getLogger("derot.devnet.broker")


class BrokerError(DerotError, RuntimeError):
    """A broker process did not start or exited."""

    reason = "broker_failed"


def find_mosquitto() -> str | None:
    """``mosquitto`` on PATH, else Debian's /usr/sbin/mosquitto (not on a normal user's PATH)."""
    import shutil

    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


#: MQTT 3.1.1 CONNECT (clean session, keepalive 60, empty client id), the CONNACK accepting it, DISCONNECT
_CONNECT = bytes.fromhex("100c00044d5154540402003c0000")
_CONNACK_OK = bytes.fromhex("20020000")
_DISCONNECT = bytes.fromhex("e000")


def _answers_mqtt(port: int) -> bool:
    """True when 127.0.0.1:port completes an MQTT handshake (a TCP accept alone is not enough)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(_CONNECT)
            reply = sock.recv(4)
            sock.sendall(_DISCONNECT)
            return reply == _CONNACK_OK
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BrokerProcess:
    """A broker listening on 127.0.0.1 in a child process of its own session; :meth:`stop` ends exactly it.

    - :meth:`embedded`: the pure-Python ``amqtt`` broker (``python -m derot.devnet.broker``), what a devnet
      uses when no broker URL is configured: it needs no root and nothing outside the venv;
    - :meth:`mosquitto`: a real mosquitto with a minimal config (anonymous, loopback only).
    """

    def __init__(self, argv: list[str], port: int, log_path: Path):
        self.argv, self.port, self.log_path = argv, port, Path(log_path)
        self._proc: subprocess.Popen | None = None

    @classmethod
    def embedded(cls, log_path: Path, port: int | None = None) -> BrokerProcess:
        port = port or _free_port()
        argv = [sys.executable, "-m", "derot.devnet.broker", "--listen", f"127.0.0.1:{port}", "--log",
                str(Path(log_path).resolve())]
        return cls(argv, port, log_path)

    @classmethod
    def mosquitto(cls, directory: Path, port: int | None = None) -> BrokerProcess:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        port = port or _free_port()
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        return cls([binary, "-c", str(config)], port, directory / "mosquitto.log")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 15.0) -> BrokerProcess:
        """Start the process and wait until it answers MQTT."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise BrokerError(f"{self.argv[0]} exited with {self._proc.returncode}:\n{tail}")
            if _answers_mqtt(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"broker did not listen on 127.0.0.1:{self.port} within {timeout:.0f} s")

    def stop(self, timeout: float = 5.0) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> BrokerProcess:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def run_embedded_broker(listen: str) -> None:
    """Serve an amqtt broker on ``host:port`` (anonymous, plain TCP) until SIGTERM or SIGINT."""
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise SystemExit("the embedded MQTT broker needs amqtt: pip install 'derot[devnet]' "
                         "(or give the devnet a broker: derot devnet up --mqtt URL, or --no-mqtt)") from None

    config = {
        "listeners": {"default": {"type": "tcp", "bind": listen}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        broker = Broker(config)
        await broker.start()
        log.warning("embedded MQTT broker listening", extra={"listen": listen})
        await stop.wait()
        await broker.shutdown()

    asyncio.run(serve())


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m derot.devnet.broker", description="the embedded MQTT broker")
    parser.add_argument("--listen", default="127.0.0.1:1883", help="host:port (default 127.0.0.1:1883)")
    parser.add_argument("--log", help="append the broker's log to this file instead of stderr")
    args = parser.parse_args(argv)
    from derot.service.logs import JsonFormatter

    handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler()
    handler.setFormatter(JsonFormatter("mqtt-broker"))  # JSON lines, like the nodes' logs
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    run_embedded_broker(args.listen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
