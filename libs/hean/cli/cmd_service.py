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
    p.add_argument(
        "--live",
        action="store_true",
        help="order-router only: send real orders through the venue layer (same as HEAN_LIVE=true)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module(spec(args.name).module)
    overrides = {}
    if args.live:
        if "live" not in getattr(module.Settings, "__struct_fields__", ()):
            print(f"hean: --live applies to the order-router, not to {args.name}", flush=True)
            return 2
        overrides["live"] = True
    try:
        settings = load_settings(module.Settings, args.name, **overrides)
    except ConfigError as exc:
        print(f"hean: {exc}", flush=True)
        return 2
    return run(module.build, settings)
