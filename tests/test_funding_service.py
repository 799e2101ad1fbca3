"""funding-predictor service: forecasts from settlement events, in memory and over NATS."""

from __future__ import annotations

import asyncio
import contextlib

import nats
import pytest
from funding_synth import table

from hean.bus.memory import InMemoryBus
from hean.bus.nats import NatsBus
from hean.clock import SimClock
from hean.ml.funding.data import clean_frame
from hean.ml.funding.model import FundingForecaster
from hean.ml.funding.train import TrainConfig, train_model
from hean.runtime.core import Runtime
from hean_proto import codec
from hean_proto.events import FundingForecast, FundingRate
from hean_proto.subjects import FUNDING, PRED_FUNDING
from hean_services.funding_predictor.logic import FundingPredictorLogic

TINY = TrainConfig(seq_len=8, hidden=8, epochs=2, max_train=2000, threads=1)


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory) -> FundingForecaster:
    out = tmp_path_factory.mktemp("funding_service_model")
    train_model(clean_frame(table(n=200)), out, TINY, progress=lambda _: None)
    return FundingForecaster.load(out)


def settlements(n: int = 30) -> list[FundingRate]:
    """Settled BTCUSDT funding on binance, bybit and okx (BTC-USDT-SWAP), time-ordered."""
    df = clean_frame(table(n=n, seed=21))
    df = df[df["symbol"] == "BTCUSDT"].sort_values(["time_ms", "venue"])
    return [
        FundingRate(
            ts_ms=int(r.time_ms) + 1000,
            venue=r.venue,
            symbol=r.symbol,
            rate=float(r.rate),
            interval_hours=float(r.interval_hours),
            settled=True,
            funding_time_ms=int(r.time_ms),
        )
        for r in df.itertuples()
    ]


def _sample(logic: FundingPredictorLogic, name: str, labels: dict | None = None) -> float | None:
    return logic.metrics.registry.get_sample_value(name, labels or {})


async def test_forecasts_from_settlements_in_memory(forecaster):
    events = settlements()
    clock = SimClock(events[0].ts_ms)
    bus = InMemoryBus(clock=clock)
    logic = FundingPredictorLogic(forecaster)
    runtime = Runtime(logic, bus, clock)
    await runtime.start()
    assert logic.readiness(clock.now_ms()) == {"model_loaded": True}
    forecasts: list[FundingForecast] = []

    async def on_forecast(m) -> None:
        forecasts.append(codec.decode(m.data))

    await bus.subscribe(PRED_FUNDING.pattern(), on_forecast)
    history, last = events[:-3], events[-3:]
    for e in history:
        await bus.publish(FUNDING.subject(e.venue, e.symbol), codec.encode(e))
    await bus.drain()
    await runtime.tick()
    await bus.drain()
    # one forecast per series, both from one batched call, after enough history
    assert sorted(f.venue for f in forecasts) == ["binance", "bybit", "okx"]
    f = next(f for f in forecasts if f.venue == "binance")
    last_binance = [e for e in history if e.venue == "binance"][-1]
    assert f.symbol == "BTCUSDT" and f.model_version == forecaster.version
    assert f.current_rate == pytest.approx(last_binance.rate)
    assert f.for_funding_ms == last_binance.funding_time_ms + 8 * 3_600_000
    assert f.lower_rate <= f.predicted_rate <= f.upper_rate
    assert bus.published[-1].subject.startswith("hean.pred.funding.")

    # the realised settlements score the forecasts and trigger the next ones
    for e in last:
        await bus.publish(FUNDING.subject(e.venue, e.symbol), codec.encode(e))
    await bus.drain()
    await runtime.tick()
    await bus.drain()
    assert len(forecasts) == 6
    count = _sample(logic, "hean_funding_forecast_abs_error_bps_count", {"venue": "binance"})
    assert count == 1.0
    realised_binance = next(e for e in last if e.venue == "binance")
    realised = abs(realised_binance.rate - f.predicted_rate) * 1e4
    assert _sample(logic, "hean_funding_forecast_abs_error_bps_sum", {"venue": "binance"}) == (
        pytest.approx(realised)
    )
    assert _sample(logic, "hean_funding_prediction_mae") is not None
    assert 0.0 <= _sample(logic, "hean_funding_prediction_accuracy") <= 1.0
    await runtime.stop()


