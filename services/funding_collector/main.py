"""Process entry for funding-collector: venue polling tasks around FundingCollectorLogic.

Per venue, independent loops poll the batch endpoints (funding rates, prices), the
per-symbol ones at a slower pace and bounded concurrency (open interest, order-book tops of
the symbols quoted on several venues, which feed the spread slippage), follow the
liquidation stream, and fetch each funding settlement once the venue's next-funding time
moves on. A failing venue or endpoint is counted and retried with backoff; it never stops
the other loops, and its data goes stale (and is marked so) instead of being reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from msgspec import Meta

from hean.config import ServiceSettings
from hean.runtime.runner import ServiceApp, ServiceContext
from hean.venues import bind_service
from hean_services.funding_collector.logic import (
    CollectorConfig,
    CollectorMetrics,
    FundingCollectorLogic,
)

log = logging.getLogger("hean.collector")

Positive = Annotated[float, Meta(gt=0)]


class Settings(ServiceSettings, kw_only=True):
    funding_poll_s: Positive = 30.0
    tick_s: Positive = 5.0
    """How often staleness is checked and spreads are re-evaluated."""
    price_poll_s: Positive = 15.0
    oi_poll_s: Positive = 300.0
    book_poll_s: Positive = 60.0
    book_depth: Annotated[int, Meta(ge=1, le=50)] = 5
    book_max_symbols: Annotated[int, Meta(ge=0)] = 100
    markets_refresh_s: Positive = 3600.0
    request_concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    collect_symbols: list[str] = []
    collect_exclude: list[str] = []
    collect_pattern: str = ""
    collect_liquidations: bool = True
    stale_after_s: Annotated[float, Meta(ge=0)] = 0.0
    """0 means three funding poll periods plus 30 s."""
    snapshot_s: Positive = 300.0
    spread_threshold_bps_8h: float = 3.0
    spread_alert_bps_8h: float = 50.0
    spread_horizon_hours: Positive = 72.0
    spread_notional_usd: Positive = 10_000.0
    default_slippage_bps: Annotated[float, Meta(ge=0)] = 5.0
    history_max_age_days: Annotated[float, Meta(ge=0)] = 0.0
    """Retention of the history stream; 0 keeps the stream's configured default."""


ClientFactory = Callable[[str, ServiceSettings], Any]


def _default_factory(venue: str, settings: ServiceSettings) -> Any:
    from hean.venues import build_client

    return build_client(venue, settings)


def config_from(settings: Settings) -> CollectorConfig:
    stale = settings.stale_after_s or settings.funding_poll_s * 3 + 30
    return CollectorConfig(
        stale_after_ms=int(stale * 1000),
        snapshot_ms=int(settings.snapshot_s * 1000),
        spread_threshold_bps_8h=settings.spread_threshold_bps_8h,
        spread_alert_bps_8h=settings.spread_alert_bps_8h,
        horizon_hours=settings.spread_horizon_hours,
        notional_usd=settings.spread_notional_usd,
        default_slippage_bps=settings.default_slippage_bps,
        symbols=tuple(settings.collect_symbols),
        exclude_symbols=tuple(settings.collect_exclude),
        symbol_pattern=settings.collect_pattern,
    )


async def _pause(ctx: ServiceContext, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.stopping.wait(), seconds)


