"""The event pipeline over NATS at a steady rate: delivered rate, loss, per-hop latency.

Five hops as in the system (collector -> predictor -> strategy -> risk -> router), each a
Runtime on its own NATS connection. Market data and forecasts travel on core subjects;
signals and intents through JetStream with durable consumers, as the real services use them.
Each stage relays the event type it receives into the type the real service emits, so the
figures are the bus and runtime cost of each hop, not the cost of the models.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from hean.bus.nats import NatsBus
from hean.clock import SystemClock
from hean.runtime.core import Runtime
from hean.runtime.logic import Input, ServiceLogic
from hean_proto import codec, subjects
from hean_proto import events as ev

HOPS = ("collector->predictor", "predictor->strategy", "strategy->risk", "risk->router")


class _Stage(ServiceLogic):
    def __init__(self, name: str, inputs: list[Input], convert, stamps: dict) -> None:
        self.name = name
        self._inputs = inputs
        self._convert = convert
        self._stamps = stamps

    def inputs(self) -> list[Input]:
        return self._inputs

    def on_event(self, event: ev.Event, now_ms: int):
        key = _key(event)
        self._stamps[self.name][key] = time.perf_counter_ns()
        out = self._convert(event, now_ms)
        return [out] if out is not None else []


def _key(event: ev.Event) -> int:
    if isinstance(event, ev.FundingRate):
        return event.funding_time_ms or 0
    if isinstance(event, ev.FundingForecast):
        return event.for_funding_ms or 0
    if isinstance(event, ev.Signal | ev.OrderIntent):
        return int(event.id.split("-")[1])
    raise TypeError(type(event))


def _forecast(e: ev.FundingRate, now: int) -> ev.FundingForecast:
    return ev.FundingForecast(
        ts_ms=now,
        venue=e.venue,
        symbol=e.symbol,
        interval_hours=e.interval_hours,
        current_rate=e.rate,
        predicted_rate=e.rate,
        lower_rate=e.rate,
        upper_rate=e.rate,
        confidence=0.7,
        action="ENTER",
        model_version="bench",
        for_funding_ms=e.funding_time_ms,
    )


def _signal(e: ev.FundingForecast, now: int) -> ev.Signal:
    return ev.Signal(
        ts_ms=now,
        id=f"s-{e.for_funding_ms}",
        strategy="bench",
        symbol=e.symbol,
        legs=[ev.SignalLeg(venue=e.venue, symbol=e.symbol, side="sell")],
        size_frac=0.01,
        confidence=e.confidence,
        stop_loss_frac=0.02,
    )


def _intent(e: ev.Signal, now: int) -> ev.OrderIntent:
    leg = e.legs[0]
    return ev.OrderIntent(
        ts_ms=now,
        id=f"i-{e.id.split('-')[1]}",
        signal_id=e.id,
        strategy=e.strategy,
        symbol=e.symbol,
        legs=[
            ev.IntentLeg(
                client_order_id=f"H{e.id.split('-')[1]}",
                venue=leg.venue,
                symbol=leg.symbol,
                side=leg.side,
                qty=0.01,
                notional_usd=100.0,
            )
        ],
    )


async def run_rate(url: str, rate: int, seconds: float, run_id: str) -> dict:
    stamps: dict[str, dict[int, int]] = {n: {} for n in ("predictor", "strategy", "risk", "router")}
    sent: dict[int, int] = {}
    stages = [
        _Stage(
            "predictor", [Input(subjects.FUNDING.pattern(), (ev.FundingRate,))], _forecast, stamps
        ),
        _Stage(
            "strategy",
            [Input(subjects.PRED_FUNDING.pattern(), (ev.FundingForecast,))],
            _signal,
            stamps,
        ),
        _Stage(
            "risk",
            [Input(subjects.SIGNAL.pattern("bench"), (ev.Signal,), durable=f"bench_risk_{run_id}")],
            _intent,
            stamps,
        ),
        _Stage(
            "router",
            [
                Input(
                    subjects.ORDER_APPROVED.pattern("bench"),
                    (ev.OrderIntent,),
                    durable=f"bench_router_{run_id}",
                )
            ],
            lambda e, n: None,
            stamps,
        ),
    ]
    buses = []
    runtimes = []
    for st in stages:
        bus = await NatsBus.connect(url, f"bench-{st.name}")
        await bus.ensure_streams()
        rt = Runtime(st, bus, SystemClock())
        await rt.start()
        buses.append(bus)
        runtimes.append(rt)
    source = await NatsBus.connect(url, "bench-collector")
    # core publishes, as market data flows; the history stream stores them server-side
    subject = subjects.FUNDING.subject("benchvenue", "BTCUSDT")
    total = int(rate * seconds)
    interval = 1.0 / rate
    started = time.perf_counter()
    for i in range(1, total + 1):
        target = started + i * interval
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        event = ev.FundingRate(
            ts_ms=1,
            venue="benchvenue",
            symbol="BTCUSDT",
            rate=0.0001,
            interval_hours=8,
            funding_time_ms=i,
        )
        sent[i] = time.perf_counter_ns()
        await source.nc.publish(subject, codec.encode(event))
    publish_s = time.perf_counter() - started
    deadline = time.perf_counter() + 30
    while len(stamps["router"]) < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    drained_s = time.perf_counter() - started
    for rt in runtimes:
        await rt.stop()
    for bus in [*buses, source]:
        await bus.close()

    chain = [sent, stamps["predictor"], stamps["strategy"], stamps["risk"], stamps["router"]]
    hops = {}
    for name, a, b in zip(HOPS, chain, chain[1:], strict=False):
        lat = np.array([(b[k] - a[k]) / 1e6 for k in b if k in a])
        hops[name] = {
            "p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        }
    delivered = len(stamps["router"])
    return {
        "target_events_per_s": rate,
        "offered_events_per_s": round(total / publish_s),
        "delivered": delivered,
        "sent": total,
        "lost": total - delivered,
        "delivered_events_per_s": round(delivered / drained_s),
        "hops": hops,
    }
