"""Reading and writing the router's book in JetStream KV, one writer at a time."""

from __future__ import annotations

import asyncio

from hean.bus.base import Bus
from hean.execution.book import KEY, RouterBook
from hean_proto.subjects import KV_ROUTER


class BookStore:
    def __init__(self, bus: Bus, bucket: str = KV_ROUTER, key: str = KEY) -> None:
        self.bus = bus
        self.bucket = bucket
        self.key = key
        self._lock = asyncio.Lock()

    async def load(self) -> RouterBook:
        return RouterBook.decode(await self.bus.kv_get(self.bucket, self.key))

    async def save(self, book: RouterBook) -> None:
        async with self._lock:
            await self.bus.kv_put(self.bucket, self.key, book.encode())
