"""The shape of a service's logic: a plain class fed events, returning events.

Logic never touches NATS, HTTP or the wall clock: the runtime hands it decoded events and the
current time and publishes what it returns. That is what lets the backtester and the tests
drive exactly the code that runs live.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hean.bus.base import ACK_WAIT_S, PULL_BATCH
from hean_proto.events import Event


@dataclass(frozen=True)
class Input:
    """A subscription: subject pattern, the event classes accepted on it, and how to consume.

    ``queue`` shares the work among replicas; ``durable`` makes the consumer stored and
    acknowledged (JetStream) so nothing is lost while the service is down. ``early`` lets a
    single-instance durable consumer act on a message as it is published instead of once it
    is on disk; the stored copy is acknowledged when what it produced is stored.
    ``ack_wait_s`` and ``batch`` tune a durable consumer (see ``Bus.subscribe``).
    """

    pattern: str
    kinds: tuple[type[Event], ...]
    queue: str | None = None
    durable: str | None = None
    early: bool = False
    ack_wait_s: float = ACK_WAIT_S
    batch: int = PULL_BATCH


@dataclass(frozen=True)
class Publish:
    """An event with an explicit subject, for the few events whose subject is not derived."""

    event: Event
    subject: str


Output = Event | Publish


class ServiceLogic:
    """Base class for service logic; override what the service needs."""

    name: str = "service"
    tick_interval_s: float = 1.0

    def inputs(self) -> list[Input]:
        return []

    def on_event(self, event: Event, now_ms: int) -> Iterable[Output]:
        return ()

    def on_tick(self, now_ms: int) -> Iterable[Output]:
        return ()

    def readiness(self, now_ms: int) -> dict[str, bool]:
        """Named conditions that must all hold for the service to be ready."""
        return {}

    def snapshot(self) -> dict[str, object]:
        """State worth showing on the health endpoint (JSON-serialisable)."""
        return {}
