"""Process entry for order-router: paper by default, live only by explicit opt-in.

Approved intents arrive on a durable consumer and are acknowledged only after they are
executed, so a crash redelivers them; the router's book (orders, intents, ledger) in
JetStream KV makes a redelivered intent a no-op and settles an interrupted one by lookup. At
start, and after every NATS reconnect, unsettled orders are looked up and interrupted
intents settled before any new intent is taken; if the kill switch is latched HALTED, open
orders are cancelled first. Live trading needs ``HEAN_LIVE=true`` and, for real venues
(``HEAN_VENUE_MODE=live``), API keys for every venue (``HEAN_<VENUE>_API_KEY`` and
``_API_SECRET``, or their ``_FILE`` variants, read by the venue layer and never logged); the
router says so loudly at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Annotated, Any

from msgspec import Meta

from hean.bus.base import PULL_BATCH, Message
from hean.config import ConfigError, ServiceSettings
from hean.execution.executor import ExecConfig, ExecMetrics, Executor
from hean.execution.gate import RiskGate
from hean.execution.paper import PaperConfig, PaperVenue
from hean.execution.store import BookStore
from hean.risk.latch import LatchError, load_record
from hean.runtime.runner import ServiceApp, ServiceContext
from hean.venues.base import VenueClient, VenueError
from hean.venues.symbols import base_asset
from hean_proto import codec
from hean_proto.events import Alert, ControlCommand, OrderIntent
from hean_proto.subjects import CONTROL, ORDER_APPROVED
from hean_services.order_router.logic import NAME, OrderRouterLogic

log = logging.getLogger("hean.router")

Positive = Annotated[float, Meta(gt=0)]
NonNeg = Annotated[float, Meta(ge=0)]
ClientFactory = Callable[[str, ServiceSettings], Any]


class Settings(ServiceSettings, kw_only=True):
    live: bool = False
    """The explicit opt-in to send real orders through the venue layer."""
    risk_max_age_s: Positive = 5.0
    """New orders need a risk state heard this recently; a router that has just started
    waits this long for its first one before refusing."""
    intent_ack_wait_s: Positive = 5.0
    """An intent handed to a router that dies before acknowledging it is delivered again
    after this long (to its restart), well inside ``max_intent_age_s``."""
    order_timeout_s: Positive = 10.0
    leg_fill_timeout_s: Positive = 5.0
    lookup_attempts: Annotated[int, Meta(ge=1, le=50)] = 5
    lookup_delay_s: NonNeg = 0.2
    max_intent_age_s: Positive = 30.0
    reconcile_s: Positive = 30.0
    payments_poll_s: Positive = 60.0
    """Live: how often the venues are asked for the funding they paid or charged."""
    stop_grace_s: NonNeg = 10.0
    taker_fee_bps: NonNeg = 5.5
    taker_fee_bps_by_venue: dict[str, float] = {}
    spot_taker_fee_bps: NonNeg = 10.0
    """Paper spot fills: the spot taker fee (Binance, Bybit and OKX charge 0.1 % at base tier)."""
    spot_taker_fee_bps_by_venue: dict[str, float] = {}
    spot_half_spread_bps: NonNeg = 1.0
    """Paper spot fills: best bid and ask this far from the venue's index price."""
    slippage_bps: NonNeg = 1.0
    max_slippage_bps: Positive = 50.0
    max_book_age_s: Positive = 10.0


def _default_factory(venue: str, settings: ServiceSettings) -> Any:
    from hean.venues import build_client

    return build_client(venue, settings, private=True)


def _default_spot_factory(venue: str, settings: ServiceSettings) -> Any:
    from hean.venues import build_client

    return build_client(venue, settings, private=True, market="spot")


def _require_keys(settings: Settings) -> None:
    """Fail at start, naming the missing variables (never a value), without keys."""
    from hean.venues.credentials import load_credentials

    missing = [v for v in settings.venues if not load_credentials(v, "live").present]
    if missing:
        names = ", ".join(f"HEAN_{v.upper()}_API_KEY/_API_SECRET" for v in missing)
        raise ConfigError(f"live trading needs API keys: {names} (or the same with _FILE)")


