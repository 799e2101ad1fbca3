"""``hean train funding|cascade``: train a model and write a versioned artifact."""

from __future__ import annotations

import argparse
import importlib

MODELS = {"funding": "hean.ml.funding.cli", "cascade": "hean.ml.cascade.cli"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model", description=__doc__)
    models = p.add_subparsers(dest="model", required=True, metavar="MODEL")
    for name, module in MODELS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        mp = models.add_parser(name, help=mod.__doc__.splitlines()[0] if mod.__doc__ else name)
        mod.add_train_args(mp)
        mp.set_defaults(func=mod.train)
