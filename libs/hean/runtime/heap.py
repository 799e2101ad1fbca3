"""Garbage collection settled for a long-running service, and its pauses measured.

Importing torch, pandas and scikit-learn and loading a model leave hundreds of thousands of
objects that live as long as the process. Every full collection walks all of them: on a busy
2-core machine that is a pause of 50 to 300 ms, and it lands on whichever message is being
handled at the time (the tail of the signal-to-intent latency). Freezing the heap once start-up
is done moves those objects out of the collector's reach, and a larger young generation makes
collections rarer; what is allocated afterwards is collected as before, so cycles created while
serving are still freed.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from prometheus_client import Histogram

YOUNG_THRESHOLD = 10_000
"""Allocations between young collections (CPython's default is 700)."""


def settle_after_startup(young_threshold: int = YOUNG_THRESHOLD) -> int:
    """Collect what start-up left behind, freeze the rest; returns the frozen object count."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
    return gc.get_freeze_count()


def watch_pauses(histogram: Histogram, service: str) -> Callable[[], None]:
    """Observe every collection's pause into ``histogram`` (labels: service, generation).

    Returns the function that stops watching (a process can host several runtimes in tests).
    """
    children = [histogram.labels(service, str(g)) for g in range(3)]
    started = [0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter_ns()
        elif started[0]:
            children[info["generation"]].observe((time.perf_counter_ns() - started[0]) / 1e9)

    gc.callbacks.append(on_gc)

    def stop() -> None:
        if on_gc in gc.callbacks:
            gc.callbacks.remove(on_gc)

    return stop
