"""``hean tap SUBJECT``: print live events, decoded and validated (the typed ``nats sub``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time

import msgspec

from hean.bus.nats import NatsBus, NatsConnectError
from hean.supervisor import read_run_file
from hean_proto import codec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tap", help="print live events on a subject", description=__doc__)
    p.add_argument("subject", nargs="?", default="hean.>", help="subject or wildcard")
    p.add_argument("--nats", help="NATS URL (default: HEAN_NATS_URL, then the running hean up)")
    p.add_argument("--count", type=int, default=0, help="stop after N events")
    p.add_argument("--timeout", type=float, default=0, help="stop after N seconds")
    p.add_argument("--json", action="store_true", help="one raw JSON line per event")
    p.add_argument("--state-dir", default=os.environ.get("HEAN_STATE_DIR", ".hean"))
    p.set_defaults(func=_run)


def resolve_nats_url(explicit: str | None, state_dir: str) -> str:
    if explicit:
        return explicit
    if os.environ.get("HEAN_NATS_URL"):
        return os.environ["HEAN_NATS_URL"]
    run = read_run_file(state_dir)
    if run:
        return run["nats_url"]
    return "nats://127.0.0.1:4222"


def render(subject: str, data: bytes, as_json: bool) -> str:
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    try:
        event = codec.decode(data)
    except codec.DecodeError as exc:
        return f"{stamp} {subject} !! {exc}: {data[:200]!r}"
    if as_json:
        return data.decode()
    fields = msgspec.structs.asdict(event)
    fields.pop("schema_version", None)
    body = " ".join(f"{k}={v!r}" for k, v in fields.items() if v not in (None, False, [], ""))
    return f"{stamp} {subject} {type(event).__name__} {body}"


async def tap(url: str, subject: str, count: int, timeout: float, as_json: bool) -> int:
    bus = await NatsBus.connect(url, "hean-tap", connect_timeout_s=5)
    done = asyncio.Event()
    seen = 0

    async def on_msg(message) -> None:
        nonlocal seen
        print(render(message.subject, message.data, as_json), flush=True)
        seen += 1
        if count and seen >= count:
            done.set()

    await bus.subscribe(subject, on_msg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), timeout or None)
    await bus.close()
    return 0 if (seen or not count) else 1


def _run(args: argparse.Namespace) -> int:
    url = resolve_nats_url(args.nats, args.state_dir)
    print(f"tapping {args.subject} on {url}", file=sys.stderr, flush=True)
    try:
        return asyncio.run(tap(url, args.subject, args.count, args.timeout, args.json))
    except NatsConnectError as exc:
        print(f"hean: {exc}", file=sys.stderr)
        return 2
