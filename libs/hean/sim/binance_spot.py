"""Binance spot (``/api/v3``) as the simulator answers it: markets, book, market orders.

Only what a spot hedge needs: the pairs of the simulated bases against USDT, their book around
the index price, and signed market orders with client order ids (create, look up, cancel,
open orders) plus the account's balances. Errors carry Binance's own spot codes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from hean.sim.binance import _params, authenticate, error
from hean.sim.engine import OrderError, SimOrder, VenueAccount
from hean.sim.market import lot_size, tick_size
from hean.sim.wire import json_response, num

if TYPE_CHECKING:
    from hean.sim.server import SimServer

SPOT_ERRORS = {
    # kind -> (http status, Binance spot error code, message)
    "balance": (400, -2010, "Account has insufficient balance for requested action."),
    "duplicate": (400, -2010, "Duplicate order sent."),
    "not_found": (400, -2013, "Order does not exist."),
    "not_open": (400, -2011, "Unknown order sent."),
}


def spot_error(kind: str) -> web.Response:
    if kind not in SPOT_ERRORS:
        return error(kind)
    status, code, text = SPOT_ERRORS[kind]
    return json_response({"code": code, "msg": text}, status=status)


def _pair(sim: SimServer, base: str) -> dict:
    price = sim.market.price[base]
    tick, lot = tick_size(price), lot_size(price)
    return {
        "symbol": f"{base}USDT",
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": "USDT",
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": f"{tick:f}",
                "maxPrice": num(price * 100, 2),
                "tickSize": f"{tick:f}",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": f"{lot:f}",
                "maxQty": "9000000",
                "stepSize": f"{lot:f}",
            },
            {"filterType": "NOTIONAL", "minNotional": "5", "applyMinToMarket": True},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
    }


async def exchange_info(sim: SimServer, request: web.Request) -> web.Response:
    symbols = [_pair(sim, base) for base in sorted(sim.market.price)]
    wanted = request.query.get("symbol")
    if wanted:
        symbols = [s for s in symbols if s["symbol"] == wanted]
    return json_response(
        {
            "timezone": "UTC",
            "serverTime": sim.market.now_ms,
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": symbols,
        }
    )


async def depth(sim: SimServer, request: web.Request) -> web.Response:
    base = sim.engine.spot_symbol(request.query.get("symbol", ""))
    if base is None:
        return error("unknown_symbol")
    bids, asks = sim.market.spot_book(base, depth=min(int(request.query.get("limit", 10)), 20))
    return json_response(
        {
            "lastUpdateId": sim.market.now_ms,
            "bids": [[num(p), num(q)] for p, q in bids],
            "asks": [[num(p), num(q)] for p, q in asks],
        }
    )


def _order(o: SimOrder) -> dict:
    return {
        "symbol": o.symbol,
        "orderId": int(o.order_id),
        "orderListId": -1,
        "clientOrderId": o.client_id,
        "transactTime": o.updated_ms,
        "time": o.created_ms,
        "updateTime": o.updated_ms,
        "price": "0.00000000",
        "origQty": num(o.qty),
        "executedQty": num(o.filled),
        "cummulativeQuoteQty": num(o.notional),
        "status": o.status,
        "timeInForce": "GTC",
        "type": "MARKET",
        "side": o.side.upper(),
        "isWorking": True,
        "workingTime": o.created_ms,
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def _full(o: SimOrder) -> dict:
    """The answer to a new order with ``newOrderRespType=FULL``: the fills and commission."""
    price = o.notional / o.filled if o.filled else 0.0
    fills = []
    if o.filled:
        fills.append(
            {
                "price": num(price),
                "qty": num(o.filled),
                "commission": num(o.fee),
                "commissionAsset": "USDT",
                "tradeId": int(o.order_id),
            }
        )
    return _order(o) | {"fills": fills}


async def new_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _params(request)
    if p.get("type", "MARKET").upper() != "MARKET":
        return error("bad_param", "the simulator's spot market takes MARKET orders only")
    try:
        order = sim.engine.place_spot(
            acct,
            p.get("symbol", ""),
            p.get("side", "").lower(),
            float(p.get("quantity", "nan")),
            p.get("newClientOrderId", ""),
        )
    except OrderError as exc:
        return spot_error(exc.kind)
    except ValueError:
        return error("bad_param")
    return json_response(_full(order))


async def get_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _params(request)
    order = sim.engine.find_spot(acct, p.get("origClientOrderId", ""), p.get("orderId", ""))
    if order is None or order.symbol != p.get("symbol"):
        return spot_error("not_found")
    return json_response(_order(order))


async def cancel_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _params(request)
    order = sim.engine.find_spot(acct, p.get("origClientOrderId", ""), p.get("orderId", ""))
    if order is None or order.symbol != p.get("symbol"):
        return spot_error("not_found")
    return spot_error("not_open")  # market orders never rest


async def open_orders(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    return json_response([])  # market orders never rest


async def account(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    balances = [{"asset": "USDT", "free": num(acct.balance), "locked": "0.00000000"}]
    for symbol, qty in sorted(acct.spot.items()):
        balances.append(
            {"asset": symbol.removesuffix("USDT"), "free": num(qty), "locked": "0.00000000"}
        )
    return json_response(
        {
            "makerCommission": 10,
            "takerCommission": 10,
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "updateTime": sim.market.now_ms,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
        }
    )


PUBLIC = {
    ("GET", "/api/v3/exchangeInfo"): exchange_info,
    ("GET", "/api/v3/depth"): depth,
}
PRIVATE = {
    ("POST", "/api/v3/order"): new_order,
    ("GET", "/api/v3/order"): get_order,
    ("DELETE", "/api/v3/order"): cancel_order,
    ("GET", "/api/v3/openOrders"): open_orders,
    ("GET", "/api/v3/account"): account,
}
__all__ = ["PRIVATE", "PUBLIC", "authenticate"]
