"""Canonical symbols: one name per perpetual across venues, safe as a NATS subject token."""

from __future__ import annotations

import re

TOKEN = re.compile(r"^[A-Z0-9]{2,40}$")


def canonical(base: str, quote: str) -> str | None:
    """``BTC`` + ``USDT`` -> ``BTCUSDT``; None when the result is not a safe token."""
    name = f"{base}{quote}".upper()
    return name if TOKEN.match(name) else None
