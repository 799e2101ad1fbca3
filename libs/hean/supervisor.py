"""``hean up``: the whole system on one machine.

Starts an embedded nats-server with JetStream (unless HEAN_NATS_URL points at one), the
exchange simulator when trading against it, and the seven services as child processes. A
service that dies is restarted with exponential backoff. Children are tied to the supervisor
with PR_SET_PDEATHSIG, so even a SIGKILLed supervisor leaves nothing running.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec

from hean import natsauth
from hean.config import ConfigError, ServiceSettings, check_port_free, free_port
from hean.natsserver import NatsServer, NatsServerError
from hean.proc import die_with_parent
from hean.registry import DEFAULT_PORT_BASE, SERVICES, SIM_PORT_OFFSET

log = logging.getLogger("hean.up")

RUN_FILE = "run.json"


class UpSettings(ServiceSettings, kw_only=True):
    port_base: int = DEFAULT_PORT_BASE
    up_nats_port: int = 4222
    up_services: list[str] = msgspec.field(default_factory=list)
    up_ready_timeout_s: float = 90.0
    restart_backoff_max_s: float = 30.0
    up_nats_auth: bool = False
    """One NATS user per service with its subject permissions (deploy/nats/auth.conf)."""


@dataclass
class Child:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    failures: int = 0
    task: asyncio.Task | None = None

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Supervisor:
    settings: UpSettings
    external_nats: str | None = None
    out: object = field(default_factory=lambda: sys.stdout)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.settings.state_dir).resolve()
        self.children: list[Child] = []
        self.nats: NatsServer | None = None
        self.stopping = asyncio.Event()
        self.nats_url = ""

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ setup

    def _start_nats(self) -> str:
        if self.external_nats:
            self.say(f"using NATS at {self.external_nats}")
            return self.external_nats
        port = self.settings.up_nats_port
        if port:
            try:
                check_port_free("127.0.0.1", port, "HEAN_UP_NATS_PORT")
            except ConfigError:
                new = free_port()
                self.say(
                    f"port {port} is busy: embedded nats-server listens on {new} instead "
                    f"(tap with: nats -s nats://127.0.0.1:{new} sub 'hean.>')"
                )
                port = new
        extra = self._auth_config(self.state_dir / "nats") if self.settings.up_nats_auth else ""
        self.nats = NatsServer(
            store_dir=self.state_dir / "nats",
            port=port or 0,
            log_file=self.state_dir / "logs" / "nats-server.log",
            extra_config=extra,
        ).start()
        self.say(f"nats-server with JetStream on {self.nats.url} (store {self.nats.store_dir})")
        return self.nats.url

    @property
    def auth_dir(self) -> Path:
        return self.state_dir / "nats-auth"

    def _auth_config(self, store_dir: Path) -> str:
        """Passwords in the state dir, the auth block with them next to the server config."""
        natsauth.make_secrets(self.auth_dir)
        store_dir.mkdir(parents=True, exist_ok=True)
        conf = store_dir / "auth.conf"
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        conf.write_text(natsauth.render(natsauth.read_passwords(self.auth_dir)))
        op = natsauth.password_path(self.auth_dir, natsauth.OPERATOR)
        self.say(
            f"NATS users per service; for the CLI: export HEAN_NATS_USER={natsauth.OPERATOR} "
            f"HEAN_NATS_PASSWORD_FILE={op}"
        )
        return 'include "auth.conf"\n'

    def _plan(self) -> None:
        base = self.settings.port_base
        wanted = set(self.settings.up_services or [s.name for s in SERVICES])
        unknown = wanted - {s.name for s in SERVICES}
        if unknown:
            raise ConfigError(f"HEAN_UP_SERVICES: unknown service(s) {', '.join(sorted(unknown))}")
        env = dict(os.environ)
        env.update(
            {
                "HEAN_NATS_URL": self.nats_url,
                "HEAN_STATE_DIR": str(self.state_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        sim_port = base + SIM_PORT_OFFSET
        if self.settings.venue_mode == "sim" and importlib.util.find_spec("hean.cli.cmd_sim"):
            env["HEAN_SIM_URL"] = f"http://127.0.0.1:{sim_port}"
            self.children.append(
                Child(
                    "exchange-sim",
                    [sys.executable, "-m", "hean.cli.main", "sim", "--port", str(sim_port)],
                    sim_port,
                    dict(env),
                    self.state_dir / "logs" / "exchange-sim.log",
                )
            )
        for svc in SERVICES:
            if svc.name not in wanted:
                continue
            port = svc.port(base)
            check_port_free("127.0.0.1", port, f"HEAN_PORT_BASE={base}: port {port}")
            child_env = dict(env, HEAN_HEALTH_PORT=str(port))
            if self.settings.up_nats_auth and not self.external_nats:
                child_env["HEAN_NATS_USER"] = svc.name
                child_env["HEAN_NATS_PASSWORD_FILE"] = str(
                    natsauth.password_path(self.auth_dir, svc.name)
                )
            self.children.append(
                Child(
                    svc.name,
                    [sys.executable, "-m", "hean.cli.main", "service", svc.name],
                    port,
                    child_env,
                    self.state_dir / "logs" / f"{svc.name}.log",
                )
            )

    # ------------------------------------------------------------------ children

    async def _spawn(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(child.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv,
                env=child.env,
                stdout=logf,
                stderr=logf,
                preexec_fn=die_with_parent,
            )
        finally:
            logf.close()
        child.started_at = time.monotonic()
        self._write_run_file()

    async def _watch(self, child: Child) -> None:
        while not self.stopping.is_set():
            await self._spawn(child)
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            child.failures = 0 if ran > 60 else child.failures + 1
            delay = min(self.settings.restart_backoff_max_s, 0.5 * 2**child.failures)
            child.restarts += 1
            self.say(
                f"{child.name} exited with {code} after {ran:.1f} s; restarting in {delay:.1f} s "
                f"(restart #{child.restarts}, log {child.log_path})"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    def _write_run_file(self) -> None:
        doc = {
            "pid": os.getpid(),
            "nats_url": self.nats_url,
            "nats_pid": self.nats.proc.pid if self.nats and self.nats.proc else None,
            "port_base": self.settings.port_base,
            "services": {
                c.name: {
                    "port": c.port,
                    "pid": c.proc.pid if c.proc else None,
                    "restarts": c.restarts,
                    "log": str(c.log_path),
                }
                for c in self.children
            },
        }
        path = self.state_dir / RUN_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(path)

    async def _readiness(self, session: aiohttp.ClientSession) -> dict[str, bool]:
        async def one(child: Child) -> bool:
            path = "/readyz" if child.name != "exchange-sim" else "/sim/state"
            try:
                async with session.get(
                    child.health_url + path, timeout=aiohttp.ClientTimeout(1)
                ) as r:
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        results = await asyncio.gather(*(one(c) for c in self.children))
        return {c.name: ok for c, ok in zip(self.children, results, strict=True)}

    async def _report_when_ready(self) -> None:
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while not self.stopping.is_set():
                ready = await self._readiness(session)
                if all(ready.values()):
                    took = time.monotonic() - started
                    self.say(f"all {len(ready)} processes ready in {took:.1f} s")
                    self.say(format_table(self.children, ready))
                    self.say("hean status | hean tap 'hean.>' | Ctrl-C stops everything")
                    return
                if time.monotonic() - started > self.settings.up_ready_timeout_s:
                    waiting = ", ".join(n for n, ok in ready.items() if not ok)
                    self.say(
                        f"still not ready after {self.settings.up_ready_timeout_s:g} s: {waiting}"
                    )
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), 0.5)

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            self.nats_url = self._start_nats()
            self._plan()
        except (NatsServerError, ConfigError) as exc:
            self.say(f"hean up: {exc}")
            if self.nats:
                self.nats.stop()
            return 2
        self.say(f"starting {len(self.children)} processes; logs in {self.state_dir / 'logs'}")
        for child in self.children:
            child.task = asyncio.create_task(self._watch(child), name=child.name)
        reporter = asyncio.create_task(self._report_when_ready())
        await self.stopping.wait()
        self.say("stopping...")
        reporter.cancel()
        await self._stop_children()
        if self.nats:
            self.nats.stop()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / RUN_FILE).unlink()
        self.say("stopped")
        return 0

    async def _stop_children(self, grace_s: float = 15.0) -> None:
        procs = [c.proc for c in self.children if c.proc and c.proc.returncode is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), grace_s)
        except TimeoutError:
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            await asyncio.gather(*(p.wait() for p in procs))
        for c in self.children:
            if c.task:
                c.task.cancel()
        await asyncio.gather(*(c.task for c in self.children if c.task), return_exceptions=True)


def format_table(children: list[Child], ready: dict[str, bool]) -> str:
    rows = [("PROCESS", "PORT", "PID", "RESTARTS", "READY")]
    for c in children:
        rows.append(
            (
                c.name,
                str(c.port),
                str(c.proc.pid if c.proc else "-"),
                str(c.restarts),
                "yes" if ready.get(c.name) else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)


def read_run_file(state_dir: str) -> dict | None:
    path = Path(state_dir) / RUN_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
