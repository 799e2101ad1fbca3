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
