"""Pure delivery policy: which alerts go out (dedupe, rate limit) and when to retry.

Kept apart from the channels so the rules are tested with an injected clock and the same
rules apply to every channel.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from hean_proto.events import Alert


@dataclass
class TokenBucket:
    """``rate_per_min`` sends per minute with bursts up to ``burst``."""

    rate_per_min: float
    burst: int
    _tokens: float = -1.0
    _last_ms: int | None = None

    def take(self, now_ms: int) -> bool:
        if self._tokens < 0:
            self._tokens = float(self.burst)
        if self._last_ms is not None and now_ms > self._last_ms:
            refill = (now_ms - self._last_ms) / 60_000 * self.rate_per_min
            self._tokens = min(float(self.burst), self._tokens + refill)
        self._last_ms = now_ms if self._last_ms is None else max(self._last_ms, now_ms)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class AlertGate:
    """Decides whether an alert is sent: once per key within ``dedupe_ms``, within the rate.

    Critical alerts (kill switch) bypass the rate limit but not the dedupe, because losing one
    matters more than a burst of messages.
    """

    dedupe_ms: int = 3_600_000
    rate_per_min: float = 30.0
    burst: int = 10
    max_keys: int = 100_000
    _seen: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _bucket: TokenBucket | None = None

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.rate_per_min, self.burst)

    def decide(self, alert: Alert, now_ms: int) -> str:
        """``"send"``, ``"duplicate"`` or ``"rate_limited"``; a send is remembered."""
        last = self._seen.get(alert.key)
        if last is not None and now_ms - last < self.dedupe_ms:
            return "duplicate"
        if alert.severity != "critical" and not self._bucket.take(now_ms):
            return "rate_limited"
        self._seen[alert.key] = now_ms
        self._seen.move_to_end(alert.key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return "send"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with a cap: attempt n waits ``base * factor**n`` seconds."""

    attempts: int = 4
    base_s: float = 0.5
    factor: float = 2.0
    max_s: float = 30.0

    def delays(self) -> list[float]:
        """Waits before each retry (one fewer than attempts)."""
        return [min(self.max_s, self.base_s * self.factor**i) for i in range(self.attempts - 1)]
