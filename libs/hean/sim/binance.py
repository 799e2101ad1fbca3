"""Binance USD-M futures (``/fapi``) as the simulator answers it, in Binance's own format."""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING

from aiohttp import web

from hean.sim.engine import OrderError, SimOrder, VenueAccount
from hean.sim.market import LiquidationPrint, Series, lot_size, tick_size
from hean.sim.wire import Reply, hmac_hex, json_response, liquidation_stream, num, query_int

if TYPE_CHECKING:
    from hean.sim.server import SimServer

VENUE = "binance"
ERRORS = {
    # kind -> (http status, Binance error code, message)
    "rate_limit": (
        429,
        -1003,
        "Too many requests; current limit is 2400 request weight per 1 MINUTE.",
    ),
    "unknown_symbol": (400, -1121, "Invalid symbol."),
    "duplicate": (400, -4116, "ClientOrderId is duplicated."),
    "not_found": (400, -2013, "Order does not exist."),
    "not_open": (400, -2011, "Unknown order sent."),
    "margin": (400, -2019, "Margin is insufficient."),
    "reduce_only": (400, -2022, "ReduceOnly Order is rejected."),
    "bad_qty": (400, -4003, "Quantity less than or equal to zero."),
    "bad_side": (400, -1117, "Invalid side."),
    "auth": (401, -2015, "Invalid API-key, IP, or permissions for action."),
    "signature": (400, -1022, "Signature for this request is not valid."),
    "bad_param": (400, -1102, "Mandatory parameter was not sent, was empty/null, or malformed."),
    "server": (503, -1001, "Internal error; unable to process your request. Please try again."),
}


def error(kind: str, message: str = "") -> web.Response:
    status, code, text = ERRORS.get(kind, ERRORS["bad_param"])
    return json_response({"code": code, "msg": message or text}, status=status)


def native(s: Series) -> str:
    return s.symbol


