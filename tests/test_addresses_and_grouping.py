"""Address normal form and auto-group pattern resolution (pure, no I/O)."""

from __future__ import annotations

import pytest

from mailfleet import InvalidAddress, InvalidPattern
from mailfleet.model.addresses import normalize_domain, parse_address
from mailfleet.model.grouping import Pattern, PatternTable


def test_addresses_are_lower_cased_and_trimmed() -> None:
    assert str(parse_address("  Agent.One@Example.COM ")) == "agent.one@example.com"


def test_internationalised_domains_use_their_ascii_form() -> None:
    assert parse_address("bob@exämple.com").domain == "xn--exmple-cua.com"


@pytest.mark.parametrize("bad", ["", "nope", "a@b", "two@@example.com", "a b@example.com"])
def test_invalid_addresses_say_why(bad: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        parse_address(bad)
    assert caught.value.field == "address"
    assert repr(bad) in str(caught.value)


def test_non_string_address_is_refused() -> None:
    with pytest.raises(InvalidAddress, match="must be a string"):
        parse_address(42)  # type: ignore[arg-type]


def test_domains_normalise() -> None:
    assert normalize_domain("Example.COM.") == "example.com"
    with pytest.raises(ValueError, match="domain"):
        normalize_domain("user@example.com")


def test_pattern_forms() -> None:
    assert str(Pattern.parse("*.Example.com")) == "*.example.com"
    assert str(Pattern.parse("example.com")) == "example.com"
    for bad in ["a.*.com", "*", "**.example.com", "*example.com", ""]:
        with pytest.raises(InvalidPattern):
            Pattern.parse(bad)


def test_most_specific_pattern_wins() -> None:
    table = PatternTable(
        {
            "*.example.com": "broad",
            "*.eu.example.com": "europe",
            "sales.eu.example.com": "sales",
            "example.com": "apex",
        }
    )
    assert table.resolve("sales.eu.example.com") == "sales"  # exact beats wildcard
    assert table.resolve("paris.eu.example.com") == "europe"  # longer suffix wins
    assert table.resolve("deep.paris.eu.example.com") == "europe"
    assert table.resolve("us.example.com") == "broad"
    assert table.resolve("eu.example.com") == "broad"  # *.eu.x does not match eu.x itself
    assert table.resolve("example.com") == "apex"
    assert table.resolve("example.org") is None
