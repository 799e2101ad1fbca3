"""The event pipeline over NATS at a steady rate: delivered rate, loss, per-hop latency.

Five hops as in the system (collector -> predictor -> strategy -> risk -> router), each a
Runtime on its own NATS connection. Market data and forecasts travel on core subjects;
signals and intents through JetStream with durable consumers, as the real services use them
(risk decides a signal from its live copy, ``hean.bus.early``; ``early=False`` measures the
stored copy alone).
Each stage relays the event type it receives into what the real service emits (risk: a
decision, then the intent), so the figures are the bus and runtime cost of each hop, not the
cost of the models or of the risk checks (``hean.bench.risk`` measures those).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path

import numpy as np

from hean.bus.nats import NatsBus
from hean.clock import SystemClock
from hean.runtime import eventloop, heap
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
        self._stamps[self.name][key] = time.monotonic_ns()
        out = self._convert(event, now_ms)
        if out is None:
            return []
        return out if isinstance(out, list) else [out]


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


def _decide(e: ev.Signal, now: int) -> list[ev.Event]:
    """What risk publishes for an approved signal, in its order: the decision, then the intent
    (both stored in the ledger stream, one after the other)."""
    intent = _intent(e, now)
    decision = ev.RiskDecision(
        ts_ms=now,
        signal_id=e.id,
        strategy=e.strategy,
        symbol=e.symbol,
        approved=True,
        intent_id=intent.id,
    )
    return [decision, intent]


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


def _consume(e: ev.Event, now: int) -> None:
    return None


def _stages(stamps: dict, run_id: str, early: bool = True) -> list[_Stage]:
    """The four relaying stages, as the real services subscribe (core or durable)."""
    return [
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
            [
                Input(
                    subjects.SIGNAL.pattern("bench"),
                    (ev.Signal,),
                    durable=f"bench_risk_{run_id}",
                    early=early,
                )
            ],
            _decide,
            stamps,
        ),
        _Stage(
            "router",
            [
                Input(  # as the paper order-router takes intents: a short ack wait
                    subjects.ORDER_APPROVED.pattern("bench"),
                    (ev.OrderIntent,),
                    durable=f"bench_router_{run_id}",
                    ack_wait_s=5.0,
                )
            ],
            _consume,
            stamps,
        ),
    ]


async def _serve_stage(name: str, url: str, run_id: str, early: bool, conn) -> None:
    stamps: dict[str, dict[int, int]] = {n: {} for n in ("predictor", "strategy", "risk", "router")}
    stage = next(st for st in _stages(stamps, run_id, early) if st.name == name)
    bus = await NatsBus.connect(url, f"bench-{name}")
    await bus.ensure_streams()
    rt = Runtime(stage, bus, SystemClock())
    await rt.start()
    heap.settle_after_startup()  # as the service runner does
    conn.send("ready")
    cpu = time.process_time()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)  # "stop"
    cpu = time.process_time() - cpu
    await rt.stop()
    await bus.close()
    conn.send((stamps[name], cpu))


def _stage_process(name: str, url: str, run_id: str, early: bool, conn) -> None:
    eventloop.run(_serve_stage(name, url, run_id, early, conn))


_RUNS = itertools.count(1)


async def _offer(url: str, rate: int, seconds: float) -> tuple[dict[int, int], float]:
    """Publish funding events at a steady rate; returns send stamps and the time it took.

    Keys are unique per run: durable consumers of later runs replay the stored signals and
    intents of earlier ones, which must not be taken for this run's."""
    base = next(_RUNS) * 10_000_000
    source = await NatsBus.connect(url, "bench-collector")
    # core publishes, as market data flows; the history stream stores them server-side
    subject = subjects.FUNDING.subject("benchvenue", "BTCUSDT")
    sent: dict[int, int] = {}
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
            funding_time_ms=base + i,
        )
        sent[base + i] = time.monotonic_ns()
        await source.nc.publish(subject, codec.encode(event))
    publish_s = time.perf_counter() - started
    await source.close()
    return sent, publish_s


async def _stored(url: str, events: int) -> dict[str, dict]:
    """Messages each stream stored per event offered, and whether each write waited for the
    disk (default persist mode) or was written in the background: what the fsyncs went to."""
    from nats.js.api import PersistMode

    bus = await NatsBus.connect(url, "bench-stored")
    out = {}
    for spec in subjects.STREAMS:
        info = await bus.js.stream_info(spec.name)
        if info.state.messages:
            out[spec.name] = {
                "per_event": round(info.state.messages / max(events, 1), 3),
                "waits_for_disk": info.config.persist_mode != PersistMode.ASYNC,
            }
    await bus.close()
    return out


