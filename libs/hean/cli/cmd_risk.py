"""``hean risk status|resume|halt``: read the kill switch, release it with the token, or pull it.

``status`` reads the latch from JetStream KV, so it works while the risk service is down.
``resume`` needs the operator token (``--token``, ``HEAN_RISK_TOKEN``, or the token file the
risk service created in its state directory) and asks the running risk service over NATS,
or over HTTP with ``--url``. ``halt`` needs no token: stopping is always allowed.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import time
from pathlib import Path

from hean.bus.nats import NatsBus, NatsConnectError
from hean.cli.cmd_tap import resolve_nats_url
from hean.risk.engine import SERVICE
from hean.risk.latch import LatchError, load_record
from hean_proto import codec
from hean_proto.events import ControlCommand
from hean_proto.subjects import CONTROL, SERVICE_ENDPOINT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("risk", help="kill-switch status, resume, halt", description=__doc__)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, text in (
        ("status", "show the trading state and the latch"),
        ("resume", "resume trading after a halt (needs the operator token)"),
        ("halt", "halt trading now"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("--nats", help="NATS URL (default: HEAN_NATS_URL, then the running hean up)")
        a.add_argument("--state-dir", default=os.environ.get("HEAN_STATE_DIR", ".hean"))
        if name == "status":
            a.add_argument("--json", action="store_true", help="print the record as JSON")
        else:
            a.add_argument("--reason", default="", help="why, for the record and the alert")
            a.add_argument("--operator", default=_whoami())
        if name == "resume":
            a.add_argument("--token", help="operator token (default: HEAN_RISK_TOKEN or file)")
            a.add_argument("--token-file", help="file holding the operator token")
            a.add_argument("--url", help="risk service base URL, to resume over HTTP instead")
        a.set_defaults(func=_run)


def _whoami() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "operator"


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return args.token
    if os.environ.get("HEAN_RISK_TOKEN"):
        return os.environ["HEAN_RISK_TOKEN"]
    path = args.token_file or os.environ.get("HEAN_RISK_TOKEN_FILE")
    p = Path(path) if path else Path(args.state_dir) / "risk_token"
    return p.read_text().strip() if p.is_file() else None


def _run(args: argparse.Namespace) -> int:
    url = resolve_nats_url(args.nats, args.state_dir)
    try:
        return asyncio.run(_dispatch(args, url))
    except NatsConnectError as exc:
        print(f"hean: {exc}")
        return 2


async def _dispatch(args: argparse.Namespace, url: str) -> int:
    if args.action == "resume" and args.url:
        return await _resume_http(args)
    bus = await NatsBus.connect(url, "hean-cli-risk", connect_timeout_s=5)
    try:
        if args.action == "status":
            return await _status(bus, args.json)
        if args.action == "halt":
            cmd = ControlCommand(
                ts_ms=time.time_ns() // 1_000_000,
                command="halt",
                issued_by=args.operator,
                reason=args.reason,
            )
            await bus.publish(CONTROL.subject(SERVICE), codec.encode(cmd))
            print("halt sent to risk-killswitch")
            return 0
        return await _resume_nats(bus, args)
    finally:
        await bus.close()


async def _status(bus: NatsBus, as_json: bool) -> int:
    try:
        record = await load_record(bus)
    except LatchError as exc:
        print(f"hean: {exc} (the router treats this as HALTED)")
        return 1
    if record is None:
        print("no kill-switch record yet (risk-killswitch has never run here)")
        return 0
    if as_json:
        import msgspec

        print(msgspec.json.encode(record).decode())
        return 0
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record.since_ms / 1000))
    print(f"state        {record.state}")
    print(f"reason       {record.reason}")
    print(f"since        {since}")
    print(f"high-water   {record.high_water_usd:.2f} USD")
    print(f"loss streak  {record.loss_streak}")
    return 0


async def _resume_nats(bus: NatsBus, args: argparse.Namespace) -> int:
    token = _token(args)
    if not token:
        print("hean: no operator token: pass --token or set HEAN_RISK_TOKEN")
        return 2
    body = json.dumps({"token": token, "reason": args.reason, "operator": args.operator})
    try:
        reply = await bus.nc.request(
            SERVICE_ENDPOINT.subject(SERVICE, "resume"), body.encode(), timeout=5
        )
    except Exception as exc:
        print(f"hean: risk-killswitch did not answer ({type(exc).__name__}); is it running?")
        return 1
    return _report(json.loads(reply.data))


async def _resume_http(args: argparse.Namespace) -> int:
    import aiohttp

    token = _token(args)
    if not token:
        print("hean: no operator token: pass --token or set HEAN_RISK_TOKEN")
        return 2
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            args.url.rstrip("/") + "/risk/resume",
            json={"reason": args.reason, "operator": args.operator},
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as r,
    ):
        return _report(await r.json())


def _report(doc: dict) -> int:
    if "error" in doc:
        print(f"hean: resume refused: {doc['error']}")
        return 1
    print(f"trading state {doc.get('state')} (was {doc.get('previous')}): {doc.get('reason')}")
    return 0
