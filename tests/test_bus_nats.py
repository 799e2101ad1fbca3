"""The NATS bus against a real nats-server: every event, dedupe, durability, reconnects."""

from __future__ import annotations

import asyncio

import pytest

from hean.bus.base import Message
from hean.bus.nats import NatsBus
from hean.natsserver import NatsServer
from hean_proto import codec, subjects
from tests.samples import SAMPLES


async def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.HEAN_SIGNALS.risk.3.120.45.1764150000000000000.7",
        "$JS.ACK._.ACCOUNTHASH.HEAN_SIGNALS.risk.1.120.45.1764150000000000000.0.tok",
        "$JS.ACK.hub.ACCOUNTHASH.HEAN_TRADING.router.12.9.9.1764150000000000000.31",
    ],
)
def test_delivery_counts_from_the_ack_subject_agree_with_nats_py(reply: str) -> None:
    from nats.aio.msg import Msg

    from hean.bus.nats import _delivery_counts

    m = Msg(_client=None, reply=reply)  # type: ignore[arg-type]
    assert _delivery_counts(m) == (m.metadata.num_delivered, m.metadata.num_pending)


def test_delivery_counts_of_a_message_from_no_consumer_is_nats_pys_error() -> None:
    from nats.aio.msg import Msg
    from nats.errors import NotJSMessageError

    from hean.bus.nats import _delivery_counts

    with pytest.raises(NotJSMessageError):
        _delivery_counts(Msg(_client=None, reply="_INBOX.abc"))  # type: ignore[arg-type]


async def test_publish_and_consume_every_event_type(nats_url: str) -> None:
    bus = await NatsBus.connect(nats_url, "test")
    await bus.ensure_streams()
    got: list[Message] = []

    async def h(m: Message) -> None:
        got.append(m)

    await bus.subscribe("hean.>", h)
    for event in SAMPLES:
        await bus.publish(subjects.subject_for(event), codec.encode(event))
    await wait_for(lambda: len(got) == len(SAMPLES))
    decoded = {m.subject: codec.decode(m.data) for m in got}
    for event in SAMPLES:
        assert decoded[subjects.subject_for(event)] == event
    await bus.close()


async def test_jetstream_dedupe_by_msg_id(nats_url: str) -> None:
    bus = await NatsBus.connect(nats_url, "test")
    await bus.ensure_streams()
    got: list[bytes] = []

    async def h(m: Message) -> None:
        got.append(m.data)

    await bus.subscribe("hean.order.approved.>", h, durable="dedupe_test")
    for _ in range(3):
        await bus.publish("hean.order.approved.arb", b'{"n":1}', msg_id="intent-1")
    await bus.publish("hean.order.approved.arb", b'{"n":2}', msg_id="intent-2")
    await wait_for(lambda: len(got) >= 2)
    await asyncio.sleep(0.5)
    assert got == [b'{"n":1}', b'{"n":2}']
    info = await bus.js.stream_info("HEAN_TRADING")
    assert info.state.messages == 2
    await bus.close()


async def test_durable_consumer_resumes_after_downtime(nats_url: str) -> None:
    bus = await NatsBus.connect(nats_url, "test")
    await bus.ensure_streams()
    got: list[bytes] = []

    async def h(m: Message) -> None:
        got.append(m.data)

    sub = await bus.subscribe("hean.signal.>", h, durable="resume_test")
    await bus.publish("hean.signal.s.BTC", b"1", msg_id="1")
    await wait_for(lambda: got == [b"1"])
    await sub.stop()
    await bus.publish("hean.signal.s.BTC", b"2", msg_id="2")
    await bus.publish("hean.signal.s.BTC", b"3", msg_id="3")
    await bus.subscribe("hean.signal.>", h, durable="resume_test")
    await wait_for(lambda: len(got) == 3)
    assert got == [b"1", b"2", b"3"]
    await bus.close()


async def test_failed_handler_gets_redelivery(nats_url: str) -> None:
    bus = await NatsBus.connect(nats_url, "test")
    await bus.ensure_streams()
    attempts: list[bool] = []

    async def flaky(m: Message) -> None:
        attempts.append(m.redelivered)
        if len(attempts) == 1:
            raise RuntimeError("transient")

    await bus.subscribe("hean.fill.>", flaky, durable="redeliver_test")
    await bus.publish("hean.fill.bybit.BTC", b"x", msg_id="f1")
    await wait_for(lambda: len(attempts) == 2)
    assert attempts == [False, True]
    await bus.close()


