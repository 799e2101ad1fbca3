"""A service that falls behind: reported by its metrics and readiness, its memory bounded.

A real service (runner, health server, NATS bus) whose logic needs 2 ms per price tick is
flooded far faster than that; NATS drops what no longer fits the subscription's pending limit.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from hean.bus.nats import NatsBus
from hean.config import ServiceSettings, free_port
from hean.runtime.logic import Input, ServiceLogic
from hean.runtime.runner import ServiceApp
from hean_proto import codec, subjects
from hean_proto import events as ev
from tests.service_helpers import running

LIMIT = 100


class SlowPredictor(ServiceLogic):
    """A predictor whose model takes 2 ms per tick: about 500 ticks a second at most."""

    name = "funding-predictor"

    def __init__(self) -> None:
        self.handled = 0

    def inputs(self) -> list[Input]:
        return [Input(subjects.PRICE.pattern(), (ev.PriceTick,))]

    def on_event(self, event: ev.Event, now_ms: int):
        time.sleep(0.002)
        self.handled += 1
        return []


def metric(text: str, name: str) -> float:
    prefix = f'{name}{{service="funding-predictor"}}'
    line = next(x for x in text.splitlines() if x.startswith(prefix))
    return float(line.rsplit(" ", 1)[1])


async def test_a_service_that_falls_behind_is_not_ready_and_holds_a_bounded_backlog(
    nats_url: str, tmp_path
) -> None:
    settings = ServiceSettings(
        nats_url=nats_url,
        health_port=free_port(),
        state_dir=str(tmp_path),
        pending_msgs_limit=LIMIT,
        slow_consumer_window_s=1.0,
    )
    logic = SlowPredictor()
    base = f"http://127.0.0.1:{settings.health_port}"
    async with running(ServiceApp(logic=logic), settings), httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/readyz")).status_code == 200
        source = await NatsBus.connect(nats_url, "flood")
        tick = ev.PriceTick(ts_ms=1, venue="bybit", symbol="BTCUSDT", mark=100.0)
        data = codec.encode(tick)
        sent = 3_000
        for _ in range(sent):
            await source.nc.publish(subjects.subject_for(tick), data)
        await source.nc.flush()
        await source.close()

        behind = None
        for _ in range(200):
            r = await http.get(f"{base}/readyz")
            if r.status_code == 503:
                behind = r.json()
                break
            await asyncio.sleep(0.05)
        assert behind is not None, "never reported falling behind"
        assert behind["conditions"]["keeping_up"] is False
        text = (await http.get(f"{base}/metrics")).text
        assert metric(text, "hean_slow_consumer_events_total") >= 1
        assert metric(text, "hean_pending_messages") <= LIMIT  # dropped, not buffered

        # the backlog is worked off and, a window later, the service is ready again
        for _ in range(200):
            if (await http.get(f"{base}/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("never ready again after catching up")
        assert logic.handled < sent  # what did not fit was dropped, and counted
