"""The policy model: defaults, bounds, cross-field rules, errors naming the field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailfleet import InvalidPolicy, Policy, SpamSensitivity


def test_defaults_follow_the_platform_bounds() -> None:
    policy = Policy.parse()
    assert policy.thresholds.bounce_review == 0.05
    assert policy.thresholds.bounce_pause == 0.10
    assert policy.thresholds.complaint_review == 0.001
    assert policy.thresholds.complaint_pause == 0.005
    assert policy.inbox_retention_days > policy.spam_retention_days
    assert policy.spam_sensitivity is SpamSensitivity.MEDIUM
    assert policy.max_message_bytes == 25 * 1024 * 1024  # the most a workspace may take


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"daily_send_quota": -1}, "policy.daily_send_quota"),
        ({"send_rate_per_minute": 0}, "policy.send_rate_per_minute"),
        ({"max_message_bytes": 0}, "policy.max_message_bytes"),
        ({"max_message_bytes": 25 * 1024 * 1024 + 1}, "policy.max_message_bytes"),
        ({"spam_sensitivity": "paranoid"}, "policy.spam_sensitivity"),
        ({"inbox_retention_days": 30, "spam_retention_days": 30}, "policy.inbox_retention_days"),
        ({"inbox_retention_days": 7}, "policy.inbox_retention_days"),
        ({"max_attachment_bytes": 10, "max_message_bytes": 5}, "policy.max_attachment_bytes"),
        ({"thresholds": {"bounce_pause": 0.2}}, "policy.thresholds.bounce_pause"),
        ({"thresholds": {"complaint_pause": 0.01}}, "policy.thresholds.complaint_pause"),
        (
            {"thresholds": {"bounce_review": 0.04, "bounce_pause": 0.03}},
            "policy.thresholds.bounce_review",
        ),
        ({"daily_quota": 5}, "policy.daily_quota"),
    ],
)
def test_bad_values_name_their_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidPolicy) as caught:
        Policy.parse(values)
    assert caught.value.field == field
    assert str(caught.value).startswith(field + ":")
    assert isinstance(caught.value, ValueError)


def test_stricter_thresholds_are_accepted() -> None:
    policy = Policy.parse({"thresholds": {"bounce_review": 0.02, "bounce_pause": 0.04}})
    assert policy.thresholds.bounce_pause == 0.04


def test_update_merges_and_revalidates() -> None:
    policy = Policy.parse({"daily_send_quota": 50})
    updated = policy.updated({"thresholds": {"complaint_pause": 0.003}, "send_burst": 3})
    assert updated.daily_send_quota == 50
    assert updated.send_burst == 3
    assert updated.thresholds.complaint_pause == 0.003
    assert updated.thresholds.bounce_pause == 0.10
    assert policy.send_burst == 10  # the original is untouched
    with pytest.raises(InvalidPolicy, match="spam_retention_days"):
        policy.updated({"spam_retention_days": 400})


def test_policy_is_immutable() -> None:
    policy = Policy.parse()
    with pytest.raises(ValueError, match="frozen"):
        policy.daily_send_quota = 5  # type: ignore[misc]


@given(
    inbox=st.integers(min_value=1, max_value=5000),
    spam=st.integers(min_value=1, max_value=5000),
)
def test_retention_rule_holds_for_any_pair(inbox: int, spam: int) -> None:
    values = {"inbox_retention_days": inbox, "spam_retention_days": spam}
    if inbox > spam:
        assert Policy.parse(values).inbox_retention_days == inbox
    else:
        with pytest.raises(InvalidPolicy):
            Policy.parse(values)


def test_json_round_trip() -> None:
    policy = Policy.parse({"spam_sensitivity": "high", "thresholds": {"bounce_pause": 0.07}})
    assert Policy.parse(policy.to_json()) == policy
