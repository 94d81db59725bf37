"""The public API is exactly what ``mailfleet.__all__`` names."""

from __future__ import annotations

import collections.abc
import inspect
import typing

import mailfleet

EXPECTED = {
    "Agent",
    "Bounce",
    "BounceClass",
    "BounceReason",
    "Complaint",
    "FailedRecipient",
    "Report",
    "ReportKind",
    "Suppression",
    "SuppressionReason",
    "SuppressionRow",
    "Attachment",
    "Authentication",
    "DkimSignatureResult",
    "DmarcCheck",
    "SpfCheck",
    "DeadLetter",
    "DeletedMessages",
    "SweepReport",
    "SpamInput",
    "SpamScorer",
    "SpamSignal",
    "SpamVerdict",
    "DnsRecord",
    "DkimKeyInfo",
    "ReputationLevel",
    "ReputationState",
    "PreflightCheck",
    "PreflightReport",
    "DnsError",
    "DnsNameNotFound",
    "DnsServerFailure",
    "DnsTimeout",
    "Directory",
    "FleetNotOpen",
    "FleetStatistics",
    "Mailbox",
    "Mailroom",
    "OutboundView",
    "ParsedMessage",
    "Serving",
    "SigningFailed",
    "UnservedGrant",
    "WorkspaceExists",
    "ApiKey",
    "Application",
    "ApplicationNotFound",
    "Conflict",
    "DatabaseNotFound",
    "DefaultWorkspaceProtected",
    "Domain",
    "DomainNotRegistered",
    "DomainTaken",
    "Event",
    "Fleet",
    "Grant",
    "InboundMessage",
    "GrantNotFound",
    "GrantStatus",
    "InvalidAddress",
    "InvalidAgent",
    "InvalidInput",
    "InvalidPattern",
    "InvalidPolicy",
    "ListenFailed",
    "MailfleetError",
    "MessageBlocked",
    "Condition",
    "DryRunResult",
    "ListItemResult",
    "ListItemsResult",
    "PolicyList",
    "PolicyRules",
    "Rule",
    "RuleEvaluation",
    "RuleMatch",
    "RuleSet",
    "RuleSpec",
    "Screened",
    "Verdict",
    "NotFound",
    "OutgoingAttachment",
    "PatternInUse",
    "Policy",
    "ProvisionOutcome",
    "ProvisionResult",
    "QueueFull",
    "RegroupJob",
    "ReputationThresholds",
    "SendCategory",
    "SendResult",
    "SendStatus",
    "InvalidToken",
    "TokenExpired",
    "Unsubscribe",
    "UnsubscribeResult",
    "OptIn",
    "OptInStatus",
    "Settings",
    "SpamSensitivity",
    "StoreUnavailable",
    "Webhook",
    "WebhookAttempt",
    "WebhookBacklog",
    "WebhookDelivery",
    "WebhookSender",
    "WebhookStatistics",
    "WebhookFilter",
    "WebhookNotFound",
    "WebhookStatus",
    "Webhooks",
    "Workspace",
    "MessageNotFound",
    "MessageRecord",
    "Restriction",
    "ThreadNotFound",
    "ThreadRecord",
    "WorkspaceNotEmpty",
    "WorkspaceNotFound",
    "__version__",
}


def test_all_is_locked() -> None:
    assert set(mailfleet.__all__) == EXPECTED
    for name in mailfleet.__all__:
        assert hasattr(mailfleet, name), name


def test_every_public_name_is_imported_on_first_use() -> None:
    """``mailfleet/__init__`` maps each name to its module (PEP 562 ``__getattr__``)."""
    assert set(mailfleet._EXPORTS) | {"__version__"} == set(mailfleet.__all__)
    assert set(mailfleet.__all__) <= set(dir(mailfleet))


def test_every_error_derives_from_the_root() -> None:
    errors = [
        getattr(mailfleet, name)
        for name in mailfleet.__all__
        if isinstance(getattr(mailfleet, name), type)
        and issubclass(getattr(mailfleet, name), Exception)
    ]
    assert len(errors) == 33
    assert all(issubclass(error, mailfleet.MailfleetError) for error in errors)
    assert issubclass(mailfleet.InvalidInput, ValueError)
    assert issubclass(mailfleet.NotFound, LookupError)
    assert issubclass(mailfleet.DnsNameNotFound, LookupError)
    assert issubclass(mailfleet.DnsTimeout, TimeoutError)


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("mailfleet").joinpath("py.typed").is_file()


def _classes_in(hint: object) -> set[type]:
    """The classes a type hint names, through unions and generics."""
    found: set[type] = set()
    origin = typing.get_origin(hint)
    if origin is not None:
        for arg in typing.get_args(hint):
            found |= _classes_in(arg)
        if isinstance(origin, type):
            found.add(origin)
    elif isinstance(hint, type):
        found.add(hint)
    return found


def test_what_public_methods_return_is_public() -> None:
    """Every mailfleet type a public method or property returns can be imported from
    ``mailfleet``: users can annotate their code with it."""
    owners = [
        getattr(mailfleet, name)
        for name in mailfleet.__all__
        if isinstance(getattr(mailfleet, name), type)
    ]
    missing: set[str] = set()
    public = {name: getattr(mailfleet, name) for name in mailfleet.__all__}
    for owner in owners:
        for name, member in inspect.getmembers(owner):
            if name.startswith("_") and name != "__aenter__":
                continue
            function = member.fget if isinstance(member, property) else member
            if not callable(function) or isinstance(function, type):
                continue
            try:
                # Names imported for type checking only resolve as the public API.
                hints = typing.get_type_hints(function, localns=public)
            except (NameError, TypeError):
                continue
            returned = hints.get("return")
            if returned is None:
                continue
            if typing.get_origin(returned) is collections.abc.Coroutine:
                returned = typing.get_args(returned)[-1]
            for cls in _classes_in(returned):
                if cls.__module__.startswith("mailfleet") and cls.__name__ not in mailfleet.__all__:
                    missing.add(f"{owner.__name__}.{name} -> {cls.__module__}.{cls.__name__}")
    assert missing == set()


def test_the_fleet_offers_every_directory_method() -> None:
    """The Fleet is a façade over its Directory: none missing, same documentation."""
    public = [n for n, v in vars(mailfleet.Directory).items() if callable(v) and n[0] != "_"]
    assert public
    for name in public:
        assert getattr(mailfleet.Fleet, name).__doc__ == getattr(mailfleet.Directory, name).__doc__
