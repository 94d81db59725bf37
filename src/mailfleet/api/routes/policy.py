"""``/v1/lists`` and ``/v1/rules``: allow and block lists, the rules that use them, a
dry run, and each grant's recorded rule evaluations."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

from ...model.errors import InvalidListItems
from ...model.lists import MAX_ITEMS_PER_CALL, ListItemsResult, PolicyList
from ...model.rules import Action as RuleAction
from ...model.rules import Field as RuleField
from ...model.rules import Rule, RuleEvaluation
from ...runtime.policy import DryRunResult
from ..problems import Problem
from ..schemas import Body, Page, page
from ..tenants import Authorized

router = APIRouter(prefix="/v1", tags=["lists and rules"])

Limit = Annotated[int, Query(ge=1, le=1000, description="at most this many items")]
After = Annotated[str | None, Query(description="the `next_cursor` of the previous page")]
ListId = Annotated[str, Path(description="a list id (or name)", max_length=200)]
RuleId = Annotated[str, Path(description="a rule id", max_length=36)]

_LIST_404: dict[int | str, dict[str, Any]] = {
    404: {"description": "`list_not_found`: no such list in the application"}
}
_RULE_404: dict[int | str, dict[str, Any]] = {
    404: {"description": "`rule_not_found`: no such rule in the application"}
}
_INVALID_RULE: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "`list_not_found` (a condition names a list the application does not "
        "have), `workspace_not_found`"
    },
    422: {"description": "`invalid_input`: `field` names the faulty part (`conditions[1].value`)"},
}

# -- lists ---------------------------------------------------------------------------------


class NewList(Body):
    """A list to create."""

    name: str = Field(min_length=1, max_length=200, examples=["blocked senders"])
    type: Literal["address", "domain", "tld"]


class ListOut(BaseModel):
    """A list: its entries are added and removed through ``/v1/lists/{id}/items``."""

    id: str
    name: str
    type: Literal["address", "domain", "tld"]
    size: int = Field(description="how many entries it holds")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, found: PolicyList) -> ListOut:
        return cls(
            id=found.id,
            name=found.name,
            type=found.type,
            size=found.size,
            created_at=found.created_at,
            updated_at=found.updated_at,
        )


class ListItems(Body):
    """Entries to add or remove: validated and normalised each (case, IDN, trailing dot)."""

    items: list[str] = Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)


class ItemOut(BaseModel):
    """What became of one entry."""

    value: str = Field(description="as given")
    normalized: str
    status: Literal["added", "exists", "duplicate", "removed", "absent"]


class ListItemsOut(BaseModel):
    """One result per entry given, in order, and the list's size after the call."""

    list_id: str
    size: int
    changed: int = Field(description="entries added or removed")
    items: list[ItemOut]

    @classmethod
    def of(cls, result: ListItemsResult) -> ListItemsOut:
        return cls(
            list_id=result.list_id,
            size=result.size,
            changed=result.changed,
            items=[
                ItemOut(value=i.value, normalized=i.normalized, status=i.status)
                for i in result.items
            ],
        )


_ITEMS_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_LIST_404,
    422: {
        "description": "`invalid_list_items`: `errors` has one entry per invalid item "
        "(`field` `items[3]`, `message`, `value`); nothing was applied"
    },
}


@router.post(
    "/lists",
    summary="Create a list",
    status_code=201,
    responses={409: {"description": "`list_exists`"}},
)
async def create_list(body: NewList, caller: Authorized) -> ListOut:
    """An empty list of addresses, domains or top-level domains."""
    return ListOut.of(await caller.fleet.create_list(body.name, body.type))


@router.get("/lists", summary="The application's lists, oldest first")
async def list_lists(caller: Authorized, limit: Limit = 100, after: After = None) -> Page[ListOut]:
    """Page with ``limit`` and ``after``."""
    found = await caller.fleet.lists(limit=limit + 1, after=after)
    return page([ListOut.of(x) for x in found], limit, lambda x: x.id)


@router.get("/lists/{list_id}", summary="One list", responses=_LIST_404)
async def get_list(list_id: ListId, caller: Authorized) -> ListOut:
    """A list by id (or name)."""
    return ListOut.of(await caller.fleet.get_list(list_id))


@router.delete(
    "/lists/{list_id}",
    summary="Delete a list and its entries",
    status_code=204,
    responses={**_LIST_404, 409: {"description": "`list_in_use`: rules still refer to it"}},
)
async def delete_list(list_id: ListId, caller: Authorized) -> Response:
    """Refused while a rule refers to it (change or delete those rules first)."""
    await caller.fleet.delete_list(list_id)
    return Response(status_code=204)


