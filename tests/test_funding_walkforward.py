"""Walk-forward folds by time: order, no overlap, embargo, and a held-out block nobody trains on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from funding_synth import table

from hean.ml.funding.data import clean_frame
from hean.ml.funding.train import TrainConfig, train_model
from hean.ml.funding.walkforward import plan_folds

HOUR = 3_600_000
SMALL = TrainConfig(seq_len=8, hidden=8, epochs=2, max_train=1000, folds=2, threads=1)


def _ends_and_times(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three 8 h series and one hourly series, starting at different times, rows interleaved."""
    rng = np.random.default_rng(seed)
    times = np.concatenate(
        [
            rng.integers(0, 8) * HOUR + np.arange(600) * 8 * HOUR,
            300 * 8 * HOUR + np.arange(400) * 8 * HOUR,
            np.arange(900) * 8 * HOUR,
            100 * 8 * HOUR + np.arange(3000) * HOUR,
        ]
    )
    ends = np.arange(len(times)) * 3 + 5  # row numbers, not in time order
    return ends, times


@pytest.mark.parametrize("folds,embargo_h", [(4, 8), (3, 24), (1, 8)])
def test_folds_are_time_ordered_disjoint_and_embargoed(folds, embargo_h):
    ends, times = _ends_and_times()
    time_of = dict(zip(ends.tolist(), times.tolist(), strict=True))
    plan = plan_folds(
        ends,
        times,
        folds=folds,
        first_fold_fraction=0.4,
        test_fraction=0.2,
        embargo_ms=embargo_h * HOUR,
    )
    assert len(plan.folds) == folds

    def t(idx: np.ndarray) -> np.ndarray:
        return np.array([time_of[i] for i in idx.tolist()])

    seen: set[int] = set()
    for k, fold in enumerate(plan.folds):
        tv, tt = t(fold.val), t(fold.train)
        assert tv.min() >= fold.val_from_ms and tv.max() < fold.val_until_ms
        # embargo: the last training sequence ends at least embargo before the block
        assert tt.max() < fold.val_from_ms - embargo_h * HOUR
        assert tt.max() + 8 * HOUR < fold.val_from_ms  # no training target inside the block
        assert not (set(fold.val.tolist()) & seen)  # validation blocks never overlap
        seen |= set(fold.val.tolist())
        if k:
            prev = plan.folds[k - 1]
            assert fold.val_from_ms == prev.val_until_ms  # consecutive blocks
            assert set(prev.train.tolist()) < set(fold.train.tolist())  # expanding window
    # nothing validated on settles in the held-out block
    assert plan.folds[-1].val_until_ms == plan.test_from_ms - embargo_h * HOUR
    assert t(plan.folds[-1].val).max() + 8 * HOUR < plan.test_from_ms
    assert t(plan.test).min() >= plan.test_from_ms
    assert t(plan.train).max() < plan.test_from_ms - embargo_h * HOUR
    assert not (set(plan.train.tolist()) & set(plan.test.tolist()))
    assert len(plan.test) == pytest.approx(0.2 * len(ends), rel=0.05)
    # the first fold trains on roughly the oldest 40 % of the pre-test sequences
    pre = len(ends) - len(plan.test)
    assert len(plan.folds[0].train) == pytest.approx(0.4 * pre, rel=0.1)


def test_bad_fold_settings_are_refused():
    ends, times = _ends_and_times()
    with pytest.raises(ValueError, match="folds must be >= 1"):
        plan_folds(ends, times, folds=0, first_fold_fraction=0.4, test_fraction=0.2, embargo_ms=0)
    with pytest.raises(ValueError, match="first_fold_fraction"):
        plan_folds(ends, times, folds=2, first_fold_fraction=1.0, test_fraction=0.2, embargo_ms=0)
    with pytest.raises(ValueError, match="embargo"):
        plan_folds(ends, times, folds=2, first_fold_fraction=0.4, test_fraction=0.2, embargo_ms=-1)


def test_too_many_folds_for_the_history_is_a_clear_error(tmp_path):
    cfg = TrainConfig(seq_len=8, hidden=8, epochs=1, folds=40, first_fold_fraction=0.01)
    with pytest.raises(ValueError, match="history too short for this many folds"):
        train_model(clean_frame(table(n=60)), tmp_path, cfg, progress=lambda _: None)


def test_final_model_never_sees_the_held_out_rows(tmp_path):
    """Rewriting every held-out settlement leaves weights, scaling and calibration unchanged."""
    frame = clean_frame(table(n=240, seed=4))
    a = train_model(frame, tmp_path / "a", SMALL, progress=lambda _: None)
    test_from = pd.Timestamp(a["data"]["test_from_utc"]).value // 1_000_000
    changed = frame.copy()
    held_out = changed["time_ms"] >= test_from
    assert held_out.sum() > 100
    changed.loc[held_out, "rate"] = -3 * changed.loc[held_out, "rate"] + 5e-4
    b = train_model(changed, tmp_path / "b", SMALL, progress=lambda _: None)
    wa = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    wb = torch.load(tmp_path / "b" / "model.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for key in ("scaling", "calibration", "walk_forward", "best_epoch"):
        assert a[key] == b[key], key
    # the held-out score does see the change: it is computed on those rows
    assert a["metrics_test"]["overall"]["model"] != b["metrics_test"]["overall"]["model"]


def test_seed_ensemble_round_trips(tmp_path):
    from hean.ml.funding.model import FundingForecaster

    cfg = TrainConfig(seq_len=8, hidden=8, epochs=1, max_train=500, folds=2, members=2, threads=1)
    lines: list[str] = []
    meta = train_model(clean_frame(table(n=200, seed=6)), tmp_path, cfg, progress=lines.append)
    assert meta["members"] == 2
    assert any(line.startswith("fold 2/2 member 2/2 epoch 1/1") for line in lines)
    assert any(line.startswith("final member 2/2 epoch 1/1") for line in lines)
    fc = FundingForecaster.load(tmp_path)
    assert len(fc.net.members) == 2
    frame = clean_frame(table(n=200, seed=6))
    from hean.ml.funding.evaluate import evaluate_model

    report = evaluate_model(fc, frame, last_fraction=0.2)
    # the loaded ensemble reproduces the held-out score computed at training time
    assert report["overall"]["n"] == meta["metrics_test"]["overall"]["n"]
    assert report["overall"]["model"]["mae_bps"] == pytest.approx(
        meta["metrics_test"]["overall"]["model"]["mae_bps"], rel=1e-5
    )
