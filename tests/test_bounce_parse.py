"""Reading delivery reports: bounces, complaints, auto-replies, notices (pure, no I/O)."""

from __future__ import annotations

import base64
import json
import quopri

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bounce_samples as s
from mailfleet.mail import (
    BounceClass,
    BounceReason,
    FailedRecipient,
    Report,
    ReportKind,
    classify_failure,
    read_report,
)

HARD, SOFT = BounceClass.HARD, BounceClass.SOFT
R = BounceReason


def only(report: Report) -> FailedRecipient:
    assert len(report.recipients) == 1, report
    return report.recipients[0]


def check(
    recipient: FailedRecipient,
    address: str,
    reason: BounceReason,
    klass: BounceClass,
    status: str | None = None,
    reply_code: int | None = None,
) -> None:
    assert recipient.address == address
    assert (recipient.reason, recipient.bounce_class) == (reason, klass), recipient
    assert recipient.status == status
    assert recipient.reply_code == reply_code


# -- RFC 3464 delivery status notifications ---------------------------------------------


@pytest.mark.parametrize("encode", [s.lf, s.crlf])
def test_postfix_dsn(encode: object) -> None:
    report = read_report(encode(s.POSTFIX))  # type: ignore[operator]
    assert report.kind is ReportKind.BOUNCE
    recipient = only(report)
    check(recipient, "nosuchuser@example.com", R.USER_UNKNOWN, HARD, "5.1.1", 550)
    assert recipient.remote_mta == "mx1.example.com"
    assert recipient.diagnostic is not None
    assert recipient.diagnostic.startswith("550 5.1.1 <nosuchuser@example.com>: Recipient address")
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"
    assert report.reporting_mta == "mx.fleet.example"
    assert report.defects == ()


def test_sendmail_dsn_with_rfc822_headers() -> None:
    report = read_report(s.lf(s.SENDMAIL))
    check(only(report), "hans@example.de", R.USER_UNKNOWN, HARD, "5.1.1", 550)
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_office365_ndr() -> None:
    report = read_report(s.crlf(s.OFFICE365))
    assert report.kind is ReportKind.BOUNCE
    check(only(report), "ghost@contoso.com", R.USER_UNKNOWN, HARD, "5.1.10", 550)
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_gmail_dsn() -> None:
    report = read_report(s.crlf(s.GMAIL))
    recipient = only(report)
    check(recipient, "missing.person@gmail.com", R.USER_UNKNOWN, HARD, "5.1.1", None)
    assert recipient.diagnostic is not None
    assert recipient.diagnostic.startswith("The email account that you tried to reach")
    assert report.original_message_id == "orig-1@fleet.example"


def test_hotmail_mailbox_unavailable_is_an_unknown_user() -> None:
    report = read_report(s.lf(s.HOTMAIL))
    check(only(report), "closed.account@hotmail.com", R.USER_UNKNOWN, HARD, "5.5.0", 550)
    assert report.original_message_id == "orig-1@fleet.example"


def test_courier_quota_under_a_generic_status() -> None:
    report = read_report(s.lf(s.COURIER))
    check(only(report), "tooquiet@example.net", R.MAILBOX_FULL, SOFT, "5.0.0", 552)
    assert report.verp_token is None


def test_delayed_dsn_is_a_message_with_delayed_recipients() -> None:
    report = read_report(s.lf(s.DELAY_DSN))
    assert report.kind is ReportKind.MESSAGE
    assert report.recipients == ()
    (delayed,) = report.delayed
    check(delayed, "waiting@example.com", R.NETWORK_ERROR, SOFT, "4.4.1", None)
    assert delayed.action == "delayed"
    assert report.original_message_id == "orig-1@fleet.example"


def _dsn(blocks: str, subject: str = "Delivery Status Notification") -> bytes:
    return s.lf(
        "From: MAILER-DAEMON@mx.example.net\nTo: bounces+abc=def@fleet.example\n"
        f"Subject: {subject}\nMessage-ID: <own@mx.example.net>\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nA report.\n\n"
        "--b\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.example.net\n\n{blocks}\n--b--\n"
    )


