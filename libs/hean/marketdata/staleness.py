"""Freshness of market data: a value that stopped updating is flagged, never silently reused.

The tracker is pure (the caller passes ``now_ms``): it remembers when each key was last
refreshed and reports which keys crossed their maximum age since the last check, so that a
service emits exactly one "now stale" mark per transition and can report freshness in its
readiness.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class StalenessTracker:
    max_age_ms: int
    _last: dict[Hashable, int] = field(default_factory=dict)
    _stale: set[Hashable] = field(default_factory=set)

    def touch(self, key: Hashable, ts_ms: int) -> bool:
        """Record a refresh; True when the key was stale before (it recovered)."""
        prev = self._last.get(key)
        if prev is None or ts_ms >= prev:
            self._last[key] = ts_ms
        recovered = key in self._stale
        self._stale.discard(key)
        return recovered

    def forget(self, key: Hashable) -> None:
        self._last.pop(key, None)
        self._stale.discard(key)

    def age_ms(self, key: Hashable, now_ms: int) -> int | None:
        last = self._last.get(key)
        return None if last is None else now_ms - last

    def is_stale(self, key: Hashable, now_ms: int) -> bool:
        age = self.age_ms(key, now_ms)
        return age is None or age > self.max_age_ms

    def newly_stale(self, now_ms: int) -> list[Hashable]:
        """Keys that went stale since the previous call (each reported once per episode)."""
        fresh_now: list[Hashable] = []
        for key, last in self._last.items():
            if key not in self._stale and now_ms - last > self.max_age_ms:
                self._stale.add(key)
                fresh_now.append(key)
        return fresh_now

    @property
    def stale_keys(self) -> set[Hashable]:
        return set(self._stale)

    def tracked(self) -> list[Hashable]:
        return list(self._last)

    def __len__(self) -> int:
        return len(self._last)
