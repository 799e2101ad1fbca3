"""Intraday training markets from the exchange simulator's own market model, run in process.

Each run is one seeded ``hean.sim`` scenario of one perpetual on one venue, stepped minute by
minute through ``Market`` (the very model behind the simulator server the end-to-end test
runs), recording what a collector would see: mark price, open interest in units, funding,
the top-of-book depth and the liquidation prints. Runs mix four regimes at random: calm,
volatile without cascades, leveraged build-ups that fizzle, and cascades (down or up, with or
without a build-up before them) of random timing, size, speed and open-interest loss. Some
runs have no book or no liquidation stream, as some venues and symbols do not; those inputs
are NaN there.

Runs are laid end to end on one time axis (each is its own symbol), so a time-ordered split
is a split by run. This is a simulated market: it proves the pipeline and that the model
finds the mechanism the simulator contains, not that real markets behave so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hean.ml.cascade.features import book_imbalance
from hean.ml.cascade.intraday import INTRADAY_BAR_COLUMNS
from hean.sim.market import Market
from hean.sim.scenario import Scenario, ScriptedEvent, SymbolSpec

MIN_MS = 60_000
RUN_HOURS = 24
BOOK_DEPTH = 5
"""Levels the collector fetches by default (``book_depth``), so training sees what live sees."""
T0_MS = 1_700_006_400_000  # 2023-11-15 00:00 UTC, a whole number of days
VENUE = "binance"
REGIMES = ("calm", "volatile", "fizzle", "cascade")


@dataclass(frozen=True)
class RunPlan:
    seed: int
    regime: str
    scenario: Scenario
    has_book: bool
    has_liquidations: bool


def plan_run(seed: int, start_ms: int, hours: int = RUN_HOURS) -> RunPlan:
    """A random scenario for ``seed``: regime, volatility, events and their timing."""
    rng = np.random.default_rng([seed, 6])
    regime = str(rng.choice(REGIMES, p=[0.25, 0.2, 0.2, 0.35]))
    vol = rng.uniform(0.08, 0.16) if regime == "volatile" else rng.uniform(0.02, 0.06)
    price = float(math.exp(rng.uniform(math.log(0.1), math.log(60_000))))
    spec = SymbolSpec(
        base="SIM",
        price=price,
        daily_vol=vol,
        venues={VENUE: float(rng.choice([4.0, 8.0]))},
        mean_rate=float(rng.uniform(-0.0001, 0.0003)),
        oi_usd=float(math.exp(rng.uniform(math.log(1e8), math.log(1e10)))),
        book_depth_usd=float(math.exp(rng.uniform(math.log(2e5), math.log(5e6)))),
    )
    total_s = hours * 3600.0
    events: list[ScriptedEvent] = []
    down = rng.random() < 0.6
    sign = 1.0 if down else -1.0
    if regime in ("fizzle", "cascade") and (regime == "fizzle" or rng.random() < 0.75):
        # crowding on the side that will be liquidated: longs before a drop, shorts before a rise
        dur = rng.uniform(2, 10) * 3600.0
        at = rng.uniform(0.2 * total_s, 0.75 * total_s - dur * 0.5)
        events.append(
            ScriptedEvent(
                at_s=at,
                kind="build_up",
                symbol="SIM",
                duration_s=dur,
                oi_rise_frac=float(rng.uniform(0.08, 0.5)),
                rise_frac=float(sign * rng.uniform(0.0, 0.06)),
                rate=float(sign * rng.uniform(0.0002, 0.001)),
            )
        )
    if regime == "cascade":
        after = events[-1].at_s + events[-1].duration_s * rng.uniform(0.5, 1.2) if events else None
        at = after if after is not None else rng.uniform(0.3 * total_s, 0.8 * total_s)
        dur = rng.uniform(0.5, 4.0) * 3600.0
        at = min(at, total_s - dur - 3600.0)
        move = rng.uniform(0.04, 0.25)
        events.append(
            ScriptedEvent(
                at_s=at,
                kind="cascade",
                symbol="SIM",
                duration_s=dur,
                drop_frac=float(move if down else -move),
                oi_drop_frac=float(rng.uniform(0.08, 0.4)),
                liquidations=int(dur / 3600.0 * rng.uniform(10, 40)),
            )
        )
    sc = Scenario(seed=seed, start_ms=start_ms, step_s=60.0, symbols=[spec], events=events)
    return RunPlan(seed, regime, sc, bool(rng.random() < 0.8), bool(rng.random() < 0.8))


@dataclass(frozen=True)
class Recording:
    """One run as a collector would see it: per-minute observations and the liquidation
    prints at their own times (None where the venue streams none)."""

    minutes: pd.DataFrame
    prints: pd.DataFrame | None


def record_run(plan: RunPlan, hours: int = RUN_HOURS) -> Recording:
    """Observe one run minute by minute: price, OI units, funding, book; and every print."""
    sc = plan.scenario
    assert sc.start_ms is not None
    market = Market(sc, sc.start_ms)
    s = market.series[(VENUE, "SIMUSDT")]
    rows = []
    prints = []
    for i in range(hours * 60):  # the run's bars are [start, start + hours): no overlap
        t = sc.start_ms + i * MIN_MS
        market.advance_to(t)
        imb = math.nan
        if plan.has_book:
            bids, asks = market.book(s, BOOK_DEPTH)
            imb = book_imbalance(bids, asks, BOOK_DEPTH)
        queue = market.liquidations[VENUE]
        while queue:
            liq = queue.popleft()
            prints.append((liq.ts_ms, liq.side, liq.price * liq.qty))
        rate_bps8 = s.rate * 1e4 * 8.0 / s.interval_h
        rows.append((t, market.mark(s), market.oi_units(s), rate_bps8, imb))
    cols = ["time_ms", "price", "oi_units", "funding_bps8", "book_imbalance"]
    liqs = pd.DataFrame(prints, columns=["ts_ms", "side", "usd"])
    return Recording(pd.DataFrame(rows, columns=cols), liqs if plan.has_liquidations else None)


def to_bars(rec: Recording, bar_ms: int) -> pd.DataFrame:
    """Fold a recording into bars stamped with their open time, as the predictor folds
    events: by each observation's and print's own timestamp; OHLC of the price, last open
    interest and book, mean funding, liquidated USD summed by side (NaN without a stream)."""
    if bar_ms % MIN_MS:
        raise ValueError(f"bar length {bar_ms} ms is not a whole number of minutes")
    minutes = rec.minutes
    g = minutes.groupby(minutes["time_ms"] // bar_ms * bar_ms, sort=True)
    bars = pd.DataFrame(
        {
            "time_ms": g["time_ms"].first().index.astype("int64"),
            "open": g["price"].first().to_numpy(),
            "high": g["price"].max().to_numpy(),
            "low": g["price"].min().to_numpy(),
            "close": g["price"].last().to_numpy(),
            "oi_units": g["oi_units"].last().to_numpy(),
            "funding_bps8": g["funding_bps8"].mean().to_numpy(),
            "book_imbalance": g["book_imbalance"].last().to_numpy(),
        }
    )
    for side, col in (("sell", "liq_long_usd"), ("buy", "liq_short_usd")):
        if rec.prints is None:
            bars[col] = math.nan
            continue
        p = rec.prints[rec.prints["side"] == side]
        usd = p.groupby(p["ts_ms"] // bar_ms * bar_ms)["usd"].sum()
        bars[col] = bars["time_ms"].map(usd).fillna(0.0).to_numpy()
    return bars[list(INTRADAY_BAR_COLUMNS)]


def simulated_bars(
    n_runs: int, first_seed: int, bar_ms: int, hours: int = RUN_HOURS, start_ms: int = T0_MS
) -> pd.DataFrame:
    """Bars of ``n_runs`` seeded runs (seeds ``first_seed ..``), laid end to end in time.

    Columns: ``symbol`` (``SIM<seed>``), ``regime`` and the intraday bar columns.
    """
    if n_runs < 1:
        raise ValueError("need at least one simulated run")
    frames = []
    for i in range(n_runs):
        seed = first_seed + i
        plan = plan_run(seed, start_ms + i * hours * 3_600_000, hours)
        bars = to_bars(record_run(plan, hours), bar_ms)
        frames.append(bars.assign(symbol=f"SIM{seed}", regime=plan.regime))
    return pd.concat(frames, ignore_index=True)
