"""The ``Agent`` base class: what application code subclasses.

A subclass declares the mailbox identities it runs as class attributes,
checked when the class is created so that mistakes fail at import time::

    class Helpdesk(Agent):
        addresses = ["help@example.com", "support@example.com"]
        workspace = "triage"

The runtime provisions a grant for each declared address and activates one
instance per grant when work arrives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from .model.addresses import parse_address

__all__ = ["Agent"]


class Agent:
    """Base class of every agent; one instance runs per grant.

    Class attributes:

    ``addresses``
        the addresses this agent runs as (provisioned by ``mailfleet run``);
    ``workspace``
        the workspace its grants are filed into (default: by auto-group
        patterns of the domain, else the default workspace).
    """

    addresses: ClassVar[Sequence[str]] = ()
    workspace: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("addresses", ())
        if isinstance(declared, str):
            raise TypeError(f"{cls.__qualname__}.addresses must be a list of addresses, not a str")
        for index, address in enumerate(declared):
            parse_address(address, field=f"{cls.__qualname__}.addresses[{index}]")

    @classmethod
    def agent_name(cls) -> str:
        """The ``module:QualifiedName`` recorded on this agent's grants."""
        return f"{cls.__module__}:{cls.__qualname__}"