def test_mixed_dsn_failed_and_delayed() -> None:
    report = read_report(
        _dsn(
            "Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.2.1\n"
            "Diagnostic-Code: smtp; 550 5.2.1 The email account that you tried to reach is"
            " disabled\n\n"
            "Final-Recipient: rfc822; b@example.com\nAction: delayed\nStatus: 4.2.2\n\n"
            "Final-Recipient: rfc822; c@example.com\nAction: delivered\nStatus: 2.0.0\n"
        )
    )
    assert report.kind is ReportKind.BOUNCE
    check(only(report), "a@example.com", R.MAILBOX_DISABLED, SOFT, "5.2.1", 550)
    assert [r.address for r in report.delayed] == ["b@example.com"]
    assert report.delayed[0].reason is R.MAILBOX_FULL
    assert report.verp_token == "abc=def"


def test_dsn_success_is_delivered() -> None:
    report = read_report(
        _dsn(
            "Final-Recipient: rfc822; a@example.com\nAction: relayed\nStatus: 2.0.0\n",
            "Delivery Status Notification (Success)",
        )
    )
    assert report.kind is ReportKind.DELIVERED
    assert report.recipients == report.delayed == ()


def test_dsn_blocks_not_separated_and_original_recipient_preferred() -> None:
    report = read_report(
        _dsn(
            "Original-Recipient: rfc822;Alias@Example.com\nFinal-Recipient:"
            " rfc822;<real@example.com>\n"
            "Action: failed\nStatus: 5.1.1\n"
            "Final-Recipient: rfc822; second@example.com\nAction: failed\nStatus: 5.1.2\n"
        )
    )
    assert [r.address for r in report.recipients] == ["alias@example.com", "second@example.com"]
    assert report.recipients[1].reason is R.HOST_UNKNOWN


def test_dsn_status_taken_from_the_diagnostic() -> None:
    report = read_report(
        _dsn(
            "Final-Recipient: rfc822; a@example.com\nAction: failed\n"
            "Diagnostic-Code: smtp; 550-5.7.26 Unauthenticated email from fleet.example is not"
            " accepted\n"
        )
    )
    check(only(report), "a@example.com", R.AUTH_FAILURE, SOFT, "5.7.26", 550)


def test_mislabelled_delivery_status_part() -> None:
    raw = s.POSTFIX.replace("Content-Type: message/delivery-status", "Content-Type: text/plain")
    report = read_report(s.lf(raw))
    check(only(report), "nosuchuser@example.com", R.USER_UNKNOWN, HARD, "5.1.1", 550)


def test_dsn_in_multipart_mixed() -> None:
    raw = s.POSTFIX.replace("multipart/report; report-type=delivery-status;", "multipart/mixed;")
    report = read_report(s.lf(raw))
    check(only(report), "nosuchuser@example.com", R.USER_UNKNOWN, HARD, "5.1.1", 550)


def test_dsn_missing_its_delivery_status_part() -> None:
    start = s.POSTFIX.index("--4VtGQn.1717408805/mx.fleet.example\nContent-Description: Delivery")
    end = s.POSTFIX.index("--4VtGQn.1717408805/mx.fleet.example\nContent-Description: Undelivered")
    report = read_report(s.lf(s.POSTFIX[:start] + s.POSTFIX[end:]))
    assert report.kind is ReportKind.BOUNCE
    check(only(report), "nosuchuser@example.com", R.USER_UNKNOWN, HARD, "5.1.1", 550)
    assert any("delivery-status" in defect for defect in report.defects)
    assert report.original_message_id == "orig-1@fleet.example"


def test_global_delivery_status_utf8_address() -> None:
    raw = (
        "From: MAILER-DAEMON@mx.example.net\nTo: agent@fleet.example\nSubject: Undeliverable\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="g"\n\n'
        "--g\nContent-Type: text/plain; charset=utf-8\n\nFailed.\n\n"
        "--g\nContent-Type: message/global-delivery-status\n\n"
        "Reporting-MTA: dns; mx.example.net\n\n"
        "Original-Recipient: utf-8; j\\x{00F6}rg@b\u00fccher.example\n"
        "Final-Recipient: utf-8; jörg@bücher.example\nAction: failed\nStatus: 5.1.1\n--g--\n"
    )
    check(only(read_report(s.lf(raw))), "jörg@bücher.example", R.USER_UNKNOWN, HARD, "5.1.1")


