"""Lists and rules at run time: the compiled cache, its reloads, and where rules act.

:class:`PolicyRules` is one per open fleet. It keeps the application's rules
compiled against its lists' entries (:class:`~mailfleet.model.rules.RuleSet`,
lists as Python sets), built once per policy version:

- a change made through this fleet reloads it before the call returns;
- a change made elsewhere (another worker, the CLI, the HTTP API) is found by
  a version check every :data:`CHECK_INTERVAL` seconds, and on PostgreSQL at
  once: every change sends ``NOTIFY mailfleet_policy`` and :meth:`run` listens
  on a connection of its own. Only lists whose revision moved are read again,
  and only lists some rule refers to are held at all.

Where the rules act:

- **SMTP RCPT** (:meth:`screen_recipient`): block rules on envelope fields
  only (sender, recipient) refuse the recipient, ``550 5.7.1``;
- **delivery** (:meth:`screen_deliveries`, in the intake's transaction, for
  the MX's DATA and every other source): the other rules, with the ``From``
  address, the subject and the authentication results; a block is
  :class:`~mailfleet.MessageBlocked` (the MX answers ``550 5.7.1``), the
  others file the message (``folder``, ``read``);
- **send** (:meth:`outbound_rule`, the outbox's rules gate): ``blocked_by_rule``.

Every match is recorded for its grant (``rule_evaluations``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
from anyio.abc import TaskStatus

from ..model.errors import InvalidInput, InvalidListItems, ListInUse, MessageBlocked
from ..model.lists import (
    ListItemResult,
    ListItemsResult,
    ListType,
    PolicyList,
    check_list_type,
    normalize_entries,
)
from ..model.outbound import OutgoingMail
from ..model.rules import (
    MessageFacts,
    Rule,
    RuleEvaluation,
    RuleSet,
    RuleSpec,
    Verdict,
    compile_rules,
)
from ..store import grants
from ..store import lists as store_lists
from ..store import rules as store_rules
from ..store.outage import Outage
from ..store.rules import NewEvaluation, StoredMail
from ..store.scope import Scope, Tx
from ..store.tables import utcnow

if TYPE_CHECKING:
    from ..model.authentication import Authentication
    from ..model.messages import MessageHeaders
    from ..model.records import Grant

__all__ = ["CHECK_INTERVAL", "DryRunResult", "InboundItem", "PolicyRules", "Screened"]

log = logging.getLogger("mailfleet.policy")

T = TypeVar("T")

CHECK_INTERVAL = 0.5
"""Seconds between two version checks: a change made elsewhere is in force within it
(at once on PostgreSQL, through LISTEN/NOTIFY)."""

REFUSED = "550 5.7.1 Message refused by policy"


@dataclass(frozen=True, slots=True)
class DryRunResult:
    """What a rule would have done to one stored message."""

    message_id: str
    grant_id: str
    sender: str | None
    recipients: tuple[str, ...]
    subject: str | None
    received_at: Any
    matched: bool
    action: str | None
    """The rule's action when it matched, else None."""
    outcome: str
    """In words: ``refused``, ``blocked_by_rule``, ``folder spam``, ``marked read``,
    ``folder archive``... or ``no match``."""


@dataclass(frozen=True, slots=True)
class InboundItem:
    """A delivery the intake asks about: for which grant, and what it read."""

    grant_id: str
    headers: MessageHeaders
    authentication: Authentication | None
    mail_from: str | None


@dataclass(frozen=True, slots=True)
class Screened:
    """The verdict on one delivery, and what to record once it is stored."""

    verdict: Verdict
    evaluations: tuple[NewEvaluation, ...]

    def refusal(self) -> MessageBlocked | None:
        """The error of a blocked delivery, else None."""
        hit = self.verdict.blocked
        return None if hit is None else MessageBlocked(hit.rule_id, hit.rule)


_NOTHING = Screened(Verdict(), ())