def _announce_live(settings: Settings) -> None:
    banner = (
        "\n" + "!" * 72 + "\n"
        f"!!  LIVE TRADING: order-router sends REAL orders to {', '.join(settings.venues)}"
        f" ({settings.venue_mode})\n" + "!" * 72 + "\n"
    )
    print(banner, file=sys.stderr, flush=True)
    log.warning("LIVE TRADING enabled on %s (%s)", ",".join(settings.venues), settings.venue_mode)


def build(
    settings: Settings,
    client_factory: ClientFactory | None = None,
    spot_client_factory: ClientFactory | None = None,
) -> ServiceApp:
    """The router app. ``spot_client_factory`` builds live spot clients; without it, spot legs
    are refused when ``client_factory`` is replaced (a test's scripted venues)."""
    gate = RiskGate(max_age_ms=int(settings.risk_max_age_s * 1000))
    logic = OrderRouterLogic(gate)
    logic.live = settings.live
    if settings.live:
        if settings.venue_mode == "live":
            _require_keys(settings)
        _announce_live(settings)
    else:
        log.info("paper trading (set HEAN_LIVE=true to trade for real)")
    exec_config = ExecConfig(
        order_timeout_s=settings.order_timeout_s,
        lookup_attempts=settings.lookup_attempts,
        lookup_delay_s=settings.lookup_delay_s,
        leg_fill_timeout_s=settings.leg_fill_timeout_s,
        max_intent_age_ms=int(settings.max_intent_age_s * 1000),
        paper=not settings.live,
    )
    changed = asyncio.Event()
    logic.on_change = changed.set
    state: dict[str, Any] = {"executor": None, "running": None, "subs": []}

    def paper_venue(ctx: ServiceContext, venue: str, instrument: str) -> PaperVenue:
        if instrument == "spot":
            fees, default = settings.spot_taker_fee_bps_by_venue, settings.spot_taker_fee_bps
        else:
            fees, default = settings.taker_fee_bps_by_venue, settings.taker_fee_bps
        config = PaperConfig(
            taker_fee_bps=fees.get(venue, default),
            slippage_bps=settings.slippage_bps,
            max_slippage_bps=settings.max_slippage_bps,
            max_book_age_ms=int(settings.max_book_age_s * 1000),
            half_spread_bps=settings.spot_half_spread_bps,
        )
        return PaperVenue(venue, ctx.runtime.clock, config, instrument=instrument)  # type: ignore[arg-type]

    def venues_for(ctx: ServiceContext) -> dict[str, VenueClient]:
        if not settings.live:
            for venue in settings.venues:
                logic.paper[venue] = paper_venue(ctx, venue, "perp")
            return dict(logic.paper)  # type: ignore[arg-type]
        factory = client_factory or _default_factory
        return {venue: factory(venue, settings) for venue in settings.venues}

    def spot_venues_for(ctx: ServiceContext) -> dict[str, VenueClient]:
        if not settings.live:
            for venue in settings.venues:
                logic.paper_spot[venue] = paper_venue(ctx, venue, "spot")
            return dict(logic.paper_spot)  # type: ignore[arg-type]
        factory = spot_client_factory or (None if client_factory else _default_spot_factory)
        if factory is None:
            return {}
        return {venue: factory(venue, settings) for venue in settings.venues}

    async def reconcile(ctx: ServiceContext, executor: Executor) -> None:
        await executor.reconcile()
        if gate.halted:
            n = await executor.cancel_all()
            log.warning("kill switch HALTED at start: cancelled %d open orders", n)
        if settings.live:
            await _check_positions(ctx, executor)
            await _check_spot_holdings(ctx, executor)
        now = ctx.runtime.clock.now_ms()
        await ctx.runtime.emit([p.event(now) for p in executor.book.ledger.positions.values()])

    async def start(ctx: ServiceContext) -> None:
        store = BookStore(ctx.bus)
        book = await store.load()
        logic.book = book
        try:
            record = await load_record(ctx.bus)
        except LatchError as exc:
            log.error("%s; treating the kill switch as HALTED", exc)
            gate.latch(ctx.runtime.clock.now_ms())
        else:
            if record is not None and record.state == "HALTED":
                gate.latch(record.since_ms)
        venues = venues_for(ctx)
        spot = spot_venues_for(ctx)
        for pos in book.ledger.open_positions():  # paper venues hold what the ledger holds
            paper = (logic.paper_spot if pos.instrument == "spot" else logic.paper).get(pos.venue)
            if paper is not None:
                paper.positions[pos.symbol] = pos.qty
        executor = Executor(
            venues,
            store,
            book,
            gate,
            ctx.runtime.clock,
            ctx.runtime.emit,
            exec_config,
            ExecMetrics(ctx.metrics.registry),
            spot=spot,
        )
        state["executor"] = executor
        await reconcile(ctx, executor)
        logic.reconciled = True

        async def on_intent(message: Message) -> None:
            try:
                intent = codec.decode_as(message.data, OrderIntent, settings.max_event_bytes)
            except codec.DecodeError as exc:
                await ctx.runtime.dead_letter(message, str(exc), "invalid_intent")
                return
            await gate.wait_fresh(ctx.runtime.clock.now_ms(), settings.risk_max_age_s)
            task = asyncio.create_task(executor.execute(intent))
            state["running"] = task
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if task.cancelled() and current is not None and not current.cancelling():
                    # stopped mid-execution: let the intent be redelivered, settled by lookup
                    raise RuntimeError(f"intent {intent.id} interrupted by shutdown") from None
                raise
            finally:
                state["running"] = None

        async def on_control(message: Message) -> None:
            try:
                cmd = codec.decode_as(message.data, ControlCommand, settings.max_event_bytes)
            except codec.DecodeError as exc:
                await ctx.runtime.dead_letter(message, str(exc), "invalid_command")
                return
            await _control(ctx, executor, cmd)

        state["subs"] = [
            await ctx.bus.subscribe(CONTROL.pattern(NAME), on_control),
            await ctx.bus.subscribe(CONTROL.pattern("all"), on_control),
            # a short ack wait: an intent this instance held when it died comes back to its
            # restart in seconds, young enough to be executed. Live executions wait for venues,
            # so intents are taken one at a time, lest one queued behind a slow execution
            # outlive the ack wait; paper executions take microseconds, and a batch is cheaper.
            await ctx.bus.subscribe(
                ORDER_APPROVED.pattern(),
                on_intent,
                durable="order_router",
                ack_wait_s=settings.intent_ack_wait_s,
                batch=1 if settings.live else PULL_BATCH,
            ),
        ]
        previous = ctx.bus.on_state_change

        def on_state_change(up: bool) -> None:
            if previous is not None:
                previous(up)
            if up:
                state["reconnected"] = True
                changed.set()

        ctx.bus.on_state_change = on_state_change

    async def _control(ctx: ServiceContext, executor: Executor, cmd: ControlCommand) -> None:
        log.warning("control %s from %s: %s", cmd.command, cmd.issued_by, cmd.reason)
        if cmd.command == "cancel_all":
            if cmd.issued_by == "risk-killswitch":
                gate.latch(cmd.ts_ms)
            n = await executor.cancel_all()
            log.warning("cancelled %d open orders", n)
        elif cmd.command == "flatten":
            n = await executor.flatten(str(cmd.ts_ms))
            log.warning("flatten: %d closing orders sent", n)

    async def housekeeping(ctx: ServiceContext) -> None:
        """Persist funding changes; settle unknown orders; reconcile after a reconnect."""
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + settings.reconcile_s
        while not ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 1.0)
            dirty = changed.is_set()
            changed.clear()
            executor: Executor | None = state["executor"]
            if executor is None or ctx.stopping.is_set():
                continue
            try:
                if state.pop("reconnected", False):
                    log.info("reconnected to NATS: reconciling orders and positions")
                    await reconcile(ctx, executor)
                elif executor.book.unsettled() and loop.time() >= next_reconcile:
                    await executor.reconcile()
                    next_reconcile = loop.time() + settings.reconcile_s
                elif dirty:
                    await executor.save()
            except Exception:
                log.exception("housekeeping failed; retrying")

    async def funding(ctx: ServiceContext) -> None:
        """Live: book the venues' own funding payments into the ledger."""
        if not settings.live:
            return  # paper positions are charged from the published rates (logic)
        while not ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), settings.payments_poll_s)
            executor: Executor | None = state["executor"]
            if executor is None or ctx.stopping.is_set():
                continue
            try:
                n = await executor.collect_funding()
            except Exception:
                log.exception("collecting funding payments failed; retrying")
            else:
                if n:
                    log.info("booked %d funding payments from the venues", n)

    async def stop(ctx: ServiceContext) -> None:
        for sub in state["subs"][:2]:
            await sub.stop()
        running: asyncio.Task | None = state["running"]
        if running is not None and not running.done():
            done, _ = await asyncio.wait([running], timeout=settings.stop_grace_s)
            if not done:
                log.warning("stopping with an intent in flight; it is settled on restart")
                running.cancel()
                await asyncio.wait([running])
        for sub in state["subs"][2:]:
            await sub.stop()
        executor: Executor | None = state["executor"]
        if executor is not None and settings.live:
            for client in [*executor.venues.values(), *executor.spot.values()]:
                with contextlib.suppress(Exception):
                    await client.close()

    return ServiceApp(logic=logic, on_start=[start], tasks=[housekeeping, funding], on_stop=[stop])


