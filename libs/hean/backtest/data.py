"""History for backtests, read in place from a data directory laid out like the shared data.

Funding: ``normalized/funding_settlements.parquet`` (settled rates, real settlement times and
intervals; coverage gaps are not intervals and are repaired by ``hean.history``). Prices:
daily perpetual bars ``klines/*/klines_1d/<SYMBOL>.csv`` and, where present, 8-hourly perp
and spot bars ``funding/*/{perp,spot}_8h_<symbol>.csv``. A bar's *open* is used at the bar's
start time, which is what was known then: no bar is ever looked at before it began.

The price files are Binance USD-M; the same price is used for a symbol on every venue (the
cross-venue basis is not in the data), and where no spot bars exist the spot leg is priced at
the perpetual (zero basis). The result states this in ``History.notes``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hean.history.store import events_from_frame
from hean_proto.events import Event, FundingRate

FUNDING_FILE = Path("normalized") / "funding_settlements.parquet"


class BacktestDataError(ValueError):
    """The requested history is missing; the message says what and where."""


@dataclass
class PriceSeries:
    """Prices of one symbol: bar start times with the perp and spot price known then."""

    symbol: str
    times_ms: np.ndarray
    perp: np.ndarray
    spot: np.ndarray
    source: str
    spot_is_real: bool

    def at(self, t_ms: int) -> tuple[float, float] | None:
        """(perp, spot) of the last bar that started at or before ``t_ms``."""
        i = int(np.searchsorted(self.times_ms, t_ms, side="right")) - 1
        if i < 0:
            return None
        return float(self.perp[i]), float(self.spot[i])

    def vol_per_sqrt_ms(self, t_ms: int, bars: int = 30) -> float:
        """Realised volatility of the log perp price per sqrt(ms) over the bars up to ``t_ms``.

        Only bars that had started by ``t_ms`` count; NaN with fewer than 3 of them.
        """
        i = int(np.searchsorted(self.times_ms, t_ms, side="right"))
        lo = max(0, i - bars - 1)
        p, t = self.perp[lo:i], self.times_ms[lo:i]
        if len(p) < 4:
            return float("nan")
        r = np.diff(np.log(p))
        dt = np.diff(t).astype("float64")
        return float(np.sqrt(np.sum(r**2) / np.sum(dt)))


@dataclass
class History:
    funding: list[FundingRate]
    """Settled rates inside the range, by time."""
    warmup: list[FundingRate]
    """Settled rates before the range: model context only, never traded."""
    prices: dict[str, PriceSeries]
    start_ms: int
    end_ms: int
    notes: list[str] = field(default_factory=list)
    frame: pd.DataFrame | None = None
    """Every settlement before the end (walk-forward training), when asked for."""
    market: list[Event] = field(default_factory=list)
    """Other market events inside the range (open interest), published at their times."""
    market_warmup: list[Event] = field(default_factory=list)
    """Market events before the range: predictor context only."""
    venues: list[str] = field(default_factory=list)
    """Venues to trade on; empty = every venue with settlements."""

    def coverage(self) -> dict[str, object]:
        series: dict[str, dict[str, object]] = {}
        for e in self.funding:
            key = f"{e.venue}:{e.symbol}"
            s = series.setdefault(
                key, {"settlements": 0, "first_ms": e.ts_ms, "intervals_h": set()}
            )
            s["settlements"] += 1
            s["last_ms"] = e.ts_ms
            s["intervals_h"].add(e.interval_hours)
        for s in series.values():
            s["intervals_h"] = sorted(s["intervals_h"])
        return {
            "symbols": sorted(self.prices),
            "funding_series": series,
            "price_sources": {k: v.source for k, v in sorted(self.prices.items())},
            "notes": list(self.notes),
        }


def resolve_data_dir(path: str | Path | None) -> Path:
    if not path:
        raise BacktestDataError(
            "no data directory: pass --data PATH or set HEAN_DATA_DIR (e.g. to ../shared/data)"
        )
    p = Path(path)
    if not p.is_dir():
        raise BacktestDataError(f"data directory not found: {p}")
    if not (p / FUNDING_FILE).exists():
        raise BacktestDataError(f"{p}: no funding history at {FUNDING_FILE}")
    return p


def _read_funding(data_dir: Path) -> pd.DataFrame:
    df = pd.read_parquet(data_dir / FUNDING_FILE)
    df["funding_time_utc"] = pd.to_datetime(df["funding_time_utc"], utc=True)
    return df


def data_end_ms(data_dir: str | Path) -> int:
    """The last settlement in the data: where ``--days`` counts back from."""
    df = _read_funding(resolve_data_dir(data_dir))
    return int(df["funding_time_utc"].max().value // 1_000_000)


def _daily_prices(data_dir: Path, symbol: str) -> PriceSeries | None:
    files = sorted(glob.glob(str(data_dir / "klines" / "*" / "klines_1d" / f"{symbol}.csv")))
    if not files:
        return None
    df = pd.read_csv(files[0], usecols=["timestamp", "open"]).dropna()
    df = df[df["open"] > 0].sort_values("timestamp")
    t = df["timestamp"].to_numpy(dtype="int64")
    p = df["open"].to_numpy(dtype="float64")
    rel = Path(files[0]).relative_to(data_dir)
    return PriceSeries(symbol, t, p, p.copy(), f"{rel} (daily opens, spot = perp)", False)


def _bars(path: str) -> pd.DataFrame:
    df = pd.read_csv(path, usecols=["openTime", "open"]).dropna()
    df["t"] = pd.to_datetime(df["openTime"], utc=True).astype("int64") // 1_000_000
    return df[df["open"] > 0][["t", "open"]]


def _8h_prices(data_dir: Path, symbol: str) -> PriceSeries | None:
    low = symbol.lower()
    perp = sorted(glob.glob(str(data_dir / "funding" / "*" / f"perp_8h_{low}.csv")))
    spot = sorted(glob.glob(str(data_dir / "funding" / "*" / f"spot_8h_{low}.csv")))
    if not perp or not spot:
        return None
    joined = _bars(perp[0]).merge(_bars(spot[0]), on="t", suffixes=("_perp", "_spot"))
    joined = joined.sort_values("t")
    rel = Path(perp[0]).parent.relative_to(data_dir)
    return PriceSeries(
        symbol,
        joined["t"].to_numpy(dtype="int64"),
        joined["open_perp"].to_numpy(dtype="float64"),
        joined["open_spot"].to_numpy(dtype="float64"),
        f"{rel}/{{perp,spot}}_8h_{low}.csv (8 h opens, real spot)",
        True,
    )


def load_history(
    data_dir: str | Path | None,
    start_ms: int,
    end_ms: int,
    *,
    venues: list[str] | None = None,
    symbols: list[str] | None = None,
    warmup_settlements: int = 64,
    keep_frame: bool = False,
) -> History:
    """Settlements and prices for [start_ms, end_ms); a clear error when nothing is covered.

    ``keep_frame`` keeps every settlement before ``end_ms`` (for walk-forward training).
    """
    if end_ms <= start_ms:
        raise BacktestDataError("empty range: --to must be after --from")
    root = resolve_data_dir(data_dir)
    df = _read_funding(root)
    return history_from_frame(
        df,
        start_ms,
        end_ms,
        price_root=root,
        where=str(root),
        venues=venues,
        symbols=symbols,
        warmup_settlements=warmup_settlements,
        keep_frame=keep_frame,
    )


def history_from_frame(
    df: pd.DataFrame,
    start_ms: int,
    end_ms: int,
    *,
    price_root: Path | None,
    where: str,
    venues: list[str] | None = None,
    symbols: list[str] | None = None,
    warmup_settlements: int = 64,
    keep_frame: bool = False,
) -> History:
    """A ``History`` from a normalised settlement table (shared data or the history store).

    Prices come from the bars under ``price_root`` or, without it, from the mark prices the
    settlements carry (as the collector stores them).
    """
    if end_ms <= start_ms:
        raise BacktestDataError("empty range: --to must be after --from")
    df = df.copy()
    df["funding_time_utc"] = pd.to_datetime(df["funding_time_utc"], utc=True)
    if venues:
        df = df[df["exchange"].str.lower().isin([v.lower() for v in venues])]
    hi = pd.Timestamp(end_ms, unit="ms", tz="UTC")
    before_end = df[df["funding_time_utc"] < hi]
    warm_from = pd.Timestamp(start_ms - warmup_settlements * 8 * 3_600_000, unit="ms", tz="UTC")
    # a little before the warm-up so the first interval of each series is known
    lo = warm_from - pd.Timedelta(days=2)
    events, _errors = events_from_frame(before_end[before_end["funding_time_utc"] >= lo])
    if symbols:
        wanted = {s.upper() for s in symbols}
        events = [e for e in events if e.symbol in wanted]
    events.sort(key=lambda e: (e.ts_ms, e.venue, e.symbol))
    funding = [e for e in events if e.ts_ms >= start_ms]
    warm_ms = int(warm_from.value // 1_000_000)
    warmup = [e for e in events if warm_ms <= e.ts_ms < start_ms]
    if not funding:
        rng = f"{_iso(start_ms)} -> {_iso(end_ms)}"
        what = f" for venues {venues}" if venues else ""
        what += f" and symbols {symbols}" if symbols else ""
        raise BacktestDataError(f"no funding settlements in {rng}{what} in {where}")
    prices: dict[str, PriceSeries] = {}
    notes: list[str] = []
    for symbol in sorted({e.symbol for e in funding}):
        if price_root is not None:
            series = _8h_prices(price_root, symbol) or _daily_prices(price_root, symbol)
        else:
            series = _mark_prices([e for e in events if e.symbol == symbol])
        if series is None:
            notes.append(f"{symbol}: no price bars; its settlements are skipped")
            continue
        if series.at(start_ms) is None and series.at(end_ms - 1) is None:
            notes.append(f"{symbol}: price bars do not cover the range; skipped")
            continue
        prices[symbol] = series
        if not series.spot_is_real:
            notes.append(f"{symbol}: spot priced at the perpetual (no spot bars): zero basis")
    if price_root is not None:
        notes.append("prices are Binance USD-M bars used for every venue (no cross-venue basis)")
    funding = [e for e in funding if e.symbol in prices]
    if not funding:
        raise BacktestDataError(
            f"no prices for the symbols with funding in {where}"
            + ("" if price_root else " (settlements without mark prices: add --data PATH)")
        )
    frame = before_end if keep_frame else None
    return History(funding, warmup, prices, start_ms, end_ms, notes, frame)


def _mark_prices(events: list[FundingRate]) -> PriceSeries | None:
    """Prices from the mark price stored with each settlement (first venue by name per time)."""
    marks: dict[int, float] = {}
    for e in sorted(events, key=lambda e: (e.ts_ms, e.venue)):
        if e.mark_price is not None and e.ts_ms not in marks:
            marks[e.ts_ms] = e.mark_price
    if not marks:
        return None
    t = np.asarray(sorted(marks), dtype="int64")
    p = np.asarray([marks[int(x)] for x in t], dtype="float64")
    symbol = events[0].symbol
    return PriceSeries(symbol, t, p, p.copy(), "mark prices stored with settlements", False)


def read_store(nats_url: str, until_ms: int | None = None) -> list[FundingRate]:
    """Settled funding from the JetStream history store (the collector, `hean data import`).

    Logs in as ``HEAN_NATS_USER`` with ``HEAN_NATS_PASSWORD_FILE`` when they are set.
    """
    import asyncio
    import os

    from hean.bus.nats import NatsBus, NatsConnectError
    from hean.history.store import read_funding

    async def fetch() -> list[FundingRate]:
        try:
            bus = await NatsBus.connect(
                nats_url,
                "hean-backtest",
                connect_timeout_s=5.0,
                user=os.environ.get("HEAN_NATS_USER") or None,
                password_file=os.environ.get("HEAN_NATS_PASSWORD_FILE") or None,
            )
        except NatsConnectError as exc:
            raise BacktestDataError(f"history store at {nats_url}: {exc}") from None
        try:
            return await read_funding(bus.js, until_ms=until_ms, idle_timeout_s=2.0)
        except BacktestDataError:
            raise
        except Exception as exc:
            raise BacktestDataError(f"history store at {nats_url}: {exc!r}") from None
        finally:
            await bus.close()

    events = asyncio.run(fetch())
    if not events:
        raise BacktestDataError(
            f"history store at {nats_url} holds no settlements"
            + (f" before {_iso(until_ms)}" if until_ms else "")
            + " (fill it with the collector or `hean data import`)"
        )
    return events


def history_from_store(
    events: list[FundingRate],
    nats_url: str,
    start_ms: int,
    end_ms: int,
    *,
    price_dir: str | Path | None = None,
    venues: list[str] | None = None,
    symbols: list[str] | None = None,
    warmup_settlements: int = 64,
    keep_frame: bool = False,
) -> History:
    from hean.history.store import events_to_frame

    root = resolve_prices_dir(price_dir) if price_dir else None
    return history_from_frame(
        events_to_frame(events, source="store"),
        start_ms,
        end_ms,
        price_root=root,
        where=f"the history store at {nats_url}",
        venues=venues,
        symbols=symbols,
        warmup_settlements=warmup_settlements,
        keep_frame=keep_frame,
    )


def resolve_prices_dir(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise BacktestDataError(f"price directory not found: {p}")
    return p


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
