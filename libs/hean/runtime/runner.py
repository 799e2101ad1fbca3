"""Runs one service as a process: NATS, health endpoints, micro registration, signals.

Order of shutdown on SIGTERM or SIGINT: stop consuming, let in-flight handlers finish, drain
the NATS connection, stop the HTTP server, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import uvicorn
from fastapi import APIRouter
from nats.micro import add_service

import hean
from hean.bus.nats import NatsBus, NatsConnectError, NatsSetupError
from hean.clock import SystemClock
from hean.config import ConfigError, ServiceSettings, check_port_free
from hean.logs import setup_logging
from hean.registry import spec
from hean.runtime import eventloop, heap
from hean.runtime.core import Runtime
from hean.runtime.logic import ServiceLogic
from hean.runtime.metrics import RuntimeMetrics
from hean_proto import codec
from hean_proto.events import Heartbeat
from hean_proto.subjects import HEARTBEAT, SERVICE_ENDPOINT

log = logging.getLogger("hean.runner")

Task = Callable[["ServiceContext"], Awaitable[None]]


@dataclass
class ServiceApp:
    """What a service's main hands to the runner: its logic plus its I/O around it.

    ``tasks`` are long-running coroutines (venue polling, alert delivery) that feed the runtime
    with ``ctx.runtime.emit``; ``on_start`` runs once connected, before consuming (restore
    state from the KV store); ``routers`` add HTTP endpoints next to the health ones.
    """

    logic: ServiceLogic
    tasks: list[Task] = field(default_factory=list)
    on_start: list[Task] = field(default_factory=list)
    on_stop: list[Task] = field(default_factory=list)
    routers: list[APIRouter] = field(default_factory=list)
    readiness: list[Callable[[], dict[str, bool]]] = field(default_factory=list)


@dataclass
class ServiceContext:
    settings: ServiceSettings
    runtime: Runtime
    bus: NatsBus
    metrics: RuntimeMetrics
    stopping: asyncio.Event


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


async def serve(app: ServiceApp, settings: ServiceSettings) -> int:
    name = app.logic.name
    port = settings.health_port or spec(name).port()
    check_port_free(settings.health_host, port)
    instance = settings.instance or f"{socket.gethostname()}-{os.getpid()}"
    metrics = RuntimeMetrics(name)
    metrics.event_loop.labels(name, eventloop.running_loop_name()).set(1)
    metrics.gc_frozen_objects.labels(name).set(gc.get_freeze_count())
    bus = await NatsBus.connect(
        settings.nats_url,
        f"hean-{name}",
        connect_timeout_s=settings.nats_connect_timeout_s,
        user_credentials=settings.nats_creds,
        user=settings.nats_user,
        password_file=settings.nats_password_file,
        tls_ca_file=settings.nats_tls_ca_file,
    )
    bus.PENDING_MSGS_LIMIT = settings.pending_msgs_limit
    metrics.nats_connected.labels(name).set(1)
    bus.on_state_change = lambda up: metrics.nats_connected.labels(name).set(1 if up else 0)
    bus.on_slow_consumer = lambda subject: metrics.slow_consumer_drops.labels(name).inc()
    await bus.ensure_streams(replicas=settings.nats_replicas)
    runtime = Runtime(
        app.logic, bus, SystemClock(), metrics, max_event_bytes=settings.max_event_bytes
    )
    stopping = asyncio.Event()
    ctx = ServiceContext(settings, runtime, bus, metrics, stopping)

    def readiness() -> dict[str, bool]:
        conditions = runtime.readiness()
        for extra in app.readiness:
            conditions.update(extra())
        stale = bus.stale_consumers()
        conditions["consumers_fresh"] = not stale
        conditions["keeping_up"] = bus.keeping_up(settings.slow_consumer_window_s)
        metrics.pending_messages.labels(name).set(bus.pending_messages())
        metrics.ready.labels(name).set(1 if all(conditions.values()) else 0)
        return conditions

    for hook in app.on_start:
        await hook(ctx)
    await runtime.start()
    for consumer in bus.early_counts():
        metrics.handled_early.labels(name, consumer).set_function(
            lambda c=consumer: bus.early_counts().get(c, 0)
        )

    micro = await _register_micro(bus, name, readiness)
    stop_watching_gc = heap.watch_pauses(metrics.gc_pause_seconds, name)

    http = _EmbeddedServer(
        uvicorn.Config(
            _health_app(name, metrics, readiness, app),
            host=settings.health_host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)

    started = time.monotonic()

    async def heartbeat() -> None:
        seq = 0
        while not stopping.is_set():
            seq += 1
            beat = Heartbeat(
                ts_ms=runtime.clock.now_ms(),
                service=name,
                instance=instance,
                version=hean.__version__,
                ready=all(readiness().values()),
                uptime_s=round(time.monotonic() - started, 3),
                seq=seq,
            )
            with contextlib.suppress(Exception):
                await bus.publish(HEARTBEAT.subject(name), codec.encode(beat))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), settings.heartbeat_s)

    async def ticker() -> None:
        while not stopping.is_set():
            await runtime.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), app.logic.tick_interval_s)

    async def guarded(task: Task) -> None:
        try:
            await task(ctx)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s failed; stopping service", getattr(task, "__name__", task))
            stopping.set()

    tasks = [
        asyncio.create_task(http.serve(), name="http"),
        asyncio.create_task(heartbeat(), name="heartbeat"),
        asyncio.create_task(ticker(), name="ticker"),
        *(asyncio.create_task(guarded(t), name=getattr(t, "__name__", "task")) for t in app.tasks),
    ]
    log.info("service started", extra={"health_port": port, "nats": settings.nats_url})
    await stopping.wait()
    log.info("stopping: no new messages, draining")
    await runtime.stop()
    for hook in app.on_stop:
        with contextlib.suppress(Exception):
            await hook(ctx)
    with contextlib.suppress(Exception):
        await micro.stop()
    await bus.close()
    http.should_exit = True
    for t in tasks[1:]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stop_watching_gc()
    log.info("stopped")
    return 0


def _health_app(name, metrics, readiness, app: ServiceApp):
    from hean.runtime.health import build_app

    return build_app(name, metrics.registry, readiness, app.logic.snapshot, app.routers)


async def _register_micro(bus: NatsBus, name: str, readiness):
    """Register with the NATS services API so that ``nats micro ls`` lists the service."""

    async def status(req) -> None:
        conditions = readiness()
        await req.respond(
            json.dumps({"ready": all(conditions.values()), "conditions": conditions}).encode()
        )

    service = await add_service(
        bus.nc,
        name=name,
        version=hean.__version__,
        description=spec(name).description,
    )
    await service.add_endpoint(
        name="status", subject=SERVICE_ENDPOINT.subject(name, "status"), handler=status
    )
    return service


def run(build: Callable[[ServiceSettings], ServiceApp], settings: ServiceSettings) -> int:
    """Entry point used by ``hean service NAME``: build the app, serve, map errors to exits."""
    try:
        app = build(settings)
        setup_logging(app.logic.name, settings.log_level, settings.log_json)
        # models and libraries are loaded by now: keep full collections off their objects
        heap.settle_after_startup()
        return eventloop.run(serve(app, settings))
    except (ConfigError, NatsConnectError, NatsSetupError) as exc:
        print(f"hean: {exc}", flush=True)
        return 2