async def _check_positions(ctx: ServiceContext, executor: Executor) -> None:
    """Compare the ledger with the venues' positions; a difference needs a human."""
    for venue, client in executor.venues.items():
        try:
            held = {p.symbol: p.qty for p in await client.fetch_positions()}
        except (VenueError, TimeoutError) as exc:
            log.error("positions of %s unavailable for reconciliation: %s", venue, exc)
            continue
        ours = {  # the venues report perpetual positions; spot holdings are balances
            p.symbol: p.qty
            for p in executor.book.ledger.positions.values()
            if p.venue == venue and p.instrument == "perp"
        }
        for symbol in set(held) | set(ours):
            a, b = held.get(symbol, 0.0), ours.get(symbol, 0.0)
            if abs(a - b) > 1e-9 * max(1.0, abs(a), abs(b)):
                await _critical(
                    ctx,
                    f"position-drift:{venue}:{symbol}",
                    f"position mismatch on {venue} {symbol}",
                    f"venue holds {a:.12g}, ledger holds {b:.12g}",
                )


async def _check_spot_holdings(ctx: ServiceContext, executor: Executor) -> None:
    """Spot holdings are account balances, which may also hold the owner's own coins, so the
    venue only has to hold at least what the ledger says; less means a sell would fail."""
    for venue, client in executor.spot.items():
        ours = {
            p.symbol: p.qty
            for p in executor.book.ledger.positions.values()
            if p.venue == venue and p.instrument == "spot" and p.qty > 0
        }
        if not ours:
            continue
        try:
            balances = {b.asset: b.total for b in await client.fetch_balance()}
        except (VenueError, TimeoutError) as exc:
            log.error("spot balances of %s unavailable for reconciliation: %s", venue, exc)
            continue
        for symbol, qty in ours.items():
            asset = base_asset(symbol)
            held = balances.get(asset or "", 0.0)
            if held < qty * (1 - 1e-9):
                await _critical(
                    ctx,
                    f"spot-shortfall:{venue}:{symbol}",
                    f"spot holding short on {venue} {symbol}",
                    f"venue balance {asset} {held:.12g}, ledger holds {qty:.12g}",
                )


async def _critical(ctx: ServiceContext, key: str, title: str, text: str) -> None:
    """A reconciliation difference: it needs a human, so it is a critical risk alert."""
    now = ctx.runtime.clock.now_ms()
    await ctx.runtime.emit(
        [Alert(ts_ms=now, key=key, kind="risk", severity="critical", title=title, text=text)]
    )
