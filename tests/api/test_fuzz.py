"""Property-based fuzz of every route the OpenAPI schema declares (schemathesis):
whatever the schema allows gets a documented answer, never a 5xx, and every
answer matches its declared schema. Against a real `aistack serve` on 127.0.0.1.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from conftest import served_copy
from servers import aistack_server


@pytest.fixture(scope="module")
def api_schema(fraud_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "served"
    served_copy(fraud_run, root)
    with aistack_server(root) as (base, _):
        yield schemathesis.openapi.from_url(f"{base}/openapi.json")


CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def test_every_route_answers_as_documented(api_schema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/fraud/predict", "/v1/fraud/predict/batch", "/v1/fraud/labels"} <= paths
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,  # the same cases every run: a failure reproduces
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case) -> None:
            case.call_and_validate(checks=CHECKS)

        fuzz()
