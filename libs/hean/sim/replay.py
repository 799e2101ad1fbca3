"""Replay of real history: funding settlements at their recorded times, prices from daily bars.

Reads a data directory in the HEAN_DATA_DIR layout in place. Linear USDT perpetuals of the
three venues are replayed; the simulated clock starts at the replay start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from hean.sim.market import Market, Series
from hean.sim.scenario import Scenario, ScenarioError, SymbolSpec

H_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass
class Replay:
    start_ms: int
    specs: list[SymbolSpec]
    funding: dict[tuple[str, str], list[tuple[int, float]]]
    closes: dict[str, list[tuple[int, float]]]

    def install(self, market: Market) -> None:
        for spec in self.specs:
            market._add_symbol(spec, listed_ms=1_567_965_300_000)
        for (venue, base), rows in self.funding.items():
            s: Series | None = market.series.get((venue, f"{base}USDT"))
            if s is None:
                continue
            s.replay = rows
            later = [t for t, _ in rows if t > market.now_ms]
            if later:
                s.next_funding_ms = later[0]
            s.rate = market._replay_rate(s)
        market.kline_closes.update(self.closes)


def canonical_base(exchange: str, symbol: str) -> str | None:
    if exchange == "okx":
        return symbol[: -len("-USDT-SWAP")] if symbol.endswith("-USDT-SWAP") else None
    return symbol[:-4] if symbol.endswith("USDT") else None


def load_replay(data_dir: str, scenario: Scenario) -> Replay:
    import pandas as pd

    root = Path(data_dir)
    path = root / "normalized" / "funding_settlements.parquet"
    if not path.exists():
        raise ScenarioError(f"replay_dir {data_dir}: {path} not found")
    fr = pd.read_parquet(path)
    fr = fr[fr.exchange.isin(["binance", "bybit", "okx"])]
    end = fr.funding_time_utc.max()
    if scenario.replay_start:
        start = pd.Timestamp(scenario.replay_start, tz="UTC")
    else:
        start = end - pd.Timedelta(days=30)
    start_ms = int(start.value // 1_000_000)
    fr = fr[fr.funding_time_utc >= start - pd.Timedelta(days=1)]
    funding: dict[tuple[str, str], list[tuple[int, float]]] = {}
    venues_of: dict[str, dict[str, float]] = {}
    for (exchange, symbol), g in fr.groupby(["exchange", "symbol"]):
        base = canonical_base(str(exchange), str(symbol))
        if base is None or len(g) < 2:
            continue
        g = g.sort_values("funding_time_utc")
        rows = [
            (int(t.value // 1_000_000), float(r))
            for t, r in zip(g.funding_time_utc, g.funding_rate, strict=True)
        ]
        intervals = g.interval_hours[g.interval_hours.isin([1.0, 2.0, 4.0, 8.0])]
        interval = float(intervals.mode().iloc[0]) if len(intervals) else 8.0
        funding[(str(exchange), base)] = rows
        venues_of.setdefault(base, {})[str(exchange)] = interval
    if not funding:
        raise ScenarioError(f"replay_dir {data_dir}: no linear perpetual funding after {start}")
    closes: dict[str, list[tuple[int, float]]] = {}
    specs = []
    for base, venues in sorted(venues_of.items()):
        points = _closes(root, base)
        if points:
            closes[base] = points
        price = _price_at(points, start_ms) if points else 100.0
        specs.append(SymbolSpec(base=base, price=price, venues=venues))
    return Replay(start_ms=start_ms, specs=specs, funding=funding, closes=closes)


def _closes(root: Path, base: str) -> list[tuple[int, float]]:
    import csv

    f = root / "klines" / "silertrades_gravestone-data" / "klines_1d" / f"{base}USDT.csv"
    if not f.exists():
        return []
    with f.open() as fh:
        return [
            (int(row["close_time"]), float(row["close"]))
            for row in csv.DictReader(fh)
            if row.get("close") and math.isfinite(float(row["close"])) and float(row["close"]) > 0
        ]


def _price_at(points: list[tuple[int, float]], t_ms: int) -> float:
    before = [p for t, p in points if t <= t_ms]
    return before[-1] if before else points[0][1]
