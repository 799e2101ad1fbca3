"""Process entry for liquidation-predictor: model loading and hot reload.

At start the newest artifact in ``model_dir`` is loaded (default: the one shipped in the
package); a task watches its ``meta.json`` and swaps in a new artifact when one appears.
Without a loadable artifact the service runs but reports not ready, with the reason on
``/readyz`` conditions and in the health snapshot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from msgspec import Meta

from hean.config import ServiceSettings
from hean.ml.cascade.model import DEFAULT_DIR, META, CascadeModel, ModelLoadError, find_artifact
from hean.ml.reload import ModelReloader
from hean.runtime.runner import ServiceApp, ServiceContext
from hean_services.liquidation_predictor.logic import (
    LiquidationPredictorLogic,
    PredictorConfig,
    PredictorMetrics,
)

log = logging.getLogger("hean.liquidation_predictor")

Positive = Annotated[float, Meta(gt=0)]
Prob = Annotated[float, Meta(ge=0, le=1)]


class Settings(ServiceSettings, kw_only=True):
    model_dir: str = ""
    """Artifact directory (or a folder of versioned ones); empty means the shipped model."""
    model_poll_s: Positive = 30.0
    detection_threshold: Prob = 0.7
    momentum_window_s: Positive = 900.0
    liquidation_window_s: Positive = 3600.0
    book_depth: Annotated[int, Meta(ge=1, le=500)] = 10
    """Book levels of the imbalance metric (an intraday model measures over its own depth)."""
    liquidation_stream: bool = True
    """The venues stream liquidations (a bar without prints had none); False: unknown."""
    bootstrap_history: bool = True
    """Rebuild recent bars from the history stream at start instead of waiting days for them."""


def _stamp(model_dir: Path) -> float | None:
    try:
        return (find_artifact(model_dir) / META).stat().st_mtime
    except (ModelLoadError, OSError):
        return None


def build(settings: Settings) -> ServiceApp:
    model_dir = Path(settings.model_dir) if settings.model_dir else DEFAULT_DIR
    logic = LiquidationPredictorLogic(
        config=PredictorConfig(
            detection_threshold=settings.detection_threshold,
            momentum_window_ms=int(settings.momentum_window_s * 1000),
            liq_window_ms=int(settings.liquidation_window_s * 1000),
            book_depth=settings.book_depth,
            liquidation_stream=settings.liquidation_stream,
        )
    )
    reloader = ModelReloader(
        model_dir,
        stamp=_stamp,
        load=CascadeModel.load,
        install=logic.set_model,
        loaded=lambda: logic.model is not None,
        label="cascade model",
        errors=(ModelLoadError,),
    )

    async def start(ctx: ServiceContext) -> None:
        logic.metrics = PredictorMetrics(ctx.metrics.registry)
        await reloader.load()
        if settings.bootstrap_history:
            await _bootstrap(ctx, logic)

    async def watch_model(ctx: ServiceContext) -> None:
        await reloader.watch(ctx, settings.model_poll_s)

    return ServiceApp(logic=logic, on_start=[start], tasks=[watch_model])


async def _bootstrap(ctx: ServiceContext, logic: LiquidationPredictorLogic) -> None:
    """Fold stored funding snapshots (their mark prices) and open interest into the bars."""
    from hean.history import read_market_history
    from hean_proto.events import FundingRate, PriceTick

    now = ctx.runtime.clock.now_ms()
    bar_ms = logic.model.bar_ms if logic.model else 86_400_000
    try:
        events = await read_market_history(
            ctx.bus.js, since_ms=now - logic.bars_kept() * bar_ms, idle_timeout_s=2.0
        )
    except Exception as exc:  # no history stream yet is normal on a fresh system
        log.info("no market history to bootstrap from: %s", exc)
        return
    for e in events:
        if isinstance(e, FundingRate) and e.mark_price is not None and not e.stale:
            tick = PriceTick(ts_ms=e.ts_ms, venue=e.venue, symbol=e.symbol, mark=e.mark_price)
            logic.on_event(tick, now)
        logic.on_event(e, now)
    log.info(
        "bootstrapped bars from %d stored events for %d symbols", len(events), len(logic.symbols)
    )
