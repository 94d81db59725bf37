"""The public API is exactly what ``mailfleet.__all__`` names."""

from __future__ import annotations

import mailfleet

EXPECTED = {
    "Agent",
    "ApiKey",
    "Application",
    "ApplicationNotFound",
    "Conflict",
    "DefaultWorkspaceProtected",
    "Domain",
    "DomainNotRegistered",
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
    "MailfleetError",
    "NotFound",
    "OutgoingAttachment",
    "PatternInUse",
    "Policy",
    "ProvisionOutcome",
    "ProvisionResult",
    "QueueFull",
    "ReputationThresholds",
    "SendResult",
    "SendStatus",
    "Settings",
    "SpamSensitivity",
    "StoreUnavailable",
    "Workspace",
    "WorkspaceNotEmpty",
    "WorkspaceNotFound",
    "__version__",
}


def test_all_is_locked() -> None:
    assert set(mailfleet.__all__) == EXPECTED
    for name in mailfleet.__all__:
        assert hasattr(mailfleet, name), name


def test_every_error_derives_from_the_root() -> None:
    errors = [
        getattr(mailfleet, name)
        for name in mailfleet.__all__
        if isinstance(getattr(mailfleet, name), type)
        and issubclass(getattr(mailfleet, name), Exception)
    ]
    assert len(errors) == 17
    assert all(issubclass(error, mailfleet.MailfleetError) for error in errors)
    assert issubclass(mailfleet.InvalidInput, ValueError)
    assert issubclass(mailfleet.NotFound, LookupError)


def test_the_package_is_typed() -> None:
    from importlib.resources import files

    assert files("mailfleet").joinpath("py.typed").is_file()
