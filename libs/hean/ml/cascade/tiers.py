"""Leverage mix and maintenance-margin rates behind the liquidation-cluster estimate.

Where a position gets liquidated depends on its leverage and on the venue's maintenance margin
rate (MMR) for that leverage. The MMR per leverage is read from Binance's real bracket table
(ccxt leverage-tier structure): for a leverage ``L`` it is the MMR of the bracket whose maximum
leverage is the smallest one still allowing ``L``, i.e. the largest position that can carry
``L`` (large positions dominate open interest). The median over the USDT perpetuals is used, so
one table serves every symbol, live and in training alike; it is stored in the model artifact.

Nobody publishes the real leverage mix of open positions. The default mix (share of new open
interest opened at each leverage) is an assumption, documented in the README, and configurable.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MIX: dict[float, float] = {5.0: 0.20, 10.0: 0.30, 25.0: 0.25, 50.0: 0.15, 100.0: 0.10}
"""Assumed share of new positions per leverage (sums to 1)."""

FALLBACK_MMR: dict[float, float] = {5.0: 0.10, 10.0: 0.05, 25.0: 0.02, 50.0: 0.015, 100.0: 0.005}
"""Medians measured from Binance's 2024 bracket table, used when that file is not at hand."""

TIERS_FILE = Path("api_responses/freqtrade/binance_leverage_tiers.json")


class TiersError(ValueError):
    """The bracket file is missing or not in the ccxt leverage-tier structure."""


@dataclass(frozen=True)
class LeverageBucket:
    leverage: float
    weight: float
    mmr: float

    def long_liq(self, entry: float) -> float:
        """Price at which a long opened at ``entry`` is liquidated (isolated margin)."""
        return entry * (1.0 - 1.0 / self.leverage + self.mmr)

    def short_liq(self, entry: float) -> float:
        return entry * (1.0 + 1.0 / self.leverage - self.mmr)


def mmr_for(tiers: list[dict], leverage: float) -> float | None:
    """MMR of the bracket with the smallest max leverage that still allows ``leverage``."""
    ok = [t for t in tiers if float(t["maxLeverage"]) >= leverage]
    if not ok:
        return None
    return float(min(ok, key=lambda t: float(t["maxLeverage"]))["maintenanceMarginRate"])


def mmr_table(path: str | Path, leverages: list[float] | None = None) -> dict[float, float]:
    """Median MMR per leverage over the USDT perpetuals of a ccxt leverage-tier file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TiersError(f"{p}: cannot read leverage tiers: {exc}") from None
    if not isinstance(data, dict):
        raise TiersError(f"{p}: expected a mapping of symbol -> brackets")
    out: dict[float, float] = {}
    for lev in leverages or list(DEFAULT_MIX):
        vals = []
        for sym, tiers in data.items():
            if not str(sym).endswith("/USDT:USDT"):
                continue
            try:
                m = mmr_for(tiers, lev)
            except (KeyError, TypeError, ValueError) as exc:
                raise TiersError(f"{p}: bad bracket for {sym}: {exc}") from None
            if m is not None:
                vals.append(m)
        if not vals:
            raise TiersError(f"{p}: no USDT perpetual allows {lev}x")
        out[float(lev)] = float(statistics.median(vals))
    return out


def buckets(
    mix: dict[float, float] | None = None, mmr: dict[float, float] | None = None
) -> list[LeverageBucket]:
    """The leverage buckets; weights are normalised to sum to 1."""
    mix = mix or DEFAULT_MIX
    mmr = mmr or FALLBACK_MMR
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("leverage mix weights must sum to a positive number")
    out = []
    for lev, w in sorted(mix.items()):
        if lev <= 1:
            raise ValueError(f"leverage {lev} must exceed 1")
        if lev not in mmr:
            raise ValueError(f"no maintenance margin rate for {lev}x")
        out.append(LeverageBucket(float(lev), w / total, float(mmr[lev])))
    return out


def to_meta(bs: list[LeverageBucket]) -> list[dict[str, float]]:
    return [{"leverage": b.leverage, "weight": b.weight, "mmr": b.mmr} for b in bs]


def from_meta(rows: list[dict[str, float]]) -> list[LeverageBucket]:
    return [LeverageBucket(float(r["leverage"]), float(r["weight"]), float(r["mmr"])) for r in rows]
