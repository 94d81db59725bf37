"""Mail as the outside world sends it: to a fleet's MX over SMTP, and delivery reports."""

from __future__ import annotations

import smtplib

import anyio

from mailfleet import Fleet


async def mail_to_mx(fleet: Fleet, sender: str, recipient: str, data: bytes) -> str:
    """Send ``data`` to the fleet's MX over SMTP; the server's answer to DATA."""

    def send() -> str:
        with smtplib.SMTP("127.0.0.1", fleet.smtp_port or 0) as client:
            client.ehlo("mx.example.net")
            client.mail(sender)
            code, text = client.rcpt(recipient)
            assert code == 250, (code, text)
            code, text = client.data(data)
            return f"{code} {text.decode()}"

    return await anyio.to_thread.run_sync(send)


def dsn(verp: str, recipient: str, message_id: str, *, status: str, diagnostic: str) -> bytes:
    """A Postfix-style RFC 3464 report, as a receiving MTA would send it."""
    return (
        "Return-Path: <>\r\n"
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        f"To: {verp}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B1"\r\n'
        "Message-Id: <20261202.ABC@mx.example.net>\r\n"
        "\r\n"
        "--B1\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{recipient}>: host mx.example.net said: {diagnostic}\r\n\r\n"
        "--B1\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n"
        "Arrival-Date: Wed,  2 Dec 2026 10:00:00 +0000 (UTC)\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\n"
        f"Original-Recipient: rfc822;{recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx.example.net\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        "--B1\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"Return-Path: <{verp}>\r\n"
        "From: sales@example.com\r\n"
        f"To: {recipient}\r\n"
        "Subject: Our offer\r\n"
        f"Message-ID: {message_id}\r\n\r\n"
        "--B1--\r\n"
    ).encode()


def arf(recipient: str, verp: str, message_id: str) -> bytes:
    """An RFC 5965 feedback report, as a mailbox provider's loop sends it."""
    return (
        "From: feedback@fbl.example.net\r\n"
        "To: bounces@example.com\r\n"
        "Subject: FW: Our offer\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F1"\r\n'
        "Message-ID: <fbl-1@fbl.example.net>\r\n"
        "\r\n"
        "--F1\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "This is an email abuse report for an email message received from IP 192.0.2.1.\r\n\r\n"
        "--F1\r\n"
        "Content-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\n"
        "User-Agent: ExampleFBL/1.0\r\n"
        "Version: 1\r\n"
        f"Original-Mail-From: <{verp}>\r\n"
        f"Original-Rcpt-To: <{recipient}>\r\n"
        "Source-IP: 192.0.2.1\r\n\r\n"
        "--F1\r\n"
        "Content-Type: message/rfc822\r\n\r\n"
        f"Return-Path: <{verp}>\r\n"
        "From: sales@example.com\r\n"
        f"To: {recipient}\r\n"
        "Subject: Our offer\r\n"
        f"Message-ID: {message_id}\r\n\r\n"
        "Buy now.\r\n"
        "--F1--\r\n"
    ).encode()
