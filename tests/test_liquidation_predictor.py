"""liquidation-predictor: a crash scenario in memory and end to end over a real nats-server."""

from __future__ import annotations

import nats
from service_helpers import Tap, of, running

from hean.config import free_port
from hean.ml.cascade.model import DEFAULT_DIR, CascadeModel
from hean_proto import codec
from hean_proto.events import (
    BookLevel,
    BookTop,
    CascadeForecast,
    FundingRate,
    Liquidation,
    OpenInterest,
    PriceTick,
)
from hean_proto.subjects import subject_for
from hean_services.liquidation_predictor.logic import LiquidationPredictorLogic
from hean_services.liquidation_predictor.main import Settings, build

D = 86_400_000
H = 3_600_000
T0 = 1_767_225_600_000
KEY = ("sim", "BTCUSDT")


def scenario() -> list[tuple[str, list]]:
    """20 calm days, 6 days of leveraged build-up (OI +8 %/day, price grinding up), 2 crash days.

    Each day is a list of price / open-interest events, hourly; the crash days end with
    one-minute ticks so that the 15-minute momentum is measurable.
    """
    days: list[tuple[str, list]] = []
    p, oi = 100.0, 1000.0
    for d in range(28):
        if d < 20:
            path, phase = [p * (1 + 0.002 * ((i % 3) - 1)) for i in range(6)], "calm"
        elif d < 26:
            path, phase = [p * (1 + 0.01 * i) for i in range(6)], "build"
            oi *= 1.08
        else:
            path, phase = [p * (1 - 0.02 * i) for i in range(6)], "crash"
            oi *= 0.9
        p = path[-1]
        evs: list = []
        for i, px in enumerate(path):
            t = T0 + d * D + i * H
            evs.append(PriceTick(ts_ms=t, venue="sim", symbol="BTCUSDT", mark=px))
            evs.append(OpenInterest(ts_ms=t, venue="sim", symbol="BTCUSDT", oi_usd=oi * px))
        if phase == "crash":
            t = T0 + d * D + 6 * H
            for k in range(1, 21):
                evs.append(
                    PriceTick(
                        ts_ms=t + k * 60_000,
                        venue="sim",
                        symbol="BTCUSDT",
                        mark=p * (1 - 0.001 * k),
                    )
                )
        days.append((phase, evs))
    return days


def test_probability_rises_before_the_drop_and_direction_is_down() -> None:
    logic = LiquidationPredictorLogic(CascadeModel.load(DEFAULT_DIR))
    assert logic.readiness(0) == {"model_loaded": True}
    by_phase: dict[str, list[CascadeForecast]] = {}
    for day, (phase, evs) in enumerate(scenario()):
        for e in evs:
            logic.on_event(e, e.ts_ms)
        out = logic.on_tick(evs[-1].ts_ms)
        assert len(out) == (0 if day == 0 else 1)  # one bar is too little history
        if not out:
            continue
        by_phase.setdefault(phase, []).append(out[0])
    calm, build_up, crash = (by_phase[k] for k in ("calm", "build", "crash"))
    assert build_up[-1].probability > 1.5 * calm[-1].probability
    assert crash[0].probability > build_up[-1].probability
    assert crash[-1].direction == "down" and crash[-1].momentum_15m_frac < -0.01
    reg = logic.metrics.registry
    assert reg.get_sample_value("hean_liquidation_forecasts_total", {"venue": "sim"}) == 27


def test_not_ready_without_model_and_publishes_nothing() -> None:
    logic = LiquidationPredictorLogic()
    e = PriceTick(ts_ms=T0, venue="sim", symbol="BTCUSDT", mark=100.0)
    logic.on_event(e, T0)
    assert logic.on_tick(T0) == []
    assert logic.readiness(T0) == {"model_loaded": False}
    assert "no cascade model" in logic.snapshot()["not_ready_reason"]
    # open interest before any price cannot be turned into position units: counted, not used
    logic.on_event(OpenInterest(ts_ms=T0, venue="sim", symbol="ETHUSDT", oi_usd=1e6), T0)
    assert (
        logic.metrics.registry.get_sample_value(
            "hean_liquidation_predictor_ignored_total", {"reason": "oi_before_price"}
        )
        == 1
    )


def test_funding_before_any_price_is_warm_up_not_an_error() -> None:
    """The collector polls funding and prices apart, so funding can come first."""
    logic = LiquidationPredictorLogic(CascadeModel.load(DEFAULT_DIR))
    rate = FundingRate(ts_ms=T0, venue="sim", symbol="BTCUSDT", rate=0.0001, interval_hours=8.0)
    logic.on_event(rate, T0)
    assert logic.on_tick(T0) == []
    reg = logic.metrics.registry
    assert (
        reg.get_sample_value("hean_liquidation_predictor_ignored_total", {"reason": "warming_up"})
        == 1
    )


