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

    async def watch_model(ctx: ServiceContext) -> None:
        await reloader.watch(ctx, settings.model_poll_s)

    return ServiceApp(logic=logic, on_start=[start], tasks=[watch_model])
