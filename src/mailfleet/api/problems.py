"""Errors as RFC 9457 ``application/problem+json``, each with a stable ``code``.

A route raises :class:`Problem` for an HTTP-level refusal, or lets one of
mailfleet's own exceptions (:mod:`mailfleet.model.errors`) through: the
handlers installed by :func:`install` turn both, request validation errors
and anything unexpected into a problem body. ``code`` is the field clients
branch on; ``title`` and ``detail`` are for people.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from ..model import errors

__all__ = ["PROBLEM_JSON", "Problem", "install", "problem_response"]

log = logging.getLogger("mailfleet.api")

PROBLEM_JSON = "application/problem+json"

# The codes of mailfleet's own exceptions: the most specific class wins.
_CODES: Sequence[tuple[type[Exception], int, str]] = (
    (errors.TokenExpired, 410, "opt_in_expired"),
    (errors.InvalidToken, 404, "invalid_token"),
    (errors.InvalidAddress, 422, "invalid_address"),
    (errors.InvalidPolicy, 422, "invalid_policy"),
    (errors.InvalidPattern, 422, "invalid_pattern"),
    (errors.InvalidListItems, 422, "invalid_list_items"),
    (errors.InvalidInput, 422, "invalid_input"),
    (errors.DomainNotRegistered, 404, "domain_not_found"),
    (errors.WorkspaceNotFound, 404, "workspace_not_found"),
    (errors.GrantNotFound, 404, "grant_not_found"),
    (errors.MessageNotFound, 404, "message_not_found"),
    (errors.ThreadNotFound, 404, "thread_not_found"),
    (errors.ListNotFound, 404, "list_not_found"),
    (errors.RuleNotFound, 404, "rule_not_found"),
    (errors.WebhookNotFound, 404, "webhook_not_found"),
    (errors.NotFound, 404, "not_found"),
    (errors.DomainTaken, 409, "domain_taken"),
    (errors.DefaultWorkspaceProtected, 409, "default_workspace_protected"),
    (errors.PatternInUse, 409, "pattern_in_use"),
    (errors.WorkspaceExists, 409, "workspace_exists"),
    (errors.WorkspaceNotEmpty, 409, "workspace_not_empty"),
    (errors.ListExists, 409, "list_exists"),
    (errors.ListInUse, 409, "list_in_use"),
    (errors.Conflict, 409, "conflict"),
    (errors.QueueFull, 429, "queue_full"),
    (errors.StoreUnavailable, 503, "store_unavailable"),
    (errors.DnsError, 502, "dns_error"),
)

# Codes of the statuses FastAPI and Starlette answer themselves.
_STATUS_CODES: Mapping[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class Problem(Exception):
    """An HTTP refusal: ``status``, a stable ``code``, a ``detail`` for people, and any
    ``extra`` members of the problem body (``field``, ``retry_after``...)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The problem+json document."""
        return {
            "type": f"https://mailfleet.dev/problems/{self.code.replace('_', '-')}",
            "title": _title(self.status),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }


def problem_response(problem: Problem) -> JSONResponse:
    """The response that carries ``problem``."""
    return JSONResponse(
        problem.body(), status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )


def from_error(error: errors.MailfleetError) -> Problem:
    """The problem a mailfleet exception stands for."""
    status, code = next(
        ((status, code) for kind, status, code in _CODES if isinstance(error, kind)),
        (400, "bad_request"),
    )
    field = getattr(error, "field", None)
    message = getattr(error, "message", None) or str(error)
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if field is not None:
        extra["field"] = field
        if status == 422:
            extra["errors"] = [{"field": field, "message": message}]
    if isinstance(error, errors.QueueFull):
        headers["Retry-After"] = "1"
    return Problem(
        status, code, message if field is None else f"{field}: {message}", headers=headers, **extra
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _field(location: Sequence[Any]) -> str:
    # ("body", "policy", "daily_send_quota") -> "policy.daily_send_quota"
    parts = [str(part) for part in location]
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        where, parts = parts[0], parts[1:]
        if where != "body":
            return ".".join(parts) or where
    return ".".join(parts) or "body"


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(exc)


async def _on_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.MailfleetError)
    problem = from_error(exc)
    if problem.status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problem_response(problem)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    found = [
        {"field": _field(error.get("loc", ())), "message": str(error.get("msg", "is invalid"))}
        for error in exc.errors()
    ]
    detail = "; ".join(f"{item['field']}: {item['message']}" for item in found[:5])
    problem = Problem(
        422,
        "validation_failed",
        detail or "the request is invalid",
        errors=found,
        field=found[0]["field"] if found else None,
    )
    return problem_response(problem)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
    return problem_response(Problem(exc.status_code, code, detail, headers=exc.headers))


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return problem_response(Problem(500, "internal_error", "an unexpected error; it was logged"))


class _RefuseNul:
    """Answer 422 to a URL whose path or query holds a NUL character (``%00``), before any
    route sees it: PostgreSQL stores no NUL, and every store lookup would fail on it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = "path" if "\x00" in scope["path"] else None
            if b"%00" in scope["query_string"]:
                where = "query"
            if where is not None:
                refusal = Problem(
                    422,
                    "validation_failed",
                    f"{where}: must not contain NUL characters (%00)",
                    field=where,
                    errors=[{"field": where, "message": "must not contain NUL characters"}],
                )
                await problem_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json (and refuse NUL characters in URLs)."""
    app.add_middleware(_RefuseNul)
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(errors.MailfleetError, _on_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
