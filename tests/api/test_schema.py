"""Property-based run of schemathesis against the live OpenAPI spec: for every operation it declares, valid
and invalid requests alike, no answer is a 5xx and every answer conforms to the spec (status codes, content
types, response schemas).

Hypothesis is driven directly (`operation.as_strategy()` under `@given`): schemathesis 4.32's pytest
loader `schemathesis.pytest.from_fixture` breaks on pytest 9 (it sets `request.node._nodeid`)."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok

from tests.api.conftest import Served

MAX_EXAMPLES = 50  # per operation and generation mode


def test_no_server_errors_and_answers_match_the_spec(served: Served) -> None:
    schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"invalid operation in the spec: {result}"
        operations.append(result.ok())
    assert {op.label for op in operations} == {
        "GET /recommendations/{user_id}",
        "GET /similar-items/{item_id}",
        "GET /health",
        "HEAD /health",
        "GET /metrics",
    }
    statuses: dict[str, set[int]] = {}
    for operation in operations:
        modes = [schemathesis.GenerationMode.POSITIVE]
        if len(operation.path_parameters) or len(operation.query):  # else nothing can be made invalid
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            seen = statuses.setdefault(f"{operation.label} {mode.value}", set())

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,  # no .hypothesis/ folder in the checkout
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                response = case.call_and_validate(base_url=served.base_url)
                assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
                seen.add(response.status_code)  # noqa: B023 - run() is called within this iteration

            run()
    print(statuses)
    # Both kinds of requests really reached the service.
    assert 200 in statuses["GET /recommendations/{user_id} positive"]
    assert 422 in statuses["GET /recommendations/{user_id} negative"]
    assert 404 in statuses["GET /similar-items/{item_id} positive"]
    assert statuses["GET /health positive"] == {200}
    assert statuses["HEAD /health positive"] == {200}
