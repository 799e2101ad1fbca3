"""Handling a stored message from its live copy, before the stream has it on disk.

A durable consumer is handed a message only once the stream has stored it; with an fsync per
write that puts the disk between a signal and its risk decision. The same message also
travels on its subject the moment it is published. A single-instance consumer may handle that
live copy at once and let the stored copy confirm it: the stored copy is acknowledged only
once everything the early handling published is stored, so a crash still redelivers it, and
nothing downstream acts on an output before it is stored. The stored copy stays the authority
for what the live copy cannot cover: a message whose live copy was missed (a disconnect, a
slow consumer) or whose early handling failed is handled from the store as before.

Order: while the durable consumer has a backlog, a live copy would overtake older stored
messages (an exit decided before the entry it closes). Live copies are therefore taken only
once the consumer has caught up with its stream, and not again after a disconnect or a slow
consumer drop until it has caught up again.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

Outcome = list[asyncio.Future[bool]] | None
"""What early handling published (confirmation futures), or None if it failed."""

_FROM_STORE = object()
"""The stored copy came first (or was handled from the store): a late live copy is dropped."""


class EarlyCopies:
    """Which messages, by Nats-Msg-Id, were handled from their live copy.

    Bounded: beyond ``limit`` keys the oldest are forgotten. A stored copy that arrives after
    its key was forgotten is handled again from the store, where the service's own duplicate
    check (the risk engine keeps the ids it decided) sees it.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self.caught_up = False
        self.handled_early = 0
        self.confirmed_by_store = 0
        self._keys: OrderedDict[str, asyncio.Future[Outcome] | object] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def claim(self, key: str | None) -> asyncio.Future[Outcome] | None:
        """A future for the caller to resolve with the outcome of handling this live copy, or
        None when the live copy must be left to the store (no key, backlog, already seen)."""
        if key is None or not self.caught_up or key in self._keys:
            return None
        outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._put(key, outcome)
        self.handled_early += 1
        return outcome

    def release(self, key: str) -> None:
        """Early handling failed: the stored copy is handled from the store."""
        self._keys.pop(key, None)

    def take(self, key: str | None) -> asyncio.Future[Outcome] | None:
        """The stored copy arrived: the outcome of its early handling, if there was one.

        From here on the key counts as handled from the store, so a live copy that arrives
        late is dropped."""
        if key is None:
            return None
        entry = self._keys.pop(key, None)
        self._put(key, _FROM_STORE)
        if isinstance(entry, asyncio.Future):
            self.confirmed_by_store += 1
            return entry
        return None

    def _put(self, key: str, value: asyncio.Future[Outcome] | object) -> None:
        self._keys[key] = value
        while len(self._keys) > self.limit:
            self._keys.popitem(last=False)
