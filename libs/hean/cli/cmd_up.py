"""``hean up``: run the whole system (embedded NATS, simulator, seven services)."""

from __future__ import annotations

import argparse
import asyncio
import os

from hean.config import ConfigError, load_settings
from hean.logs import setup_logging
from hean.supervisor import Supervisor, UpSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the whole system on this machine", description=__doc__)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(UpSettings, "up")
    except ConfigError as exc:
        print(f"hean: {exc}")
        return 2
    setup_logging("hean-up", settings.log_level, as_json=False)
    external = os.environ.get("HEAN_NATS_URL") or None
    return asyncio.run(Supervisor(settings, external_nats=external).run())
