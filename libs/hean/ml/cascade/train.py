"""Training: features and labels per symbol, time-ordered split, RandomForest, calibration.

Split by time over all symbols at once: the oldest 60 % of bar times train the forest (with
time-ordered cross-validation inside it), the next 15 % fit the probability calibration
(sigmoid, on the frozen forest), the newest 25 % are held out for the report. The last bar of
each period is dropped because its label is the first bar of the next period.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import TimeSeriesSplit

from hean.ml.cascade.features import ClusterConfig
from hean.ml.cascade.featuresets import DAILY, DAY_MS, FeatureSet, baseline_inputs
from hean.ml.cascade.labels import DIRECTIONS, NONE
from hean.ml.cascade.metrics import Baselines, score
from hean.ml.cascade.model import META, WEIGHTS, class_probs
from hean.ml.cascade.tiers import LeverageBucket, buckets, to_meta


@dataclass(frozen=True)
class TrainConfig:
    n_estimators: int = 150
    max_depth: int = 6
    min_samples_leaf: int = 20
    train_frac: float = 0.60
    calib_frac: float = 0.15
    cv_splits: int = 4
    seed: int = 7
    n_jobs: int = 1


def build_dataset(
    bars: pd.DataFrame,
    bks: list[LeverageBucket] | None = None,
    cluster: ClusterConfig | None = None,
    rule=None,
    *,
    fs: FeatureSet = DAILY,
    bar_ms: int = DAY_MS,
) -> pd.DataFrame:
    """Features, label, the baselines' inputs and the newest label already known at the row
    (the window that ended at it, for persistence), per row."""
    rule = rule or fs.default_rule()
    h = fs.horizon_bars(bar_ms, rule)
    parts = []
    for sym, g in bars.groupby("symbol", sort=True):
        g = g.sort_values("time_ms")
        f = fs.compute(g, bar_ms, bks, cluster)
        lab = fs.labels(g, bar_ms, rule)
        parts.append(
            pd.DataFrame({"symbol": sym, "time_ms": g["time_ms"].to_numpy()}, index=g.index)
            .join(f)
            .join(baseline_inputs(g, fs, bar_ms))
            .assign(label=lab, prev_label=lab.shift(h))
        )
    ds = pd.concat(parts).dropna(subset=["label"])
    ds["label"] = ds["label"].astype(int)
    ds["y"] = (ds["label"] != NONE).astype(int)
    ds["prev_y"] = np.where(ds["prev_label"].isna(), np.nan, (ds["prev_label"] != NONE) * 1.0)
    return ds.sort_values(["time_ms", "symbol"]).reset_index(drop=True)


def split_times(times: np.ndarray, train_frac: float, calib_frac: float) -> tuple[int, int]:
    """Bar times where calibration and test periods start."""
    u = np.unique(times)
    if len(u) < 20:
        raise ValueError(f"only {len(u)} distinct bar times; need at least 20 to split")
    return int(u[int(len(u) * train_frac)]), int(u[int(len(u) * (train_frac + calib_frac))])


def periods(
    ds: pd.DataFrame, cal_start: int, test_start: int, embargo_ms: int = DAY_MS
) -> dict[str, pd.DataFrame]:
    """Train, calibration and test rows; ``embargo_ms`` (the label's look-ahead) is cut from
    the end of the first two, whose last labels would otherwise see into the next period."""
    t = ds["time_ms"]
    train = ds[t < cal_start]
    cal = ds[(t >= cal_start) & (t < test_start)]
    test = ds[t >= test_start]
    train = train[train["time_ms"] <= train["time_ms"].max() - embargo_ms]
    cal = cal[cal["time_ms"] <= cal["time_ms"].max() - embargo_ms]
    return {"train": train, "calibration": cal, "test": test}


def _forest(cfg: TrainConfig) -> RandomForestClassifier:
    return RandomForestClassifier(
        n_estimators=cfg.n_estimators,
        max_depth=cfg.max_depth,
        min_samples_leaf=cfg.min_samples_leaf,
        class_weight="balanced_subsample",
        random_state=cfg.seed,
        n_jobs=cfg.n_jobs,
    )


def _x(df: pd.DataFrame, fs: FeatureSet) -> np.ndarray:
    return df[list(fs.features)].to_numpy(float)


def time_cv(
    train: pd.DataFrame, cfg: TrainConfig, fs: FeatureSet = DAILY, embargo_bars: int = 1
) -> list[dict[str, float | None]]:
    """Walk-forward AUC of the uncalibrated forest and the volatility baseline."""
    u = np.unique(train["time_ms"])
    out = []
    for fit_idx, val_idx in TimeSeriesSplit(n_splits=cfg.cv_splits).split(u):
        a = train[train["time_ms"].isin(u[fit_idx[:-embargo_bars]])]
        b = train[train["time_ms"].isin(u[val_idx])]
        if a["y"].nunique() < 2 or b["y"].nunique() < 2:
            out.append({"n": len(b), "auc_model": None, "auc_volatility": None})
            continue
        rf = _forest(cfg).fit(_x(a, fs), a["label"])
        p = 1.0 - class_probs(rf, _x(b, fs))[:, NONE]
        vol = b["base_vol"].fillna(-1.0)
        out.append(
            {
                "n": len(b),
                "auc_model": float(roc_auc_score(b["y"], p)),
                "auc_volatility": float(roc_auc_score(b["y"], vol)),
            }
        )
    return out


def fit_baselines(df: pd.DataFrame) -> Baselines:
    return Baselines(df["y"], df["prev_y"], df["base_vol"], df["base_momentum"])


def evaluate_period(
    clf, base: Baselines, df: pd.DataFrame, fs: FeatureSet = DAILY
) -> dict[str, object]:
    """Model and baselines on one period, plus direction accuracy on the true cascades."""
    probs = class_probs(clf, _x(df, fs))
    p = 1.0 - probs[:, NONE]
    res: dict[str, object] = {"model": score(df["y"].to_numpy(), p)}
    preds = base.predict(df["prev_y"].to_numpy(), df["base_vol"], df["base_momentum"])
    for name, q in preds.items():
        res[name] = score(df["y"].to_numpy(), q)
    casc = df["label"].to_numpy() != NONE
    if casc.any():
        pred_dir = np.where(probs[casc, 1] >= probs[casc, 2], 1, 2)
        res["direction_accuracy"] = float((pred_dir == df["label"].to_numpy()[casc]).mean())
    else:
        res["direction_accuracy"] = None
    return res


def _git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def train_model(
    bars: pd.DataFrame,
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    *,
    bks: list[LeverageBucket] | None = None,
    cluster: ClusterConfig | None = None,
    rule=None,
    bar_ms: int = DAY_MS,
    fs: FeatureSet = DAILY,
    data_source: str = "",
    data_kind: str = "real",
    extra_meta: dict | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """Fit, calibrate, score against baselines and write the artifact; returns its meta."""
    import joblib

    cfg = cfg or TrainConfig()
    bks = bks or buckets()
    cluster = cluster or fs.cluster
    rule = rule or fs.default_rule()
    h = fs.horizon_bars(bar_ms, rule)
    progress(f"features for {bars['symbol'].nunique()} symbols, {len(bars)} bars")
    ds = build_dataset(bars, bks, cluster, rule, fs=fs, bar_ms=bar_ms)
    cal_start, test_start = split_times(ds["time_ms"].to_numpy(), cfg.train_frac, cfg.calib_frac)
    per = periods(ds, cal_start, test_start, embargo_ms=h * bar_ms)
    for name, df in per.items():
        if df["y"].nunique() < 2:
            raise ValueError(f"{name} period has a single class; more data or a looser label")
    missing = set(per["train"]["label"]) - set(per["calibration"]["label"])
    if missing:
        names = sorted(DIRECTIONS[int(c)] for c in missing)
        raise ValueError(f"calibration period has no {names} cascades; more data or runs")
    progress("time-ordered cross-validation")
    cv = time_cv(per["train"], cfg, fs, embargo_bars=h)
    progress("fitting forest and calibration")
    rf = _forest(cfg).fit(_x(per["train"], fs), per["train"]["label"])
    clf = CalibratedClassifierCV(FrozenEstimator(rf), method="sigmoid")
    clf.fit(_x(per["calibration"], fs), per["calibration"]["label"])
    base = fit_baselines(per["train"])
    test = evaluate_period(clf, base, per["test"], fs)
    stamp = datetime.now(UTC)
    rev = _git_revision()
    meta = {
        "version": f"cascade-rf-{stamp:%Y%m%dT%H%M%SZ}-{rev[:7]}",
        "created_utc": stamp.isoformat(),
        "git_revision": rev,
        "model": "RandomForestClassifier + sigmoid calibration (classes none/down/up)",
        "feature_set": fs.name,
        "features": list(fs.features),
        "bar_ms": bar_ms,
        "min_bars": fs.min_bars(bar_ms),
        "label_rule": rule.to_meta(),
        "leverage_buckets": to_meta(bks),
        "cluster": asdict(cluster),
        "train_config": asdict(cfg),
        "data_source": data_source,
        "data_kind": data_kind,
        "data_span": {
            "first_ms": int(bars["time_ms"].min()),
            "last_ms": int(bars["time_ms"].max()),
            "symbols": sorted(bars["symbol"].unique().tolist()),
            "rows": len(ds),
        },
        "split": {
            "calibration_start_ms": cal_start,
            "test_start_ms": test_start,
            "rows": {k: len(v) for k, v in per.items()},
        },
        "cv": cv,
        "baselines": {"rate": base.rate, "after": base.after},
        "metrics_test": test,
        "feature_importance": dict(
            zip(fs.features, (float(x) for x in rf.feature_importances_), strict=True)
        ),
        **(extra_meta or {}),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(clf, out / WEIGHTS, compress=3)
    (out / META).write_text(json.dumps(meta, indent=1, default=float))
    return meta
