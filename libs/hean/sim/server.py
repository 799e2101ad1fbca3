"""The simulator's HTTP and websocket server: one port, one path prefix per venue.

``/binance/fapi/...``, ``/bybit/v5/...`` and ``/okx/api/v5/...`` answer as the venue would
(and ``/binance/api/v3/...`` as Binance spot, for spot hedges);
``/sim/state``, ``/sim/advance`` and ``/sim/event`` let an operator or a test look at and
drive the simulated market.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from hean.sim import binance, binance_spot, bybit, okx
from hean.sim.engine import Engine
from hean.sim.market import LiquidationPrint, Market
from hean.sim.replay import load_replay
from hean.sim.scenario import Scenario, ScriptedEvent, default_scenario, validate
from hean.sim.wire import json_response

log = logging.getLogger("hean.sim")
MODULES = {"binance": binance, "bybit": bybit, "okx": okx}
SPOT = {"binance": binance_spot}
"""Venues whose spot market the simulator serves too (under the same prefix)."""
Handler = Callable[..., Awaitable[web.StreamResponse]]


class SimServer:
    """Run with ``async with SimServer(scenario) as sim:`` and point clients at ``sim.url``."""

    def __init__(
        self,
        scenario: Scenario | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.scenario = scenario or default_scenario()
        validate(self.scenario)
        self.host = host
        self.port = port
        self.ws_poll_s = 0.1
        self.hang_s = 30.0
        """How long a request hangs in a ``timeout`` outage (longer than a client's timeout)."""
        start = self.scenario.start_ms
        replay = None
        if self.scenario.replay_dir:
            replay = load_replay(self.scenario.replay_dir, self.scenario)
            start = start or replay.start_ms
        self.start_ms = start or int(time.time() * 1000)
        self.market = Market(self.scenario, self.start_ms)
        if replay is not None:
            replay.install(self.market)
        self.engine = Engine(self.market, self.scenario.accounts)
        self._t0 = time.monotonic()
        self._offset_ms = 0
        self._liq_seq: dict[str, int] = {v: 0 for v in MODULES}
        self._liq_log: dict[str, list[tuple[int, LiquidationPrint]]] = {v: [] for v in MODULES}
        self.requests: dict[str, int] = {}
        self.ct_cache: dict[str, float] = {}
        """OKX contract size per base, fixed at first sight as a venue fixes it."""
        self._runner: web.AppRunner | None = None

    # ---- clock ------------------------------------------------------------------------------

    def sim_now_ms(self) -> int:
        elapsed = (time.monotonic() - self._t0) * 1000 * self.scenario.speed
        return self.start_ms + self._offset_ms + int(elapsed)

    def sync(self) -> None:
        """Bring the market up to the simulated now."""
        self.market.advance_to(self.sim_now_ms())
        self._collect_liquidations()

    def advance(self, seconds: float) -> None:
        self._offset_ms += int(seconds * 1000)
        self.sync()

    # ---- liquidations for the websocket handlers --------------------------------------------

    def _collect_liquidations(self) -> None:
        for venue, queue in self.market.liquidations.items():
            while queue:
                self._liq_seq[venue] += 1
                self._liq_log[venue].append((self._liq_seq[venue], queue.popleft()))
            del self._liq_log[venue][:-5000]

    def liquidation_cursor(self, venue: str) -> list[int]:
        return [self._liq_seq[venue]]

    def new_liquidations(self, venue: str, cursor: list[int]) -> list[LiquidationPrint]:
        self.sync()
        out = [liq for seq, liq in self._liq_log[venue] if seq > cursor[0]]
        cursor[0] = self._liq_seq[venue]
        return out

    def ws_should_drop(self, venue: str) -> bool:
        e = self.market.outage(venue)
        return e is not None and e.mode == "ws_drop"

    # ---- HTTP -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/sim/state", self.state)
        app.router.add_post("/sim/advance", self.http_advance)
        app.router.add_post("/sim/event", self.http_event)
        for venue in MODULES:
            app.router.add_route("*", f"/{venue}/{{tail:.*}}", self._venue_handler(venue))
        return app

    def _venue_handler(self, venue: str) -> Handler:
        module = MODULES[venue]
        prefix = f"/{venue}"
        spot = SPOT.get(venue)
        public = {**module.PUBLIC, **(spot.PUBLIC if spot else {})}
        private = {**module.PRIVATE, **(spot.PRIVATE if spot else {})}

        async def handle(request: web.Request) -> web.StreamResponse:
            path = request.path[len(prefix) :]
            log.debug("sim %s %s %s", venue, request.method, request.path_qs)
            self.requests[venue] = self.requests.get(venue, 0) + 1
            self.sync()
            fault = await self._fault(venue, module)
            if fault is not None:
                return fault
            if request.headers.get("Upgrade", "").lower() == "websocket":
                return await module.websocket(self, request)
            key = (request.method, path)
            if key in public:
                return await public[key](self, request)
            if key in private:
                acct = await module.authenticate(self, request)
                if isinstance(acct, web.Response):
                    return acct
                return await private[key](self, request, acct)
            log.info("sim %s: no route %s %s", venue, request.method, path)
            return web.json_response(
                {"error": f"no such endpoint {request.method} {path}"}, status=404
            )

        return handle

    async def _fault(self, venue: str, module: Any) -> web.StreamResponse | None:
        e = self.market.outage(venue)
        if e is None or e.mode == "ws_drop":
            return None
        if e.mode == "http_429":
            return module.error("rate_limit")
        if e.mode == "http_5xx":
            return module.error("server")
        if e.mode == "timeout":
            await asyncio.sleep(self.hang_s)
            return module.error("server")
        if e.mode == "malformed":
            return web.Response(
                text='{"code":0,"data":[{"symbol":', content_type="application/json"
            )
        return None

    async def state(self, request: web.Request) -> web.Response:
        self.sync()
        return json_response(
            {
                "now_ms": self.market.now_ms,
                "start_ms": self.start_ms,
                "speed": self.scenario.speed,
                "seed": self.scenario.seed,
                "requests": self.requests,
                "outages": {v: self.market.outage(v) is not None for v in MODULES},
                "markets": {
                    v: [
                        {
                            "symbol": s.symbol,
                            "mark": self.market.mark(s),
                            "rate": s.rate,
                            "interval_hours": s.interval_h,
                            "next_funding_ms": s.next_funding_ms,
                            "listed_ms": s.listed_ms,
                        }
                        for s in self.market.listed(v)
                    ]
                    for v in MODULES
                },
            }
        )

    async def http_advance(self, request: web.Request) -> web.Response:
        try:
            seconds = float(request.query.get("seconds", "0"))
        except ValueError:
            return web.json_response({"error": "seconds must be a number"}, status=400)
        if seconds < 0:
            return web.json_response({"error": "time does not go back"}, status=400)
        self.advance(seconds)
        return json_response({"now_ms": self.market.now_ms})

    async def http_event(self, request: web.Request) -> web.Response:
        try:
            event = msgspec.json.decode(await request.read(), type=ScriptedEvent)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.sync()
        self.market.inject(event)
        return json_response({"now_ms": self.market.now_ms, "injected": event.kind})

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
