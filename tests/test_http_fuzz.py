"""The HTTP endpoints fuzzed against their own OpenAPI schema: no 500s, valid responses.

Every service serves the same health app; services that add control endpoints (the risk
service's resume) are fuzzed here too when they register a router.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry

from hean.runtime.health import build_app

state = {"ready": True}
app = build_app(
    "fuzzed",
    CollectorRegistry(),
    lambda: {"bus_connected": state["ready"], "model_loaded": True},
    lambda: {"symbols": 3},
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_health_endpoints_conform_to_their_schema(case) -> None:
    response = case.call()
    assert response.status_code < 500 or case.path == "/readyz"
    case.validate_response(response)


def test_readiness_turns_503_with_the_failing_condition() -> None:
    from starlette.testclient import TestClient

    client = TestClient(app)
    assert client.get("/readyz").status_code == 200
    state["ready"] = False
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["conditions"]["bus_connected"] is False
    finally:
        state["ready"] = True


def _risk_control_app():
    from fastapi import FastAPI

    from hean_services.risk_killswitch.logic import RiskKillswitchLogic
    from hean_services.risk_killswitch.main import Operator, http_routes

    control = FastAPI()
    control.include_router(http_routes(Operator(RiskKillswitchLogic(), "the-token")))
    return control


risk_schema = schemathesis.openapi.from_asgi("/openapi.json", _risk_control_app())


@risk_schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_risk_control_endpoints_never_fail_and_refuse_without_the_token(case) -> None:
    """Generated calls carry no valid token: state may be read, nothing may be changed."""
    response = case.call()
    assert response.status_code < 500 or response.status_code == 503
    if case.method.upper() != "GET":
        assert not 200 <= response.status_code < 300, (case.path, response.text)
    if case.path in ("/risk/resume", "/risk/halt") and case.method.upper() == "POST":
        assert response.status_code in (400, 401, 422), response.text