def _report(rate: int, sent: dict, stamps: dict, publish_s: float, drained_s: float) -> dict:
    chain = [sent, stamps["predictor"], stamps["strategy"], stamps["risk"], stamps["router"]]
    hops = {}
    for name, a, b in zip(HOPS, chain, chain[1:], strict=False):
        lat = np.array([(b[k] - a[k]) / 1e6 for k in b if k in a])
        hops[name] = {
            "p50_ms": round(float(np.percentile(lat, 50)), 3) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
        }
    total = len(sent)
    delivered = sum(1 for k in stamps["router"] if k in sent)
    return {
        "target_events_per_s": rate,
        "offered_events_per_s": round(total / publish_s),
        "delivered": delivered,
        "sent": total,
        "lost": total - delivered,
        "reached": {k: sum(1 for x in v if x in sent) for k, v in stamps.items()},
        "delivered_events_per_s": round(delivered / drained_s),
        "hops": hops,
    }


async def run_rate_processes(
    url: str,
    rate: int,
    seconds: float,
    run_id: str,
    *,
    early: bool = True,
    server_pid: int | None = None,
    bare: bool = False,
) -> dict:
    """The same pipeline with each stage in its own process, as the services run;
    ``bare`` runs bare nats-py relays instead (``hean.bench.bare``: the floor)."""
    import multiprocessing as mp

    from hean.bench import bare as bare_stages

    target = bare_stages.stage_process if bare else _stage_process

    ctx = mp.get_context("spawn")
    procs, conns = [], []
    for name in ("predictor", "strategy", "risk", "router"):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=target, args=(name, url, run_id, early, child), daemon=True)
        proc.start()
        procs.append(proc)
        conns.append(parent)
    loop = asyncio.get_running_loop()
    for conn in conns:
        await loop.run_in_executor(None, conn.recv)  # "ready"
    started = time.perf_counter()
    server_cpu = _process_cpu_s(server_pid)
    offer_cpu = time.process_time()
    sent, publish_s = await _offer(url, rate, seconds)
    offer_cpu = time.process_time() - offer_cpu
    # the router stage reports only at the end: give the backlog a bounded time to drain
    await asyncio.sleep(min(30.0, 2.0 + seconds * 0.5))
    drained_s = time.perf_counter() - started
    stamps: dict[str, dict[int, int]] = {}
    cpu = {"collector (offering)": offer_cpu}
    for name, conn in zip(("predictor", "strategy", "risk", "router"), conns, strict=True):
        conn.send("stop")
        stamps[name], cpu[name] = await loop.run_in_executor(None, conn.recv)
    if server_cpu is not None:
        cpu["nats-server"] = _process_cpu_s(server_pid) - server_cpu
    for proc in procs:
        proc.join(timeout=10)
    last = max((t for k, t in stamps["router"].items() if k in sent), default=0)
    first = min(sent.values(), default=0)
    drained = (last - first) / 1e9 if last else drained_s
    report = _report(rate, sent, stamps, publish_s, max(drained, publish_s))
    report["stored"] = await _stored(url, len(sent))
    report["risk_decides"] = "as published" if early else "once stored"
    report["stages"] = "bare nats-py" if bare else "hean"
    report["cpu_us_per_event"] = {k: round(v / len(sent) * 1e6) for k, v in cpu.items()}
    # CPU per event times the rate: how many cores the pipeline keeps busy at this rate
    report["cpu_cores_at_rate"] = round(sum(cpu.values()) / len(sent) * rate, 2)
    return report


def _process_cpu_s(pid: int | None) -> float | None:
    """CPU seconds (user + system) another process has used, from /proc (Linux)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_rate(url: str, rate: int, seconds: float, run_id: str) -> dict:
    """Every stage in this process on its own connection: the bus and runtime cost alone."""
    stamps: dict[str, dict[int, int]] = {n: {} for n in ("predictor", "strategy", "risk", "router")}
    runtimes, buses = [], []
    for st in _stages(stamps, run_id):
        bus = await NatsBus.connect(url, f"bench-{st.name}")
        await bus.ensure_streams()
        rt = Runtime(st, bus, SystemClock())
        await rt.start()
        buses.append(bus)
        runtimes.append(rt)
    heap.settle_after_startup()
    started = time.perf_counter()
    sent, publish_s = await _offer(url, rate, seconds)
    total = len(sent)
    deadline = time.perf_counter() + 30
    while sum(1 for k in stamps["router"] if k in sent) < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    drained_s = time.perf_counter() - started
    for rt in runtimes:
        await rt.stop()
    for bus in buses:
        await bus.close()
    report = _report(rate, sent, stamps, publish_s, drained_s)
    report["stored"] = await _stored(url, total)
    return report
