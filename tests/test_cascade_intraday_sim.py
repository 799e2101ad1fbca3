"""The intraday cascade model end to end over the simulator, with the hunter's defaults.

Simulator, funding-collector (real ccxt clients, Binance and Bybit wire formats,
``venue_mode=sim``), liquidation-predictor with the shipped intraday artifact
(``libs/hean/ml/artifacts/cascade_intraday``) and strategy-engine with ``liquidation_hunter``
in its default configuration (threshold 0.7, exit below 0.3, stop 2 %, target 5 %), over a real
nats-server; the test publishes nothing itself. SOL is quoted on both venues because the
collector polls book tops only for symbols it sees on two venues, and the book is one of the
model's inputs.

Scenario (seed 21; the artifact was trained on seeds 1000-1299 of randomly planned runs and
never saw this hand-written one): four ordinary hours (5 % daily volatility), a three-hour
leveraged build-up (open interest +30 %, funding ramping to 8 bps per 8 h, price +3 %), then
half an hour later a cascade (price -15 % and open interest -30 % over two hours, 60
liquidation prints per venue, the book thinning most on the bid side). The test moves the
simulated clock in five-minute steps, one bar of the model each, and after each step waits
until the collector has published a Binance price and open interest stamped with the new time.
"""

from __future__ import annotations

import statistics

import pytest
from service_helpers import running
from sim_watch import Watch

from hean.config import free_port, load_settings
from hean.ml.cascade.model import INTRADAY_DIR
from hean.sim import SimServer
from hean.sim.cascade_scenario import START, sol_build_up_then_cascade
from hean.sim.scenario import Scenario
from hean.strategies.liquidation_hunter import HunterConfig
from hean_services.funding_collector.main import Settings as CollectorSettings
from hean_services.funding_collector.main import build as build_collector
from hean_services.liquidation_predictor.main import Settings as PredictorSettings
from hean_services.liquidation_predictor.main import build as build_predictor
from hean_services.strategy_engine.main import Settings as EngineSettings
from hean_services.strategy_engine.main import build as build_engine

H_S = 3600
CALM_S = 4 * H_S
BUILD_S = 3 * H_S
CASCADE_AT_S = CALM_S + BUILD_S + H_S // 2
CASCADE_S = 2 * H_S
WATCHED_S = 60 * 60
"""How much of the cascade the test steps through."""
STEP_S = 300
VENUE = "binance"
SYMBOL = "SOLUSDT"
DEFAULTS = HunterConfig()


def scenario() -> Scenario:
    return sol_build_up_then_cascade(
        21,
        venues=(VENUE, "bybit"),
        build_at_s=CALM_S,
        build_s=BUILD_S,
        oi_rise_frac=0.3,
        rise_frac=0.03,
        cascade_at_s=CASCADE_AT_S,
        cascade_s=CASCADE_S,
        drop_frac=0.15,
        oi_drop_frac=0.3,
        speed=0.001,  # the clock is the test's: wall time adds almost nothing
        step_s=60,
    )


