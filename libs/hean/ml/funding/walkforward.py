"""Expanding-window folds by time inside the training period, and the held-out cut.

Sequences are identified by the row that ends them; a sequence's target is the next
settlement of its series, at most 8 h later. The newest ``test_fraction`` of sequence ends
(by time) is held out. Before it, the oldest ``first_fold_fraction`` trains the first fold and
the rest is cut into ``folds`` consecutive validation blocks; fold k trains on everything
before its block. Training sequences stop ``embargo_ms`` before the block (or the held-out
cut) starts, so no training target is settled inside the block it is judged on; the last
validation block stops ``embargo_ms`` before the held-out cut too, so nothing chosen on the
folds (epochs, shrinkage, calibration) depends on a held-out settlement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fold:
    train: np.ndarray
    val: np.ndarray
    val_from_ms: int
    val_until_ms: int
    """Validation sequences end in [val_from_ms, val_until_ms)."""


@dataclass(frozen=True)
class Plan:
    folds: list[Fold]
    train: np.ndarray
    """Every sequence the final model trains on (all before the held-out cut, less embargo)."""
    test: np.ndarray
    test_from_ms: int


def plan_folds(
    ends: np.ndarray,
    times_ms: np.ndarray,
    *,
    folds: int,
    first_fold_fraction: float,
    test_fraction: float,
    embargo_ms: int,
) -> Plan:
    """Split sequence ends (``times_ms`` is their time) into folds, final training and test."""
    if folds < 1:
        raise ValueError(f"folds must be >= 1, got {folds}")
    if not 0 < first_fold_fraction < 1 or not 0 <= test_fraction < 1:
        raise ValueError("first_fold_fraction must be in (0, 1) and test_fraction in [0, 1)")
    if embargo_ms < 0:
        raise ValueError("embargo must be >= 0")
    t = times_ms
    test_from = int(np.quantile(t, 1 - test_fraction)) if test_fraction > 0 else int(t.max()) + 1
    pre = t < test_from
    t_pre = t[pre]
    if not len(t_pre):
        raise ValueError("no sequences before the held-out block")
    qs = first_fold_fraction + (1 - first_fold_fraction) * np.arange(folds) / folds
    starts = [int(np.quantile(t_pre, q)) for q in qs]
    # the last block stops where the final training does: its targets settle before the test
    bounds = [*starts, test_from - embargo_ms]
    out = []
    for k in range(folds):
        lo, hi = bounds[k], bounds[k + 1]
        out.append(
            Fold(
                train=ends[t < lo - embargo_ms],
                val=ends[(t >= lo) & (t < hi)],
                val_from_ms=lo,
                val_until_ms=hi,
            )
        )
    return Plan(
        folds=out,
        train=ends[t < test_from - embargo_ms],
        test=ends[t >= test_from],
        test_from_ms=test_from,
    )
