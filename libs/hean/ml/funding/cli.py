"""funding-rate LSTM: train on settlement history, evaluate against persistence and EWMA."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_train_args(p: argparse.ArgumentParser) -> None:
    from hean.ml.funding.train import TrainConfig

    d = TrainConfig()
    p.add_argument("--data", required=True, help="Parquet or CSV of funding settlements")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help="epochs per fold; the final fit takes the best"
    )
    p.add_argument("--seq-len", type=int, default=d.seq_len)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--max-train", type=int, default=d.max_train, help="sequences sampled per epoch")
    p.add_argument(
        "--test-fraction", type=float, default=d.test_fraction, help="newest share held out"
    )
    p.add_argument("--folds", type=int, default=d.folds, help="walk-forward folds before the test")
    p.add_argument(
        "--first-fold-fraction",
        type=float,
        default=d.first_fold_fraction,
        help="share of the training period the first fold trains on",
    )
    p.add_argument(
        "--embargo-hours",
        type=float,
        default=d.embargo_hours,
        help="gap between training and validation",
    )
    p.add_argument("--members", type=int, default=d.members, help="seed ensemble size")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument(
        "--huber-beta", type=float, default=d.huber_beta, help="Huber loss beta (target units)"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads")


def train(args: argparse.Namespace) -> int:
    from hean.ml.funding.data import FundingDataError, load
    from hean.ml.funding.train import TrainConfig, train_model

    try:
        frame = load(args.data)
    except FundingDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = TrainConfig(
        seq_len=args.seq_len,
        hidden=args.hidden,
        epochs=args.epochs,
        max_train=args.max_train,
        test_fraction=args.test_fraction,
        folds=args.folds,
        first_fold_fraction=args.first_fold_fraction,
        embargo_hours=args.embargo_hours,
        members=args.members,
        seed=args.seed,
        lr=args.lr,
        huber_beta=args.huber_beta,
        threads=args.threads,
    )
    try:
        meta = train_model(
            frame,
            args.out,
            cfg,
            progress=lambda s: print(s, flush=True),
            data_source=Path(args.data).name,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overall = meta["metrics_test"].get("overall", {})
    print_walk_forward(meta)
    print(f"wrote {args.out} version {meta['version']} in {meta['train_seconds']:.0f}s")
    if overall:
        print(
            f"held-out test: model MAE {overall['model']['mae_bps']:.4f} bps, persistence "
            f"{overall['persistence']['mae_bps']:.4f} bps, "
            f"skill ratio {overall['skill_ratio']:.3f}, "
            f"coverage {overall['coverage']:.3f}"
        )
    return 0


def print_walk_forward(meta: dict) -> None:
    """The per-fold table of a model's training run (absent in artifacts made before folds)."""
    wf = meta.get("walk_forward")
    if not wf:
        return
    print(
        f"walk-forward folds at training ({wf['chosen_epochs']} epochs, "
        f"shrink {wf['chosen_shrink']:g}):\n"
        f"{'fold':<6}{'validated from':<27}{'n':>8}{'MAE':>9}{'persist':>9}{'EWMA':>9}"
        f"{'skill':>7}"
    )
    for f in wf["folds"]:
        print(
            f"{f['fold']:<6}{f['val_from_utc']:<27}{f['val_sequences']:>8}"
            f"{f['model_mae_bps']:>9.4f}{f['persistence_mae_bps']:>9.4f}"
            f"{f['ewma_mae_bps']:>9.4f}{f['skill_ratio']:>7.3f}"
        )
    print(f"mean fold skill ratio {wf['mean_skill_ratio']:.3f}")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="artifact directory (default: the shipped one)")
    p.add_argument("--data", required=True, help="Parquet or CSV of funding settlements")
    p.add_argument(
        "--last-fraction",
        type=float,
        default=0.0,
        help="score only the newest share of sequences by time (0.2 = last 20%%)",
    )
    p.add_argument("--report", default="funding_eval.json", help="JSON report path")
    p.add_argument("--plot", default="funding_eval.png", help="PNG plot path")


def evaluate(args: argparse.Namespace) -> int:
    from hean.ml.funding.data import FundingDataError, load
    from hean.ml.funding.evaluate import evaluate_model
    from hean.ml.funding.model import DEFAULT_DIR, FundingForecaster, ModelLoadError

    try:
        forecaster = FundingForecaster.load(args.model or DEFAULT_DIR)
        frame = load(args.data)
        report = evaluate_model(
            forecaster,
            frame,
            last_fraction=args.last_fraction,
            report_path=args.report,
            plot_path=args.plot,
        )
    except (FundingDataError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    o = report["overall"]
    rows = [("overall", o)] + [(f"venue {k}", v) for k, v in report["by_venue"].items()]
    rows += [(f"interval {k}", v) for k, v in report["by_interval"].items()]
    print(f"model {report['model_version']}; {o['n']} forecasts")
    print(
        f"{'slice':<18}{'n':>8}{'MAE':>9}{'persist':>9}{'EWMA':>9}{'RMSE':>9}{'skill':>7}"
        f"{'dir.acc':>8}{'cover':>7}"
    )
    for name, m in rows:
        print(
            f"{name:<18}{m['n']:>8}{m['model']['mae_bps']:>9.4f}"
            f"{m['persistence']['mae_bps']:>9.4f}{m['ewma']['mae_bps']:>9.4f}"
            f"{m['model']['rmse_bps']:>9.4f}{(m['skill_ratio'] or float('nan')):>7.3f}"
            f"{(m['model']['directional_accuracy'] or float('nan')):>8.3f}{m['coverage']:>7.3f}"
        )
    print_walk_forward(forecaster.meta)
    print(f"report: {args.report}  plot: {args.plot}")
    print(json.dumps({"skill_ratio": o["skill_ratio"], "coverage": o["coverage"]}))
    return 0