def test_truncated_original() -> None:
    raw = s.POSTFIX[: s.POSTFIX.index("Subject: Your quote\nDate")]
    report = read_report(s.lf(raw))
    check(only(report), "nosuchuser@example.com", R.USER_UNKNOWN, HARD, "5.1.1", 550)
    assert report.original_message_id is None  # cut before its Message-ID
    assert report.verp_token == "T0K3N"
    assert report.defects


# -- the MTAs' own text forms -----------------------------------------------------------


def test_exim() -> None:
    report = read_report(s.lf(s.EXIM))
    assert report.kind is ReportKind.BOUNCE
    recipient = only(report)
    check(recipient, "gone.away@example.org", R.USER_UNKNOWN, HARD, None, 550)
    assert recipient.diagnostic == "550 No Such User Here"
    assert recipient.remote_mta == "mail.example.org"
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_exim_retry_timeout_is_expired() -> None:
    report = read_report(s.crlf(s.EXIM_RETRY))
    check(only(report), "slow@example.net", R.EXPIRED, SOFT)
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_qmail_two_recipients_each_with_its_answer() -> None:
    report = read_report(s.lf(s.QMAIL))
    mario, full = report.recipients
    check(mario, "mario@example.it", R.USER_UNKNOWN, HARD, "5.1.1")
    assert mario.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"
    check(full, "full@example.it", R.MAILBOX_FULL, SOFT, "5.2.2", 552)
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"
    assert report.reporting_mta == "mail.example.it"


def test_gmail_old_text_blocked() -> None:
    report = read_report(s.lf(s.GMAIL_OLD, "iso-8859-1"))
    check(only(report), "someone@example.biz", R.BLOCKED, SOFT, "5.7.1", 550)
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_yahoo() -> None:
    report = read_report(s.lf(s.YAHOO))
    check(only(report), "nobody123@yahoo.com", R.USER_UNKNOWN, HARD, None, 554)
    assert report.original_message_id == "orig-1@fleet.example"


def test_lotus_domino() -> None:
    report = read_report(s.lf(s.LOTUS))
    recipient = only(report)
    check(recipient, "jdoe@example-corp.com", R.USER_UNKNOWN, HARD)
    assert (
        recipient.diagnostic == "User jdoe (jdoe@example-corp.com) not listed in Domino Directory"
    )
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_mimecast_policy() -> None:
    report = read_report(s.lf(s.MIMECAST_BLOCK))
    check(only(report), "buyer@retail.example.co.uk", R.POLICY, SOFT, None, 550)
    assert report.original_message_id == "orig-1@fleet.example"


def test_groupwise_host_not_found() -> None:
    report = read_report(s.lf(s.GROUPWISE))
    check(only(report), "prof.x@gw.example.edu", R.HOST_UNKNOWN, HARD)


def test_base64_utf8_german_body() -> None:
    body = base64.encodebytes(s.GERMAN_BASE64_BODY.encode("utf-8")).decode("ascii")
    raw = (
        "From: Mail Delivery System <mailer-daemon@gmx.net>\nTo: agent@fleet.example\n"
        "Subject: =?utf-8?q?Unzustellbar=3A_Ihr_Angebot?=\nMIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n" + body
    )
    check(only(read_report(s.crlf(raw))), "kunde@example.de", R.USER_UNKNOWN, HARD, "5.1.1", 550)


def test_iso_8859_1_quoted_printable_french_body() -> None:
    text = (
        "Votre message n'a pas pu être remis au destinataire suivant :\n\n"
        "  client@exemple.fr\n  Boîte aux lettres pleine : 452 4.2.2 quota dépassé\n"
    )
    body = quopri.encodestring(text.encode("iso-8859-1")).decode("ascii")
    raw = (
        "From: postmaster@exemple.fr\nTo: agent@fleet.example\nSubject: Non remis : Votre devis\n"
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding:"
        " quoted-printable\n\n" + body
    )
    report = read_report(s.lf(raw))
    assert report.kind is ReportKind.BOUNCE
    check(only(report), "client@exemple.fr", R.MAILBOX_FULL, SOFT, "4.2.2", 452)


def test_wrong_charset_label() -> None:
    raw = s.EXIM.replace("charset=us-ascii", "charset=x-no-such-charset").replace(
        "550 No Such User Here", "550 Benutzer unbekannt - Empfänger"
    )
    report = read_report(raw.encode("utf-8"))
    check(only(report), "gone.away@example.org", R.USER_UNKNOWN, HARD, None, 550)
    assert any("charset" in defect for defect in report.defects)


