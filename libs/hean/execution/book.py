"""The router's durable state: every order and intent it touched, and the ledger.

Kept as one document in the JetStream KV bucket ``hean_router`` so that an order record, the
fill it produced and the position it moved are written together or not at all. An order is
written as ``in_flight`` before it is sent; after a crash every order still in flight or
``unknown`` is settled by looking it up at the venue, never by sending it again.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from hean.execution.ledger import Ledger
from hean_proto.events import OrderUpdate
from hean_proto.types import Instrument

OrderStatus = Literal[
    "in_flight",
    "open",
    "partially_filled",
    "filled",
    "canceled",
    "rejected",
    "unknown",
    "unwound",
]
TERMINAL = frozenset({"filled", "canceled", "rejected", "unwound"})
KEY = "book"
KEEP_DONE_MS = 24 * 3_600_000
"""Finished intents and orders are kept this long: longer than any redelivery or replay."""


class OrderRecord(msgspec.Struct, kw_only=True):
    client_order_id: str
    intent_id: str
    venue: str
    symbol: str
    side: Literal["buy", "sell"]
    qty: float
    instrument: Instrument = "perp"
    """Which of the venue's markets the order went to; lookups and cancels go there too."""
    reduce_only: bool = False
    role: Literal["leg", "unwind", "flatten"] = "leg"
    status: OrderStatus = "in_flight"
    filled_qty: float = 0.0
    avg_price: float | None = None
    venue_order_id: str | None = None
    fee_usd: float = 0.0
    parent: str = ""
    """For an unwind: the client order id of the leg it unwinds."""
    reason: str = ""
    created_ms: int = 0
    updated_ms: int = 0

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def update_event(self, ts_ms: int, status: str | None = None, reason: str = "") -> OrderUpdate:
        return OrderUpdate(
            ts_ms=ts_ms,
            client_order_id=self.client_order_id,
            intent_id=self.intent_id,
            venue=self.venue,
            symbol=self.symbol,
            side=self.side,
            qty=self.qty,
            status=status or self.status,  # type: ignore[arg-type]
            filled_qty=self.filled_qty,
            avg_price=self.avg_price,
            venue_order_id=self.venue_order_id,
            reason=reason or self.reason,
            instrument=self.instrument,
        )


class IntentRecord(msgspec.Struct, kw_only=True):
    id: str
    status: Literal["executing", "done", "refused", "failed", "unwound"] = "executing"
    legs: list[str] = msgspec.field(default_factory=list)
    reason: str = ""
    created_ms: int = 0
    updated_ms: int = 0


class RouterBook(msgspec.Struct, kw_only=True):
    orders: dict[str, OrderRecord] = msgspec.field(default_factory=dict)
    intents: dict[str, IntentRecord] = msgspec.field(default_factory=dict)
    ledger: Ledger = msgspec.field(default_factory=Ledger)

    def unsettled(self) -> list[OrderRecord]:
        """Orders whose outcome the venue still has to confirm."""
        return [o for o in self.orders.values() if not o.done]

    def prune(self, now_ms: int) -> None:
        cutoff = now_ms - KEEP_DONE_MS
        self.orders = {
            k: o for k, o in self.orders.items() if not (o.done and o.updated_ms < cutoff)
        }
        self.intents = {
            k: i
            for k, i in self.intents.items()
            if i.status == "executing" or i.updated_ms >= cutoff
        }

    def encode(self) -> bytes:
        return msgspec.json.encode(self)

    @classmethod
    def decode(cls, data: bytes | None) -> RouterBook:
        if not data:
            return cls()
        return msgspec.json.decode(data, type=cls)
