"""Walk-forward: the model serving each window was trained only on data before it.

At the start of every window (``window_days`` from the start of the range) the model is trained
again with its live training code on what was known strictly before the window's start, and
swapped into the live predictor the way the service hot-reloads a model. Two models do this:

* the funding LSTM (``WalkForward``), trained by ``hean.ml.funding.train.train_model`` on the
  settlements before the window. Full training (four folds and a final fit of up to 20 epochs
  over up to 100,000 sequences) takes minutes per window, so the default here is a smaller
  configuration: ``epochs=3``, ``max_train=20,000`` sequences per epoch, two folds, the same
  architecture. The report lists it with every window's model;
* the daily cascade RandomForest (``CascadeWalkForward``), trained by
  ``hean.ml.cascade.train.train_model`` on the daily bars that had closed before the window,
  with the recipe (label rule, forest settings, leverage buckets, cluster settings) of the
  model it replaces. A bar's label is the next bar, so the newest bar before a window has no
  label and is not a training row: no label reaches past the window's start.

Model versions are named from the window start and a digest of the weights, so the same inputs
give the same names.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from hean.ml.funding.train import TrainConfig

log = logging.getLogger("hean.backtest")

DAY_MS = 86_400_000


def small_config() -> TrainConfig:
    return TrainConfig(epochs=3, max_train=20_000, folds=2)


def _utc(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


class _Windows:
    """Window boundaries and the bookkeeping of which model served which window."""

    def __init__(self, start_ms: int, window_days: float) -> None:
        if window_days <= 0:
            raise ValueError("walk-forward window must be > 0 days")
        self.start_ms = start_ms
        self.window_days = window_days
        self.next_ms = start_ms

    @property
    def window_ms(self) -> int:
        return int(self.window_days * DAY_MS)

    def maybe_retrain(self, now_ms: int, logic: Any, replay: Any) -> None:
        """Before the first event of a new window: train on the past, swap the model in."""
        if now_ms < self.next_ms:
            return
        k = (now_ms - self.start_ms) // self.window_ms
        boundary = self.start_ms + k * self.window_ms
        self.next_ms = boundary + self.window_ms
        if replay.models:
            replay.models[-1]["to_ms"] = boundary
        entry = self.train_until(boundary)
        entry["from_ms"] = boundary
        entry["from_utc"] = _utc(boundary)
        entry["to_ms"] = None
        model = entry.pop("model")
        replay.models.append(entry)
        self.swap(logic, model)

    def train_until(self, boundary_ms: int) -> dict[str, Any]:
        raise NotImplementedError

    def swap(self, logic: Any, model: Any) -> None:
        raise NotImplementedError


class WalkForward(_Windows):
    """The funding LSTM, retrained per window on the settlements before it."""

    def __init__(
        self,
        frame: pd.DataFrame,
        start_ms: int,
        window_days: float = 30.0,
        train: TrainConfig | None = None,
    ) -> None:
        """``frame``: raw settlements (normalised table layout), at least everything before the
        range end."""
        self.frame = frame
        self.train = train or small_config()
        _Windows.__init__(self, start_ms, window_days)
        times = pd.to_datetime(self.frame["funding_time_utc"], utc=True)
        self._times_ms = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)

    def swap(self, logic: Any, model: Any) -> None:
        logic.set_forecaster(model)

    def train_until(self, boundary_ms: int) -> dict[str, Any]:
        from hean.ml.funding.data import clean_frame
        from hean.ml.funding.model import FundingForecaster
        from hean.ml.funding.train import train_model

        past = self.frame[(self._times_ms < boundary_ms).to_numpy()]
        cleaned = clean_frame(past)
        with tempfile.TemporaryDirectory() as tmp:
            meta = train_model(cleaned, tmp, self.train, progress=log.debug, data_source="history")
            forecaster = FundingForecaster.load(tmp)
        digest = hashlib.sha256()
        for name, tensor in sorted(forecaster.net.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.numpy().tobytes())
        day = pd.Timestamp(boundary_ms, unit="ms", tz="UTC").strftime("%Y%m%d")
        version = f"funding-lstm-wf{day}-{digest.hexdigest()[:8]}"
        forecaster.version = version
        forecaster.meta["version"] = version
        return {
            "version": version,
            "trained_on_rows": len(cleaned),
            "trained_on": f"{len(cleaned)} settlements before it, {self.train.epochs} epochs",
            "trained_until_ms": boundary_ms,
            "last_row_utc": meta["data"]["last_utc"],
            "best_epoch": meta["best_epoch"],
            "train_config": {
                "epochs": self.train.epochs,
                "max_train": self.train.max_train,
                "hidden": self.train.hidden,
                "seq_len": self.train.seq_len,
            },
            "metrics_test": meta.get("metrics_test", {}).get("overall", {}),
            "model": forecaster,
        }


class CascadeWalkForward(_Windows):
    """The daily cascade model, retrained per window on the bars closed before it."""

    def __init__(
        self, bars: pd.DataFrame, start_ms: int, recipe: Any, window_days: float = 30.0
    ) -> None:
        """``bars``: daily bars as ``hean.ml.cascade.data.load_bars`` gives them (any symbols,
        at least everything before the range end); ``recipe``: the ``CascadeModel`` whose
        training settings each window's model repeats."""
        _Windows.__init__(self, start_ms, window_days)
        if int(recipe.bar_ms) != DAY_MS:
            raise ValueError(f"cascade walk-forward needs a daily model; {recipe.version} is not")
        self.bars = bars
        self.recipe = recipe

    def swap(self, logic: Any, model: Any) -> None:
        logic.set_model(model)

    def known_before(self, boundary_ms: int) -> pd.DataFrame:
        """Bars that had closed (with their open interest) before ``boundary_ms``."""
        return self.bars[(self.bars["time_ms"] + DAY_MS <= boundary_ms).to_numpy()]

    def train_until(self, boundary_ms: int) -> dict[str, Any]:
        from hean.ml.cascade.features import ClusterConfig
        from hean.ml.cascade.featuresets import feature_set
        from hean.ml.cascade.labels import LabelRule
        from hean.ml.cascade.model import WEIGHTS, CascadeModel
        from hean.ml.cascade.tiers import from_meta
        from hean.ml.cascade.train import TrainConfig as ForestConfig
        from hean.ml.cascade.train import train_model

        meta0 = self.recipe.meta
        cfg = replace(ForestConfig(), **meta0.get("train_config", {}))
        past = self.known_before(boundary_ms)
        start = pd.Timestamp(boundary_ms, unit="ms", tz="UTC")
        day = start.strftime("%Y%m%d")
        if past.empty:
            raise ValueError(f"walk-forward: no daily bars before {start:%Y-%m-%d} to train on")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                meta = train_model(
                    past,
                    tmp,
                    cfg,
                    bks=from_meta(meta0["leverage_buckets"]),
                    cluster=ClusterConfig(**meta0["cluster"]),
                    rule=LabelRule(**meta0.get("label_rule", {})),
                    bar_ms=DAY_MS,
                    fs=feature_set(meta0.get("feature_set", "daily")),
                    data_source=f"walk-forward: daily bars before {start:%Y-%m-%d}",
                    progress=log.debug,
                )
            except ValueError as exc:
                first = pd.Timestamp(int(past["time_ms"].min()), unit="ms", tz="UTC")
                raise ValueError(
                    f"walk-forward: cannot train the cascade model on the {len(past)} daily "
                    f"bars from {first:%Y-%m-%d} to before {start:%Y-%m-%d}: {exc}; "
                    "start the range later"
                ) from None
            digest = hashlib.sha256(Path(tmp, WEIGHTS).read_bytes()).hexdigest()[:8]
            model = CascadeModel.load(tmp)
        version = f"cascade-rf-wf{day}-{digest}"
        model.version = version
        model.meta["version"] = version
        test = meta.get("metrics_test", {})
        auc = (test.get("model") or {}).get("auc")
        last = int(past["time_ms"].max())
        return {
            "version": version,
            "trained_on_rows": int(meta["split"]["rows"]["train"]),
            "trained_on_bars": len(past),
            "trained_on": f"{len(past)} daily bars closed before it"
            + (f", held-out AUC {auc:.3f}" if auc is not None else ""),
            "trained_until_ms": boundary_ms,
            "last_bar_ms": last,
            "last_row_utc": _utc(last),
            "split": meta["split"],
            "train_config": meta["train_config"],
            "label_rule": meta["label_rule"],
            "metrics_test": {
                k: {"auc": v["auc"], "brier": v["brier"]}
                for k, v in test.items()
                if isinstance(v, dict) and "auc" in v
            },
            "model": model,
        }
