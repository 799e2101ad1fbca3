"""Scores forecasts against persistence and EWMA, overall and by venue and by interval.

Errors are in basis points of the rate per the series' own interval (what is actually paid).
``skill_ratio`` is model MAE / persistence MAE (below 1 beats "next = current").
``directional_accuracy`` counts rows whose realised rate is non-zero. ``coverage`` is the share
of realised rates inside the stated interval (nominal value in ``nominal_coverage``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from hean.ml.funding.baselines import ewma_bps8, persistence_bps8
from hean.ml.funding.calibration import Calibration


def _metrics(actual: np.ndarray, preds: dict[str, np.ndarray]) -> dict:
    out: dict = {"n": len(actual)}
    nz = actual != 0
    for name, p in preds.items():
        err = p - actual
        out[name] = {
            "mae_bps": float(np.mean(np.abs(err))),
            "rmse_bps": float(np.sqrt(np.mean(err**2))),
            "directional_accuracy": float(np.mean(np.sign(p[nz]) == np.sign(actual[nz])))
            if nz.any()
            else None,
        }
    pm = out["persistence"]["mae_bps"]
    out["skill_ratio"] = out["model"]["mae_bps"] / pm if pm > 0 else None
    out["skill_ratio_vs_ewma"] = (
        out["model"]["mae_bps"] / out["ewma"]["mae_bps"] if out["ewma"]["mae_bps"] > 0 else None
    )
    return out


def score(
    df: pd.DataFrame,
    ends: np.ndarray,
    pred8: np.ndarray,
    nxt8: np.ndarray,
    calibration: Calibration,
) -> dict:
    interval = df["interval_hours"].to_numpy()[ends]
    venues = df["venue"].to_numpy()[ends]
    scale = interval / 8.0
    actual = nxt8[ends] * scale
    model = pred8 * scale
    preds = {
        "model": model,
        "persistence": persistence_bps8(df, ends) * scale,
        "ewma": ewma_bps8(df, ends) * scale,
    }
    bounds = [
        calibration.interval(p, v, i) for p, v, i in zip(model, venues, interval, strict=True)
    ]
    lo = np.array([b[0] for b in bounds])
    hi = np.array([b[1] for b in bounds])
    conf = np.array([b[2] for b in bounds])
    inside = (actual >= lo) & (actual <= hi)

    def block(mask: np.ndarray) -> dict:
        m = _metrics(actual[mask], {k: v[mask] for k, v in preds.items()})
        m["coverage"] = float(inside[mask].mean())
        m["mean_interval_width_bps"] = float(np.mean(hi[mask] - lo[mask]))
        m["mean_confidence"] = float(conf[mask].mean())
        nz = actual[mask] != 0
        sign_ok = np.sign(model[mask][nz]) == np.sign(actual[mask][nz])
        m["sign_hit_rate_at_confidence_ge_0.6"] = (
            float(sign_ok[conf[mask][nz] >= 0.6].mean()) if (conf[mask][nz] >= 0.6).any() else None
        )
        return m

    everything = np.ones(len(ends), dtype=bool)
    report = {"overall": block(everything), "nominal_coverage": calibration.coverage}
    report["by_venue"] = {v: block(venues == v) for v in sorted(set(venues))}
    report["by_interval"] = {f"{i:g}h": block(interval == i) for i in sorted(set(interval))}
    return report


def evaluate_model(
    forecaster,
    frame: pd.DataFrame,
    *,
    last_fraction: float = 0.0,
    report_path: str | Path | None = None,
    plot_path: str | Path | None = None,
) -> dict:
    """Score a loaded model on a table; ``last_fraction`` keeps only the newest share by time."""
    from hean.ml.funding.features import add_features
    from hean.ml.funding.train import eligible_ends

    df = add_features(frame)
    ends, nxt = eligible_ends(df, forecaster.features, forecaster.seq_len)
    t = df["time_ms"].to_numpy()
    cutoff = None
    if last_fraction > 0 and len(ends):
        cutoff = int(np.quantile(t[ends], 1 - last_fraction))
        ends = ends[t[ends] >= cutoff]
    if not len(ends):
        raise ValueError("no complete sequences with a following settlement in this data")
    pred8 = forecaster.predict_rows(forecaster.matrix(df), df, ends)
    report = score(df, ends, pred8, nxt, forecaster.calibration)
    report["model_version"] = forecaster.version
    report["model_trained_until_utc"] = forecaster.meta.get("data", {}).get("test_from_utc")
    report["data"] = {
        "settlements": len(df),
        "series": int(df["series"].nunique()),
        "scored_from_ms": int(t[ends].min()),
        "scored_until_ms": int(t[ends].max()),
        "last_fraction": last_fraction,
        "dropped_rows": int(frame.attrs.get("dropped_rows", 0)),
    }
    if report_path:
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(json.dumps(report, indent=1))
    if plot_path:
        plot(df, ends, pred8, nxt, plot_path)
    return report


def plot(df: pd.DataFrame, ends: np.ndarray, pred8: np.ndarray, nxt8: np.ndarray, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = df["series"].to_numpy()[ends]
    counts = pd.Series(series).value_counts()
    shown = list(counts.index[:3])
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(10, 3 * (len(shown) + 1)))
    axes = np.atleast_1d(axes)
    scale = df["interval_hours"].to_numpy()[ends] / 8.0
    times = pd.to_datetime(df["time_ms"].to_numpy()[ends], unit="ms")
    for ax, s in zip(axes, shown, strict=False):
        m = np.flatnonzero(series == s)[-200:]
        ax.plot(times[m], nxt8[ends][m] * scale[m], label="realised", lw=1)
        ax.plot(times[m], pred8[m] * scale[m], label="forecast", lw=1)
        ax.plot(
            times[m],
            df["rate_bps8"].to_numpy()[ends][m] * scale[m],
            label="persistence",
            lw=0.8,
            alpha=0.6,
        )
        ax.set_title(f"{s}: next funding rate (bps per interval)")
        ax.legend(loc="upper left", fontsize=8)
    err_model = (pred8 - nxt8[ends]) * scale
    err_pers = (df["rate_bps8"].to_numpy()[ends] - nxt8[ends]) * scale
    lim = np.quantile(np.abs(np.concatenate([err_model, err_pers])), 0.99) or 1.0
    bins = np.linspace(-lim, lim, 81)
    axes[-1].hist(err_pers, bins=bins, alpha=0.5, label="persistence")
    axes[-1].hist(err_model, bins=bins, alpha=0.5, label="model")
    axes[-1].set_title("forecast error distribution (bps per interval)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
