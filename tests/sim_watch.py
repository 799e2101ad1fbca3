"""What the services publish while a test drives the simulator's clock: newest input times,
cascade forecasts and signals, seen by a plain NATS subscriber."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import nats

from hean_proto import codec
from hean_proto.events import CascadeForecast, FundingRate, OpenInterest, PriceTick, Signal


class Watch:
    """Newest simulated timestamp per input type of one (venue, symbol), its forecasts, and
    every signal on the bus."""

    def __init__(self, symbol: str, venue: str) -> None:
        self.symbol = symbol
        self.venue = venue
        self.newest: dict[str, int] = defaultdict(int)
        self.forecasts: list[CascadeForecast] = []
        self.signals: list[Signal] = []
        self.changed = asyncio.Event()

    def _ours(self, e: object) -> bool:
        return getattr(e, "symbol", None) == self.symbol and getattr(e, "venue", None) == self.venue

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url)

        async def on_msg(msg) -> None:
            with contextlib.suppress(codec.DecodeError):
                e = codec.decode(msg.data)
                if isinstance(e, PriceTick | OpenInterest | FundingRate) and self._ours(e):
                    kind = type(e).__name__
                    self.newest[kind] = max(self.newest[kind], e.ts_ms)
                elif isinstance(e, CascadeForecast) and self._ours(e):
                    self.forecasts.append(e)
                elif isinstance(e, Signal):
                    self.signals.append(e)
                self.changed.set()

        await self.nc.subscribe("hean.>", cb=on_msg)
        await self.nc.flush()

    async def until(self, ok, timeout: float = 20.0) -> None:
        async def wait() -> None:
            while not ok():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def collected_since(self, t_ms: int) -> bool:
        return min(self.newest["PriceTick"], self.newest["OpenInterest"]) >= t_ms

    def forecast_since(self, t_ms: int) -> bool:
        return bool(self.forecasts) and self.forecasts[-1].ts_ms >= t_ms

    async def close(self) -> None:
        await self.nc.close()
