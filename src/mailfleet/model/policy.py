"""Workspace policy: the limits every grant of a workspace inherits by reference.

A :class:`Policy` is immutable. It is stored once per workspace; a grant's
effective policy is its workspace's, looked up, never copied.
"""

from __future__ import annotations

import re
from enum import StrEnum
from itertools import pairwise
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import InvalidPolicy

__all__ = [
    "PLATFORM_MAX_MESSAGE_BYTES",
    "PLATFORM_THRESHOLDS",
    "SPAM_THRESHOLDS",
    "CircuitBreaker",
    "Policy",
    "RampStep",
    "ReputationThresholds",
    "SpamSensitivity",
    "Warmup",
]

MiB = 1024 * 1024

PLATFORM_MAX_MESSAGE_BYTES = 25 * MiB
"""The largest message any workspace may accept: the default, and its bound.

As with the reputation thresholds, a workspace may be stricter, never looser.
The MX advertises it (EHLO ``SIZE``) and refuses a larger declared size at MAIL.
"""


class _FieldProblem(ValueError):
    """A cross-field check failed; ``field`` is the one to blame."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class SpamSensitivity(StrEnum):
    """How eagerly inbound mail is filed as spam."""

    OFF = "off"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


SPAM_THRESHOLDS: dict[SpamSensitivity, float] = {
    SpamSensitivity.LOW: 8.0,
    SpamSensitivity.MEDIUM: 5.0,
    SpamSensitivity.HIGH: 3.0,
}
"""The spam score from which each sensitivity files mail as spam (higher: more lenient).
``off`` files nothing; a workspace's ``spam_threshold`` replaces the level's number."""

_MEDIA_RANGE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/(?:\*|[a-z0-9][a-z0-9!#$&^_.+-]*)")


class ReputationThresholds(BaseModel):
    """Bounce and complaint rates (fractions, 0.05 = 5 %) that move a grant's state.

    ``*_review`` starts a silent review; ``*_pause`` pauses outbound mail.
    A workspace may be stricter than the platform bounds, never looser.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bounce_review: float = Field(0.05, gt=0, le=1)
    bounce_pause: float = Field(0.10, gt=0, le=1)
    complaint_review: float = Field(0.001, gt=0, le=1)
    complaint_pause: float = Field(0.005, gt=0, le=1)

    @model_validator(mode="after")
    def _within_platform_bounds(self) -> Self:
        for name in type(self).model_fields:
            value = getattr(self, name)
            bound = getattr(PLATFORM_THRESHOLDS, name, value)
            if value > bound:
                raise _FieldProblem(
                    name,
                    f"{value} is looser than the platform bound {bound}; "
                    "a workspace may only be stricter",
                )
        if self.bounce_review >= self.bounce_pause:
            raise _FieldProblem("bounce_review", "must be lower than bounce_pause")
        if self.complaint_review >= self.complaint_pause:
            raise _FieldProblem("complaint_review", "must be lower than complaint_pause")
        return self


# Built before the validator can refer to it: the platform bounds are the defaults.
PLATFORM_THRESHOLDS = ReputationThresholds.model_construct()


class CircuitBreaker(BaseModel):
    """The runtime's own brake, applied before a mail provider's: as a grant's (or its
    domain's) rates near the pause threshold, its outbound slows, then is held.

    ``slow_at`` and ``hold_at`` are fractions of the pause thresholds (0.5: half of
    ``bounce_pause`` or of ``complaint_pause``, whichever is nearer). Slow: one
    message per ``slowdown`` times the sustained send interval. Held: one probe
    per ``probe_interval`` seconds, so the window rolls and the breaker reopens by
    itself once the probes are delivered. Whatever the rates, a message is held
    while it, and every message of its grant still in flight, could bounce the
    grant into its pause.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    slow_at: float = Field(0.5, gt=0, le=1)
    hold_at: float = Field(0.8, gt=0, le=1)
    slowdown: float = Field(4.0, ge=1, description="the sustained interval is multiplied by it")
    probe_interval: float = Field(60.0, gt=0, description="seconds between a held grant's probes")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.slow_at > self.hold_at:
            raise _FieldProblem("slow_at", "cannot exceed hold_at")
        return self


class RampStep(BaseModel):
    """Up to ``within`` seconds after its first send, a sender may have mailed at most
    ``recipients`` distinct recipients in all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    within: float = Field(gt=0, description="seconds since the first send")
    recipients: int = Field(ge=1, description="distinct recipients mailed up to then")


_HOUR, _DAY, _WEEK = 3_600.0, 86_400.0, 604_800.0


def _ramp(*steps: tuple[float, int]) -> tuple[RampStep, ...]:
    return tuple(RampStep(within=within, recipients=recipients) for within, recipients in steps)