class PolicyRules:
    """The application's lists and rules: administration, the compiled cache, evaluation."""

    def __init__(self, scope: Scope, *, check_interval: float | None = None) -> None:
        self._scope = scope
        self._check_interval = CHECK_INTERVAL if check_interval is None else check_interval
        self._ruleset = RuleSet()
        self._loaded = False
        self._checked_at = 0.0
        # list id -> (revision, type, entries) of the lists rules refer to
        self._sets: dict[str, tuple[int, ListType, set[str]]] = {}
        self._lock = anyio.Lock()

    # -- the cache -------------------------------------------------------------------------

    @property
    def ruleset(self) -> RuleSet:
        """The compiled rules now in force in this process."""
        return self._ruleset

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the rules, then keep them current until cancelled: a version check every
        ``check_interval`` seconds, and on PostgreSQL a LISTEN for changes."""
        await self.refresh()
        task_status.started()
        async with anyio.create_task_group() as tg:
            if not self._scope.database.is_sqlite:
                tg.start_soon(self._listen)
            outage = Outage("reloading the lists and rules", log)
            while True:
                await anyio.sleep(self._check_interval)
                try:
                    await self.refresh()
                except Exception as exc:  # the store may be away: keep the rules we have
                    outage.failed(exc)
                else:
                    outage.succeeded()

    async def _listen(self) -> None:
        """LISTEN for changes of this application's policy; reload at each one."""
        import psycopg
        from sqlalchemy.engine import make_url

        url = make_url(self._scope.database.url).set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        delay = 1.0
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                await conn.execute(f"LISTEN {store_rules.CHANNEL}")
                delay = 1.0
                await self.refresh()  # a change may have come before the LISTEN
                async with aclosing(conn.notifies()) as notices:
                    async for notice in notices:
                        if notice.payload == self._scope.application_id:
                            await self.refresh()
            except Exception as exc:
                log.warning(
                    "listening for policy changes failed (%s); retrying in %.0fs", exc, delay
                )
            finally:
                if conn is not None:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
            await anyio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def refresh(self) -> RuleSet:
        """Reload the rules if the application's policy version moved; the rules in force."""
        async with self._lock:
            current = await self._scope.read(store_rules.policy_version)
            if self._loaded and current == self._ruleset.version:
                self._checked_at = time.monotonic()
                return self._ruleset
            held = {k: v[0] for k, v in self._sets.items()}

            def load(
                tx: Tx,
            ) -> tuple[int, list[Rule], dict[str, tuple[ListType, int]], dict[str, set[str]]]:
                version = store_rules.policy_version(tx)
                rules = store_rules.all_rules(tx)
                revisions = store_lists.list_revisions(tx)
                wanted = {i for rule in rules if rule.enabled for i in rule.list_ids}
                stale = [i for i in wanted if i in revisions and held.get(i) != revisions[i][1]]
                return version, rules, revisions, store_lists.load_entries(tx, stale)

            version, rules, revisions, loaded = await self._scope.read(load)
            wanted = {i for rule in rules if rule.enabled for i in rule.list_ids}
            sets: dict[str, tuple[int, ListType, set[str]]] = {}
            for list_id in wanted:
                if list_id not in revisions:
                    continue
                list_type, revision = revisions[list_id]
                if list_id in loaded:
                    sets[list_id] = (revision, list_type, loaded[list_id])
                elif list_id in self._sets:
                    sets[list_id] = self._sets[list_id]
            self._sets = sets
            self._ruleset = compile_rules(
                rules, {k: (v[1], v[2]) for k, v in sets.items()}, version=version
            )
            self._loaded = True
            self._checked_at = time.monotonic()
            log.debug("policy version %d: %d rules, %d lists held", version, len(rules), len(sets))
            return self._ruleset

    # -- lists -----------------------------------------------------------------------------

    async def create_list(self, name: str, type: str) -> PolicyList:
        """Create an empty list of ``type`` (``address``, ``domain`` or ``tld``)."""
        clean = _name(name)
        list_type = check_list_type(type)
        return await self._change(lambda tx: store_lists.create_list(tx, clean, list_type))

    async def lists(self, *, limit: int | None = 100, after: str | None = None) -> list[PolicyList]:
        """The application's lists, oldest first (after the list id ``after``)."""
        return await self._scope.read(
            lambda tx: store_lists.list_lists(tx, limit=limit, after=after)
        )

    async def get_list(self, key: str) -> PolicyList:
        """A list by id or name; :class:`~mailfleet.model.errors.ListNotFound` otherwise."""
        return await self._scope.read(lambda tx: store_lists.get_list(tx, key))

    async def list_items(
        self, key: str, *, limit: int | None = 100, after: str | None = None
    ) -> list[str]:
        """A list's entries in order (after the entry ``after``)."""
        return await self._scope.read(
            lambda tx: store_lists.list_entries(tx, key, limit=limit, after=after)
        )

    async def delete_list(self, key: str) -> None:
        """Delete a list and its entries; :class:`~mailfleet.model.errors.ListInUse` while
        rules refer to it."""

        def delete(tx: Tx) -> None:
            found = store_lists.get_list(tx, key, for_update=True)
            referring = store_rules.rules_referring(tx, found.id)
            if referring:
                raise ListInUse(
                    "list",
                    f"rules still refer to list {found.name!r}: {', '.join(referring)} "
                    "(change or delete them first)",
                    rules=referring,
                )
            store_lists.delete_list(tx, found.id)

        await self._change(delete)

    async def add_list_items(self, key: str, items: Sequence[str]) -> ListItemsResult:
        """Add up to 10,000 entries at once: each is normalised; repeats and entries on the
        list already are ignored; one invalid entry and nothing is added
        (:class:`~mailfleet.model.errors.InvalidListItems`, an error per entry)."""
        return await self._items(key, items, adding=True)

    async def remove_list_items(self, key: str, items: Sequence[str]) -> ListItemsResult:
        """Remove up to 10,000 entries at once (normalised as when added); entries not on
        the list are reported ``absent``; one invalid entry and nothing is removed."""
        return await self._items(key, items, adding=False)

    async def _items(self, key: str, items: Sequence[str], *, adding: bool) -> ListItemsResult:
        if isinstance(items, str):
            items = [items]
        found = await self.get_list(key)
        checked = normalize_entries(found.type, items)
        if checked.errors:
            raise InvalidListItems(checked.errors)
        normal = [n for n in checked.normal if n is not None]
        distinct = list(dict.fromkeys(normal))
        change = store_lists.add_entries if adding else store_lists.remove_entries
        present, size = await self._change(lambda tx: change(tx, found.id, distinct))
        results: list[ListItemResult] = []
        seen: set[str] = set()
        for given, value in zip(checked.given, normal, strict=True):
            if value in seen:
                status: Literal["added", "exists", "duplicate", "removed", "absent"] = "duplicate"
            elif adding:
                status = "exists" if value in present else "added"
            else:
                status = "removed" if value in present else "absent"
            seen.add(value)
            results.append(ListItemResult(given, value, status))
        return ListItemsResult(found.id, tuple(results), size)

    # -- rules -----------------------------------------------------------------------------

    async def create_rule(self, rule: RuleSpec | Mapping[str, Any]) -> Rule:
        """Validate and store a rule; in force in this process when it returns."""
        spec = _spec(rule)
        return await self._change(lambda tx: store_rules.create_rule(tx, spec))

    async def rules(
        self,
        *,
        trigger: str | None = None,
        workspace: str | None = None,
        limit: int | None = 100,
        after: str | None = None,
    ) -> list[Rule]:
        """The application's rules, oldest first (after the rule id ``after``)."""
        return await self._scope.read(
            lambda tx: store_rules.list_rules(
                tx, trigger=trigger, workspace=workspace, limit=limit, after=after
            )
        )

    async def rule(self, rule_id: str) -> Rule:
        """A rule by id; :class:`~mailfleet.model.errors.RuleNotFound` otherwise."""
        return await self._scope.read(lambda tx: store_rules.get_rule(tx, rule_id))

    async def update_rule(self, rule_id: str, changes: Mapping[str, Any]) -> Rule:
        """Change some fields of a rule (``{"priority": 5}``); the whole rule is validated."""
        if not isinstance(changes, Mapping):
            raise InvalidInput("changes", "expected a JSON object", value=changes)

        def update(tx: Tx) -> Rule:
            current = store_rules.get_rule(tx, rule_id).spec().as_json()
            spec = RuleSpec.parse({**current, **changes})
            return store_rules.update_rule(tx, rule_id, spec)

        return await self._change(update)

    async def delete_rule(self, rule_id: str) -> None:
        """Delete a rule; its recorded evaluations stay."""
        await self._change(lambda tx: store_rules.delete_rule(tx, rule_id))

    async def rule_evaluations(
        self, grant: str, *, limit: int | None = 100, after: int | None = None
    ) -> list[RuleEvaluation]:
        """A grant's (id or address) recorded rule matches, oldest first."""

        def read(tx: Tx) -> list[RuleEvaluation]:
            found = grants.get_grant(tx, grant)
            return store_rules.evaluations(tx, found.id, limit=limit, after=after)

        return await self._scope.read(read)

    async def dry_run_rule(
        self,
        rule: RuleSpec | Mapping[str, Any],
        *,
        grant: str | None = None,
        workspace: str | None = None,
        limit: int = 50,
    ) -> list[DryRunResult]:
        """What ``rule`` (not saved) would have done to the last ``limit`` stored messages
        of a grant (id or address) or of a workspace: inbound messages for an inbound
        rule, sent ones for an outbound rule; newest first."""
        spec = _spec(rule)
        if (grant is None) == (workspace is None):
            raise InvalidInput("grant", "give a grant or a workspace (one of them)")
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit", "from 1 to 1000", value=limit)
        held = {k: v for k, v in self._sets.items()}

        def read(tx: Tx) -> tuple[list[StoredMail], dict[str, tuple[ListType, set[str]]]]:
            store_rules.check_spec(tx, spec)
            grant_id = None if grant is None else grants.get_grant(tx, grant).id
            messages = store_rules.recent_messages(
                tx,
                direction="in" if spec.trigger == "inbound" else "out",
                grant=grant_id,
                workspace=workspace,
                limit=limit,
            )
            revisions = store_lists.list_revisions(tx)
            fresh = [i for i in spec.list_ids if held.get(i, (None,))[0] != revisions[i][1]]
            loaded = store_lists.load_entries(tx, fresh)
            sets = {
                i: (revisions[i][0], loaded[i] if i in loaded else held[i][2])
                for i in spec.list_ids
            }
            return messages, sets

        messages, sets = await self._scope.read(read)
        now = utcnow()
        trial = Rule.of(spec, "dry-run", at=now)
        compiled = compile_rules([trial], sets)
        results = []
        for message in messages:
            verdict = compiled.evaluate(spec.trigger, None, _stored_facts(message))
            results.append(
                DryRunResult(
                    message_id=message.id,
                    grant_id=message.grant_id,
                    sender=message.sender,
                    recipients=message.recipients,
                    subject=message.subject,
                    received_at=message.created_at,
                    matched=bool(verdict),
                    action=spec.action if verdict else None,
                    outcome=_outcome(spec, verdict),
                )
            )
        return results

    async def _change(self, work: Callable[[Tx], T]) -> T:
        """Run a change in one write transaction, then reload the rules here."""
        result = await self._scope.write(work)
        await self.refresh()
        return result

    # -- evaluation ------------------------------------------------------------------------

    async def screen_recipient(self, grant: Grant, mail_from: str) -> str | None:
        """At SMTP RCPT: the refusal when a block rule on envelope fields matches
        (recorded for the grant), else None."""
        ruleset = self._ruleset
        if not ruleset.has("inbound"):
            return None
        facts = MessageFacts.of(
            senders=(mail_from,), recipients=(grant.address,), envelope_only=True
        )
        verdict = ruleset.evaluate("inbound", grant.workspace_id, facts)
        if verdict.blocked is None:
            return None
        found = _evaluations(
            verdict,
            grant.id,
            "inbound",
            None,
            {"stage": "rcpt", "sender": mail_from, "recipients": [grant.address]},
        )
        await self._scope.write(lambda tx: store_rules.record_evaluations(tx, found))
        log.info(
            "refused mail from %s to %s at RCPT: rule %s",
            mail_from or "<>",
            grant.address,
            verdict.blocked.rule_id,
            extra={"grant_id": grant.id, "rule_id": verdict.blocked.rule_id},
        )
        return f"550 5.7.1 <{grant.address}>: message refused by policy"

    def screen_deliveries(self, tx: Tx, items: Sequence[InboundItem]) -> list[Screened]:
        """In the intake's transaction: each delivery's verdict (and what to record)."""
        ruleset = self._ruleset
        if not items or not ruleset.has("inbound"):
            return [_NOTHING] * len(items)
        where = store_rules.grant_workspaces(tx, (i.grant_id for i in items))
        screened: list[Screened] = []
        for item in items:
            workspace_id, address = where.get(item.grant_id, (None, ""))
            auth = item.authentication
            facts = MessageFacts.of(
                senders=(item.mail_from, item.headers.sender),
                recipients=(address,),
                subject=item.headers.subject,
                authentication=None
                if auth is None
                else {"spf": auth.spf.result, "dkim": auth.dkim_result, "dmarc": auth.dmarc.result},
            )
            verdict = ruleset.evaluate("inbound", workspace_id, facts)
            if not verdict:
                screened.append(_NOTHING)
                continue
            detail: dict[str, Any] = {
                "stage": "data" if item.mail_from is not None else "delivery",
                "sender": item.mail_from if item.mail_from is not None else item.headers.sender,
                "recipients": [address],
                "subject": item.headers.subject,
            }
            screened.append(
                Screened(
                    verdict, tuple(_evaluations(verdict, item.grant_id, "inbound", None, detail))
                )
            )
        return screened

    def outbound_rule(self, tx: Tx, mail: OutgoingMail) -> str | None:
        """The outbox's rules gate for stored rules: why a send is blocked (recorded), or
        None. Registered on the outbox with ``Outbox.add_rule``."""
        ruleset = self._ruleset
        if not ruleset.has("outbound"):
            return None
        category = getattr(mail, "category", None) or "transactional"
        facts = MessageFacts.of(
            senders=(mail.sender,),
            recipients=mail.recipients,
            subject=mail.subject,
            category=category,
        )
        verdict = ruleset.evaluate("outbound", mail.workspace_id, facts)
        if verdict.blocked is None:
            return None
        detail = {
            "stage": "send",
            "sender": mail.sender,
            "recipients": list(mail.recipients),
            "subject": mail.subject,
            "category": category,
        }
        ref = getattr(mail, "message_id", None)
        store_rules.record_evaluations(
            tx, _evaluations(verdict, mail.grant_id, "outbound", ref, detail)
        )
        hit = verdict.blocked
        return f"rule {hit.rule!r} ({hit.rule_id})"

    # Last in the class: a member named ``list`` would shadow the builtin in the
    # annotations of every member after it.
    list = get_list


