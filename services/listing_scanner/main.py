"""Process entry for listing-scanner: market scans, listing watches and alert delivery.

The known market set and the running watches live in JetStream KV (bucket
``hean_listings``): restored before the first scan and written after every change, after the
resulting events are published, so a crash repeats at worst an announcement that JetStream
and the alert gate deduplicate, and never loses one. The same process delivers every Alert
on ``hean.alert.>`` to the configured channels through a durable consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated, Any

from msgspec import Meta

from hean.alerts.config import AlertSettings, backoff_from, build_channels, gate_factory
from hean.alerts.consumer import consume_alerts
from hean.alerts.dispatcher import AlertDispatcher
from hean.config import ServiceSettings
from hean.runtime.runner import ServiceApp, ServiceContext
from hean.venues import bind_service
from hean_proto.subjects import KV_LISTINGS
from hean_services.listing_scanner.logic import HOUR, ListingScannerLogic, ScannerConfig

log = logging.getLogger("hean.listings")

Positive = Annotated[float, Meta(gt=0)]
STATE_KEY = "state"


class Settings(AlertSettings, kw_only=True):
    listing_scan_s: Positive = 60.0
    tick_s: Positive = 5.0
    """How often finished watch windows are closed with their summary."""
    listing_announce_window_h: Positive = 24.0
    listing_watch_period_s: Positive = 900.0
    listing_watch_window_h: Positive = 24.0
    listing_spike_per_8h: Positive = 0.003
    alert_delivery: bool = True
    """Deliver alerts from this service; turn off where another replica does it."""


ClientFactory = Callable[[str, ServiceSettings], Any]


def _default_factory(venue: str, settings: ServiceSettings) -> Any:
    from hean.venues import build_client

    return build_client(venue, settings)


def config_from(s: Settings) -> ScannerConfig:
    return ScannerConfig(
        announce_window_ms=int(s.listing_announce_window_h * HOUR),
        watch_period_ms=int(s.listing_watch_period_s * 1000),
        watch_window_ms=int(s.listing_watch_window_h * HOUR),
        spike_per_8h=s.listing_spike_per_8h,
    )


async def _pause(ctx: ServiceContext, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.stopping.wait(), seconds)


class Scanner:
    def __init__(self, logic: ListingScannerLogic, settings: Settings, factory: ClientFactory):
        self.logic = logic
        self.settings = settings
        self.factory = factory
        self.clients: dict[str, Any] = {}
        self.lock = asyncio.Lock()
        self.errors = 0

    async def restore(self, ctx: ServiceContext) -> None:
        self.logic.restore(await ctx.bus.kv_get(KV_LISTINGS, STATE_KEY))
        log.info("restored listing state: %s", self.logic.snapshot()["known"])

    async def save(self, ctx: ServiceContext) -> None:
        if self.logic.dirty:
            await ctx.bus.kv_put(KV_LISTINGS, STATE_KEY, self.logic.dump())
            self.logic.dirty = False

    async def publish_and_save(self, ctx: ServiceContext, outputs: list[Any]) -> None:
        async with self.lock:
            await ctx.runtime.emit(outputs)
            await self.save(ctx)

    async def scan_once(self, ctx: ServiceContext) -> None:
        for venue, client in self.clients.items():
            try:
                markets = await client.load_markets()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                log.warning("%s load_markets failed: %s: %s", venue, type(exc).__name__, exc)
                continue
            now = ctx.runtime.clock.now_ms()
            await self.publish_and_save(ctx, self.logic.on_markets(venue, markets, now))

    async def watch_once(self, ctx: ServiceContext) -> None:
        due = self.logic.watches_due(ctx.runtime.clock.now_ms())
        for venue, symbols in due.items():
            client = self.clients.get(venue)
            if client is None:
                continue
            try:
                rates = await client.fetch_funding_rates(symbols)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.errors += 1
                log.warning("%s funding for %s failed: %s", venue, symbols, exc)
                continue
            now = ctx.runtime.clock.now_ms()
            await self.publish_and_save(ctx, self.logic.on_watch_funding(venue, rates, now))
        # summaries of finished windows are produced by the logic's tick; persist their removal
        async with self.lock:
            await self.save(ctx)

    async def run(self, ctx: ServiceContext) -> None:
        for venue in self.settings.venues:
            self.clients[venue] = self.factory(venue, self.settings)
        bind_service(list(self.clients.values()), ctx)
        step = min(self.settings.listing_watch_period_s, self.settings.listing_scan_s, 30.0)
        next_scan = 0.0
        loop = asyncio.get_running_loop()
        try:
            while not ctx.stopping.is_set():
                if loop.time() >= next_scan:
                    await self.scan_once(ctx)
                    next_scan = loop.time() + self.settings.listing_scan_s
                await self.watch_once(ctx)
                await _pause(ctx, step)
        finally:
            for client in self.clients.values():
                with contextlib.suppress(Exception):
                    await client.close()


def build(settings: Settings, client_factory: ClientFactory | None = None) -> ServiceApp:
    logic = ListingScannerLogic(config=config_from(settings))
    logic.tick_interval_s = settings.tick_s
    scanner = Scanner(logic, settings, client_factory or _default_factory)
    delivery: dict[str, Any] = {}

    async def start(ctx: ServiceContext) -> None:
        await scanner.restore(ctx)
        channels = build_channels(settings)
        if not settings.alert_delivery:
            return
        if not channels:
            log.warning("no alert channels configured (HEAN_ALERT_*); alerts stay on the bus")
            return
        dispatcher = AlertDispatcher(
            channels,
            gate=gate_factory(settings),
            backoff=backoff_from(settings),
            registry=ctx.metrics.registry,
        )
        await dispatcher.start()
        delivery["dispatcher"] = dispatcher
        delivery["sub"] = await consume_alerts(ctx.bus, dispatcher)
        log.info("delivering alerts to %s", ", ".join(c.name for c in channels))

    async def stop(ctx: ServiceContext) -> None:
        sub = delivery.pop("sub", None)
        if sub is not None:
            await sub.stop()
        dispatcher = delivery.pop("dispatcher", None)
        if dispatcher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dispatcher.join(), 5.0)
            await dispatcher.close()
        async with scanner.lock:
            await scanner.save(ctx)

    async def scan(ctx: ServiceContext) -> None:
        await scanner.run(ctx)

    def alert_status() -> dict[str, bool]:
        dispatcher = delivery.get("dispatcher")
        if dispatcher is None:
            return {}
        return {f"alert_queue_{n}_ok": s["queued"] < 900 for n, s in dispatcher.status().items()}

    app = ServiceApp(logic=logic, tasks=[scan], on_start=[start], on_stop=[stop])
    app.readiness.append(alert_status)
    return app
