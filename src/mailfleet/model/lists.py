"""Lists of addresses, domains or top-level domains: their types, and their entries'
normal form.

A list has one :data:`ListType`. Every entry is validated and normalised the
way the fleet compares it (:func:`normalize_entry`): lower case, international
domain names in their ASCII (punycode) form, no trailing dot. Entries are
given in bulk (up to :data:`MAX_ITEMS_PER_CALL` a call); :func:`normalize_entries`
checks them all and says, entry by entry, what each one is, so a caller can
refuse a batch with a precise error per entry before touching anything.

Membership is a set lookup: the runtime holds each list as a Python ``set``
of these normal forms (:mod:`mailfleet.model.rules`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

from .addresses import normalize_domain, parse_address
from .errors import InvalidAddress, InvalidInput

__all__ = [
    "LIST_TYPES",
    "MAX_ITEMS_PER_CALL",
    "EntryError",
    "ItemStatus",
    "ListItemResult",
    "ListItemsResult",
    "ListType",
    "NormalizedEntries",
    "PolicyList",
    "check_list_type",
    "normalize_entries",
    "normalize_entry",
]

ListType = Literal["address", "domain", "tld"]
"""What a list holds: email addresses, domain names, or top-level domains."""

LIST_TYPES: tuple[str, ...] = get_args(ListType)

MAX_ITEMS_PER_CALL = 10_000
"""The most entries one call may add or remove (hosted platforms take 1,000)."""

ItemStatus = Literal["added", "exists", "duplicate", "removed", "absent"]
"""What became of one valid entry: ``added`` (new), ``exists`` (on the list already),
``duplicate`` (given earlier in the same call), ``removed``, ``absent`` (not on it)."""


@dataclass(frozen=True, slots=True)
class PolicyList:
    """A named list of one application."""

    id: str
    name: str
    type: ListType
    size: int
    """How many entries it holds."""
    created_at: datetime
    updated_at: datetime
    revision: int = 1
    """Bumped by every change of its entries (what the runtime's cache compares)."""


@dataclass(frozen=True, slots=True)
class EntryError:
    """Why the entry at ``index`` (0-based, in the order given) is not acceptable."""

    index: int
    value: object
    message: str

    @property
    def field(self) -> str:
        """The entry as a field path: ``items[3]``."""
        return f"items[{self.index}]"


@dataclass(frozen=True, slots=True)
class ListItemResult:
    """One entry of a bulk call: as given, in normal form, and what became of it."""

    value: str
    normalized: str
    status: ItemStatus


@dataclass(frozen=True, slots=True)
class ListItemsResult:
    """The outcome of adding or removing entries: one result per entry given."""

    list_id: str
    items: tuple[ListItemResult, ...]
    size: int
    """The list's size after the call."""

    def count(self, status: ItemStatus) -> int:
        """How many entries ended with ``status``."""
        return sum(1 for item in self.items if item.status == status)

    @property
    def changed(self) -> int:
        """Entries added or removed."""
        return sum(1 for item in self.items if item.status in ("added", "removed"))


@dataclass(frozen=True, slots=True)
class NormalizedEntries:
    """A batch read by :func:`normalize_entries`: for each entry given, its normal form
    (None when invalid), and the errors."""

    given: tuple[str, ...]
    normal: tuple[str | None, ...]
    errors: tuple[EntryError, ...]


def check_list_type(value: object, *, field: str = "type") -> ListType:
    """``value`` as a :data:`ListType`, or :class:`InvalidInput` naming ``field``."""
    if value not in LIST_TYPES:
        raise InvalidInput(field, f"must be one of {', '.join(LIST_TYPES)}", value=value)
    return value  # type: ignore[return-value]


def normalize_entry(list_type: ListType, raw: object, *, field: str = "value") -> str:
    """The normal form of one entry of a list of ``list_type``; :class:`InvalidInput`
    (naming ``field``) when it is not one.

    - ``address``: ``Local@Example.COM`` -> ``local@example.com``; an IDN domain becomes
      punycode;
    - ``domain``: ``Example.COM.`` -> ``example.com``; ``Bücher.de`` -> ``xn--bcher-kva.de``;
    - ``tld``: ``.DE`` or ``de.`` -> ``de``; ``.рф`` -> ``xn--p1ai``.
    """
    if not isinstance(raw, str):
        raise InvalidInput(field, "an entry must be a string", value=raw)
    text = raw.strip()
    if not text:
        raise InvalidInput(field, "an entry cannot be empty", value=raw)
    if list_type == "address":
        try:
            return str(parse_address(text.rstrip("."), field=field))
        except InvalidAddress as exc:
            raise InvalidInput(field, exc.message, value=raw) from None
    if list_type == "domain":
        if "@" in text:
            raise InvalidInput(field, f"{raw!r} is an address, not a domain name", value=raw)
        return normalize_domain(text.lstrip("*").lstrip("."), field=field)
    label = text.strip(".")
    if not label or "." in label or "@" in label:
        raise InvalidInput(field, f"{raw!r} is not a top-level domain (one label)", value=raw)
    try:
        return normalize_domain(f"tld-check.{label}", field=field).rsplit(".", 1)[1]
    except InvalidInput:
        raise InvalidInput(field, f"{raw!r} is not a valid top-level domain", value=raw) from None


def normalize_entries(
    list_type: ListType, raws: Sequence[object] | Iterable[object]
) -> NormalizedEntries:
    """Check every entry (at most :data:`MAX_ITEMS_PER_CALL`): its normal form, or why not.

    More entries than allowed is one :class:`InvalidInput` (``items``).
    """
    given = list(raws)
    if len(given) > MAX_ITEMS_PER_CALL:
        raise InvalidInput(
            "items",
            f"at most {MAX_ITEMS_PER_CALL:,} entries a call ({len(given):,} given)",
            value=len(given),
        )
    if not given:
        raise InvalidInput("items", "give at least one entry", value=0)
    normal: list[str | None] = []
    errors: list[EntryError] = []
    cache: dict[str, str] = {}
    for index, raw in enumerate(given):
        if isinstance(raw, str) and raw in cache:
            normal.append(cache[raw])
            continue
        try:
            value = normalize_entry(list_type, raw, field=f"items[{index}]")
        except InvalidInput as exc:
            normal.append(None)
            errors.append(EntryError(index, raw, exc.message))
            continue
        assert isinstance(raw, str)
        cache[raw] = value
        normal.append(value)
    shown = tuple(raw if isinstance(raw, str) else repr(raw) for raw in given)
    return NormalizedEntries(shown, tuple(normal), tuple(errors))
