"""Process entry for funding-predictor: model loading, hot reload, history bootstrap.

At start the newest artifact in ``model_dir`` is loaded (default: the one shipped in the
package); a task watches its ``meta.json`` and swaps in a new artifact when one appears. The
last ``history_len`` settlements per series are read back from the history stream so that
forecasts start at the first new settlement instead of after days of warm-up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from msgspec import Meta

from hean.config import ServiceSettings
from hean.ml.funding.model import DEFAULT_DIR, META, FundingForecaster, ModelLoadError
from hean.ml.funding.policy import ActionPolicy
from hean.ml.reload import ModelReloader
from hean.runtime.runner import ServiceApp, ServiceContext
from hean_services.funding_predictor.logic import (
    FundingPredictorLogic,
    PredictorConfig,
    PredictorMetrics,
)

log = logging.getLogger("hean.funding_predictor")

Positive = Annotated[float, Meta(gt=0)]


class Settings(ServiceSettings, kw_only=True):
    model_dir: str = ""
    """Artifact directory (or a folder of versioned ones); empty means the shipped model."""
    model_poll_s: Positive = 30.0
    history_len: Annotated[int, Meta(ge=32, le=10_000)] = 64
    bootstrap_history: bool = True
    enter_bps_8h: float = 3.0
    exit_bps_8h: float = 0.5
    min_confidence: Annotated[float, Meta(ge=0, le=1)] = 0.6
    round_trip_cost_bps: Annotated[float, Meta(ge=0)] = 20.0
    hold_hours: Positive = 72.0


def _policy(s: Settings) -> ActionPolicy:
    return ActionPolicy(
        enter_bps_8h=s.enter_bps_8h,
        exit_bps_8h=s.exit_bps_8h,
        min_confidence=s.min_confidence,
        round_trip_cost_bps=s.round_trip_cost_bps,
        hold_hours=s.hold_hours,
    )


def _artifact_stamp(model_dir: Path) -> float | None:
    try:
        from hean.ml.funding.model import find_artifact

        return (find_artifact(model_dir) / META).stat().st_mtime
    except (ModelLoadError, OSError):
        return None


def build(settings: Settings) -> ServiceApp:
    model_dir = Path(settings.model_dir) if settings.model_dir else DEFAULT_DIR
    policy = _policy(settings)
    logic = FundingPredictorLogic(config=PredictorConfig(history_len=settings.history_len))
    reloader = ModelReloader(
        model_dir,
        stamp=_artifact_stamp,
        load=lambda d: FundingForecaster.load(d, policy),
        install=logic.set_forecaster,
        loaded=lambda: logic.forecaster is not None,
        label="funding model",
        errors=(ModelLoadError,),
    )

    async def start(ctx: ServiceContext) -> None:
        logic.metrics = PredictorMetrics(ctx.metrics.registry)
        await reloader.load()
        if settings.bootstrap_history:
            await _bootstrap(ctx, logic)

    async def watch_model(ctx: ServiceContext) -> None:
        await reloader.watch(ctx, settings.model_poll_s)

    return ServiceApp(
        logic=logic,
        on_start=[start],
        tasks=[watch_model],
    )


async def _bootstrap(ctx: ServiceContext, logic: FundingPredictorLogic) -> None:
    from hean.history import read_funding

    try:
        # enough settlements of the slowest (8 h) schedule to fill the bounded history
        since = ctx.runtime.clock.now_ms() - logic.config.history_len * 8 * 3_600_000
        events = await read_funding(
            ctx.bus.js, settled_only=True, since_ms=since, idle_timeout_s=2.0
        )
    except Exception as exc:  # no history stream yet is normal on a fresh system
        log.info("no settlement history to bootstrap from: %s", exc)
        return
    events.sort(key=lambda e: e.funding_time_ms or e.ts_ms)
    for e in events:
        logic.add_settlement(
            e.venue, e.symbol, e.funding_time_ms or e.ts_ms, e.rate, e.interval_hours
        )
    log.info("bootstrapped %d settlements for %d series", len(events), len(logic.series))
