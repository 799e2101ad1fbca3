"""OKX USDT swaps (``/api/v5``) as the simulator answers them, in OKX's format.

OKX sizes orders and open interest in contracts; ``ctVal`` base units make one contract.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from typing import TYPE_CHECKING

from aiohttp import web

from hean.sim.engine import OrderError, SimOrder, VenueAccount
from hean.sim.market import LiquidationPrint, Series, tick_size
from hean.sim.wire import Reply, json_response, liquidation_stream, query_int, short

if TYPE_CHECKING:
    from hean.sim.server import SimServer

VENUE = "okx"
ERRORS = {
    "rate_limit": (
        429,
        "50011",
        "Rate limit reached. Please refer to API documentation and throttle requests accordingly.",
    ),
    "unknown_symbol": (200, "51001", "Instrument ID does not exist"),
    "duplicate": (200, "51016", "Duplicated clOrdId"),
    "not_found": (200, "51603", "Order does not exist"),
    "not_open": (
        200,
        "51400",
        "Order cancellation failed as the order has been filled, canceled or does not exist",
    ),
    "margin": (200, "51008", "Order failed. Insufficient USDT margin in account"),
    "reduce_only": (
        200,
        "51169",
        "Order failed because you don't have any positions in this direction for this "
        "contract to reduce or close.",
    ),
    "bad_qty": (200, "51000", "Parameter sz error"),
    "bad_side": (200, "51000", "Parameter side error"),
    "auth": (401, "50111", "Invalid OK-ACCESS-KEY"),
    "signature": (401, "50113", "Invalid Sign"),
    "bad_param": (200, "50014", "Parameter instId can not be empty"),
    "server": (503, "50001", "Service temporarily unavailable. Please try again later"),
}
ORDER_ERRORS = {
    "duplicate",
    "margin",
    "reduce_only",
    "bad_qty",
    "bad_side",
    "unknown_symbol",
    "not_found",
    "not_open",
}
STATE = {
    "NEW": "live",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "canceled",
    "REJECTED": "canceled",
}


def error(kind: str, message: str = "") -> web.Response:
    status, code, text = ERRORS.get(kind, ERRORS["bad_param"])
    return json_response({"code": code, "msg": message or text, "data": []}, status=status)


def order_error(kind: str, cl_ord_id: str) -> web.Response:
    """OKX answers a failed order with code 1 and the reason per order in ``data``."""
    _, code, text = ERRORS.get(kind, ERRORS["bad_param"])
    return json_response(
        {
            "code": "1",
            "msg": "All operations failed",
            "data": [
                {
                    "clOrdId": cl_ord_id,
                    "ordId": "",
                    "sCode": code,
                    "sMsg": text,
                    "tag": "",
                    "ts": "",
                }
            ],
        }
    )


def _ok(data: list) -> web.Response:
    return json_response({"code": "0", "msg": "", "data": data})


def inst_id(s: Series) -> str:
    return f"{s.base}-USDT-SWAP"


def ct_val(price: float) -> float:
    """Base units per contract: about 1000 USDT or less, a power of ten (BTC: 0.01)."""
    return 10 ** math.floor(math.log10(1000.0 / price))


def _by_inst(sim: SimServer, name: str) -> Series | None:
    if not name.endswith("-USDT-SWAP"):
        return None
    return sim.market.get(VENUE, name[: -len("-USDT-SWAP")] + "USDT")


def _instrument(sim: SimServer, s: Series) -> dict:
    mark = sim.market.mark(s)
    return {
        "alias": "",
        "baseCcy": "",
        "category": "1",
        "ctMult": "1",
        "ctType": "linear",
        "ctVal": short(ct_val(sim.market.price[s.base])),
        "ctValCcy": s.base,
        "expTime": "",
        "instFamily": f"{s.base}-USDT",
        "instId": inst_id(s),
        "instType": "SWAP",
        "lever": "100",
        "listTime": str(s.listed_ms),
        "lotSz": "0.01",
        "maxIcebergSz": "100000000.0000000000000000",
        "maxLmtAmt": "20000000",
        "maxLmtSz": "100000000",
        "maxMktAmt": "",
        "maxMktSz": "100000",
        "maxStopSz": "100000",
        "maxTriggerSz": "100000000.0000000000000000",
        "maxTwapSz": "100000000.0000000000000000",
        "minSz": "0.01",
        "optType": "",
        "quoteCcy": "",
        "ruleType": "normal",
        "settleCcy": "USDT",
        "state": "live",
        "stk": "",
        "tickSz": f"{tick_size(mark):f}",
        "uly": f"{s.base}-USDT",
    }


def _ct(sim: SimServer, s: Series) -> float:
    return sim.ct_cache.setdefault(s.base, ct_val(sim.market.price[s.base]))


async def instruments(sim: SimServer, request: web.Request) -> web.Response:
    if request.query.get("instType") != "SWAP":
        return _ok([])
    series = sim.market.listed(VENUE)
    rows = [_instrument(sim, s) | {"ctVal": short(_ct(sim, s))} for s in series]
    if request.query.get("instId"):
        rows = [r for r in rows if r["instId"] == request.query["instId"]]
    return _ok(rows)


def _funding(sim: SimServer, s: Series) -> dict:
    cap = sim.scenario.max_rate
    return {
        "formulaType": "withRate",
        "fundingRate": short(round(s.rate, 10)),
        "fundingTime": str(s.next_funding_ms),
        "impactValue": "20000",
        "instId": inst_id(s),
        "instType": "SWAP",
        "interestRate": "0.0001",
        "maxFundingRate": short(cap),
        "method": "current_period",
        "minFundingRate": short(-cap),
        "nextFundingRate": "",
        "nextFundingTime": str(s.next_funding_ms + int(s.interval_h * 3_600_000)),
        "premium": "0",
        "settFundingRate": short(round(s.settled[-1][1], 10)) if s.settled else "0",
        "settState": "settled",
        "ts": str(sim.market.now_ms),
    }


async def funding_rate(sim: SimServer, request: web.Request) -> web.Response:
    name = request.query.get("instId", "")
    if name == "ANY":
        return _ok([_funding(sim, s) for s in sim.market.listed(VENUE)])
    s = _by_inst(sim, name)
    if s is None:
        return error("unknown_symbol")
    return _ok([_funding(sim, s)])


async def funding_history(sim: SimServer, request: web.Request) -> web.Response:
    s = _by_inst(sim, request.query.get("instId", ""))
    if s is None:
        return error("unknown_symbol")
    # OKX pages backwards: ``after`` = older than, ``before`` = newer than (ms)
    after = query_int(request, "after")
    before = query_int(request, "before")
    limit = min(query_int(request, "limit", 100) or 100, 400)
    rows = [
        {
            "formulaType": "withRate",
            "fundingRate": short(round(r, 10)),
            "fundingTime": str(t),
            "instId": inst_id(s),
            "instType": "SWAP",
            "method": "current_period",
            "realizedRate": short(round(r, 10)),
        }
        for t, r, _ in reversed(s.settled)
        if (after is None or t < after) and (before is None or t > before)
    ]
    return _ok(rows[:limit] if before is None else rows[-limit:])


async def open_interest(sim: SimServer, request: web.Request) -> web.Response:
    name = request.query.get("instId")
    series = sim.market.listed(VENUE) if not name else [_by_inst(sim, name)]
    if any(s is None for s in series):
        return error("unknown_symbol")
    rows = []
    for s in series:
        assert s is not None
        usd = sim.market.oi_usd(s)
        qty = usd / sim.market.mark(s)
        rows.append(
            {
                "instId": inst_id(s),
                "instType": "SWAP",
                "oi": short(round(qty / _ct(sim, s), 2)),
                "oiCcy": short(round(qty, 4)),
                "oiUsd": short(round(usd, 2)),
                "ts": str(sim.market.now_ms),
            }
        )
    return _ok(rows)


async def open_interest_history(sim: SimServer, request: web.Request) -> web.Response:
    s = _by_inst(sim, request.query.get("instId", ""))
    if s is None:
        return error("unknown_symbol")
    if request.query.get("period", "1H") != "1H":
        return error("bad_param", "Parameter period error: the simulator keeps 1H")
    begin = query_int(request, "begin")
    end = query_int(request, "end")
    limit = min(query_int(request, "limit", 100) or 100, 100)
    ct = _ct(sim, s)
    rows = [
        [
            str(t),
            short(round(usd / mark / ct, 2)),
            short(round(usd / mark, 4)),
            short(round(usd, 2)),
        ]
        for t, usd, mark in reversed(s.oi_history)
        if (begin is None or t >= begin) and (end is None or t <= end)
    ]
    return _ok(rows[:limit])


def _ticker(sim: SimServer, s: Series) -> dict:
    mark = sim.market.mark(s)
    bids, asks = sim.market.book(s, depth=1)
    ct = _ct(sim, s)
    return {
        "instType": "SWAP",
        "instId": inst_id(s),
        "last": short(mark),
        "lastSz": "1",
        "askPx": short(asks[0][0]),
        "askSz": short(round(asks[0][1] / ct, 2)),
        "bidPx": short(bids[0][0]),
        "bidSz": short(round(bids[0][1] / ct, 2)),
        "open24h": short(mark),
        "high24h": short(mark),
        "low24h": short(mark),
        "volCcy24h": "0",
        "vol24h": "0",
        "ts": str(sim.market.now_ms),
        "sodUtc0": short(mark),
        "sodUtc8": short(mark),
    }


async def tickers(sim: SimServer, request: web.Request) -> web.Response:
    if request.query.get("instType") != "SWAP":
        return _ok([])
    return _ok([_ticker(sim, s) for s in sim.market.listed(VENUE)])


async def ticker(sim: SimServer, request: web.Request) -> web.Response:
    s = _by_inst(sim, request.query.get("instId", ""))
    if s is None:
        return error("unknown_symbol")
    return _ok([_ticker(sim, s)])


async def mark_price(sim: SimServer, request: web.Request) -> web.Response:
    name = request.query.get("instId")
    series = sim.market.listed(VENUE) if not name else [_by_inst(sim, name)]
    if any(s is None for s in series):
        return error("unknown_symbol")
    return _ok(
        [
            {
                "instId": inst_id(s),
                "instType": "SWAP",
                "markPx": short(sim.market.mark(s)),
                "ts": str(sim.market.now_ms),
            }
            for s in series
            if s is not None
        ]
    )


def _index_ticker(sim: SimServer, s: Series) -> dict:
    px = short(sim.market.index(s))
    return {
        "instId": f"{s.base}-USDT",
        "idxPx": px,
        "high24h": px,
        "sodUtc0": px,
        "open24h": px,
        "low24h": px,
        "sodUtc8": px,
        "ts": str(sim.market.now_ms),
    }


async def index_tickers(sim: SimServer, request: web.Request) -> web.Response:
    """OKX's index of each swap's underlying (``BTC-USDT``), by ``quoteCcy`` or ``instId`` as
    OKX requires one of them; only USDT indices exist here, the swaps being USDT-margined."""
    name, quote = request.query.get("instId"), request.query.get("quoteCcy")
    if not name and not quote:
        return error("bad_param", "Parameter quoteCcy or instId can not be empty")
    if name:
        s = _by_inst(sim, f"{name}-SWAP")
        return _ok([_index_ticker(sim, s)]) if s is not None else error("unknown_symbol")
    series = sim.market.listed(VENUE) if quote == "USDT" else []
    return _ok([_index_ticker(sim, s) for s in series])


async def books(sim: SimServer, request: web.Request) -> web.Response:
    s = _by_inst(sim, request.query.get("instId", ""))
    if s is None:
        return error("unknown_symbol")
    depth = min(query_int(request, "sz", 5) or 5, 50)
    bids, asks = sim.market.book(s, depth=depth)
    ct = _ct(sim, s)

    def level(p: float, q: float) -> list[str]:
        return [short(p), short(round(q / ct, 2)), "0", "1"]

    return _ok(
        [
            {
                "asks": [level(p, q) for p, q in asks],
                "bids": [level(p, q) for p, q in bids],
                "ts": str(sim.market.now_ms),
                "seqId": sim.market.now_ms,
            }
        ]
    )


# ---- private ------------------------------------------------------------------------------


async def authenticate(sim: SimServer, request: web.Request) -> VenueAccount | web.Response:
    key = request.headers.get("OK-ACCESS-KEY", "")
    acct = sim.engine.account(VENUE, key)
    if acct is None:
        return error("auth")
    if request.headers.get("OK-ACCESS-PASSPHRASE") != acct.creds.passphrase:
        return json_response(
            {"code": "50105", "msg": "Your OK-ACCESS-PASSPHRASE is incorrect.", "data": []},
            status=401,
        )
    ts = request.headers.get("OK-ACCESS-TIMESTAMP", "")
    path = request.path[len("/okx") :]
    if request.query_string:
        path += "?" + request.query_string
    body = await request.text() if request.method == "POST" else ""
    digest = hmac.new(
        acct.creds.secret.encode(), (ts + request.method + path + body).encode(), hashlib.sha256
    ).digest()
    if not ts or base64.b64encode(digest).decode() != request.headers.get("OK-ACCESS-SIGN"):
        return error("signature")
    return acct


def _order(sim: SimServer, o: SimOrder) -> dict:
    s = sim.market.get(VENUE, o.symbol)
    ct = _ct(sim, s) if s is not None else 1.0
    return {
        "accFillSz": short(round(o.filled / ct, 6)),
        "avgPx": short(o.avg_price) if o.filled else "",
        "cTime": str(o.created_ms),
        "category": "normal",
        "ccy": "",
        "clOrdId": o.client_id,
        "fee": short(-o.fee),
        "feeCcy": "USDT",
        "fillPx": short(o.avg_price) if o.filled else "",
        "fillSz": short(round(o.filled / ct, 6)),
        "fillTime": str(o.updated_ms) if o.filled else "",
        "instId": f"{o.symbol[:-4]}-USDT-SWAP",
        "instType": "SWAP",
        "lever": "10",
        "ordId": o.order_id,
        "ordType": "market" if o.price is None else "limit",
        "pnl": "0",
        "posSide": "net",
        "px": short(o.price) if o.price is not None else "",
        "rebate": "0",
        "rebateCcy": "USDT",
        "reduceOnly": "true" if o.reduce_only else "false",
        "side": o.side,
        "slOrdPx": "",
        "slTriggerPx": "",
        "source": "",
        "state": STATE[o.status],
        "sz": short(round(o.qty / ct, 6)),
        "tag": "",
        "tdMode": "cross",
        "tgtCcy": "",
        "tpOrdPx": "",
        "tpTriggerPx": "",
        "tradeId": "",
        "uTime": str(o.updated_ms),
    }


async def place_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    try:
        p = json.loads(await request.text() or "{}")
    except ValueError:
        return error("bad_param")
    cid = str(p.get("clOrdId", ""))
    s = _by_inst(sim, str(p.get("instId", "")))
    if s is None:
        return order_error("unknown_symbol", cid)
    try:
        qty = float(p.get("sz", "nan")) * _ct(sim, s)
        price = float(p["px"]) if p.get("ordType") == "limit" else None
        order = sim.engine.place(
            acct,
            s.symbol,
            str(p.get("side", "")),
            qty,
            cid,
            price=price,
            reduce_only=str(p.get("reduceOnly", "false")).lower() == "true",
        )
    except OrderError as exc:
        return order_error(exc.kind, cid)
    except (KeyError, ValueError):
        return order_error("bad_qty", cid)
    return _ok(
        [
            {
                "clOrdId": order.client_id,
                "ordId": order.order_id,
                "sCode": "0",
                "sMsg": "Order placed",
                "tag": "",
                "ts": str(sim.market.now_ms),
            }
        ]
    )


async def cancel_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    try:
        p = json.loads(await request.text() or "{}")
    except ValueError:
        return error("bad_param")
    cid = str(p.get("clOrdId", ""))
    s = _by_inst(sim, str(p.get("instId", "")))
    if not cid and p.get("ordId"):
        found = sim.engine.find(acct, order_id=str(p["ordId"]))
        cid = found.client_id if found else ""
    try:
        order = sim.engine.cancel(acct, s.symbol if s else "", cid)
    except OrderError as exc:
        return order_error(exc.kind, cid)
    return _ok(
        [
            {
                "clOrdId": order.client_id,
                "ordId": order.order_id,
                "sCode": "0",
                "sMsg": "",
                "ts": str(sim.market.now_ms),
            }
        ]
    )


async def get_order(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    q = request.query
    order = sim.engine.find(acct, q.get("clOrdId", ""), q.get("ordId", ""))
    s = _by_inst(sim, q.get("instId", ""))
    if order is None or s is None or order.symbol != s.symbol:
        return error("not_found")
    return _ok([_order(sim, order)])


async def orders_pending(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    s = _by_inst(sim, request.query.get("instId", "")) if request.query.get("instId") else None
    return _ok([_order(sim, o) for o in sim.engine.open_orders(acct, s.symbol if s else None)])


async def positions(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    rows = []
    for symbol, pos in sorted(acct.positions.items()):
        s = sim.market.get(VENUE, symbol)
        if s is None or pos.qty == 0:
            continue
        mark = sim.market.mark(s)
        ct = _ct(sim, s)
        rows.append(
            {
                "adl": "1",
                "availPos": "",
                "avgPx": short(pos.entry),
                "cTime": str(sim.start_ms),
                "ccy": "USDT",
                "imr": short(abs(pos.qty) * mark * 0.1),
                "instId": inst_id(s),
                "instType": "SWAP",
                "last": short(mark),
                "lever": "10",
                "liqPx": "",
                "margin": "",
                "markPx": short(mark),
                "mgnMode": "cross",
                "mgnRatio": "",
                "mmr": short(abs(pos.qty) * mark * 0.005),
                "notionalUsd": short(abs(pos.qty) * mark),
                "pos": short(round(pos.qty / ct, 6)),
                "posCcy": "",
                "posId": str(abs(hash(symbol)) % 10**12),
                "posSide": "net",
                "realizedPnl": short(pos.realized),
                "upl": short(sim.engine.unrealized(acct, symbol)),
                "uplRatio": "0",
                "uTime": str(sim.market.now_ms),
            }
        )
    return _ok(rows)


async def balance(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    upnl = sum(sim.engine.unrealized(acct, s) for s in acct.positions)
    bal = acct.balance
    return _ok(
        [
            {
                "adjEq": short(bal + upnl),
                "details": [
                    {
                        "availBal": short(bal),
                        "availEq": short(bal + upnl),
                        "cashBal": short(bal),
                        "ccy": "USDT",
                        "disEq": short(bal + upnl),
                        "eq": short(bal + upnl),
                        "eqUsd": short(bal + upnl),
                        "frozenBal": "0",
                        "ordFrozen": "0",
                        "upl": short(upnl),
                        "uTime": str(sim.market.now_ms),
                    }
                ],
                "imr": "0",
                "isoEq": "0",
                "mgnRatio": "",
                "mmr": "0",
                "notionalUsd": "0",
                "ordFroz": "0",
                "totalEq": short(bal + upnl),
                "uTime": str(sim.market.now_ms),
            }
        ]
    )


async def bills(sim: SimServer, request: web.Request, acct: VenueAccount) -> web.Response:
    if request.query.get("type", "8") != "8":
        return _ok([])
    rows = []
    for f in reversed(acct.funding):
        s = sim.market.get(VENUE, f.symbol)
        ct = _ct(sim, s) if s is not None else 1.0
        rows.append(
            {
                "bal": short(acct.balance),
                "balChg": short(f.amount),
                "billId": str(f.tran_id),
                "ccy": "USDT",
                "execType": "",
                "fee": "0",
                "from": "",
                "instId": f"{f.symbol[:-4]}-USDT-SWAP",
                "instType": "SWAP",
                "mgnMode": "cross",
                "notes": "",
                "ordId": "",
                "pnl": short(f.amount),
                "posBal": "0",
                "posBalChg": "0",
                "px": short(f.mark),
                "subType": "173" if f.amount < 0 else "174",
                "sz": short(round(abs(f.position_qty) / ct, 6)),
                "to": "",
                "ts": str(f.ts_ms),
                "type": "8",
            }
        )
    return _ok(rows)


PUBLIC = {
    ("GET", "/api/v5/public/instruments"): instruments,
    ("GET", "/api/v5/public/funding-rate"): funding_rate,
    ("GET", "/api/v5/public/funding-rate-history"): funding_history,
    ("GET", "/api/v5/public/open-interest"): open_interest,
    ("GET", "/api/v5/public/mark-price"): mark_price,
    ("GET", "/api/v5/rubik/stat/contracts/open-interest-history"): open_interest_history,
    ("GET", "/api/v5/market/tickers"): tickers,
    ("GET", "/api/v5/market/ticker"): ticker,
    ("GET", "/api/v5/market/books"): books,
    ("GET", "/api/v5/market/index-tickers"): index_tickers,
}
PRIVATE = {
    ("POST", "/api/v5/trade/order"): place_order,
    ("POST", "/api/v5/trade/cancel-order"): cancel_order,
    ("GET", "/api/v5/trade/order"): get_order,
    ("GET", "/api/v5/trade/orders-pending"): orders_pending,
    ("GET", "/api/v5/account/positions"): positions,
    ("GET", "/api/v5/account/balance"): balance,
    ("GET", "/api/v5/account/bills"): bills,
    ("GET", "/api/v5/account/bills-archive"): bills,
}


async def websocket(sim: SimServer, request: web.Request) -> web.WebSocketResponse:
    """Public stream: the ``liquidation-orders`` channel for SWAP."""
    subscribed: list[bool] = [False]

    async def on_request(text: str, reply: Reply) -> None:
        if text == "ping":
            await reply("pong")
            return
        try:
            req = json.loads(text)
        except ValueError:
            return
        if isinstance(req, dict) and req.get("op") == "subscribe":
            for arg in req.get("args", []):
                if isinstance(arg, dict) and arg.get("channel") == "liquidation-orders":
                    subscribed[0] = True
                await reply(json.dumps({"event": "subscribe", "arg": arg, "connId": "sim"}))

    def frames(liqs: list[LiquidationPrint]) -> list[str]:
        if not subscribed[0]:
            return []
        data = []
        for liq in liqs:
            s = sim.market.get(VENUE, liq.symbol)
            ct = _ct(sim, s) if s is not None else 1.0
            base = liq.symbol[:-4]
            data.append(
                {
                    "details": [
                        {
                            "bkLoss": "0",
                            "bkPx": short(liq.price),
                            "ccy": "",
                            "posSide": "long" if liq.side == "sell" else "short",
                            "side": liq.side,
                            "sz": short(round(liq.qty / ct, 6)),
                            "ts": str(liq.ts_ms),
                        }
                    ],
                    "instFamily": f"{base}-USDT",
                    "instId": f"{base}-USDT-SWAP",
                    "instType": "SWAP",
                    "uly": f"{base}-USDT",
                }
            )
        channel = {"channel": "liquidation-orders", "instType": "SWAP"}
        return [json.dumps({"arg": channel, "data": data})]

    return await liquidation_stream(sim, request, VENUE, on_request, frames)
