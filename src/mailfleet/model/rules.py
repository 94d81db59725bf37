"""Rules: conditions on a message and what to do with it, and their fast evaluator.

A :class:`RuleSpec` is what a caller writes; a :class:`Rule` is one stored
(with its id). Each has a ``trigger`` (``inbound`` mail arriving, ``outbound``
mail being sent), a ``priority`` (lower first), conditions combined with
``all`` or ``any``, and one ``action``:

==============  ==========================================================
block           inbound: refused at SMTP (``550 5.7.1``), at RCPT when the
                envelope decides it, else at DATA; outbound: ``blocked_by_rule``
mark_spam       inbound: stored in the ``spam`` folder
assign_folder   inbound: stored in ``folder``
mark_read       inbound: stored already read
archive         inbound: stored in the ``archive`` folder
trash           inbound: stored in the ``trash`` folder
==============  ==========================================================

Fields (:data:`FIELDS`): ``sender_address``, ``sender_domain``, ``sender_tld``
(inbound: the envelope sender and the ``From`` address, either may match;
outbound: the grant), ``recipient_address``, ``recipient_domain``
(inbound: the grant; outbound: every recipient, any may match),
``subject``, ``authentication`` (inbound: ``spf=pass``, ``dkim=none``,
``dmarc=fail``...), ``category`` (outbound; ``transactional`` unless the
send names another). Operators: ``is``, ``is_not`` (none of the values is
it), ``contains`` (case-insensitive), ``in_list`` (list ids: an address
list matches addresses, a domain list a domain or any of its parents, a
tld list the last label).

Every rule that matches applies, in priority order: the first folder wins,
``mark_read`` adds to it, and ``block`` ends the evaluation. Rules hold list
ids, never copies: :func:`compile_rules` binds them to the lists' current
sets once per policy version, and :meth:`RuleSet.evaluate` then costs a few
set lookups per condition on facts computed once per message
(:class:`MessageFacts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from .errors import InvalidInput
from .lists import ListType

__all__ = [
    "ACTIONS",
    "ENVELOPE_FIELDS",
    "FIELDS",
    "OPERATORS",
    "Action",
    "Condition",
    "Field",
    "Match",
    "MessageFacts",
    "Operator",
    "Rule",
    "RuleEvaluation",
    "RuleMatch",
    "RuleSet",
    "RuleSpec",
    "Trigger",
    "Verdict",
    "compile_rules",
]

Trigger = Literal["inbound", "outbound"]
Match = Literal["all", "any"]
Operator = Literal["is", "is_not", "contains", "in_list"]
Field = Literal[
    "sender_address",
    "sender_domain",
    "sender_tld",
    "recipient_address",
    "recipient_domain",
    "subject",
    "authentication",
    "category",
]
Action = Literal["block", "mark_spam", "assign_folder", "mark_read", "archive", "trash"]

TRIGGERS: tuple[str, ...] = get_args(Trigger)
MATCHES: tuple[str, ...] = get_args(Match)
OPERATORS: tuple[str, ...] = get_args(Operator)
FIELDS: tuple[str, ...] = get_args(Field)
ACTIONS: tuple[str, ...] = get_args(Action)

ENVELOPE_FIELDS = frozenset(
    {"sender_address", "sender_domain", "sender_tld", "recipient_address", "recipient_domain"}
)
"""Fields known at SMTP RCPT time: a block rule on these alone refuses at RCPT."""

_FOLDERS = {"mark_spam": "spam", "archive": "archive", "trash": "trash"}
_RESERVED_FOLDERS = frozenset({"sent"})
_FOLDER_CHARS = 20  # messages.folder
_AUTH_METHODS = {
    "spf": ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"),
    "dkim": ("pass", "fail", "neutral", "none", "temperror", "permerror"),
    "dmarc": ("pass", "fail", "none", "temperror", "permerror"),
}
# (field, list type) -> the facts attribute the list's entries are compared with
_LIST_TARGETS: dict[tuple[str, str], str] = {
    ("sender_address", "address"): "senders",
    ("sender_address", "domain"): "sender_suffixes",
    ("sender_address", "tld"): "sender_tlds",
    ("sender_domain", "domain"): "sender_suffixes",
    ("sender_domain", "tld"): "sender_tlds",
    ("sender_tld", "tld"): "sender_tlds",
    ("recipient_address", "address"): "recipients",
    ("recipient_address", "domain"): "recipient_suffixes",
    ("recipient_address", "tld"): "recipient_tlds",
    ("recipient_domain", "domain"): "recipient_suffixes",
    ("recipient_domain", "tld"): "recipient_tlds",
}
# single-valued facts: contains is one substring test on the string itself
_SINGLE = {"subjects": "subject", "categories": "category"}
# field -> the facts attribute is / is_not / contains compare with
_VALUE_TARGETS = {
    "sender_address": "senders",
    "sender_domain": "sender_domains",
    "sender_tld": "sender_tlds",
    "recipient_address": "recipients",
    "recipient_domain": "recipient_domains",
    "authentication": "authentication",
    "category": "categories",
    "subject": "subjects",
}


@dataclass(frozen=True, slots=True)
class Condition:
    """``field operator value``: ``value`` is a string, or for ``in_list`` the list ids."""

    field: Field
    operator: Operator
    value: str | tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """The condition as JSON: ``{"field", "operator", "value"}``."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return {"field": self.field, "operator": self.operator, "value": value}

    @property
    def list_ids(self) -> tuple[str, ...]:
        """The lists an ``in_list`` condition refers to (empty for the others)."""
        return self.value if isinstance(self.value, tuple) else ()


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule as written, before it is stored: validated by :meth:`parse`.

    ``workspace`` is a workspace name or id (None: the whole application);
    the store resolves it.
    """

    name: str
    trigger: Trigger
    action: Action
    conditions: tuple[Condition, ...]
    match: Match = "all"
    priority: int = 100
    folder: str | None = None
    workspace: str | None = None
    enabled: bool = True

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> RuleSpec:
        """Validate a JSON object into a rule; :class:`InvalidInput` names the faulty
        field (``conditions[1].operator``...)."""
        if not isinstance(data, Mapping):
            raise InvalidInput("rule", "expected a JSON object", value=data)
        known = {
            "name",
            "trigger",
            "action",
            "conditions",
            "match",
            "priority",
            "folder",
            "workspace",
            "enabled",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInput(unknown[0], "unknown field", value=data[unknown[0]])
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
            raise InvalidInput("name", "a rule needs a name (1 to 200 characters)", value=name)
        trigger = _choice(data.get("trigger"), TRIGGERS, "trigger")
        action = _choice(data.get("action"), ACTIONS, "action")
        match = _choice(data.get("match", "all"), MATCHES, "match")
        priority = data.get("priority", 100)
        if (
            isinstance(priority, bool)
            or not isinstance(priority, int)
            or not (-1_000_000 <= priority <= 1_000_000)
        ):
            raise InvalidInput("priority", "an integer from -1000000 to 1000000", value=priority)
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise InvalidInput("enabled", "expected true or false", value=enabled)
        workspace = data.get("workspace")
        if workspace is not None and (not isinstance(workspace, str) or not workspace.strip()):
            raise InvalidInput("workspace", "a workspace name or id", value=workspace)
        raw_conditions = data.get("conditions")
        if not isinstance(raw_conditions, list | tuple) or not raw_conditions:
            raise InvalidInput("conditions", "at least one condition", value=raw_conditions)
        if len(raw_conditions) > 100:
            raise InvalidInput("conditions", "at most 100 conditions", value=len(raw_conditions))
        conditions = tuple(
            _condition(item, f"conditions[{i}]", trigger) for i, item in enumerate(raw_conditions)
        )
        folder = _folder(data.get("folder"), action)
        if trigger == "outbound" and action != "block":
            raise InvalidInput("action", "an outbound rule can only block", value=action)
        return cls(
            name=name.strip(),
            trigger=trigger,  # type: ignore[arg-type]
            action=action,  # type: ignore[arg-type]
            conditions=conditions,
            match=match,  # type: ignore[arg-type]
            priority=priority,
            folder=folder,
            workspace=None if workspace is None else workspace.strip(),
            enabled=enabled,
        )

    def as_json(self) -> dict[str, Any]:
        """The rule as :meth:`parse` reads it."""
        return {
            "name": self.name,
            "trigger": self.trigger,
            "action": self.action,
            "conditions": [c.as_json() for c in self.conditions],
            "match": self.match,
            "priority": self.priority,
            "folder": self.folder,
            "workspace": self.workspace,
            "enabled": self.enabled,
        }

    @property
    def list_ids(self) -> tuple[str, ...]:
        """Every list its conditions refer to, once each."""
        return tuple(dict.fromkeys(i for c in self.conditions for i in c.list_ids))


@dataclass(frozen=True, slots=True)
class Rule:
    """A stored rule: its id, its definition, where it applies (``workspace_id``, None:
    every grant of the application)."""

    id: str
    name: str
    trigger: Trigger
    action: Action
    conditions: tuple[Condition, ...]
    match: Match
    priority: int
    folder: str | None
    workspace_id: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, spec: RuleSpec, id: str, *, at: datetime, workspace_id: str | None = None) -> Rule:
        """The rule ``spec`` defines, as stored under ``id`` at ``at`` (a dry run's
        trial, a benchmark's rules)."""
        return cls(
            id,
            spec.name,
            spec.trigger,
            spec.action,
            spec.conditions,
            spec.match,
            spec.priority,
            spec.folder,
            workspace_id,
            spec.enabled,
            at,
            at,
        )

    def spec(self) -> RuleSpec:
        """The definition, with the workspace by id."""
        return RuleSpec(
            name=self.name,
            trigger=self.trigger,
            action=self.action,
            conditions=self.conditions,
            match=self.match,
            priority=self.priority,
            folder=self.folder,
            workspace=self.workspace_id,
            enabled=self.enabled,
        )

    @property
    def list_ids(self) -> tuple[str, ...]:
        """Every list its conditions refer to."""
        return self.spec().list_ids

    def as_json(self) -> dict[str, Any]:
        """The stored rule as JSON."""
        data = self.spec().as_json()
        del data["workspace"]
        return {
            "id": self.id,
            **data,
            "workspace_id": self.workspace_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(slots=True)
class MessageFacts:
    """What rules look at, computed once per message: lower-cased, domains split.

    Build it with :meth:`of`. Each field holds every value a condition may match
    (two senders inbound: the envelope's and the ``From`` header's). Treat it as
    immutable (it is not frozen only because a frozen dataclass costs a
    microsecond more to build, per message).
    """

    senders: tuple[str, ...] = ()
    sender_domains: tuple[str, ...] = ()
    sender_suffixes: tuple[str, ...] = ()
    """Each sender domain and its parents (``a.example.com``, ``example.com``, ``com``)."""
    sender_tlds: tuple[str, ...] = ()
    recipients: tuple[str, ...] = ()
    recipient_domains: tuple[str, ...] = ()
    recipient_suffixes: tuple[str, ...] = ()
    recipient_tlds: tuple[str, ...] = ()
    subjects: tuple[str, ...] = ()
    authentication: tuple[str, ...] = ()
    """``spf=pass``, ``dkim=none``, ``dmarc=fail`` (inbound)."""
    categories: tuple[str, ...] = ()
    subject: str = ""
    """The subject in lower case (what ``contains`` searches)."""
    category: str = "transactional"
    envelope_only: bool = False
    """Only the envelope is known (SMTP RCPT): rules on other fields are not decided."""

    @classmethod
    def of(
        cls,
        *,
        senders: Iterable[str | None] = (),
        recipients: Iterable[str | None] = (),
        subject: str | None = None,
        authentication: Mapping[str, str] | None = None,
        category: str | None = None,
        envelope_only: bool = False,
    ) -> MessageFacts:
        """The facts of a message: addresses as given (normalised here), the subject,
        ``{"spf": "pass", "dkim": "none", "dmarc": "fail"}``, the outbound category."""
        sender_list = _addresses(senders)
        recipient_list = _addresses(recipients)
        sender_domains = _domains(sender_list)
        recipient_domains = _domains(recipient_list)
        auth = authentication or {}
        lowered = "" if envelope_only else (subject or "").lower()
        kind = (category or "transactional").lower()
        return cls(
            senders=sender_list,
            sender_domains=sender_domains,
            sender_suffixes=_suffixes(sender_domains),
            sender_tlds=_tlds(sender_domains),
            recipients=recipient_list,
            recipient_domains=recipient_domains,
            recipient_suffixes=_suffixes(recipient_domains),
            recipient_tlds=_tlds(recipient_domains),
            subjects=() if envelope_only else (lowered,),
            authentication=(
                f"spf={auth.get('spf') or 'none'}",
                f"dkim={auth.get('dkim') or 'none'}",
                f"dmarc={auth.get('dmarc') or 'none'}",
            ),
            categories=(kind,),
            subject=lowered,
            category=kind,
            envelope_only=envelope_only,
        )


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """A rule that matched, and its action (with the folder it files into, if any)."""

    rule_id: str
    rule: str
    action: Action
    folder: str | None = None


@dataclass(frozen=True, slots=True)
class RuleEvaluation:
    """A recorded match: a rule that applied to a message of a grant, and when."""

    id: int
    grant_id: str
    rule_id: str
    rule: str
    """The rule's name when it matched."""
    action: Action
    trigger: Trigger
    message_ref: str | None
    """Inbound: the stored message's id (None when refused at SMTP); outbound: the
    Message-ID of the send."""
    detail: dict[str, Any]
    """``stage`` (``rcpt``, ``data``, ``delivery``, ``send``), ``sender``,
    ``recipients``, ``subject``, and ``folder`` when it filed the message."""
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the rules decided for one message."""

    matches: tuple[RuleMatch, ...] = ()
    """Every rule that matched, in the order evaluated (priority)."""
    blocked: RuleMatch | None = None
    """The block rule that refused it, if one did."""
    folder: str | None = None
    """The folder to store it in (None: the default, inbox)."""
    read: bool = False
    """Store it as read."""

    def __bool__(self) -> bool:
        return bool(self.matches)


_NO_VERDICT = Verdict()

_Evaluate = Callable[["MessageFacts"], list[int]]


@dataclass(frozen=True, slots=True)
class _Program:
    """The rules of one trigger and workspace, in order, and their evaluation compiled:
    ``full(facts)`` and ``envelope(facts)`` (the block rules on envelope fields only)
    give the indexes of the rules that matched, up to the first block."""

    rules: tuple[Rule, ...]
    folders: tuple[str | None, ...]
    full: _Evaluate
    envelope: _Evaluate


def _no_hits(facts: MessageFacts) -> list[int]:
    return []


_EMPTY = _Program((), (), _no_hits, _no_hits)


@dataclass(frozen=True)
class RuleSet:
    """Rules bound to the lists' sets, per trigger and workspace, in evaluation order.

    Made by :func:`compile_rules`; immutable, so it is shared by every task and
    thread that evaluates while a newer one is built.
    """

    version: int = 0
    _inbound: Mapping[str | None, _Program] = field(default_factory=dict)
    _outbound: Mapping[str | None, _Program] = field(default_factory=dict)

    def rules(self, trigger: Trigger, workspace_id: str | None) -> tuple[Rule, ...]:
        """The rules evaluated for a grant of ``workspace_id``, in order."""
        return self._for(trigger, workspace_id).rules

    def has(self, trigger: Trigger) -> bool:
        """Whether any enabled rule has this trigger."""
        table = self._inbound if trigger == "inbound" else self._outbound
        return any(program.rules for program in table.values())

    def _for(self, trigger: Trigger, workspace_id: str | None) -> _Program:
        table = self._inbound if trigger == "inbound" else self._outbound
        found = table.get(workspace_id)
        return found if found is not None else table.get(None, _EMPTY)

    def evaluate(self, trigger: Trigger, workspace_id: str | None, facts: MessageFacts) -> Verdict:
        """Apply the rules of ``trigger`` for a grant of ``workspace_id`` to ``facts``.

        With :attr:`MessageFacts.envelope_only`, only block rules on envelope fields
        are evaluated (what SMTP RCPT can decide); the others wait for the message.
        """
        program = self._for(trigger, workspace_id)
        if not program.rules:
            return _NO_VERDICT
        hits = (program.envelope if facts.envelope_only else program.full)(facts)
        if not hits:
            return _NO_VERDICT
        matches: list[RuleMatch] = []
        folder: str | None = None
        read = blocked = False
        for index in hits:
            rule = program.rules[index]
            matches.append(RuleMatch(rule.id, rule.name, rule.action, program.folders[index]))
            if rule.action == "block":
                blocked = True
            elif rule.action == "mark_read":
                read = True
            elif folder is None:
                folder = program.folders[index]
        return Verdict(tuple(matches), matches[-1] if blocked else None, folder, read)


Set_ = set[str] | frozenset[str]
"""A list's entries as the evaluator holds them."""


def compile_rules(
    rules: Iterable[Rule],
    lists: Mapping[str, tuple[ListType, Set_]],
    *,
    version: int = 0,
) -> RuleSet:
    """Bind ``rules`` to ``lists`` (id -> (type, set of normal entries)).

    Disabled rules are left out. A condition naming a list that is not in
    ``lists`` (deleted meanwhile) matches nothing. Each workspace's rules are
    its own plus the application's, by priority, then by creation.

    Each workspace's rules become one Python function (generated source, with
    every value and set bound by name, never written into the source), so
    evaluating them is a run of inline set lookups and comparisons.
    """
    tables: dict[str, dict[str | None, list[Rule]]] = {
        "inbound": {None: []},
        "outbound": {None: []},
    }
    for rule in rules:
        if rule.enabled:
            tables[rule.trigger].setdefault(rule.workspace_id, []).append(rule)
    inbound = {w: _program(r, lists) for w, r in _ordered(tables["inbound"]).items()}
    outbound = {w: _program(r, lists) for w, r in _ordered(tables["outbound"]).items()}
    return RuleSet(version, inbound, outbound)


def _ordered(table: dict[str | None, list[Rule]]) -> dict[str | None, list[Rule]]:
    common = table.get(None, [])

    def key(rule: Rule) -> tuple[int, datetime, str]:
        return (rule.priority, rule.created_at, rule.id)

    ordered: dict[str | None, list[Rule]] = {None: sorted(common, key=key)}
    for workspace_id, own in table.items():
        if workspace_id is not None:
            ordered[workspace_id] = sorted(own + common, key=key)
    return ordered


def _program(rules: list[Rule], lists: Mapping[str, tuple[ListType, Set_]]) -> _Program:
    if not rules:
        return _EMPTY
    names: dict[str, Any] = {}

    def bind(value: Any) -> str:
        name = f"_c{len(names)}"
        names[name] = value
        return name

    tests = [_rule_source(rule, lists, bind) for rule in rules]
    envelope = [
        i
        for i, rule in enumerate(rules)
        if rule.action == "block" and all(c.field in ENVELOPE_FIELDS for c in rule.conditions)
    ]
    folders = tuple(
        rule.folder if rule.action == "assign_folder" else _FOLDERS.get(rule.action)
        for rule in rules
    )
    return _Program(
        tuple(rules),
        folders,
        _function(range(len(rules)), rules, tests, names),
        _function(envelope, rules, tests, names),
    )


def _function(
    indexes: Iterable[int], rules: list[Rule], tests: list[str], names: dict[str, Any]
) -> _Evaluate:
    lines = ["def evaluate(f):", "    hits = []"]
    for i in indexes:
        lines.append(f"    if {tests[i]}:")
        if rules[i].action == "block":
            lines.append(f"        hits.append({i})")
            lines.append("        return hits")
        else:
            lines.append(f"        hits.append({i})")
    lines.append("    return hits")
    namespace = dict(names)
    exec(compile("\n".join(lines), "<mailfleet rules>", "exec"), namespace)
    evaluate: _Evaluate = namespace["evaluate"]
    return evaluate


def _rule_source(
    rule: Rule, lists: Mapping[str, tuple[ListType, Set_]], bind: Callable[[Any], str]
) -> str:
    parts = [_condition_source(c, lists, bind) for c in rule.conditions]
    joiner = " and " if rule.match == "all" else " or "
    return "(" + joiner.join(parts) + ")"


def _condition_source(
    condition: Condition, lists: Mapping[str, tuple[ListType, Set_]], bind: Callable[[Any], str]
) -> str:
    if condition.operator == "in_list":
        tests = []
        for list_id in condition.list_ids:
            found = lists.get(list_id)
            attribute = None if found is None else _LIST_TARGETS.get((condition.field, found[0]))
            if found is not None and attribute is not None:
                tests.append(f"not {bind(found[1])}.isdisjoint(f.{attribute})")
        return "(" + " or ".join(tests) + ")" if tests else "False"
    attribute = _VALUE_TARGETS[condition.field]
    value = bind(condition.value)
    if condition.operator == "is":
        return f"({value} in f.{attribute})"
    if condition.operator == "is_not":
        return f"({value} not in f.{attribute})"
    if attribute in _SINGLE:
        return f"({value} in f.{_SINGLE[attribute]})"
    return f"any({value} in v for v in f.{attribute})"


# -- parsing -----------------------------------------------------------------------------


def _choice(value: object, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise InvalidInput(where, f"must be one of {', '.join(allowed)}", value=value)
    assert isinstance(value, str)
    return value


def _condition(item: object, where: str, trigger: str) -> Condition:
    if isinstance(item, Condition):
        item = item.as_json()
    if not isinstance(item, Mapping):
        raise InvalidInput(where, "expected an object with field, operator and value", value=item)
    unknown = sorted(set(item) - {"field", "operator", "value"})
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", "unknown field", value=item[unknown[0]])
    name = _choice(item.get("field"), FIELDS, f"{where}.field")
    operator = _choice(item.get("operator"), OPERATORS, f"{where}.operator")
    raw = item.get("value")
    if name == "category" and trigger == "inbound":
        raise InvalidInput(f"{where}.field", "category applies to outbound rules", value=name)
    if name == "authentication" and trigger == "outbound":
        raise InvalidInput(f"{where}.field", "authentication applies to inbound rules", value=name)
    if operator == "in_list":
        if name not in ENVELOPE_FIELDS:
            raise InvalidInput(
                f"{where}.operator", f"in_list applies to address and domain fields, not {name}"
            )
        ids = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(ids, list | tuple)
            or not ids
            or not all(isinstance(i, str) and i.strip() for i in ids)
        ):
            raise InvalidInput(
                f"{where}.value", "in_list takes a list id, or a list of them", value=raw
            )
        return Condition(name, "in_list", tuple(dict.fromkeys(i.strip() for i in ids)))  # type: ignore[arg-type]
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{where}.value", f"{operator} takes a non-empty string", value=raw)
    value = _normal_value(name, operator, raw, f"{where}.value")
    return Condition(name, operator, value)  # type: ignore[arg-type]


def _normal_value(name: str, operator: str, raw: str, where: str) -> str:
    text = raw.strip().lower()
    if name in ("sender_domain", "recipient_domain", "sender_tld"):
        text = text.strip(".") if operator != "contains" else text
        text = _ascii_domain(text)
    elif name in ("sender_address", "recipient_address") and "@" in text:
        local, _, domain = text.rpartition("@")
        text = f"{local}@{_ascii_domain(domain.rstrip('.'))}"
    elif name == "authentication" and operator != "contains":
        method, equals, result = text.replace(" ", "").partition("=")
        if not equals or method not in _AUTH_METHODS or result not in _AUTH_METHODS[method]:
            raise InvalidInput(
                where,
                "authentication is METHOD=RESULT: spf, dkim or dmarc, and a result "
                "(e.g. dmarc=fail, spf=softfail, dkim=none)",
                value=raw,
            )
        text = f"{method}={result}"
    return text


def _folder(value: object, action: str) -> str | None:
    if action != "assign_folder":
        if value is not None:
            raise InvalidInput("folder", "only assign_folder takes a folder", value=value)
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("folder", "assign_folder needs a folder name", value=value)
    folder = value.strip().lower()
    if len(folder) > _FOLDER_CHARS or not all(c.isalnum() or c in "-_." for c in folder):
        raise InvalidInput(
            "folder",
            f"a folder name is 1 to {_FOLDER_CHARS} letters, digits, '-', '_' or '.'",
            value=value,
        )
    if folder in _RESERVED_FOLDERS:
        raise InvalidInput("folder", f"{folder!r} is reserved for outbound mail", value=value)
    return folder


# -- facts -------------------------------------------------------------------------------


def _addresses(values: Iterable[str | None]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        if not value:
            continue
        text = value.strip().lower()
        if text[:1] == "<":
            text = text.strip("<>")
        local, at, domain = text.rpartition("@")
        if not at:
            continue
        if not domain.isascii():
            domain = _ascii_domain(domain)
            text = f"{local}@{domain}"
        if domain[-1:] == ".":
            text = f"{local}@{domain.rstrip('.')}"
        if text not in found:
            found.append(text)
    return tuple(found)


def _domains(addresses: tuple[str, ...]) -> tuple[str, ...]:
    if len(addresses) == 1:
        return (addresses[0].rpartition("@")[2],)
    return tuple(dict.fromkeys(a.rpartition("@")[2] for a in addresses))


def _suffixes(domains: tuple[str, ...]) -> tuple[str, ...]:
    found: list[str] = []
    for domain in domains:
        rest = domain
        while rest:
            if rest not in found:
                found.append(rest)
            rest = rest.partition(".")[2]
    return tuple(found)


def _tlds(domains: tuple[str, ...]) -> tuple[str, ...]:
    if len(domains) == 1:
        return (domains[0].rpartition(".")[2],)
    return tuple(dict.fromkeys(d.rpartition(".")[2] for d in domains))


def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        import idna

        return str(idna.encode(domain, uts46=True).decode("ascii"))
    except Exception:  # not a valid IDN: compared as it is (it matches no list entry)
        return domain
