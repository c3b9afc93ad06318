"""Property-based run of the API against its own OpenAPI document (schemathesis): whatever a
client sends within or outside the schema, no 5xx, and every response matches the document.

A real `rtmh api` process on its own database, with an admin token, so that every operation is
reached (tokens, rules, incidents, silences); failed-token limits are lifted for the run, since
some checks deliberately send wrong credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from .api_support import Api, running_api


@pytest.fixture(scope="module")
def schema_api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    limits = {"RTMH_API_AUTH_FAILURES_PER_MINUTE": "100000"}
    workdir: Path = tmp_path_factory.mktemp("schema-api")
    with running_api(module_db_url, workdir, limits, token_prefix="prop") as api:
        yield api


def _document() -> dict[str, Any]:
    # the document the server serves, built from the same code without starting it: the
    # operations must be known when pytest collects, the server only exists in a fixture
    from rtmh.api.app import create_app
    from rtmh.config import Settings

    return create_app(Settings(), "postgresql://unused@127.0.0.1/unused").openapi()


SCHEMA = schemathesis.openapi.from_dict(_document())
# The stream never ends by itself, so a generated request would only end at its timeout; its
# own tests (test_api_stream.py) cover its refusals and every event it sends.
OPERATIONS = [
    op
    for op in (result.ok() for result in SCHEMA.get_all_operations())
    if op.label != "GET /api/v1/stream"
]


def test_the_served_document_is_the_one_tested(schema_api: Api) -> None:
    import httpx

    assert httpx.get(f"{schema_api.url}/openapi.json", timeout=30).json() == SCHEMA.raw_schema


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_server_error_and_every_response_matches_the_schema(
    operation: Any, schema_api: Api
) -> None:
    headers = {"Authorization": f"Bearer {schema_api.tokens['admin']}"}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            base_url=schema_api.url,
            headers=headers,
            checks=[
                checks.not_a_server_error,
                checks.status_code_conformance,
                checks.content_type_conformance,
                checks.response_schema_conformance,
            ],
        )

    run()