@router.post(
    "/lists/{list_id}/items", summary="Add up to 10,000 entries", responses=_ITEMS_RESPONSES
)
async def add_items(list_id: ListId, body: ListItems, caller: Authorized) -> ListItemsOut:
    """Repeats and entries on the list already are ignored (``duplicate``, ``exists``);
    one invalid entry and nothing is added."""
    try:
        return ListItemsOut.of(await caller.fleet.add_list_items(list_id, body.items))
    except InvalidListItems as exc:
        raise _invalid_items(exc) from None


@router.delete(
    "/lists/{list_id}/items", summary="Remove up to 10,000 entries", responses=_ITEMS_RESPONSES
)
async def remove_items(list_id: ListId, body: ListItems, caller: Authorized) -> ListItemsOut:
    """Entries not on the list are ``absent``; one invalid entry and nothing is removed."""
    try:
        return ListItemsOut.of(await caller.fleet.remove_list_items(list_id, body.items))
    except InvalidListItems as exc:
        raise _invalid_items(exc) from None


def _invalid_items(exc: InvalidListItems) -> Problem:
    errors = [{"field": e.field, "message": e.message, "value": e.value} for e in exc.errors]
    return Problem(
        422,
        "invalid_list_items",
        f"{len(errors):,} invalid entr{'y' if len(errors) == 1 else 'ies'}; nothing was applied",
        field=exc.field,
        errors=errors,
    )


# -- rules ---------------------------------------------------------------------------------


class ConditionIn(Body):
    """``field operator value``; ``in_list`` takes list ids."""

    field: RuleField
    operator: Literal["is", "is_not", "contains", "in_list"]
    value: str | list[str] = Field(examples=["example.net", ["<list id>"], "dmarc=fail"])


class RuleIn(Body):
    """A rule: on ``inbound`` mail or ``outbound`` sends, lower ``priority`` first."""

    name: str = Field(min_length=1, max_length=200)
    trigger: Literal["inbound", "outbound"]
    action: RuleAction
    conditions: list[ConditionIn] = Field(min_length=1, max_length=100)
    match: Literal["all", "any"] = "all"
    priority: int = Field(100, ge=-1_000_000, le=1_000_000)
    folder: str | None = Field(None, description="for assign_folder", max_length=20)
    workspace: str | None = Field(None, description="a workspace name or id; none: every grant")
    enabled: bool = True


class RulePatch(Body):
    """Fields of a rule to change; the whole rule is validated again."""

    name: str | None = Field(None, min_length=1, max_length=200)
    trigger: Literal["inbound", "outbound"] | None = None
    action: RuleAction | None = None
    conditions: list[ConditionIn] | None = Field(None, min_length=1, max_length=100)
    match: Literal["all", "any"] | None = None
    priority: int | None = Field(None, ge=-1_000_000, le=1_000_000)
    folder: str | None = Field(None, max_length=20)
    workspace: str | None = None
    enabled: bool | None = None


class ConditionOut(BaseModel):
    """A stored condition."""

    field: str
    operator: str
    value: str | list[str]


class RuleOut(BaseModel):
    """A stored rule; ``workspace_id`` null: it applies to every grant of the application."""

    id: str
    name: str
    trigger: Literal["inbound", "outbound"]
    action: RuleAction
    conditions: list[ConditionOut]
    match: Literal["all", "any"]
    priority: int
    folder: str | None
    workspace_id: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, rule: Rule) -> RuleOut:
        return cls(
            id=rule.id,
            name=rule.name,
            trigger=rule.trigger,
            action=rule.action,
            conditions=[ConditionOut(**c.as_json()) for c in rule.conditions],
            match=rule.match,
            priority=rule.priority,
            folder=rule.folder,
            workspace_id=rule.workspace_id,
            enabled=rule.enabled,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
        )


class DryRunIn(Body):
    """A rule to try, and whose messages to try it on (a grant or a workspace)."""

    rule: RuleIn
    grant: str | None = Field(None, description="a grant id or address")
    workspace: str | None = Field(None, description="a workspace name or id")
    limit: int = Field(50, ge=1, le=1000, description="the last this many messages")


class DryRunItem(BaseModel):
    """What the rule would have done to one message."""

    message_id: str
    grant_id: str
    sender: str | None
    recipients: list[str]
    subject: str | None
    received_at: datetime
    matched: bool
    action: str | None
    outcome: str = Field(examples=["refused", "folder spam", "marked read", "no match"])

    @classmethod
    def of(cls, result: DryRunResult) -> DryRunItem:
        return cls(
            message_id=result.message_id,
            grant_id=result.grant_id,
            sender=result.sender,
            recipients=list(result.recipients),
            subject=result.subject,
            received_at=result.received_at,
            matched=result.matched,
            action=result.action,
            outcome=result.outcome,
        )


