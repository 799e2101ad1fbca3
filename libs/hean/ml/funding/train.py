"""Walk-forward training by time: folds pick the epoch count, the final model is then refitted.

Sequence ends are ordered by time, never shuffled across time (see
:mod:`hean.ml.funding.walkforward`): the newest ``test_fraction`` is held out and only scored.
Before it, expanding-window folds each train on the past and are judged on the next block
against persistence and the EWMA; the epoch count (and the shrinkage of the predicted change
towards persistence) that did best on average over the folds is used to fit the final model on
the whole training period. Feature scaling is fitted on each fit's own training rows. The
prediction intervals come from the folds' out-of-sample residuals. Epochs sample at most
``max_train`` sequences, so a run on the full shipped history takes minutes on two cores.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hean.ml.funding.calibration import Calibration
from hean.ml.funding.features import add_features, feature_names, run_lengths, targets
from hean.ml.funding.model import FEATURE_CLIP, META, WEIGHTS, build_net
from hean.ml.funding.walkforward import Fold, Plan, plan_folds

SHRINK_GRID = np.round(np.arange(0.5, 1.501, 0.05), 2)
"""Multipliers of the predicted change tried on the folds (1 = the network as trained)."""


@dataclass
class TrainConfig:
    seq_len: int = 16
    hidden: int = 32
    epochs: int = 16
    """Epochs every fold runs; the final model runs the count that was best across the folds."""
    batch_size: int = 512
    lr: float = 2e-3
    max_train: int = 40_000
    """Sequences sampled per epoch (no repeats), so an epoch costs the same in every fit."""
    test_fraction: float = 0.2
    folds: int = 4
    first_fold_fraction: float = 0.4
    """Share of the pre-test sequences the first fold trains on."""
    embargo_hours: float = 8.0
    """Gap between a fit's last training sequence and the block it is judged on."""
    members: int = 1
    """Networks with different seeds whose predictions are averaged."""
    coverage: float = 0.9
    huber_beta: float = 0.02
    """Near-L1 loss (in robust target units): the evaluation metric is MAE."""
    seed: int = 7
    threads: int = 1
    """Torch CPU threads; one keeps a shared two-core machine responsive and runs deterministic."""


