"""The NATS bus: core subjects for market data, JetStream for what must not be lost.

Reconnects forever with backoff (nats.py gives up after about two minutes by default).
Subjects captured by a stream of ``hean_proto.subjects.STREAMS`` are published through
JetStream with ``Nats-Msg-Id`` so that a retried publish is stored once. Durable consumers are
pull consumers with explicit ack: a message is acknowledged only after its handler returns
and everything the handler published is stored.
A pull loop that keeps failing (as pull consumers can after a server restart) rebinds its
subscription and is reported through ``stale_consumers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PersistMode,
    StorageType,
    StreamConfig,
)

from hean.bus.base import ACK_WAIT_S, PULL_BATCH, Bus, Handler, Message, Subscription
from hean.bus.early import EarlyCopies
from hean_proto.subjects import STREAMS, StreamSpec, stream_for

log = logging.getLogger("hean.bus")


class NatsConnectError(RuntimeError):
    """NATS could not be reached at start."""


class NatsSetupError(RuntimeError):
    """A stream HEAN needs could not be created (the server's reason is in the message): the
    service stops at start rather than publish into a stream that is not there."""


def _read_secret(path: str | None, setting: str) -> str:
    """A password from a mounted secret file; its value never reaches a message or log."""
    if not path:
        raise NatsConnectError(f"{setting}: required when HEAN_NATS_USER is set")
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise NatsConnectError(f"{setting}={path}: {exc.strerror}") from None
    if not value:
        raise NatsConnectError(f"{setting}={path}: file is empty")
    return value


_PRODUCED: contextvars.ContextVar[list[asyncio.Future[bool]] | None] = contextvars.ContextVar(
    "hean_produced", default=None
)
"""Stored-confirmations of the publishes made while handling one durable message."""

CONFIRM_TIMEOUT_S = 5.0
"""A pipelined publish not confirmed by then is published again (same Nats-Msg-Id)."""

_JS_TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.NoStreamResponseError,  # a stream still recovering after a restart
    nats.js.errors.ServiceUnavailableError,
)


async def _js_retry(call, *, attempts: int = 8, first_delay_s: float = 0.1):
    """Retry a JetStream API call while the server recovers its store after a restart.

    Safe for publishes because they carry a Nats-Msg-Id and the stream drops duplicates.
    """
    delay = first_delay_s
    for attempt in range(attempts):
        try:
            return await call()
        except _JS_TRANSIENT:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


@dataclass
class _CoreSub(Subscription):
    sub: object

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.sub.unsubscribe()  # type: ignore[attr-defined]


@dataclass
class _PullSub(Subscription):
    bus: NatsBus
    pattern: str
    durable: str
    stream: StreamSpec
    handler: Handler
    batch: int = PULL_BATCH
    ack_wait_s: float = ACK_WAIT_S
    task: asyncio.Task | None = None
    last_ok: float = field(default_factory=time.monotonic)
    failures: int = 0
    stopping: bool = False
    early: EarlyCopies | None = None
    live: object | None = None  # the plain subscription that brings the live copies

    async def stop(self) -> None:
        """Finish the outstanding fetch and its batch, then leave.

        Cancelling a pending fetch would strand the messages the server is already sending
        to it until their ack wait expires; waiting at most one fetch timeout avoids that.
        """
        self.stopping = True
        if self.live is not None:
            with contextlib.suppress(Exception):
                await self.live.unsubscribe()  # type: ignore[attr-defined]
        if self.task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 5.0)
            except (TimeoutError, asyncio.CancelledError):
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self.task

    async def _bind(self):
        js = self.bus.js
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=self.pattern,
            ack_wait=self.ack_wait_s,
            max_deliver=10,
        )
        # created, or updated in place (its position kept), so that a changed ack wait
        # reaches a consumer an earlier release created
        await js.add_consumer(self.stream.name, config=config)
        return await js.pull_subscribe_bind(durable=self.durable, stream=self.stream.name)

    async def _process(self, m: Msg) -> None:
        delivered, pending = _delivery_counts(m)
        if self.early is not None:
            outcome = self.early.take((m.headers or {}).get("Nats-Msg-Id"))
            produced = await outcome if outcome is not None else None
            if produced is not None:
                await self._settle_when_stored(m, produced)  # handled from its live copy
            else:
                await self._handle(m, delivered > 1)
            if pending == 0:
                self.early.caught_up = True
            return
        await self._handle(m, delivered > 1)

    async def _handle(self, m: Msg, redelivered: bool) -> None:
        produced: list[asyncio.Future[bool]] = []
        token = _PRODUCED.set(produced)
        try:
            await self.handler(
                Message(
                    m.subject,
                    m.data,
                    dict(m.headers) if m.headers else {},
                    redelivered=redelivered,
                )
            )
        except Exception:
            log.exception("handler failed; message will be redelivered")
            with contextlib.suppress(Exception):
                await m.nak(delay=1.0)
            return
        finally:
            _PRODUCED.reset(token)
        await self._settle_when_stored(m, produced)

    async def _settle_when_stored(self, m: Msg, produced: list[asyncio.Future[bool]]) -> None:
        # acknowledge once everything this message produced is stored, without holding up
        # the next message; a callback per confirmation, a task only for the ack itself
        if produced:
            self.bus._ack_when_stored(m, produced)
        else:
            with contextlib.suppress(Exception):
                await m.ack()

    async def on_live(self, msg: Msg) -> None:
        """Handle a message from its live copy when the consumer is caught up (see
        ``hean.bus.early``); the stored copy then only confirms it."""
        assert self.early is not None
        key = (msg.headers or {}).get("Nats-Msg-Id")
        outcome = None if self.stopping else self.early.claim(key)
        if outcome is None:
            return  # handled from the store
        produced: list[asyncio.Future[bool]] = []
        token = _PRODUCED.set(produced)
        try:
            await self.handler(Message(msg.subject, msg.data, dict(msg.headers or {})))
        except BaseException as exc:  # failed or cancelled (stopping): the store takes over
            self.early.release(key)  # type: ignore[arg-type]
            outcome.set_result(None)
            if not isinstance(exc, Exception):
                raise
            log.exception("early handling failed; the stored copy will be handled")
            return
        finally:
            _PRODUCED.reset(token)
        outcome.set_result(produced)

    async def run(self) -> None:
        """Keep one pull request outstanding and hand on each message the moment it arrives.

        nats-py's ``fetch`` holds the messages of a batch until the batch fills or the request
        expires, which is latency; the server itself sends each message as soon as it is
        stored, so this loop asks for a batch and reads the messages one by one as they come.
        """
        psub = None
        try:
            while not self.stopping:
                try:
                    if psub is None:
                        if self.early is not None:
                            self.early.caught_up = False
                        psub = await self._bind()
                        if self.early is not None:
                            info = await psub.consumer_info()
                            self.early.caught_up = info.num_pending == 0
                    await self._stream(psub)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.failures += 1
                    log.warning(
                        "pull consumer %s failing (%s: %s); rebinding",
                        self.durable,
                        type(exc).__name__,
                        exc,
                    )
                    # the broken subscription goes first: a forgotten one keeps the
                    # connection's drain waiting for it at close
                    await _unsubscribe(psub)
                    psub = None
                    await asyncio.sleep(min(0.2 * 2**self.failures, 5.0))
        finally:
            if psub is not None:
                await self._hand_back(psub)
            await _unsubscribe(psub)

    async def _stream(self, psub) -> None:
        nc = self.bus.nc
        sub = psub._sub
        watch = _Watch(sub._pending_queue, self.ack_wait_s)
        left = 0
        try:
            while not self.stopping:
                if left <= 0:
                    request = {"batch": self.batch, "expires": int(PULL_EXPIRES_S * 1e9)}
                    await nc.publish(psub._nms, json.dumps(request).encode(), reply=psub._deliver)
                    left = self.batch
                msg = await _next_msg(sub, watch)
                if msg is None:
                    left = 0  # the request went unanswered (a reconnect): ask again
                    continue
                status = nats.js.JetStreamContext.is_status_msg(msg)
                if status == "100":  # idle heartbeat
                    continue
                if status in ("404", "408"):  # nothing waiting / the request expired
                    left = 0
                    if self.early is not None:
                        self.early.caught_up = True
                    continue
                if status:
                    description = (msg.headers or {}).get("Description", "")
                    raise RuntimeError(f"pull request refused: {status} {description}")
                left -= 1
                self.last_ok = time.monotonic()
                self.failures = 0
                watch.start(msg)
                try:
                    await self._process(msg)
                finally:
                    watch.handling = None
        finally:
            watch.cancel()

    async def _hand_back(self, psub) -> None:
        """Messages the server already sent but this instance will not handle go back at once
        (instead of after the ack wait), so another instance or the restart takes them."""
        queue: asyncio.Queue = psub._sub._pending_queue
        while True:
            try:
                msg = await asyncio.wait_for(queue.get(), 0.05)
            except Exception:
                return
            queue.task_done()  # a connection's drain waits for every queued item to be done
            if msg is _WAKE or nats.js.JetStreamContext.is_status_msg(msg):
                continue
            with contextlib.suppress(Exception):
                await msg.nak()


_WAKE = object()
"""Put in a pull subscription's queue to wake its loop when its request went unanswered."""


class _Watch:
    """One timer per pull subscription for what would otherwise cost a timer per message.

    In progress: a handler may take longer than the ack wait (an order at a venue); without a
    notice the server would deliver the message again meanwhile. A message still being handled
    about a third of the ack wait after it started is reported in progress (+WPI), and again
    every third, so the ack wait can stay short and a message held by an instance that died
    is delivered again within seconds.

    Unanswered requests: the loop waits for the server's answer to its pull request, which
    after a reconnect may never come; a wait longer than the request's lifetime plus a second
    wakes the loop (``_WAKE``) to ask again.

    Per message this leaves two attribute writes and a clock read; the timer ticks at most
    twice a second whatever the rate.
    """

    __slots__ = (
        "_handle",
        "_loop",
        "_progress_s",
        "_queue",
        "_tick_s",
        "handling",
        "since",
        "waiting_since",
    )

    def __init__(self, queue: asyncio.Queue, ack_wait_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue = queue
        self._tick_s = min(ack_wait_s / 6, 0.5)
        # a notice goes out at most one tick after this: within a third of the ack wait
        self._progress_s = ack_wait_s / 3 - self._tick_s
        self.handling: Msg | None = None
        self.since = 0.0
        self.waiting_since: float | None = None
        self._handle = self._loop.call_later(self._tick_s, self._tick)

    def now(self) -> float:
        return self._loop.time()

    def start(self, msg: Msg) -> None:
        self.handling = msg
        self.since = self._loop.time()

    def _tick(self) -> None:
        now = self._loop.time()
        msg = self.handling
        if msg is not None and now - self.since >= self._progress_s:
            self.since = now
            task = self._loop.create_task(_quietly(msg.in_progress()))
            _BACKGROUND.add(task)
            task.add_done_callback(_BACKGROUND.discard)
        waiting = self.waiting_since
        if waiting is not None and now - waiting >= PULL_EXPIRES_S + 1.0:
            self.waiting_since = None
            self._queue.put_nowait(_WAKE)
        self._handle = self._loop.call_later(self._tick_s, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()


_BACKGROUND: set[asyncio.Task] = set()


async def _quietly(aw) -> None:
    with contextlib.suppress(Exception):
        await aw


PULL_EXPIRES_S = 1.0
"""Lifetime of one outstanding pull request; also bounds how long stopping waits."""


async def _next_msg(sub, watch: _Watch) -> Msg | None:
    """The subscription's next message, or None when ``watch`` found the wait too long; what
    is already queued is taken without waiting.

    nats-py's ``next_msg`` spends a task, a ``wait_for`` and a uuid4 on every call and always
    yields to the loop; taking queued messages at once lets a backlog go through in one pass,
    its publishes and acks leaving in one socket write. Keeps nats-py's pending-bytes count,
    which its slow-consumer limit reads.
    """
    queue: asyncio.Queue = sub._pending_queue
    if queue.empty():
        watch.waiting_since = watch.now()
        try:
            msg = await queue.get()
        finally:
            watch.waiting_since = None
    else:
        msg = queue.get_nowait()
    queue.task_done()
    if msg is _WAKE:
        return None
    sub._pending_size -= len(msg.data)
    return msg


def _delivery_counts(m: Msg) -> tuple[int, int]:
    """How many times ``m`` was delivered and how many stored messages the consumer still
    has to deliver, read from its ack subject.

    nats-py's ``metadata`` builds a datetime and three objects per message to answer the same;
    a durable stage reads these two numbers for every message it takes.
    """
    tokens = (m.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
            return int(tokens[4]), int(tokens[8])
        if len(tokens) >= 11:  # with domain and account hash, at nats-py's positions
            return int(tokens[Msg.Ack.NumDelivered]), int(tokens[Msg.Ack.NumPending])
    metadata = m.metadata  # anything else: nats-py's own answer or error
    return metadata.num_delivered, metadata.num_pending


async def _settle(m: Msg, *, stored: bool) -> None:
    """Ack a durable message whose outputs are stored; otherwise have it redelivered."""
    with contextlib.suppress(Exception):
        await (m.ack() if stored else m.nak(delay=1.0))


async def _unsubscribe(psub: object) -> None:
    if psub is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(psub.unsubscribe(), 2.0)  # type: ignore[attr-defined]


def stream_config(spec: StreamSpec, replicas: int = 1) -> StreamConfig:
    """The JetStream configuration of one of HEAN's streams.

    Streams whose every write must survive a crash are left in the default persist mode (the
    server's ``sync_interval`` applies: an fsync per write as HEAN deploys a single node). A
    single-replica stream of re-fetchable market data is written in the background instead,
    so that it does not spend the disk's fsyncs that signals, intents and fills wait on."""
    background = not spec.durable_each_write and replicas == 1
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        max_age=spec.max_age_s,
        duplicate_window=spec.duplicate_window_s,
        storage=StorageType.FILE,
        description=spec.description,
        num_replicas=replicas,
        persist_mode=PersistMode.ASYNC if background else None,
    )


class NatsBus(Bus):
    """Bus over a real nats-server."""

    def __init__(self, nc: Client, name: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.name = name
        self._subs: list[Subscription] = []
        self._kv: dict[str, object] = {}
        self.on_state_change: Callable[[bool], None] | None = None
        self.closing = False
        self._confirming: set[asyncio.Future] = set()
        self.lost_publishes = 0
        self.slow_consumer_drops = 0
        self.last_slow_consumer: float | None = None
        self.on_slow_consumer: Callable[[str], None] | None = None
        self.replicas = 1
        """Replicas of the streams and KV buckets this bus creates (``ensure_streams``)."""

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        connect_timeout_s: float = 10.0,
        user_credentials: str | None = None,
        user: str | None = None,
        password_file: str | None = None,
        tls_ca_file: str | None = None,
    ) -> NatsBus:
        """Connect, retrying forever after the first success; fail fast if never reachable."""
        holder: dict[str, NatsBus] = {}

        async def disconnected() -> None:
            if "bus" in holder and holder["bus"].closing:
                return
            log.warning("nats disconnected")
            if "bus" in holder:
                holder["bus"].pause_early_handling()
            if "bus" in holder and holder["bus"].on_state_change:
                holder["bus"].on_state_change(False)

        async def reconnected() -> None:
            log.info("nats reconnected")
            if "bus" in holder and holder["bus"].on_state_change:
                holder["bus"].on_state_change(True)

        async def error_cb(exc: Exception) -> None:
            if isinstance(exc, nats.errors.SlowConsumerError) and "bus" in holder:
                holder["bus"].note_slow_consumer(exc.subject)
                return
            log.debug("nats error: %s", exc)

        kwargs: dict[str, object] = {}
        if user_credentials:
            kwargs["user_credentials"] = user_credentials
        if user is None and password_file is None:
            # the command-line tools connect without settings: same variables as the services
            user = os.environ.get("HEAN_NATS_USER") or None
            password_file = os.environ.get("HEAN_NATS_PASSWORD_FILE") or None
        if user:
            kwargs["user"] = user
            kwargs["password"] = _read_secret(password_file, "HEAN_NATS_PASSWORD_FILE")
        if tls_ca_file:
            kwargs["tls"] = ssl.create_default_context(cafile=tls_ca_file)
        try:
            nc = await asyncio.wait_for(
                nats.connect(
                    servers=[u.strip() for u in url.split(",")],
                    name=name,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    ping_interval=5,
                    max_outstanding_pings=3,
                    disconnected_cb=disconnected,
                    reconnected_cb=reconnected,
                    error_cb=error_cb,
                    **kwargs,
                ),
                timeout=connect_timeout_s,
            )
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise NatsConnectError(
                f"HEAN_NATS_URL={url}: cannot connect to NATS within {connect_timeout_s:g} s "
                f"({type(exc).__name__})"
            ) from None
        bus = cls(nc, name)
        holder["bus"] = bus
        return bus

    @property
    def connected(self) -> bool:
        return self.nc.is_connected

    PENDING_MSGS_LIMIT = 50_000
    PENDING_BYTES_LIMIT = 64 * 1024 * 1024
    """A plain subscription buffers at most this much; beyond it NATS drops and we report."""

    def note_slow_consumer(self, subject: str) -> None:
        """A subscription fell behind and messages were dropped: count it, turn not ready."""
        self.pause_early_handling()
        self.slow_consumer_drops += 1
        self.last_slow_consumer = time.monotonic()
        if self.slow_consumer_drops == 1 or self.slow_consumer_drops % 1000 == 0:
            log.warning("slow consumer on %s: messages dropped", subject)
        if self.on_slow_consumer:
            self.on_slow_consumer(subject)

    def pause_early_handling(self) -> None:
        """Live copies may have been missed: durable consumers take stored copies in order
        until each has caught up again (see ``hean.bus.early``)."""
        for s in self._subs:
            if isinstance(s, _PullSub) and s.early is not None:
                s.early.caught_up = False

    def early_counts(self) -> dict[str, int]:
        """Per durable consumer: messages handled from their live copy so far."""
        return {
            s.durable: s.early.handled_early
            for s in self._subs
            if isinstance(s, _PullSub) and s.early is not None
        }

    def keeping_up(self, window_s: float = 30.0) -> bool:
        """False while a slow-consumer drop happened within the last ``window_s``."""
        last = self.last_slow_consumer
        return last is None or time.monotonic() - last > window_s

    def pending_messages(self) -> int:
        """Messages received but not yet handled, over all plain subscriptions."""
        return sum(s.sub.pending_msgs for s in self._subs if isinstance(s, _CoreSub))

    async def ensure_streams(
        self, specs: tuple[StreamSpec, ...] = STREAMS, *, replicas: int = 1
    ) -> None:
        """Create or update every stream; idempotent, safe from many services at once.

        ``replicas`` above 1 needs a JetStream cluster with at least that many nodes; the KV
        buckets this bus opens later get as many.
        """
        self.replicas = replicas
        for spec in specs:
            config = stream_config(spec, replicas)
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                try:
                    info = await self.js.stream_info(spec.name)
                except nats.js.errors.NotFoundError:
                    raise NatsSetupError(f"cannot create stream {spec.name}: {exc}") from None
                # a stream's persist mode is fixed at creation: keep the one it has
                config.persist_mode = info.config.persist_mode
                with contextlib.suppress(nats.js.errors.BadRequestError):
                    await self.js.update_stream(config)

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        wait: bool = True,
    ) -> None:
        hdrs = dict(headers or {})
        if stream_for(subject) is None:
            await self.nc.publish(subject, data, headers=hdrs or None)
            return
        if msg_id is not None:
            hdrs["Nats-Msg-Id"] = msg_id
        if wait:
            await _js_retry(
                lambda: self.js.publish(subject, data, headers=hdrs or None, timeout=2.0)
            )
            return
        future = await self.js.publish_async(subject, data, headers=hdrs or None)
        stored = self._confirm(future, subject, data, hdrs)
        produced = _PRODUCED.get()
        if produced is not None:
            produced.append(stored)

    def _track(self, fut: asyncio.Future) -> None:
        self._confirming.add(fut)
        fut.add_done_callback(self._confirming.discard)

    def _confirm(
        self, future: asyncio.Future, subject: str, data: bytes, hdrs: dict[str, str]
    ) -> asyncio.Future[bool]:
        """A future that turns True once the stream confirmed the pipelined publish.

        The common case costs two callbacks and a timer. A failed or missing ack (nothing
        within ``CONFIRM_TIMEOUT_S``) publishes again and waits; that is safe because the
        message carries its Nats-Msg-Id and the stream drops the duplicate. False means lost
        after every retry (counted in ``lost_publishes``).
        """
        loop = future.get_loop()
        stored: asyncio.Future[bool] = loop.create_future()
        self._track(stored)
        retrying: list[asyncio.Task] = []

        def retry(reason: object) -> None:
            if stored.done() or retrying:
                return
            log.warning("stored publish on %s unconfirmed (%r); retrying", subject, reason)
            task = loop.create_task(self._republish(stored, subject, data, hdrs))
            retrying.append(task)
            self._track(task)

        timer = loop.call_later(CONFIRM_TIMEOUT_S, retry, "no ack")

        def acked(f: asyncio.Future) -> None:
            timer.cancel()
            if f.cancelled():
                retry("cancelled")
            elif f.exception() is not None:
                retry(f.exception())
            elif not stored.done():
                stored.set_result(True)

        future.add_done_callback(acked)
        return stored

    async def _republish(
        self, stored: asyncio.Future[bool], subject: str, data: bytes, hdrs: dict[str, str]
    ) -> None:
        try:
            await _js_retry(
                lambda: self.js.publish(subject, data, headers=hdrs or None, timeout=2.0),
                attempts=12,
            )
            ok = True
        except Exception:
            self.lost_publishes += 1
            log.exception("stored publish on %s failed after retries", subject)
            ok = False
        if not stored.done():
            stored.set_result(ok)

    def _ack_when_stored(self, m: Msg, produced: list[asyncio.Future[bool]]) -> None:
        """Ack ``m`` once every future in ``produced`` is True; nak it if one is False."""
        remaining = [len(produced)]
        failed = [False]

        def one_done(f: asyncio.Future[bool]) -> None:
            if f.cancelled() or not f.result():
                failed[0] = True
            remaining[0] -= 1
            if remaining[0] == 0:
                self._track(f.get_loop().create_task(_settle(m, stored=not failed[0])))

        for f in produced:
            f.add_done_callback(one_done)

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every pipelined stored publish is confirmed and its input acknowledged.

        Confirmations start the acks they complete, so this waits again until none is left.
        """
        deadline = time.monotonic() + timeout_s
        while self._confirming and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(list(self._confirming), timeout=left)

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
        if durable is not None:
            spec = stream_for(pattern.replace(">", "x").replace("*", "x"))
            if spec is None:
                raise ValueError(f"durable subscription on {pattern!r}: no stream captures it")
            sub = _PullSub(self, pattern, durable, spec, handler, batch, ack_wait_s)
            if early:
                if queue is not None:
                    raise ValueError(f"early handling of {pattern!r} needs a single instance")
                sub.early = EarlyCopies()
                sub.live = await self.nc.subscribe(
                    pattern,
                    cb=sub.on_live,
                    pending_msgs_limit=self.PENDING_MSGS_LIMIT,
                    pending_bytes_limit=self.PENDING_BYTES_LIMIT,
                )
            sub.task = asyncio.create_task(sub.run(), name=f"pull:{durable}")
            self._subs.append(sub)
            return sub

        async def on_msg(msg: Msg) -> None:
            await handler(Message(msg.subject, msg.data, dict(msg.headers or {})))

        core = _CoreSub(
            await self.nc.subscribe(
                pattern,
                queue=queue or "",
                cb=on_msg,
                pending_msgs_limit=self.PENDING_MSGS_LIMIT,
                pending_bytes_limit=self.PENDING_BYTES_LIMIT,
            )
        )
        self._subs.append(core)
        return core

    def stale_consumers(self, max_age_s: float = 30.0) -> list[str]:
        """Durable consumers whose fetch loop has not succeeded for ``max_age_s``."""
        now = time.monotonic()
        return [
            s.durable
            for s in self._subs
            if isinstance(s, _PullSub) and not s.stopping and now - s.last_ok > max_age_s
        ]

    async def _bucket(self, bucket: str):
        kv = self._kv.get(bucket)
        if kv is None:
            try:
                kv = await self.js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = await self.js.create_key_value(
                    bucket=bucket, history=5, replicas=self.replicas
                )
            else:
                if self.replicas > 1:  # one replica is every bucket's least: nothing to raise
                    await self._replicate(f"KV_{bucket}")
            self._kv[bucket] = kv
        return kv

    async def _replicate(self, stream: str) -> None:
        """Raise a bucket's replicas to the deployment's: the risk record and the router's
        book must outlive a node as the ledger streams do, also where a single-node store
        became a cluster."""
        info = await self.js.stream_info(stream)
        held = info.config.num_replicas
        if held is not None and held < self.replicas:
            info.config.num_replicas = self.replicas
            try:
                await self.js.update_stream(info.config)
            except nats.errors.Error as exc:  # a reader of the bucket may not: its owner does
                log.warning("%s kept at %d replicas: %s", stream, held, exc)

    async def kv_get(self, bucket: str, key: str) -> bytes | None:
        kv = await _js_retry(lambda: self._bucket(bucket))
        try:
            entry = await _js_retry(lambda: kv.get(key))
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.value

    async def kv_put(self, bucket: str, key: str, value: bytes) -> None:
        kv = await _js_retry(lambda: self._bucket(bucket))
        await _js_retry(lambda: kv.put(key, value))

    async def stop_consuming(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()

    async def close(self) -> None:
        self.closing = True
        await self.stop_consuming()
        await self.flush()
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()
