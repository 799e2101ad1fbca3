"""`hean up` end to end: everything ready, status, tap, restart of a killed service, clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from hean.registry import SERVICES
from tests.proc_helpers import HEAN, free_port_range, http_status, pid_alive, run_hean, wait_until

pytestmark = pytest.mark.e2e


def up_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HEAN_NATS_URL", None)
    env.update(
        HEAN_STATE_DIR=str(tmp_path / "state"),
        HEAN_PORT_BASE=str(free_port_range(12)),
        HEAN_UP_NATS_PORT="0",
        **extra,
    )
    return env


def read_run(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "run.json").read_text())


def all_ready(tmp_path: Path, names: list[str]) -> bool:
    run = read_run(tmp_path)
    return all(
        http_status(f"http://127.0.0.1:{run['services'][n]['port']}/readyz") == 200 for n in names
    )


def test_whole_system_runs_restarts_and_stops_cleanly(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    names = [s.name for s in SERVICES]
    up = subprocess.Popen([*HEAN, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: all_ready(tmp_path, names), 120, "all seven services ready")
        wait_until(lambda: read_run(tmp_path)["services"], 5, "run file")
        run = read_run(tmp_path)

        status = run_hean(["status"], env)
        assert status.returncode == 0, status.stdout
        for name in names:
            line = next(ln for ln in status.stdout.splitlines() if ln.startswith(name))
            assert line.split()[4:6] == ["yes", "yes"], line

        tap = run_hean(["tap", "hean.heartbeat.>", "--count", "3", "--timeout", "30"], env)
        assert tap.returncode == 0, tap.stderr
        beats = [ln for ln in tap.stdout.splitlines() if " Heartbeat " in ln]
        assert len(beats) == 3

        victim = "risk-killswitch"
        old_pid = run["services"][victim]["pid"]
        os.kill(old_pid, signal.SIGKILL)
        wait_until(
            lambda: read_run(tmp_path)["services"][victim]["pid"] not in (None, old_pid),
            60,
            "killed service restarted",
        )
        wait_until(lambda: all_ready(tmp_path, [victim]), 60, "restarted service ready")
        assert read_run(tmp_path)["services"][victim]["restarts"] == 1

        run = read_run(tmp_path)
        pids = [info["pid"] for info in run["services"].values()] + [run["nats_pid"]]
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        output = up.stdout.read().decode()
        assert "ready in" in output and "stopped" in output
        assert not [p for p in pids if pid_alive(p)], "processes left behind"
        assert not (tmp_path / "state" / "run.json").exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_killing_the_supervisor_leaves_nothing_behind(tmp_path: Path) -> None:
    env = up_env(tmp_path, HEAN_UP_SERVICES="strategy-engine,risk-killswitch")
    up = subprocess.Popen(
        [*HEAN, "up"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        names = ["strategy-engine", "risk-killswitch"]
        wait_until(lambda: all_ready(tmp_path, names), 120, "services ready")
        run = read_run(tmp_path)
        pids = [info["pid"] for info in run["services"].values()] + [run["nats_pid"]]
        up.kill()
        up.wait()
        wait_until(lambda: not [p for p in pids if pid_alive(p)], 30, "children gone")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
