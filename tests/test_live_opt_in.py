"""Live trading is an explicit opt-in that fails at start without keys."""

from __future__ import annotations

import os
import subprocess
import sys


def hean(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HEAN_")}
    return subprocess.run(
        [sys.executable, "-m", "hean.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "HEAN_NATS_URL": "nats://127.0.0.1:1", **env},
    )


def test_live_is_refused_for_services_that_do_not_trade() -> None:
    out = hean("service", "funding-collector", "--live")
    assert out.returncode == 2
    assert "--live applies to the order-router" in out.stdout + out.stderr


def test_live_router_without_keys_stops_at_start_naming_them() -> None:
    out = hean("service", "order-router", "--live", HEAN_VENUE_MODE="live")
    assert out.returncode == 2, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert "HEAN_BYBIT_API_KEY" in text and "HEAN_OKX_API_KEY" in text
