"""The daily cascade scenario of tests/test_cascade_sim.py on many seeds, in process.

The end-to-end test runs one seed through the simulator server, the collector and NATS (about
45 s). This feeds the same predictor logic with the shipped daily model directly from the
simulator's ``Market``, at the test's clock steps (what the collector would publish after
each step: mark, open interest, funding and the liquidation prints), and reports per seed
whether the test's comparisons hold: the build-up's median day-end forecast above the calm
one, the cascade's peak above the build-up's, and every cascade forecast at or above the
hunter's threshold calling "down". It is a sampling of the collector's view, not the
collector itself, so seed 21 comes close to the end-to-end figures without matching them.

    .venv/bin/python scripts/cascade_seeds.py --seeds 1-30
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass

from hean.ml.cascade.model import DEFAULT_DIR, CascadeModel, find_artifact
from hean.sim.cascade_scenario import (
    BUILD_DAYS,
    CALM_DAYS,
    CASCADE_AT_S,
    COMPARED_CALM_DAYS,
    DAY_S,
    START,
    SYMBOL,
    VENUE,
    sample_times_s,
    sol_cascade,
)
from hean.sim.market import Market
from hean_proto.events import CascadeForecast, FundingRate, Liquidation, OpenInterest, PriceTick
from hean_services.liquidation_predictor.logic import LiquidationPredictorLogic

THRESHOLD = 0.15
"""The hunter's threshold in the end-to-end test."""


@dataclass(frozen=True)
class SeedResult:
    seed: int
    calm: list[float]
    build_up: list[float]
    cascade: list[CascadeForecast]

    @property
    def holds(self) -> bool:
        """The comparisons the end-to-end test asserts on its forecasts."""
        peak = max(f.probability for f in self.cascade)
        confident = [f for f in self.cascade if f.probability >= THRESHOLD]
        return (
            statistics.median(self.build_up) > statistics.median(self.calm)
            and peak > max(self.build_up)
            and bool(confident)
            and all(f.direction == "down" for f in confident)
        )


def run_seed(seed: int, model: CascadeModel) -> SeedResult:
    market = Market(sol_cascade(seed), START)
    logic = LiquidationPredictorLogic(model)
    series = market.get(VENUE, SYMBOL)
    assert series is not None
    seen_liqs = 0
    day_end: dict[int, float] = {}
    cascade: list[CascadeForecast] = []
    for t_s, compared in sample_times_s():
        market.advance_to(START + t_s * 1000)
        now = market.now_ms
        mark = market.mark(series)
        events = [
            PriceTick(ts_ms=now, venue=VENUE, symbol=SYMBOL, mark=mark),
            OpenInterest(ts_ms=now, venue=VENUE, symbol=SYMBOL, oi_usd=market.oi_usd(series)),
            FundingRate(
                ts_ms=now,
                venue=VENUE,
                symbol=SYMBOL,
                rate=series.rate,
                interval_hours=series.interval_h,
            ),
        ]
        prints = list(market.liquidations[VENUE])[seen_liqs:]
        seen_liqs += len(prints)
        events += [
            Liquidation(
                ts_ms=p.ts_ms,
                venue=VENUE,
                symbol=SYMBOL,
                side=p.side,  # type: ignore[arg-type]
                price=p.price,
                qty=p.qty,
                notional_usd=p.price * p.qty,
            )
            for p in prints
        ]
        for e in sorted(events, key=lambda e: e.ts_ms):
            logic.on_event(e, now)
        forecasts = [f for f in logic.on_tick(now) if isinstance(f, CascadeForecast)]
        if not forecasts:
            continue
        f = forecasts[-1]
        day_end[(now - START) // (DAY_S * 1000)] = f.probability
        if compared and now >= START + CASCADE_AT_S * 1000:
            cascade.append(f)
    calm_days = range(CALM_DAYS - COMPARED_CALM_DAYS, CALM_DAYS)
    build_days = range(CALM_DAYS, CALM_DAYS + BUILD_DAYS)
    return SeedResult(
        seed,
        [day_end[d] for d in calm_days],
        [day_end[d] for d in build_days],
        cascade,
    )


def seed_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=seed_range, default=seed_range("1-30"), help="e.g. 1-30")
    args = ap.parse_args(argv)
    model = CascadeModel.load(find_artifact(DEFAULT_DIR))
    results = [run_seed(seed, model) for seed in args.seeds]
    for r in results:
        print(
            f"seed {r.seed:3d}: calm median {statistics.median(r.calm):.3f}, build-up median "
            f"{statistics.median(r.build_up):.3f} (max {max(r.build_up):.3f}), cascade peak "
            f"{max(f.probability for f in r.cascade):.3f}; {'holds' if r.holds else 'fails'}"
        )
    peaks = [max(f.probability for f in r.cascade) for r in results]
    print(
        f"{sum(r.holds for r in results)} of {len(results)} seeds hold; cascade peak "
        f"{min(peaks):.2f}-{max(peaks):.2f} (median {statistics.median(peaks):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
