"""funding-rate LSTM: train on settlement history, evaluate against persistence and EWMA."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="Parquet or CSV of funding settlements")
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--max-train", type=int, default=100_000, help="sequences sampled per epoch")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--patience", type=int, default=4, help="epochs without validation gain")
    p.add_argument("--seed", type=int, default=7)


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
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        lr=args.lr,
        patience=args.patience,
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
    print(f"wrote {args.out} version {meta['version']}")
    if overall:
        print(
            f"held-out test: model MAE {overall['model']['mae_bps']:.4f} bps, persistence "
            f"{overall['persistence']['mae_bps']:.4f} bps, "
            f"skill ratio {overall['skill_ratio']:.3f}, "
            f"coverage {overall['coverage']:.3f}"
        )
    return 0


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
    print(f"report: {args.report}  plot: {args.plot}")
    print(json.dumps({"skill_ratio": o["skill_ratio"], "coverage": o["coverage"]}))
    return 0
