"""Hot reload of a model artifact: load at start, swap in a new one when its stamp changes.

Both predictors ship a model and pick up a retrained one without a restart; a missing or
broken artifact leaves the service not ready, with the reason, instead of failing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from hean.runtime.runner import ServiceContext

M = TypeVar("M")
log = logging.getLogger("hean.ml")


class ModelReloader(Generic[M]):
    def __init__(
        self,
        model_dir: Path,
        *,
        stamp: Callable[[Path], float | None],
        load: Callable[[Path], M],
        install: Callable[[M | None, str], None],
        loaded: Callable[[], bool],
        label: str,
        errors: tuple[type[Exception], ...],
    ) -> None:
        self.model_dir = model_dir
        self._stamp = stamp
        self._load = load
        self._install = install
        self._loaded = loaded
        self.label = label
        self.errors = errors
        self.stamp: float | None = None

    async def load(self) -> None:
        """Load the artifact if it is new; keep the current model when the new one is broken."""
        stamp = self._stamp(self.model_dir)
        if stamp is None or stamp == self.stamp:
            if stamp is None and not self._loaded():
                self._install(None, f"no model artifact in {self.model_dir}")
            return
        try:
            model = await asyncio.to_thread(self._load, self.model_dir)
        except self.errors as exc:
            log.error("%s not loaded: %s", self.label, exc)
            if not self._loaded():
                self._install(None, str(exc))
            return
        self.stamp = stamp
        self._install(model, "")
        log.info(
            "%s loaded: %s from %s", self.label, getattr(model, "version", "?"), self.model_dir
        )

    async def watch(self, ctx: ServiceContext, poll_s: float) -> None:
        while not ctx.stopping.is_set():
            try:
                await asyncio.wait_for(ctx.stopping.wait(), poll_s)
            except TimeoutError:
                await self.load()
