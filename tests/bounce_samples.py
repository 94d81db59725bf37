# ruff: noqa: E501  (real reports have long lines)
"""Realistic delivery reports, written by hand after the forms real MTAs and providers send.

Each sample is text with ``\\n`` line ends; :func:`lf` and :func:`crlf` make bytes of it.
Addresses: the sender is ``agent@fleet.example`` with the VERP return path
``bounces+T0K3N@fleet.example``; the original's Message-ID is ``<orig-1@fleet.example>``.
"""

from __future__ import annotations


def lf(text: str, charset: str = "utf-8") -> bytes:
    return text.encode(charset)


def crlf(text: str, charset: str = "utf-8") -> bytes:
    return text.replace("\n", "\r\n").encode(charset)


ORIGINAL = """\
Return-Path: <bounces+T0K3N@fleet.example>
Received: from fleet.example (fleet.example [192.0.2.10])
\tby mx.fleet.example with ESMTPS id abc123
\tfor <{rcpt}>; Mon, 3 Jun 2024 10:00:00 +0000
DKIM-Signature: v=1; a=rsa-sha256; d=fleet.example; s=s1; h=from:to:subject;
\tb=AAAA
From: Agent Smith <agent@fleet.example>
To: {rcpt}
Subject: Your quote
Date: Mon, 3 Jun 2024 10:00:00 +0000
Message-ID: <orig-1@fleet.example>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello, please find the quote below. I am on vacation next week.
"""


def original(rcpt: str) -> str:
    return ORIGINAL.format(rcpt=rcpt)


POSTFIX = f"""\
Return-Path: <>
Received: by mx.fleet.example (Postfix) id 4VtGQn; Mon,  3 Jun 2024 10:00:05 +0000 (UTC)
Date: Mon,  3 Jun 2024 10:00:05 +0000 (UTC)
From: MAILER-DAEMON@mx.fleet.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: bounces+T0K3N@fleet.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="4VtGQn.1717408805/mx.fleet.example"
Message-Id: <20240603100005.4VtGQn@mx.fleet.example>

This is a MIME-encapsulated message.

--4VtGQn.1717408805/mx.fleet.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.fleet.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system

<nosuchuser@example.com>: host mx1.example.com[198.51.100.7] said: 550 5.1.1
    <nosuchuser@example.com>: Recipient address rejected: User unknown in
    virtual mailbox table (in reply to RCPT TO command)

--4VtGQn.1717408805/mx.fleet.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.fleet.example
X-Postfix-Queue-ID: 4VtGQn
X-Postfix-Sender: rfc822; bounces+T0K3N@fleet.example
Arrival-Date: Mon,  3 Jun 2024 10:00:01 +0000 (UTC)

Final-Recipient: rfc822; nosuchuser@example.com
Original-Recipient: rfc822;nosuchuser@example.com
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx1.example.com
Diagnostic-Code: smtp; 550 5.1.1 <nosuchuser@example.com>: Recipient address
    rejected: User unknown in virtual mailbox table

--4VtGQn.1717408805/mx.fleet.example
Content-Description: Undelivered Message
Content-Type: message/rfc822

{original("nosuchuser@example.com")}
--4VtGQn.1717408805/mx.fleet.example--
"""

EXIM = f"""\
Return-path: <>
Envelope-to: bounces+T0K3N@fleet.example
Delivery-date: Mon, 03 Jun 2024 10:00:09 +0000
Received: from mail by mx.example.org with local (Exim 4.96)
\tid 1sE4Bd-0007Kz-2F
\tfor bounces+T0K3N@fleet.example; Mon, 03 Jun 2024 10:00:09 +0000
X-Failed-Recipients: gone.away@example.org
Auto-Submitted: auto-replied
From: Mail Delivery System <Mailer-Daemon@mx.example.org>
To: bounces+T0K3N@fleet.example
Content-Type: text/plain; charset=us-ascii
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1sE4Bd-0007Kz-2F@mx.example.org>
Date: Mon, 03 Jun 2024 10:00:09 +0000

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  gone.away@example.org
    host mail.example.org [203.0.113.5]
    SMTP error from remote mail server after RCPT TO:<gone.away@example.org>:
    550 No Such User Here

------ This is a copy of the message, including all the headers. ------

{original("gone.away@example.org")}"""

