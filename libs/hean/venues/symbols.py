"""Canonical symbols: one name per perpetual across venues, safe as a NATS subject token."""

from __future__ import annotations

import re

TOKEN = re.compile(r"^[A-Z0-9]{2,40}$")


def canonical(base: str, quote: str) -> str | None:
    """``BTC`` + ``USDT`` -> ``BTCUSDT``; None when the result is not a safe token."""
    name = f"{base}{quote}".upper()
    return name if TOKEN.match(name) else None


QUOTES = ("USDT", "USDC", "FDUSD", "USD")
"""Quote assets of canonical symbols, longest first where one ends another."""


def base_asset(symbol: str) -> str | None:
    """``BTCUSDT`` -> ``BTC``: the asset a spot holding of ``symbol`` is a balance of."""
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return None
