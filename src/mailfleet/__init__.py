"""mailfleet: fleets of AI agents with real email mailboxes.

Everything a user may import is re-exported here; nothing else is public.
"""

from .agent import Agent
from .mail.build import OutgoingAttachment
from .mail.inbound import InboundMessage
from .mail.parse import Attachment, Mailbox, ParsedMessage
from .model.errors import (
    ApplicationNotFound,
    Conflict,
    DefaultWorkspaceProtected,
    DomainNotRegistered,
    FleetNotOpen,
    GrantNotFound,
    InvalidAddress,
    InvalidAgent,
    InvalidInput,
    InvalidPattern,
    InvalidPolicy,
    ListenFailed,
    MailfleetError,
    NotFound,
    PatternInUse,
    QueueFull,
    SigningFailed,
    StoreUnavailable,
    WorkspaceExists,
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
from .runtime.directory import Directory
from .runtime.fleet import Fleet
from .runtime.mailroom import Mailroom
from .runtime.status import FleetStatistics, Serving
from .settings import Settings
from .store.outbound import OutboundView
from .store.queue import DeadLetter
from .store.workers import UnservedGrant

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "ApiKey",
    "Application",
    "ApplicationNotFound",
    "Attachment",
    "Conflict",
    "DeadLetter",
    "DefaultWorkspaceProtected",
    "Directory",
    "Domain",
    "DomainNotRegistered",
    "Event",
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
    "ListenFailed",
    "Mailbox",
    "MailfleetError",
    "Mailroom",
    "NotFound",
    "OutboundView",
    "OutgoingAttachment",
    "ParsedMessage",
    "PatternInUse",
    "Policy",
    "ProvisionOutcome",
    "ProvisionResult",
    "QueueFull",
    "ReputationThresholds",
    "SendResult",
    "SendStatus",
    "Serving",
    "Settings",
    "SigningFailed",
    "SpamSensitivity",
    "StoreUnavailable",
    "UnservedGrant",
    "Workspace",
    "WorkspaceExists",
    "WorkspaceNotEmpty",
    "WorkspaceNotFound",
    "__version__",
]