EXIM_RETRY = """\
Return-path: <>
X-Failed-Recipients: slow@example.net
From: Mail Delivery System <Mailer-Daemon@relay.example.org>
To: agent@fleet.example
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1retry-0001@relay.example.org>
Content-Type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  slow@example.net
    retry timeout exceeded

------ This is a copy of the message's headers. ------

Return-Path: <bounces+T0K3N@fleet.example>
Received: from fleet.example by relay.example.org
Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
To: slow@example.net
Subject: Your quote
"""

QMAIL = """\
Return-Path: <>
Delivered-To: bounces+T0K3N@fleet.example
Received: (qmail 21811 invoked for bounce); 3 Jun 2024 10:00:03 -0000
Date: 3 Jun 2024 10:00:03 -0000
From: MAILER-DAEMON@mail.example.it
To: bounces+T0K3N@fleet.example
Subject: failure notice

Hi. This is the qmail-send program at mail.example.it.
I'm afraid I wasn't able to deliver your message to the following addresses.
This is a permanent error; I've given up. Sorry it didn't work out.

<mario@example.it>:
Sorry, no mailbox here by that name. (#5.1.1)

<full@example.it>:
198.51.100.20 does not like recipient.
Remote host said: 552 5.2.2 Mailbox full
Giving up on 198.51.100.20.

--- Below this line is a copy of the message.

Return-Path: <bounces+T0K3N@fleet.example>
Received: (qmail 21800 invoked from network); 3 Jun 2024 10:00:02 -0000
Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
To: mario@example.it, full@example.it
Subject: Your quote

Hello
"""

SENDMAIL = f"""\
Return-Path: <MAILER-DAEMON>
Date: Mon, 3 Jun 2024 12:00:00 +0200
From: Mail Delivery Subsystem <MAILER-DAEMON@smtp.example.de>
Message-Id: <202406031000.453A00@smtp.example.de>
To: <bounces+T0K3N@fleet.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="453A00.1717408800/smtp.example.de"
Subject: Returned mail: see transcript for details
Auto-Submitted: auto-generated (failure)

This is a MIME-encapsulated message

--453A00.1717408800/smtp.example.de

The original message was received at Mon, 3 Jun 2024 12:00:00 +0200
from fleet.example [192.0.2.10]

   ----- The following addresses had permanent fatal errors -----
<hans@example.de>
    (reason: 550 5.1.1 <hans@example.de>... User unknown)

   ----- Transcript of session follows -----
... while talking to mx.example.de.:
>>> DATA
<<< 550 5.1.1 <hans@example.de>... User unknown
550 5.1.1 <hans@example.de>... User unknown
<<< 503 5.0.0 Need RCPT (recipient)

--453A00.1717408800/smtp.example.de
Content-Type: message/delivery-status

Reporting-MTA: dns; smtp.example.de
Received-From-MTA: DNS; fleet.example
Arrival-Date: Mon, 3 Jun 2024 12:00:00 +0200

Final-Recipient: RFC822; hans@example.de
Action: failed
Status: 5.1.1
Remote-MTA: DNS; mx.example.de
Diagnostic-Code: SMTP; 550 5.1.1 <hans@example.de>... User unknown
Last-Attempt-Date: Mon, 3 Jun 2024 12:00:00 +0200

--453A00.1717408800/smtp.example.de
Content-Type: text/rfc822-headers

{original("hans@example.de").split(chr(10) + chr(10))[0]}

--453A00.1717408800/smtp.example.de--
"""

