"""``Idempotency-Key`` on every POST: a retry gets the first answer, and acts only once.

:class:`IdempotencyMiddleware` is a pure ASGI middleware. For a POST that
carries the header, from a caller whose key is valid, it claims the key for
the caller's application (:mod:`mailfleet.store.idempotency`, a committed
transaction of its own) before the route runs:

- the first request runs; its answer (status, body, the headers that
  matter) is stored before it is sent, and kept ``api_idempotency_ttl``
  seconds (24 hours);
- a retry with the same method, path and body gets that answer again,
  marked ``Idempotent-Replayed: true``, and nothing is done twice;
- the same key on another request is ``409 idempotency_key_reused``;
- a retry while the first is still running is ``409
  idempotency_key_in_flight`` with ``Retry-After``; a request whose process
  died holds the key ``api_idempotency_lock`` seconds, then a retry takes
  over.

Answers that say nothing was done are not kept, so a retry acts again: 5xx,
429 (``rate_limited``: nothing was queued), 401, and ``admin_required``. A
send is also idempotent below this cache: the route hands the key to
``fleet.send``, which stores its digest with the queued message in the same
transaction, so a retry after a crash between the commit and the answer
finds the message (:mod:`mailfleet.runtime.outbox`). Expired keys are swept
once a minute per application, in a claim's transaction.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..store import idempotency
from ..store.idempotency import Claim, ClaimOutcome
from ..store.scope import Scope as StoreScope
from ..store.scope import Tx
from .problems import PROBLEM_JSON, Problem
from .tenants import Caller, Tenants

__all__ = ["HEADER", "IdempotencyMiddleware", "fingerprint"]

log = logging.getLogger("mailfleet.api")

HEADER = "Idempotency-Key"
"""The request header (IETF draft ``draft-ietf-httpapi-idempotency-key-header``)."""

MAX_KEY_LENGTH = 255

_SWEEP_EVERY = 60.0
_NOT_KEPT_CODES = frozenset(
    {"unauthorized", "admin_required", "rate_limited", "queue_full", "store_unavailable"}
)
_DROPPED_HEADERS = frozenset(
    {b"date", b"server", b"content-length", b"connection", b"transfer-encoding", b"set-cookie"}
)


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes two requests the same: method, path, query and body (a JSON body
    compared by its content, whatever its spacing or key order)."""
    try:
        content = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        content = body
    return idempotency.digest(b"\n".join([method.encode(), path.encode(), query, content]))


class IdempotencyMiddleware:
    """Remembers the first answer to each POST's ``Idempotency-Key`` (see the module)."""

    def __init__(self, app: ASGIApp, tenants: Tenants) -> None:
        self.app = app
        self.tenants = tenants
        self._swept: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        raw_key = headers.get(b"idempotency-key")
        if raw_key is None:
            await self.app(scope, receive, send)
            return
        body, replay = await _read_body(receive)
        key = _valid_key(raw_key)
        caller = await self._caller(headers.get(b"authorization"))
        if key is None or caller is None:
            if key is None and caller is not None:
                problem = Problem(
                    400,
                    "invalid_idempotency_key",
                    f"{HEADER}: 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                    field=HEADER,
                )
                await _send_problem(send, problem)
                return
            await self.app(scope, replay, send)  # the route answers 401 itself
            return
        application = caller.application.id
        store = StoreScope(self.tenants.database, application)
        digest = idempotency.digest(key)
        print_ = fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), body)
        settings = self.tenants.settings
        now = time.time()
        sweep = now - self._swept.get(application, 0.0) >= _SWEEP_EVERY
        if sweep:
            self._swept[application] = now

        def take(tx: Tx) -> Claim:
            if sweep:
                idempotency.sweep(tx, now=now)
            return idempotency.claim(
                tx,
                digest,
                print_,
                now=now,
                lock=settings.api_idempotency_lock,
                ttl=settings.api_idempotency_ttl,
            )

        claimed = await store.write(take)
        if claimed.outcome is ClaimOutcome.REPLAY:
            await _send_stored(send, claimed)
            return
        if claimed.outcome is ClaimOutcome.REUSED:
            await _send_problem(
                send,
                Problem(
                    409,
                    "idempotency_key_reused",
                    f"this {HEADER} was used for another request (method, path or body differ)",
                ),
            )
            return
        if claimed.outcome is ClaimOutcome.IN_FLIGHT:
            wait = max(1, math.ceil(min((claimed.locked_until or now) - now, 5.0)))
            await _send_problem(
                send,
                Problem(
                    409,
                    "idempotency_key_in_flight",
                    f"a request with this {HEADER} is still being answered: retry shortly",
                    headers={"Retry-After": str(wait)},
                    retry_after=wait,
                ),
            )
            return
        await self._first(scope, replay, send, store, digest)

    async def _first(
        self, scope: Scope, receive: Receive, send: Send, store: StoreScope, key: str
    ) -> None:
        """Run the request that claimed ``key``; keep its answer, then send it."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            else:  # pragma: no cover - nothing else is sent for a POST
                await send(message)

        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await store.write(lambda tx: idempotency.release(tx, key))
            raise
        if start is None:  # pragma: no cover - the app always answers
            await store.write(lambda tx: idempotency.release(tx, key))
            return
        status = int(start["status"])
        body = b"".join(chunks)
        kept = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in start.get("headers", ())
            if name.lower() not in _DROPPED_HEADERS
        ]
        settings = self.tenants.settings
        if _worth_keeping(status, kept, body):
            await store.write(
                lambda tx: idempotency.complete(
                    tx,
                    key,
                    status=status,
                    headers=kept,
                    body=body,
                    now=time.time(),
                    ttl=settings.api_idempotency_ttl,
                )
            )
        else:
            await store.write(lambda tx: idempotency.release(tx, key))
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _caller(self, authorization: bytes | None) -> Caller | None:
        """The caller of a valid bearer key, or None (the route then answers 401)."""
        if authorization is None:
            return None
        scheme, _, secret = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        try:
            return await self.tenants.authenticate(secret.strip())
        except Problem:
            return None


def _valid_key(raw: bytes) -> str | None:
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        return None
    return key


def _worth_keeping(status: int, headers: list[tuple[str, str]], body: bytes) -> bool:
    """Whether an answer is the request's outcome (kept), not a refusal to act at all."""
    if status >= 500 or status in (401, 408, 429):
        return False
    if any(n.lower() == "content-type" and v.startswith(PROBLEM_JSON) for n, v in headers):
        try:
            code = json.loads(body).get("code")
        except (ValueError, AttributeError):
            return True
        return code not in _NOT_KEPT_CODES
    return True


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a ``receive`` that hands it to the app again."""
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = bool(message.get("more_body", False))
    body = b"".join(chunks)
    given = False

    async def replay() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _send_stored(send: Send, claimed: Claim) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in claimed.headers
    ]
    headers.append((b"content-length", str(len(claimed.body)).encode()))
    headers.append((b"idempotent-replayed", b"true"))
    await send({"type": "http.response.start", "status": claimed.status or 200, "headers": headers})
    await send({"type": "http.response.body", "body": claimed.body, "more_body": False})


async def _send_problem(send: Send, problem: Problem) -> None:
    body = json.dumps(problem.body()).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in problem.headers.items()]
    start: dict[str, Any] = {"type": "http.response.start", "status": problem.status}
    start["headers"] = headers
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
