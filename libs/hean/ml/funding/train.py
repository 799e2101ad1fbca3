"""Walk-forward training by time: train on the past, stop and calibrate on the next block.

Sequence end times are split at fixed quantiles of time (never shuffled rows): the oldest
``1 - val - test`` share trains the network (feature scaling is fitted there only), the next
``val`` share picks the epoch and calibrates the intervals, the newest ``test`` share is held
out and only scored. Epochs sample at most ``max_train`` sequences so a run on the full
shipped history finishes in minutes on two cores.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hean.ml.funding.calibration import Calibration
from hean.ml.funding.features import add_features, feature_names, run_lengths, targets
from hean.ml.funding.model import FEATURE_CLIP, META, WEIGHTS, build_net


@dataclass
class TrainConfig:
    seq_len: int = 16
    hidden: int = 32
    epochs: int = 20
    patience: int = 4
    batch_size: int = 512
    lr: float = 2e-3
    max_train: int = 100_000
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    coverage: float = 0.9
    huber_beta: float = 0.1
    """Near-L1 loss: the evaluation metric is MAE."""
    seed: int = 7
    threads: int = 2


@dataclass
class Split:
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    t_val: int
    t_test: int


def eligible_ends(
    df: pd.DataFrame, names: list[str], seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows that end a complete sequence and have a real next settlement, and the targets."""
    run = run_lengths(df, names)
    nxt, ok = targets(df)
    ends = np.flatnonzero((run >= seq_len) & ok)
    return ends, nxt


