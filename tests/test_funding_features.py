"""Funding features: cleaning of the shared table's quirks, hand-checked values, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from funding_synth import START, table

from hean.ml.funding.data import FundingDataError, canonical_symbol, clean_frame, load
from hean.ml.funding.features import add_features, feature_names, run_lengths, targets


def _rows(times_h, rates, interval, venue="binance", symbol="SOLUSDT", **extra):
    df = pd.DataFrame(
        {
            "funding_time_utc": [START + pd.Timedelta(hours=h) for h in times_h],
            "exchange": venue,
            "symbol": symbol,
            "funding_rate": rates,
            "interval_hours": interval,
        }
    )
    for k, v in extra.items():
        df[k] = v
    return df


def test_canonical_symbols_match_across_venues():
    assert canonical_symbol("BTC-USDT-SWAP") == "BTCUSDT"
    assert canonical_symbol("XBTUSD") == "BTCUSD"
    assert canonical_symbol("BTCUSD_PERP") == "BTCUSD"
    assert canonical_symbol("ETHUSDT") == "ETHUSDT"


def test_coverage_gaps_are_not_intervals():
    # 8 h settlements, one missing (16 h gap), then a switch to 4 h, then a 1000 h hole
    hours = [0, 8, 16, 32, 36, 40, 1040]
    raw = _rows(hours, [1e-4] * 7, [8.0, 8.0, 8.0, 16.0, 4.0, 4.0, 1000.0])
    df = clean_frame(raw)
    assert df["interval_hours"].tolist() == [8.0, 8.0, 8.0, 8.0, 4.0, 4.0, 4.0]
    assert df["gap_before"].tolist() == [0, 0, 0, 1, 0, 0, 1]
    _, ok = targets(add_features(df))
    # a forecast target is never the row after a hole, nor past the end
    assert ok.tolist() == [True, True, False, True, True, False, False]


def test_bad_rows_dropped_and_missing_columns_refused(tmp_path):
    raw = _rows([0, 8, 16], [1e-4, np.nan, 2e-4], 8.0)
    df = clean_frame(raw)
    assert len(df) == 2 and df.attrs["dropped_rows"] == 1
    with pytest.raises(FundingDataError, match="funding_rate"):
        clean_frame(raw.drop(columns=["funding_rate"]))
    p = tmp_path / "t.csv"
    raw.to_csv(p, index=False)
    assert len(load(p)) == 2
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(FundingDataError, match="unsupported"):
        load(tmp_path / "t.txt")


def test_hand_checked_values():
    # 4 h series: 1, 2, ..., 10 bps per interval = 2, 4, ..., 20 bps per 8 h
    rates = [k * 1e-4 for k in range(1, 11)]
    df = add_features(clean_frame(_rows([4 * k for k in range(10)], rates, 4.0)))
    assert df["rate_bps8"].tolist() == pytest.approx([2.0 * k for k in range(1, 11)])
    assert np.isnan(df["d_rate_bps8"].iloc[0])
    assert df["d_rate_bps8"].iloc[1:].tolist() == pytest.approx([2.0] * 9)
    assert df["mean_bps8"].iloc[:7].isna().all()
    assert df["mean_bps8"].iloc[7] == pytest.approx(9.0)  # mean of 2..16
    assert df["std_bps8"].iloc[7] == pytest.approx(np.std(np.arange(2, 17, 2)))
    # 2024-01-01 is a Monday; the row at 08:00 UTC
    assert df["hour_sin"].iloc[2] == pytest.approx(np.sin(2 * np.pi * 8 / 24))
    assert df["dow_cos"].iloc[0] == pytest.approx(1.0)
    # EWMA(span 8): alpha = 2/9
    alpha = 2 / 9
    e = 2.0
    e = alpha * 4.0 + (1 - alpha) * e
    assert df["ewma_bps8"].iloc[1] == pytest.approx(e)
    # no other venue: the spread is absent, and says so
    assert df["xv_available"].eq(0).all()


def test_base_rate_flag_and_share_on_the_8h_scale():
    # 0.005 % per 4 h is the 0.01 % per 8 h base rate; 0.0101 % per 8 h is not
    rates = [5e-5] * 6 + [5.05e-5, 5e-5, 2e-5, 5e-5]
    df = add_features(clean_frame(_rows([4 * k for k in range(10)], rates, 4.0)))
    assert df["at_base"].tolist() == [1.0] * 6 + [0.0, 1.0, 0.0, 1.0]
    assert df["base_share"].iloc[:7].isna().all()  # window of 8 not yet full
    assert df["base_share"].iloc[7:].tolist() == pytest.approx([7 / 8, 6 / 8, 6 / 8])


def test_cross_venue_spread_on_the_8h_scale():
    a = _rows([0, 8, 16], [1e-4, 2e-4, 3e-4], 8.0, venue="binance", symbol="BTCUSDT")
    b = _rows([0, 4, 8, 12, 16], [1e-4] * 5, 4.0, venue="okx", symbol="BTC-USDT-SWAP")
    df = add_features(clean_frame(pd.concat([a, b], ignore_index=True)))
    bn = df[df.venue == "binance"]
    # okx 1 bp per 4 h = 2 bps per 8 h
    assert bn["xv_spread_bps8"].tolist() == pytest.approx([-1.0, 0.0, 1.0])
    assert bn["xv_available"].eq(1).all()
    ok = df[df.venue == "okx"]
    assert ok["xv_spread_bps8"].tolist() == pytest.approx([1.0, 1.0, 0.0, 0.0, -1.0])


def test_optional_columns_flagged_with_last_known_value():
    raw = _rows(
        [0, 8, 16, 24],
        [1e-4] * 4,
        8.0,
        open_interest=[np.nan, 100.0, np.nan, 200.0],
    )
    df = add_features(clean_frame(raw))
    assert "oi_change" in feature_names(df) and "px_momentum" not in feature_names(df)
    assert df["oi_available"].tolist() == [0, 0, 0, 1]
    assert df["oi_change"].iloc[3] == pytest.approx(np.log(2.0))
    without = add_features(clean_frame(_rows([0, 8], [1e-4, 1e-4], 8.0)))
    assert "oi_change" not in feature_names(without)


def test_no_look_ahead():
    base = clean_frame(table(n=120))
    t_cut = int(base["time_ms"].quantile(0.6))
    changed = base.copy()
    future = changed["time_ms"] > t_cut
    rng = np.random.default_rng(0)
    changed.loc[future, "rate"] = rng.normal(0, 1e-2, future.sum())
    changed = changed[~(future & (rng.random(len(changed)) < 0.3))]  # and drop some future rows
    f1 = add_features(base)
    f2 = add_features(changed.reset_index(drop=True))
    names = feature_names(f1)
    past1 = f1[f1["time_ms"] <= t_cut].reset_index(drop=True)[names]
    past2 = f2[f2["time_ms"] <= t_cut].reset_index(drop=True)[names]
    pd.testing.assert_frame_equal(past1, past2)
    r1 = run_lengths(f1, names)[f1["time_ms"].to_numpy() <= t_cut]
    r2 = run_lengths(f2, names)[f2["time_ms"].to_numpy() <= t_cut]
    assert (r1 == r2).all()
