"""Checks on every number a venue hands us, before it can become an event.

A bad value raises VenueDataError naming venue, endpoint and field; the caller counts it and
drops that item, so a malformed answer never reaches the bus as data.
"""

from __future__ import annotations

import math
import time
from typing import Any

from hean.venues.base import VenueDataError

EARLIEST_MS = 1_483_228_800_000  # 2017-01-01: no perpetual swap data before this is plausible
FUTURE_SLACK_MS = 2 * 86_400_000
DEFAULT_RATE_CAP = 0.05
"""Largest |funding rate| per interval accepted when the venue states no cap (Binance caps 3 %)."""


class Checker:
    def __init__(self, venue: str, endpoint: str) -> None:
        self.venue = venue
        self.endpoint = endpoint

    def fail(self, field: str, message: str) -> VenueDataError:
        return VenueDataError(self.venue, self.endpoint, field, message)

    def number(self, value: Any, field: str) -> float:
        if isinstance(value, bool) or value is None:
            raise self.fail(field, f"missing or not a number: {value!r}")
        try:
            x = float(value)
        except (TypeError, ValueError):
            raise self.fail(field, f"not a number: {value!r}") from None
        if not math.isfinite(x):
            raise self.fail(field, f"not finite: {value!r}")
        return x

    def optional(self, value: Any, field: str) -> float | None:
        if value is None or value == "":
            return None
        return self.number(value, field)

    def positive(self, value: Any, field: str) -> float:
        x = self.number(value, field)
        if x <= 0:
            raise self.fail(field, f"must be > 0, got {x}")
        return x

    def positive_or_none(self, value: Any, field: str) -> float | None:
        x = self.optional(value, field)
        if x is not None and x <= 0:
            raise self.fail(field, f"must be > 0, got {x}")
        return x

    def non_negative(self, value: Any, field: str) -> float:
        x = self.number(value, field)
        if x < 0:
            raise self.fail(field, f"must be >= 0, got {x}")
        return x

    def rate(self, value: Any, field: str, cap: float | None = None) -> float:
        x = self.number(value, field)
        limit = cap if cap and cap > 0 else DEFAULT_RATE_CAP
        if abs(x) > limit * 1.0001:
            raise self.fail(field, f"|{x}| beyond the venue cap {limit}")
        return x

    def timestamp(self, value: Any, field: str, now_ms: int | None = None) -> int:
        x = self.number(value, field)
        t = int(x)
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        if t < EARLIEST_MS:
            raise self.fail(field, f"timestamp {t} is before 2017 (seconds instead of ms?)")
        if t > now + FUTURE_SLACK_MS:
            raise self.fail(field, f"timestamp {t} is in the future")
        return t

    def timestamp_or_none(self, value: Any, field: str) -> int | None:
        if value is None or value == "":
            return None
        return self.timestamp(value, field)
