"""OKX index prices (``GET /api/v5/market/index-tickers``), for the ``index`` of OKX price ticks.

OKX's mark-price answer carries no index, unlike Binance's and Bybit's, so without this the
spot leg of a hedge on OKX has no price and risk refuses it. One request with
``quoteCcy=USDT`` returns the index of every USDT underlying (``BTC-USDT``), which is the
index OKX's USDT swaps (``BTC-USDT-SWAP``) are marked against. ccxt has no unified call for
it, so the body is read here, row by row, through the same checks as any other venue number.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hean.venues.base import VenueDataError
from hean.venues.symbols import canonical
from hean.venues.validate import Checker

ENDPOINT = "fetch_index_prices"
QUOTE = "USDT"
MAX_LAG_MS = 60_000
"""An index stamped this much older than the mark it would go with is not used: OKX updates
its indices every second or so, and a spot leg priced from a stuck index is mispriced."""


class IndexPrice(NamedTuple):
    price: float
    ts_ms: int


def parse_index_tickers(
    body: Any, venue: str = "okx"
) -> tuple[dict[str, IndexPrice], list[tuple[VenueDataError, Any]]]:
    """Canonical symbol -> index price from an index-tickers body, and the refused rows with
    why (for the caller to count and dead-letter). A body that is not OKX's envelope raises."""
    chk = Checker(venue, ENDPOINT)
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise chk.fail("data", f"not an index-tickers answer: {str(body)[:200]}")
    if str(body.get("code", "0")) != "0":
        raise chk.fail("code", f"venue error {body.get('code')!r}: {body.get('msg')!r}")
    out: dict[str, IndexPrice] = {}
    bad: list[tuple[VenueDataError, Any]] = []
    for row in body["data"]:
        try:
            out.update([_row(chk, row)])
        except VenueDataError as exc:
            bad.append((exc, row))
    return out, bad


def _row(chk: Checker, row: Any) -> tuple[str, IndexPrice]:
    if not isinstance(row, dict):
        raise chk.fail("instId", f"row is not an object: {row!r}")
    inst = row.get("instId")
    parts = inst.split("-") if isinstance(inst, str) else []
    symbol = canonical(parts[0], parts[1]) if len(parts) == 2 and all(parts) else None
    if symbol is None:
        raise chk.fail("instId", f"not an index id like BTC-USDT: {inst!r}")
    price = chk.positive(row.get("idxPx"), "idxPx")
    return symbol, IndexPrice(price, chk.timestamp(row.get("ts"), "ts"))


def index_for(
    index: dict[str, IndexPrice], symbol: str, mark_ts_ms: int, venue: str = "okx"
) -> float | None:
    """The index to put into a price tick stamped ``mark_ts_ms``; None when there is none, and
    VenueDataError when there is one too old to use."""
    got = index.get(symbol)
    if got is None:
        return None
    if mark_ts_ms - got.ts_ms > MAX_LAG_MS:
        raise Checker(venue, ENDPOINT).fail(
            "ts", f"{symbol}: index stamped {mark_ts_ms - got.ts_ms} ms before the mark"
        )
    return got.price
