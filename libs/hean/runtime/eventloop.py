"""The event loop every service and the benchmark run on: uvloop when installed.

uvloop's loop does the socket reads and writes, timers and callbacks in C; per message that is
less CPU than asyncio's pure-Python selector loop, which matters most when several services
share a few cores. Without uvloop (a platform it does not build on) asyncio's own loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop's name and how to make one (None: asyncio's default)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio", None
    return "uvloop", uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the preferred loop."""
    _, factory = loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """Which loop the calling coroutine runs on: "uvloop" or "asyncio"."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