class Warmup(BaseModel):
    """The ramps a new grant and a new domain follow: a fleet expanding by thousands of
    identities does not burst from cold addresses and domains. An empty ramp: none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grant: tuple[RampStep, ...] = _ramp((_HOUR, 50), (_DAY, 200), (_WEEK, 1_000))
    domain: tuple[RampStep, ...] = _ramp((_HOUR, 500), (_DAY, 2_000), (_WEEK, 10_000))

    @model_validator(mode="after")
    def _growing(self) -> Self:
        for name in ("grant", "domain"):
            steps: tuple[RampStep, ...] = getattr(self, name)
            for before, after in pairwise(steps):
                if after.within <= before.within or after.recipients < before.recipients:
                    raise _FieldProblem(name, "steps must grow: later and at least as many")
        return self


class Policy(BaseModel):
    """Limits and behaviour shared by every grant of a workspace.

    Defaults follow what hosted agent-mailbox platforms apply. Build one with
    :meth:`Policy.parse` (or ``Policy(**values)``) and derive changed copies
    with :meth:`updated`; both raise :class:`~mailfleet.InvalidPolicy` naming
    the offending field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    daily_send_quota: int = Field(1_000, ge=0, description="messages a grant may send per day")
    send_rate_per_minute: float = Field(60.0, gt=0, description="sustained send rate")
    send_burst: int = Field(10, ge=1, description="messages that may leave at once")
    daily_receive_limit: int = Field(10_000, ge=0, description="messages accepted per day")
    storage_limit_bytes: int = Field(1024 * MiB, ge=0, description="stored mail per grant")
    max_message_bytes: int = Field(
        PLATFORM_MAX_MESSAGE_BYTES,
        gt=0,
        le=PLATFORM_MAX_MESSAGE_BYTES,
        description="largest message accepted (at most the platform's)",
    )
    max_attachments: int = Field(20, ge=0, description="attachments per message")
    max_attachment_bytes: int = Field(20 * MiB, ge=0, description="largest attachment")
    allowed_attachment_types: tuple[str, ...] = Field(
        (),
        description="MIME types attachments may have (type/subtype or type/*); empty: any",
    )
    inbox_retention_days: int = Field(365, ge=1, description="days inbox mail is kept")
    spam_retention_days: int = Field(30, ge=1, description="days spam is kept")
    spam_sensitivity: SpamSensitivity = SpamSensitivity.MEDIUM
    spam_threshold: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="the spam score from which mail is filed as spam, in place of the "
        "sensitivity's (off still files nothing)",
    )
    thresholds: ReputationThresholds = Field(default_factory=ReputationThresholds)
    reputation_window: int = Field(
        1_000, ge=10, le=1_000_000, description="recent sends the bounce and complaint rates span"
    )
    reputation_min_sample: int = Field(
        100, ge=1, description="sends in the window before the rates may change a state"
    )
    send_queue_limit: int = Field(
        100, ge=0, description="sends a grant may have waiting for its rate before rate_limited"
    )
    quota_pacing_from: float = Field(
        0.8,
        gt=0,
        le=1,
        description="share of the daily quota after which the rest is spread over the day",
    )
    breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    warmup: Warmup = Field(default_factory=Warmup)

    @field_validator("allowed_attachment_types", mode="before")
    @classmethod
    def _media_types(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("expected a list of MIME types")
        if not isinstance(value, list | tuple):
            return value
        normal: list[str] = []
        for entry in value:
            if not isinstance(entry, str) or not _MEDIA_RANGE.fullmatch(entry.strip().lower()):
                raise ValueError(f"{entry!r} is not a MIME type (type/subtype or type/*)")
            if (text := entry.strip().lower()) not in normal:
                normal.append(text)
        return tuple(normal)

    @property
    def effective_spam_threshold(self) -> float | None:
        """The score from which inbound mail is spam: ``spam_threshold``, else the
        sensitivity's (:data:`SPAM_THRESHOLDS`); None when the sensitivity is off."""
        if self.spam_sensitivity is SpamSensitivity.OFF:
            return None
        if self.spam_threshold is not None:
            return self.spam_threshold
        return SPAM_THRESHOLDS[self.spam_sensitivity]

    def allows_attachment_type(self, content_type: str) -> bool:
        """Whether an attachment of ``content_type`` may come in (``allowed_attachment_types``)."""
        if not self.allowed_attachment_types:
            return True
        wanted = content_type.strip().lower()
        family = wanted.split("/", 1)[0] + "/*"
        return wanted in self.allowed_attachment_types or family in self.allowed_attachment_types

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.inbox_retention_days <= self.spam_retention_days:
            raise _FieldProblem(
                "inbox_retention_days",
                "must be greater than spam_retention_days "
                f"({self.inbox_retention_days} <= {self.spam_retention_days})",
            )
        if self.max_attachment_bytes > self.max_message_bytes:
            raise _FieldProblem("max_attachment_bytes", "cannot exceed max_message_bytes")
        if self.reputation_min_sample > self.reputation_window:
            raise _FieldProblem("reputation_min_sample", "cannot exceed reputation_window")
        return self

    @classmethod
    def parse(cls, values: dict[str, Any] | None = None) -> Policy:
        """Validate ``values`` into a policy, raising :class:`InvalidPolicy`."""
        try:
            return cls.model_validate(values or {})
        except ValidationError as exc:
            raise _as_invalid_policy(exc) from None

    def updated(self, changes: dict[str, Any]) -> Policy:
        """A copy with ``changes`` applied and the whole policy re-validated.

        A group (``thresholds``, ``breaker``, ``warmup``) may be given partially:
        ``{"thresholds": {"bounce_pause": 0.08}}``.
        """
        merged = self.model_dump(mode="json")
        for key, value in changes.items():
            if key in _GROUPS and isinstance(value, dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        return Policy.parse(merged)

    def to_json(self) -> dict[str, Any]:
        """The policy as plain JSON values."""
        return self.model_dump(mode="json")


_GROUPS = ("thresholds", "breaker", "warmup")


def _as_invalid_policy(exc: ValidationError) -> InvalidPolicy:
    first = exc.errors()[0]
    parts = [str(part) for part in first["loc"]]
    problem = first.get("ctx", {}).get("error")
    if isinstance(problem, _FieldProblem):
        parts.append(problem.field)
    location = ".".join(parts)
    field = f"policy.{location}" if location else "policy"
    message = str(first["msg"]).removeprefix("Value error, ")
    return InvalidPolicy(field, message, value=first.get("input"))
