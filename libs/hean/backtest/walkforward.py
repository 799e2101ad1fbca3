"""Walk-forward: the funding model serving each window was trained only on data before it.

At the start of every window (``window_days`` from the start of the range) the funding LSTM
is trained again with the live training code (``hean.ml.funding.train.train_model``) on the
settlements strictly before the window's start, and swapped into the live predictor the way
the service hot-reloads a model. Training splits by time inside that past as it always does
(walk-forward folds, then a final fit).

Full training (four folds and a final fit of up to 20 epochs over up to 100,000 sequences)
takes minutes per window, so the default here is a smaller configuration: ``epochs=3``,
``max_train=20,000`` sequences per epoch, two folds, the same architecture. The report lists
it with every window's model. Model versions are named from the window start and a digest of
the weights, so the same inputs give the same names.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from hean.ml.funding.train import TrainConfig

log = logging.getLogger("hean.backtest")

DAY_MS = 86_400_000


def small_config() -> TrainConfig:
    return TrainConfig(epochs=3, max_train=20_000, folds=2)


@dataclass
class WalkForward:
    frame: pd.DataFrame
    """Raw settlements (normalised table layout), at least everything before the range end."""
    start_ms: int
    window_days: float = 30.0
    train: TrainConfig = field(default_factory=small_config)
    next_ms: int = -1

    def __post_init__(self) -> None:
        if self.window_days <= 0:
            raise ValueError("walk-forward window must be > 0 days")
        self.next_ms = self.start_ms
        times = pd.to_datetime(self.frame["funding_time_utc"], utc=True)
        self._times_ms = (times - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)

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
        entry["from_utc"] = pd.Timestamp(boundary, unit="ms", tz="UTC").isoformat()
        entry["to_ms"] = None
        replay.models.append(entry)
        logic.set_forecaster(entry.pop("forecaster"))

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
            "forecaster": forecaster,
        }