async def test_duplicates_and_estimates_do_not_forecast(forecaster):
    logic = FundingPredictorLogic(forecaster)
    events = settlements()
    for e in events:
        logic.on_event(e, e.ts_ms)
    assert len(logic.on_tick(events[-1].ts_ms)) == 3
    # the same settlement again, and a venue estimate: nothing new to forecast
    logic.on_event(events[-1], events[-1].ts_ms)
    est = FundingRate(
        ts_ms=events[-1].ts_ms, venue="binance", symbol="BTCUSDT", rate=2e-4, interval_hours=8.0
    )
    logic.on_event(est, est.ts_ms)
    assert logic.on_tick(events[-1].ts_ms + 1000) == []
    ignored = logic.metrics.ignored
    assert ignored.labels("duplicate_or_old")._value.get() == 1
    assert ignored.labels("estimate")._value.get() == 1


async def test_without_a_model_not_ready_and_silent(forecaster):
    logic = FundingPredictorLogic()
    events = settlements()
    for e in events:
        assert list(logic.on_event(e, e.ts_ms)) == []
    assert logic.on_tick(events[-1].ts_ms) == []
    assert logic.readiness(0) == {"model_loaded": False}
    # once a model is loaded, the series updated meanwhile are forecast from their history
    logic.set_forecaster(forecaster)
    out = logic.on_tick(events[-1].ts_ms)
    assert sorted(f.venue for f in out) == ["binance", "bybit", "okx"]
    assert logic.readiness(0)["model_loaded"]


async def test_service_over_nats(forecaster, nats_url):
    bus = await NatsBus.connect(nats_url, "test-funding-predictor")
    events = settlements()
    clock = SimClock(events[-1].ts_ms)
    logic = FundingPredictorLogic(forecaster)
    runtime = Runtime(logic, bus, clock)
    await runtime.start()
    nc = await nats.connect(nats_url)
    got: asyncio.Queue = asyncio.Queue()

    async def on_msg(msg) -> None:
        await got.put((msg.subject, codec.decode(msg.data)))

    sub = await nc.subscribe(PRED_FUNDING.pattern(), cb=on_msg)
    await nc.flush()
    try:
        for e in events:
            await nc.publish(FUNDING.subject(e.venue, e.symbol), codec.encode(e))
        await nc.publish(
            FUNDING.subject("binance", "BTCUSDT"), b'{"type":"FundingRate","rate":"x"}'
        )
        await nc.flush()
        received: dict[str, FundingForecast] = {}

        async def collect() -> None:
            while len(received) < 3:
                await runtime.tick()
                with contextlib.suppress(TimeoutError):
                    subject, ev = await asyncio.wait_for(got.get(), 0.2)
                    received[subject] = ev

        await asyncio.wait_for(collect(), 30)
        assert set(received) == {
            f"hean.pred.funding.{v}.BTCUSDT" for v in ("binance", "bybit", "okx")
        }
        assert all(isinstance(ev, FundingForecast) for ev in received.values())
        assert runtime.dead_letters >= 1  # the malformed event went to the dead-letter subject
        assert logic.snapshot()["series"] == 3
    finally:
        await sub.unsubscribe()
        await nc.close()
        await runtime.stop()
        await bus.close()


async def test_intervals_follow_recent_realised_errors(forecaster):
    from hean_services.funding_predictor.logic import PredictorConfig

    events = [e for e in settlements(n=70) if e.venue == "binance"]
    logic = FundingPredictorLogic(forecaster, PredictorConfig(min_online_residuals=15))
    widths: list[float] = []
    for i, e in enumerate(events):
        # from the middle on, the realised rates jump around far more than in training
        if i > 30:
            fields = {f: getattr(e, f) for f in e.__struct_fields__}
            fields["rate"] = e.rate + (3e-4 if i % 2 else -3e-4)
            e = FundingRate(**fields)
        logic.on_event(e, e.ts_ms)
        widths += [f.upper_rate - f.lower_rate for f in logic.on_tick(e.ts_ms)]
    assert len(logic.residuals[("binance", 8.0)]) >= 15
    # once the recent residuals are used, the stated interval widens to match them
    assert widths[-1] > 3 * widths[0]


