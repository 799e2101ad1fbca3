"""The bus interface shared by the NATS bus and the in-memory bus.

The bus moves bytes; encoding, validation and dead-lettering belong to the runtime, so both
implementations stay small and behave the same.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)
    redelivered: bool = False


Handler = Callable[[Message], Awaitable[None]]

ACK_WAIT_S = 30.0
"""How long a durable message handed to an instance may go unacknowledged before it is
delivered again: to another instance, or to this one's restart after a crash."""
PULL_BATCH = 64
"""How many durable messages an instance asks for at once; each is handed on as it arrives."""


class Subscription(abc.ABC):
    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop delivering; in-flight handlers finish first."""


class Bus(abc.ABC):
    """Publish, subscribe (plain, queue group or durable) and a key-value store."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @abc.abstractmethod
    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        """Publish; subjects captured by a stream are stored, deduplicated by ``msg_id``.

        ``wait=False`` pipelines a stored publish: the call returns once the message is sent
        and the bus confirms (and if need be retries) the store in the background. Use it
        where nothing upstream waits on the store, so one slow acknowledgement does not
        hold up the next message.
        """

    @abc.abstractmethod
    async def subscribe(
        self,
        pattern: str,
        handler: Handler,
        *,
        queue: str | None = None,
        durable: str | None = None,
        early: bool = False,
        ack_wait_s: float = ACK_WAIT_S,
        batch: int = PULL_BATCH,
    ) -> Subscription:
        """Deliver matching messages to ``handler``.

        ``queue`` spreads messages over the members of a queue group. ``durable`` names a
        stored consumer that resumes where it stopped and is acknowledged only after the
        handler returns, so a crash redelivers instead of losing. ``early`` (durable, single
        instance) handles a message from its live copy without waiting for the store; the
        stored copy then only confirms it (``hean.bus.early``). ``ack_wait_s`` and ``batch``
        tune a durable consumer: a short ack wait with a batch of one suits slow, sequential
        work whose message should come back soon after a crash (an intent at the router); the
        message is kept in progress while its handler runs, however long that takes.
        """

    @abc.abstractmethod
    async def kv_get(self, bucket: str, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def kv_put(self, bucket: str, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
