"""Held-out evaluation of a cascade artifact against naive baselines, with a reliability plot.

By default only bars from the artifact's own test start onwards are scored (the period the
forest and its calibration never saw); baselines are fitted on everything before that.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hean.ml.cascade.model import CascadeModel
from hean.ml.cascade.train import build_dataset, evaluate_period, fit_baselines


def evaluate_model(
    model: CascadeModel,
    bars: pd.DataFrame,
    *,
    since_ms: int | None = None,
    report_path: str | Path | None = None,
    plot_path: str | Path | None = None,
) -> dict:
    fs = model.feature_set
    rule = fs.rule_from_meta(model.meta["label_rule"])
    ds = build_dataset(bars, model.buckets, model.cluster, rule, fs=fs, bar_ms=model.bar_ms)
    start = since_ms if since_ms is not None else int(model.meta["split"]["test_start_ms"])
    before = ds[ds["time_ms"] < start]
    after = ds[ds["time_ms"] >= start]
    if after.empty:
        raise ValueError("no bars at or after the evaluation start; pass older --since")
    if before["y"].nunique() < 2:
        raise ValueError("baselines need bars with and without cascades before the start")
    res = evaluate_period(model.clf, fit_baselines(before), after, fs)
    report = {
        "model_version": model.version,
        "label_rule": rule.to_meta(),
        "eval_start_ms": start,
        "eval_span": [int(after["time_ms"].min()), int(after["time_ms"].max())],
        "symbols": int(after["symbol"].nunique()),
        **res,
    }
    if report_path:
        Path(report_path).write_text(json.dumps(report, indent=1, default=float))
    if plot_path:
        reliability_plot(report, plot_path)
    return report


def reliability_plot(report: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
    for name, style in (("model", "o-"), ("volatility", "s--"), ("momentum", "^:")):
        if name not in report:
            continue
        rel = report[name]["reliability"]
        ax.plot([r["mean_p"] for r in rel], [r["observed"] for r in rel], style, label=name)
    top = max(0.05, *(max(r["mean_p"], r["observed"]) for r in report["model"]["reliability"]))
    ax.set_xlim(0, min(1.0, top * 1.2))
    ax.set_ylim(0, min(1.0, top * 1.2))
    ax.set_xlabel("forecast probability")
    ax.set_ylabel("observed cascade frequency")
    m = report["model"]
    ax.set_title(f"{report['model_version']}\nAUC {m['auc'] or np.nan:.3f}  Brier {m['brier']:.4f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