OFFICE365 = """\
From: Microsoft Outlook <MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@contoso.onmicrosoft.com>
To: <bounces+T0K3N@fleet.example>
Date: Mon, 3 Jun 2024 10:00:07 +0000
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="_000_NDR_"
MIME-Version: 1.0
Message-ID: <ndr-7f3a@contoso.onmicrosoft.com>
In-Reply-To: <orig-1@fleet.example>
References: <orig-1@fleet.example>
Subject: Undeliverable: Your quote
Auto-Submitted: auto-replied
X-MS-Exchange-Message-Is-Ndr:

--_000_NDR_
Content-Type: multipart/alternative; differences=Content-Type;
\tboundary="_001_NDR_"

--_001_NDR_
Content-Type: text/plain; charset="us-ascii"

Your message to ghost@contoso.com couldn't be delivered.
ghost wasn't found at contoso.com.

Office 365 - Action Required                         Recipient
Unknown To address

How to Fix It
The address may be misspelled or may not exist.

Diagnostic information for administrators:

Generating server: AM6PR01MB1234.eurprd01.prod.exchangelabs.com
ghost@contoso.com
Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'

Original message headers:

Received: from fleet.example (192.0.2.10) by AM6PR01MB1234.outlook.com
Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
To: ghost@contoso.com

--_001_NDR_
Content-Type: text/html; charset="us-ascii"

<html><body><p>Your message to ghost@contoso.com couldn't be delivered.</p></body></html>

--_001_NDR_--

--_000_NDR_
Content-Type: message/delivery-status

Reporting-MTA: dns;AM6PR01MB1234.eurprd01.prod.exchangelabs.com
Received-From-MTA: dns;fleet.example
Arrival-Date: Mon, 3 Jun 2024 10:00:05 +0000

Original-Recipient: rfc822;ghost@contoso.com
Final-Recipient: rfc822;ghost@contoso.com
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup

--_000_NDR_
Content-Type: message/rfc822

Received: from fleet.example (192.0.2.10) by AM6PR01MB1234.outlook.com
Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
To: ghost@contoso.com
Subject: Your quote

Hello
--_000_NDR_--
"""

GMAIL = f"""\
Return-Path: <>
Received: by 2002:a05:6000:1:b0:1 with SMTP id x; Mon, 03 Jun 2024 03:00:06 -0700 (PDT)
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: bounces+T0K3N@fleet.example
Auto-Submitted: auto-replied
Subject: Delivery Status Notification (Failure)
References: <orig-1@fleet.example>
In-Reply-To: <orig-1@fleet.example>
X-Failed-Recipients: missing.person@gmail.com
Message-ID: <665d9506.abc@mx.google.com>
Date: Mon, 03 Jun 2024 03:00:06 -0700 (PDT)
MIME-Version: 1.0
Content-Type: multipart/report; boundary="0000000000002b2b"; report-type=delivery-status

--0000000000002b2b
Content-Type: multipart/related; boundary="0000000000002b36"

--0000000000002b36
Content-Type: multipart/alternative; boundary="0000000000002b3e"

--0000000000002b3e
Content-Type: text/plain; charset="UTF-8"


** Address not found **

Your message wasn't delivered to missing.person@gmail.com because the address couldn't be found, or is unable to receive mail.

Learn more here: https://support.google.com/mail/?p=NoSuchUser

The response was:

The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. For more information, go to https://support.google.com/mail/?p=NoSuchUser

--0000000000002b3e--

--0000000000002b36--

--0000000000002b2b
Content-Type: message/delivery-status

Reporting-MTA: dns; googlemail.com
Received-From-MTA: dns; agent@fleet.example
Arrival-Date: Mon, 03 Jun 2024 03:00:05 -0700 (PDT)
X-Original-Message-ID: <orig-1@fleet.example>

Final-Recipient: rfc822; missing.person@gmail.com
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; The email account that you tried to reach does not exist. Please try
 double-checking the recipient's email address for typos or unnecessary
 spaces. For more information, go to
 https://support.google.com/mail/?p=NoSuchUser x.123 - gsmtp
Last-Attempt-Date: Mon, 03 Jun 2024 03:00:06 -0700 (PDT)

--0000000000002b2b
Content-Type: message/rfc822

{original("missing.person@gmail.com")}
--0000000000002b2b--
"""

