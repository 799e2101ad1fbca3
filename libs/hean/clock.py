"""Clocks injected into service logic, so the same code runs live and in backtests."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, UTC."""
        ...


class SystemClock:
    """Wall-clock time for live runs."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class SimClock:
    """A clock that moves only when told: backtests and deterministic tests."""

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError(f"SimClock cannot go back: {now_ms} < {self._now}")
        self._now = now_ms

    def advance(self, ms: int) -> None:
        self.set(self._now + ms)