def split_by_time(df: pd.DataFrame, ends: np.ndarray, cfg: TrainConfig) -> Split:
    t = df["time_ms"].to_numpy()[ends]
    t_val = int(np.quantile(t, 1 - cfg.val_fraction - cfg.test_fraction))
    t_test = int(np.quantile(t, 1 - cfg.test_fraction))
    return Split(
        train=ends[t < t_val],
        val=ends[(t >= t_val) & (t < t_test)],
        test=ends[t >= t_test],
        t_val=t_val,
        t_test=t_test,
    )


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def train_model(
    frame: pd.DataFrame,
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    progress: Callable[[str], None] = print,
    data_source: str = "",
) -> dict:
    """Train, calibrate, score the held-out block, write the artifact; returns its meta."""
    import torch

    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    started = time.monotonic()

    df = add_features(frame)
    names = feature_names(df)
    ends, nxt = eligible_ends(df, names, cfg.seq_len)
    if len(ends) < 100:
        raise ValueError(
            f"only {len(ends)} complete sequences (need >= 100): history too short "
            f"for seq_len={cfg.seq_len}"
        )
    split = split_by_time(df, ends, cfg)
    progress(
        f"data: {len(df)} settlements, {df['series'].nunique()} series, {len(ends)} sequences; "
        f"train {len(split.train)} < {_iso(split.t_val)} <= val {len(split.val)} "
        f"< {_iso(split.t_test)} <= test {len(split.test)}; features: {', '.join(names)}"
    )
    raw = df[names].to_numpy(dtype=np.float64)
    # scaling from rows the training sequences cover, never from later rows
    train_rows = np.unique((split.train[:, None] - np.arange(cfg.seq_len)[None, :]).ravel())
    mean = np.nanmean(raw[train_rows], axis=0)
    std = np.nanstd(raw[train_rows], axis=0)
    std[~(std > 1e-9)] = 1.0
    scaled = np.clip(np.nan_to_num((raw - mean) / std), -FEATURE_CLIP, FEATURE_CLIP)
    x = torch.from_numpy(scaled.astype(np.float32))
    rate8 = df["rate_bps8"].to_numpy()
    delta = nxt - rate8
    # a robust scale: a few crash-time jumps of hundreds of bps must not set the unit
    train_delta = delta[split.train]
    target_std = float(np.median(np.abs(train_delta - np.median(train_delta))) * 1.4826) or 1.0
    y = torch.from_numpy(np.nan_to_num(delta / target_std).astype(np.float32))
    offsets = torch.arange(cfg.seq_len - 1, -1, -1)

    net = build_net(len(names), cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.SmoothL1Loss(beta=cfg.huber_beta)

    def predict(idx: np.ndarray) -> np.ndarray:
        net.eval()
        out = np.empty(len(idx))
        with torch.inference_mode():
            for s in range(0, len(idx), 8192):
                b = torch.from_numpy(idx[s : s + 8192])
                out[s : s + len(b)] = net(x[b[:, None] - offsets[None, :]]).numpy()
        return rate8[idx] + out * target_std

    def mae_raw(idx: np.ndarray, pred8: np.ndarray) -> float:
        scale = df["interval_hours"].to_numpy()[idx] / 8.0
        return float(np.mean(np.abs((pred8 - nxt[idx]) * scale)))

    persist_val = mae_raw(split.val, rate8[split.val])
    best = (np.inf, None, 0)
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        pick = split.train
        if len(pick) > cfg.max_train:
            pick = rng.choice(pick, cfg.max_train, replace=False)
        pick = rng.permutation(pick)
        total = 0.0
        for s in range(0, len(pick), cfg.batch_size):
            b = torch.from_numpy(pick[s : s + cfg.batch_size])
            opt.zero_grad()
            loss = loss_fn(net(x[b[:, None] - offsets[None, :]]), y[b])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(b)
        val_mae = mae_raw(split.val, predict(split.val)) if len(split.val) else float("nan")
        progress(
            f"epoch {epoch}/{cfg.epochs} train_loss={total / len(pick):.4f} "
            f"val_mae_bps={val_mae:.4f} persistence_val_mae_bps={persist_val:.4f} "
            f"elapsed={time.monotonic() - started:.0f}s"
        )
        if val_mae < best[0]:
            best = (val_mae, {k: v.clone() for k, v in net.state_dict().items()}, epoch)
        elif epoch - best[2] >= cfg.patience:
            progress(f"early stop: no validation gain since epoch {best[2]}")
            break
    if best[1] is not None:
        net.load_state_dict(best[1])

    interval = df["interval_hours"].to_numpy()
    venues = df["venue"].to_numpy()
    cal_idx = split.val if len(split.val) >= 50 else split.train
    resid = (nxt[cal_idx] - predict(cal_idx)) * interval[cal_idx] / 8.0
    calibration = Calibration.fit(resid, venues[cal_idx], interval[cal_idx], cfg.coverage)

    from hean.ml.funding.evaluate import score

    test_metrics = (
        score(df, split.test, predict(split.test), nxt, calibration) if len(split.test) else {}
    )
    rev = git_revision()
    now = dt.datetime.now(dt.UTC)
    meta = {
        "version": f"funding-lstm-{now:%Y%m%dT%H%M%SZ}-{rev[:7]}",
        "created_utc": now.isoformat(),
        "git_revision": rev,
        "features": names,
        "seq_len": cfg.seq_len,
        "hidden": cfg.hidden,
        "target": "next settlement rate, bps per 8 h equivalent (network predicts the change)",
        "scaling": {"mean": mean.tolist(), "std": std.tolist(), "target_std": target_std},
        "feature_clip": FEATURE_CLIP,
        "calibration": calibration.to_json(),
        "train_config": cfg.__dict__,
        "best_epoch": best[2],
        "data": {
            "source": data_source,
            "rows": len(df),
            "series": int(df["series"].nunique()),
            "first_utc": _iso(int(df["time_ms"].min())),
            "last_utc": _iso(int(df["time_ms"].max())),
            "train_until_utc": _iso(split.t_val),
            "test_from_utc": _iso(split.t_test),
            "sequences": {
                "train": len(split.train),
                "val": len(split.val),
                "test": len(split.test),
            },
        },
        "metrics_test": test_metrics,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / WEIGHTS)
    (out / META).write_text(json.dumps(meta, indent=1))
    return meta
