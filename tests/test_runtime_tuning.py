"""The services' event loop and garbage-collector settings (no timing is asserted)."""

from __future__ import annotations

import gc
import sys
import weakref

from prometheus_client import CollectorRegistry, Histogram

from hean.runtime import eventloop, heap


class _Node:
    me: object = None


async def _loop_name() -> str:
    return eventloop.running_loop_name()


def test_runs_on_uvloop_when_installed() -> None:
    assert eventloop.loop_factory()[0] == "uvloop"
    assert eventloop.run(_loop_name()) == "uvloop"


def test_falls_back_to_asyncio_without_uvloop(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert eventloop.loop_factory() == ("asyncio", None)
    assert eventloop.run(_loop_name()) == "asyncio"


def test_settling_freezes_the_start_up_heap_and_widens_the_young_generation() -> None:
    before = gc.get_threshold()
    kept = [object() for _ in range(1000)]
    try:
        frozen = heap.settle_after_startup(young_threshold=12_345)
        assert frozen == gc.get_freeze_count() > len(kept)
        assert gc.get_threshold() == (12_345, before[1], before[2])
        # what is allocated after start-up is still collected: a fresh cycle goes away
        node = _Node()
        node.me = node
        alive = weakref.ref(node)
        del node
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_every_collection_pause_is_observed_until_watching_stops() -> None:
    registry = CollectorRegistry()
    pauses = Histogram("t_gc_pause_seconds", "t", ["service", "generation"], registry=registry)
    stop = heap.watch_pauses(pauses, "svc")

    def full_collections() -> float:
        value = registry.get_sample_value(
            "t_gc_pause_seconds_count", {"service": "svc", "generation": "2"}
        )
        return value or 0.0

    try:
        gc.collect()
        gc.collect()
        assert full_collections() == 2
        assert (
            registry.get_sample_value(
                "t_gc_pause_seconds_sum", {"service": "svc", "generation": "2"}
            )
            > 0
        )
    finally:
        stop()
    gc.collect()
    assert full_collections() == 2