def test_failed_recipient_is_never_the_verp_address_nor_postmaster() -> None:
    raw = s.lf(
        "From: MAILER-DAEMON@mx.example.net\nTo: bounces+T0K3N@fleet.example\n"
        "Subject: Mail delivery failed\n\n"
        "Your message from bounces+T0K3N@fleet.example could not be delivered to:\n\n"
        "  lost@example.com: 550 5.1.1 unknown user\n\n"
        "Please contact postmaster@mx.example.net or see https://help.example.net/?u=x@example.net\n"
    )
    report = read_report(raw)
    check(only(report), "lost@example.com", R.USER_UNKNOWN, HARD, "5.1.1", 550)


def test_expanded_alias_is_reported() -> None:
    raw = s.lf(
        "From: MAILER-DAEMON@mx.example.net\nTo: agent@fleet.example\n"
        "Subject: Undelivered Mail Returned to Sender\n\n"
        "This is the mail system at host mx.example.net.\n\n"
        "<real@example.net> (expanded from <sales@example.net>): host mx[1.2.3.4] said:\n"
        "    552 5.3.4 Message size exceeds fixed limit (in reply to end of DATA command)\n"
    )
    check(only(read_report(raw)), "sales@example.net", R.MESSAGE_TOO_BIG, SOFT, "5.3.4", 552)


def test_text_bounce_without_address_takes_the_originals_to() -> None:
    raw = s.lf(
        "From: postmaster@example.com\nTo: agent@fleet.example\nSubject: Delivery failure\n"
        'Content-Type: multipart/mixed; boundary="x"\n\n'
        "--x\nContent-Type: text/plain\n\nYour message could not be delivered. 550 Mailbox"
        " unavailable\n"
        f"--x\nContent-Type: message/rfc822\n\n{s.original('who@example.com')}\n--x--\n"
    )
    report = read_report(raw)
    check(only(report), "who@example.com", R.USER_UNKNOWN, HARD, None, 550)
    assert report.defects


# -- delay warnings and successes in text -----------------------------------------------


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        (
            "Warning: message 1sE4Bd-0007Kz-2F delayed 24 hours",
            "This message was created automatically by mail delivery software.\n"
            "A message that you sent has not yet been delivered to one or more of its\n"
            "recipients after more than 24 hours on the queue on mx.example.org.\n\n"
            "  later@example.org\n    Delay reason: SMTP error: 451 4.7.1 Greylisted\n\n"
            "No action is required on your part.",
        ),
        (
            "Warning: could not send message for past 4 hours",
            "    **********************************************\n"
            "    **      THIS IS A WARNING MESSAGE ONLY      **\n"
            "    **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\n"
            "    **********************************************\n\n"
            "The original message was received at Mon, 3 Jun 2024 from fleet.example\n\n"
            "   ----- Transcript of session follows -----\n"
            "<later@example.org>... Deferred: Connection timed out with mx.example.org.\n"
            "Warning: message still undelivered after 4 hours\nWill keep trying until message"
            " is 5 days old",
        ),
        (
            "Delivery Status Notification (Delay)",
            "Delivery incomplete\n\nThere was a temporary problem delivering your message to "
            "later@example.org. Gmail will retry for 47 more hours. You'll be notified if the "
            "delivery fails permanently.\n\nThe response was:\n\n421 4.7.0 Try again later",
        ),
    ],
)
def test_text_delay_warnings(subject: str, body: str) -> None:
    raw = s.lf(
        f"From: MAILER-DAEMON@mx.example.org\nTo: agent@fleet.example\nSubject:"
        f" {subject}\n\n{body}\n"
    )
    report = read_report(raw)
    assert report.kind is ReportKind.MESSAGE
    assert report.recipients == ()
    (delayed,) = report.delayed
    assert delayed.address == "later@example.org"
    assert delayed.bounce_class is SOFT
    assert delayed.action == "delayed"


@pytest.mark.parametrize(
    "subject",
    ["Relayed: Your quote", "Delivered: Your quote", "Delivery Status Notification (Success)"],
)
def test_success_notices(subject: str) -> None:
    raw = s.lf(
        f"From: postmaster@example.com\nTo: agent@fleet.example\nSubject: {subject}\n\n"
        "Delivery to these recipients or groups is complete, but no delivery notification was "
        "sent by the destination server:\n\nclient@example.com\n"
    )
    assert read_report(raw).kind is ReportKind.DELIVERED


