"""Funding history kept in JetStream (stream HEAN_HISTORY) and moved in and out as tables.

The collector publishes every settlement (``FundingRate`` with ``settled=True``) and periodic
estimates there; predictors and the backtester read them back with ``read_funding`` /
``read_frame``. ``export_parquet`` writes the same columns as the shared normalised table
(``funding_time_utc, funding_rate, exchange, symbol, source, interval_hours``) so that an
export can be imported again, and ``import_file`` loads such tables into the stream.

JetStream deduplicates by ``Nats-Msg-Id`` only inside the duplicate window (two minutes), so
an import first reads which settlements are already stored and skips them: importing the
same file twice stores each settlement once.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from hean.bus.stored import read_stored
from hean_proto import codec
from hean_proto.events import Event, FundingRate, OpenInterest
from hean_proto.subjects import FUNDING, OPEN_INTEREST, msg_id_for, subject_for
from hean_proto.types import TOKEN_PATTERN

HISTORY_STREAM = "HEAN_HISTORY"
HISTORY_COLUMNS = (
    "funding_time_utc",
    "funding_rate",
    "exchange",
    "symbol",
    "source",
    "interval_hours",
    "settled",
    "mark_price",
)
STANDARD_INTERVALS = (1.0, 2.0, 4.0, 8.0)
_TOKEN = re.compile(TOKEN_PATTERN)


class HistoryError(ValueError):
    """A history file or row that cannot be imported; the message says which and why."""


def canonical_symbol(native: str) -> str:
    """BASE+QUOTE from a venue-native or ccxt symbol (``BTC-USDT-SWAP`` -> ``BTCUSDT``)."""
    s = native.strip().upper()
    if ":" in s:
        s = s.split(":", 1)[0]
    for suffix in ("-SWAP", "_PERP", "-PERP", "PERP"):
        if s.endswith(suffix) and len(s) > len(suffix):
            s = s[: -len(suffix)]
            break
    s = s.replace("/", "").replace("-", "").replace("_", "")
    if not _TOKEN.match(s):
        raise HistoryError(f"symbol {native!r} cannot be made a canonical symbol")
    return s


def _clean_intervals(times_ms: list[int], raw: list[float | None]) -> list[float]:
    """Intervals per row: standard values kept, coverage gaps replaced by the series' schedule.

    In the shared table a value other than 1, 2, 4 or 8 h marks a gap between settlements,
    not an interval; such rows take the last standard interval seen (the first rows the most
    common standard gap of the series, 8 h if none).
    """
    gaps: list[float] = []
    for prev, cur in itertools.pairwise(times_ms):
        gaps.append((cur - prev) / 3_600_000)
    standard_gaps = [g for g in gaps if g in STANDARD_INTERVALS]
    fallback = max(set(standard_gaps), key=standard_gaps.count) if standard_gaps else 8.0
    out: list[float] = []
    last = None
    for i, value in enumerate(raw):
        v = value
        if v is None or not math.isfinite(v):
            v = gaps[i - 1] if i > 0 else (gaps[0] if gaps else None)
        if v in STANDARD_INTERVALS:
            last = v
            out.append(v)
        else:
            out.append(last if last is not None else fallback)
    return out


def events_from_frame(df) -> tuple[list[FundingRate], list[str]]:
    """Settled funding events from a normalised table; returns (events, row errors)."""
    import pandas as pd

    missing = {"funding_time_utc", "funding_rate", "exchange", "symbol"} - set(df.columns)
    if missing:
        raise HistoryError(f"missing columns: {', '.join(sorted(missing))}")
    frame = df.copy()
    frame["funding_time_utc"] = pd.to_datetime(frame["funding_time_utc"], utc=True)
    if "interval_hours" not in frame.columns:
        frame["interval_hours"] = float("nan")
    if "settled" not in frame.columns:
        frame["settled"] = True
    if "mark_price" not in frame.columns:
        frame["mark_price"] = float("nan")
    frame = frame.sort_values(["exchange", "symbol", "funding_time_utc"], kind="stable")
    events: list[FundingRate] = []
    errors: list[str] = []
    for (exchange, native), group in frame.groupby(["exchange", "symbol"], sort=True):
        try:
            venue = str(exchange).lower()
            symbol = canonical_symbol(str(native))
        except HistoryError as exc:
            errors.append(str(exc))
            continue
        times = [int(t.value // 1_000_000) for t in group["funding_time_utc"]]
        raw = [None if pd.isna(v) else float(v) for v in group["interval_hours"]]
        intervals = _clean_intervals(times, raw)
        for t, rate, interval, settled, mark in zip(
            times,
            group["funding_rate"],
            intervals,
            group["settled"],
            group["mark_price"],
            strict=True,
        ):
            candidate = {
                "type": "FundingRate",
                "ts_ms": t,
                "venue": venue,
                "symbol": symbol,
                "rate": float(rate),
                "interval_hours": interval,
                "settled": bool(settled),
                "funding_time_ms": t,
                "mark_price": None if pd.isna(mark) else float(mark),
            }
            try:
                events.append(msgspec.convert(candidate, FundingRate))
            except msgspec.ValidationError as exc:
                errors.append(f"{venue} {native} at {t}: {exc}")
    return events, errors


def events_to_frame(events: Iterable[FundingRate], source: str = "hean"):
    """The normalised table layout, one row per event, sorted by venue, symbol and time."""
    import pandas as pd

    rows = [
        {
            "funding_time_utc": e.funding_time_ms if e.funding_time_ms is not None else e.ts_ms,
            "funding_rate": e.rate,
            "exchange": e.venue,
            "symbol": e.symbol,
            "source": source,
            "interval_hours": float(e.interval_hours),
            "settled": e.settled,
            "mark_price": e.mark_price,
        }
        for e in events
    ]
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    frame["funding_time_utc"] = pd.to_datetime(frame["funding_time_utc"], unit="ms", utc=True)
    frame["mark_price"] = frame["mark_price"].astype("float64")
    frame["settled"] = frame["settled"].astype(bool)
    return frame.sort_values(["exchange", "symbol", "funding_time_utc"]).reset_index(drop=True)


def _read_history(js, subject: str, idle_timeout_s: float) -> AsyncIterator[Event]:
    """Every decodable event stored under ``subject`` in the history stream, in order."""
    return read_stored(js, HISTORY_STREAM, subject, idle_timeout_s=idle_timeout_s)


async def read_funding(
    js,
    *,
    venue: str | None = None,
    symbol: str | None = None,
    settled_only: bool = True,
    since_ms: int | None = None,
    until_ms: int | None = None,
    idle_timeout_s: float = 5.0,
) -> list[FundingRate]:
    """Every stored funding event matching the filters, in stream order.

    Settlements are deduplicated by (venue, symbol, funding time): JetStream's own dedupe
    only covers its duplicate window.
    """
    subject = FUNDING.pattern(venue or "*", symbol or "*")
    out: list[FundingRate] = []
    seen: set[str] = set()
    async for event in _read_history(js, subject, idle_timeout_s):
        if not isinstance(event, FundingRate):
            continue
        if settled_only and not event.settled:
            continue
        t = event.funding_time_ms if event.funding_time_ms is not None else event.ts_ms
        if since_ms is not None and t < since_ms:
            continue
        if until_ms is not None and t >= until_ms:
            continue
        key = msg_id_for(event)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(event)
    return out


async def read_market_history(
    js, *, since_ms: int, idle_timeout_s: float = 5.0
) -> list[FundingRate | OpenInterest]:
    """Funding (settlements and snapshots, which carry the mark price) and open interest since
    ``since_ms``, ordered by time: what a restarted predictor rebuilds its bars from."""
    out: list[FundingRate | OpenInterest] = []
    for subject in (FUNDING.pattern("*", "*"), OPEN_INTEREST.pattern("*", "*")):
        async for event in _read_history(js, subject, idle_timeout_s):
            if isinstance(event, FundingRate | OpenInterest) and event.ts_ms >= since_ms:
                out.append(event)
    out.sort(key=lambda e: e.ts_ms)
    return out


async def read_frame(js, **filters):
    """``read_funding`` as a normalised table (what the predictors and backtester load)."""
    return events_to_frame(await read_funding(js, **filters))


@dataclass(frozen=True)
class ImportResult:
    published: int
    skipped_existing: int
    rejected: int
    errors: list[str]


async def import_events(
    js, events: list[FundingRate], *, skip_existing: bool = True, window: int = 2000
) -> ImportResult:
    """Publish settlements into HEAN_HISTORY, each once, with bounded in-flight acks."""
    existing: set[str] = set()
    if skip_existing and events:
        for stored in await read_funding(js, settled_only=True):
            key = msg_id_for(stored)
            if key:
                existing.add(key)
    published = skipped = 0
    pending: list[asyncio.Future] = []
    for event in events:
        key = msg_id_for(event)
        if key is not None and key in existing:
            skipped += 1
            continue
        if key is not None:
            existing.add(key)
        headers = {"Nats-Msg-Id": key} if key else None
        fut = await js.publish_async(
            subject_for(event), codec.encode(event), headers=headers, wait_stall=30.0
        )
        pending.append(fut)
        published += 1
        if len(pending) >= window:
            await asyncio.gather(*pending)
            pending.clear()
    if pending:
        await asyncio.gather(*pending)
    return ImportResult(published, skipped, 0, [])


def load_table(path: str | Path):
    """A history file as a DataFrame: Parquet, or CSV with the same columns."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise HistoryError(f"{p}: file not found")
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix == ".csv":
        return pd.read_csv(p)
    raise HistoryError(f"{p}: unsupported file type (expected .parquet or .csv)")


async def import_file(js, path: str | Path, *, skip_existing: bool = True) -> ImportResult:
    events, errors = events_from_frame(load_table(path))
    result = await import_events(js, events, skip_existing=skip_existing)
    return ImportResult(result.published, result.skipped_existing, len(errors), errors)


async def export_parquet(js, out: str | Path, *, settled_only: bool = True, **filters) -> int:
    """Write stored funding to Parquet in the normalised layout; returns the row count."""
    frame = await read_frame(js, settled_only=settled_only, **filters)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)
    return len(frame)