@pytest.mark.timeout(240)
async def test_intraday_model_forecasts_the_cascade_and_the_default_hunter_sells(
    nats_url, tmp_path
):
    async with SimServer(scenario()) as sim:
        common = {"env": {}, "nats_url": nats_url, "venue_mode": "sim", "sim_url": sim.url}
        collector = load_settings(
            CollectorSettings,
            "funding-collector",
            **common,
            venues=[VENUE, "bybit"],
            state_dir=str(tmp_path),
            funding_poll_s=0.5,
            price_poll_s=0.02,
            oi_poll_s=0.02,
            book_poll_s=0.02,
            tick_s=0.5,
            heartbeat_s=0.5,
            stale_after_s=120.0,
            health_port=free_port(),
        )
        predictor = load_settings(
            PredictorSettings,
            "liquidation-predictor",
            **common,
            model_dir=str(INTRADAY_DIR),
            health_port=free_port(),
        )
        engine = load_settings(
            EngineSettings,
            "strategy-engine",
            **common,
            health_port=free_port(),
            strategies=["liquidation_hunter"],
        )
        watch = Watch(SYMBOL, VENUE)
        await watch.start(nats_url)
        predictor_app = build_predictor(predictor)
        predictor_app.logic.tick_interval_s = 0.1  # a forecast per step, not per wall second
        try:
            async with (
                running(build_engine(engine), engine),
                running(predictor_app, predictor) as pctx,
                running(build_collector(collector), collector),
            ):
                t = 0
                price_before = None
                while t < CASCADE_AT_S + WATCHED_S:
                    t += STEP_S
                    sim.advance(STEP_S)
                    now = sim.market.now_ms
                    await watch.until(lambda now=now: watch.collected_since(now))
                    if t >= 2 * H_S and (t % (30 * 60) == 0 or t > CASCADE_AT_S - H_S):
                        await watch.until(lambda now=now: watch.forecast_since(now))
                    if t == CASCADE_AT_S:
                        price_before = sim.market.price["SOL"]
                await watch.until(
                    lambda: any(
                        s.strategy == "liquidation_hunter" and not s.reduce_only
                        for s in watch.signals
                    )
                )
                price_after = sim.market.price["SOL"]
                long_liquidated = pctx.metrics.registry.get_sample_value(
                    "hean_liquidation_volume_usd",
                    {"venue": VENUE, "symbol": SYMBOL, "side": "long"},
                )
                model_version = predictor_app.logic.model.version
        finally:
            await watch.close()

    assert price_before is not None and price_after < 0.95 * price_before  # it is falling
    assert long_liquidated is not None and long_liquidated > 0  # the burst reached the model
    assert model_version.startswith("cascade-rf-")

    def during(a_s: int, b_s: int) -> list:
        return [f for f in watch.forecasts if START + a_s * 1000 <= f.ts_ms < START + b_s * 1000]

    calm = during(2 * H_S, CALM_S)  # after the first hour: the 1 h OI change exists
    build_up = during(CALM_S + H_S, CASCADE_AT_S)
    cascade = during(CASCADE_AT_S, CASCADE_AT_S + WATCHED_S)
    assert calm and build_up and cascade
    # rising before the drop: the build-up is priced well above the calm, yet below trading
    calm_median = statistics.median(f.probability for f in calm)
    assert statistics.median(f.probability for f in build_up) > 5 * calm_median
    assert max(f.probability for f in calm + build_up) < DEFAULTS.threshold
    # during the drop the model crosses the default threshold, calling it down
    confident = [f for f in cascade if f.probability >= DEFAULTS.threshold]
    assert confident and all(f.direction == "down" for f in confident)
    assert all(f.model_version == model_version for f in cascade)

    first = confident[0]
    print(  # the figures quoted in the README (pytest -s)
        f"calm median {calm_median:.3f}; build-up median "
        f"{statistics.median(f.probability for f in build_up):.3f}, max "
        f"{max(f.probability for f in build_up):.3f}; cascade: first p >= "
        f"{DEFAULTS.threshold} {(first.ts_ms - START) // 1000 - CASCADE_AT_S} s after its start "
        f"(p {first.probability:.3f}, momentum {first.momentum_15m_frac:+.4f}), max "
        f"{max(f.probability for f in cascade):.3f}"
    )
    entries = [s for s in watch.signals if s.strategy == "liquidation_hunter" and not s.reduce_only]
    assert entries, watch.signals
    assert all(leg.side == "sell" for s in entries for leg in s.legs)
    ours = [s for s in entries if s.legs[0].venue == VENUE]
    assert ours, entries
    s = ours[0]
    assert [(leg.venue, leg.symbol, leg.side) for leg in s.legs] == [(VENUE, SYMBOL, "sell")]
    assert s.confidence >= DEFAULTS.threshold
    assert (s.stop_loss_frac, s.take_profit_frac) == (
        DEFAULTS.stop_loss_frac,
        DEFAULTS.take_profit_frac,
    )
    assert s.size_frac == pytest.approx(DEFAULTS.size_frac)
    assert "cascade down" in s.reason and model_version in s.reason
    print(f"entry: {s.reason}")