async def test_a_message_held_by_an_instance_that_died_comes_back_after_the_ack_wait(
    nats_url: str,
) -> None:
    """An instance that received a message and died (no ack, no nak) holds it until the ack
    wait ends; a short ack wait brings it back to the restart in about that time. The consumer
    was created with the default wait and is updated in place."""
    import nats
    import nats.js.errors

    bus = await NatsBus.connect(nats_url, "test")
    await bus.ensure_streams()
    got: list[Message] = []

    async def h(m: Message) -> None:
        got.append(m)

    async def ack_wait_once_bound(sub) -> float:
        for _ in range(250):
            try:
                info = await bus.js.consumer_info("HEAN_TRADING", "held_test")
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None and info.num_waiting:  # bound: a pull request is waiting
                await sub.stop()
                return info.config.ack_wait
            await asyncio.sleep(0.02)
        raise AssertionError("the consumer never bound")

    first = await bus.subscribe("hean.fill.>", h, durable="held_test")
    assert await ack_wait_once_bound(first) == 30
    shorter = await bus.subscribe("hean.fill.>", h, durable="held_test", ack_wait_s=1.0, batch=1)
    assert await ack_wait_once_bound(shorter) == 1

    await bus.publish("hean.fill.bybit.BTC", b"held", msg_id="held-1")
    dying = await nats.connect(nats_url)
    psub = await dying.jetstream().pull_subscribe_bind(durable="held_test", stream="HEAN_TRADING")
    assert [m.data for m in await psub.fetch(1, timeout=5)] == [b"held"]
    await dying.close()  # gone without an answer, as a SIGKILLed process is

    await bus.subscribe("hean.fill.>", h, durable="held_test", ack_wait_s=1.0, batch=1)
    await wait_for(lambda: len(got) == 1, timeout=10.0)  # the 30 s default would not be met
    assert got[0].data == b"held" and got[0].redelivered
    await bus.close()


async def test_a_slow_handler_keeps_its_message_from_other_instances(nats_url: str) -> None:
    """A handler that works past the ack wait reports progress, so a second instance on the
    same consumer is not handed the message meanwhile."""
    a = await NatsBus.connect(nats_url, "a")
    b = await NatsBus.connect(nats_url, "b")
    await a.ensure_streams()
    handled: list[str] = []
    done = asyncio.Event()

    async def slow(m: Message) -> None:
        handled.append("a")
        await asyncio.sleep(3.5)  # three and a half ack waits
        done.set()

    async def other(m: Message) -> None:
        handled.append("b")

    await a.subscribe("hean.fill.>", slow, durable="progress_test", ack_wait_s=1.0, batch=1)
    await a.publish("hean.fill.bybit.BTC", b"slow", msg_id="slow-1")
    await wait_for(lambda: handled == ["a"])
    await b.subscribe("hean.fill.>", other, durable="progress_test", ack_wait_s=1.0, batch=1)
    await asyncio.wait_for(done.wait(), 10)
    await asyncio.sleep(1.5)  # a redelivery would have reached b by now
    assert handled == ["a"]
    info = await a.js.consumer_info("HEAN_TRADING", "progress_test")
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
    await a.close()
    await b.close()


async def test_pipelined_output_is_stored_before_its_input_is_acknowledged(nats_url: str) -> None:
    """A durable input whose output cannot be stored yet stays unacknowledged; once the
    output's retry stores it, the input is acknowledged (and not redelivered)."""
    bus = await NatsBus.connect(nats_url, "test")
    await bus.ensure_streams()
    await bus.js.delete_stream("HEAN_ALERTS")  # the output's stream is gone for now
    handled: list[bytes] = []

    async def relay(m: Message) -> None:
        handled.append(m.data)
        await bus.publish("hean.alert.test", m.data, msg_id="alert-1", wait=False)

    await bus.subscribe("hean.signal.>", relay, durable="ack_after_store")
    await bus.publish("hean.signal.s.BTC", b"in", msg_id="in-1")
    await wait_for(lambda: handled == [b"in"])
    consumer = await bus.js.consumer_info("HEAN_SIGNALS", "ack_after_store")
    assert consumer.num_ack_pending == 1  # output not stored: input not acknowledged
    assert bus._confirming  # its store is being retried

    await bus.ensure_streams()  # the stream is back: the retry stores the output
    await bus.flush(timeout_s=30)
    alerts = await bus.js.stream_info("HEAN_ALERTS")
    assert alerts.state.messages == 1
    consumer = await bus.js.consumer_info("HEAN_SIGNALS", "ack_after_store")
    assert (consumer.num_ack_pending, consumer.num_redelivered) == (0, 0)
    assert consumer.ack_floor.stream_seq == consumer.delivered.stream_seq
    assert handled == [b"in"]
    await bus.close()