GMAIL_OLD = f"""\
From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>
To: agent@fleet.example
Subject: Delivery Status Notification (Failure)
Message-ID: <old-gmail@mx.google.com>
Content-Type: text/plain; charset=ISO-8859-1

Delivery to the following recipient failed permanently:

     someone@example.biz

Technical details of permanent failure:
Google tried to deliver your message, but it was rejected by the recipient domain. We recommend contacting the other email provider for further information about the cause of this error. The error that the other server returned was: 550 550 5.7.1 Service unavailable; Client host [209.85.0.1] blocked using zen.spamhaus.org (state 14).

----- Original message -----

{original("someone@example.biz")}"""

YAHOO = """\
From: MAILER-DAEMON@yahoo.com
To: bounces+T0K3N@fleet.example
Subject: Failure Notice
Message-ID: <ymail-1@yahoo.com>
Content-Type: text/plain; charset=us-ascii

Sorry, we were unable to deliver your message to the following address.

<nobody123@yahoo.com>:
554: delivery error: dd This user doesn't have a yahoo.com account (nobody123@yahoo.com) [0] - mta1001.mail.ne1.yahoo.com

--- Below this line is a copy of the message.

Return-Path: <bounces+T0K3N@fleet.example>
Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
To: nobody123@yahoo.com
Subject: Your quote
"""

HOTMAIL = """\
From: postmaster@outlook.com
To: bounces+T0K3N@fleet.example
Subject: Undeliverable: Your quote
Message-ID: <hot-1@outlook.com>
Content-Type: multipart/report; report-type=delivery-status; boundary="hb"

--hb
Content-Type: text/plain; charset=us-ascii

Delivery has failed to these recipients or groups:

closed.account@hotmail.com
The email address you entered couldn't be found.

--hb
Content-Type: message/delivery-status

Reporting-MTA: dns;DM6NAM10HT123.mail.protection.outlook.com

Final-Recipient: rfc822;closed.account@hotmail.com
Action: failed
Status: 5.5.0
Diagnostic-Code: smtp;550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302). [DM6NAM10FT012.eop-nam10.prod.protection.outlook.com]

--hb
Content-Type: text/rfc822-headers

Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
To: closed.account@hotmail.com
--hb--
"""

LOTUS = """\
From: Postmaster@example-corp.com
To: agent@fleet.example
Subject: DELIVERY FAILURE: User jdoe (jdoe@example-corp.com) not listed in Domino Directory
Message-ID: <OF1234.ABC@example-corp.com>
Content-Type: multipart/mixed; boundary="lotus"

--lotus
Content-Type: text/plain; charset=US-ASCII

Your message

  Subject: Your quote

was not delivered to:

  jdoe@example-corp.com

because:

  User jdoe (jdoe@example-corp.com) not listed in Domino Directory

--lotus
Content-Type: message/rfc822

Return-Path: <bounces+T0K3N@fleet.example>
Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
To: jdoe@example-corp.com
Subject: Your quote

Hello
--lotus--
"""

COURIER = """\
From: "Courier mail server at mail.example.net" <@>
To: agent@fleet.example
Subject: NOTICE: mail delivery status.
Message-ID: <courier.123@mail.example.net>
Content-Type: multipart/report; report-type=delivery-status; boundary="=_courier_0"

--=_courier_0
Content-Type: text/plain; charset=us-ascii

This is a delivery status notification from mail.example.net,
running the Courier mail server.

Your message was NOT delivered to the following recipients:

<tooquiet@example.net>:
    mx.example.net [203.0.113.9]:
>>> RCPT TO:<tooquiet@example.net>
<<< 552 5.2.2 Quota exceeded (mailbox for user is full)

--=_courier_0
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.example.net

Final-Recipient: rfc822; tooquiet@example.net
Action: failed
Status: 5.0.0
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 552 5.2.2 Quota exceeded (mailbox for user is full)

--=_courier_0--
"""

