"""``hean status``: health, readiness and version of every service, as a table."""

from __future__ import annotations

import argparse
import asyncio
import os

import aiohttp

from hean.registry import DEFAULT_PORT_BASE, SERVICES
from hean.supervisor import read_run_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show every service's health", description=__doc__)
    p.add_argument("--state-dir", default=os.environ.get("HEAN_STATE_DIR", ".hean"))
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=_run)


async def collect(host: str, ports: dict[str, int]) -> list[dict]:
    async def one(session: aiohttp.ClientSession, name: str, port: int) -> dict:
        row = {"service": name, "port": port, "alive": False, "ready": False, "version": "-"}
        try:
            timeout = aiohttp.ClientTimeout(total=2)
            async with session.get(f"http://{host}:{port}/status", timeout=timeout) as r:
                doc = await r.json()
            row.update(alive=True, ready=doc["ready"], version=doc["version"])
            row["failing"] = [k for k, ok in doc["conditions"].items() if not ok]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            row["failing"] = ["unreachable"]
        return row

    async with aiohttp.ClientSession() as session:
        return await asyncio.gather(*(one(session, n, p) for n, p in ports.items()))


def _run(args: argparse.Namespace) -> int:
    run = read_run_file(args.state_dir)
    base = int(os.environ.get("HEAN_PORT_BASE", DEFAULT_PORT_BASE))
    ports = {s.name: s.port(base) for s in SERVICES}
    pids: dict[str, object] = {}
    restarts: dict[str, object] = {}
    if run:
        for name, info in run["services"].items():
            if name in ports:
                ports[name] = info["port"]
                pids[name] = info.get("pid")
                restarts[name] = info.get("restarts", 0)
        print(f"hean up pid {run['pid']}, NATS {run['nats_url']}")
    rows = asyncio.run(collect(args.host, ports))
    table = [("SERVICE", "PORT", "PID", "RESTARTS", "ALIVE", "READY", "VERSION", "NOT READY")]
    for r in rows:
        table.append(
            (
                r["service"],
                str(r["port"]),
                str(pids.get(r["service"], "-")),
                str(restarts.get(r["service"], "-")),
                "yes" if r["alive"] else "no",
                "yes" if r["ready"] else "no",
                r["version"],
                ",".join(r.get("failing", [])) or "-",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0 if all(r["ready"] for r in rows) else 1
