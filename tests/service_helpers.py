"""Serve an app in-process over a real nats-server and watch everything it publishes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import nats

from hean.runtime.runner import ServiceApp, serve
from hean_proto import codec


@contextlib.asynccontextmanager
async def running(app: ServiceApp, settings) -> AsyncIterator[object]:
    """Serve ``app`` in this process until the block ends; yields its service context."""
    stop = asyncio.Event()
    started: asyncio.Future = asyncio.get_running_loop().create_future()

    async def stopper(ctx) -> None:
        started.set_result(ctx)
        await stop.wait()
        ctx.stopping.set()

    app.tasks.append(stopper)
    task = asyncio.create_task(serve(app, settings))
    try:
        ctx = await asyncio.wait_for(asyncio.shield(started), 30)
        yield ctx
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


class Tap:
    """Every event on ``hean.>`` seen by a plain NATS subscriber."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.changed = asyncio.Event()

    async def start(self, url: str) -> None:
        self.nc = await nats.connect(url)

        async def on_msg(msg) -> None:
            with contextlib.suppress(codec.DecodeError):
                self.events.append(codec.decode(msg.data))
                self.changed.set()

        await self.nc.subscribe("hean.>", cb=on_msg)
        await self.nc.flush()

    async def until(self, predicate, timeout: float = 30.0):
        async def wait() -> object:
            while True:
                found = predicate(self.events)
                if found:
                    return found
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        await self.nc.close()


def of(kind, **match):
    """A predicate picking events of ``kind`` whose fields equal ``match``."""

    def pick(events):
        return [
            e
            for e in events
            if isinstance(e, kind) and all(getattr(e, k) == v for k, v in match.items())
        ]

    return pick