async def test_service_publishes_cascade_forecast_over_nats(nats_url: str, tmp_path) -> None:
    settings = Settings(nats_url=nats_url, health_port=free_port())
    tap = Tap()
    await tap.start(nats_url)
    pub = await nats.connect(nats_url)
    try:
        async with running(build(settings), settings) as ctx:
            logic = ctx.runtime.logic
            assert logic.readiness(0) == {"model_loaded": True}
            days = scenario()
            for _, evs in days[-10:]:
                for e in evs:
                    await pub.publish(subject_for(e), codec.encode(e))
            book = BookTop(
                ts_ms=T0 + 28 * D,
                venue="sim",
                symbol="BTCUSDT",
                bids=[BookLevel(99.0, 1.0)],
                asks=[BookLevel(99.1, 3.0)],
            )
            liq = Liquidation(
                ts_ms=T0 + 28 * D,
                venue="sim",
                symbol="BTCUSDT",
                side="sell",
                price=99.0,
                qty=10.0,
                notional_usd=990.0,
            )
            for e in (book, liq):
                await pub.publish(subject_for(e), codec.encode(e))
            await pub.flush()
            found = await tap.until(of(CascadeForecast, venue="sim", symbol="BTCUSDT"), 30)
            f = found[-1]
            assert f.model_version == logic.model.version and 0 <= f.probability <= 1
            reg = ctx.metrics.registry
            await tap.until(
                lambda _: (
                    reg.get_sample_value(
                        "hean_liquidation_volume_usd",
                        {"venue": "sim", "symbol": "BTCUSDT", "side": "long"},
                    )
                    == 990.0
                ),
                30,
            )
            imb = reg.get_sample_value(
                "hean_liquidation_book_imbalance", {"venue": "sim", "symbol": "BTCUSDT"}
            )
            assert imb is not None and imb < 0
    finally:
        await pub.close()
        await tap.close()


async def test_service_without_model_is_not_ready(nats_url: str, tmp_path) -> None:
    settings = Settings(nats_url=nats_url, health_port=free_port(), model_dir=str(tmp_path))
    async with running(build(settings), settings) as ctx:
        assert ctx.runtime.logic.readiness(0) == {"model_loaded": False}
        assert str(tmp_path) in ctx.runtime.logic.load_error


async def test_a_restarted_predictor_rebuilds_its_bars_from_history(nats_url: str) -> None:
    """Stored funding snapshots (mark prices) and open interest give the bars back at start,
    so the first new price gets a forecast instead of days of warm-up."""
    import time

    from hean.bus.nats import NatsBus
    from hean_proto.subjects import msg_id_for

    now = int(time.time() * 1000)
    start = now - 8 * D
    bus = await NatsBus.connect(nats_url, "history-writer")
    await bus.ensure_streams()
    for i in range(8 * 6):  # every 4 h for 8 days
        t = start + i * 4 * H
        px = 100.0 * (1 + 0.001 * i)
        for e in (
            FundingRate(
                ts_ms=t,
                venue="sim",
                symbol="SOLUSDT",
                rate=0.0001,
                interval_hours=8,
                mark_price=px,
            ),
            OpenInterest(ts_ms=t, venue="sim", symbol="SOLUSDT", oi_usd=1e6 * px),
        ):
            await bus.publish(subject_for(e), codec.encode(e), msg_id=msg_id_for(e), wait=True)
    await bus.close()

    cold = Settings(nats_url=nats_url, health_port=free_port(), bootstrap_history=False)
    async with running(build(cold), cold) as ctx:
        assert ("sim", "SOLUSDT") not in ctx.runtime.logic.symbols

    settings = Settings(nats_url=nats_url, health_port=free_port())
    tap = Tap()
    await tap.start(nats_url)
    pub = await nats.connect(nats_url)
    try:
        async with running(build(settings), settings) as ctx:
            bars = ctx.runtime.logic.bars_frame(("sim", "SOLUSDT"))
            assert len(bars) >= 8 and bars["oi_units"].notna().all()
            tick = PriceTick(ts_ms=now, venue="sim", symbol="SOLUSDT", mark=105.0)
            await pub.publish(subject_for(tick), codec.encode(tick))
            found = await tap.until(of(CascadeForecast, venue="sim", symbol="SOLUSDT"), 30)
            assert 0 <= found[-1].probability <= 1
    finally:
        await pub.close()
        await tap.close()
