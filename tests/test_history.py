"""History import/export through a real nats-server JetStream."""

from __future__ import annotations

import pandas as pd
import pytest

from hean.bus.nats import NatsBus
from hean.history import (
    canonical_symbol,
    events_from_frame,
    export_parquet,
    import_file,
    read_funding,
)
from hean.history.store import HistoryError
from hean_proto import codec
from hean_proto.events import FundingRate
from hean_proto.subjects import subject_for

H = 3_600_000
T0 = 1_700_000_000_000 - (1_700_000_000_000 % H)


def _table() -> pd.DataFrame:
    rows = []
    for i in range(6):  # binance BTCUSDT, 8-hourly, with one coverage gap
        t = T0 + i * 8 * H + (8 * H if i >= 4 else 0)
        rows.append(("binance", "BTCUSDT", t, 0.0001 * (i + 1), 8.0 if i != 4 else 16.0))
    for i in range(4):  # okx native symbol, 4-hourly
        rows.append(("okx", "BTC-USDT-SWAP", T0 + i * 4 * H, -0.0002, 4.0))
    return pd.DataFrame(
        {
            "funding_time_utc": pd.to_datetime([r[2] for r in rows], unit="ms", utc=True),
            "funding_rate": [r[3] for r in rows],
            "exchange": [r[0] for r in rows],
            "symbol": [r[1] for r in rows],
            "source": "test",
            "interval_hours": [r[4] for r in rows],
        }
    )


def test_canonical_symbols() -> None:
    assert canonical_symbol("BTC-USDT-SWAP") == "BTCUSDT"
    assert canonical_symbol("BTCUSD_PERP") == "BTCUSD"
    assert canonical_symbol("BTC/USDT:USDT") == "BTCUSDT"
    assert canonical_symbol("ethusdt") == "ETHUSDT"
    with pytest.raises(HistoryError):
        canonical_symbol("BTC USDT")


def test_frame_to_events_replaces_coverage_gaps_with_schedule() -> None:
    events, errors = events_from_frame(_table())
    assert errors == []
    by = {(e.venue, e.symbol, e.funding_time_ms): e for e in events}
    gap_row = by[("binance", "BTCUSDT", T0 + 5 * 8 * H)]
    assert gap_row.interval_hours == 8.0  # the 16 h gap is not an interval
    assert {e.interval_hours for e in events if e.venue == "okx"} == {4.0}
    assert all(e.settled for e in events)


def test_bad_rows_are_reported_not_imported() -> None:
    df = _table()
    df.loc[0, "funding_rate"] = float("nan")
    df.loc[1, "funding_rate"] = 5.0  # not a fraction
    events, errors = events_from_frame(df)
    assert len(events) == len(df) - 2
    assert len(errors) == 2
    with pytest.raises(HistoryError, match="missing columns"):
        events_from_frame(df.drop(columns=["funding_rate"]))


async def test_import_export_roundtrip(nats_url: str, tmp_path) -> None:
    bus = await NatsBus.connect(nats_url, "test-history")
    try:
        await bus.ensure_streams()
        src = tmp_path / "in.parquet"
        _table().to_parquet(src, index=False)
        first = await import_file(bus.js, src)
        assert first.published == 10 and first.skipped_existing == 0
        # a live estimate in the stream is not a settlement and is not exported
        estimate = FundingRate(
            ts_ms=T0, venue="bybit", symbol="BTCUSDT", rate=0.0003, interval_hours=8
        )
        await bus.publish(subject_for(estimate), codec.encode(estimate))
        second = await import_file(bus.js, src)
        assert second.published == 0 and second.skipped_existing == 10

        okx = await read_funding(bus.js, venue="okx")
        assert [e.symbol for e in okx] == ["BTCUSDT"] * 4
        assert len(await read_funding(bus.js, settled_only=False)) == 11

        out = tmp_path / "out" / "history.parquet"
        assert await export_parquet(bus.js, out) == 10
        back = pd.read_parquet(out)
        assert list(back.columns)[:6] == [
            "funding_time_utc",
            "funding_rate",
            "exchange",
            "symbol",
            "source",
            "interval_hours",
        ]
        again, errors = events_from_frame(back)
        original, _ = events_from_frame(_table())
        key = lambda e: (e.venue, e.symbol, e.funding_time_ms)  # noqa: E731
        assert errors == []
        assert sorted((key(e), e.rate, e.interval_hours) for e in again) == sorted(
            (key(e), e.rate, e.interval_hours) for e in original
        )
    finally:
        await bus.close()


async def test_read_empty_stream(nats_url: str) -> None:
    bus = await NatsBus.connect(nats_url, "test-history-empty")
    try:
        await bus.ensure_streams()
        assert await read_funding(bus.js) == []
    finally:
        await bus.close()
