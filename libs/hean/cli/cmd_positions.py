"""``hean positions`` and ``hean pnl``: the router's ledger, read from JetStream KV.

Both read the order router's book, which is written together with every fill and funding
payment, so they answer while the router is down and agree with what it will resume from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

from hean.bus.nats import NatsBus, NatsConnectError
from hean.cli.cmd_tap import resolve_nats_url
from hean.execution.book import RouterBook
from hean.execution.store import BookStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("positions", help="open positions from the router's ledger")
    _common(p)
    p.add_argument("--all", action="store_true", help="include flat positions")
    p.set_defaults(func=_positions)
    q = sub.add_parser("pnl", help="realised, unrealised, funding and fees from the ledger")
    _common(q)
    q.add_argument("--by-venue", action="store_true", help="one line per venue")
    q.set_defaults(func=_pnl)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nats", help="NATS URL (default: HEAN_NATS_URL, then the running hean up)")
    p.add_argument("--state-dir", default=os.environ.get("HEAN_STATE_DIR", ".hean"))
    p.add_argument("--json", action="store_true", help="JSON output")


def _load(args: argparse.Namespace) -> RouterBook | None:
    async def load() -> RouterBook:
        bus = await NatsBus.connect(
            resolve_nats_url(args.nats, args.state_dir), "hean-cli-ledger", connect_timeout_s=5
        )
        try:
            return await BookStore(bus).load()
        finally:
            await bus.close()

    try:
        return asyncio.run(load())
    except NatsConnectError as exc:
        print(f"hean: {exc}")
        return None


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print(
            "  ".join(
                v.rjust(w) if i > 1 else v.ljust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            ).rstrip()
        )


def _positions(args: argparse.Namespace) -> int:
    book = _load(args)
    if book is None:
        return 2
    positions = [p for p in book.ledger.positions.values() if args.all or p.qty]
    if args.json:
        print(json.dumps([{**_pos(p)} for p in positions], indent=1))
        return 0
    if not positions:
        print("no open positions")
        return 0
    rows = [("VENUE", "SYMBOL", "INSTR", "QTY", "ENTRY", "MARK", "UPNL", "RPNL", "FUNDING", "FEES")]
    for p in sorted(positions, key=lambda p: (p.symbol, p.venue, p.instrument)):
        rows.append(
            (
                p.venue,
                p.symbol,
                p.instrument,
                f"{p.qty:.6g}",
                f"{p.entry_price:.6g}" if p.entry_price else "-",
                f"{p.mark_price:.6g}" if p.mark_price else "-",
                f"{p.unrealized_usd:.2f}",
                f"{p.realized_usd:.2f}",
                f"{p.funding_usd:.2f}",
                f"{p.fees_usd:.2f}",
            )
        )
    _table(rows)
    return 0


def _pos(p) -> dict:
    return {
        "venue": p.venue,
        "symbol": p.symbol,
        "instrument": p.instrument,
        "qty": p.qty,
        "entry_price": p.entry_price,
        "mark_price": p.mark_price,
        "unrealized_usd": p.unrealized_usd,
        "realized_usd": p.realized_usd,
        "funding_usd": p.funding_usd,
        "fees_usd": p.fees_usd,
    }


def _pnl(args: argparse.Namespace) -> int:
    book = _load(args)
    if book is None:
        return 2
    ledger = book.ledger
    totals = ledger.totals()
    totals_doc = {**totals, "fills": ledger.fills, "funding_payments": ledger.funding_payments}
    by_venue: dict[str, dict[str, float]] = {}
    for p in ledger.positions.values():
        v = by_venue.setdefault(
            p.venue,
            {
                "realized_usd": 0.0,
                "unrealized_usd": 0.0,
                "funding_usd": 0.0,
                "fees_usd": 0.0,
                "net_usd": 0.0,
            },
        )
        v["realized_usd"] += p.realized_usd
        v["unrealized_usd"] += p.unrealized_usd
        v["funding_usd"] += p.funding_usd
        v["fees_usd"] += p.fees_usd
        v["net_usd"] += p.net_usd
    if args.json:
        print(json.dumps({"total": totals_doc, "by_venue": by_venue}, indent=1))
        return 0
    for key, value in totals_doc.items():
        print(f"{key:20s} {value:.2f}" if isinstance(value, float) else f"{key:20s} {value}")
    if args.by_venue:
        rows = [("VENUE", "", "REALIZED", "UNREALIZED", "FUNDING", "FEES", "NET")]
        for venue, v in sorted(by_venue.items()):
            rows.append(
                (
                    venue,
                    "",
                    *(
                        f"{v[k]:.2f}"
                        for k in (
                            "realized_usd",
                            "unrealized_usd",
                            "funding_usd",
                            "fees_usd",
                            "net_usd",
                        )
                    ),
                )
            )
        _table(rows)
    return 0
