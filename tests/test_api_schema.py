"""schemathesis against the OpenAPI document the server serves, over a real socket.

Every operation of the document (whatever routes exist: new ones are covered as
they land) is called with generated requests and a valid key: valid ones (positive
mode) must answer without a 5xx, with a status the document declares, in its media
type and matching its schema; invalid ones (negative mode) must be refused without a
5xx, as a declared problem+json. ``MAILFLEET_SCHEMATHESIS_EXAMPLES`` sets the examples
per operation and mode (by default, fewer as operations are added, so that the run stays
short); the seed is fixed so that ``make test`` is stable.

schemathesis and hypothesis are synchronous: they run in a worker thread while the
server answers in the test's event loop.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import anyio.to_thread
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import is_event_stream
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apiserver import ApiServer
from mailfleet import Fleet
from mailfleet.api import Tenants, create_app, serve_api

pytestmark = pytest.mark.anyio

EXAMPLES = int(os.environ.get("MAILFLEET_SCHEMATHESIS_EXAMPLES", "0"))
"""Examples per operation and mode; 0: as many as keep the run short (25 for a few
operations, fewer as operations are added, at least 5)."""
BUDGET = 800
"""Examples per mode across all operations, when ``EXAMPLES`` is 0."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
STREAM_SECONDS = 0.5
"""How long an endless event stream is read per example."""


async def test_every_operation_answers_as_the_document_says(api: ApiServer) -> None:
    fleet = api.fleet
    await fleet.create_workspace("outreach")
    await fleet.provision_many([f"agent{i}@example.com" for i in range(5)], workspace="outreach")
    await fleet.deprovision("agent4@example.com")
    key = await api.key()
    failures = await anyio.to_thread.run_sync(partial(_run, api.url, key))
    assert not failures, "\n\n".join(failures)


def _run(url: str, key: str) -> list[str]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4, [op.label for op in operations]
    examples = EXAMPLES or min(25, max(5, BUDGET // len(operations)))
    with requests.Session() as session:
        call = partial(_check, url=url, session=session, headers={"Authorization": f"Bearer {key}"})
        found = [
            call(operation, mode, examples)
            for operation in operations
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
    return [failure for failure in found if failure is not None]


def _check(
    operation: APIOperation,
    mode: GenerationMode,
    examples: int,
    *,
    url: str,
    session: requests.Session,
    headers: dict[str, str],
) -> str | None:
    """Run ``examples`` generated requests of ``operation``; what failed, if anything."""
    streams = any(
        is_event_stream(media_type)
        for response in operation.definition.raw.get("responses", {}).values()
        for media_type in response.get("content", {})
    )
    timeout = STREAM_SECONDS if streams else 30.0

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=max(examples // 5, 3) if streams else examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, session=session, headers=headers, timeout=timeout)
        case.validate_response(response, checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        # Nothing to get wrong (no parameters, no body): no negative case exists.
        assert mode is GenerationMode.NEGATIVE, operation.label
    except (Exception, FailureGroup) as exc:  # a group of checks failing is a Base one
        return f"{operation.label} ({mode.value}): {exc}"
    return None


async def test_a_degraded_health_answer_is_the_one_documented(fleet: Fleet) -> None:
    async def liveness() -> dict[str, Any]:
        return {"mx": "not run here", "workers": "down: none alive"}

    tenants = Tenants(fleet.settings, database=fleet.database, liveness=liveness)
    async with tenants, anyio.create_task_group() as tg:
        port = await tg.start(serve_api, create_app(tenants), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{port}"

        def check() -> int:
            operation = schemathesis.openapi.from_url(f"{url}/openapi.json")["/healthz"]["GET"]
            case = operation.Case()
            response = case.call(base_url=url, timeout=10)
            # 503 is the documented answer here: every check but "not a server error".
            case.validate_response(response, checks=CHECKS[1:])
            return response.status_code

        assert await anyio.to_thread.run_sync(check) == 503
        tg.cancel_scope.cancel()
