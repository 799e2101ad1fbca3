"""One service as a real process: health, readiness, micro registration, shutdown, bad config."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import httpx
import nats
import pytest

from hean.config import free_port
from hean.natsserver import NatsServer
from tests.proc_helpers import HEAN, http_status, run_hean, wait_until

SERVICE = "strategy-engine"


def service_env(nats_url: str, port: int) -> dict[str, str]:
    return dict(os.environ, HEAN_NATS_URL=nats_url, HEAN_HEALTH_PORT=str(port))


@pytest.mark.e2e
async def test_health_readiness_micro_and_graceful_shutdown(nats_server: NatsServer) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*HEAN, "service", SERVICE],
        env=service_env(nats_server.url, port),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: http_status(base + "/readyz") == 200, 60, "service ready")
        assert httpx.get(base + "/healthz").json()["status"] == "alive"
        metrics = httpx.get(base + "/metrics").text
        assert 'hean_service_ready{service="strategy-engine"} 1.0' in metrics
        assert "hean_messages_received_total" in metrics
        # started on uvloop with the start-up heap frozen (hean.runtime.eventloop, heap)
        assert 'hean_event_loop_info{loop="uvloop",service="strategy-engine"} 1.0' in metrics
        frozen = re.search(r'hean_gc_frozen_objects\{service="strategy-engine"\} (\S+)', metrics)
        assert frozen and float(frozen.group(1)) > 10_000

        nc = await nats.connect(nats_server.url)
        info = json.loads((await nc.request(f"$SRV.INFO.{SERVICE}", b"", timeout=5)).data)
        assert info["name"] == SERVICE
        assert any(e["name"] == "status" for e in info["endpoints"])
        beat = await nc.subscribe(f"hean.heartbeat.{SERVICE}")
        msg = await beat.next_msg(timeout=10)
        assert json.loads(msg.data)["type"] == "Heartbeat"
        await nc.close()

        nats_server.kill()
        wait_until(lambda: http_status(base + "/readyz") == 503, 30, "not ready without NATS")
        body = httpx.get(base + "/readyz").json()
        assert body["conditions"]["bus_connected"] is False
        assert http_status(base + "/healthz") == 200
        nats_server.start()
        wait_until(lambda: http_status(base + "/readyz") == 200, 60, "ready again after reconnect")

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        out = proc.stdout.read().decode()
        assert '"msg": "stopped"' in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("env_over", "expected"),
    [
        ({"HEAN_HEALTH_PORT": "70000"}, "HEAN_HEALTH_PORT: Expected `int` <= 65535"),
        ({"HEAN_HEALTH_PORT": "abc"}, "HEAN_HEALTH_PORT: Expected `int`"),
        ({"HEAN_NATS_URL": "http://x"}, "HEAN_NATS_URL: not a NATS URL"),
        ({"HEAN_LOG_LEVEL": "LOUD"}, "HEAN_LOG_LEVEL"),
    ],
)
def test_bad_configuration_fails_at_start_with_one_clear_line(env_over, expected) -> None:
    env = service_env("nats://127.0.0.1:1", free_port())
    env.update(env_over)
    result = run_hean(["service", SERVICE], env, timeout=60)
    assert result.returncode == 2
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stdout + result.stderr


def test_unreachable_nats_and_busy_port_name_their_setting() -> None:
    env = service_env(f"nats://127.0.0.1:{free_port()}", free_port())
    env["HEAN_NATS_CONNECT_TIMEOUT_S"] = "1"
    result = run_hean(["service", SERVICE], env)
    assert result.returncode == 2
    assert "HEAN_NATS_URL=nats://127.0.0.1:" in result.stdout
    assert "cannot connect to NATS" in result.stdout

    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = service_env("nats://127.0.0.1:4222", port)
        result = run_hean(["service", SERVICE], env)
    assert result.returncode == 2
    assert f"HEAN_HEALTH_PORT={port}: cannot listen" in result.stdout
