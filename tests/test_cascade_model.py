"""Cascade features on hand-computed cases, the label rule, training and honest evaluation."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hean.cli.main import main as hean_main
from hean.ml.cascade.features import (
    FEATURES,
    ClusterConfig,
    book_imbalance,
    compute_features,
    liquidation_map,
    liquidation_volume,
    momentum,
    nearest_cluster,
    share_within,
)
from hean.ml.cascade.labels import DOWN, NONE, UP, LabelRule, bar_label, next_bar_labels
from hean.ml.cascade.model import CascadeModel
from hean.ml.cascade.synth import synthetic_bars
from hean.ml.cascade.tiers import LeverageBucket, buckets, mmr_for
from hean.ml.cascade.train import TrainConfig, train_model

TEN_X = [LeverageBucket(10.0, 1.0, 0.005)]
SMALL = TrainConfig(n_estimators=40, max_depth=5, min_samples_leaf=10, cv_splits=3)


def test_cluster_levels_by_hand() -> None:
    # 100 units opened at 100 with 10x, MMR 0.5 %: longs die at 90.5, shorts at 109.5
    m = liquidation_map([100, 100], [1000, 1100], [99, 99], [101, 101], TEN_X)
    assert m.long_levels.tolist() == pytest.approx([90.5])
    assert m.short_levels.tolist() == pytest.approx([109.5])
    assert m.long_mass.tolist() == pytest.approx([50.0])
    cfg = ClusterConfig()
    assert nearest_cluster(100.0, m.long_levels, m.long_mass, "down", cfg) == pytest.approx(0.095)
    assert nearest_cluster(100.0, m.short_levels, m.short_mass, "up", cfg) == pytest.approx(0.095)
    assert share_within(100.0, m.long_levels, m.long_mass, 1100.0, 0.10) == pytest.approx(50 / 1100)
    assert share_within(100.0, m.long_levels, m.long_mass, 1100.0, 0.05) == 0.0


def test_cluster_drops_liquidated_and_closed_positions() -> None:
    # a later low through 90.5 wipes the longs; a later OI fall of 10 % trims the shorts pro rata
    m = liquidation_map([100, 100, 95], [1000, 1100, 990], [99, 99, 90], [101, 101, 96], TEN_X)
    assert m.long_levels.size == 0
    assert m.short_mass.tolist() == pytest.approx([50.0 * 0.9])
    # nearest cluster is the nearest heavy bin, not a light one that happens to be closer
    lv = np.array([99.0, 95.0, 94.9])
    ms = np.array([1.0, 10.0, 10.0])
    d = nearest_cluster(100.0, lv, ms, "down", ClusterConfig(cluster_min_share=0.2))
    assert d == pytest.approx(1 - 94.95 / 100)


def test_mmr_from_real_bracket_structure() -> None:
    tiers = [
        {"maxLeverage": 125, "maintenanceMarginRate": 0.004},
        {"maxLeverage": 100, "maintenanceMarginRate": 0.005},
        {"maxLeverage": 20, "maintenanceMarginRate": 0.025},
        {"maxLeverage": 5, "maintenanceMarginRate": 0.1},
    ]
    assert mmr_for(tiers, 100) == 0.005
    assert mmr_for(tiers, 10) == 0.025
    assert mmr_for(tiers, 150) is None
    assert sum(b.weight for b in buckets()) == pytest.approx(1.0)


def test_live_only_features_by_hand() -> None:
    assert book_imbalance([(100, 2)], [(101, 1)]) == pytest.approx((200 - 101) / 301)
    assert book_imbalance([(100, 1), (99, 5)], [(101, 1)], depth=1) == pytest.approx(-1 / 201)
    assert book_imbalance([], []) == 0.0
    t = [0, 60_000, 900_000, 960_000]
    assert momentum(t, [100, 101, 102, 99], 960_000, 900_000) == pytest.approx(99 / 101 - 1)
    assert math.isnan(momentum(t, [100, 101, 102, 99], 960_000, 10**7))
    ev = [(1, "sell", 10.0), (5, "buy", 3.0), (9, "sell", 2.0)]
    assert liquidation_volume(ev, 9, 5) == (2.0, 3.0)


def test_label_rule() -> None:
    r = LabelRule(move_frac=0.07, oi_drop_frac=0.05)
    assert bar_label(100, 101, 92, 1000, 940, r) == DOWN
    assert bar_label(100, 108, 99, 1000, 940, r) == UP
    assert bar_label(100, 101, 92, 1000, 960, r) == NONE  # OI fell only 4 %
    assert bar_label(100, 106, 94, 1000, 900, r) == NONE  # move 6 %
    assert bar_label(100, 110, 91, 1000, 900, r) == UP  # both sides: larger excursion wins
    with pytest.raises(ValueError):
        bar_label(100, 101, 92, 0, 940, r)
    bars = pd.DataFrame(
        {
            "time_ms": [0, 1, 2],
            "close": [100, 95, 96],
            "high": [101, 101, 97],
            "low": [99, 92, 94],
            "oi_units": [1000, 940, 950],
        }
    )
    assert next_bar_labels(bars, r).tolist()[:2] == [DOWN, NONE]
    assert math.isnan(next_bar_labels(bars, r).iloc[2])


def test_features_use_no_future_bars() -> None:
    bars = synthetic_bars(n_symbols=1, n_bars=60, seed=3)
    full = compute_features(bars)
    head = compute_features(bars.iloc[:40])
    assert list(full.columns) == list(FEATURES)
    pd.testing.assert_frame_equal(full.iloc[:40], head)
    row = full.iloc[10]
    c = bars["close"].to_numpy()
    assert row["ret_1"] == pytest.approx(c[10] / c[9] - 1)
    oi = bars["oi_units"].to_numpy()
    assert row["oi_change_3"] == pytest.approx(oi[10] / oi[7] - 1)


@pytest.fixture(scope="module")
def synth_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade_syn")
    meta = train_model(synthetic_bars(n_symbols=4, n_bars=300, seed=11), out, SMALL)
    return out, meta


def test_training_is_reproducible_and_beats_baselines(synth_model, tmp_path) -> None:
    out, meta = synth_model
    again = train_model(synthetic_bars(n_symbols=4, n_bars=300, seed=11), tmp_path, SMALL)
    assert again["metrics_test"] == meta["metrics_test"]
    assert again["cv"] == meta["cv"]
    t = meta["metrics_test"]
    assert t["model"]["auc"] > max(t["volatility"]["auc"], t["persistence"]["auc"], 0.6)
    assert t["model"]["brier"] < t["climatology"]["brier"]
    m = CascadeModel.load(out)
    assert m.version == meta["version"] and m.bar_ms == 86_400_000
    p = m.predict_latest(synthetic_bars(n_symbols=1, n_bars=40, seed=5))
    assert p is not None and 0 <= p.probability <= 1 and p.direction in ("down", "up", "none")


def test_evaluate_cli_on_synthetic_and_funding_still_wired(synth_model, tmp_path) -> None:
    out, _ = synth_model
    report = tmp_path / "r.json"
    plot = tmp_path / "r.png"
    rc = hean_main(
        [
            "evaluate",
            "cascade",
            "--synthetic",
            "4",
            "--seed",
            "11",
            "--model",
            str(out),
            "--report",
            str(report),
            "--plot",
            str(plot),
        ]
    )
    assert rc == 0 and plot.stat().st_size > 1000
    r = json.loads(report.read_text())
    assert r["model"]["n"] > 0 and {"climatology", "persistence", "volatility"} <= set(r)
    with pytest.raises(SystemExit) as exc:
        hean_main(["evaluate", "funding", "--help"])
    assert exc.value.code == 0
    assert hean_main(["train", "cascade", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2


@pytest.mark.data
def test_shipped_model_on_real_held_out_data(data_dir, tmp_path) -> None:
    """What ``hean evaluate cascade`` reports on the real daily data, asserted as measured."""
    from hean.ml.cascade.data import load_bars
    from hean.ml.cascade.evaluate import evaluate_model
    from hean.ml.cascade.model import DEFAULT_DIR

    model = CascadeModel.load(DEFAULT_DIR)
    r = evaluate_model(model, load_bars(data_dir))
    assert r["model"]["n"] > 3000 and r["model"]["positives"] > 100
    # beats every naive baseline on ranking and on Brier over the unseen period ...
    assert r["model"]["auc"] > r["volatility"]["auc"] > r["persistence"]["auc"] > 0.5
    assert r["model"]["brier"] < min(r[b]["brier"] for b in ("climatology", "volatility"))
    # ... but, honestly: it never reaches the 0.7 trading threshold on daily bars, and it
    # cannot tell the direction of a cascade better than a coin
    assert r["model"]["at_threshold"]["0.7"]["fired"] == 0
    assert 0.4 < r["direction_accuracy"] < 0.6
