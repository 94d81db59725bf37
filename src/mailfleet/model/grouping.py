"""Auto-group patterns: which workspace a new grant lands in by its domain.

A pattern is either an exact domain (``support.example.com``) or a wildcard
over its subdomains (``*.example.com``, which does not match ``example.com``
itself). When several match, the most specific wins: an exact domain first,
then the wildcard with the longest suffix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .addresses import normalize_domain
from .errors import InvalidPattern

__all__ = ["Pattern", "PatternTable"]


@dataclass(frozen=True, slots=True)
class Pattern:
    """A validated auto-group pattern."""

    suffix: str
    wildcard: bool

    @classmethod
    def parse(cls, raw: str, *, field: str = "patterns") -> Pattern:
        """Parse ``domain`` or ``*.domain``; raise :class:`InvalidPattern` otherwise."""
        text = raw.strip().lower() if isinstance(raw, str) else ""
        wildcard = text.startswith("*.")
        body = text[2:] if wildcard else text
        if "*" in body:
            raise InvalidPattern(
                field, f"{raw!r}: only a leading '*.' wildcard is allowed", value=raw
            )
        try:
            suffix = normalize_domain(body, field=field)
        except InvalidPattern:
            raise
        except ValueError:
            raise InvalidPattern(
                field, f"{raw!r} is neither 'domain' nor '*.domain'", value=raw
            ) from None
        return cls(suffix, wildcard)

    def __str__(self) -> str:
        return f"*.{self.suffix}" if self.wildcard else self.suffix

    def matches(self, domain: str) -> bool:
        """Whether ``domain`` (normal form) falls under this pattern."""
        if self.wildcard:
            return domain.endswith("." + self.suffix)
        return domain == self.suffix


class PatternTable:
    """All auto-group patterns of an application, resolved in O(labels) per domain."""

    def __init__(self, routes: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._exact: dict[str, str] = {}
        self._wildcard: dict[str, str] = {}
        items = routes.items() if isinstance(routes, Mapping) else routes
        for raw, workspace_id in items:
            pattern = Pattern.parse(raw)
            table = self._wildcard if pattern.wildcard else self._exact
            table[pattern.suffix] = workspace_id

    def resolve(self, domain: str) -> str | None:
        """The workspace id of the most specific pattern matching ``domain``, if any."""
        found = self._exact.get(domain)
        if found is not None:
            return found
        # Walk suffixes from the longest: a.b.example.com -> b.example.com -> example.com
        rest = domain
        while "." in rest:
            rest = rest.split(".", 1)[1]
            found = self._wildcard.get(rest)
            if found is not None:
                return found
        return None