MIMECAST_BLOCK = """\
From: Mail Delivery System <postmaster@eu.mimecast.example>
To: agent@fleet.example
Subject: Undelivered Mail
Message-ID: <mc-1@eu.mimecast.example>
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered to the following recipient:

buyer@retail.example.co.uk

The error reported was:
550 Rejected by header based Anti-Spoofing policy: agent@fleet.example - https://community.mimecast.example/docs/DOC-1369#550

Original message headers:

Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
To: buyer@retail.example.co.uk
"""

GROUPWISE = """\
From: Mail Delivery System <MAILER-DAEMON@gw.example.edu>
To: agent@fleet.example
Subject: Undeliverable Mail
Message-ID: <gw-1@gw.example.edu>
Content-Type: text/plain

The message that you sent was undeliverable to the following:
\tprof.x@gw.example.edu (host not found)

Possible causes:
\tMisspelled mail address

Original message:
Message-ID: <orig-1@fleet.example>
"""

GERMAN_BASE64_BODY = (
    "Diese Nachricht wurde automatisch erstellt.\n\n"
    "Ihre Nachricht konnte nicht zugestellt werden an:\n\n"
    "  kunde@example.de\n"
    "    Grund: 550 5.1.1 Empfänger unbekannt (user unknown)\n"
)

DELAY_DSN = """\
From: MAILER-DAEMON@mx.fleet.example (Mail Delivery System)
To: bounces+T0K3N@fleet.example
Subject: Delayed Mail (still being retried)
Message-ID: <delay-1@mx.fleet.example>
Content-Type: multipart/report; report-type=delivery-status; boundary="dd"

--dd
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.fleet.example.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

Your message could not be delivered for more than 4 hour(s).
It will be retried until it is 5 day(s) old.

<waiting@example.com>: connect to mx.example.com[198.51.100.3]:25:
    Connection timed out

--dd
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.fleet.example

Final-Recipient: rfc822; waiting@example.com
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.com[198.51.100.3]:25: Connection
    timed out
Will-Retry-Until: Sat,  8 Jun 2024 10:00:00 +0000 (UTC)

--dd
Content-Type: text/rfc822-headers

Message-ID: <orig-1@fleet.example>
From: agent@fleet.example
--dd--
"""

AUTO_RFC3834 = """\
Return-Path: <>
From: Jane Roe <jane@example.com>
To: agent@fleet.example
Subject: Re: Your quote
Auto-Submitted: auto-replied
Message-ID: <vac-1@example.com>
In-Reply-To: <orig-1@fleet.example>
Content-Type: text/plain; charset=utf-8

I am away until June 10 with limited access to e-mail. Your message could not be
read before then; for urgent matters contact bob@example.com.
"""

ARF_YAHOO = f"""\
From: feedback@arf.mail.yahoo.com
To: fbl@fleet.example
Subject: FW: Your quote
Message-ID: <arf-1@yahoo.com>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="arf"

--arf
Content-Type: text/plain; charset="us-ascii"

This is an email abuse report for an email message received from IP 192.0.2.10 on Mon, 3 Jun 2024.

--arf
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <bounces+T0K3N@fleet.example>
Original-Rcpt-To: angry@yahoo.com
Arrival-Date: Mon, 03 Jun 2024 10:00:02 +0000
Reported-Domain: fleet.example
Source-IP: 192.0.2.10

--arf
Content-Type: message/rfc822

{original("angry@yahoo.com")}
--arf--
"""

JMRP = f"""\
From: staff@hotmail.com
To: fbl@fleet.example
Subject: complaint about message from 192.0.2.10
Message-ID: <jmrp-1@hotmail.com>
Content-Type: multipart/mixed; boundary="jm"

--jm
Content-Type: text/plain

This is a Junk Mail Reporting Program notification.

--jm
Content-Type: message/rfc822

X-HmXmrOriginalRecipient: <reporter@hotmail.com>
{original("reporter@hotmail.com")}
--jm--
"""

