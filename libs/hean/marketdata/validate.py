"""Checking venue data before it becomes an event.

Struct constructors do not enforce the wire constraints; a round trip through the codec
does, so a NaN rate, a negative price or an unsafe symbol is refused here with the reason
instead of reaching the bus. Venue adapters build events from untrusted JSON.
"""

from __future__ import annotations

from typing import Protocol

from hean_proto import codec
from hean_proto.events import Event


class MarketLike(Protocol):
    """The fields of ``hean.venues.base.MarketInfo`` that market-data code relies on."""

    venue: str
    symbol: str
    venue_symbol: str
    listed_ms: int | None
    taker_fee: float
    interval_hours: float | None
    active: bool


def checked(event: Event) -> Event:
    """The event re-decoded from its wire form; raises ``codec.DecodeError`` when invalid."""
    try:
        data = codec.encode(event)
    except (TypeError, ValueError, OverflowError) as exc:
        raise codec.DecodeError(f"unencodable event: {exc}") from None
    return codec.decode(data)
