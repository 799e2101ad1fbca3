"""The kill-switch record in JetStream KV (bucket ``hean_risk``, key ``state``).

Both sides of the safety chain read it: the risk service restores its state and high-water
mark from it, the router refuses to trade while it says HALTED. ``hean risk status`` reads it
even when no service runs.
"""

from __future__ import annotations

import msgspec

from hean.bus.base import Bus
from hean.risk.engine import RiskRecord
from hean_proto.subjects import KV_RISK

KEY = "state"


class LatchError(RuntimeError):
    """The stored record cannot be read; callers must treat the state as HALTED."""


async def load_record(bus: Bus) -> RiskRecord | None:
    raw = await bus.kv_get(KV_RISK, KEY)
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=RiskRecord)
    except msgspec.DecodeError as exc:
        raise LatchError(f"risk record in KV {KV_RISK}/{KEY} unreadable: {exc}") from None


async def save_record(bus: Bus, record: RiskRecord) -> None:
    await bus.kv_put(KV_RISK, KEY, msgspec.json.encode(record))
