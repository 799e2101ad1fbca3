"""liquidation-cascade RandomForest: train on daily klines + open interest, judge vs baselines."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime


def _bars(args: argparse.Namespace):
    from hean.ml.cascade.data import load_bars
    from hean.ml.cascade.synth import synthetic_bars

    if args.synthetic:
        return synthetic_bars(n_symbols=args.synthetic, n_bars=400, seed=args.seed), "synthetic"
    syms = args.symbols.split(",") if args.symbols else None
    return load_bars(args.data, syms), "klines_1d + coinalyze open interest + binance funding"


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None, help="data directory (default: $HEAN_DATA_DIR)")
    p.add_argument("--symbols", default="", help="comma-separated subset, e.g. BTCUSDT,ETHUSDT")
    p.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="use N seeded synthetic symbols instead of real data",
    )
    p.add_argument("--seed", type=int, default=7)


def add_train_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--trees", type=int, default=150)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--min-leaf", type=int, default=20)
    p.add_argument("--move", type=float, default=0.07, help="label: price move fraction")
    p.add_argument("--oi-drop", type=float, default=0.05, help="label: OI drop fraction")
    p.add_argument("--tiers", default="", help="ccxt leverage-tier JSON (default: in --data)")


def train(args: argparse.Namespace) -> int:
    from hean.ml.cascade.data import CascadeDataError, data_dir
    from hean.ml.cascade.labels import LabelRule
    from hean.ml.cascade.tiers import FALLBACK_MMR, TIERS_FILE, TiersError, buckets, mmr_table
    from hean.ml.cascade.train import TrainConfig, train_model

    try:
        bars, source = _bars(args)
        mmr = FALLBACK_MMR
        tiers = args.tiers
        if not tiers and not args.synthetic:
            tiers = str(data_dir(args.data) / TIERS_FILE)
        if tiers:
            mmr = mmr_table(tiers)
        cfg = TrainConfig(
            n_estimators=args.trees,
            max_depth=args.depth,
            min_samples_leaf=args.min_leaf,
            seed=args.seed,
        )
        meta = train_model(
            bars,
            args.out,
            cfg,
            bks=buckets(mmr=mmr),
            rule=LabelRule(args.move, args.oi_drop),
            data_source=source,
            progress=lambda s: print(s, flush=True),
        )
    except (CascadeDataError, TiersError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t = meta["metrics_test"]
    print(f"wrote {args.out} version {meta['version']}")
    _table(t)
    return 0


def _table(r: dict) -> None:
    print(
        f"{'forecast':<13}{'n':>7}{'pos':>6}{'AUC':>8}{'Brier':>9}{'logloss':>9}"
        f"{'P@0.3':>7}{'R@0.3':>7}{'P@0.7':>7}{'R@0.7':>7}"
    )
    for name in ("model", "climatology", "persistence", "volatility"):
        m = r[name]
        at3, at7 = m["at_threshold"]["0.3"], m["at_threshold"]["0.7"]
        f = lambda v: "   -" if v is None else f"{v:.3f}"  # noqa: E731
        print(
            f"{name:<13}{m['n']:>7}{m['positives']:>6}{f(m['auc']):>8}{m['brier']:>9.4f}"
            f"{m['log_loss']:>9.4f}{f(at3['precision']):>7}{f(at3['recall']):>7}"
            f"{f(at7['precision']):>7}{f(at7['recall']):>7}"
        )
    d = r.get("direction_accuracy")
    print(f"direction accuracy on true cascades: {'-' if d is None else f'{d:.3f}'}")


def add_evaluate_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    p.add_argument("--model", default=None, help="artifact directory (default: the shipped one)")
    p.add_argument(
        "--since",
        default="",
        help="score bars from this UTC date (default: the artifact's held-out test start)",
    )
    p.add_argument("--report", default="cascade_eval.json", help="JSON report path")
    p.add_argument("--plot", default="cascade_eval.png", help="reliability plot (PNG)")


def evaluate(args: argparse.Namespace) -> int:
    from hean.ml.cascade.data import CascadeDataError
    from hean.ml.cascade.evaluate import evaluate_model
    from hean.ml.cascade.model import DEFAULT_DIR, CascadeModel, ModelLoadError

    try:
        model = CascadeModel.load(args.model or DEFAULT_DIR)
        bars, _ = _bars(args)
        since = None
        if args.since:
            since = int(datetime.fromisoformat(args.since).replace(tzinfo=UTC).timestamp() * 1000)
        report = evaluate_model(
            model, bars, since_ms=since, report_path=args.report, plot_path=args.plot
        )
    except (CascadeDataError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a, b = (datetime.fromtimestamp(x / 1000, UTC).date() for x in report["eval_span"])
    print(
        f"model {report['model_version']}; bars {a} .. {b}, {report['symbols']} symbols; "
        f"cascade = move >= {report['label_rule']['move_frac']:.0%} and OI drop >= "
        f"{report['label_rule']['oi_drop_frac']:.0%} in the next bar"
    )
    _table(report)
    print(f"report: {args.report}  plot: {args.plot}")
    m = report["model"]
    print(
        json.dumps(
            {
                "auc": m["auc"],
                "brier": m["brier"],
                "auc_volatility": report["volatility"]["auc"],
                "brier_climatology": report["climatology"]["brier"],
            }
        )
    )
    return 0
