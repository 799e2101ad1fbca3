"""Accounts and the matching engine: orders fill against the simulated book with fees.

Client order ids are unique per account, as on the real venues; positions are netted one-way;
funding is paid or received at each settlement of a symbol with an open position.

Spot is a separate wallet per account, as on the venues: market orders fill against the spot
book, a buy pays USDT out of the balance, a sell needs the base asset held (no borrowing),
the commission is charged in USDT at ``SPOT_TAKER_FEE``, and holdings never pay funding.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from hean.sim.market import Market, Series
from hean.sim.scenario import Account

SPOT_TAKER_FEE = 0.001
"""Base-tier spot taker commission on Binance, Bybit and OKX (0.1 %)."""


class OrderError(Exception):
    """A rejected order; ``kind`` picks the venue's own error code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class SimOrder:
    order_id: str
    client_id: str
    venue: str
    symbol: str
    side: str
    qty: float
    price: float | None
    reduce_only: bool
    created_ms: int
    status: str = "NEW"
    """NEW, PARTIALLY_FILLED, FILLED, CANCELED, REJECTED."""
    filled: float = 0.0
    notional: float = 0.0
    fee: float = 0.0
    updated_ms: int = 0

    @property
    def avg_price(self) -> float:
        return self.notional / self.filled if self.filled else 0.0

    @property
    def open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")


@dataclass
class SimPosition:
    qty: float = 0.0
    entry: float = 0.0
    realized: float = 0.0


@dataclass
class FundingEntry:
    ts_ms: int
    symbol: str
    rate: float
    amount: float
    """Signed USDT: positive received, negative paid."""
    position_qty: float
    mark: float
    tran_id: int


@dataclass
class VenueAccount:
    """One account on one venue."""

    venue: str
    creds: Account
    balance: float
    orders: dict[str, SimOrder] = field(default_factory=dict)
    by_client: dict[str, str] = field(default_factory=dict)
    positions: dict[str, SimPosition] = field(default_factory=dict)
    funding: list[FundingEntry] = field(default_factory=list)
    spot: dict[str, float] = field(default_factory=dict)
    """Spot holdings: base units per spot symbol (``BTCUSDT``)."""
    spot_orders: dict[str, SimOrder] = field(default_factory=dict)
    spot_by_client: dict[str, str] = field(default_factory=dict)