class Collector:
    """The I/O around the logic: one client per venue and its polling loops."""

    def __init__(
        self, logic: FundingCollectorLogic, settings: Settings, factory: ClientFactory
    ) -> None:
        self.logic = logic
        self.settings = settings
        self.factory = factory
        self.clients: dict[str, Any] = {}
        self.sem = asyncio.Semaphore(settings.request_concurrency)

    def now(self, ctx: ServiceContext) -> int:
        return ctx.runtime.clock.now_ms()

    async def _guard(
        self,
        ctx: ServiceContext,
        venue: str,
        kind: str,
        call: Callable[..., Awaitable[Any]],
        *args: Any,
    ) -> Any:
        """Run one venue call; on failure count it and return None (the data goes stale)."""
        try:
            async with self.sem:
                result = await call(*args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.logic.on_poll_error(venue, kind)
            log.warning("%s %s failed: %s: %s", venue, kind, type(exc).__name__, exc)
            return None
        self.logic.metrics.last_poll.labels(venue, kind).set(self.now(ctx) / 1000)
        return result

    async def markets(self, ctx: ServiceContext, venue: str) -> bool:
        client = self.clients[venue]
        found = await self._guard(ctx, venue, "markets", client.load_markets)
        if found is None:
            return False
        symbols = self.logic.set_markets(venue, found)
        log.info("%s: collecting %d perpetuals", venue, len(symbols))
        return True

    async def funding_loop(self, ctx: ServiceContext, venue: str) -> None:
        s = self.settings
        loaded_at = None
        failures = 0
        while not ctx.stopping.is_set():
            now = self.now(ctx)
            refresh = loaded_at is None or now - loaded_at >= s.markets_refresh_s * 1000
            if refresh and await self.markets(ctx, venue):
                loaded_at = now
            client = self.clients[venue]
            wanted = self._filter(venue)
            rates = await self._guard(ctx, venue, "funding", client.fetch_funding_rates, wanted)
            if rates is not None:
                failures = 0
                await ctx.runtime.emit(self.logic.on_funding(venue, rates, self.now(ctx)))
                await self.settlements(ctx, venue)
            else:
                failures += 1
            await _pause(ctx, min(s.funding_poll_s * 2 ** min(failures, 3), 300))

    def _filter(self, venue: str) -> list[str] | None:
        """Symbols to request: None (all, via the batch endpoint) unless a filter narrows it."""
        c = self.logic.config
        if not (c.symbols or c.exclude_symbols or c.symbol_pattern):
            return None
        return self.logic.symbols(venue) or None

    async def settlements(self, ctx: ServiceContext, venue: str) -> None:
        client = self.clients[venue]
        for pending in [p for p in self.logic.settlements_due() if p.venue == venue]:
            since = pending.funding_time_ms - 60_000
            history = await self._guard(
                ctx,
                venue,
                "funding_history",
                client.fetch_funding_history,
                pending.symbol,
                since,
                5,
            )
            matched = [
                h
                for h in history or []
                if abs((getattr(h, "funding_time_ms", None) or 0) - pending.funding_time_ms)
                < 120_000
            ]
            if not matched:
                self.logic.settlement_missed(pending)
                continue
            await ctx.runtime.emit(self.logic.on_settled(venue, matched, self.now(ctx)))

    async def prices_loop(self, ctx: ServiceContext, venue: str) -> None:
        client = self.clients[venue]
        while not ctx.stopping.is_set():
            wanted = self._filter(venue)
            ticks = await self._guard(ctx, venue, "price", client.fetch_prices, wanted)
            if ticks is not None:
                await ctx.runtime.emit(self.logic.on_prices(venue, ticks, self.now(ctx)))
            await _pause(ctx, self.settings.price_poll_s)

    async def per_symbol_loop(
        self,
        ctx: ServiceContext,
        venue: str,
        kind: str,
        period_s: float,
        symbols: Callable[[], list[str]],
        fetch: Callable[[str], Awaitable[Any]],
        handle: Callable[[str, list[Any], int], list[Any]],
    ) -> None:
        while not ctx.stopping.is_set():
            for symbol in symbols():
                if ctx.stopping.is_set():
                    return
                item = await self._guard(ctx, venue, kind, fetch, symbol)
                if item is not None:
                    await ctx.runtime.emit(handle(venue, [item], self.now(ctx)))
            await _pause(ctx, period_s)

    def book_symbols(self, venue: str) -> list[str]:
        mine = set(self.logic.symbols(venue))
        shared = [s for s in self.logic.shared_symbols() if s in mine]
        return shared[: self.settings.book_max_symbols]

    async def liquidation_loop(self, ctx: ServiceContext, venue: str) -> None:
        client = self.clients[venue]
        failures = 0
        while not ctx.stopping.is_set():
            try:
                async for liq in client.watch_liquidations(self._filter(venue)):
                    failures = 0
                    await ctx.runtime.emit(self.logic.on_liquidation(venue, [liq], self.now(ctx)))
                    if ctx.stopping.is_set():
                        return
            except asyncio.CancelledError:
                raise
            except NotImplementedError:
                log.warning("%s: no liquidation stream; not collecting liquidations", venue)
                return
            except Exception as exc:
                self.logic.on_poll_error(venue, "liquidation")
                log.warning("%s liquidation stream: %s: %s", venue, type(exc).__name__, exc)
            failures += 1
            await _pause(ctx, min(2.0 * 2**failures, 60.0))

    async def run(self, ctx: ServiceContext) -> None:
        s = self.settings
        for venue in s.venues:
            self.clients[venue] = self.factory(venue, s)
        bind_service(list(self.clients.values()), ctx)
        loops = []
        for venue in s.venues:
            client = self.clients[venue]
            loops.append(self.funding_loop(ctx, venue))
            loops.append(self.prices_loop(ctx, venue))
            loops.append(
                self.per_symbol_loop(
                    ctx,
                    venue,
                    "oi",
                    s.oi_poll_s,
                    lambda v=venue: self.logic.symbols(v),
                    client.fetch_open_interest,
                    self.logic.on_open_interest,
                )
            )
            loops.append(
                self.per_symbol_loop(
                    ctx,
                    venue,
                    "book",
                    s.book_poll_s,
                    lambda v=venue: self.book_symbols(v),
                    lambda sym, c=client: c.fetch_book_top(sym, s.book_depth),
                    self.logic.on_book,
                )
            )
            if s.collect_liquidations:
                loops.append(self.liquidation_loop(ctx, venue))
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            await ctx.stopping.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in self.clients.values():
                with contextlib.suppress(Exception):
                    await client.close()


async def apply_history_retention(ctx: ServiceContext, days: float) -> None:
    """Set the history stream's retention from configuration (0 keeps the default)."""
    if days <= 0:
        return
    from hean.history.store import HISTORY_STREAM

    info = await ctx.bus.js.stream_info(HISTORY_STREAM)
    config = info.config
    config.max_age = days * 86400
    await ctx.bus.js.update_stream(config)


def build(settings: Settings, client_factory: ClientFactory | None = None) -> ServiceApp:
    logic = FundingCollectorLogic(venues=tuple(settings.venues), config=config_from(settings))
    logic.tick_interval_s = settings.tick_s
    collector = Collector(logic, settings, client_factory or _default_factory)

    async def bind_metrics(ctx: ServiceContext) -> None:
        logic.metrics = CollectorMetrics(ctx.metrics.registry)
        await apply_history_retention(ctx, settings.history_max_age_days)

    async def collect(ctx: ServiceContext) -> None:
        await collector.run(ctx)

    return ServiceApp(logic=logic, tasks=[collect], on_start=[bind_metrics])
