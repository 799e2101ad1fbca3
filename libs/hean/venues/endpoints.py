"""Which ccxt class serves a venue, and how its URLs are pointed at the simulator.

Pointing a client at the simulator rewrites only the scheme and host of every URL ccxt knows
for the venue (``https://fapi.binance.com/fapi/v1`` -> ``http://sim/binance/fapi/v1``); paths,
signing and parsing stay exactly what production uses.
"""

from __future__ import annotations

import re
from typing import Any

CCXT_IDS = {"binance": "binanceusdm", "bybit": "bybit", "okx": "okx"}
"""Venue name -> ccxt id. Any other ccxt id works as a venue name by itself."""

OPTIONS: dict[str, dict[str, Any]] = {
    # perpetuals only: skip spot, options and margin discovery at load_markets
    "binanceusdm": {
        "fetchMargins": False,
        "fetchCurrencies": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    },
    "bybit": {"fetchMarkets": {"types": ["linear"]}, "defaultType": "swap"},
    "okx": {
        "fetchMarkets": {"types": ["swap"]},
        "defaultType": "swap",
        "createOrder": "privatePostTradeOrder",
    },
}


SPOT_CCXT_IDS = {"binance": "binance"}
"""Venue name -> ccxt id of its spot market where the perpetual's class has no spot."""

SPOT_OPTIONS: dict[str, dict[str, Any]] = {
    # spot pairs only: a spot client trades the spot leg of a hedge and nothing else
    "binance": {
        "fetchMarkets": {"types": ["spot"]},
        "defaultType": "spot",
        "fetchMargins": False,
        "fetchCurrencies": False,
        "fetchOpenOrders": {"warnWithoutSymbol": False},
    },
    "bybit": {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"},
    "okx": {"fetchMarkets": {"types": ["spot"]}, "defaultType": "spot"},
}


def ccxt_id(venue: str, market: str = "perp") -> str:
    if market == "spot":
        return SPOT_CCXT_IDS.get(venue, CCXT_IDS.get(venue, venue))
    return CCXT_IDS.get(venue, venue)


def ccxt_options(venue: str, market: str = "perp") -> dict[str, Any]:
    """The ccxt options for a venue's perpetual or spot client."""
    cid = ccxt_id(venue, market)
    return dict((SPOT_OPTIONS if market == "spot" else OPTIONS).get(cid, {}))


def point_at(urls: Any, base_url: str, venue: str) -> Any:
    """Every URL in ccxt's ``urls['api']`` tree moved to ``base_url/<venue>``."""
    host = re.sub(r"^https?://", "", base_url.rstrip("/"))
    secure = base_url.startswith("https://")

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, str):
            value = value.replace("{hostname}", "sim")

            def repl(m: re.Match[str]) -> str:
                ws = m.group(1) in ("ws", "wss")
                scheme = ("wss" if secure else "ws") if ws else ("https" if secure else "http")
                return f"{scheme}://{host}/{venue}"

            return re.sub(r"^(https|http|wss|ws)://[^/]+", repl, value)
        return value

    return move(urls)
