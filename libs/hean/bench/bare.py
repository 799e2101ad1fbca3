"""The floor under the pipeline: the same topology with bare nats-py relays and no HEAN code.

Each stage is its own process holding one nats-py connection, relaying the same msgspec
events on the same subjects into the same streams (so nats-server stores and fsyncs exactly
what it does for HEAN). What is left out is everything HEAN adds per event: validation and
dead letters, metrics, the early/stored handshake that acknowledges a signal only once its
intent is stored, in-progress notices and confirmation retries. Risk relays each signal from its
live copy and acknowledges the stored copy at once; the router takes intents from a push
consumer. That is less than the safety chain may do, so the floor shows roughly the least any
nats-py service could reach on the machine at that rate: where it misses a goal by a wide
margin, no change inside the services can meet it. The interpreter's garbage collector is set
as in every stage process (``hean.runtime.heap``): process tuning, not work per event.
"""

from __future__ import annotations

import asyncio
import time

import nats
from nats.aio.msg import Msg

from hean.bench.pipeline import _decide, _forecast, _key, _signal
from hean.bus.nats import NatsBus
from hean.runtime import eventloop, heap
from hean_proto import codec, subjects
from hean_proto import events as ev


async def _relay(nc, js, pending: set, outputs: list[ev.Event]) -> None:
    for out in outputs:
        subject = subjects.subject_for(out)
        data = codec.encode(out)
        if subjects.stream_for(subject) is None:
            await nc.publish(subject, data)
            continue
        msg_id = subjects.msg_id_for(out)
        future = await js.publish_async(
            subject, data, headers={"Nats-Msg-Id": msg_id} if msg_id else None
        )
        pending.add(future)
        future.add_done_callback(pending.discard)


async def _serve(name: str, url: str, run_id: str, conn) -> None:
    setup = await NatsBus.connect(url, f"bench-bare-{name}-setup")
    await setup.ensure_streams()  # the same streams and persist modes as the services'
    await setup.close()
    stamps: dict[int, int] = {}
    nc = await nats.connect(url, name=f"bench-bare-{name}")
    js = nc.jetstream(publish_async_max_pending=100_000)
    pending: set[asyncio.Future] = set()
    convert = {"predictor": _forecast, "strategy": _signal, "risk": _decide}.get(name)

    async def relay(msg: Msg) -> None:
        event = codec.decode(msg.data)
        stamps[_key(event)] = time.monotonic_ns()
        if convert is not None:
            out = convert(event, int(time.time() * 1000))
            await _relay(nc, js, pending, out if isinstance(out, list) else [out])

    async def receive_and_ack(msg: Msg) -> None:  # the router: the last stamp, nothing relayed
        await relay(msg)
        await msg.ack()

    async def ack(msg: Msg) -> None:
        await msg.ack()

    if name == "predictor":
        await nc.subscribe(subjects.FUNDING.pattern(), cb=relay)
    elif name == "strategy":
        await nc.subscribe(subjects.PRED_FUNDING.pattern(), cb=relay)
    elif name == "risk":
        await nc.subscribe(subjects.SIGNAL.pattern("bench"), cb=relay)
        await js.subscribe(
            subjects.SIGNAL.pattern("bench"),
            durable=f"bare_risk_{run_id}",
            cb=ack,
            manual_ack=True,
        )
    else:
        await js.subscribe(
            subjects.ORDER_APPROVED.pattern("bench"),
            durable=f"bare_router_{run_id}",
            cb=receive_and_ack,
            manual_ack=True,
        )
    await nc.flush()
    heap.settle_after_startup()  # the interpreter's GC set as in every stage process
    conn.send("ready")
    cpu = time.process_time()
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
    cpu = time.process_time() - cpu
    if pending:
        await asyncio.wait(list(pending), timeout=5.0)
    await nc.close()
    conn.send((stamps, cpu))


def stage_process(name: str, url: str, run_id: str, early: bool, conn) -> None:
    """One bare stage (the target ``hean.bench.pipeline.run_rate_processes`` spawns)."""
    eventloop.run(_serve(name, url, run_id, conn))
