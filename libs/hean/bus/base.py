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
    ) -> Subscription:
        """Deliver matching messages to ``handler``.

        ``queue`` spreads messages over the members of a queue group. ``durable`` names a
        stored consumer that resumes where it stopped and is acknowledged only after the
        handler returns, so a crash redelivers instead of losing. ``early`` (durable, single
        instance) handles a message from its live copy without waiting for the store; the
        stored copy then only confirms it (``hean.bus.early``).
        """

    @abc.abstractmethod
    async def kv_get(self, bucket: str, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def kv_put(self, bucket: str, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...