async def test_reconnects_after_server_kill_and_keeps_stream(nats_server: NatsServer) -> None:
    bus = await NatsBus.connect(nats_server.url, "test")
    await bus.ensure_streams()
    states: list[bool] = []
    bus.on_state_change = states.append
    got: list[bytes] = []

    async def h(m: Message) -> None:
        got.append(m.data)

    await bus.subscribe("hean.order.approved.>", h, durable="restart_test")
    await bus.publish("hean.order.approved.a", b"before", msg_id="b1")
    await wait_for(lambda: got == [b"before"])
    nats_server.kill()
    await wait_for(lambda: not bus.connected)
    nats_server.start()
    await wait_for(lambda: bus.connected, timeout=30)
    await bus.publish("hean.order.approved.a", b"after", msg_id="a1")
    await bus.publish("hean.order.approved.a", b"before", msg_id="b1")  # duplicate, inside window
    await wait_for(lambda: len(got) >= 2, timeout=30)
    await asyncio.sleep(0.5)
    assert got == [b"before", b"after"]
    assert states[:2] == [False, True]
    await bus.kv_put(subjects.KV_RISK, "state", b"HALTED")
    nats_server.kill()
    nats_server.start()
    await wait_for(lambda: bus.connected, timeout=30)
    assert await bus.kv_get(subjects.KV_RISK, "state") == b"HALTED"
    await bus.close()


async def test_connect_failure_names_the_setting() -> None:
    from hean.bus.nats import NatsConnectError
    from hean.config import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    try:
        await NatsBus.connect(url, "test", connect_timeout_s=1.0)
    except NatsConnectError as exc:
        assert f"HEAN_NATS_URL={url}" in str(exc)
    else:
        raise AssertionError("connect to a closed port succeeded")


async def test_slow_consumer_is_reported_and_memory_stays_bounded(nats_url: str) -> None:
    bus = await NatsBus.connect(nats_url, "slow")
    bus.PENDING_MSGS_LIMIT = 100
    seen: list[str] = []
    bus.on_slow_consumer = seen.append
    release = asyncio.Event()

    async def stuck(m: Message) -> None:
        await release.wait()

    await bus.subscribe("hean.md.price.>", stuck)
    assert bus.keeping_up()
    pub = await NatsBus.connect(nats_url, "fast")
    for _ in range(1000):
        await pub.publish("hean.md.price.bybit.BTC", b"x" * 100)
    await pub.nc.flush()
    await wait_for(lambda: bus.slow_consumer_drops > 0)
    assert not bus.keeping_up()
    assert seen and seen[0] == "hean.md.price.bybit.BTC"
    assert bus.pending_messages() <= 100  # bounded: the excess was dropped, not buffered
    release.set()
    await pub.close()
    await bus.close()


async def test_streams_from_before_signals_had_their_own_stream_are_migrated(nats_url: str):
    """A store created when signals lived in HEAN_TRADING: the ledger stream gives the signal
    subjects up and HEAN_SIGNALS takes them, without touching what the ledger holds."""
    from hean_proto.subjects import SIGNAL, STREAMS

    bus = await NatsBus.connect(nats_url, "test")
    trading = next(s for s in STREAMS if s.name == "HEAN_TRADING")
    await bus.js.add_stream(name="HEAN_TRADING", subjects=[SIGNAL.pattern(), *trading.subjects])
    await bus.publish("hean.order.approved.arb", b"kept", msg_id="kept-1")
    await bus.ensure_streams()
    info = await bus.js.stream_info("HEAN_TRADING")
    assert SIGNAL.pattern() not in info.config.subjects and info.state.messages == 1
    signals = await bus.js.stream_info("HEAN_SIGNALS")
    assert signals.config.subjects == [SIGNAL.pattern()]
    await bus.publish(SIGNAL.subject("arb", "BTCUSDT"), b"s", msg_id="s-1")
    assert (await bus.js.stream_info("HEAN_SIGNALS")).state.messages == 1
    await bus.close()