class Engine:
    def __init__(self, market: Market, accounts: list[Account]) -> None:
        self.market = market
        self.ids = itertools.count(1_000_000_001)
        self.accounts: dict[tuple[str, str], VenueAccount] = {}
        for acc in accounts:
            for venue in ("binance", "bybit", "okx"):
                self.accounts[(venue, acc.api_key)] = VenueAccount(venue, acc, acc.balance_usdt)
        market.settle_listeners.append(self._on_settlement)

    def account(self, venue: str, api_key: str) -> VenueAccount | None:
        return self.accounts.get((venue, api_key))

    def place(
        self,
        acct: VenueAccount,
        symbol: str,
        side: str,
        qty: float,
        client_id: str,
        price: float | None = None,
        reduce_only: bool = False,
    ) -> SimOrder:
        s = self.market.get(acct.venue, symbol)
        if s is None:
            raise OrderError("unknown_symbol", f"unknown symbol {symbol}")
        if client_id and client_id in acct.by_client:
            raise OrderError("duplicate", f"client order id {client_id} is duplicated")
        if not (qty > 0):
            raise OrderError("bad_qty", f"quantity must be positive, got {qty}")
        if side not in ("buy", "sell"):
            raise OrderError("bad_side", f"side must be buy or sell, got {side}")
        pos = acct.positions.setdefault(symbol, SimPosition())
        if reduce_only:
            closing = -pos.qty if side == "buy" else pos.qty
            if closing <= 0:
                raise OrderError("reduce_only", "reduce-only order would increase the position")
            qty = min(qty, pos.qty if side == "sell" else -pos.qty)
        mark = self.market.mark(s)
        margin_needed = qty * mark * 0.05
        if not reduce_only and margin_needed > acct.balance:
            raise OrderError("margin", "insufficient margin")
        order = self._new_order(acct, symbol, side, qty, client_id, price, reduce_only)
        acct.orders[order.order_id] = order
        acct.by_client[order.client_id] = order.order_id
        self._match(acct, order, s)
        return order

    def _new_order(
        self,
        acct: VenueAccount,
        symbol: str,
        side: str,
        qty: float,
        client_id: str,
        price: float | None = None,
        reduce_only: bool = False,
    ) -> SimOrder:
        return SimOrder(
            order_id=str(next(self.ids)),
            client_id=client_id or f"sim{next(self.ids)}",
            venue=acct.venue,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            reduce_only=reduce_only,
            created_ms=self.market.now_ms,
            updated_ms=self.market.now_ms,
        )

    def _match(self, acct: VenueAccount, order: SimOrder, s: Series) -> None:
        bids, asks = self.market.book(s, depth=20)
        levels = asks if order.side == "buy" else bids
        remaining = order.qty - order.filled
        for price, size in levels:
            if remaining <= 1e-12:
                break
            if order.price is not None and (
                (order.side == "buy" and price > order.price)
                or (order.side == "sell" and price < order.price)
            ):
                break
            take = min(size, remaining)
            self._fill(acct, order, take, price, self.market.scenario.taker_fee)
            remaining -= take
        if order.price is None and remaining > 1e-12:
            # a market order that ate the whole book: the rest is cancelled, as venues do
            order.status = "CANCELED" if order.filled == 0 else "PARTIALLY_FILLED"
            if order.filled:
                order.status = "FILLED"
                order.qty = order.filled
        order.updated_ms = self.market.now_ms

    def _fill(self, acct: VenueAccount, order: SimOrder, qty: float, price: float, fee_rate: float):
        fee = qty * price * fee_rate
        order.filled += qty
        order.notional += qty * price
        order.fee += fee
        order.status = "FILLED" if order.filled >= order.qty - 1e-12 else "PARTIALLY_FILLED"
        acct.balance -= fee
        pos = acct.positions.setdefault(order.symbol, SimPosition())
        signed = qty if order.side == "buy" else -qty
        if pos.qty == 0 or (pos.qty > 0) == (signed > 0):
            total = pos.qty + signed
            pos.entry = (pos.entry * abs(pos.qty) + price * abs(signed)) / abs(total)
            pos.qty = total
        else:
            closing = min(abs(signed), abs(pos.qty))
            pnl = closing * (price - pos.entry) * (1 if pos.qty > 0 else -1)
            pos.realized += pnl
            acct.balance += pnl
            pos.qty += signed
            if abs(pos.qty) < 1e-12:
                pos.qty, pos.entry = 0.0, 0.0
            elif (pos.qty > 0) == (signed > 0):
                pos.entry = price

    def spot_symbol(self, symbol: str) -> str | None:
        """The base asset of a spot pair the market knows (``BTCUSDT`` -> ``BTC``)."""
        base = symbol.removesuffix("USDT")
        return base if symbol.endswith("USDT") and base in self.market.price else None

    def place_spot(
        self, acct: VenueAccount, symbol: str, side: str, qty: float, client_id: str
    ) -> SimOrder:
        """A spot market order, filled at once against the spot book or refused."""
        base = self.spot_symbol(symbol)
        if base is None:
            raise OrderError("unknown_symbol", f"unknown symbol {symbol}")
        if client_id and client_id in acct.spot_by_client:
            raise OrderError("duplicate", f"client order id {client_id} is duplicated")
        if not (qty > 0):
            raise OrderError("bad_qty", f"quantity must be positive, got {qty}")
        if side not in ("buy", "sell"):
            raise OrderError("bad_side", f"side must be buy or sell, got {side}")
        held = acct.spot.get(symbol, 0.0)
        bids, asks = self.market.spot_book(base, depth=20)
        levels = asks if side == "buy" else bids
        fills, left = [], qty
        for price, size in levels:
            take = min(size, left)
            fills.append((take, price))
            left -= take
            if left <= 1e-12:
                break
        filled = sum(q for q, _ in fills)
        notional = sum(q * p for q, p in fills)
        fee = notional * SPOT_TAKER_FEE
        if side == "sell" and filled > held + 1e-12:
            raise OrderError("balance", f"insufficient {base}: sell {filled:g}, hold {held:g}")
        if side == "buy" and notional + fee > acct.balance:
            raise OrderError("balance", f"insufficient USDT for {notional + fee:.2f}")
        order = self._new_order(acct, symbol, side, qty, client_id)
        order.filled, order.notional, order.fee = filled, notional, fee
        order.status = "FILLED" if left <= 1e-12 else "EXPIRED"
        acct.spot[symbol] = held + (filled if side == "buy" else -filled)
        acct.balance += (-notional if side == "buy" else notional) - fee
        acct.spot_orders[order.order_id] = order
        acct.spot_by_client[order.client_id] = order.order_id
        return order

    def find_spot(
        self, acct: VenueAccount, client_id: str = "", order_id: str = ""
    ) -> SimOrder | None:
        return acct.spot_orders.get(order_id or acct.spot_by_client.get(client_id, ""))

    def cancel(self, acct: VenueAccount, symbol: str, client_id: str) -> SimOrder:
        order = self.find(acct, client_id)
        if order is None or order.symbol != symbol:
            raise OrderError("not_found", f"order {client_id} does not exist")
        if not order.open:
            raise OrderError("not_open", f"order {client_id} is {order.status.lower()}")
        order.status = "CANCELED"
        order.updated_ms = self.market.now_ms
        return order

    def find(self, acct: VenueAccount, client_id: str = "", order_id: str = "") -> SimOrder | None:
        oid = order_id or acct.by_client.get(client_id, "")
        order = acct.orders.get(oid)
        if order is not None and order.open and order.price is not None:
            s = self.market.get(acct.venue, order.symbol)
            if s is not None:
                self._match(acct, order, s)
        return order

    def open_orders(self, acct: VenueAccount, symbol: str | None = None) -> list[SimOrder]:
        for order in list(acct.orders.values()):
            if order.open:
                self.find(acct, order_id=order.order_id)
        return [
            o for o in acct.orders.values() if o.open and (symbol is None or o.symbol == symbol)
        ]

    def unrealized(self, acct: VenueAccount, symbol: str) -> float:
        pos = acct.positions.get(symbol)
        s = self.market.get(acct.venue, symbol)
        if pos is None or s is None or pos.qty == 0:
            return 0.0
        return pos.qty * (self.market.mark(s) - pos.entry)

    def _on_settlement(self, s: Series, t_ms: int, rate: float, mark: float) -> None:
        for (venue, _), acct in self.accounts.items():
            if venue != s.venue:
                continue
            pos = acct.positions.get(s.symbol)
            if pos is None or pos.qty == 0:
                continue
            amount = -pos.qty * mark * rate
            acct.balance += amount
            acct.funding.append(
                FundingEntry(t_ms, s.symbol, rate, amount, pos.qty, mark, next(self.ids))
            )
