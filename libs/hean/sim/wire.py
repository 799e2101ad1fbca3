"""Helpers shared by the venue wire formats: number strings, auth, and JSON answers."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from aiohttp import web


def num(x: float, places: int = 8) -> str:
    """A decimal string the way venues write numbers (no exponent)."""
    text = f"{x:.{places}f}"
    return text


def short(x: float) -> str:
    """A decimal string without trailing zeros (Bybit and OKX style)."""
    text = f"{x:.10f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None):
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    return int(raw)
