"""mailfleet: fleets of AI agents with real email mailboxes.

Everything a user may import is re-exported here; nothing else is public.
Each name is imported on first use (PEP 562), so that importing one part of
mailfleet (the command line, the settings) does not import all of it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import Agent
    from .auth.preflight import PreflightCheck, PreflightReport
    from .mail.build import OutgoingAttachment
    from .mail.inbound import InboundMessage
    from .mail.parse import Attachment, Mailbox, ParsedMessage
    from .mail.reports import FailedRecipient, Report, ReportKind
    from .model.authentication import Authentication, DkimSignatureResult, DmarcCheck, SpfCheck
    from .model.consent import OptIn, OptInStatus, UnsubscribeResult
    from .model.deliverability import (
        Bounce,
        BounceClass,
        BounceReason,
        Complaint,
        Suppression,
        SuppressionReason,
        Unsubscribe,
    )
    from .model.errors import (
        ApplicationNotFound,
        Conflict,
        DatabaseNotFound,
        DefaultWorkspaceProtected,
        DnsError,
        DnsNameNotFound,
        DnsServerFailure,
        DnsTimeout,
        DomainNotRegistered,
        DomainTaken,
        FleetNotOpen,
        GrantNotFound,
        InvalidAddress,
        InvalidAgent,
        InvalidInput,
        InvalidPattern,
        InvalidPolicy,
        InvalidToken,
        ListenFailed,
        MailfleetError,
        MessageBlocked,
        MessageNotFound,
        NotFound,
        PatternInUse,
        QueueFull,
        SigningFailed,
        StoreUnavailable,
        ThreadNotFound,
        TokenExpired,
        WorkspaceExists,
        WorkspaceNotEmpty,
        WorkspaceNotFound,
    )
    from .model.lists import ListItemResult, ListItemsResult, PolicyList
    from .model.messages import MessageRecord, ThreadRecord
    from .model.outbound import SendCategory, SendResult, SendStatus
    from .model.policy import Policy, ReputationThresholds, SpamSensitivity
    from .model.records import (
        ApiKey,
        Application,
        DkimKeyInfo,
        DnsRecord,
        Domain,
        Event,
        Grant,
        GrantStatus,
        ProvisionOutcome,
        ProvisionResult,
        RegroupJob,
        Restriction,
        Workspace,
    )
    from .model.reputation import ReputationLevel, ReputationState
    from .model.rules import Condition, Rule, RuleEvaluation, RuleMatch, RuleSet, RuleSpec, Verdict
    from .model.spam import SpamInput, SpamScorer, SpamSignal, SpamVerdict
    from .runtime.directory import Directory, SuppressionRow
    from .runtime.fleet import Fleet
    from .runtime.mailroom import Mailroom
    from .runtime.policy import DryRunResult, PolicyRules, Screened
    from .runtime.retention import SweepReport
    from .runtime.status import FleetStatistics, Serving
    from .settings import Settings
    from .store.outbound import OutboundView
    from .store.queue import DeadLetter
    from .store.storage import DeletedMessages
    from .store.workers import UnservedGrant

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "Agent": ".agent",
    "PreflightCheck": ".auth.preflight",
    "PreflightReport": ".auth.preflight",
    "OutgoingAttachment": ".mail.build",
    "InboundMessage": ".mail.inbound",
    "Attachment": ".mail.parse",
    "Mailbox": ".mail.parse",
    "ParsedMessage": ".mail.parse",
    "FailedRecipient": ".mail.reports",
    "Report": ".mail.reports",
    "ReportKind": ".mail.reports",
    "Authentication": ".model.authentication",
    "DkimSignatureResult": ".model.authentication",
    "DmarcCheck": ".model.authentication",
    "SpfCheck": ".model.authentication",
    "Bounce": ".model.deliverability",
    "BounceClass": ".model.deliverability",
    "BounceReason": ".model.deliverability",
    "Complaint": ".model.deliverability",
    "Suppression": ".model.deliverability",
    "SuppressionReason": ".model.deliverability",
    "Unsubscribe": ".model.deliverability",
    "OptIn": ".model.consent",
    "OptInStatus": ".model.consent",
    "UnsubscribeResult": ".model.consent",
    "SuppressionRow": ".runtime.directory",
    "ApplicationNotFound": ".model.errors",
    "Conflict": ".model.errors",
    "DatabaseNotFound": ".model.errors",
    "DefaultWorkspaceProtected": ".model.errors",
    "DnsError": ".model.errors",
    "DnsNameNotFound": ".model.errors",
    "DnsServerFailure": ".model.errors",
    "DnsTimeout": ".model.errors",
    "DomainNotRegistered": ".model.errors",
    "DomainTaken": ".model.errors",
    "FleetNotOpen": ".model.errors",
    "GrantNotFound": ".model.errors",
    "InvalidAddress": ".model.errors",
    "InvalidAgent": ".model.errors",
    "InvalidInput": ".model.errors",
    "InvalidPattern": ".model.errors",
    "InvalidPolicy": ".model.errors",
    "InvalidToken": ".model.errors",
    "ListenFailed": ".model.errors",
    "MailfleetError": ".model.errors",
    "MessageNotFound": ".model.errors",
    "ThreadNotFound": ".model.errors",
    "MessageRecord": ".model.messages",
    "ThreadRecord": ".model.messages",
    "MessageBlocked": ".model.errors",
    "Condition": ".model.rules",
    "DryRunResult": ".runtime.policy",
    "ListItemResult": ".model.lists",
    "ListItemsResult": ".model.lists",
    "PolicyList": ".model.lists",
    "PolicyRules": ".runtime.policy",
    "Rule": ".model.rules",
    "RuleEvaluation": ".model.rules",
    "RuleMatch": ".model.rules",
    "RuleSet": ".model.rules",
    "RuleSpec": ".model.rules",
    "Screened": ".runtime.policy",
    "Verdict": ".model.rules",
    "NotFound": ".model.errors",
    "PatternInUse": ".model.errors",
    "QueueFull": ".model.errors",
    "SigningFailed": ".model.errors",
    "StoreUnavailable": ".model.errors",
    "TokenExpired": ".model.errors",
    "WorkspaceExists": ".model.errors",
    "WorkspaceNotEmpty": ".model.errors",
    "WorkspaceNotFound": ".model.errors",
    "SendCategory": ".model.outbound",
    "SendResult": ".model.outbound",
    "SendStatus": ".model.outbound",
    "Policy": ".model.policy",
    "ReputationThresholds": ".model.policy",
    "ReputationLevel": ".model.reputation",
    "ReputationState": ".model.reputation",
    "SpamSensitivity": ".model.policy",
    "SpamInput": ".model.spam",
    "SpamScorer": ".model.spam",
    "SpamSignal": ".model.spam",
    "SpamVerdict": ".model.spam",
    "DeletedMessages": ".store.storage",
    "SweepReport": ".runtime.retention",
    "ApiKey": ".model.records",
    "Application": ".model.records",
    "DkimKeyInfo": ".model.records",
    "DnsRecord": ".model.records",
    "Domain": ".model.records",
    "Event": ".model.records",
    "Grant": ".model.records",
    "GrantStatus": ".model.records",
    "ProvisionOutcome": ".model.records",
    "ProvisionResult": ".model.records",
    "RegroupJob": ".model.records",
    "Restriction": ".model.records",
    "Workspace": ".model.records",
    "Directory": ".runtime.directory",
    "Fleet": ".runtime.fleet",
    "Mailroom": ".runtime.mailroom",
    "FleetStatistics": ".runtime.status",
    "Serving": ".runtime.status",
    "Settings": ".settings",
    "OutboundView": ".store.outbound",
    "DeadLetter": ".store.queue",
    "UnservedGrant": ".store.workers",
}

__all__ = [
    "Agent",
    "ApiKey",
    "Application",
    "ApplicationNotFound",
    "Attachment",
    "Authentication",
    "Bounce",
    "BounceClass",
    "BounceReason",
    "Complaint",
    "Condition",
    "Conflict",
    "DatabaseNotFound",
    "DeadLetter",
    "DefaultWorkspaceProtected",
    "DeletedMessages",
    "Directory",
    "DkimKeyInfo",
    "DkimSignatureResult",
    "DmarcCheck",
    "DnsError",
    "DnsNameNotFound",
    "DnsRecord",
    "DnsServerFailure",
    "DnsTimeout",
    "Domain",
    "DomainNotRegistered",
    "DomainTaken",
    "DryRunResult",
    "Event",
    "FailedRecipient",
    "Fleet",
    "FleetNotOpen",
    "FleetStatistics",
    "Grant",
    "GrantNotFound",
    "GrantStatus",
    "InboundMessage",
    "InvalidAddress",
    "InvalidAgent",
    "InvalidInput",
    "InvalidPattern",
    "InvalidPolicy",
    "InvalidToken",
    "ListItemResult",
    "ListItemsResult",
    "ListenFailed",
    "Mailbox",
    "MailfleetError",
    "Mailroom",
    "MessageBlocked",
    "MessageNotFound",
    "MessageRecord",
    "NotFound",
    "OptIn",
    "OptInStatus",
    "OutboundView",
    "OutgoingAttachment",
    "ParsedMessage",
    "PatternInUse",
    "Policy",
    "PolicyList",
    "PolicyRules",
    "PreflightCheck",
    "PreflightReport",
    "ProvisionOutcome",
    "ProvisionResult",
    "QueueFull",
    "RegroupJob",
    "Report",
    "ReportKind",
    "ReputationLevel",
    "ReputationState",
    "ReputationThresholds",
    "Restriction",
    "Rule",
    "RuleEvaluation",
    "RuleMatch",
    "RuleSet",
    "RuleSpec",
    "Screened",
    "SendCategory",
    "SendResult",
    "SendStatus",
    "Serving",
    "Settings",
    "SigningFailed",
    "SpamInput",
    "SpamScorer",
    "SpamSensitivity",
    "SpamSignal",
    "SpamVerdict",
    "SpfCheck",
    "StoreUnavailable",
    "Suppression",
    "SuppressionReason",
    "SuppressionRow",
    "SweepReport",
    "ThreadNotFound",
    "ThreadRecord",
    "TokenExpired",
    "UnservedGrant",
    "Unsubscribe",
    "UnsubscribeResult",
    "Verdict",
    "Workspace",
    "WorkspaceExists",
    "WorkspaceNotEmpty",
    "WorkspaceNotFound",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