def _evaluations(
    verdict: Verdict, grant_id: str, trigger: str, ref: str | None, detail: dict[str, Any]
) -> list[NewEvaluation]:
    return [
        NewEvaluation(
            grant_id=grant_id,
            rule_id=m.rule_id,
            rule=m.rule,
            action=m.action,
            trigger=trigger,
            message_ref=ref,
            detail={**detail, "folder": m.folder} if m.folder else detail,
        )
        for m in verdict.matches
    ]


def _stored_facts(message: StoredMail) -> MessageFacts:
    if message.direction == "out":
        return MessageFacts.of(
            senders=(message.grant_address,),
            recipients=message.recipients,
            subject=message.subject,
        )
    auth = message.authentication or {}
    dkim = [s.get("result") for s in auth.get("dkim") or [] if isinstance(s, dict)]
    results = None
    if auth:
        results = {
            "spf": str((auth.get("spf") or {}).get("result") or "none"),
            "dkim": "none" if not dkim else ("pass" if "pass" in dkim else str(dkim[0])),
            "dmarc": str((auth.get("dmarc") or {}).get("result") or "none"),
        }
    return MessageFacts.of(
        senders=(message.sender,),
        recipients=(message.grant_address,),
        subject=message.subject,
        authentication=results,
    )


def _outcome(spec: RuleSpec, verdict: Verdict) -> str:
    if not verdict:
        return "no match"
    if spec.action == "block":
        return "refused" if spec.trigger == "inbound" else "blocked_by_rule"
    if spec.action == "mark_read":
        return "marked read"
    return f"folder {verdict.folder}"


def _spec(rule: RuleSpec | Mapping[str, Any]) -> RuleSpec:
    return rule if isinstance(rule, RuleSpec) else RuleSpec.parse(rule)


def _name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name.strip()) > 200:
        raise InvalidInput("name", "a list needs a name (1 to 200 characters)", value=name)
    return name.strip()
