"""``hean``: run the system, one service, the simulator, models, backtests and tools.

Each subcommand lives in its own module ``hean.cli.cmd_<name>`` exposing
``register(subparsers)``; the parser is assembled from those modules.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

COMMAND_MODULES = (
    "up",
    "status",
    "tap",
    "service",
    "sim",
    "data",
    "train",
    "evaluate",
    "backtest",
    "risk",
    "positions",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hean",
        description="HEAN: funding-rate and liquidation-cascade trading over NATS.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module_name = f"hean.cli.cmd_{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
