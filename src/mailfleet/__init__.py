"""mailfleet: fleets of AI agents with real email mailboxes.

Everything a user may import is re-exported here; nothing else is public.
"""

from .agent import Agent
from .mail.build import OutgoingAttachment
from .mail.inbound import InboundMessage
from .model.errors import (
    ApplicationNotFound,
    Conflict,
    DefaultWorkspaceProtected,
    DomainNotRegistered,
    GrantNotFound,
    InvalidAddress,
    InvalidAgent,
    InvalidInput,
    InvalidPattern,
    InvalidPolicy,
    MailfleetError,
    NotFound,
    PatternInUse,
    QueueFull,
    StoreUnavailable,
    WorkspaceNotEmpty,
    WorkspaceNotFound,
)
from .model.outbound import SendResult, SendStatus
from .model.policy import Policy, ReputationThresholds, SpamSensitivity
from .model.records import (
    ApiKey,
    Application,
    Domain,
    Event,
    Grant,
    GrantStatus,
    ProvisionOutcome,
    ProvisionResult,
    Workspace,
)
from .runtime.fleet import Fleet
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
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
    "GrantNotFound",
    "GrantStatus",
    "InboundMessage",
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
]
