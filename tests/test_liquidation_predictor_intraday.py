"""liquidation-predictor with the intraday artifact: live book, momentum, liquidations and the
1 h open-interest change are model inputs, folded and computed as in training.

A simulator market (in process, seed 5, not a training seed) is recorded minute by minute as
the collector would publish it: price, open interest, funding, the top-5 book, and every
liquidation print. The events go over a real nats-server to the service; the bars it folds
must equal the training folding (``hean.ml.cascade.simdata.to_bars``) of the same recording,
and its forecast must be the model's prediction on those bars.
"""

from __future__ import annotations

import asyncio

import nats
import pandas as pd
import pytest
from service_helpers import Tap, running

from hean.config import free_port
from hean.ml.cascade.features import book_imbalance
from hean.ml.cascade.model import INTRADAY_DIR, CascadeModel
from hean.ml.cascade.simdata import BOOK_DEPTH, VENUE, Recording, to_bars
from hean.sim.market import Market
from hean.sim.scenario import Scenario, ScriptedEvent, SymbolSpec
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

START = 1_767_225_600_000
SYMBOL = "SIMUSDT"
H_S = 3600
CASCADE_AT_S = 3 * H_S
MINUTES = 3 * 60 + 40


def recorded_market() -> tuple[list, Recording]:
    """Events as the collector publishes them, and the same observations as a recording."""
    sc = Scenario(
        seed=5,
        start_ms=START,
        step_s=60,
        symbols=[SymbolSpec(base="SIM", price=40.0, daily_vol=0.04, venues={VENUE: 8.0})],
        events=[
            ScriptedEvent(
                at_s=CASCADE_AT_S,
                kind="cascade",
                symbol="SIM",
                duration_s=H_S,
                drop_frac=0.1,
                oi_drop_frac=0.25,
                liquidations=30,
            )
        ],
    )
    m = Market(sc, START)
    s = m.series[(VENUE, SYMBOL)]
    events: list = []
    rows, prints = [], []
    for i in range(MINUTES):
        t = START + i * 60_000
        m.advance_to(t)
        mark, oi_usd = m.mark(s), m.oi_usd(s)
        bids, asks = m.book(s, BOOK_DEPTH)
        common = {"ts_ms": t, "venue": VENUE, "symbol": SYMBOL}
        events += [
            PriceTick(**common, mark=mark),
            OpenInterest(**common, oi_usd=oi_usd),
            FundingRate(**common, rate=s.rate, interval_hours=s.interval_h),
            BookTop(
                **common,
                bids=[BookLevel(p, q) for p, q in bids],
                asks=[BookLevel(p, q) for p, q in asks],
            ),
        ]
        queue = m.liquidations[VENUE]
        while queue:
            liq = queue.popleft()
            events.append(
                Liquidation(
                    ts_ms=liq.ts_ms,
                    venue=VENUE,
                    symbol=SYMBOL,
                    side=liq.side,
                    price=liq.price,
                    qty=liq.qty,
                    notional_usd=liq.price * liq.qty,
                )
            )
            prints.append((liq.ts_ms, liq.side, liq.price * liq.qty))
        imb = book_imbalance(bids, asks, BOOK_DEPTH)
        rows.append((t, mark, oi_usd / mark, s.rate * 1e4 * 8.0 / s.interval_h, imb))
    minutes = pd.DataFrame(
        rows, columns=["time_ms", "price", "oi_units", "funding_bps8", "book_imbalance"]
    )
    return events, Recording(minutes, pd.DataFrame(prints, columns=["ts_ms", "side", "usd"]))


def minute_groups(events: list) -> list[list]:
    """The events of each minute, its price first."""
    out: list[list] = []
    for e in events:
        if isinstance(e, PriceTick):
            out.append([])
        out[-1].append(e)
    return out


async def handled(logic: LiquidationPredictorLogic, key: tuple[str, str], part: list) -> None:
    """Until the service has handled the newest event of each kind in ``part``."""
    newest = {type(e).__name__: e.ts_ms for e in part}

    async def wait() -> None:
        while key not in logic.symbols or any(
            logic.symbols[key].last_ts.get(k, -1) < t for k, t in newest.items()
        ):
            await asyncio.sleep(0.002)

    await asyncio.wait_for(wait(), 10)


def test_in_process_the_forecast_rises_into_the_cascade_and_calls_it_down() -> None:
    events, _ = recorded_market()
    logic = LiquidationPredictorLogic(CascadeModel.load(INTRADAY_DIR))
    by_minute: dict[int, CascadeForecast] = {}
    for e in events:
        logic.on_event(e, e.ts_ms)
        if isinstance(e, BookTop):  # the last event of each minute
            for f in logic.on_tick(e.ts_ms):
                by_minute[(f.ts_ms - START) // 60_000] = f
    at = CASCADE_AT_S // 60
    calm = [f.probability for m, f in by_minute.items() if 70 <= m < at]
    late = [f for m, f in by_minute.items() if m >= at + 20]
    assert len(by_minute) == MINUTES - 60  # an hour and a bar of warm-up
    assert max(calm) < 0.1
    assert min(f.probability for f in late) >= 0.7
    assert all(f.direction == "down" and f.momentum_15m_frac < -0.01 for f in late)


async def test_service_folds_live_inputs_like_training_and_forecasts_from_them(
    nats_url: str,
) -> None:
    events, rec = recorded_market()
    settings = Settings(nats_url=nats_url, health_port=free_port(), model_dir=str(INTRADAY_DIR))
    tap = Tap()
    await tap.start(nats_url)
    pub = await nats.connect(nats_url)
    key = (VENUE, SYMBOL)
    want = to_bars(rec, 300_000)
    try:
        async with running(build(settings), settings) as ctx:
            logic = ctx.runtime.logic
            assert logic.model.intraday and logic.bars_kept() >= 74
            for group in minute_groups(events):
                # the price first: open interest is turned into units with the latest mark
                for part in (group[:1], group[1:]):
                    for e in part:
                        await pub.publish(subject_for(e), codec.encode(e))
                    await pub.flush()
                    await handled(logic, key, part)
            seen = len(tap.events)
            last = minute_groups(events)[-1][0]  # the last minute's price, again
            assert isinstance(last, PriceTick)
            await pub.publish(subject_for(last), codec.encode(last))
            found = await tap.until(
                lambda evs: [
                    e for e in evs[seen:] if isinstance(e, CascadeForecast) and e.symbol == SYMBOL
                ],
                30,
            )
            got = logic.bars_frame(key)
            f = found[-1]
    finally:
        await pub.close()
        await tap.close()

    # the bars the service folded from NATS events are the training folding of the recording
    assert list(got.columns) == list(want.columns)
    for col in want.columns:
        assert got[col].to_numpy() == pytest.approx(want[col].to_numpy(), rel=1e-12), col
    assert got["liq_long_usd"].sum() > 0 and (got["book_imbalance"] < -0.2).any()
    # and the forecast is the model's prediction on exactly those bars
    model = CascadeModel.load(INTRADAY_DIR)
    pred = model.predict_latest(got)
    assert f.model_version == model.version
    assert f.probability == pytest.approx(pred.probability, abs=1e-12)
    assert f.probability >= 0.7 and f.direction == "down"
