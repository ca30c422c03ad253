"""Property-based tests from the service's own OpenAPI schema (schemathesis): for requests the
schema allows (positive) and requests it does not (negative), the server answers without a 5xx,
with a documented status code and content type and a body matching the documented schema, and
keeps serving. Thirty cases a mode, drawn from a fixed seed (the same cases every run).

(schemathesis's pytest integration reads a node attribute that pytest 9 no longer has, so the
cases come from the schema's Hypothesis strategy under a plain `@given`.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_generated_requests_get_documented_answers_and_no_5xx(server, mode):
    schema = schemathesis.openapi.from_url(server.url + "openapi.json")
    methods = set()

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=30, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def answered_as_documented(case):
        methods.add(f"{case.method} {case.path}")
        case.call_and_validate(base_url=server.url.rstrip("/"), checks=CHECKS)

    answered_as_documented()
    # /health has no parameters: only /predict can be asked wrongly
    assert methods >= ({"POST /predict", "GET /health"} if mode.is_positive else {"POST /predict"})
    assert server.health()["status"] == "ok"
