"""History for the liquidation hunter: daily bars and open interest turned into market events.

The shared data has no event-level liquidations and no intraday open interest (its README,
"What is missing"); what it has is Binance USD-M daily klines joined with Coinalyze daily open
interest, the history the shipped daily cascade model was trained on
(``hean.ml.cascade.data.load_bars``). Each daily bar becomes what a collector would have seen:

* price ticks at the open (00:00), then the bar's two extremes at 23:57 and 23:58, and the
  close at 23:59. When in the day the extremes came is unknown; placing them just before the
  close means no input is ever seen earlier than it happened (no look-ahead), at the price of
  stops and targets being noticed late: a stop then fills at the bar's extreme, beyond its
  level, and a target beyond its level too. For a bar that closed down the high comes first,
  for one that closed up the low;
* open interest (USD = position units x close) at 23:59, when the day's figure is complete;
* Binance funding settlements where the data has them (BTC, ETH, BNB, SOL, XRP, DOGE); other
  symbols pay no funding in the backtest, which the result's notes say.

Momentum over 15 minutes does not exist in daily bars; the backtest's predictor measures it
over 23 h instead, which at the day's last ticks is the return since the day's open (the notes
say so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hean.backtest.data import BacktestDataError, History, PriceSeries
from hean_proto.events import Event, FundingRate, OpenInterest

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CLOSE_OFFSET_MS = DAY_MS - 60_000
MOMENTUM_WINDOW_MS = 23 * HOUR_MS
VENUE = "binance"
WARMUP_BARS = 40


def bar_ticks(time_ms: int, o: float, h: float, lo: float, c: float) -> list[tuple[int, float]]:
    """(time, price) of one daily bar's four ticks; the extreme against the close comes first."""
    first, second = (h, lo) if c < o else (lo, h)
    return [
        (time_ms, o),
        (time_ms + CLOSE_OFFSET_MS - 120_000, first),
        (time_ms + CLOSE_OFFSET_MS - 60_000, second),
        (time_ms + CLOSE_OFFSET_MS, c),
    ]


def _oi_events(bars: pd.DataFrame) -> list[Event]:
    out: list[Event] = []
    for r in bars.itertuples(index=False):
        if np.isfinite(r.oi_units) and r.oi_units > 0:
            out.append(
                OpenInterest(
                    ts_ms=int(r.time_ms) + CLOSE_OFFSET_MS,
                    venue=VENUE,
                    symbol=r.symbol,
                    oi_usd=float(r.oi_units * r.close),
                )
            )
    return out


def _funding(root: Path, symbols: set[str], lo_ms: int, end_ms: int) -> list[FundingRate]:
    from hean.backtest.data import FUNDING_FILE
    from hean.history.store import events_from_frame

    f = root / FUNDING_FILE
    if not f.exists():
        return []
    df = pd.read_parquet(f)
    df["funding_time_utc"] = pd.to_datetime(df["funding_time_utc"], utc=True)
    df = df[(df["exchange"] == VENUE) & df["symbol"].isin(sorted(symbols))]
    lo, hi = (pd.Timestamp(x, unit="ms", tz="UTC") for x in (lo_ms, end_ms))
    events, _ = events_from_frame(
        df[(df["funding_time_utc"] >= lo) & (df["funding_time_utc"] < hi)]
    )
    return sorted(events, key=lambda e: (e.ts_ms, e.symbol))


def last_bar_end_ms(data_dir: str | Path | None) -> int:
    """Where ``--days`` counts back from: the end of the last daily bar with open interest."""
    from hean.ml.cascade.data import CascadeDataError, load_bars

    try:
        bars = load_bars(data_dir)
    except CascadeDataError as exc:
        raise BacktestDataError(str(exc)) from None
    return int(bars["time_ms"].max()) + DAY_MS


def load_cascade_history(
    data_dir: str | Path | None,
    start_ms: int,
    end_ms: int,
    *,
    symbols: list[str] | None = None,
    venues: list[str] | None = None,
    warmup_bars: int = WARMUP_BARS,
) -> History:
    """Daily bars in [start_ms, end_ms) as events, with ``warmup_bars`` days before for context."""
    from hean.ml.cascade.data import CascadeDataError, load_bars

    if end_ms <= start_ms:
        raise BacktestDataError("empty range: --to must be after --from")
    if venues and [v.lower() for v in venues] != [VENUE]:
        raise BacktestDataError(
            f"the cascade history is Binance USD-M only; --venues {','.join(venues)} is not in it"
        )
    try:
        bars = load_bars(data_dir, [s.upper() for s in symbols] if symbols else None)
    except CascadeDataError as exc:
        raise BacktestDataError(str(exc)) from None
    warm_from = start_ms - warmup_bars * DAY_MS
    bars = bars[(bars["time_ms"] >= warm_from) & (bars["time_ms"] < end_ms)]
    inside = bars[bars["time_ms"] >= start_ms]
    if inside.empty:
        rng = f"{_iso(start_ms)} -> {_iso(end_ms)}"
        raise BacktestDataError(f"no daily bars with open interest in {rng} in {data_dir}")
    root = Path(str(data_dir))
    prices: dict[str, PriceSeries] = {}
    warm_events: list[Event] = []
    market: list[Event] = []
    for symbol, g in bars.groupby("symbol", sort=True):
        ticks = [
            t
            for r in g.itertuples(index=False)
            for t in bar_ticks(int(r.time_ms), r.open, r.high, r.low, r.close)
        ]
        times = np.asarray([t for t, _ in ticks], dtype="int64")
        px = np.asarray([p for _, p in ticks], dtype="float64")
        prices[str(symbol)] = PriceSeries(
            str(symbol), times, px, px.copy(), "daily klines as 4 ticks per bar", False
        )
        for e in _oi_events(g):
            (warm_events if e.ts_ms < start_ms else market).append(e)
    funding = _funding(root, set(prices), warm_from, end_ms)
    warmup = [e for e in funding if e.ts_ms < start_ms]
    in_range = [e for e in funding if e.ts_ms >= start_ms]
    with_funding = sorted({e.symbol for e in in_range})
    notes = [
        "daily Binance USD-M klines as ticks at 00:00 (open), 23:57 and 23:58 (the extremes, "
        "the one against the close first) and 23:59 (close); open interest at 23:59",
        "15-minute momentum does not exist in daily bars: momentum is measured over 23 h "
        "(at the day's last ticks, the return since its open)",
        f"funding settled on {', '.join(with_funding) or 'no symbol'}; "
        "the other symbols pay no funding here",
        "no liquidation events in this history: the model's liquidation inputs are absent",
    ]
    return History(
        funding=in_range,
        warmup=warmup,
        prices=prices,
        start_ms=start_ms,
        end_ms=end_ms,
        notes=notes,
        market=market,
        market_warmup=warm_events,
        venues=[VENUE],
    )


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