# -- auto-replies ----------------------------------------------------------------------


def test_rfc3834_auto_reply_is_not_a_bounce() -> None:
    report = read_report(s.lf(s.AUTO_RFC3834))
    assert report.kind is ReportKind.AUTO_REPLY
    assert report.recipients == ()


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        ("Automatic reply: Your quote", "X-Auto-Response-Suppress: All\n"),
        ("Out of Office: Your quote", ""),
        ("Auto: Your quote", ""),
        ("AutoReply: Your quote", "X-Autoreply: yes\n"),
        ("Abwesenheitsnotiz: Ihr Angebot", ""),
        ("=?utf-8?q?R=C3=A9ponse_automatique_:_Votre_devis?=", ""),
        ("=?utf-8?q?Respuesta_autom=C3=A1tica:_Su_presupuesto?=", ""),
        ("I am on vacation", "Precedence: auto_reply\n"),
        ("Your quote", "X-Autorespond: vacation\n"),
    ],
)
def test_auto_reply_forms(subject: str, headers: str) -> None:
    raw = s.crlf(
        f"Return-Path: <>\nFrom: jane@example.com\nTo: agent@fleet.example\nSubject: {subject}\n"
        f"{headers}\nI am out of the office and your message could not be read until Monday.\n"
    )
    assert read_report(raw).kind is ReportKind.AUTO_REPLY


def test_bounce_quoting_a_vacation_notice_is_a_bounce() -> None:
    raw = s.EXIM.replace("Subject: Your quote", "Subject: Out of Office: Your quote")
    assert read_report(s.lf(raw)).kind is ReportKind.BOUNCE


# -- complaints ------------------------------------------------------------------------


def test_arf_complaint() -> None:
    report = read_report(s.crlf(s.ARF_YAHOO))
    assert report.kind is ReportKind.COMPLAINT
    recipient = only(report)
    assert recipient.address == "angry@yahoo.com"
    assert (recipient.reason, recipient.bounce_class) == (R.COMPLAINT, HARD)
    assert recipient.status is None
    assert recipient.reply_code is None
    assert recipient.diagnostic == "abuse (Yahoo!-Mail-Feedback/2.0)"
    assert report.feedback_type == "abuse"
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_arf_redacted_recipient_from_the_original() -> None:
    raw = (
        s.ARF_YAHOO.replace("Original-Rcpt-To: angry@yahoo.com\n", "")
        .replace("Feedback-Type: abuse", "Feedback-Type: Fraud")
        .replace("To: angry@yahoo.com", "To: redacted")
    )
    report = read_report(s.lf(raw))
    assert report.kind is ReportKind.COMPLAINT
    assert only(report).address == "redacted"
    assert report.feedback_type == "fraud"


def test_microsoft_jmrp_complaint() -> None:
    report = read_report(s.lf(s.JMRP))
    assert report.kind is ReportKind.COMPLAINT
    assert only(report).address == "reporter@hotmail.com"
    assert report.feedback_type == "abuse"
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_aol_style_abuse_report_with_the_original_attached() -> None:
    raw = s.lf(
        "From: scomp@aol.net\nTo: fbl@fleet.example\nSubject: Client TOS Notification\n"
        'Content-Type: multipart/mixed; boundary="a"\n\n'
        "--a\nContent-Type: text/plain\n\nThis is an email abuse report for an email message "
        "with the message-id of orig-1@fleet.example received from IP address 192.0.2.10\n"
        f"--a\nContent-Type: message/rfc822\n\n{s.original('member@aol.com')}\n--a--\n"
    )
    report = read_report(raw)
    assert report.kind is ReportKind.COMPLAINT
    assert only(report).address == "member@aol.com"
    assert report.verp_token == "T0K3N"


# -- SES notifications -----------------------------------------------------------------


def _ses(notification: dict[str, object], wrap: bool) -> bytes:
    body = json.dumps(notification)
    if wrap:
        body = json.dumps({"Type": "Notification", "Message": body})
    return s.lf(
        "From: AWS Notifications <no-reply@sns.amazonaws.com>\nTo: ops@fleet.example\n"
        f"Subject: AWS Notification Message\nContent-Type: text/plain\n\n{body}\n\n--\n"
        "If you wish to stop receiving notifications from this topic, please click below:\n"
    )


