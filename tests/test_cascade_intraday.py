"""Intraday cascade model: features and label by hand, simulator recordings, training, artifact."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hean.ml.cascade.featuresets import INTRADAY
from hean.ml.cascade.intraday import (
    INTRADAY_FEATURES,
    WindowLabelRule,
    bars_back,
    compute_intraday_features,
    window_labels,
)
from hean.ml.cascade.labels import DOWN, NONE, UP
from hean.ml.cascade.model import INTRADAY_DIR, CascadeModel, ModelLoadError
from hean.ml.cascade.simdata import Recording, plan_run, simulated_bars, to_bars
from hean.ml.cascade.train import TrainConfig, train_model

M5 = 300_000
T0 = 1_767_225_600_000


def bars_of(close, oi, high=None, low=None, **extra) -> pd.DataFrame:
    n = len(close)
    cols = {
        "time_ms": [T0 + i * M5 for i in range(n)],
        "open": close,
        "high": high if high is not None else close,
        "low": low if low is not None else close,
        "close": close,
        "oi_units": oi,
        "funding_bps8": extra.get("funding", [1.0] * n),
        "book_imbalance": extra.get("book", [0.0] * n),
        "liq_long_usd": extra.get("liq_long", [0.0] * n),
        "liq_short_usd": extra.get("liq_short", [0.0] * n),
    }
    return pd.DataFrame({k: np.asarray(v, dtype=float) for k, v in cols.items()}).astype(
        {"time_ms": "int64"}
    )


def test_features_by_hand() -> None:
    n = 16
    close = [100.0 + i for i in range(n)]
    oi = [1000.0 + 10 * i for i in range(n)]
    liq_long = [0.0] * n
    liq_long[13], liq_long[15] = 600.0, 400.0
    book = [math.nan] * 10 + [0.25] * 6
    f = compute_intraday_features(bars_of(close, oi, book=book, liq_long=liq_long), M5)
    assert list(f.columns) == list(INTRADAY_FEATURES)
    # one hour is 12 five-minute bars: row 12 compares with row 0
    assert math.isnan(f["oi_change_1h"].iloc[11])
    assert f["oi_change_1h"].iloc[12] == pytest.approx(1120.0 / 1000.0 - 1.0)
    # 15 minutes is 3 bars
    assert f["momentum_15m"].iloc[15] == pytest.approx(115.0 / 112.0 - 1.0)
    assert math.isnan(f["momentum_15m"].iloc[2])
    # liquidated longs in the last 3 bars (rows 13..15) over open interest in USD at row 15
    assert f["liq_long_15m"].iloc[15] == pytest.approx(1000.0 / (1150.0 * 115.0))
    assert f["liq_long_15m"].iloc[12] == 0.0 and f["liq_short_15m"].iloc[15] == 0.0
    assert math.isnan(f["book_imbalance"].iloc[9]) and f["book_imbalance"].iloc[10] == 0.25
    assert (f["funding_bps8"] == 1.0).all()


def test_unknown_liquidations_stay_unknown_and_no_look_ahead() -> None:
    rng = np.random.default_rng(3)
    n = 60
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, n)))
    oi = 1000 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    bars = bars_of(close, oi, high=close * 1.002, low=close * 0.998, liq_long=[math.nan] * n)
    full = compute_intraday_features(bars, M5)
    assert full["liq_long_15m"].isna().all()
    assert full[["liq_dist_down", "liq_share_down"]].iloc[20:].notna().all().all()
    head = compute_intraday_features(bars.iloc[:35], M5)
    pd.testing.assert_frame_equal(full.iloc[:35], head)


def test_bar_length_must_divide_the_windows() -> None:
    assert bars_back(3_600_000, M5) == 12
    with pytest.raises(ValueError, match="whole number"):
        bars_back(3_600_000, 7 * 60_000)
    with pytest.raises(ValueError, match="lack columns"):
        compute_intraday_features(bars_of([1.0], [1.0]).drop(columns="book_imbalance"), M5)


RULE = WindowLabelRule(move_frac=0.02, oi_drop_frac=0.03, horizon_ms=3_600_000)


def label_after(path: list[float], oi: list[float], high=None, low=None) -> float:
    """Label of row 0, the window being the next 12 bars of ``path``."""
    close = [100.0, *path] + [path[-1]] * max(0, 12 - len(path))
    ois = [1000.0, *oi] + [oi[-1]] * max(0, 12 - len(oi))
    hi = None if high is None else [100.0, *high] + [high[-1]] * max(0, 12 - len(high))
    lo = None if low is None else [100.0, *low] + [low[-1]] * max(0, 12 - len(low))
    return window_labels(bars_of(close, ois, high=hi, low=lo), M5, RULE).iloc[0]


def test_label_rule_on_intraday_bars() -> None:
    # -2.5 % with open interest -4 % within the hour: a down cascade
    assert label_after([99.0, 97.5], [990.0, 960.0]) == DOWN
    # the same move while open interest only falls 2 %: no cascade
    assert label_after([99.0, 97.5], [990.0, 980.0]) == NONE
    # open interest -5 % but the price moves 1 %: no cascade
    assert label_after([99.0, 99.0], [950.0, 950.0]) == NONE
    # the high reaches +2 % in bar 2 before the low reaches -2 % in bar 4: up
    assert (
        label_after(
            [100.0] * 4,
            [960.0] * 4,
            high=[100.5, 102.1, 100.0, 100.0],
            low=[99.5, 99.5, 99.0, 97.9],
        )
        == UP
    )
    # both in the same bar: the larger excursion wins
    assert label_after([100.0], [960.0], high=[102.1], low=[97.0]) == DOWN
    # a move after the hour does not count
    assert label_after([100.0] * 12 + [90.0], [960.0] * 13) == NONE
    # the last hour of a series has no complete window
    lab = window_labels(bars_of([100.0] * 20, [1000.0] * 20), M5, RULE)
    assert lab.iloc[:8].eq(NONE).all() and lab.iloc[8:].isna().all()


def test_to_bars_folds_by_each_timestamp() -> None:
    minutes = pd.DataFrame(
        {
            "time_ms": [T0 + i * 60_000 for i in range(1, 11)],
            "price": [10.0, 11.0, 9.0, 10.5, 10.0, 10.0, 12.0, 10.0, 10.0, 8.0],
            "oi_units": [float(i) for i in range(1, 11)],
            "funding_bps8": [1.0, 1.0, 1.0, 1.0, 3.0, 2.0, 2.0, 2.0, 2.0, 2.0],
            "book_imbalance": [0.1] * 9 + [-0.3],
        }
    )
    prints = pd.DataFrame(
        {
            # 4m59s is in the first bar, 5m00s in the second
            "ts_ms": [T0 + 299_000, T0 + 300_000, T0 + 301_000],
            "side": ["sell", "sell", "buy"],
            "usd": [100.0, 50.0, 7.0],
        }
    )
    bars = to_bars(Recording(minutes, prints), M5)
    # minutes 1..4 are bar 0, minutes 5..9 bar 1, minute 10 bar 2
    assert bars["time_ms"].tolist() == [T0, T0 + M5, T0 + 2 * M5]
    assert bars[["open", "high", "low", "close"]].iloc[0].tolist() == [10.0, 11.0, 9.0, 10.5]
    assert bars[["open", "high", "low", "close"]].iloc[1].tolist() == [10.0, 12.0, 10.0, 10.0]
    assert bars["oi_units"].tolist() == [4.0, 9.0, 10.0]
    assert bars["funding_bps8"].tolist() == [1.0, pytest.approx(2.2), 2.0]
    assert bars["book_imbalance"].tolist() == [0.1, 0.1, -0.3]
    assert bars["liq_long_usd"].tolist() == [100.0, 50.0, 0.0]
    assert bars["liq_short_usd"].tolist() == [0.0, 7.0, 0.0]
    no_stream = to_bars(Recording(minutes, None), M5)
    assert no_stream[["liq_long_usd", "liq_short_usd"]].isna().all().all()


def test_simulated_runs_mix_regimes_and_cascades_carry_their_signature() -> None:
    plans = [plan_run(seed, T0) for seed in range(1000, 1040)]
    assert {p.regime for p in plans} == {"calm", "volatile", "fizzle", "cascade"}
    cascades = [e for p in plans for e in p.scenario.events if e.kind == "cascade"]
    assert any(e.drop_frac > 0 for e in cascades) and any(e.drop_frac < 0 for e in cascades)
    assert plan_run(1003, T0) == plan_run(1003, T0)  # seeded
    bars = simulated_bars(3, 1004, M5, hours=24)
    assert bars["symbol"].unique().tolist() == ["SIM1004", "SIM1005", "SIM1006"]
    # runs are laid end to end: one time axis, no overlap
    spans = bars.groupby("symbol")["time_ms"].agg(["min", "max"])
    assert (spans["min"].iloc[1:].to_numpy() > spans["max"].iloc[:-1].to_numpy()).all()
    regimes = bars.groupby("symbol")["regime"].first()
    checked_books = 0
    for sym, g in bars.groupby("symbol"):
        lab = window_labels(g, M5, RULE)
        if regimes[sym] == "cascade":
            hot = g[lab.isin([DOWN, UP])]
            assert len(hot) > 0
            # the side hit by the forced orders is thinner during the cascade: bids under a
            # fall (imbalance < 0), asks under a rise
            sign = -1 if (lab == DOWN).any() else 1
            book = hot["book_imbalance"].dropna()
            if len(book):
                assert (sign * book > 0.2).any()
                checked_books += 1
        else:
            assert (g["liq_long_usd"].fillna(0) + g["liq_short_usd"].fillna(0)).sum() == 0
    assert checked_books == 2  # one run has no book, as some venues have none


@pytest.fixture(scope="module")
def small_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade_intraday")
    bars = simulated_bars(24, 3140, M5)
    cfg = TrainConfig(n_estimators=20, max_depth=5, min_samples_leaf=10, cv_splits=3)
    meta = train_model(
        bars,
        out,
        cfg,
        fs=INTRADAY,
        bar_ms=M5,
        rule=RULE,
        data_kind="simulated",
        extra_meta={"book_depth": 5, "sim_seeds": [3140, 3163]},
    )
    return out, bars, meta


def test_a_small_training_run_writes_a_loadable_intraday_artifact(small_artifact) -> None:
    out, bars, meta = small_artifact
    saved = json.loads((out / "meta.json").read_text())
    assert saved["feature_set"] == "intraday" and saved["data_kind"] == "simulated"
    assert saved["features"] == list(INTRADAY_FEATURES) and saved["bar_ms"] == M5
    assert saved["label_rule"] == {"move_frac": 0.02, "oi_drop_frac": 0.03, "horizon_ms": 3_600_000}
    assert saved["min_bars"] == 13 and saved["book_depth"] == 5
    # the embargo keeps a label's hour away from the next period
    assert saved["split"]["test_start_ms"] > saved["split"]["calibration_start_ms"]
    test = saved["metrics_test"]
    assert test["model"]["positives"] > 0 and test["model"]["auc"] > test["volatility"]["auc"]
    model = CascadeModel.load(out)
    assert model.intraday and model.bar_ms == M5 and model.version == meta["version"]
    g = bars[bars["symbol"] == "SIM3160"]
    f = model.features_of(g)
    direct = model.predict_rows(f.iloc[[-1]].to_numpy(float))[0]
    assert model.predict_latest(g) == direct
    assert model.predict_latest(g.iloc[:12]) is None  # less than an hour and a bar


def test_artifact_feature_set_must_match_the_code(small_artifact, tmp_path) -> None:
    out, _, _ = small_artifact
    meta = json.loads((out / "meta.json").read_text())
    (tmp_path / "model.joblib").write_bytes((out / "model.joblib").read_bytes())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "feature_set": "daily"}))
    with pytest.raises(ModelLoadError, match="daily set"):
        CascadeModel.load(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "feature_set": "hourly"}))
    with pytest.raises(ModelLoadError, match="unknown cascade feature set"):
        CascadeModel.load(tmp_path)


def test_evaluate_cli_scores_fresh_seeds_at_later_times(small_artifact, tmp_path, capsys) -> None:
    from hean.cli.main import main

    out, _, meta = small_artifact
    report = tmp_path / "r.json"
    rc = main(
        [
            "evaluate",
            "cascade",
            "--model",
            str(out),
            "--simulated",
            "6",
            "--sim-seed",
            "2280",  # its first two runs (the baselines') hold a cascade
            "--report",
            str(report),
            "--plot",
            str(tmp_path / "r.png"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    r = json.loads(report.read_text())
    assert r["eval_start_ms"] > meta["data_span"]["last_ms"]  # later times
    assert r["symbols"] == 4  # 6 runs: 2 fit the baselines, 4 are scored
    assert {"model", "climatology", "persistence", "volatility", "momentum"} <= set(r)
    assert (tmp_path / "r.png").stat().st_size > 0
    overlap = ["--simulated", "3", "--sim-seed", "3150"]
    rc = main(["evaluate", "cascade", "--model", str(out), *overlap])
    assert rc == 2 and "overlap" in capsys.readouterr().err


def test_the_shipped_intraday_artifact() -> None:
    model = CascadeModel.load(INTRADAY_DIR)
    assert model.intraday and model.meta["data_kind"] == "simulated" and model.bar_ms == M5
    assert (INTRADAY_DIR / "model.joblib").stat().st_size < 1_000_000
    m = model.meta["metrics_test"]
    assert m["model"]["brier"] < m["climatology"]["brier"]
