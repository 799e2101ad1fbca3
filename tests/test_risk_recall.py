"""Risk reads back at start which signals were decided, so a redelivery is not decided twice
(real nats-server, the real risk service in process)."""

from __future__ import annotations

import asyncio
import time

from hean.bus.nats import NatsBus
from hean.risk.recall import decided_since
from hean_proto import codec
from hean_proto.events import OrderIntent, RiskDecision
from hean_proto.subjects import msg_id_for, subject_for
from hean_services.risk_killswitch import main as risk_main
from tests.service_helpers import of, running
from tests.test_safety_chain import active, harness, one_leg_intent, risk_settings, signal


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _rejection(signal_id: str) -> RiskDecision:
    return RiskDecision(
        ts_ms=_now_ms(),
        signal_id=signal_id,
        strategy="arb",
        symbol="BTCUSDT",
        approved=False,
        reasons=["test"],
    )


def _approval(signal_id: str) -> tuple[RiskDecision, OrderIntent]:
    intent = one_leg_intent(signal_id)
    decision = RiskDecision(
        ts_ms=intent.ts_ms,
        signal_id=signal_id,
        strategy=intent.strategy,
        symbol="BTCUSDT",
        approved=True,
        intent_id=intent.id,
    )
    return decision, intent


async def _publish(bus: NatsBus, *events) -> None:
    for e in events:
        await bus.publish(subject_for(e), codec.encode(e), msg_id=msg_id_for(e))


async def test_decided_since_reads_rejections_and_approved_intents_in_the_window(
    nats_url: str,
) -> None:
    bus = await NatsBus.connect(nats_url, "test")
    await bus.ensure_streams()
    assert await decided_since(bus.js, 0) == set()  # empty streams
    await _publish(bus, _rejection("old-r"), *_approval("old-a"))
    await asyncio.sleep(1.2)
    since = _now_ms()
    _, exit_intent = _approval("new-a:exit")  # risk's own stop-loss exit: no signal behind it
    await _publish(bus, _rejection("new-r"), *_approval("new-a"), exit_intent)
    assert await decided_since(bus.js, since) == {"new-r", "new-a"}
    assert await decided_since(bus.js, 0) == {"old-r", "old-a", "new-r", "new-a"}
    assert await decided_since(bus.js, _now_ms() + 60_000) == set()
    await bus.close()


async def test_a_restarted_risk_service_does_not_decide_a_signal_again(
    nats_url: str, tmp_path
) -> None:
    """A signal decided by the previous process arrives again (stored a second time, as a
    redelivery would bring it): the new process knows it as decided and adds no decision."""
    async with harness(nats_url) as (feed, tap):
        rs = risk_settings(nats_url, tmp_path)
        sig = signal()
        async with running(risk_main.build(rs), rs):
            await active(tap, rs)
            await feed.publish(sig)
            first = (await tap.until(of(RiskDecision, signal_id=sig.id)))[0]
            assert first.approved, first.reasons

        rs = risk_settings(nats_url, tmp_path)
        app = risk_main.build(rs)
        async with running(app, rs):
            await active(tap, rs)
            assert sig.id in app.logic.engine.decided
            await feed.bus.publish(
                subject_for(sig), codec.encode(sig), msg_id=f"again-{sig.id}"
            )  # a new message id: the store keeps it, as it does a redelivery
            fresh = signal()
            await feed.publish(fresh)
            await tap.until(of(RiskDecision, signal_id=fresh.id))
            await asyncio.sleep(0.3)
            assert len(of(RiskDecision, signal_id=sig.id)(tap.events)) == 1
            assert app.logic.engine.counts.get("duplicate") == 1
