"""``hean data import|export`` through the CLI entry point against a real nats-server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from test_history import _table

from hean.bus.nats import NatsBus
from hean.cli.main import main
from hean.history import events_from_frame, import_events, read_funding


def test_cli_import_then_export(nats_url: str, tmp_path: Path, capsys) -> None:
    src = tmp_path / "history.parquet"
    _table().to_parquet(src, index=False)
    assert main(["data", "--nats", nats_url, "import", str(src)]) == 0
    assert "imported 10 settlements, 0 already stored" in capsys.readouterr().out
    assert main(["data", "--nats", nats_url, "import", str(src)]) == 0
    assert "imported 0 settlements, 10 already stored" in capsys.readouterr().out

    out = tmp_path / "export.parquet"
    assert main(["data", "--nats", nats_url, "export", "--out", str(out), "--venue", "okx"]) == 0
    assert "wrote 4 rows" in capsys.readouterr().out
    back = pd.read_parquet(out)
    assert set(back.exchange) == {"okx"} and set(back.symbol) == {"BTCUSDT"}
    assert set(back.interval_hours) == {4.0}


def test_cli_import_reports_bad_files(nats_url: str, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.parquet"
    assert main(["data", "--nats", nats_url, "import", str(missing)]) == 2
    assert "file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    frame = _table()
    frame.loc[0, "funding_rate"] = float("nan")
    frame.to_csv(bad, index=False)
    assert main(["data", "--nats", nats_url, "import", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "imported 9 settlements" in captured.out
    assert "rejected: binance BTCUSDT" in captured.err


def test_shared_history_converts_cleanly(data_dir: Path) -> None:
    table = pd.read_parquet(data_dir / "normalized" / "funding_settlements.parquet")
    events, errors = events_from_frame(table)
    assert errors == []
    assert len(events) == len(table)
    assert {e.interval_hours for e in events} <= {1.0, 2.0, 4.0, 8.0}
    okx = {e.symbol for e in events if e.venue == "okx"}
    assert okx == {"BTCUSDT", "ETHUSDT", "BTCUSD", "ETHUSD"}
    hype = [e for e in events if e.venue == "binance" and e.symbol == "HYPEUSDT"]
    assert hype and all(e.interval_hours in (4.0, 8.0) for e in hype)


@pytest.mark.timeout(120)
async def test_shared_history_series_roundtrip(data_dir: Path, nats_url: str) -> None:
    table = pd.read_parquet(data_dir / "normalized" / "funding_settlements.parquet")
    series = table[(table.exchange == "okx") & (table.symbol == "BTC-USDT-SWAP")]
    events, _ = events_from_frame(series)
    bus = await NatsBus.connect(nats_url, "test-shared-history")
    try:
        await bus.ensure_streams()
        result = await import_events(bus.js, events)
        assert result.published == len(series)
        stored = await read_funding(bus.js, venue="okx", symbol="BTCUSDT")
        assert [e.rate for e in stored] == list(series.sort_values("funding_time_utc").funding_rate)
    finally:
        await bus.close()
