"""The router's half of the kill switch: trade only under a fresh ACTIVE risk state.

The latest ``RiskState`` is timed by when the router received it, not by the sender's clock,
so a risk service that is silent, partitioned away or wedged turns every new order away after
``max_age_ms``. Reduce-only orders pass in REDUCING; HALTED passes nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hean_proto.events import RiskState


@dataclass
class RiskGate:
    max_age_ms: int = 5_000
    state: RiskState | None = None
    received_ms: int = 0
    latched_halt: bool = False
    """HALTED read from the risk KV at start: holds until a later ACTIVE state arrives."""
    latched_since_ms: int = 0
    updated: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by every state received; ``wait_fresh`` waits on it."""

    def on_state(self, state: RiskState, now_ms: int) -> None:
        self.state = state
        self.received_ms = now_ms
        self.updated.set()
        if state.state != "HALTED" and state.since_ms >= self.latched_since_ms:
            self.latched_halt = False

    async def wait_fresh(self, now_ms: int, timeout_s: float) -> None:
        """Without a fresh state, wait at most ``timeout_s`` for the next one (unless latched).

        An intent can reach the router before risk's next state does: the router has just
        started and not yet heard risk, or risk has just restarted and decided the signals
        stored while it was down before its first state went out. Refusing such an intent
        would punish a gap in the router's hearing, not a silent risk. Waiting decides
        nothing: ``refusal`` still judges the intent, and refuses it if no state came.
        """
        if self.latched_halt:
            return
        if self.state is not None and now_ms - self.received_ms <= self.max_age_ms:
            return
        self.updated.clear()
        try:
            await asyncio.wait_for(self.updated.wait(), timeout_s)
        except TimeoutError:
            pass

    def latch(self, since_ms: int) -> None:
        self.latched_halt = True
        self.latched_since_ms = since_ms

    @property
    def halted(self) -> bool:
        return self.latched_halt or (self.state is not None and self.state.state == "HALTED")

    def refusal(self, reduce_only: bool, now_ms: int) -> str | None:
        """Why a new order may not go out now, or None when it may."""
        if self.latched_halt:
            return "risk state HALTED (latched)"
        if self.state is None:
            return "no risk state received"
        age = now_ms - self.received_ms
        if age > self.max_age_ms:
            return f"risk state stale ({age} ms > {self.max_age_ms} ms)"
        if self.state.state == "ACTIVE":
            return None
        if self.state.state == "REDUCING" and reduce_only:
            return None
        return f"risk state {self.state.state}"
