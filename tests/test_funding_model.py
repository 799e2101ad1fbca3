"""Tiny training run, artifact round trip, batched inference, calibration, evaluation and CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from funding_synth import table

from hean.ml.funding import cli
from hean.ml.funding.calibration import Calibration
from hean.ml.funding.data import clean_frame
from hean.ml.funding.evaluate import evaluate_model
from hean.ml.funding.model import FundingForecaster, ModelLoadError, SeriesHistory
from hean.ml.funding.policy import ActionPolicy
from hean.ml.funding.train import TrainConfig, train_model

TINY = TrainConfig(seq_len=8, hidden=8, epochs=3, max_train=2000, threads=1)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("funding_model")
    lines: list[str] = []
    meta = train_model(clean_frame(table(n=300)), out, TINY, progress=lines.append)
    return out, meta, lines


def test_training_writes_a_versioned_artifact(artifact):
    out, meta, lines = artifact
    assert (out / "model.pt").exists() and (out / "meta.json").exists()
    for k in range(1, 5):  # progress per fold and epoch, then for the final fit
        assert any(line.startswith(f"fold {k}/4 epoch 3/3 train_loss=") for line in lines)
    chosen = meta["walk_forward"]["chosen_epochs"]
    assert any(line.startswith(f"final epoch {chosen}/{chosen} ") for line in lines)
    for key in ("version", "git_revision", "features", "scaling", "calibration", "data"):
        assert key in meta
    assert meta["data"]["first_utc"].startswith("2024-01-01")
    # the final fit stops an embargo before the held-out block
    assert meta["data"]["train_until_utc"] < meta["data"]["test_from_utc"]
    assert meta["metrics_test"]["overall"]["n"] == meta["data"]["sequences"]["test"]
    assert len(meta["scaling"]["mean"]) == len(meta["features"])
    assert meta["best_epoch"] == chosen and 1 <= chosen <= 3


def test_training_reports_every_walk_forward_fold(artifact):
    _, meta, lines = artifact
    wf = meta["walk_forward"]
    assert [f["fold"] for f in wf["folds"]] == [1, 2, 3, 4]
    assert len(wf["mean_skill_ratio_by_epoch"]) == 3
    froms = [f["val_from_utc"] for f in wf["folds"]]
    assert froms == sorted(froms)
    assert wf["folds"][-1]["val_until_utc"] == meta["data"]["train_until_utc"]
    for f in wf["folds"]:
        assert f["val_sequences"] > 0
        assert f["skill_ratio"] == pytest.approx(f["model_mae_bps"] / f["persistence_mae_bps"])
        assert f["skill_ratio_vs_ewma"] == pytest.approx(f["model_mae_bps"] / f["ewma_mae_bps"])
        assert any(
            line.startswith(f"fold {f['fold']}: model MAE {f['model_mae_bps']:.4f}")
            for line in lines
        )
    # expanding window: every fold trains on more sequences than the one before
    sizes = [f["train_sequences"] for f in wf["folds"]]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4
    assert sizes[-1] < meta["data"]["sequences"]["train"]
    assert wf["chosen_shrink"] == meta["scaling"]["shrink"]
    # the chosen epoch is the one with the lowest mean fold skill before shrinkage
    curve = wf["mean_skill_ratio_by_epoch"]
    assert curve[wf["chosen_epochs"] - 1] == min(curve)
    assert wf["mean_skill_ratio"] <= min(curve) + 1e-4  # shrink 1 was among the candidates


def test_artifact_round_trip_predicts_the_same(artifact):
    out, meta, _ = artifact
    a = FundingForecaster.load(out)
    b = FundingForecaster.load(out)
    assert a.version == meta["version"]
    frame = clean_frame(table(n=60, seed=5))
    hist = [
        SeriesHistory(
            v,
            s,
            g["time_ms"].tolist(),
            g["rate"].tolist(),
            g["interval_hours"].tolist(),
        )
        for (v, s), g in frame.groupby(["venue", "symbol"])
    ]
    short = SeriesHistory("gate", "ETHUSDT", [0, 28_800_000], [1e-4, 1e-4], [8.0, 8.0])
    fa = a.predict_batch([*hist, short])
    fb = b.predict_batch(hist)
    assert fa[-1] is None  # too short to fill a sequence: no forecast, not a guess
    assert [f.predicted_rate for f in fa[:-1]] == [f.predicted_rate for f in fb]
    for f, h in zip(fa, hist, strict=False):
        assert f.venue == h.venue and f.lower_rate <= f.predicted_rate <= f.upper_rate
        assert 0.0 <= f.confidence <= 1.0 and f.action in ("ENTER", "HOLD", "EXIT")
        assert f.for_funding_ms == h.times_ms[-1] + int(h.interval_hours[-1] * 3_600_000)


def test_missing_artifact_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"meta\.json"):
        FundingForecaster.load(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load"):
        FundingForecaster.load(tmp_path)


def test_calibration_covers_and_confidence_tracks_margin():
    rng = np.random.default_rng(3)
    resid = rng.normal(0, 1.0, 5000)
    cal = Calibration.fit(resid, np.array(["bybit"] * 5000), np.array([8.0] * 5000), 0.9)
    fresh = rng.normal(0, 1.0, 5000)
    lo, hi, _ = cal.interval(0.0, "bybit", 8.0)
    coverage = np.mean((fresh >= lo) & (fresh <= hi))
    assert 0.87 <= coverage <= 0.93
    # P(sign right) for a forecast 1 sigma from zero is about 0.84; larger margin, higher
    c1 = cal.interval(1.0, "bybit", 8.0)[2]
    c2 = cal.interval(2.0, "bybit", 8.0)[2]
    assert 0.8 <= c1 <= 0.88 and c2 > c1
    assert cal.interval(-1.0, "bybit", 8.0)[2] == pytest.approx(c1, abs=0.03)
    # unknown venue falls back to the interval and then the global bucket
    assert cal.interval(1.0, "kraken", 8.0)[2] == pytest.approx(c1)


def test_action_policy_is_cost_aware():
    p = ActionPolicy(enter_bps_8h=3.0, exit_bps_8h=0.5, round_trip_cost_bps=24, hold_hours=48)
    assert p.cost_bps_8h == pytest.approx(4.0)
    assert p.decide(8.0, 8.0, 0.9) == "ENTER"
    assert p.decide(6.0, 6.0, 0.9) == "HOLD"  # 6 - 4 < 3: does not pay for the round trip
    assert p.decide(8.0, 8.0, 0.5) == "HOLD"  # not confident enough
    assert p.decide(8.0, -2.0, 0.7) == "EXIT"  # sign flips
    assert p.decide(1.0, 0.2, 0.55) == "EXIT"  # too small to hold


def test_evaluate_compares_with_baselines(artifact, tmp_path):
    out, _, _ = artifact
    fc = FundingForecaster.load(out)
    report = evaluate_model(
        fc,
        clean_frame(table(n=300, seed=9)),
        report_path=tmp_path / "r.json",
        plot_path=tmp_path / "p.png",
    )
    o = report["overall"]
    for name in ("model", "persistence", "ewma"):
        assert {"mae_bps", "rmse_bps", "directional_accuracy"} <= set(o[name])
    assert o["skill_ratio"] == pytest.approx(o["model"]["mae_bps"] / o["persistence"]["mae_bps"])
    assert set(report["by_venue"]) == {"binance", "bybit", "okx", "dydx"}
    assert set(report["by_interval"]) == {"1h", "8h"}
    assert 0.0 <= o["coverage"] <= 1.0
    assert json.loads((tmp_path / "r.json").read_text())["overall"]["n"] == o["n"]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    newest = evaluate_model(fc, clean_frame(table(n=300, seed=9)), last_fraction=0.2)
    assert newest["data"]["scored_from_ms"] > report["data"]["scored_from_ms"]
    assert newest["overall"]["n"] < o["n"]


def test_cli_train_and_evaluate_on_csv(tmp_path, capsys):
    data = tmp_path / "funding.csv"
    table(n=200, seed=11).to_csv(data, index=False)
    p = argparse.ArgumentParser()
    cli.add_train_args(p)
    args = p.parse_args(
        [
            "--data",
            str(data),
            "--out",
            str(tmp_path / "m"),
            "--epochs",
            "2",
            "--seq-len",
            "8",
            "--hidden",
            "8",
        ]
    )
    assert cli.train(args) == 0
    text = capsys.readouterr().out
    assert "fold 4/4 epoch 2/2" in text and "final epoch" in text
    assert "walk-forward folds at training" in text and "held-out test: model MAE" in text
    p = argparse.ArgumentParser()
    cli.add_evaluate_args(p)
    args = p.parse_args(
        [
            "--model",
            str(tmp_path / "m"),
            "--data",
            str(data),
            "--report",
            str(tmp_path / "r.json"),
            "--plot",
            str(tmp_path / "p.png"),
        ]
    )
    assert cli.evaluate(args) == 0
    text = capsys.readouterr().out
    assert "persist" in text and "venue okx" in text and "interval 1h" in text
    assert "walk-forward folds at training" in text and "mean fold skill ratio" in text
    args.data = str(tmp_path / "missing.parquet")
    assert cli.evaluate(args) == 2
    assert "file not found" in capsys.readouterr().err


def test_shipped_artifact_loads():
    fc = FundingForecaster.load()
    assert fc.version.startswith("funding-lstm-") and fc.features
    wf = fc.meta["walk_forward"]
    assert len(wf["folds"]) == 4 and wf["chosen_epochs"] == fc.meta["best_epoch"]
    # the final fit ended an embargo before the held-out block it was scored on
    assert fc.meta["data"]["train_until_utc"] < fc.meta["data"]["test_from_utc"]
    assert wf["folds"][-1]["val_until_utc"] == fc.meta["data"]["train_until_utc"]


def test_shipped_model_on_real_history(data_dir):
    fc = FundingForecaster.load()
    frame = clean_frame(
        __import__("pandas").read_parquet(data_dir / "normalized" / "funding_settlements.parquet")
    )
    report = evaluate_model(fc, frame, last_fraction=0.2)
    o = report["overall"]
    assert o["n"] > 10_000
    assert o["skill_ratio"] == pytest.approx(fc.meta["metrics_test"]["overall"]["skill_ratio"])
