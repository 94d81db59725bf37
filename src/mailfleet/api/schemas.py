"""The shapes of request and response bodies shared by the routes."""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["After", "Body", "Limit", "Page", "ProblemBody", "page"]

T = TypeVar("T")


class Body(BaseModel):
    """A request body: unknown fields are refused (422 naming the field), and so is a NUL
    character anywhere in a field's value (PostgreSQL stores none, in text or JSON)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("must not contain NUL characters (\\u0000)")
        return value


def _has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character, in a string or a key, at any depth."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(map(_has_nul, value))
    return False


class Page(BaseModel, Generic[T]):
    """One page of a list: its items, and the cursor that continues after them
    (``None`` on the last page)."""

    items: list[T]
    next_cursor: str | None = Field(
        None, description="pass as `after` for the next page; null on the last page"
    )


class FieldError(BaseModel):
    """One field a request got wrong."""

    field: str
    message: str


class ProblemBody(BaseModel):
    """An RFC 9457 problem document; ``code`` is stable, for programs to branch on."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None = None
    errors: list[FieldError] | None = None


def page(items: list[T], limit: int, cursor_of: Any) -> Page[T]:
    """A page of at most ``limit`` of ``items`` (fetched ``limit + 1`` to know whether
    more follow); ``cursor_of(item)`` is the cursor after an item."""
    more = len(items) > limit
    shown = items[:limit]
    return Page[T](items=shown, next_cursor=str(cursor_of(shown[-1])) if more and shown else None)


Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
"""The ``limit`` query parameter of a list: 1 to 1,000, default 100."""

After = Annotated[
    str | None, Query(description="the `next_cursor` of the previous page", max_length=1000)
]
"""The ``after`` query parameter of a list: an opaque cursor."""