def eligible_ends(
    df: pd.DataFrame, names: list[str], seq_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows that end a complete sequence and have a real next settlement, and the targets."""
    run = run_lengths(df, names)
    nxt, ok = targets(df)
    ends = np.flatnonzero((run >= seq_len) & ok)
    return ends, nxt


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


@dataclass
class Prepared:
    """Features and targets of every row; sequences are addressed by the row that ends them."""

    df: pd.DataFrame
    names: list[str]
    raw: np.ndarray
    rate8: np.ndarray
    nxt: np.ndarray
    ends: np.ndarray

    @property
    def per_interval(self) -> np.ndarray:
        """Factor from bps per 8 h to bps per the series' own interval."""
        return self.df["interval_hours"].to_numpy() / 8.0

    def mae(self, idx: np.ndarray, pred8: np.ndarray) -> float:
        """Mean absolute error in bps per the series' own interval (what is paid)."""
        return float(np.mean(np.abs((pred8 - self.nxt[idx]) * self.per_interval[idx])))


@dataclass
class Scaling:
    mean: np.ndarray
    std: np.ndarray
    target_std: float

    @classmethod
    def fit(cls, data: Prepared, train: np.ndarray, seq_len: int) -> Scaling:
        """From the rows the training sequences cover, never from later rows."""
        rows = np.unique((train[:, None] - np.arange(seq_len)[None, :]).ravel())
        mean = np.nanmean(data.raw[rows], axis=0)
        std = np.nanstd(data.raw[rows], axis=0)
        std[~(std > 1e-9)] = 1.0
        delta = data.nxt[train] - data.rate8[train]
        # a robust unit: a few crash-time jumps of hundreds of bps must not set it
        target_std = float(np.median(np.abs(delta - np.median(delta))) * 1.4826) or 1.0
        return cls(mean, std, target_std)

    def tensors(self, data: Prepared):
        """Scaled features, and targets in units of the robust scale."""
        import torch

        scaled = np.clip(
            np.nan_to_num((data.raw - self.mean) / self.std), -FEATURE_CLIP, FEATURE_CLIP
        )
        y = np.nan_to_num((data.nxt - data.rate8) / self.target_std)
        return torch.from_numpy(scaled.astype(np.float32)), torch.from_numpy(y.astype(np.float32))


def _windows(x, idx: np.ndarray, seq_len: int):
    import torch

    b = torch.from_numpy(idx)
    return x[b[:, None] - torch.arange(seq_len - 1, -1, -1)[None, :]]


def predict_change(net, x, idx: np.ndarray, seq_len: int) -> np.ndarray:
    """The network's output (target units) for the sequences ending at ``idx``."""
    import torch

    net.eval()
    out = np.empty(len(idx))
    with torch.inference_mode():
        for s in range(0, len(idx), 8192):
            part = idx[s : s + 8192]
            out[s : s + len(part)] = net(_windows(x, part, seq_len)).numpy()
    return out


def fit_member(
    x,
    y,
    train: np.ndarray,
    cfg: TrainConfig,
    epochs: int,
    seed: int,
    on_epoch: Callable[[int, object, float], None],
):
    """One network, trained for exactly ``epochs`` epochs; ``on_epoch`` sees it after each."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_features = x.shape[1]
    net = build_net(n_features, cfg.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    loss_fn = torch.nn.SmoothL1Loss(beta=cfg.huber_beta)
    for epoch in range(1, epochs + 1):
        net.train()
        pick = train
        if len(pick) > cfg.max_train:
            pick = rng.choice(pick, cfg.max_train, replace=False)
        pick = rng.permutation(pick)
        total = 0.0
        for s in range(0, len(pick), cfg.batch_size):
            b = pick[s : s + cfg.batch_size]
            opt.zero_grad()
            loss = loss_fn(net(_windows(x, b, cfg.seq_len)), y[torch.from_numpy(b)])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(b)
        on_epoch(epoch, net, total / len(pick))
    return net


@dataclass
class FoldResult:
    n_train: int
    changes: np.ndarray
    """Ensemble-mean predicted change (bps per 8 h) per epoch (rows) and val sequence."""
    persistence_mae: float
    ewma_mae: float


def _run_fold(
    data: Prepared,
    fold: Fold,
    tag: str,
    cfg: TrainConfig,
    progress: Callable[[str], None],
    started: float,
) -> FoldResult:
    if len(fold.train) < 50 or not len(fold.val):
        raise ValueError(
            f"{tag}: {len(fold.train)} training and {len(fold.val)} validation sequences; "
            "history too short for this many folds"
        )
    sc = Scaling.fit(data, fold.train, cfg.seq_len)
    x, y = sc.tensors(data)
    persist = data.mae(fold.val, data.rate8[fold.val])
    ewma = data.mae(fold.val, data.df["ewma_bps8"].to_numpy()[fold.val])
    progress(
        f"{tag}: train {len(fold.train)} sequences < {_iso(fold.val_from_ms)} "
        f"(embargo {cfg.embargo_hours:g} h), validate {len(fold.val)} "
        f"until {_iso(fold.val_until_ms)}; persistence MAE {persist:.4f} bps, EWMA {ewma:.4f}"
    )
    changes = np.zeros((cfg.epochs, len(fold.val)))

    def on_epoch(epoch: int, net, loss: float, member: str) -> None:
        change = predict_change(net, x, fold.val, cfg.seq_len) * sc.target_std
        changes[epoch - 1] += change / cfg.members
        mae = data.mae(fold.val, data.rate8[fold.val] + change)
        progress(
            f"{tag}{member} epoch {epoch}/{cfg.epochs} train_loss={loss:.4f} "
            f"val_mae_bps={mae:.4f} skill={mae / persist:.3f} "
            f"elapsed={time.monotonic() - started:.0f}s"
        )

    for m in range(cfg.members):
        member = f" member {m + 1}/{cfg.members}" if cfg.members > 1 else ""
        fit_member(
            x,
            y,
            fold.train,
            cfg,
            cfg.epochs,
            cfg.seed + m,
            lambda e, net, loss, member=member: on_epoch(e, net, loss, member),
        )
    return FoldResult(len(fold.train), changes, persist, ewma)


def _mean_skill(data: Prepared, plan: Plan, results: list[FoldResult], epoch: int, shrink: float):
    return float(
        np.mean(
            [
                data.mae(f.val, data.rate8[f.val] + shrink * r.changes[epoch - 1])
                / r.persistence_mae
                for f, r in zip(plan.folds, results, strict=True)
            ]
        )
    )


def choose(data: Prepared, plan: Plan, results: list[FoldResult]) -> tuple[int, float, list]:
    """Epoch count, then shrinkage, with the lowest mean skill ratio over the folds."""
    epochs = results[0].changes.shape[0]
    curve = [_mean_skill(data, plan, results, e, 1.0) for e in range(1, epochs + 1)]
    best_epoch = int(np.argmin(curve)) + 1
    by_shrink = [_mean_skill(data, plan, results, best_epoch, s) for s in SHRINK_GRID]
    shrink = float(SHRINK_GRID[int(np.argmin(by_shrink))])
    return best_epoch, shrink, curve


def fold_report(
    data: Prepared, plan: Plan, results: list[FoldResult], epoch: int, shrink: float
) -> list[dict]:
    out = []
    for k, (f, r) in enumerate(zip(plan.folds, results, strict=True), start=1):
        mae = data.mae(f.val, data.rate8[f.val] + shrink * r.changes[epoch - 1])
        out.append(
            {
                "fold": k,
                "train_sequences": r.n_train,
                "val_sequences": len(f.val),
                "val_from_utc": _iso(f.val_from_ms),
                "val_until_utc": _iso(f.val_until_ms),
                "model_mae_bps": mae,
                "persistence_mae_bps": r.persistence_mae,
                "ewma_mae_bps": r.ewma_mae,
                "skill_ratio": mae / r.persistence_mae,
                "skill_ratio_vs_ewma": mae / r.ewma_mae,
            }
        )
    return out


def prepare(frame: pd.DataFrame, seq_len: int) -> Prepared:
    df = add_features(frame)
    names = feature_names(df)
    ends, nxt = eligible_ends(df, names, seq_len)
    if len(ends) < 100:
        raise ValueError(
            f"only {len(ends)} complete sequences (need >= 100): history too short "
            f"for seq_len={seq_len}"
        )
    return Prepared(
        df=df,
        names=names,
        raw=df[names].to_numpy(dtype=np.float64),
        rate8=df["rate_bps8"].to_numpy(),
        nxt=nxt,
        ends=ends,
    )


def train_model(
    frame: pd.DataFrame,
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    progress: Callable[[str], None] = print,
    data_source: str = "",
) -> dict:
    """Walk-forward folds, final fit, calibration, held-out score, artifact; returns its meta."""
    import torch

    cfg = cfg or TrainConfig()
    torch.set_num_threads(cfg.threads)
    started = time.monotonic()
    data = prepare(frame, cfg.seq_len)
    df = data.df
    times = df["time_ms"].to_numpy()
    embargo_ms = int(cfg.embargo_hours * 3_600_000)
    plan = plan_folds(
        data.ends,
        times[data.ends],
        folds=cfg.folds,
        first_fold_fraction=cfg.first_fold_fraction,
        test_fraction=cfg.test_fraction,
        embargo_ms=embargo_ms,
    )
    progress(
        f"data: {len(df)} settlements, {df['series'].nunique()} series, {len(data.ends)} "
        f"sequences; training period {len(plan.train)} sequences "
        f"< {_iso(plan.test_from_ms - embargo_ms)}, held-out {len(plan.test)} "
        f">= {_iso(plan.test_from_ms)}; {cfg.folds} walk-forward folds; "
        f"features: {', '.join(data.names)}"
    )
    results = [
        _run_fold(data, fold, f"fold {k}/{cfg.folds}", cfg, progress, started)
        for k, fold in enumerate(plan.folds, start=1)
    ]
    epochs, shrink, curve = choose(data, plan, results)
    folds = fold_report(data, plan, results, epochs, shrink)
    for f in folds:
        progress(
            f"fold {f['fold']}: model MAE {f['model_mae_bps']:.4f} bps, persistence "
            f"{f['persistence_mae_bps']:.4f}, EWMA {f['ewma_mae_bps']:.4f}, "
            f"skill {f['skill_ratio']:.3f}"
        )
    progress(
        f"chosen by the folds: {epochs} epochs, shrink {shrink:g}; "
        f"mean fold skill {curve[epochs - 1]:.4f} unshrunk, "
        f"{float(np.mean([f['skill_ratio'] for f in folds])):.4f} shrunk"
    )

    interval = df["interval_hours"].to_numpy()
    venues = df["venue"].to_numpy()
    val = np.concatenate([f.val for f in plan.folds])
    oos = np.concatenate([r.changes[epochs - 1] for r in results])
    resid = (data.nxt[val] - data.rate8[val] - shrink * oos) * data.per_interval[val]
    calibration = Calibration.fit(resid, venues[val], interval[val], cfg.coverage)

    scaling = Scaling.fit(data, plan.train, cfg.seq_len)
    x, y = scaling.tensors(data)
    nets = []
    for m in range(cfg.members):
        member = f" member {m + 1}/{cfg.members}" if cfg.members > 1 else ""

        def on_epoch(epoch: int, _net, loss: float, member: str = member) -> None:
            progress(
                f"final{member} epoch {epoch}/{epochs} train_loss={loss:.4f} "
                f"elapsed={time.monotonic() - started:.0f}s"
            )

        nets.append(fit_member(x, y, plan.train, cfg, epochs, cfg.seed + m, on_epoch))
    net = nets[0] if cfg.members == 1 else build_net(len(data.names), cfg.hidden, cfg.members)
    if cfg.members > 1:
        for slot, trained in zip(net.members, nets, strict=True):
            slot.load_state_dict(trained.state_dict())

    from hean.ml.funding.evaluate import score

    test_metrics = {}
    if len(plan.test):
        change = predict_change(net, x, plan.test, cfg.seq_len) * scaling.target_std
        pred = data.rate8[plan.test] + shrink * change
        test_metrics = score(df, plan.test, pred, data.nxt, calibration)
    rev = git_revision()
    now = dt.datetime.now(dt.UTC)
    meta = {
        "version": f"funding-lstm-{now:%Y%m%dT%H%M%SZ}-{rev[:7]}",
        "created_utc": now.isoformat(),
        "git_revision": rev,
        "features": data.names,
        "seq_len": cfg.seq_len,
        "hidden": cfg.hidden,
        "members": cfg.members,
        "target": "next settlement rate, bps per 8 h equivalent (network predicts the change)",
        "scaling": {
            "mean": scaling.mean.tolist(),
            "std": scaling.std.tolist(),
            "target_std": scaling.target_std,
            "shrink": shrink,
        },
        "feature_clip": FEATURE_CLIP,
        "calibration": calibration.to_json(),
        "calibration_source": "walk-forward folds' out-of-sample residuals",
        "train_config": asdict(cfg),
        "best_epoch": epochs,
        "walk_forward": {
            "folds": folds,
            "mean_skill_ratio": float(np.mean([f["skill_ratio"] for f in folds])),
            "mean_skill_ratio_by_epoch": [round(c, 5) for c in curve],
            "chosen_epochs": epochs,
            "chosen_shrink": shrink,
            "embargo_hours": cfg.embargo_hours,
        },
        "data": {
            "source": data_source,
            "rows": len(df),
            "series": int(df["series"].nunique()),
            "first_utc": _iso(int(times.min())),
            "last_utc": _iso(int(times.max())),
            "train_until_utc": _iso(plan.test_from_ms - embargo_ms),
            "test_from_utc": _iso(plan.test_from_ms),
            "sequences": {"train": len(plan.train), "test": len(plan.test)},
        },
        "metrics_test": test_metrics,
        "train_seconds": round(time.monotonic() - started, 1),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / WEIGHTS)
    (out / META).write_text(json.dumps(meta, indent=1))
    return meta
