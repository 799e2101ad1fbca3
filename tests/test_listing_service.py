"""The listing scanner process over a real nats-server: listings, spikes, alerts, restarts.

Alerts are delivered to a local HTTP receiver (Slack and generic webhook) and a local SMTP
server with STARTTLS and AUTH; the venue is the scripted client of the collector tests.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from email import message_from_bytes

import pytest
from service_helpers import running
from test_alerts import Receiver, smtp_server  # noqa: F401  (fixture)
from test_collector_service import ScriptedVenue

from hean.bus.nats import NatsBus
from hean.config import free_port
from hean_proto import codec
from hean_proto.events import Alert
from hean_proto.subjects import KV_LISTINGS, msg_id_for, subject_for
from hean_services.listing_scanner.main import Settings, build

MIN = 60_000


def wall_ms() -> int:
    return int(time.time() * 1000)


def settings_for(nats_url: str, rx: Receiver, smtp_port: int, cafile: str) -> Settings:
    return Settings(
        nats_url=nats_url,
        health_port=free_port(),
        venues=["bybit", "okx"],
        listing_scan_s=0.2,
        listing_watch_period_s=0.2,
        listing_watch_window_h=1.0,
        tick_s=0.2,
        alert_slack_webhook_url=f"{rx.url}/slack",
        alert_webhook_url=f"{rx.url}/hook",
        alert_smtp_host="127.0.0.1",
        alert_smtp_port=smtp_port,
        alert_smtp_user="hean",
        alert_smtp_password="pw",
        alert_smtp_to=["ops@example.com"],
        alert_smtp_cafile=cafile,
        alert_backoff_s=0.05,
    )


async def wait_for(predicate, timeout: float = 60.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


def delivered(rx: Receiver, box) -> dict[str, Counter]:
    """Alert keys received per channel (e-mail identified by its alert-key header)."""
    return {
        "slack": Counter(
            p["text"].rsplit(" · ", 1)[1].rstrip("_") for p in rx.got.get("slack", [])
        ),
        "webhook": Counter(p["key"] for p in rx.got.get("hook", [])),
        "email": Counter(message_from_bytes(m[2])["X-Hean-Alert-Key"] for m in box.messages),
    }


@pytest.mark.timeout(120)
async def test_listing_spike_alerts_once_per_channel_across_restarts(
    nats_url: str,
    smtp_server,  # noqa: F811
    tmp_path,
) -> None:
    box, smtp_port, _ = smtp_server
    cafile = str(tmp_path / "cert.pem")  # written by the smtp_server fixture
    now = wall_ms()
    bybit = ScriptedVenue("bybit", {"BTCUSDT": (0.0001, 8)}, {"BTCUSDT": now - 900 * 24 * 60 * MIN})
    okx = ScriptedVenue("okx", {"BTCUSDT": (0.0001, 8)}, {"BTCUSDT": None})
    venues = {"bybit": bybit, "okx": okx}

    async with Receiver() as rx:
        settings = settings_for(nats_url, rx, smtp_port, cafile)
        app = build(settings, client_factory=lambda v, s: venues[v])
        async with running(app, settings):
            await wait_for(lambda: set(app.logic.scanned) == {"bybit", "okx"})
            assert app.logic.state.watches == []  # the baseline announces nothing old
            # a new listing whose funding spikes: 0.4 % per 8 h
            bybit.rates["NEWUSDT"] = (0.004, 8)
            bybit.listed["NEWUSDT"] = wall_ms() - MIN
            spike_key = "funding_spike:bybit:NEWUSDT:"
            await wait_for(
                lambda: (
                    all(
                        any(k.startswith(spike_key) for k in got)
                        for got in delivered(rx, box).values()
                    )
                    and all(got["listing:bybit:NEWUSDT"] for got in delivered(rx, box).values())
                )
            )
        first = delivered(rx, box)

        # while the scanner is down, okx lists a market (no spike)
        okx.rates["LATEUSDT"] = (0.0001, 8)
        okx.listed["LATEUSDT"] = wall_ms()
        polls_before = bybit.calls["fetch_funding_rates"]

        settings2 = settings_for(nats_url, rx, smtp_port, cafile)
        app2 = build(settings2, client_factory=lambda v, s: venues[v])
        async with running(app2, settings2) as ctx:
            await wait_for(
                lambda: (
                    rx.got.get("hook")
                    and any(p["key"] == "listing:okx:LATEUSDT" for p in rx.got["hook"])
                )
            )
            # the restarted scanner keeps watching NEWUSDT (still spiking) ...
            await wait_for(lambda: bybit.calls["fetch_funding_rates"] >= polls_before + 3)
            # ... and a sentinel published now arrives after anything it might repeat
            sentinel = Alert(
                ts_ms=wall_ms(),
                key="sentinel",
                kind="service",
                severity="info",
                title="sentinel",
                text="end of test",
            )
            await ctx.bus.publish(
                subject_for(sentinel), codec.encode(sentinel), msg_id=msg_id_for(sentinel)
            )
            await wait_for(lambda: all(got["sentinel"] for got in delivered(rx, box).values()))
            bus: NatsBus = ctx.bus
            assert await bus.kv_get(KV_LISTINGS, "state")

    final = delivered(rx, box)
    for channel, got in final.items():
        spikes = [k for k in got if k.startswith(spike_key)]
        assert got["listing:bybit:NEWUSDT"] == 1, (channel, got)
        assert len(spikes) == 1 and got[spikes[0]] == 1, (channel, got)
        assert got["listing:okx:LATEUSDT"] == 1, (channel, got)
        assert got["sentinel"] == 1
        assert sum(got.values()) == 4, (channel, got)
    assert sum(first["webhook"].values()) == 2