MAIL = {
    "source": "bounces+T0K3N@fleet.example",
    "commonHeaders": {"messageId": "<orig-1@fleet.example>"},
}


@pytest.mark.parametrize("wrap", [False, True])
def test_ses_bounce(wrap: bool) -> None:
    bounce = {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "x@example.com",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
    }
    report = read_report(_ses({"notificationType": "Bounce", "bounce": bounce, "mail": MAIL}, wrap))
    assert report.kind is ReportKind.BOUNCE
    check(only(report), "x@example.com", R.USER_UNKNOWN, HARD, "5.1.1", 550)
    assert report.original_message_id == "orig-1@fleet.example"
    assert report.verp_token == "T0K3N"


def test_ses_complaint() -> None:
    complaint = {
        "complainedRecipients": [{"emailAddress": "y@example.com"}],
        "complaintFeedbackType": "abuse",
    }
    report = read_report(
        _ses({"eventType": "Complaint", "complaint": complaint, "mail": MAIL}, False)
    )
    assert report.kind is ReportKind.COMPLAINT
    assert only(report).address == "y@example.com"


# -- ordinary mail ---------------------------------------------------------------------


def test_ordinary_message() -> None:
    report = read_report(s.lf(s.ORDINARY))
    assert report == Report(kind=ReportKind.MESSAGE)


def test_forwarded_bounce_from_a_person_is_a_message() -> None:
    raw = s.lf(
        "From: Bob <bob@example.org>\nTo: agent@fleet.example\n"
        "Subject: Fwd: Mail delivery failed: returning message to sender\n\n"
        "Hi, I got this when writing to you, any idea?\n\nBob\n\n"
        "---------- Forwarded message ---------\nFrom: Mail Delivery System "
        "<Mailer-Daemon@mx.example.org>\nTo: bob@example.org\n\n" + s.EXIM.split("\n\n", 1)[1]
    )
    assert read_report(raw).kind is ReportKind.MESSAGE


def test_reply_quoting_a_failure_is_a_bounce_when_it_opens_with_one() -> None:
    raw = s.lf(
        "From: gateway@example.com\nTo: agent@fleet.example\n"
        "Subject: RE: Your quote : non remis (delivery failed)\n\n"
        "Your message could not be delivered to\nuserx@example.com\n"
    )
    report = read_report(raw)
    assert report.kind is ReportKind.BOUNCE
    assert only(report).address == "userx@example.com"


def test_envelope_recipient_gives_the_verp_token_first() -> None:
    report = read_report(s.lf(s.POSTFIX), envelope_recipients=["BOUNCES+first@fleet.example"])
    assert report.verp_token == "first"


def test_as_json_is_stable() -> None:
    document = read_report(s.lf(s.QMAIL)).as_json()
    assert json.loads(json.dumps(document)) == document
    assert document["kind"] == "bounce"
    assert document["recipients"][0] == {
        "address": "mario@example.it",
        "status": "5.1.1",
        "reply_code": None,
        "reason": "user_unknown",
        "class": "hard",
        "diagnostic": "Sorry, no mailbox here by that name. (#5.1.1)",
    }


# -- never raising -----------------------------------------------------------------------

SAMPLES = [
    s.POSTFIX,
    s.EXIM,
    s.QMAIL,
    s.SENDMAIL,
    s.OFFICE365,
    s.GMAIL,
    s.YAHOO,
    s.LOTUS,
    s.COURIER,
    s.DELAY_DSN,
    s.ARF_YAHOO,
    s.JMRP,
    s.AUTO_RFC3834,
]