async def test_streams_from_before_decisions_had_their_own_stream_are_migrated(nats_url: str):
    """A store created when risk decisions lived in HEAN_TRADING: they move to HEAN_DECISIONS,
    the intents stay; a rejection is stored there, an approval only by its intent."""
    from hean_proto.subjects import ORDER_APPROVED, RISK_DECISION, STREAMS

    bus = await NatsBus.connect(nats_url, "test")
    trading = next(s for s in STREAMS if s.name == "HEAN_TRADING")
    old = [RISK_DECISION.pattern(), *trading.subjects]
    await bus.js.add_stream(name="HEAN_TRADING", subjects=old)
    await bus.publish("hean.risk.decision.arb", b"old decision", msg_id="d-0")
    await bus.ensure_streams()
    info = await bus.js.stream_info("HEAN_TRADING")
    assert RISK_DECISION.pattern() not in info.config.subjects and info.state.messages == 1
    await bus.publish(RISK_DECISION.subject("arb", "rejected"), b"no", msg_id="d-1")
    await bus.publish(RISK_DECISION.subject("arb", "approved"), b"yes", msg_id="d-2")
    await bus.publish(ORDER_APPROVED.subject("arb"), b"intent", msg_id="i-2")
    assert (await bus.js.stream_info("HEAN_DECISIONS")).state.messages == 1
    assert (await bus.js.stream_info("HEAN_TRADING")).state.messages == 2
    await bus.close()


async def test_a_decision_stream_that_stored_approvals_keeps_them_and_stores_rejections(
    nats_url: str,
):
    """HEAN_DECISIONS from when it captured every decision: narrowed to rejections, with the
    decisions it holds kept."""
    from hean_proto.subjects import RISK_DECISION

    bus = await NatsBus.connect(nats_url, "test")
    await bus.js.add_stream(name="HEAN_DECISIONS", subjects=[RISK_DECISION.pattern()])
    await bus.publish("hean.risk.decision.arb", b"old approval", msg_id="d-0")
    await bus.ensure_streams()
    info = await bus.js.stream_info("HEAN_DECISIONS")
    assert info.config.subjects == ["hean.risk.decision.*.rejected"]
    assert info.state.messages == 1
    await bus.publish(RISK_DECISION.subject("arb", "approved"), b"yes", msg_id="d-1")
    await bus.publish(RISK_DECISION.subject("arb", "rejected"), b"no", msg_id="d-2")
    assert (await bus.js.stream_info("HEAN_DECISIONS")).state.messages == 2
    await bus.close()


async def test_market_history_is_written_in_the_background_and_the_ledger_on_disk(
    nats_server: NatsServer,
) -> None:
    """HEAN_HISTORY (re-fetchable market data) does not wait for the disk on a single node;
    every other stream does, and a ledger write acknowledged before a SIGKILL is still there."""
    from nats.js.api import PersistMode

    from hean.bus.nats import stream_config
    from hean_proto.subjects import STREAMS

    bus = await NatsBus.connect(nats_server.url, "test")
    await bus.ensure_streams()
    modes = {s.name: (await bus.js.stream_info(s.name)).config.persist_mode for s in STREAMS}
    assert modes.pop("HEAN_HISTORY") == PersistMode.ASYNC
    assert modes and all(m in (None, PersistMode.DEFAULT) for m in modes.values()), modes
    # replicated streams are durable through their replicas; async is for one replica only
    assert all(stream_config(s, replicas=3).persist_mode is None for s in STREAMS)
    await bus.ensure_streams()  # a second service starting: updates keep each stream's mode
    info = await bus.js.stream_info("HEAN_HISTORY")
    assert info.config.persist_mode == PersistMode.ASYNC

    await bus.publish("hean.fill.bybit.BTCUSDT", b"fill", msg_id="f-1")
    nats_server.kill()
    await wait_for(lambda: not bus.connected)
    nats_server.start()
    await wait_for(lambda: bus.connected, timeout=30)
    trading = await bus.js.stream_info("HEAN_TRADING")
    assert trading.state.messages == 1
    await bus.close()


async def test_a_stream_that_cannot_be_created_stops_the_start_with_the_reason(nats_url: str):
    """Another stream already captures the risk decisions: HEAN_DECISIONS cannot exist, and
    ensure_streams says so instead of leaving the service to publish into nothing."""
    from hean.bus.nats import NatsSetupError
    from hean_proto.subjects import RISK_DECISION

    bus = await NatsBus.connect(nats_url, "test")
    await bus.js.add_stream(name="SOMEONE_ELSES", subjects=[RISK_DECISION.pattern()])
    with pytest.raises(NatsSetupError, match=r"HEAN_DECISIONS.*overlap"):
        await bus.ensure_streams()
    await bus.close()