class DryRunOut(BaseModel):
    """One item per message evaluated, newest first."""

    items: list[DryRunItem]


@router.post("/rules", summary="Create a rule", status_code=201, responses=_INVALID_RULE)
async def create_rule(body: RuleIn, caller: Authorized) -> RuleOut:
    """In force on every worker within a second."""
    return RuleOut.of(await caller.fleet.create_rule(body.model_dump()))


@router.get("/rules", summary="The application's rules, oldest first")
async def list_rules(
    caller: Authorized,
    trigger: Literal["inbound", "outbound"] | None = None,
    limit: Limit = 100,
    after: After = None,
) -> Page[RuleOut]:
    """Filter by ``trigger``; page with ``limit`` and ``after``."""
    found = await caller.fleet.rules(trigger=trigger, limit=limit + 1, after=after)
    return page([RuleOut.of(r) for r in found], limit, lambda r: r.id)


@router.post(
    "/rules/dry-run",
    summary="What a rule would do to stored messages",
    responses={
        404: {"description": "`grant_not_found`, `workspace_not_found`, `list_not_found`"},
        422: {"description": "`invalid_input`"},
    },
)
async def dry_run(body: DryRunIn, caller: Authorized) -> DryRunOut:
    """Evaluate ``rule`` (not saved) against the last ``limit`` stored messages of a
    grant or of a workspace (received ones for an inbound rule, sent ones for an
    outbound one), newest first."""
    results = await caller.fleet.dry_run_rule(
        body.rule.model_dump(), grant=body.grant, workspace=body.workspace, limit=body.limit
    )
    return DryRunOut(items=[DryRunItem.of(r) for r in results])


@router.get("/rules/{rule_id}", summary="One rule", responses=_RULE_404)
async def get_rule(rule_id: RuleId, caller: Authorized) -> RuleOut:
    """A rule by id."""
    return RuleOut.of(await caller.fleet.rule(rule_id))


@router.patch("/rules/{rule_id}", summary="Change a rule", responses={**_INVALID_RULE, **_RULE_404})
async def update_rule(rule_id: RuleId, body: RulePatch, caller: Authorized) -> RuleOut:
    """Only the fields given change."""
    changes = body.model_dump(exclude_unset=True)
    return RuleOut.of(await caller.fleet.update_rule(rule_id, changes))


@router.delete("/rules/{rule_id}", summary="Delete a rule", status_code=204, responses=_RULE_404)
async def delete_rule(rule_id: RuleId, caller: Authorized) -> Response:
    """Its recorded evaluations stay."""
    await caller.fleet.delete_rule(rule_id)
    return Response(status_code=204)


# -- evaluations ---------------------------------------------------------------------------


class EvaluationOut(BaseModel):
    """A rule that matched a message of the grant."""

    id: int
    grant_id: str
    rule_id: str
    rule: str
    action: str
    trigger: Literal["inbound", "outbound"]
    message_ref: str | None = Field(
        description="the stored message (inbound), the send's Message-ID (outbound)"
    )
    detail: dict[str, Any]
    created_at: datetime

    @classmethod
    def of(cls, found: RuleEvaluation) -> EvaluationOut:
        return cls(
            id=found.id,
            grant_id=found.grant_id,
            rule_id=found.rule_id,
            rule=found.rule,
            action=found.action,
            trigger=found.trigger,
            message_ref=found.message_ref,
            detail=found.detail,
            created_at=found.created_at,
        )


@router.get(
    "/grants/{grant_id}/rule-evaluations",
    summary="The rule evaluations that matched a grant's mail, oldest first",
    responses={404: {"description": "`grant_not_found`"}},
)
async def rule_evaluations(
    caller: Authorized,
    grant_id: Annotated[str, Path(description="a grant id or address", max_length=320)],
    limit: Limit = 100,
    after: After = None,
) -> Page[EvaluationOut]:
    """Page with ``limit`` and ``after``."""
    cursor = None
    if after is not None:
        if not after.isdigit():
            raise Problem(
                422, "validation_failed", "after: not a cursor of this list", field="after"
            )
        cursor = int(after)
    found = await caller.fleet.rule_evaluations(grant_id, limit=limit + 1, after=cursor)
    return page([EvaluationOut.of(e) for e in found], limit, lambda e: e.id)
