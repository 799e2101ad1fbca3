"""Turns approved intents into venue orders: idempotent, multi-leg as one unit, fail closed.

For every leg the order is written to the router's book as ``in_flight`` before it is sent.
A timeout, a transport error or a duplicate-id answer leaves the order ``unknown`` until a
lookup by client order id settles it; nothing is ever sent twice. When the legs of an intent
end up unequally filled (one rejected, one unknown, one too slow), the surplus of the others
is unwound with reduce-only orders so that the unit stays hedged, and the events say so.

Spot legs go to the venue's spot client (``spot``), perpetual legs to its perpetual client;
a spot sell is sent only out of what the ledger holds, never to open a short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from hean.clock import Clock
from hean.execution import ids
from hean.execution.book import IntentRecord, OrderRecord, RouterBook
from hean.execution.gate import RiskGate
from hean.execution.store import BookStore
from hean.venues.base import (
    DuplicateClientOrderId,
    OrderNotFound,
    OrderRejected,
    OrderResult,
    VenueClient,
    VenueError,
)
from hean_proto.events import Alert, Event, Fill, IntentLeg, OrderIntent

log = logging.getLogger("hean.execution")

EPS = 1e-9
Emit = Callable[[Iterable[Event]], Awaitable[None]]


@dataclass
class ExecConfig:
    order_timeout_s: float = 10.0
    lookup_attempts: int = 5
    lookup_delay_s: float = 0.2
    leg_fill_timeout_s: float = 5.0
    """How long a unit may stay unequally filled before the surplus is unwound."""
    poll_interval_s: float = 0.2
    max_intent_age_ms: int = 30_000
    unknown_grace_ms: int = 120_000
    """An order not found at the venue this long after it was sent never reached it."""
    paper: bool = True


class ExecMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry or CollectorRegistry()
        self.orders = Counter(
            "hean_orders_total", "Orders by final status.", ["venue", "status"], registry=reg
        )
        self.rejected = Counter(
            "hean_orders_rejected_total",
            "Orders the venue refused or the router refused to send.",
            ["venue", "origin"],
            registry=reg,
        )
        self.intents = Counter(
            "hean_intents_total", "Intents by outcome.", ["outcome"], registry=reg
        )
        self.lookups = Counter(
            "hean_order_lookups_total",
            "Orders settled by looking them up by client order id.",
            ["venue", "result"],
            registry=reg,
        )
        self.unwinds = Counter(
            "hean_unwinds_total", "Unwind orders sent for lone legs.", ["venue"], registry=reg
        )


class Executor:
    def __init__(
        self,
        venues: dict[str, VenueClient],
        store: BookStore,
        book: RouterBook,
        gate: RiskGate,
        clock: Clock,
        emit: Emit,
        config: ExecConfig | None = None,
        metrics: ExecMetrics | None = None,
        spot: dict[str, VenueClient] | None = None,
    ) -> None:
        self.venues = venues
        self.spot = spot or {}
        """Spot clients by venue, for spot legs; a venue without one refuses them."""
        self.store = store
        self.book = book
        self.gate = gate
        self.clock = clock
        self.emit = emit
        self.config = config or ExecConfig()
        self.metrics = metrics or ExecMetrics()
        self._lock = asyncio.Lock()
        self._traded: set[str] = set()
        """Venues with fills since their funding payments were last collected."""

    def client(self, venue: str, instrument: str = "perp") -> VenueClient | None:
        return (self.spot if instrument == "spot" else self.venues).get(venue)

    async def save(self) -> None:
        self.book.prune(self.clock.now_ms())
        await self.store.save(self.book)

    # ------------------------------------------------------------------ intents

    async def execute(self, intent: OrderIntent) -> str:
        """Execute one intent; returns the intent's outcome. Safe to call twice."""
        async with self._lock:
            return await self._execute(intent)

    async def _execute(self, intent: OrderIntent) -> str:
        now = self.clock.now_ms()
        known = self.book.intents.get(intent.id)
        if known is not None and known.status != "executing":
            self.metrics.intents.labels("duplicate").inc()
            log.info("intent %s already %s; not executed again", intent.id, known.status)
            return "duplicate"
        if known is not None:
            log.warning("intent %s was interrupted; settling it by lookup", intent.id)
            await self._settle_unit(known)
            return known.status
        refusal = self._refusal(intent, now)
        if refusal is not None:
            record = IntentRecord(
                id=intent.id, status="refused", reason=refusal, created_ms=now, updated_ms=now
            )
            self.book.intents[intent.id] = record
            await self.save()
            self.metrics.intents.labels("refused").inc()
            log.warning("intent %s refused: %s", intent.id, refusal)
            await self.emit(
                [self._refused_update(intent, leg, refusal, now) for leg in intent.legs]
            )
            return "refused"
        record = IntentRecord(
            id=intent.id,
            legs=[leg.client_order_id for leg in intent.legs],
            created_ms=now,
            updated_ms=now,
        )
        self.book.intents[intent.id] = record
        await asyncio.gather(*(self._place(intent.id, leg) for leg in intent.legs))
        await self._settle_unit(record)
        return record.status

    def _refusal(self, intent: OrderIntent, now: int) -> str | None:
        gate = self.gate.refusal(intent.reduce_only, now)
        if gate is not None:
            return f"refused: {gate}"
        age = now - intent.ts_ms
        if age > self.config.max_intent_age_ms:
            return f"refused: intent expired ({age} ms old)"
        if not intent.legs:
            return "refused: intent has no legs"
        cids = [leg.client_order_id for leg in intent.legs]
        if len(set(cids)) != len(cids):
            return "refused: duplicate client order ids in one intent"
        for leg in intent.legs:
            if not ids.is_valid(leg.client_order_id):
                return f"refused: invalid client order id {leg.client_order_id!r}"
            if leg.client_order_id in self.book.orders:
                return f"refused: client order id {leg.client_order_id} already used"
            if self.client(leg.venue, leg.instrument) is None:
                return f"refused: {leg.instrument} venue {leg.venue} not configured"
            if leg.qty <= 0:
                return f"refused: leg {leg.client_order_id} has no quantity"
            held = self.book.ledger.qty(leg.venue, leg.symbol, leg.instrument)
            where = f"{leg.venue}:{leg.symbol} {leg.instrument}"
            reduces = (held > 0 and leg.side == "sell") or (held < 0 and leg.side == "buy")
            if (leg.reduce_only or intent.reduce_only) and not reduces:
                return f"refused: reduce-only leg on {where} would open"
            if leg.instrument == "spot" and leg.side == "sell" and leg.qty > held * (1 + EPS):
                return (
                    f"refused: spot sell of {leg.qty:.12g} on {where} would open a short "
                    f"(holds {held:.12g}; spot is not borrowed)"
                )
        return None

    def _refused_update(self, intent: OrderIntent, leg: IntentLeg, reason: str, now: int):
        order = OrderRecord(
            client_order_id=leg.client_order_id,
            intent_id=intent.id,
            venue=leg.venue,
            symbol=leg.symbol,
            side=leg.side,
            qty=leg.qty,
            instrument=leg.instrument,
            status="rejected",
            reason=reason,
        )
        self.metrics.rejected.labels(leg.venue, "router").inc()
        return order.update_event(now)

    # ------------------------------------------------------------------ one order

    async def _place(
        self, intent_id: str, leg: IntentLeg, role: str = "leg", parent: str = ""
    ) -> OrderRecord:
        cid = leg.client_order_id
        existing = self.book.orders.get(cid)
        if existing is not None:
            if not existing.done:
                await self._apply(existing, await self._lookup(existing))
            return existing
        now = self.clock.now_ms()
        qty = await self._lot(leg.venue, leg.symbol, leg.qty, leg.instrument)
        order = OrderRecord(
            client_order_id=cid,
            intent_id=intent_id,
            venue=leg.venue,
            symbol=leg.symbol,
            side=leg.side,
            qty=qty,
            instrument=leg.instrument,
            reduce_only=leg.reduce_only,
            role=role,  # type: ignore[arg-type]
            parent=parent,
            created_ms=now,
            updated_ms=now,
        )
        self.book.orders[cid] = order
        if qty <= 0:
            order.status = "rejected"
            order.reason = f"refused: {leg.qty:.12g} is below the lot size of {leg.venue}"
            await self._apply(order, None)
            return order
        await self.save()  # recorded as in flight before it is sent
        await self.emit([order.update_event(now)])
        client = self.client(leg.venue, leg.instrument)
        assert client is not None  # checked by _refusal, and unwinds follow their leg
        result: OrderResult | None
        try:
            result = await asyncio.wait_for(
                client.create_order(leg.symbol, leg.side, qty, cid, reduce_only=leg.reduce_only),
                self.config.order_timeout_s,
            )
        except DuplicateClientOrderId:
            log.warning("order %s already at %s; looking it up", cid, leg.venue)
            result = await self._lookup(order)
        except OrderRejected as exc:
            order.status = "rejected"
            order.reason = str(exc)
            result = None
        except (TimeoutError, VenueError) as exc:
            log.warning("order %s outcome unknown (%s); looking it up", cid, exc)
            result = await self._lookup(order)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a client bug must not turn into a resend
            log.exception("order %s: unexpected client error; looking it up", cid)
            order.reason = f"client error: {exc!r}"
            result = await self._lookup(order)
        await self._apply(order, result)
        return order

    async def _lot(self, venue: str, symbol: str, qty: float, instrument: str = "perp") -> float:
        """The quantity the venue will take: rounded down to its lot where the client knows it."""
        rounder = getattr(self.client(venue, instrument), "round_qty", None)
        if rounder is None:
            return qty
        try:
            return await asyncio.wait_for(rounder(symbol, qty), self.config.order_timeout_s)
        except (TimeoutError, VenueError) as exc:
            log.warning("lot size of %s %s unknown (%s); sending %.12g", venue, symbol, exc, qty)
            return qty

    async def _lookup(self, order: OrderRecord) -> OrderResult | None:
        """Settle an order of unknown outcome by its client order id; None if still unknown."""
        client = self.client(order.venue, order.instrument)
        if client is None:
            return None
        for attempt in range(self.config.lookup_attempts):
            try:
                result = await asyncio.wait_for(
                    client.fetch_order(order.symbol, order.client_order_id),
                    self.config.order_timeout_s,
                )
                self.metrics.lookups.labels(order.venue, "found").inc()
                return result
            except OrderNotFound:
                self.metrics.lookups.labels(order.venue, "not_found").inc()
                if self.clock.now_ms() - order.created_ms > self.config.unknown_grace_ms:
                    order.status = "rejected"
                    order.reason = "never reached the venue (not found after grace period)"
                    return None
            except (TimeoutError, VenueError) as exc:
                self.metrics.lookups.labels(order.venue, "error").inc()
                log.warning("lookup of %s failed: %s", order.client_order_id, exc)
            if attempt < self.config.lookup_attempts - 1:
                await asyncio.sleep(self.config.lookup_delay_s * (attempt + 1))
        return None

    async def _apply(self, order: OrderRecord, result: OrderResult | None) -> None:
        """Record a venue answer (or its absence), apply new fills, then publish."""
        now = self.clock.now_ms()
        events: list[Event] = []
        if result is None:
            if order.status != "rejected":
                order.status = "unknown"
        else:
            new = self.book.ledger.new_fill_qty(order.client_order_id, result.filled_qty)
            if new > EPS and result.avg_price:
                prev_qty = result.filled_qty - new
                prev_cost = prev_qty * (order.avg_price or result.avg_price)
                price = (result.filled_qty * result.avg_price - prev_cost) / new
                if price <= 0:
                    price = result.avg_price
                fee = max(result.fee_usd - order.fee_usd, 0.0)
                fill = Fill(
                    ts_ms=result.ts_ms or now,
                    fill_id=f"{order.client_order_id}:{result.filled_qty:.12g}",
                    client_order_id=order.client_order_id,
                    intent_id=order.intent_id,
                    venue=order.venue,
                    symbol=order.symbol,
                    side=order.side,
                    qty=new,
                    price=price,
                    fee_usd=fee,
                    paper=self.config.paper,
                    instrument=order.instrument,
                )
                events.append(fill)
                events.append(self.book.ledger.apply_fill(fill))
                if order.instrument == "perp":
                    self._traded.add(order.venue)
                order.fee_usd = result.fee_usd
            order.filled_qty = result.filled_qty
            order.avg_price = result.avg_price or order.avg_price
            order.venue_order_id = result.venue_order_id or order.venue_order_id
            order.status = result.status
            if result.reason:
                order.reason = result.reason
        order.updated_ms = now
        if order.done:
            self.metrics.orders.labels(order.venue, order.status).inc()
            if order.status == "rejected":
                self.metrics.rejected.labels(order.venue, "venue").inc()
        await self.save()
        await self.emit([order.update_event(now), *events])

    # ------------------------------------------------------------------ the unit

    async def _wait_for_legs(self, orders: list[OrderRecord]) -> None:
        """Poll open legs until filled or the unit timeout; then cancel what still rests."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.leg_fill_timeout_s
        while any(o.status in ("open", "partially_filled", "in_flight") for o in orders):
            if loop.time() >= deadline:
                break
            await asyncio.sleep(self.config.poll_interval_s)
            for o in orders:
                if o.status in ("open", "partially_filled", "in_flight"):
                    await self._apply(o, await self._lookup(o))
        for o in orders:
            if o.status in ("open", "partially_filled"):
                await self._cancel(o)

    async def _cancel(self, order: OrderRecord) -> None:
        client = self.client(order.venue, order.instrument)
        if client is None:
            return
        try:
            result = await asyncio.wait_for(
                client.cancel_order(order.symbol, order.client_order_id),
                self.config.order_timeout_s,
            )
        except OrderNotFound:
            result = await self._lookup(order)
        except (TimeoutError, VenueError) as exc:
            log.warning("cancel of %s failed: %s", order.client_order_id, exc)
            result = await self._lookup(order)
        await self._apply(order, result)

    async def _settle_unit(self, record: IntentRecord) -> None:
        orders: list[OrderRecord] = []
        for cid in record.legs:
            order = self.book.orders.get(cid)
            if order is None:  # never sent before an interruption: it will not be sent now
                continue
            if not order.done and order.status != "unknown":
                await self._apply(order, await self._lookup(order))
            orders.append(order)
        await self._wait_for_legs(orders)
        ratios = {cid: 0.0 for cid in record.legs}
        for o in orders:
            if o.qty > 0:
                ratios[o.client_order_id] = min(o.filled_qty / o.qty, 1.0)
        failed = [
            self.book.orders.get(cid)
            for cid, r in ratios.items()
            if r < 1.0 - EPS and (cid not in self.book.orders or self.book.orders[cid].done)
        ]
        unknown = [o for o in orders if o.status == "unknown"]
        floor = min(ratios.values()) if ratios else 0.0
        if unknown:
            floor = 0.0  # an unknown leg may or may not exist: hold nothing alone
        if floor >= 1.0 - EPS:
            record.status = "done"
        else:
            why = self._why(record, failed, unknown)
            for o in orders:
                keep = floor * o.qty
                surplus = o.filled_qty - keep - self._unwound(o)
                if surplus > EPS and o.status != "unknown":
                    await self._unwind(o, surplus, why)
            record.status = "unwound" if floor <= EPS else "done"
            record.reason = why if floor <= EPS else f"trimmed to {floor:.0%}: {why}"
        record.updated_ms = self.clock.now_ms()
        self.metrics.intents.labels(record.status).inc()
        await self.save()
        if record.status == "unwound":
            log.warning("intent %s unwound: %s", record.id, record.reason)

    @staticmethod
    def _why(record: IntentRecord, failed: list, unknown: list[OrderRecord]) -> str:
        parts = []
        for o in failed:
            if o is None:
                parts.append("a leg was never sent")
            elif o.status != "unknown":
                parts.append(f"leg {o.client_order_id} on {o.venue} {o.status}: {o.reason}")
        for o in unknown:
            parts.append(f"leg {o.client_order_id} on {o.venue} unknown")
        return "; ".join(parts) or "legs filled unequally"

    def _unwound(self, order: OrderRecord) -> float:
        return sum(
            o.filled_qty
            for o in self.book.orders.values()
            if o.role == "unwind" and o.parent == order.client_order_id
        )

    async def _unwind(self, order: OrderRecord, qty: float, why: str) -> None:
        if await self._lot(order.venue, order.symbol, qty, order.instrument) <= 0:
            log.info(
                "%s: surplus %.12g is below the lot size of %s; kept (%s)",
                order.client_order_id,
                qty,
                order.venue,
                why,
            )
            return
        cid = ids.derived_order_id("u", order.client_order_id, f"{order.filled_qty:.12g}")
        leg = IntentLeg(
            client_order_id=cid,
            venue=order.venue,
            symbol=order.symbol,
            side="sell" if order.side == "buy" else "buy",
            qty=qty,
            notional_usd=qty * (order.avg_price or 0.0),
            instrument=order.instrument,
            reduce_only=True,
        )
        self.metrics.unwinds.labels(order.venue).inc()
        unwind = await self._place(
            order.intent_id, leg, role="unwind", parent=order.client_order_id
        )
        now = self.clock.now_ms()
        order.status = "unwound"
        order.reason = f"unwound {qty:.12g}: {why}"
        order.updated_ms = now
        await self.save()
        events: list[Event] = [order.update_event(now)]
        if unwind.filled_qty < qty - EPS:
            events.append(
                Alert(
                    ts_ms=now,
                    key=f"unwind:{cid}",
                    kind="risk",
                    severity="critical",
                    title=f"unwind of {order.venue} {order.symbol} incomplete",
                    text=f"{order.client_order_id}: unwound {unwind.filled_qty:.12g} of "
                    f"{qty:.12g} ({unwind.status}: {unwind.reason}); act by hand",
                )
            )
        await self.emit(events)

    # ------------------------------------------------------------------ operator commands

    async def cancel_all(self) -> int:
        """Cancel every open order at every venue; returns how many were cancelled."""
        async with self._lock:
            cancelled = 0
            clients = [(v, c, "perp") for v, c in self.venues.items()]
            clients += [(v, c, "spot") for v, c in self.spot.items()]
            for venue, client, instrument in clients:
                try:
                    open_orders = await asyncio.wait_for(
                        client.fetch_open_orders(), self.config.order_timeout_s
                    )
                except (TimeoutError, VenueError) as exc:
                    log.error("cancel_all: open orders of %s unavailable: %s", venue, exc)
                    continue
                for found in open_orders:
                    order = self.book.orders.get(found.client_order_id)
                    if order is None:
                        order = OrderRecord(
                            client_order_id=found.client_order_id,
                            intent_id="external",
                            venue=venue,
                            symbol=found.symbol,
                            side=found.side,
                            qty=found.qty,
                            instrument=instrument,  # type: ignore[arg-type]
                            status=found.status,
                            created_ms=self.clock.now_ms(),
                        )
                        self.book.orders[found.client_order_id] = order
                    await self._cancel(order)
                    cancelled += 1
            return cancelled

    async def flatten(self, tag: str) -> int:
        """Close every open position with reduce-only orders; returns orders sent."""
        async with self._lock:
            sent = 0
            for pos in list(self.book.ledger.open_positions()):
                if self.client(pos.venue, pos.instrument) is None:
                    continue
                parts = (pos.venue, pos.symbol) + (("spot",) if pos.instrument == "spot" else ())
                cid = ids.derived_order_id("f", *parts, tag)
                leg = IntentLeg(
                    client_order_id=cid,
                    venue=pos.venue,
                    symbol=pos.symbol,
                    side="sell" if pos.qty > 0 else "buy",
                    qty=abs(pos.qty),
                    notional_usd=abs(pos.qty) * (pos.mark_price or pos.entry_price or 0.0),
                    instrument=pos.instrument,
                    reduce_only=True,
                )
                await self._place(f"flatten-{tag}", leg, role="flatten")
                sent += 1
            return sent

    # ------------------------------------------------------------------ funding

    async def collect_funding(self) -> int:
        """Book the funding the venues paid or charged on our positions; returns how many.

        Live positions are charged by the venue, so the ledger takes the venue's own amounts
        (``fetch_funding_payments``) rather than estimating them from rates. Venues are asked
        about every symbol held now or traded since the last collection; a venue that does not
        answer is asked again next time, and a payment is never booked twice.
        """
        async with self._lock:
            ledger = self.book.ledger
            traded, self._traded = self._traded, set()
            booked = 0
            events: list[Event] = []
            for venue, client in self.venues.items():
                books = [
                    p
                    for p in ledger.positions.values()
                    if p.venue == venue and p.instrument == "perp" and (p.qty or venue in traded)
                ]
                for pos in books:
                    since = max(pos.last_funding_ms + 1, pos.opened_ms)
                    try:
                        paid = await asyncio.wait_for(
                            client.fetch_funding_payments(pos.symbol, since or None),
                            self.config.order_timeout_s,
                        )
                    except (TimeoutError, VenueError) as exc:
                        log.warning("funding payments of %s %s: %s", venue, pos.symbol, exc)
                        self._traded.add(venue)
                        continue
                    for p in sorted(paid, key=lambda p: p.ts_ms):
                        if p.symbol != pos.symbol:
                            continue
                        out = ledger.book_payment(
                            venue, p.symbol, p.amount_usd, p.ts_ms, self.clock.now_ms(), p.rate
                        )
                        if out is not None:
                            events.extend(out)
                            booked += 1
            if booked:
                await self.save()
                await self.emit(events)
            return booked

    # ------------------------------------------------------------------ recovery

    async def reconcile(self) -> None:
        """Settle every order and intent left open by a crash, by lookup only."""
        async with self._lock:
            late: list[OrderRecord] = []
            for order in self.book.unsettled():
                before = order.filled_qty
                await self._apply(order, await self._lookup(order))
                if order.role == "leg" and order.filled_qty > before + EPS:
                    late.append(order)
            for record in list(self.book.intents.values()):
                if record.status == "executing":
                    log.warning("settling interrupted intent %s", record.id)
                    await self._settle_unit(record)
            for order in late:
                record = self.book.intents.get(order.intent_id)
                surplus = order.filled_qty - self._unwound(order)
                if record is not None and record.status == "unwound" and surplus > EPS:
                    await self._unwind(order, surplus, "filled after its unit was unwound")