def _sane(report: Report) -> None:
    assert isinstance(report.kind, ReportKind)
    json.dumps(report.as_json())
    for recipient in (*report.recipients, *report.delayed):
        assert recipient.address == recipient.address.lower()
        assert recipient.diagnostic is None or len(recipient.diagnostic) <= 1000


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    _sane(read_report(raw))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SAMPLES),
    st.lists(
        st.tuples(st.integers(0, 20000), st.integers(0, 40), st.binary(max_size=12)), max_size=6
    ),
    st.integers(0, 20000),
)
def test_mutated_reports_never_raise(
    sample: str, edits: list[tuple[int, int, bytes]], cut: int
) -> None:
    raw = bytearray(s.crlf(sample))
    for at, length, junk in edits:
        at %= len(raw) + 1
        raw[at : at + length] = junk
    _sane(read_report(bytes(raw[: max(cut, len(raw) // 3)])))


def test_hostile_inputs_never_raise() -> None:
    deep = b"".join(
        f'Content-Type: multipart/mixed; boundary="b{i}"\n\n--b{i}\n'.encode() for i in range(200)
    )
    huge = b"From: MAILER-DAEMON@x.example\nSubject: failure notice\n\n" + b"a@b.example " * 500_000
    for raw in (b"", b"\x00\xff" * 1000, deep, huge, b"Content-Type: multipart/report\n\n--"):
        _sane(read_report(raw))
    _sane(read_report("not bytes"))  # type: ignore[arg-type]


# -- classify_failure ------------------------------------------------------------------


CLASSIFY_CASES: list[tuple[str | None, int | None, str, BounceReason, BounceClass]] = [
    (
        "5.1.1",
        550,
        "Recipient address rejected: User unknown in virtual mailbox table",
        R.USER_UNKNOWN,
        HARD,
    ),
    (None, 550, "No such user", R.USER_UNKNOWN, HARD),
    ("5.0.0", 550, "mailbox unavailable; user does not exist", R.USER_UNKNOWN, HARD),
    (
        "5.1.10",
        550,
        "RESOLVER.ADR.RecipientNotFound; Recipient not found",
        R.USER_UNKNOWN,
        HARD,
    ),
    ("5.1.10", 550, "Recipient address rejected: null MX", R.HOST_UNKNOWN, HARD),
    ("5.4.1", 550, "Recipient address rejected: Access denied", R.USER_UNKNOWN, HARD),
    ("4.1.1", 450, "user unknown, try later", R.USER_UNKNOWN, SOFT),
    (None, None, "Host or domain name not found. Name service error", R.HOST_UNKNOWN, HARD),
    (None, 550, "unrouteable address", R.HOST_UNKNOWN, HARD),
    ("5.1.2", None, "", R.HOST_UNKNOWN, HARD),
    ("5.1.6", None, "", R.HAS_MOVED, HARD),
    (
        "4.2.2",
        452,
        "The email account that you tried to reach is over quota",
        R.MAILBOX_FULL,
        SOFT,
    ),
    (None, 552, "", R.MAILBOX_FULL, SOFT),
    ("5.3.4", 552, "Message size exceeds fixed maximum message size", R.MESSAGE_TOO_BIG, SOFT),
    (
        "5.7.1",
        554,
        "Service unavailable; Client host [1.2.3.4] blocked using zen.spamhaus.org",
        R.BLOCKED,
        SOFT,
    ),
    (
        "5.7.1",
        550,
        "Our system has detected that this message is likely unsolicited mail",
        R.SPAM,
        SOFT,
    ),
    ("4.7.0", 421, "Try again later, closing connection", R.RATE_LIMITED, SOFT),
    ("4.7.28", 421, "", R.RATE_LIMITED, SOFT),
    (None, 421, "Too many concurrent SMTP connections", R.RATE_LIMITED, SOFT),
    ("4.4.7", None, "retry timeout exceeded", R.EXPIRED, SOFT),
    (
        "5.7.26",
        550,
        "Unauthenticated email is not accepted from this domain",
        R.AUTH_FAILURE,
        SOFT,
    ),
    (
        "5.7.1",
        550,
        "Client host rejected: cannot find your reverse hostname",
        R.AUTH_FAILURE,
        SOFT,
    ),
    (
        "5.2.1",
        550,
        "The email account that you tried to reach is disabled",
        R.MAILBOX_DISABLED,
        SOFT,
    ),
    ("5.7.1", 554, "Relay access denied", R.RELAY_DENIED, SOFT),
    ("5.7.0", 554, "Message rejected: virus found in attachment", R.VIRUS, SOFT),
    ("4.4.1", None, "connect to mx.example.com: Connection refused", R.NETWORK_ERROR, SOFT),
    ("5.7.1", 550, "Message rejected due to content policy", R.POLICY, SOFT),
    ("5.4.14", 554, "Hop count exceeded - possible mail loop", R.SYSTEM_ERROR, SOFT),
    (None, 550, "", R.UNKNOWN, HARD),
    (None, 451, "", R.SYSTEM_ERROR, SOFT),
    (None, None, "", R.UNKNOWN, SOFT),
    ("4.0.0", None, "", R.UNKNOWN, SOFT),
    (None, None, "550 5.1.1 <spam@example.com>... User unknown", R.USER_UNKNOWN, HARD),
    ("5.0.0", 550, "Sender address rejected: Domain not found", R.POLICY, SOFT),
]


@pytest.mark.parametrize(("status", "reply", "text", "reason", "klass"), CLASSIFY_CASES)
def test_classify_failure(
    status: str | None, reply: int | None, text: str, reason: BounceReason, klass: BounceClass
) -> None:
    assert classify_failure(status, reply, text) == (reason, klass)


def test_masked_hosts_say_nothing() -> None:
    assert classify_failure("5.1.1", 550, "host spam-filter.example.net said: user unknown")[0] is (
        R.USER_UNKNOWN
    )


# -- more real-world shapes ----------------------------------------------------------


def test_dsn_fields_in_any_order_and_an_unindented_multiline_answer() -> None:
    report = read_report(s.crlf(s.REVERSED_DSN))
    recipient = only(report)
    check(recipient, "buyer@shop.example", R.RELAY_DENIED, SOFT, "5.0.0", 550)
    assert recipient.diagnostic is not None
    assert "is not permitted to relay through this server" in recipient.diagnostic


def test_carrier_answer_behind_a_reply_prefix() -> None:
    report = read_report(s.lf(s.CARRIER_REPLY))
    assert report.kind is ReportKind.BOUNCE
    check(only(report), "15550001111@sms.example.com", R.USER_UNKNOWN, HARD, None, 550)


def test_report_wrapped_whole_by_a_gateway() -> None:
    report = read_report(s.lf(s.WRAPPED_DSN))
    check(only(report), "left@example.com", R.USER_UNKNOWN, HARD, "5.1.1")
    assert report.verp_token == "T0K3N"


def test_sieve_reject_is_a_bounce_and_a_read_receipt_a_success() -> None:
    report = read_report(s.lf(s.SIEVE_REJECT))
    assert report.kind is ReportKind.BOUNCE
    check(only(report), "full@example.org", R.MAILBOX_FULL, SOFT)
    assert report.original_message_id == "orig-1@fleet.example"
    assert read_report(s.lf(s.READ_RECEIPT)).kind is ReportKind.DELIVERED


def test_list_mail_is_an_ordinary_message_cheaply() -> None:
    raw = s.lf(
        "From: notifications@github.example\nTo: agent@fleet.example\n"
        "Subject: Re: [repo] Plan versions (#904)\nPrecedence: list\nList-Id: repo\n\n"
        "Merged. The old address could not be delivered to, so I removed it.\n"
    )
    assert read_report(raw) == Report(kind=ReportKind.MESSAGE)


def test_keyword_gates_never_change_a_reason() -> None:
    """Each TEXT_PATTERNS entry is skipped when its words are absent: that must be exact."""
    from mailfleet.mail import reasons

    gated = reasons._COMPILED
    ungated = tuple((reason, pattern, deferral, None) for reason, pattern, deferral, _ in gated)
    texts = [case[2] for case in CLASSIFY_CASES]
    for sample in [*SAMPLES, s.GMAIL_OLD, s.MIMECAST_BLOCK, s.GROUPWISE, s.REVERSED_DSN]:
        texts.extend(sample[i : i + 400] for i in range(0, len(sample), 200))
    try:
        for text in texts:
            reasons._COMPILED = gated
            expected = [reasons.text_reason(text, "4.7.0", 421), reasons.text_reason(text)]
            reasons._COMPILED = ungated
            assert [reasons.text_reason(text, "4.7.0", 421), reasons.text_reason(text)] == (
                expected
            ), text
    finally:
        reasons._COMPILED = gated


def test_vacation_words_with_an_empty_return_path_are_an_auto_reply() -> None:
    raw = s.lf(
        "Return-Path: <>\nFrom: jane@example.com\nTo: agent@fleet.example\nSubject: Re: Your"
        " quote\n\n"
        "Thank you for your message. I am out of the office until June 10.\n"
    )
    assert read_report(raw).kind is ReportKind.AUTO_REPLY
    person = raw.replace(b"Return-Path: <>\n", b"")
    assert read_report(person).kind is ReportKind.MESSAGE
