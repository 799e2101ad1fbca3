"""A loopback HTTP server that answers with real recorded venue responses, read in place.

Running the venue client against it applies exactly the normalisation the simulator path
gets to what Binance, Bybit and OKX really sent.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

R = "api_responses"
NOAH = f"{R}/noahark_binance_funding_hedging_2026"
NAUT = f"{R}/nautilus_trader_fixtures"

RECORDED: dict[tuple[str, str], str] = {
    ("binance", "/fapi/v1/exchangeInfo"): f"{NOAH}/fapi-v1-exchangeInfo.json",
    ("binance", "/fapi/v1/fundingInfo"): f"{NOAH}/fapi-v1-fundingInfo.json",
    ("binance", "/fapi/v1/premiumIndex"): f"{NOAH}/fapi-v1-premiumIndex.json",
    ("binance", "/fapi/v1/fundingRate"): f"{NOAH}/fapi-v1-fundingRate-BTCUSDT-limit20.json",
    ("binance", "/fapi/v1/openInterest"): (
        f"{NAUT}/binance__resources__http_responses__http_futures_market_open_interest.json"
    ),
    ("bybit", "/v5/market/instruments-info"): (
        f"{R}/ccxt_static_markets_excerpt/bybit_v5_instruments_info_items_from_ccxt_markets.json"
    ),
    (
        "bybit",
        "/v5/market/tickers",
    ): f"{R}/acuityinnovations_ex_bybit_vcr/v5_public_get_mark_price.json",
    (
        "bybit",
        "/v5/market/funding/history",
    ): f"{NAUT}/bybit__test_data__http_get_funding_history.json",
    ("okx", "/api/v5/public/instruments"): f"{NAUT}/okx__test_data__http_get_instruments_swap.json",
    ("okx", "/api/v5/public/funding-rate-history"): (
        f"{NAUT}/okx__test_data__http_get_funding_rate_history.json"
    ),
    ("okx", "/api/v5/public/mark-price"): f"{NAUT}/okx__test_data__http_get_mark_price.json",
}
OKX_INDEX_ROW = {
    "instId": "BTC-USDT",
    "idxPx": "43350",
    "high24h": "43649.7",
    "sodUtc0": "43444.1",
    "open24h": "43640.8",
    "low24h": "43261.9",
    "sodUtc8": "43328.7",
    "ts": "1649419644492",
}
DOCUMENTED: dict[tuple[str, str], dict] = {
    # no recording of index-tickers exists in the data: the response example of OKX's v5 API
    # docs ("Get index tickers") stands in, three years older than the recorded mark price
    ("okx", "/api/v5/market/index-tickers"): {"code": "0", "msg": "", "data": [OKX_INDEX_ROW]},
}
LIQUIDATION_MESSAGES = {
    "binance": f"{NAUT}/binance__test_data__futures__market_data_json__liquidation_stream.json",
}


def body_of(data_dir: Path, rel: str) -> str:
    """The response body; VCR cassettes hold it as a string inside the recording."""
    raw = json.loads((data_dir / rel).read_text())
    if isinstance(raw, dict) and "category_linear_and_inverse_list_items" in raw:
        # real instrument items without their envelope: wrap the linear ones as Bybit does
        items = raw["category_linear_and_inverse_list_items"]
        linear = [i for i in items if i.get("contractType") == "LinearPerpetual"]
        return json.dumps(
            {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": linear}}
        )
    if isinstance(raw, list) and raw and isinstance(raw[0], dict) and "response" in raw[0]:
        return raw[0]["response"]["body"]
    return json.dumps(raw)


class RecordedVenues:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.served: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        venue, _, path = request.path.lstrip("/").partition("/")
        path = "/" + path
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            first = await ws.receive_json()
            await ws.send_json({"result": None, "id": first.get("id")})
            rel = LIQUIDATION_MESSAGES.get(venue)
            if rel:
                await ws.send_str(body_of(self.data_dir, rel))
            async for _ in ws:
                pass
            return ws
        if (venue, path) in DOCUMENTED:
            self.served.append((venue, path))
            return web.json_response(DOCUMENTED[(venue, path)])
        rel = RECORDED.get((venue, path))
        if rel is None:
            return web.json_response({"error": "not recorded"}, status=404)
        self.served.append((venue, path))
        return web.Response(text=body_of(self.data_dir, rel), content_type="application/json")

    async def __aenter__(self) -> RecordedVenues:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
