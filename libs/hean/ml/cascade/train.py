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

from hean.ml.cascade.features import FEATURES, ClusterConfig, compute_features
from hean.ml.cascade.labels import NONE, LabelRule, next_bar_labels
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
    rule: LabelRule | None = None,
) -> pd.DataFrame:
    """Features, next-bar label and the current bar's own label (for persistence), per row."""
    rule = rule or LabelRule()
    parts = []
    for sym, g in bars.groupby("symbol", sort=True):
        g = g.sort_values("time_ms")
        f = compute_features(g, bks, cluster)
        lab = next_bar_labels(g, rule)
        parts.append(
            pd.DataFrame({"symbol": sym, "time_ms": g["time_ms"].to_numpy()}, index=g.index)
            .join(f)
            .assign(label=lab, prev_label=lab.shift(1))
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


def periods(ds: pd.DataFrame, cal_start: int, test_start: int) -> dict[str, pd.DataFrame]:
    t = ds["time_ms"]
    train = ds[t < cal_start]
    cal = ds[(t >= cal_start) & (t < test_start)]
    test = ds[t >= test_start]
    # embargo: a row's label is the next bar, which belongs to the next period
    train = train[train["time_ms"] < train["time_ms"].max()]
    cal = cal[cal["time_ms"] < cal["time_ms"].max()]
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


def _x(df: pd.DataFrame) -> np.ndarray:
    return df[list(FEATURES)].to_numpy(float)


def time_cv(train: pd.DataFrame, cfg: TrainConfig) -> list[dict[str, float | None]]:
    """Walk-forward AUC of the uncalibrated forest and the volatility baseline."""
    u = np.unique(train["time_ms"])
    out = []
    for fit_idx, val_idx in TimeSeriesSplit(n_splits=cfg.cv_splits).split(u):
        a = train[train["time_ms"].isin(u[fit_idx[:-1]])]
        b = train[train["time_ms"].isin(u[val_idx])]
        if a["y"].nunique() < 2 or b["y"].nunique() < 2:
            out.append({"n": len(b), "auc_model": None, "auc_volatility": None})
            continue
        rf = _forest(cfg).fit(_x(a), a["label"])
        p = 1.0 - class_probs(rf, _x(b))[:, NONE]
        vol = b["vol_7"].fillna(-1.0)
        out.append(
            {
                "n": len(b),
                "auc_model": float(roc_auc_score(b["y"], p)),
                "auc_volatility": float(roc_auc_score(b["y"], vol)),
            }
        )
    return out


def evaluate_period(clf, base: Baselines, df: pd.DataFrame) -> dict[str, object]:
    """Model and baselines on one period, plus direction accuracy on the true cascades."""
    probs = class_probs(clf, _x(df))
    p = 1.0 - probs[:, NONE]
    res: dict[str, object] = {"model": score(df["y"].to_numpy(), p)}
    for name, q in base.predict(df["prev_y"].to_numpy(), df["vol_7"].to_numpy()).items():
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
    rule: LabelRule | None = None,
    bar_ms: int = 86_400_000,
    data_source: str = "",
    progress: Callable[[str], None] = lambda _: None,
) -> dict:
    """Fit, calibrate, score against baselines and write the artifact; returns its meta."""
    import joblib

    cfg = cfg or TrainConfig()
    bks = bks or buckets()
    cluster = cluster or ClusterConfig()
    rule = rule or LabelRule()
    progress(f"features for {bars['symbol'].nunique()} symbols, {len(bars)} bars")
    ds = build_dataset(bars, bks, cluster, rule)
    cal_start, test_start = split_times(ds["time_ms"].to_numpy(), cfg.train_frac, cfg.calib_frac)
    per = periods(ds, cal_start, test_start)
    for name, df in per.items():
        if df["y"].nunique() < 2:
            raise ValueError(f"{name} period has a single class; more data or a looser label")
    progress("time-ordered cross-validation")
    cv = time_cv(per["train"], cfg)
    progress("fitting forest and calibration")
    rf = _forest(cfg).fit(_x(per["train"]), per["train"]["label"])
    clf = CalibratedClassifierCV(FrozenEstimator(rf), method="sigmoid")
    clf.fit(_x(per["calibration"]), per["calibration"]["label"])
    base = Baselines(per["train"]["y"], per["train"]["prev_y"], per["train"]["vol_7"])
    test = evaluate_period(clf, base, per["test"])
    stamp = datetime.now(UTC)
    rev = _git_revision()
    meta = {
        "version": f"cascade-rf-{stamp:%Y%m%dT%H%M%SZ}-{rev[:7]}",
        "created_utc": stamp.isoformat(),
        "git_revision": rev,
        "model": "RandomForestClassifier + sigmoid calibration (classes none/down/up)",
        "features": list(FEATURES),
        "bar_ms": bar_ms,
        "min_bars": 2,
        "label_rule": rule.to_meta(),
        "leverage_buckets": to_meta(bks),
        "cluster": asdict(cluster),
        "train_config": asdict(cfg),
        "data_source": data_source,
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
            zip(FEATURES, (float(x) for x in rf.feature_importances_), strict=True)
        ),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(clf, out / WEIGHTS, compress=3)
    (out / META).write_text(json.dumps(meta, indent=1, default=float))
    return meta
