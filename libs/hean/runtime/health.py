"""The per-service HTTP endpoints: liveness, readiness, metrics, status.

``/healthz`` answers while the process is alive; ``/readyz`` only while NATS is connected and
the service's own conditions hold (model loaded, data fresh...), so Kubernetes and ``hean up``
can tell a live but useless service from a working one.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

import hean


def build_app(
    service: str,
    registry: CollectorRegistry,
    readiness: Callable[[], dict[str, bool]],
    snapshot: Callable[[], dict[str, object]],
    routers: list[APIRouter] | None = None,
) -> FastAPI:
    app = FastAPI(title=f"HEAN {service}", version=hean.__version__)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "alive", "service": service, "version": hean.__version__}

    ready_doc = {"content": {"application/json": {}}, "description": "ready or not, and why"}

    @app.get("/readyz", responses={200: ready_doc, 503: ready_doc})
    def readyz() -> JSONResponse:
        conditions = readiness()
        ready = all(conditions.values())
        return JSONResponse(
            {"ready": ready, "service": service, "conditions": conditions},
            status_code=200 if ready else 503,
        )

    @app.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/status")
    def status() -> dict[str, object]:
        conditions = readiness()
        return {
            "service": service,
            "version": hean.__version__,
            "ready": all(conditions.values()),
            "conditions": conditions,
            "state": snapshot(),
        }

    for router in routers or []:
        app.include_router(router)
    return app
