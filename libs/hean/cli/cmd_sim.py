"""``hean sim``: the exchange simulator alone (Binance, Bybit and OKX formats on one port)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

import msgspec

from hean.registry import DEFAULT_PORT_BASE, SIM_PORT_OFFSET


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sim", help="run the exchange simulator", description=__doc__)
    p.add_argument("--scenario", help="scenario file (YAML or JSON); default: built-in markets")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT_BASE + SIM_PORT_OFFSET)
    p.add_argument("--speed", type=float, help="simulated seconds per second (overrides file)")
    p.add_argument("--seed", type=int, help="random seed (overrides file)")
    p.add_argument("--replay", metavar="DATA_DIR", help="replay real funding from a data dir")
    p.set_defaults(func=_run)


def _scenario(args: argparse.Namespace):  # -> Scenario
    from hean.sim.scenario import default_scenario, load_scenario, validate

    sc = load_scenario(args.scenario) if args.scenario else default_scenario()
    changes = {}
    if args.speed is not None:
        changes["speed"] = args.speed
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.replay:
        changes["replay_dir"] = args.replay
        if not args.scenario:
            changes["symbols"] = []
    sc = msgspec.structs.replace(sc, **changes)
    validate(sc, args.scenario or "scenario")
    return sc


def _run(args: argparse.Namespace) -> int:
    from hean.sim.scenario import ScenarioError
    from hean.sim.server import SimServer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        scenario = _scenario(args)
        server = SimServer(scenario, port=args.port, host=args.host)
    except ScenarioError as exc:
        print(f"hean sim: {exc}", file=sys.stderr)
        return 2

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await server.start()
        except OSError as exc:
            print(
                f"hean sim: cannot listen on {args.host}:{args.port}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2
        n = sum(len(server.market.listed(v)) for v in ("binance", "bybit", "okx"))
        print(
            f"hean sim: {server.url} (binance /binance/fapi, bybit /bybit/v5, okx /okx/api/v5); "
            f"{n} perpetuals, speed x{scenario.speed:g}, seed {scenario.seed}",
            flush=True,
        )
        await stop.wait()
        await server.stop()
        return 0

    return asyncio.run(main())
