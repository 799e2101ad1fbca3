"""``hean data``: move funding history in and out of the JetStream history stream.

``import PATH`` loads a history table (such as the shared ``normalized/funding_settlements
.parquet``) into HEAN_HISTORY, ``export --out FILE.parquet`` writes the stored settlements
back out in the same layout, and ``download`` fills the store from the venues' funding-history
endpoints. Without a running system (``hean up``) or ``--nats``, an embedded nats-server on
the same store directory as ``hean up`` is started for the duration of the command, so the
history is there when the system starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

from hean.bus.nats import NatsBus, NatsConnectError
from hean.supervisor import read_run_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data", help="import, export or download funding history", description=__doc__
    )
    p.add_argument(
        "--nats", help="NATS URL (default: HEAN_NATS_URL, the running hean up, else embedded)"
    )
    p.add_argument("--state-dir", default=os.environ.get("HEAN_STATE_DIR", ".hean"))
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    imp = dsub.add_parser("import", help="load a history file (Parquet or CSV) into the store")
    imp.add_argument("path", help="e.g. $HEAN_DATA_DIR/normalized/funding_settlements.parquet")
    imp.add_argument(
        "--no-skip-existing", action="store_true", help="publish even settlements already stored"
    )
    imp.set_defaults(func=_run_import)

    exp = dsub.add_parser("export", help="write stored funding history to Parquet")
    exp.add_argument("--out", required=True, help="output .parquet file")
    exp.add_argument("--venue", help="only this venue")
    exp.add_argument("--symbol", help="only this canonical symbol, e.g. BTCUSDT")
    exp.add_argument("--since", help="only settlements at or after this UTC date (YYYY-MM-DD)")
    exp.add_argument(
        "--all", action="store_true", help="include live estimates, not only settlements"
    )
    exp.set_defaults(func=_run_export)

    dl = dsub.add_parser("download", help="fetch funding history from the venues into the store")
    dl.add_argument("--venues", default="", help="comma-separated (default: HEAN_VENUES)")
    dl.add_argument(
        "--symbols", default="BTCUSDT,ETHUSDT", help="comma-separated canonical symbols"
    )
    dl.add_argument("--days", type=float, default=30.0, help="how far back")
    dl.set_defaults(func=_run_download)


@contextlib.asynccontextmanager
async def _connect(args: argparse.Namespace):
    url = args.nats or os.environ.get("HEAN_NATS_URL")
    if not url:
        run = read_run_file(args.state_dir)
        url = run["nats_url"] if run else None
    server = None
    if not url:
        from hean.natsserver import NatsServer

        server = NatsServer(store_dir=Path(args.state_dir) / "nats").start()
        url = server.url
        print(f"no running system: embedded nats-server on {url}", file=sys.stderr)
    try:
        bus = await NatsBus.connect(url, "hean-data", connect_timeout_s=10)
        try:
            await bus.ensure_streams()
            yield bus
        finally:
            await bus.close()
    finally:
        if server is not None:
            server.stop()


def _date_ms(text: str | None) -> int | None:
    if not text:
        return None
    import pandas as pd

    return int(pd.Timestamp(text, tz="UTC").value // 1_000_000)


async def _import(args: argparse.Namespace) -> int:
    from hean.history import import_file
    from hean.history.store import HistoryError

    async with _connect(args) as bus:
        started = time.monotonic()
        try:
            result = await import_file(bus.js, args.path, skip_existing=not args.no_skip_existing)
        except HistoryError as exc:
            print(f"hean: {exc}", file=sys.stderr)
            return 2
    for line in result.errors[:20]:
        print(f"rejected: {line}", file=sys.stderr)
    print(
        f"imported {result.published} settlements, {result.skipped_existing} already stored, "
        f"{result.rejected} rows rejected ({time.monotonic() - started:.1f} s)"
    )
    return 0 if result.rejected == 0 else 1


async def _export(args: argparse.Namespace) -> int:
    from hean.history import export_parquet

    async with _connect(args) as bus:
        n = await export_parquet(
            bus.js,
            args.out,
            settled_only=not args.all,
            venue=args.venue,
            symbol=args.symbol,
            since_ms=_date_ms(args.since),
        )
    print(f"wrote {n} rows to {args.out}")
    return 0


async def _download(args: argparse.Namespace) -> int:
    from hean.config import ServiceSettings, load_settings
    from hean.history import import_events
    from hean.venues import build_client
    from hean.venues.base import VenueError

    settings = load_settings(ServiceSettings, "data")
    venues = [v for v in args.venues.split(",") if v] or settings.venues
    symbols = [s for s in args.symbols.split(",") if s]
    since = int((time.time() - args.days * 86400) * 1000)
    total = 0
    failed = 0
    async with _connect(args) as bus:
        for venue in venues:
            client = build_client(venue, settings)
            try:
                for symbol in symbols:
                    try:
                        events = await client.fetch_funding_history(symbol, since_ms=since)
                    except VenueError as exc:
                        print(f"{venue} {symbol}: {exc}", file=sys.stderr)
                        failed += 1
                        continue
                    result = await import_events(bus.js, [e for e in events if e.settled])
                    total += result.published
                    print(f"{venue} {symbol}: {result.published} new settlements")
            finally:
                await client.close()
    print(f"downloaded {total} settlements")
    return 0 if not failed else 1


def _run(coro) -> int:
    try:
        return asyncio.run(coro)
    except NatsConnectError as exc:
        print(f"hean: {exc}", file=sys.stderr)
        return 2


def _run_import(args: argparse.Namespace) -> int:
    return _run(_import(args))


def _run_export(args: argparse.Namespace) -> int:
    return _run(_export(args))


def _run_download(args: argparse.Namespace) -> int:
    return _run(_download(args))
