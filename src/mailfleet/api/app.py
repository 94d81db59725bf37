"""The FastAPI application: routers, error handlers, the OpenAPI document."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from . import problems
from .idempotency import HEADER, MAX_KEY_LENGTH, IdempotencyMiddleware
from .metrics import Metrics, WebhookLag
from .routes import ROUTERS
from .schemas import ProblemBody
from .tenants import Tenants

__all__ = ["create_app"]

_DESCRIPTION = """\
Provision and watch a fleet of AI agents with real mailboxes.

Every request under `/v1` carries a bearer API key (`Authorization: Bearer mf_...`),
scoped to one application: it sees and changes only that application's domains,
workspaces, grants, messages, suppressions, webhooks and events. Operator acts
(reinstate, restrictions) need an admin key. Errors are RFC 9457
`application/problem+json` documents with a stable `code`.

Every POST takes an `Idempotency-Key` header: a retry with the same key and body
within 24 hours gets the first answer (marked `Idempotent-Replayed: true`) and
does nothing again; the same key on another request is `409 idempotency_key_reused`.
"""


def _version() -> str:
    try:
        return version("mailfleet")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0.0.0"


def create_app(tenants: Tenants, *, webhook_lag: WebhookLag | None = None) -> FastAPI:
    """The API application serving ``tenants`` (which the caller opens and closes).

    ``webhook_lag`` gives ``/metrics`` each application's webhook delivery lag
    (``app.state.metrics.webhook_lag`` may also be set later).
    """
    app = FastAPI(
        title="mailfleet",
        version=_version(),
        description=_DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.tenants = tenants
    app.state.metrics = Metrics(tenants, webhook_lag=webhook_lag)
    problems.install(app)
    app.add_middleware(IdempotencyMiddleware, tenants=tenants)
    for router in ROUTERS:
        app.include_router(router)
    app.openapi = lambda: openapi_document(app)  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app``: FastAPI's, with errors as problem+json."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for nested in schemas["Problem"].pop("$defs", {}).items():
        schemas.setdefault(*nested)
    problem = {"$ref": "#/components/schemas/Problem"}
    for path in document.get("paths", {}).values():
        for method, operation in path.items():
            if method == "post":
                _idempotent(operation)
            responses = operation.setdefault("responses", {})
            if operation.get("requestBody"):
                responses.setdefault(
                    "400", {"description": "The body cannot be read (not UTF-8, or malformed)"}
                )
            for status, response in responses.items():
                if status.startswith(("4", "5")) and not _own_content(response):
                    response["content"] = {problems.PROBLEM_JSON: {"schema": problem}}
            if operation.get("requestBody"):
                responses.setdefault(
                    "400",
                    {
                        "description": "The body is not JSON",
                        "content": {problems.PROBLEM_JSON: {"schema": problem}},
                    },
                )
            if "422" in responses or operation.get("requestBody") or operation.get("parameters"):
                responses["422"] = {
                    "description": "Validation error",
                    "content": {problems.PROBLEM_JSON: {"schema": problem}},
                }
            if operation.get("security"):
                responses.setdefault(
                    "401",
                    {
                        "description": "Missing, unknown or revoked API key",
                        "content": {problems.PROBLEM_JSON: {"schema": problem}},
                    },
                )
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    app.openapi_schema = document
    return document


def _own_content(response: dict[str, Any]) -> bool:
    """Whether a route declared what an error response of its own carries (a model, as
    ``/healthz``'s 503 does), rather than FastAPI's empty default or its validation error:
    those are answered as problem+json."""
    content = response.get("content") or {}
    for media_type, entry in content.items():
        schema = entry.get("schema") or {}
        default = media_type == "application/json" and (
            not schema or schema.get("$ref", "").endswith("/HTTPValidationError")
        )
        if not default:
            return True
    return False


def _idempotent(operation: dict[str, Any]) -> None:
    """Declare the ``Idempotency-Key`` header, and its 409s, on a POST operation."""
    parameters = operation.setdefault("parameters", [])
    if not any(p.get("in") == "header" and p.get("name") == HEADER for p in parameters):
        parameters.append(
            {
                "name": HEADER,
                "in": "header",
                "required": False,
                "description": "Retries with the same key and body within 24 hours get the "
                "first answer and act only once",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
            }
        )
    responses = operation.setdefault("responses", {})
    responses.setdefault("400", {"description": "invalid_idempotency_key, or a refusal"})
    responses.setdefault(
        "409",
        {
            "description": "idempotency_key_reused (another request used this key) or "
            "idempotency_key_in_flight (the first is still running)"
        },
    )