def _symbol_info(sim: SimServer, s: Series) -> dict:
    mark = sim.market.mark(s)
    tick, lot = tick_size(mark), lot_size(mark)
    return {
        "symbol": s.symbol,
        "pair": s.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": s.listed_ms,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": s.base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": max(0, -_exp10(tick)),
        "quantityPrecision": max(0, -_exp10(lot)),
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000,
        "filters": [
            {
                "maxPrice": num(mark * 100, 2),
                "tickSize": f"{tick:f}",
                "minPrice": f"{tick:f}",
                "filterType": "PRICE_FILTER",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": f"{lot:f}",
                "stepSize": f"{lot:f}",
                "maxQty": "1000000",
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": f"{lot:f}",
                "maxQty": "1000000",
                "stepSize": f"{lot:f}",
            },
            {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
        ],
        "orderTypes": ["LIMIT", "MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def _exp10(x: float) -> int:
    import math

    return math.floor(math.log10(x))


async def exchange_info(sim: SimServer, request: web.Request) -> web.Response:
    return json_response(
        {
            "timezone": "UTC",
            "serverTime": sim.market.now_ms,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 2400,
                },
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [_symbol_info(sim, s) for s in sim.market.listed(VENUE)],
        }
    )


def _premium(sim: SimServer, s: Series) -> dict:
    return {
        "symbol": s.symbol,
        "markPrice": num(sim.market.mark(s)),
        "indexPrice": num(sim.market.index(s)),
        "estimatedSettlePrice": num(sim.market.index(s)),
        "lastFundingRate": num(s.rate),
        "interestRate": "0.00010000",
        "nextFundingTime": s.next_funding_ms,
        "time": sim.market.now_ms,
    }


def _one(sim: SimServer, request: web.Request) -> Series | web.Response | None:
    name = request.query.get("symbol")
    if name is None:
        return None
    s = sim.market.get(VENUE, name)
    return s if s is not None else error("unknown_symbol")


async def premium_index(sim: SimServer, request: web.Request) -> web.Response:
    one = _one(sim, request)
    if isinstance(one, web.Response):
        return one
    if one is not None:
        return json_response(_premium(sim, one))
    return json_response([_premium(sim, s) for s in sim.market.listed(VENUE)])


async def funding_info(sim: SimServer, request: web.Request) -> web.Response:
    cap = sim.scenario.max_rate
    return json_response(
        [
            {
                "symbol": s.symbol,
                "adjustedFundingRateCap": num(cap),
                "adjustedFundingRateFloor": num(-cap),
                "fundingIntervalHours": int(s.interval_h),
                "disclaimer": False,
                "updateTime": s.listed_ms,
            }
            for s in sim.market.listed(VENUE)
        ]
    )


async def funding_rate(sim: SimServer, request: web.Request) -> web.Response:
    one = _one(sim, request)
    if isinstance(one, web.Response):
        return one
    series = [one] if one is not None else sim.market.listed(VENUE)
    start = query_int(request, "startTime")
    end = query_int(request, "endTime")
    limit = min(query_int(request, "limit", 100) or 100, 1000)
    rows = []
    for s in series:
        for t, rate, mark in s.settled:
            if (start is None or t >= start) and (end is None or t <= end):
                rows.append(
                    {
                        "symbol": s.symbol,
                        "fundingTime": t,
                        "fundingRate": num(rate),
                        "markPrice": num(mark),
                    }
                )
    rows.sort(key=lambda r: r["fundingTime"])
    rows = rows[:limit] if start is not None else rows[-limit:]
    return json_response(rows)


async def open_interest(sim: SimServer, request: web.Request) -> web.Response:
    one = _one(sim, request)
    if one is None:
        return error(
            "bad_param", "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    if isinstance(one, web.Response):
        return one
    qty = sim.market.oi_usd(one) / sim.market.mark(one)
    return json_response(
        {"openInterest": num(qty, 3), "symbol": one.symbol, "time": sim.market.now_ms}
    )


async def open_interest_hist(sim: SimServer, request: web.Request) -> web.Response:
    one = _one(sim, request)
    if one is None:
        return error("bad_param")
    if isinstance(one, web.Response):
        return one
    if request.query.get("period") not in ("1h", None):
        return error("bad_param", "Invalid period: the simulator keeps 1h open interest.")
    start = query_int(request, "startTime")
    end = query_int(request, "endTime")
    limit = min(query_int(request, "limit", 30) or 30, 500)
    rows = [
        {
            "symbol": one.symbol,
            "sumOpenInterest": num(usd / mark),
            "sumOpenInterestValue": num(usd),
            "CMCCirculatingSupply": "",
            "timestamp": t,
        }
        for t, usd, mark in one.oi_history
        if (start is None or t >= start) and (end is None or t <= end)
    ]
    return json_response(rows[:limit] if start is not None else rows[-limit:])


def _ticker(sim: SimServer, s: Series) -> dict:
    mark = sim.market.mark(s)
    return {
        "symbol": s.symbol,
        "priceChange": "0.00",
        "priceChangePercent": "0.000",
        "weightedAvgPrice": num(mark, 8),
        "lastPrice": num(mark, 8),
        "lastQty": "1",
        "openPrice": num(mark, 8),
        "highPrice": num(mark, 8),
        "lowPrice": num(mark, 8),
        "volume": "0",
        "quoteVolume": "0",
        "openTime": sim.market.now_ms - 86_400_000,
        "closeTime": sim.market.now_ms,
        "firstId": 1,
        "lastId": 1,
        "count": 1,
    }


async def ticker_24hr(sim: SimServer, request: web.Request) -> web.Response:
    one = _one(sim, request)
    if isinstance(one, web.Response):
        return one
    if one is not None:
        return json_response(_ticker(sim, one))
    return json_response([_ticker(sim, s) for s in sim.market.listed(VENUE)])


async def depth(sim: SimServer, request: web.Request) -> web.Response:
    one = _one(sim, request)
    if one is None:
        return error(
            "bad_param", "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
        )
    if isinstance(one, web.Response):
        return one
    limit = query_int(request, "limit", 20) or 20
    bids, asks = sim.market.book(one, depth=min(limit, 50))
    now = sim.market.now_ms
    return json_response(
        {
            "lastUpdateId": now,
            "E": now,
            "T": now,
            "bids": [[f"{p:f}", f"{q:f}"] for p, q in bids],
            "asks": [[f"{p:f}", f"{q:f}"] for p, q in asks],
        }
    )


# ---- private ------------------------------------------------------------------------------


async def _params(request: web.Request) -> dict[str, str]:
    params = dict(request.query)
    if request.method in ("POST", "PUT", "DELETE") and request.body_exists:
        body = await request.text()
        params.update(dict(urllib.parse.parse_qsl(body)))
    return params


async def authenticate(sim: SimServer, request: web.Request) -> VenueAccount | web.Response:
    key = request.headers.get("X-MBX-APIKEY", "")
    acct = sim.engine.account(VENUE, key)
    if acct is None:
        return error("auth")
    raw = request.query_string
    if request.method in ("POST", "PUT", "DELETE") and request.body_exists:
        body = await request.text()
        raw = "&".join(p for p in (raw, body) if p)
    payload, _, signature = raw.rpartition("&signature=")
    if not signature or hmac_hex(acct.creds.secret, payload) != signature:
        return error("signature")
    return acct


def _order(o: SimOrder) -> dict:
    return {
        "orderId": int(o.order_id),
        "symbol": o.symbol,
        "status": o.status,
        "clientOrderId": o.client_id,
        "price": f"{o.price or 0:f}",
        "avgPrice": f"{o.avg_price:f}",
        "origQty": f"{o.qty:f}",
        "executedQty": f"{o.filled:f}",
        "cumQty": f"{o.filled:f}",
        "cumQuote": f"{o.notional:f}",
        "timeInForce": "GTC",
        "type": "MARKET" if o.price is None else "LIMIT",
        "reduceOnly": o.reduce_only,
        "closePosition": False,
        "side": o.side.upper(),
        "positionSide": "BOTH",
        "stopPrice": "0",
        "workingType": "CONTRACT_PRICE",
        "priceProtect": False,
        "origType": "MARKET" if o.price is None else "LIMIT",
        "time": o.created_ms,
        "updateTime": o.updated_ms,
    }


async def new_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _params(request)
    try:
        qty = float(p.get("quantity", "nan"))
        price = float(p["price"]) if p.get("type", "MARKET").upper() == "LIMIT" else None
        order = sim.engine.place(
            acct,
            p.get("symbol", ""),
            p.get("side", "").lower(),
            qty,
            p.get("newClientOrderId", ""),
            price=price,
            reduce_only=p.get("reduceOnly", "false").lower() == "true",
        )
    except OrderError as exc:
        return error(exc.kind)
    except (KeyError, ValueError):
        return error("bad_param")
    return json_response(_order(order))


async def get_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _params(request)
    order = sim.engine.find(acct, p.get("origClientOrderId", ""), p.get("orderId", ""))
    if order is None or order.symbol != p.get("symbol"):
        return error("not_found")
    return json_response(_order(order))


async def cancel_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _params(request)
    cid = p.get("origClientOrderId", "")
    if not cid and p.get("orderId"):
        found = sim.engine.find(acct, order_id=p["orderId"])
        cid = found.client_id if found else ""
    try:
        order = sim.engine.cancel(acct, p.get("symbol", ""), cid)
    except OrderError as exc:
        return error(exc.kind)
    return json_response(_order(order))


async def open_orders(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _params(request)
    return json_response([_order(o) for o in sim.engine.open_orders(acct, p.get("symbol"))])


def _position_rows(sim: SimServer, acct: VenueAccount) -> list[dict]:
    rows = []
    for symbol, pos in sorted(acct.positions.items()):
        s = sim.market.get(VENUE, symbol)
        if s is None:
            continue
        mark = sim.market.mark(s)
        rows.append(
            {
                "symbol": symbol,
                "positionSide": "BOTH",
                "positionAmt": f"{pos.qty:f}",
                "entryPrice": f"{pos.entry:f}",
                "breakEvenPrice": f"{pos.entry:f}",
                "markPrice": f"{mark:f}",
                "unRealizedProfit": f"{sim.engine.unrealized(acct, symbol):f}",
                "liquidationPrice": "0",
                "isolatedMargin": "0",
                "notional": f"{pos.qty * mark:f}",
                "marginAsset": "USDT",
                "isolatedWallet": "0",
                "initialMargin": f"{abs(pos.qty) * mark * 0.05:f}",
                "maintMargin": f"{abs(pos.qty) * mark * 0.025:f}",
                "positionInitialMargin": f"{abs(pos.qty) * mark * 0.05:f}",
                "openOrderInitialMargin": "0",
                "adl": 0,
                "bidNotional": "0",
                "askNotional": "0",
                "updateTime": sim.market.now_ms,
            }
        )
    return rows


async def position_risk(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    return json_response(_position_rows(sim, acct))


async def account(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    upnl = sum(sim.engine.unrealized(acct, s) for s in acct.positions)
    margin = sum(
        abs(p.qty) * sim.market.mark(s) * 0.05
        for sym, p in acct.positions.items()
        if (s := sim.market.get(VENUE, sym)) is not None
    )
    bal = acct.balance
    asset = {
        "asset": "USDT",
        "walletBalance": f"{bal:f}",
        "unrealizedProfit": f"{upnl:f}",
        "marginBalance": f"{bal + upnl:f}",
        "maintMargin": f"{margin / 2:f}",
        "initialMargin": f"{margin:f}",
        "positionInitialMargin": f"{margin:f}",
        "openOrderInitialMargin": "0",
        "crossWalletBalance": f"{bal:f}",
        "crossUnPnl": f"{upnl:f}",
        "availableBalance": f"{bal + upnl - margin:f}",
        "maxWithdrawAmount": f"{bal + upnl - margin:f}",
        "updateTime": sim.market.now_ms,
    }
    return json_response(
        {
            "totalInitialMargin": f"{margin:f}",
            "totalMaintMargin": f"{margin / 2:f}",
            "totalWalletBalance": f"{bal:f}",
            "totalUnrealizedProfit": f"{upnl:f}",
            "totalMarginBalance": f"{bal + upnl:f}",
            "availableBalance": f"{bal + upnl - margin:f}",
            "maxWithdrawAmount": f"{bal + upnl - margin:f}",
            "assets": [asset],
            "positions": [],
        }
    )


async def balance(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    upnl = sum(sim.engine.unrealized(acct, s) for s in acct.positions)
    return json_response(
        [
            {
                "accountAlias": "sim",
                "asset": "USDT",
                "balance": f"{acct.balance:f}",
                "crossWalletBalance": f"{acct.balance:f}",
                "crossUnPnl": f"{upnl:f}",
                "availableBalance": f"{acct.balance + upnl:f}",
                "maxWithdrawAmount": f"{acct.balance + upnl:f}",
                "marginAvailable": True,
                "updateTime": sim.market.now_ms,
            }
        ]
    )


async def income(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _params(request)
    if p.get("incomeType", "FUNDING_FEE") != "FUNDING_FEE":
        return json_response([])
    start = int(p["startTime"]) if p.get("startTime") else None
    rows = [
        {
            "symbol": f.symbol,
            "incomeType": "FUNDING_FEE",
            "income": num(f.amount),
            "asset": "USDT",
            "info": "FUNDING_FEE",
            "time": f.ts_ms,
            "tranId": f.tran_id,
            "tradeId": "",
        }
        for f in acct.funding
        if (start is None or f.ts_ms >= start) and (not p.get("symbol") or f.symbol == p["symbol"])
    ]
    return json_response(rows[: int(p.get("limit", 100))])


async def leverage_bracket(
    sim: SimServer, request: web.Request, acct: VenueAccount
) -> web.Response:
    return json_response(
        [
            {
                "symbol": s.symbol,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": 20,
                        "notionalCap": 10_000_000,
                        "notionalFloor": 0,
                        "maintMarginRatio": 0.025,
                        "cum": 0.0,
                    }
                ],
            }
            for s in sim.market.listed(VENUE)
        ]
    )


async def no_content(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    return json_response({"dualSidePosition": False})


PUBLIC = {
    ("GET", "/fapi/v1/exchangeInfo"): exchange_info,
    ("GET", "/fapi/v1/premiumIndex"): premium_index,
    ("GET", "/fapi/v1/fundingInfo"): funding_info,
    ("GET", "/fapi/v1/fundingRate"): funding_rate,
    ("GET", "/fapi/v1/openInterest"): open_interest,
    ("GET", "/fapi/v1/ticker/24hr"): ticker_24hr,
    ("GET", "/fapi/v1/depth"): depth,
    ("GET", "/futures/data/openInterestHist"): open_interest_hist,
}
PRIVATE = {
    ("POST", "/fapi/v1/order"): new_order,
    ("GET", "/fapi/v1/order"): get_order,
    ("DELETE", "/fapi/v1/order"): cancel_order,
    ("GET", "/fapi/v1/openOrders"): open_orders,
    ("GET", "/fapi/v2/positionRisk"): position_risk,
    ("GET", "/fapi/v3/positionRisk"): position_risk,
    ("GET", "/fapi/v2/account"): account,
    ("GET", "/fapi/v3/account"): account,
    ("GET", "/fapi/v2/balance"): balance,
    ("GET", "/fapi/v3/balance"): balance,
    ("GET", "/fapi/v1/income"): income,
    ("GET", "/fapi/v1/positionSide/dual"): no_content,
    ("GET", "/fapi/v1/leverageBracket"): leverage_bracket,
}


async def websocket(sim: SimServer, request: web.Request) -> web.WebSocketResponse:
    """Liquidation stream (``!forceOrder@arr`` or ``<symbol>@forceOrder``)."""
    wanted: set[str] = set()
    path_stream = request.path.rsplit("/", 1)[-1]
    if "forceOrder" in path_stream:
        wanted.add(path_stream)

    async def on_request(text: str, reply: Reply) -> None:
        try:
            req = json.loads(text)
        except ValueError:
            return
        if isinstance(req, dict) and req.get("method") == "SUBSCRIBE":
            wanted.update(req.get("params", []))
            await reply(json.dumps({"result": None, "id": req.get("id")}))

    def frames(liqs: list[LiquidationPrint]) -> list[str]:
        return [
            json.dumps(
                {
                    "e": "forceOrder",
                    "E": liq.ts_ms,
                    "o": {
                        "s": liq.symbol,
                        "S": liq.side.upper(),
                        "o": "LIMIT",
                        "f": "IOC",
                        "q": f"{liq.qty:f}",
                        "p": f"{liq.price:f}",
                        "ap": f"{liq.price:f}",
                        "X": "FILLED",
                        "l": f"{liq.qty:f}",
                        "z": f"{liq.qty:f}",
                        "T": liq.ts_ms,
                    },
                }
            )
            for liq in liqs
            if "!forceOrder@arr" in wanted or f"{liq.symbol.lower()}@forceOrder" in wanted
        ]

    return await liquidation_stream(sim, request, VENUE, on_request, frames)
