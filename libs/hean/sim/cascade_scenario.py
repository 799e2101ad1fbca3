"""The daily-model cascade scenario: twelve calm days of SOL, a five-day leveraged build-up,
then a three-hour cascade. One definition for the end-to-end test (tests/test_cascade_sim.py,
seed 21) and the in-process run over many seeds (scripts/cascade_seeds.py), so that the figures
of both describe the same market."""

from __future__ import annotations

from typing import Any

from hean.sim.scenario import Scenario, ScriptedEvent, SymbolSpec

START = 1_767_225_600_000  # 2026-01-01 00:00 UTC
H_S = 3600
DAY_S = 86_400
CALM_DAYS = 12
BUILD_DAYS = 5
COMPARED_CALM_DAYS = 4
CASCADE_AT_S = (CALM_DAYS + BUILD_DAYS) * DAY_S + 2 * H_S
CASCADE_S = 3 * H_S
STEP_S = 4 * H_S
VENUE = "binance"
SYMBOL = "SOLUSDT"


def sol_build_up_then_cascade(
    seed: int,
    *,
    venues: tuple[str, ...],
    build_at_s: int,
    build_s: int,
    oi_rise_frac: float,
    rise_frac: float,
    cascade_at_s: int,
    cascade_s: int,
    drop_frac: float,
    oi_drop_frac: float,
    **scenario: Any,
) -> Scenario:
    """SOL at 150 USD with 5 % daily volatility: a leveraged build-up (open interest and price
    rising, funding ramping to 8 bps per 8 h), then a cascade with 60 liquidation prints per
    venue. The daily scenario below and the intraday end-to-end test differ only in timing,
    sizes and venues."""
    return Scenario(
        seed=seed,
        start_ms=START,
        symbols=[
            SymbolSpec(
                base="SOL",
                price=150.0,
                daily_vol=0.05,
                venues=dict.fromkeys(venues, 8.0),
                oi_usd=1.5e9,
            )
        ],
        events=[
            ScriptedEvent(
                at_s=build_at_s,
                kind="build_up",
                symbol="SOL",
                duration_s=build_s,
                oi_rise_frac=oi_rise_frac,
                rise_frac=rise_frac,
                rate=0.0008,
            ),
            ScriptedEvent(
                at_s=cascade_at_s,
                kind="cascade",
                symbol="SOL",
                duration_s=cascade_s,
                drop_frac=drop_frac,
                oi_drop_frac=oi_drop_frac,
                liquidations=60,
            ),
        ],
        **scenario,
    )


def sol_cascade(seed: int = 21) -> Scenario:
    return sol_build_up_then_cascade(
        seed,
        venues=(VENUE,),
        build_at_s=CALM_DAYS * DAY_S,
        build_s=BUILD_DAYS * DAY_S,
        oi_rise_frac=0.45,
        rise_frac=0.05,
        cascade_at_s=CASCADE_AT_S,
        cascade_s=CASCADE_S,
        drop_frac=0.2,
        oi_drop_frac=0.35,
        step_s=300,
    )


def sample_times_s() -> list[tuple[int, bool]]:
    """(seconds after the start, whether a forecast is compared there): the clock steps of the
    end-to-end test, four hours at a time, hourly on the cascade day, five minutes during it."""
    out: list[tuple[int, bool]] = []
    t = 0
    first_compared = (CALM_DAYS - COMPARED_CALM_DAYS) * DAY_S
    while t < CASCADE_AT_S - 2 * H_S:
        t += STEP_S
        out.append((t, t % DAY_S == DAY_S - STEP_S and t > first_compared))
    for _ in range(2):
        t += H_S
        out.append((t, True))
    while t < CASCADE_AT_S + CASCADE_S:
        t += 300
        out.append((t, (t - CASCADE_AT_S) % 900 == 0))
    return out
