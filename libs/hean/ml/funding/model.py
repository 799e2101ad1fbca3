"""The LSTM, its artifact on disk, and batched inference for many symbols at once.

The network reads the last ``seq_len`` settlements' features of one series and predicts the
change of the rate (bps per 8 h) to the next settlement; the forecast is the current rate plus
that change, converted back to the series' own interval. Predicting the change keeps
persistence ("next = current") as the network's natural starting point.

Artifact (one directory): ``model.pt`` (state dict of one LSTM or of a seed ensemble),
``meta.json`` (version, features, scaling and shrinkage, sequence length, ensemble size,
calibration, data span, walk-forward and held-out metrics, git revision).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hean.ml.funding.calibration import Calibration
from hean.ml.funding.data import clean_frame
from hean.ml.funding.features import add_features, run_lengths
from hean.ml.funding.policy import ActionPolicy

META = "meta.json"
WEIGHTS = "model.pt"
FEATURE_CLIP = 10.0
"""Scaled features are clipped to +-10 standard deviations (crash-time outliers)."""
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "artifacts" / "funding"


class ModelLoadError(RuntimeError):
    """No loadable artifact in a directory; the message says what is missing or broken."""


def build_net(n_features: int, hidden: int, members: int = 1):
    """One LSTM, or ``members`` of them whose predictions are averaged (seed ensemble)."""
    import torch
    from torch import nn

    class FundingLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(x)
            return self.head(out[:, -1, :]).squeeze(-1)

    if members == 1:
        return FundingLSTM()

    class FundingEnsemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(FundingLSTM() for _ in range(members))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([m(x) for m in self.members]).mean(dim=0)

    return FundingEnsemble()


def find_artifact(path: str | Path) -> Path:
    """The artifact in ``path``, or the newest one among its subdirectories."""
    p = Path(path)
    if (p / META).exists():
        return p
    found = sorted(
        (d for d in p.glob("*") if (d / META).exists()), key=lambda d: (d / META).stat().st_mtime
    )
    if not found:
        raise ModelLoadError(f"{p}: no {META} here or in a subdirectory")
    return found[-1]


@dataclass
class Forecast:
    venue: str
    symbol: str
    interval_hours: float
    time_ms: int
    current_rate: float
    predicted_rate: float
    lower_rate: float
    upper_rate: float
    confidence: float
    action: str
    model_version: str
    for_funding_ms: int


@dataclass
class SeriesHistory:
    """Settled history of one series, oldest first; ``oi`` / ``price`` optional, NaN allowed."""

    venue: str
    symbol: str
    times_ms: list[int]
    rates: list[float]
    interval_hours: list[float]
    oi: list[float] | None = None
    price: list[float] | None = None


def histories_frame(histories: list[SeriesHistory]) -> pd.DataFrame:
    lengths = [len(h.times_ms) for h in histories]
    cols: dict[str, object] = {
        "funding_time_utc": pd.to_datetime(
            np.concatenate([np.asarray(h.times_ms, dtype="int64") for h in histories]),
            unit="ms",
            utc=True,
        ),
        "exchange": np.repeat([h.venue for h in histories], lengths),
        "symbol": np.repeat([h.symbol for h in histories], lengths),
        "funding_rate": np.concatenate([np.asarray(h.rates, dtype=float) for h in histories]),
        "interval_hours": np.concatenate(
            [np.asarray(h.interval_hours, dtype=float) for h in histories]
        ),
    }
    for name, attr in (("open_interest", "oi"), ("price", "price")):
        if any(getattr(h, attr) is not None for h in histories):
            cols[name] = np.concatenate(
                [
                    np.asarray(getattr(h, attr), dtype=float)
                    if getattr(h, attr) is not None
                    else np.full(n, np.nan)
                    for h, n in zip(histories, lengths, strict=True)
                ]
            )
    return clean_frame(pd.DataFrame(cols))


class FundingForecaster:
    """A loaded artifact: scaled features in, forecasts with intervals and actions out."""

    def __init__(self, meta: dict, state_dict: dict, policy: ActionPolicy | None = None) -> None:
        import torch

        self.meta = meta
        self.version: str = meta["version"]
        self.features: list[str] = meta["features"]
        self.seq_len: int = int(meta["seq_len"])
        self.mean = np.asarray(meta["scaling"]["mean"], dtype=np.float32)
        self.std = np.asarray(meta["scaling"]["std"], dtype=np.float32)
        # the network's output in target units, shrunk towards persistence by ``shrink``
        self.target_scale = float(meta["scaling"]["target_std"]) * float(
            meta["scaling"].get("shrink", 1.0)
        )
        self.calibration = Calibration.from_json(meta["calibration"])
        self.policy = policy or ActionPolicy()
        self.net = build_net(len(self.features), int(meta["hidden"]), int(meta.get("members", 1)))
        self.net.load_state_dict(state_dict)
        self.net.eval()
        self._torch = torch

    @classmethod
    def load(cls, path: str | Path = DEFAULT_DIR, policy: ActionPolicy | None = None):
        import torch

        d = find_artifact(path)
        try:
            meta = json.loads((d / META).read_text())
            state = torch.load(d / WEIGHTS, map_location="cpu", weights_only=True)
            return cls(meta, state, policy)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"{d}: cannot load artifact: {exc}") from exc

    # ------------------------------------------------------------------ core inference

    def matrix(self, df: pd.DataFrame) -> np.ndarray:
        """Scaled feature matrix; features the table lacks are refused, not invented."""
        missing = [f for f in self.features if f not in df.columns]
        if missing:
            raise ValueError(
                f"data lacks features the model was trained with: {', '.join(missing)}"
            )
        x = df[self.features].to_numpy(dtype=np.float32)
        clip = float(self.meta.get("feature_clip", FEATURE_CLIP))
        return np.clip(np.nan_to_num((x - self.mean) / self.std), -clip, clip)

    def predict_rows(self, x: np.ndarray, df: pd.DataFrame, ends: np.ndarray) -> np.ndarray:
        """Forecast next rate (bps per 8 h) for the sequences ending at rows ``ends``."""
        torch = self._torch
        out = np.empty(len(ends), dtype=np.float64)
        offsets = np.arange(self.seq_len - 1, -1, -1)
        xt = torch.from_numpy(np.nan_to_num(x))
        with torch.inference_mode():
            for start in range(0, len(ends), 4096):
                idx = ends[start : start + 4096]
                batch = xt[torch.from_numpy(idx[:, None] - offsets[None, :])]
                out[start : start + len(idx)] = self.net(batch).numpy() * self.target_scale
        return df["rate_bps8"].to_numpy()[ends] + out

    def forecasts_at(self, df: pd.DataFrame, ends: np.ndarray) -> list[Forecast]:
        x = self.matrix(df)
        pred8 = self.predict_rows(x, df, ends)
        venue = df["venue"].to_numpy()[ends]
        symbol = df["symbol"].to_numpy()[ends]
        interval = df["interval_hours"].to_numpy()[ends]
        time_ms = df["time_ms"].to_numpy()[ends]
        rate = df["rate"].to_numpy()[ends]
        rate8 = df["rate_bps8"].to_numpy()[ends]
        out = []
        for k, p8 in enumerate(pred8.tolist()):
            ih = float(interval[k])
            pred_bps = p8 * ih / 8.0
            lo, hi, conf = self.calibration.interval(pred_bps, venue[k], ih)
            out.append(
                Forecast(
                    venue=str(venue[k]),
                    symbol=str(symbol[k]),
                    interval_hours=ih,
                    time_ms=int(time_ms[k]),
                    current_rate=float(rate[k]),
                    predicted_rate=_clip(pred_bps / 1e4),
                    lower_rate=_clip(lo / 1e4),
                    upper_rate=_clip(hi / 1e4),
                    confidence=conf,
                    action=self.policy.decide(float(rate8[k]), p8, conf),
                    model_version=self.version,
                    for_funding_ms=int(time_ms[k] + ih * 3_600_000),
                )
            )
        return out

    def predict_batch(self, histories: list[SeriesHistory]) -> list[Forecast | None]:
        """One forecast per history (aligned with the input), None where history is too short.

        All series go through one feature pass and one network call; histories of the same
        symbol on different venues supply each other's cross-venue spread.
        """
        if not histories:
            return []
        df = add_features(histories_frame(histories))
        run = run_lengths(df, self.features)
        last = df.groupby("series", sort=False).tail(1)
        ends_by_series = {
            s: i for s, i in zip(last["series"], last.index, strict=True) if run[i] >= self.seq_len
        }
        ends = np.asarray(sorted(ends_by_series.values()), dtype=np.int64)
        by_series = {}
        if len(ends):
            for f in self.forecasts_at(df, ends):
                by_series[f"{f.venue}|{f.symbol}"] = f
        from hean.ml.funding.data import canonical_symbol

        return [by_series.get(f"{h.venue.lower()}|{canonical_symbol(h.symbol)}") for h in histories]


def _clip(x: float) -> float:
    return float(min(1.0, max(-1.0, x)))
