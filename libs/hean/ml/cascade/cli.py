"""liquidation-cascade RandomForest: train and judge against baselines.

Two data sources: real daily klines + open interest (the daily feature set), or ``--simulated
N`` runs of the exchange simulator's market (the intraday feature set on short bars).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

SIM_TRAIN_SEED = 1000
"""First seed of the training runs; evaluation defaults to seeds after the training ones."""


def _sim_bars(args: argparse.Namespace, first_seed: int, start_ms: int | None = None):
    from hean.ml.cascade.simdata import T0_MS, simulated_bars

    bar_ms = int(args.bar_minutes * 60_000)
    bars = simulated_bars(args.simulated, first_seed, bar_ms, start_ms=start_ms or T0_MS)
    source = (
        f"hean.sim market model, {args.simulated} runs of 24 h, seeds {first_seed}.."
        f"{first_seed + args.simulated - 1}, {args.bar_minutes}-minute bars"
    )
    return bars, source


def _bars(args: argparse.Namespace):
    from hean.ml.cascade.data import load_bars
    from hean.ml.cascade.synth import synthetic_bars

    if args.simulated:
        return _sim_bars(args, args.sim_seed if args.sim_seed is not None else SIM_TRAIN_SEED)
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
    p.add_argument(
        "--simulated",
        type=int,
        default=0,
        metavar="N",
        help="intraday model on N seeded 24 h runs of the exchange simulator's market",
    )
    p.add_argument(
        "--sim-seed",
        type=int,
        default=None,
        help=f"first seed of the simulated runs (train default {SIM_TRAIN_SEED}; evaluate "
        "default: the seeds after the artifact's training runs)",
    )
    p.add_argument("--bar-minutes", type=int, default=5, help="simulated: bar length")
    p.add_argument("--seed", type=int, default=7)


def add_train_args(p: argparse.ArgumentParser) -> None:
    _data_args(p)
    p.add_argument("--out", required=True, help="artifact directory to write")
    p.add_argument("--trees", type=int, default=150)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--min-leaf", type=int, default=20)
    p.add_argument(
        "--move", type=float, default=None, help="label: price move fraction (0.07; 0.02 intraday)"
    )
    p.add_argument(
        "--oi-drop", type=float, default=None, help="label: OI drop fraction (0.05; 0.03 intraday)"
    )
    p.add_argument(
        "--horizon-minutes", type=int, default=60, help="intraday label: look-ahead window"
    )
    p.add_argument("--tiers", default="", help="ccxt leverage-tier JSON (default: in --data)")


def train(args: argparse.Namespace) -> int:
    from hean.ml.cascade.data import CascadeDataError, data_dir
    from hean.ml.cascade.featuresets import DAILY, DAY_MS, INTRADAY
    from hean.ml.cascade.intraday import WindowLabelRule
    from hean.ml.cascade.labels import LabelRule
    from hean.ml.cascade.simdata import BOOK_DEPTH
    from hean.ml.cascade.tiers import FALLBACK_MMR, TIERS_FILE, TiersError, buckets, mmr_table
    from hean.ml.cascade.train import TrainConfig, train_model

    try:
        bars, source = _bars(args)
        mmr = FALLBACK_MMR
        tiers = args.tiers
        if not tiers and not args.synthetic and not args.simulated:
            tiers = str(data_dir(args.data) / TIERS_FILE)
        if tiers:
            mmr = mmr_table(tiers)
        cfg = TrainConfig(
            n_estimators=args.trees,
            max_depth=args.depth,
            min_samples_leaf=args.min_leaf,
            seed=args.seed,
        )
        if args.simulated:
            first = args.sim_seed if args.sim_seed is not None else SIM_TRAIN_SEED
            kind = {
                "fs": INTRADAY,
                "bar_ms": args.bar_minutes * 60_000,
                "rule": WindowLabelRule(
                    0.02 if args.move is None else args.move,
                    0.03 if args.oi_drop is None else args.oi_drop,
                    args.horizon_minutes * 60_000,
                ),
                "data_kind": "simulated",
                "extra_meta": {
                    "book_depth": BOOK_DEPTH,
                    "sim_seeds": [first, first + args.simulated - 1],
                },
            }
        else:
            kind = {
                "fs": DAILY,
                "bar_ms": DAY_MS,
                "rule": LabelRule(
                    0.07 if args.move is None else args.move,
                    0.05 if args.oi_drop is None else args.oi_drop,
                ),
                "data_kind": "synthetic" if args.synthetic else "real",
            }
        meta = train_model(
            bars,
            args.out,
            cfg,
            bks=buckets(mmr=mmr),
            data_source=source,
            progress=lambda s: print(s, flush=True),
            **kind,
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
    for name in ("model", "climatology", "persistence", "volatility", "momentum"):
        if name not in r:
            continue
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
        since = None
        if args.simulated:
            bars, since = _held_out_sim(args, model)
        else:
            bars, _ = _bars(args)
        if args.since:
            since = int(datetime.fromisoformat(args.since).replace(tzinfo=UTC).timestamp() * 1000)
        report = evaluate_model(
            model, bars, since_ms=since, report_path=args.report, plot_path=args.plot
        )
    except (CascadeDataError, ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    a, b = (datetime.fromtimestamp(x / 1000, UTC) for x in report["eval_span"])
    rule = report["label_rule"]
    within = "in the next bar"
    if "horizon_ms" in rule:
        within = f"within {rule['horizon_ms'] // 60_000} min"
    print(
        f"model {report['model_version']}; bars {a:%Y-%m-%d %H:%M} .. {b:%Y-%m-%d %H:%M}, "
        f"{report['symbols']} symbols; cascade = move >= {rule['move_frac']:.0%} and OI drop >= "
        f"{rule['oi_drop_frac']:.0%} {within}"
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


def _held_out_sim(args: argparse.Namespace, model) -> tuple:
    """Fresh simulated runs after the artifact's own (new seeds, later times); the first third
    fit the baselines, the rest are scored. Returns the bars and where scoring starts."""
    from hean.ml.cascade.simdata import RUN_HOURS

    if not model.intraday:
        raise ValueError("--simulated evaluates an intraday artifact; this one is daily")
    if args.bar_minutes * 60_000 != model.bar_ms:
        args.bar_minutes = model.bar_ms // 60_000
    if args.simulated < 3:
        raise ValueError("--simulated needs at least 3 runs (baselines and scoring)")
    seeds = model.meta.get("sim_seeds", [SIM_TRAIN_SEED, SIM_TRAIN_SEED])
    first = args.sim_seed if args.sim_seed is not None else int(seeds[1]) + 1
    if first <= int(seeds[1]) and first + args.simulated > int(seeds[0]):
        raise ValueError(f"seeds {first}.. overlap the artifact's training seeds {seeds}")
    run_ms = RUN_HOURS * 3_600_000
    start = (int(model.meta["data_span"]["last_ms"]) // run_ms + 1) * run_ms
    bars, _ = _sim_bars(args, first, start_ms=start)
    return bars, start + (args.simulated // 3) * run_ms