ORDINARY = """\
From: Alice <alice@example.com>
To: agent@fleet.example
Subject: Lunch on Friday?
Message-ID: <lunch-1@example.com>
Date: Mon, 3 Jun 2024 10:00:00 +0000
Content-Type: text/plain; charset=utf-8

Hi! Are you free for lunch on Friday? My last mail to Bob could not be delivered,
so please tell him too.
"""

REVERSED_DSN = """\
From: Mail Delivery System <MAILER-DAEMON@cloud.example.net>
To: <agent@fleet.example>
Subject: Mail Delivery Failure
Content-Type: multipart/report; report-type=delivery-status; boundary="rv"

--rv
Content-Type: text/plain; charset="UTF-8"
Content-Transfer-Encoding: quoted-printable

This is the mail delivery agent at Example Email Security.cloud.

I was unable to deliver your message to the following addresses:

buyer@shop.example

Reason: 550-Please turn on SMTP Authentication in your mail client.=20
550-gw.example.net [198.51.100.21]:2525 is not permitted to
550 relay through this server without authentication.

--rv
Content-Type: message/delivery-status

Arrival-Date: Mon, 3 Jun 2024 10:00:00 +0000
Reporting-MTA: dns; gw.example.net

Last-Attempt-Date: Mon, 3 Jun 2024 10:00:00 +0000
Diagnostic-Code: smtp; 550-Please turn on SMTP Authentication in your mail client.
550-gw.example.net [198.51.100.21]:2525 is not permitted to
550 relay through this server without authentication.
Status: 5.0.0
Action: failed
Final-Recipient: rfc822; buyer@shop.example

--rv--
"""

CARRIER_REPLY = """\
From: post_master@sms.example.com
To: agent@fleet.example
Subject: Re:Your quote
Message-ID: <carrier-1@sms.example.com>
In-Reply-To: <orig-1@fleet.example>
Content-Type: multipart/mixed; boundary="cr"

--cr
Content-Type: text/plain; charset=us-ascii

Error: Invalid user address

Error message below:
550 - Requested action not taken: no such user here

Message details:
  Subject: Your quote
  MAIL FROM: agent@fleet.example
  RCPT TO: 15550001111@sms.example.com
  From: agent@fleet.example

--cr--
"""

WRAPPED_DSN = """\
From: postmaster@gw.example.com
To: bounces+T0K3N@fleet.example
Subject: Delivery Status Notification (Failure)
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: message/rfc822

From: postmaster@gw.example.com
To: bounces+T0K3N@fleet.example
Subject: Delivery Status Notification (Failure)
Content-Type: multipart/report; report-type=delivery-status; boundary="inner"

--inner
Content-Type: text/plain

Delivery to the following recipients failed.

       left@example.com

--inner
Content-Type: message/delivery-status

Reporting-MTA: dns;gw.example.com

Final-Recipient: rfc822;left@example.com
Action: failed
Status: 5.1.1

--inner--

--outer
Content-Type: text/plain

This e-mail is confidential.
--outer--
"""

SIEVE_REJECT = """\
From: Mail Delivery Subsystem <MAILER-DAEMON@imap.example.org>
To: <agent@fleet.example>
Subject: Automatically rejected mail
Content-Type: multipart/report; report-type=disposition-notification; boundary="sv"

--sv
Content-Type: text/plain; charset=utf-8

Your message to <full@example.org> was automatically rejected:
Quota exceeded (mailbox for user is full)
--sv
Content-Type: message/disposition-notification

Reporting-UA: imap.example.org; Dovecot Mail Delivery Agent
Final-Recipient: rfc822; full@example.org
Original-Message-ID: <orig-1@fleet.example>
Disposition: automatic-action/MDN-sent-automatically; deleted

--sv--
"""

READ_RECEIPT = (
    SIEVE_REJECT.replace("Subject: Automatically rejected mail", "Subject: Read: Your quote")
    .replace(
        "Your message to <full@example.org> was automatically rejected:\nQuota exceeded (mailbox for user is full)",
        "Your message was read on Monday.",
    )
    .replace("deleted", "displayed")
)
