"""Message buses: NATS for live runs, in-memory for tests and backtests."""

from hean.bus.base import Bus, Handler, Message, Subscription
from hean.bus.memory import InMemoryBus

__all__ = ["Bus", "Handler", "InMemoryBus", "Message", "Subscription"]
