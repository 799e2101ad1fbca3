"""CPU per decision of the live risk service's logic, without any transport.

The pipeline bench's risk stage is a relay; this measures what the real ``RiskKillswitchLogic``
(over ``RiskEngine`` with the live default limits) spends deciding one signal, codec included:
decode the signal, decide it, encode every output (decision, intent). Each signal is a new
two-leg unit on fresh quotes, so every check runs and every one is approved; approvals and
pending exposure pile up the way they would under load.
"""

from __future__ import annotations

import time

from hean.risk.engine import RiskEngine
from hean.risk.limits import RiskLimits
from hean.runtime.logic import Publish
from hean_proto import codec
from hean_proto.events import BookLevel, BookTop, PriceTick, RiskDecision, Signal, SignalLeg


def _market(now: int) -> list:
    out = []
    for venue in ("binance", "bybit"):
        out.append(PriceTick(ts_ms=now, venue=venue, symbol="BTCUSDT", mark=65_000.0))
        out.append(
            BookTop(
                ts_ms=now,
                venue=venue,
                symbol="BTCUSDT",
                bids=[BookLevel(64_999.0, 1e6)],
                asks=[BookLevel(65_001.0, 1e6)],
            )
        )
    return out


def risk_decisions(signals: int = 5_000) -> dict[str, object]:
    from hean_services.risk_killswitch.logic import RiskKillswitchLogic

    limits = RiskLimits(capital_usd=1e12, max_gross_exposure_frac=1.0, max_symbol_exposure_frac=1.0)
    logic = RiskKillswitchLogic(RiskEngine(limits))
    logic.restored = True
    now = int(time.time() * 1000)
    for e in _market(now):
        logic.on_event(e, now)
    legs = [
        SignalLeg(venue="bybit", symbol="BTCUSDT", side="buy"),
        SignalLeg(venue="binance", symbol="BTCUSDT", side="sell"),
    ]
    payloads = [
        codec.encode(
            Signal(
                ts_ms=now,
                id=f"bench-{i}",
                strategy="cross_venue_arb",
                symbol="BTCUSDT",
                legs=legs,
                size_frac=1e-6,
                confidence=0.9,
                stop_loss_frac=0.02,
                reason="bench",
            )
        )
        for i in range(signals)
    ]
    approved = 0
    t0 = time.perf_counter()
    for data in payloads:
        for out in logic.on_event(codec.decode(data), now):
            event = out.event if isinstance(out, Publish) else out
            codec.encode(event)
            if isinstance(event, RiskDecision) and event.approved:
                approved += 1
    elapsed = time.perf_counter() - t0
    return {
        "signals": signals,
        "approved": approved,
        "us_per_signal": round(elapsed / signals * 1e6, 1),
        "signals_per_s": int(signals / elapsed),
    }


if __name__ == "__main__":
    print(risk_decisions())