@contextlib.asynccontextmanager
async def _serving(app, settings):
    from hean.runtime.runner import serve

    stop = asyncio.Event()
    started: asyncio.Future = asyncio.get_running_loop().create_future()

    async def stopper(ctx) -> None:
        started.set_result(ctx)
        await stop.wait()
        ctx.stopping.set()

    app.tasks.append(stopper)
    task = asyncio.create_task(serve(app, settings))
    try:
        yield await asyncio.wait_for(asyncio.shield(started), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _until(check, timeout: float = 30.0) -> None:
    async def loop() -> None:
        while not await check():
            await asyncio.sleep(0.1)

    await asyncio.wait_for(loop(), timeout)


async def test_service_ready_only_with_a_model_and_hot_reloads(nats_url, tmp_path):
    import shutil

    import aiohttp

    from hean.config import free_port
    from hean.ml.funding.model import DEFAULT_DIR
    from hean_services.funding_predictor.main import Settings, build

    model_dir = tmp_path / "models"
    model_dir.mkdir()
    settings = Settings(
        nats_url=nats_url, health_port=free_port(), model_dir=str(model_dir), model_poll_s=0.2
    )
    app = build(settings)
    nc = await nats.connect(nats_url)
    got: list[FundingForecast] = []

    async def on_msg(msg) -> None:
        got.append(codec.decode(msg.data))

    await nc.subscribe(PRED_FUNDING.pattern(), cb=on_msg)
    base = f"http://127.0.0.1:{settings.health_port}"
    try:
        async with _serving(app, settings), aiohttp.ClientSession() as http:

            async def status() -> int:
                async with http.get(f"{base}/readyz") as r:
                    return r.status

            assert await status() != 200
            events = settlements()
            for e in events[:-3]:
                await nc.publish(FUNDING.subject(e.venue, e.symbol), codec.encode(e))
            await nc.flush()

            async def absorbed() -> bool:
                return sum(len(x.times) for x in app.logic.series.values()) == len(events) - 3

            await _until(absorbed)
            await asyncio.sleep(1.5)  # let ticks pass: without a model nothing is published
            assert got == [] and app.logic.readiness(0) == {"model_loaded": False}
            # a new artifact appears: loaded without a restart, the service turns ready
            shutil.copytree(DEFAULT_DIR, model_dir / "v1")

            async def ready() -> bool:
                return await status() == 200

            await _until(ready)

            async def three_forecasts() -> bool:
                return len(got) == 3

            await _until(three_forecasts)
            shipped = FundingForecaster.load(DEFAULT_DIR).version
            assert {f.model_version for f in got} == {shipped}
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert "hean_funding_model_loaded 1.0" in text
            assert "hean_funding_forecasts_total" in text
    finally:
        await nc.close()


async def test_history_bootstrap_lets_the_first_live_settlement_forecast(nats_url):
    import time

    import aiohttp

    from hean.config import free_port
    from hean.history import import_events
    from hean_services.funding_predictor.main import Settings, build

    raw = settlements()
    step = 8 * 3_600_000
    shift = (int(time.time() * 1000) // step * step) - raw[-1].funding_time_ms
    events = []
    for e in raw:
        fields = {f: getattr(e, f) for f in e.__struct_fields__}
        fields["funding_time_ms"] = e.funding_time_ms + shift
        fields["ts_ms"] = e.ts_ms + shift
        events.append(FundingRate(**fields))
    bus = await NatsBus.connect(nats_url, "test-funding-bootstrap")
    await bus.ensure_streams()
    await import_events(bus.js, events[:-3])
    await bus.close()

    settings = Settings(nats_url=nats_url, health_port=free_port())
    app = build(settings)
    nc = await nats.connect(nats_url)
    got: list[FundingForecast] = []

    async def on_msg(msg) -> None:
        got.append(codec.decode(msg.data))

    await nc.subscribe(PRED_FUNDING.pattern(), cb=on_msg)
    try:
        async with _serving(app, settings), aiohttp.ClientSession() as http:

            async def ready() -> bool:
                async with http.get(f"http://127.0.0.1:{settings.health_port}/readyz") as r:
                    return r.status == 200

            await _until(ready)
            assert len(app.logic.series) == 3
            for e in events[-3:]:
                await nc.publish(FUNDING.subject(e.venue, e.symbol), codec.encode(e))
            await nc.flush()

            async def three() -> bool:
                return len(got) == 3

            await _until(three)
            assert {f.for_funding_ms for f in got} == {events[-1].funding_time_ms + step}
    finally:
        await nc.close()
