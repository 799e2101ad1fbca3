"""``hean service NAME``: run one service in this process (what a container runs)."""

from __future__ import annotations

import argparse
import importlib

from hean.config import ConfigError, load_settings
from hean.registry import SERVICES, spec
from hean.runtime.runner import run


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("service", help="run one service", description=__doc__)
    p.add_argument("name", choices=[s.name for s in SERVICES])
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module(spec(args.name).module)
    try:
        settings = load_settings(module.Settings, args.name)
    except ConfigError as exc:
        print(f"hean: {exc}", flush=True)
        return 2
    return run(module.build, settings)
