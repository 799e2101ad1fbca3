"""The venue interface every client implements, and the errors it raises.

Services depend on this protocol, never on ccxt directly: the ccxt client is one implementation
(live venues and the simulator alike), and tests may script another. All prices are USD (quote
currency), quantities are in base-asset units, funding rates are fractions per interval.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol, runtime_checkable

import msgspec

from hean_proto.events import (
    BookTop,
    FundingRate,
    Liquidation,
    OpenInterest,
    PriceTick,
)

OrderStatus = Literal["open", "partially_filled", "filled", "canceled", "rejected", "unknown"]


class MarketInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One perpetual market as the venue describes it."""

    venue: str
    symbol: str
    """Canonical BASEQUOTE (``BTCUSDT``): the same on every venue, safe as a NATS token."""
    venue_symbol: str
    """ccxt unified symbol (``BTC/USDT:USDT``), what ccxt calls take."""
    native_id: str
    """The venue's own id (``BTCUSDT``, ``BTC-USDT-SWAP``)."""
    listed_ms: int | None = None
    contract_size: float = 1.0
    """Base-asset units per contract (OKX BTC-USDT-SWAP: 0.01)."""
    tick_size: float | None = None
    lot_size: float | None = None
    min_qty: float | None = None
    taker_fee: float | None = None
    maker_fee: float | None = None
    interval_hours: float | None = None
    active: bool = True


class Balance(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    asset: str
    total: float
    free: float


class VenuePosition(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    qty: float
    """Signed base-asset quantity: positive long, negative short."""
    entry_price: float | None = None
    mark_price: float | None = None
    unrealized_usd: float = 0.0


class OrderResult(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    symbol: str
    client_order_id: str
    venue_order_id: str | None
    side: Literal["buy", "sell"]
    qty: float
    status: OrderStatus
    filled_qty: float = 0.0
    avg_price: float | None = None
    fee_usd: float = 0.0
    ts_ms: int = 0
    reason: str = ""


class VenueFundingPayment(msgspec.Struct, frozen=True, kw_only=True):
    """Funding the account received (positive) or paid (negative), as the venue booked it."""

    venue: str
    symbol: str
    ts_ms: int
    amount_usd: float
    rate: float | None = None
    """The settled rate where the venue reports it with the payment (Bybit does)."""


class VenueError(Exception):
    """A venue call failed; the message names the venue and the endpoint."""

    def __init__(self, venue: str, endpoint: str, message: str) -> None:
        super().__init__(f"{venue} {endpoint}: {message}")
        self.venue = venue
        self.endpoint = endpoint


class VenueUnavailable(VenueError):
    """Transient trouble (rate limit, 5xx, timeout, network) that outlasted the retries."""


class VenueDataError(VenueError):
    """The venue answered with something that is not usable data; never published."""

    def __init__(self, venue: str, endpoint: str, field: str, message: str) -> None:
        super().__init__(venue, endpoint, f"field {field!r}: {message}")
        self.field = field


class OrderNotFound(VenueError):
    """No order with this client order id exists at the venue."""


class DuplicateClientOrderId(VenueError):
    """The venue already holds an order with this client order id."""


class OrderRejected(VenueError):
    """The venue refused the order (margin, size, price, reduce-only)."""


@runtime_checkable
class VenueClient(Protocol):
    venue: str

    async def load_markets(self) -> list[MarketInfo]: ...

    async def fetch_funding_rates(self, symbols: list[str] | None = None) -> list[FundingRate]: ...

    async def fetch_funding_history(
        self, symbol: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[FundingRate]: ...

    async def fetch_open_interest(self, symbol: str) -> OpenInterest: ...

    async def fetch_open_interest_history(
        self, symbol: str, since_ms: int | None = None, limit: int | None = None
    ) -> list[OpenInterest]: ...

    async def fetch_prices(self, symbols: list[str] | None = None) -> list[PriceTick]: ...

    async def fetch_book_top(self, symbol: str, depth: int = 5) -> BookTop: ...

    def watch_liquidations(
        self, symbols: list[str] | None = None
    ) -> AsyncIterator[Liquidation]: ...

    async def fetch_balance(self) -> list[Balance]: ...

    async def fetch_positions(self) -> list[VenuePosition]: ...

    async def create_order(
        self,
        symbol: str,
        side: Literal["buy", "sell"],
        qty: float,
        client_order_id: str,
        *,
        price: float | None = None,
        reduce_only: bool = False,
    ) -> OrderResult: ...

    async def cancel_order(self, symbol: str, client_order_id: str) -> OrderResult: ...

    async def fetch_order(self, symbol: str, client_order_id: str) -> OrderResult: ...

    async def fetch_open_orders(self, symbol: str | None = None) -> list[OrderResult]: ...

    async def fetch_funding_payments(
        self, symbol: str | None = None, since_ms: int | None = None
    ) -> list[VenueFundingPayment]: ...

    async def close(self) -> None: ...
