"""Bybit v5 linear perpetuals (``/v5``) as the simulator answers them, in Bybit's format."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from hean.sim.engine import OrderError, SimOrder, VenueAccount
from hean.sim.market import LiquidationPrint, Series, lot_size, tick_size
from hean.sim.wire import Reply, hmac_hex, json_response, liquidation_stream, query_int, short

if TYPE_CHECKING:
    from hean.sim.server import SimServer

VENUE = "bybit"
ERRORS = {
    "rate_limit": (200, 10006, "Too many visits!"),
    "unknown_symbol": (200, 10001, "params error: symbol invalid"),
    "duplicate": (200, 110072, "OrderLinkedID is duplicate"),
    "not_found": (200, 110001, "order not exists or too late to cancel"),
    "not_open": (200, 110001, "order not exists or too late to cancel"),
    "margin": (200, 110007, "ab not enough for new order"),
    "reduce_only": (200, 110017, "current position is zero, cannot fix reduce-only order qty"),
    "bad_qty": (200, 10001, "params error: qty invalid"),
    "bad_side": (200, 10001, "params error: side invalid"),
    "auth": (401, 10003, "API key is invalid."),
    "signature": (401, 10004, "error sign! origin_string[]"),
    "bad_param": (200, 10001, "params error"),
    "server": (503, 10016, "Server error."),
}
STATUS = {
    "NEW": "New",
    "PARTIALLY_FILLED": "PartiallyFilled",
    "FILLED": "Filled",
    "CANCELED": "Cancelled",
    "REJECTED": "Rejected",
}


def envelope(sim: SimServer, result: object, code: int = 0, msg: str = "OK") -> dict:
    return {
        "retCode": code,
        "retMsg": msg,
        "result": result,
        "retExtInfo": {},
        "time": sim.market.now_ms,
    }


def error(kind: str, message: str = "") -> web.Response:
    status, code, text = ERRORS.get(kind, ERRORS["bad_param"])
    return json_response(
        {"retCode": code, "retMsg": message or text, "result": {}, "retExtInfo": {}, "time": 0},
        status=status,
    )


def _ok(sim: SimServer, result: object) -> web.Response:
    return json_response(envelope(sim, result))


def _linear(request: web.Request) -> web.Response | None:
    if request.query.get("category", "linear") != "linear":
        return error("bad_param", "params error: category only support linear in this venue")
    return None


def _instrument(sim: SimServer, s: Series) -> dict:
    mark = sim.market.mark(s)
    tick, lot = tick_size(mark), lot_size(mark)
    cap = sim.scenario.max_rate
    return {
        "symbol": s.symbol,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": s.base,
        "quoteCoin": "USDT",
        "launchTime": str(s.listed_ms),
        "deliveryTime": "0",
        "deliveryFeeRate": "",
        "priceScale": str(max(0, -int(f"{tick:e}".split("e")[1]))),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {
            "minPrice": f"{tick:f}",
            "maxPrice": short(mark * 100),
            "tickSize": f"{tick:f}",
        },
        "lotSizeFilter": {
            "maxOrderQty": "1000000",
            "minOrderQty": f"{lot:f}",
            "qtyStep": f"{lot:f}",
            "postOnlyMaxOrderQty": "1000000",
            "maxMktOrderQty": "1000000",
            "minNotionalValue": "5",
        },
        "unifiedMarginTrade": True,
        "fundingInterval": int(s.interval_h * 60),
        "settleCoin": "USDT",
        "copyTrading": "both",
        "upperFundingRate": short(cap),
        "lowerFundingRate": short(-cap),
        "isPreListing": False,
        "preListingInfo": None,
        "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
        "symbolType": "",
    }


async def instruments(sim: SimServer, request: web.Request) -> web.Response:
    bad = _linear(request)
    if bad:
        return bad
    series = sim.market.listed(VENUE)
    if request.query.get("symbol"):
        series = [s for s in series if s.symbol == request.query["symbol"]]
    return _ok(
        sim,
        {"category": "linear", "list": [_instrument(sim, s) for s in series], "nextPageCursor": ""},
    )


def _ticker(sim: SimServer, s: Series) -> dict:
    mark = sim.market.mark(s)
    bids, asks = sim.market.book(s, depth=1)
    oi_qty = sim.market.oi_usd(s) / mark
    return {
        "symbol": s.symbol,
        "lastPrice": short(mark),
        "indexPrice": short(sim.market.index(s)),
        "markPrice": short(mark),
        "prevPrice24h": short(mark),
        "price24hPcnt": "0",
        "highPrice24h": short(mark),
        "lowPrice24h": short(mark),
        "prevPrice1h": short(mark),
        "openInterest": short(round(oi_qty, 3)),
        "openInterestValue": short(round(oi_qty * mark, 2)),
        "turnover24h": "0",
        "volume24h": "0",
        "fundingRate": short(round(s.rate, 8)),
        "nextFundingTime": str(s.next_funding_ms),
        "predictedDeliveryPrice": "",
        "basisRate": "",
        "deliveryFeeRate": "",
        "deliveryTime": "0",
        "ask1Size": short(asks[0][1]),
        "bid1Price": short(bids[0][0]),
        "ask1Price": short(asks[0][0]),
        "bid1Size": short(bids[0][1]),
        "basis": "",
        "preOpenPrice": "",
        "preQty": "",
        "curPreListingPhase": "",
        "fundingIntervalHour": str(int(s.interval_h)),
        "basisRateYear": "",
        "fundingCap": short(sim.scenario.max_rate),
    }


async def tickers(sim: SimServer, request: web.Request) -> web.Response:
    bad = _linear(request)
    if bad:
        return bad
    series = sim.market.listed(VENUE)
    if request.query.get("symbol"):
        series = [s for s in series if s.symbol == request.query["symbol"]]
        if not series:
            return error("unknown_symbol")
    return _ok(sim, {"category": "linear", "list": [_ticker(sim, s) for s in series]})


def _series(sim: SimServer, request: web.Request) -> Series | web.Response:
    name = request.query.get("symbol", "")
    s = sim.market.get(VENUE, name)
    return s if s is not None else error("unknown_symbol")


async def funding_history(sim: SimServer, request: web.Request) -> web.Response:
    s = _series(sim, request)
    if isinstance(s, web.Response):
        return s
    start = query_int(request, "startTime")
    end = query_int(request, "endTime")
    limit = min(query_int(request, "limit", 200) or 200, 200)
    rows = [
        {"symbol": s.symbol, "fundingRate": short(round(r, 8)), "fundingRateTimestamp": str(t)}
        for t, r, _ in s.settled
        if (start is None or t >= start) and (end is None or t <= end)
    ]
    rows.reverse()  # newest first, as Bybit answers
    return _ok(sim, {"category": "linear", "list": rows[:limit]})


async def open_interest(sim: SimServer, request: web.Request) -> web.Response:
    s = _series(sim, request)
    if isinstance(s, web.Response):
        return s
    start = query_int(request, "startTime")
    end = query_int(request, "endTime")
    limit = min(query_int(request, "limit", 50) or 50, 200)
    now = sim.market.now_ms
    points = [*s.oi_history, (now, sim.market.oi_usd(s), sim.market.mark(s))]
    rows = [
        {"openInterest": short(round(usd / mark, 3)), "timestamp": str(t)}
        for t, usd, mark in reversed(points)  # newest first, as Bybit answers
        if (start is None or t >= start) and (end is None or t <= end)
    ]
    return _ok(
        sim, {"symbol": s.symbol, "category": "linear", "list": rows[:limit], "nextPageCursor": ""}
    )


async def orderbook(sim: SimServer, request: web.Request) -> web.Response:
    s = _series(sim, request)
    if isinstance(s, web.Response):
        return s
    limit = min(query_int(request, "limit", 25) or 25, 50)
    bids, asks = sim.market.book(s, depth=limit)
    now = sim.market.now_ms
    return _ok(
        sim,
        {
            "s": s.symbol,
            "a": [[short(p), short(q)] for p, q in asks],
            "b": [[short(p), short(q)] for p, q in bids],
            "ts": now,
            "u": now,
            "seq": now,
            "cts": now,
        },
    )


async def server_time(sim: SimServer, request: web.Request) -> web.Response:
    now = sim.market.now_ms
    return _ok(sim, {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)})


# ---- private ------------------------------------------------------------------------------


async def authenticate(sim: SimServer, request: web.Request) -> VenueAccount | web.Response:
    key = request.headers.get("X-BAPI-API-KEY", "")
    acct = sim.engine.account(VENUE, key)
    if acct is None:
        return error("auth")
    ts = request.headers.get("X-BAPI-TIMESTAMP", "")
    recv = request.headers.get("X-BAPI-RECV-WINDOW", "")
    sign = request.headers.get("X-BAPI-SIGN", "")
    body = await request.text() if request.method == "POST" else request.query_string
    if not ts or not sign or hmac_hex(acct.creds.secret, ts + key + recv + body) != sign:
        return error("signature")
    return acct


async def _body(request: web.Request) -> dict:
    if request.method == "POST":
        try:
            data = json.loads(await request.text() or "{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return dict(request.query)


def _order(o: SimOrder) -> dict:
    return {
        "orderId": o.order_id,
        "orderLinkId": o.client_id,
        "blockTradeId": "",
        "symbol": o.symbol,
        "price": short(o.price or 0),
        "qty": short(o.qty),
        "side": "Buy" if o.side == "buy" else "Sell",
        "isLeverage": "",
        "positionIdx": 0,
        "orderStatus": STATUS[o.status],
        "cancelType": "UNKNOWN",
        "rejectReason": "EC_NoError",
        "avgPrice": short(o.avg_price),
        "leavesQty": short(o.qty - o.filled if o.open else 0),
        "leavesValue": "0",
        "cumExecQty": short(o.filled),
        "cumExecValue": short(o.notional),
        "cumExecFee": short(o.fee),
        "cumFeeDetail": {"USDT": short(o.fee)} if o.fee else {},
        "timeInForce": "IOC" if o.price is None else "GTC",
        "orderType": "Market" if o.price is None else "Limit",
        "stopOrderType": "",
        "orderIv": "",
        "triggerPrice": "",
        "takeProfit": "",
        "stopLoss": "",
        "tpTriggerBy": "",
        "slTriggerBy": "",
        "triggerDirection": 0,
        "triggerBy": "",
        "lastPriceOnCreated": "",
        "reduceOnly": o.reduce_only,
        "closeOnTrigger": False,
        "smpType": "None",
        "smpGroup": 0,
        "smpOrderId": "",
        "tpslMode": "",
        "tpLimitPrice": "",
        "slLimitPrice": "",
        "placeType": "",
        "createdTime": str(o.created_ms),
        "updatedTime": str(o.updated_ms),
    }


async def create_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _body(request)
    try:
        price = float(p["price"]) if p.get("orderType") == "Limit" else None
        order = sim.engine.place(
            acct,
            str(p.get("symbol", "")),
            str(p.get("side", "")).lower(),
            float(p.get("qty", "nan")),
            str(p.get("orderLinkId", "")),
            price=price,
            reduce_only=bool(p.get("reduceOnly", False)),
        )
    except OrderError as exc:
        return error(exc.kind)
    except (KeyError, ValueError):
        return error("bad_param")
    return _ok(sim, {"orderId": order.order_id, "orderLinkId": order.client_id})


async def cancel_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _body(request)
    cid = str(p.get("orderLinkId", ""))
    if not cid and p.get("orderId"):
        found = sim.engine.find(acct, order_id=str(p["orderId"]))
        cid = found.client_id if found else ""
    try:
        order = sim.engine.cancel(acct, str(p.get("symbol", "")), cid)
    except OrderError as exc:
        return error(exc.kind)
    return _ok(sim, {"orderId": order.order_id, "orderLinkId": order.client_id})


def _orders(sim: SimServer, acct: VenueAccount, p: dict, open_only: bool) -> list[SimOrder]:
    if p.get("orderLinkId") or p.get("orderId"):
        o = sim.engine.find(acct, str(p.get("orderLinkId", "")), str(p.get("orderId", "")))
        found = [o] if o is not None else []
    else:
        sim.engine.open_orders(acct)
        found = sorted(acct.orders.values(), key=lambda o: o.created_ms, reverse=True)
    if p.get("symbol"):
        found = [o for o in found if o.symbol == p["symbol"]]
    if open_only:
        found = [o for o in found if o.open]
    return found


async def order_realtime(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _body(request)
    only_open = not (p.get("orderLinkId") or p.get("orderId")) or str(p.get("openOnly", "0")) == "0"
    found = _orders(
        sim, acct, p, open_only=only_open and not (p.get("orderLinkId") or p.get("orderId"))
    )
    return _ok(
        sim, {"list": [_order(o) for o in found[:50]], "nextPageCursor": "", "category": "linear"}
    )


async def order_history(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = await _body(request)
    found = [o for o in _orders(sim, acct, p, open_only=False) if not o.open]
    return _ok(
        sim, {"list": [_order(o) for o in found[:50]], "nextPageCursor": "", "category": "linear"}
    )


async def positions(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    rows = []
    for symbol, pos in sorted(acct.positions.items()):
        s = sim.market.get(VENUE, symbol)
        if s is None:
            continue
        mark = sim.market.mark(s)
        rows.append(
            {
                "positionIdx": 0,
                "riskId": 1,
                "riskLimitValue": "2000000",
                "symbol": symbol,
                "side": "" if pos.qty == 0 else ("Buy" if pos.qty > 0 else "Sell"),
                "size": short(abs(pos.qty)),
                "avgPrice": short(pos.entry),
                "positionValue": short(abs(pos.qty) * pos.entry),
                "tradeMode": 0,
                "positionStatus": "Normal",
                "autoAddMargin": 0,
                "adlRankIndicator": 2,
                "leverage": "10",
                "positionBalance": short(abs(pos.qty) * mark * 0.1),
                "markPrice": short(mark),
                "liqPrice": "",
                "bustPrice": "",
                "positionMM": short(abs(pos.qty) * mark * 0.005),
                "positionIM": short(abs(pos.qty) * mark * 0.1),
                "tpslMode": "Full",
                "takeProfit": "0",
                "stopLoss": "0",
                "trailingStop": "0",
                "unrealisedPnl": short(sim.engine.unrealized(acct, symbol)),
                "curRealisedPnl": short(pos.realized),
                "cumRealisedPnl": short(pos.realized),
                "seq": sim.market.now_ms,
                "isReduceOnly": False,
                "mmrSysUpdatedTime": "",
                "leverageSysUpdatedTime": "",
                "sessionAvgPrice": "",
                "createdTime": str(sim.start_ms),
                "updatedTime": str(sim.market.now_ms),
            }
        )
    return _ok(sim, {"list": rows, "nextPageCursor": "", "category": "linear"})


async def wallet_balance(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    upnl = sum(sim.engine.unrealized(acct, s) for s in acct.positions)
    bal = acct.balance
    coin = {
        "availableToBorrow": "",
        "bonus": "0",
        "accruedInterest": "0",
        "availableToWithdraw": short(bal),
        "totalOrderIM": "0",
        "equity": short(bal + upnl),
        "totalPositionMM": "0",
        "usdValue": short(bal + upnl),
        "unrealisedPnl": short(upnl),
        "collateralSwitch": True,
        "spotHedgingQty": "0",
        "borrowAmount": "0",
        "totalPositionIM": "0",
        "walletBalance": short(bal),
        "cumRealisedPnl": "0",
        "locked": "0",
        "marginCollateral": True,
        "coin": "USDT",
    }
    return _ok(
        sim,
        {
            "list": [
                {
                    "totalEquity": short(bal + upnl),
                    "accountIMRate": "0",
                    "totalMarginBalance": short(bal + upnl),
                    "totalInitialMargin": "0",
                    "accountType": "UNIFIED",
                    "totalAvailableBalance": short(bal + upnl),
                    "accountMMRate": "0",
                    "totalPerpUPL": short(upnl),
                    "totalWalletBalance": short(bal),
                    "accountLTV": "0",
                    "totalMaintenanceMargin": "0",
                    "coin": [coin],
                }
            ]
        },
    )


async def query_api(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    return _ok(
        sim,
        {
            "id": "1",
            "note": "sim",
            "apiKey": acct.creds.api_key,
            "readOnly": 0,
            "permissions": {"ContractTrade": ["Order", "Position"], "Wallet": ["AccountTransfer"]},
            "unified": 0,
            "uta": 1,
            "isMaster": True,
        },
    )


async def account_info(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    return _ok(
        sim,
        {
            "unifiedMarginStatus": 5,
            "marginMode": "REGULAR_MARGIN",
            "isMasterTrader": False,
            "spotHedgingStatus": "OFF",
            "updatedTime": str(sim.start_ms),
            "dcpStatus": "OFF",
            "timeWindow": 10,
            "smpGroup": 0,
        },
    )


async def execution_list(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    p = dict(request.query)
    start = int(p["startTime"]) if p.get("startTime") else None
    rows = [
        {
            "symbol": f.symbol,
            "orderType": "UNKNOWN",
            "underlyingPrice": "",
            "orderLinkId": "",
            "side": "Buy" if f.position_qty < 0 else "Sell",
            "indexPrice": "",
            "orderId": "",
            "stopOrderType": "UNKNOWN",
            "leavesQty": "0",
            "execTime": str(f.ts_ms),
            "feeCurrency": "USDT",
            "isMaker": False,
            "execFee": short(-f.amount),
            "feeRate": short(f.rate),
            "execId": str(f.tran_id),
            "tradeIv": "",
            "blockTradeId": "",
            "markPrice": short(f.mark),
            "execPrice": short(f.mark),
            "markIv": "",
            "orderQty": "0",
            "orderPrice": "0",
            "execValue": short(abs(f.position_qty) * f.mark),
            "execType": "Funding",
            "execQty": short(abs(f.position_qty)),
            "closedSize": "0",
            "seq": f.tran_id,
        }
        for f in acct.funding
        if (start is None or f.ts_ms >= start) and (not p.get("symbol") or f.symbol == p["symbol"])
    ]
    if p.get("execType") not in (None, "", "Funding"):
        rows = []
    rows.reverse()
    return _ok(sim, {"list": rows, "nextPageCursor": "", "category": "linear"})


PUBLIC = {
    ("GET", "/v5/market/instruments-info"): instruments,
    ("GET", "/v5/market/tickers"): tickers,
    ("GET", "/v5/market/funding/history"): funding_history,
    ("GET", "/v5/market/open-interest"): open_interest,
    ("GET", "/v5/market/orderbook"): orderbook,
    ("GET", "/v5/market/time"): server_time,
}
PRIVATE = {
    ("POST", "/v5/order/create"): create_order,
    ("POST", "/v5/order/cancel"): cancel_order,
    ("GET", "/v5/order/realtime"): order_realtime,
    ("GET", "/v5/order/history"): order_history,
    ("GET", "/v5/position/list"): positions,
    ("GET", "/v5/account/wallet-balance"): wallet_balance,
    ("GET", "/v5/user/query-api"): query_api,
    ("GET", "/v5/account/info"): account_info,
    ("GET", "/v5/execution/list"): execution_list,
}


async def websocket(sim: SimServer, request: web.Request) -> web.WebSocketResponse:
    """Public linear stream: ``allLiquidation.<symbol>``."""
    topics: set[str] = set()

    async def on_request(text: str, reply: Reply) -> None:
        try:
            req = json.loads(text)
        except ValueError:
            return
        op = req.get("op") if isinstance(req, dict) else None
        if op == "subscribe":
            topics.update(req.get("args", []))
            ack = {"success": True, "ret_msg": "", "conn_id": "sim", "op": "subscribe"}
            await reply(json.dumps(ack | {"req_id": req.get("req_id", "")}))
        elif op == "ping":
            await reply(
                json.dumps({"success": True, "ret_msg": "pong", "conn_id": "sim", "op": "ping"})
            )

    def frames(liqs: list[LiquidationPrint]) -> list[str]:
        return [
            json.dumps(
                {
                    "topic": f"allLiquidation.{liq.symbol}",
                    "type": "snapshot",
                    "ts": liq.ts_ms,
                    "data": [
                        {
                            "T": liq.ts_ms,
                            "s": liq.symbol,
                            # Bybit names the liquidated position's side
                            "S": "Buy" if liq.side == "sell" else "Sell",
                            "v": short(liq.qty),
                            "p": short(liq.price),
                        }
                    ],
                }
            )
            for liq in liqs
            if f"allLiquidation.{liq.symbol}" in topics
        ]

    return await liquidation_stream(sim, request, VENUE, on_request, frames)
