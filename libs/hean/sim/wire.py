"""Helpers shared by the venue wire formats: number strings, auth, and JSON answers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from hean.sim.market import LiquidationPrint
    from hean.sim.server import SimServer


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


Reply = Callable[[str], Awaitable[None]]


async def liquidation_stream(
    sim: SimServer,
    request: web.Request,
    venue: str,
    on_request: Callable[[str, Reply], Awaitable[None]],
    frames: Callable[[list[LiquidationPrint]], list[str]],
) -> web.WebSocketResponse:
    """A venue's public websocket: its subscribe protocol in ``on_request``, its message
    format in ``frames``; liquidation prints as the market makes them, dropped in an outage."""
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    cursor = sim.liquidation_cursor(venue)

    async def reader() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await on_request(msg.data, ws.send_str)

    task = asyncio.create_task(reader())
    try:
        while not ws.closed and not task.done():
            if sim.ws_should_drop(venue):
                await ws.close()
                break
            liqs = sim.new_liquidations(venue, cursor)
            for frame in frames(liqs) if liqs else ():
                await ws.send_str(frame)
            await asyncio.sleep(sim.ws_poll_s)
    finally:
        task.cancel()
    return ws
