"""DKIM signing: every signature we make must verify with dkimpy, and stop verifying when tampered.

Verification goes through dkimpy's own verifier (``dkim.verify`` and
``dkim.DKIM(...).verify(idx=...)``). Its ``dnsfunc`` argument is answered from
the TXT records our keys publish (:func:`txt_records`): this stands in for DNS
until a later issue serves those records from a real DNS server on loopback.
"""

from __future__ import annotations

import base64
import email.header
import email.policy
import pickle
import re
from collections.abc import Callable
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailfleet.auth import DkimKey, DkimSigner, generate_key
from mailfleet.model.errors import InvalidInput

DOMAIN = "example.com"
T = 1_700_000_000

MESSAGE = (
    b"From: Agent One <agent-1@example.com>\r\n"
    b"To: Someone <someone@example.org>\r\n"
    b"Subject: Hello there\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Not-Signed: yes\r\n"
    b"\r\n"
    b"Hi,\r\n"
    b"\r\n"
    b"a body  with  spaces \t\r\n"
    b"-- \r\n"
    b"Agent One\r\n"
)

DnsFunc = Callable[..., bytes | None]


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    return generate_key("rsa", selector="rsa2024")


@pytest.fixture(scope="module")
def ed_key() -> DkimKey:
    return generate_key("ed25519", selector="ed2024")


def txt_records(*keys: DkimKey, domain: str = DOMAIN) -> DnsFunc:
    """A dkimpy ``dnsfunc`` answering the TXT record each key publishes, None otherwise."""
    records = {f"{k.dns_name(domain)}.".encode(): k.dns_txt_value.encode() for k in keys}

    def get_txt(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name)

    return get_txt


def signature_count(message: bytes) -> int:
    return len(re.findall(rb"(?im)^dkim-signature:", message))


def verify_all(message: bytes, dnsfunc: DnsFunc) -> list[bool]:
    """dkimpy's verdict on each DKIM-Signature of ``message``, topmost first.

    ``DKIM.verify`` raises on a body hash mismatch where ``dkim.verify`` answers
    False: both count as a failed verification.
    """
    verifier = dkim.DKIM(message)

    def verdict(idx: int) -> bool:
        try:
            return bool(verifier.verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DKIMException:
            return False

    return [verdict(i) for i in range(signature_count(message))]


def tags(message: bytes, index: int = 0) -> dict[bytes, bytes]:
    """The tags of the ``index``-th DKIM-Signature, whitespace removed."""
    headers, _ = dkim.rfc822_parse(message)
    values = [v for n, v in headers if n.lower() == b"dkim-signature"]
    parsed = dkim.util.parse_tag_value(values[index])
    return {k: re.sub(rb"\s+", b"", v) for k, v in parsed.items()}


# -- signing and verifying --------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_one_key_signs_and_dkimpy_verifies(
    algorithm: str, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    key = rsa_key if algorithm == "rsa" else ed_key
    signed = DkimSigner(DOMAIN, [key]).sign(MESSAGE, timestamp=T)

    assert signed.endswith(MESSAGE)
    assert signature_count(signed) == 1
    assert dkim.verify(signed, dnsfunc=txt_records(key)) is True
    sig = tags(signed)
    assert sig[b"v"] == b"1"
    assert sig[b"a"] == {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}[algorithm]
    assert sig[b"c"] == b"relaxed/relaxed"
    assert sig[b"d"] == DOMAIN.encode()
    assert sig[b"s"] == key.selector.encode()
    assert sig[b"t"] == str(T).encode()
    # Present fields of the default list in message order, From once more (oversigned).
    assert sig[b"h"] == b"from:to:subject:date:message-id:mime-version:content-type:from"


def test_both_keys_give_two_signatures_that_each_verify(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    signed = DkimSigner(DOMAIN, [ed_key, rsa_key]).sign(MESSAGE)

    assert signature_count(signed) == 2
    assert [tags(signed, 0)[b"a"], tags(signed, 1)[b"a"]] == [b"ed25519-sha256", b"rsa-sha256"]
    assert verify_all(signed, txt_records(ed_key, rsa_key)) == [True, True]
    # Each stands on its own: a receiver knowing only one key still verifies that one.
    assert verify_all(signed, txt_records(rsa_key)) == [False, True]
    assert verify_all(signed, txt_records(ed_key)) == [True, False]


def test_body_hash_matches_dkimpy_own_signer(rsa_key: DkimKey) -> None:
    ours = DkimSigner(DOMAIN, [rsa_key]).sign(MESSAGE)
    theirs = dkim.sign(
        MESSAGE,
        rsa_key.selector.encode(),
        DOMAIN.encode(),
        rsa_key.private_pem.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
    )
    assert tags(ours)[b"bh"] == tags(theirs + MESSAGE)[b"bh"]


def test_signature_header_lines_stay_short(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    many = b"".join(b"References: <%d@example.com>\r\n" % i for i in range(30))
    signed = DkimSigner(DOMAIN, [ed_key, rsa_key]).sign(many + MESSAGE)
    added = signed[: -len(many + MESSAGE)]
    assert all(len(line) <= 78 for line in added.split(b"\r\n"))
    assert verify_all(signed, txt_records(ed_key, rsa_key)) == [True, True]


# -- tampering --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        pytest.param(b"Agent One\r\n", b"Agent Two\r\n", id="body"),
        pytest.param(b"a body", b"a b0dy", id="body-word"),
        pytest.param(b"Hello there", b"Hello thera", id="subject"),
        pytest.param(b"<someone@example.org>", b"<other@example.org>", id="to"),
        pytest.param(b"X-Not-Signed", b"From: evil@example.net\r\nX-Not-Signed", id="added-from"),
        pytest.param(b"Date:", b"Subject: Urgent\r\nDate:", id="added-subject"),
    ],
)
def test_tampering_breaks_every_signature(
    old: bytes, new: bytes, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    signed = DkimSigner(DOMAIN, [ed_key, rsa_key]).sign(MESSAGE)
    assert signed.count(old) == 1
    assert verify_all(signed.replace(old, new), txt_records(ed_key, rsa_key)) == [False, False]


def test_relaxed_canonicalization_survives_harmless_changes(
    rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    signed = DkimSigner(DOMAIN, [ed_key, rsa_key]).sign(MESSAGE)
    changed = (
        signed.replace(b"Subject: Hello there", b"Subject:   Hello\r\n\tthere  ")
        .replace(b"a body  with", b"a body with")
        .replace(b"X-Not-Signed: yes\r\n", b"Received: from relay\r\n")
    )
    changed += b"\r\n\r\n"  # trailing empty lines are ignored
    assert verify_all(changed, txt_records(ed_key, rsa_key)) == [True, True]


# -- line endings and encodings ---------------------------------------------------------


def test_crlf_input_keeps_crlf(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    signed = DkimSigner(DOMAIN, [ed_key, rsa_key]).sign(MESSAGE)
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert b"\r" not in signed.replace(b"\r\n", b"")


def test_lf_only_input_keeps_lf_and_verifies_either_way(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    lf_message = MESSAGE.replace(b"\r\n", b"\n")
    signed = DkimSigner(DOMAIN, [ed_key, rsa_key]).sign(lf_message)

    assert b"\r" not in signed
    assert signed.endswith(lf_message)
    dnsfunc = txt_records(ed_key, rsa_key)
    assert verify_all(signed, dnsfunc) == [True, True]
    # An MTA converts to CRLF on the wire: the signatures still hold.
    assert verify_all(signed.replace(b"\n", b"\r\n"), dnsfunc) == [True, True]


@pytest.mark.parametrize("policy", [email.policy.SMTP, email.policy.SMTPUTF8], ids=str)
def test_non_ascii_subject_and_body(
    policy: email.policy.Policy, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    msg = EmailMessage(policy=policy)
    msg["From"] = "Agent <agent@example.com>"
    msg["To"] = "Zoë <zoe@example.org>"
    msg["Subject"] = "Réunion de l'équipe — 会議の議題 🎉 " + "très long " * 8
    msg["Message-ID"] = "<2@example.com>"
    msg.set_content("Bonjour, voilà le compte-rendu.\n\n— l'agent\n")
    message = msg.as_bytes()
    if policy is email.policy.SMTP:
        assert b"=?utf-8?" in message

    signed = DkimSigner(DOMAIN, [ed_key, rsa_key]).sign(message)
    assert verify_all(signed, txt_records(ed_key, rsa_key)) == [True, True]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    subject=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=120),
    encode_subject=st.booleans(),
    lines=st.lists(
        st.text(
            alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
            max_size=100,
        ),
        max_size=12,
    ),
    trailing_blank_lines=st.integers(0, 3),
    linesep=st.sampled_from(["\r\n", "\n"]),
    which=st.sampled_from(["rsa", "ed25519", "both"]),
)
def test_any_subject_and_body_verifies(
    rsa_key: DkimKey,
    ed_key: DkimKey,
    subject: str,
    encode_subject: bool,
    lines: list[str],
    trailing_blank_lines: int,
    linesep: str,
    which: str,
) -> None:
    if encode_subject:
        subject_field = email.header.Header(subject, "utf-8", header_name="Subject")
        subject_value = subject_field.encode(linesep=linesep)
    else:
        # A raw (SMTPUTF8) subject: any characters but line breaks, spacing as it comes.
        subject_value = re.sub(r"[\r\n]", " ", subject)
    head = linesep.join(
        [
            "From: agent@example.com",
            "To: someone@example.org",
            f"Subject: {subject_value}",
            "Message-ID: <3@example.com>",
            "",
            "",
        ]
    )
    body = linesep.join(lines) + linesep * trailing_blank_lines
    message = (head + body).encode("utf-8")
    keys = {"rsa": [rsa_key], "ed25519": [ed_key], "both": [ed_key, rsa_key]}[which]

    signed = DkimSigner(DOMAIN, keys).sign(message)

    assert signed.endswith(message)
    assert verify_all(signed, txt_records(*keys)) == [True] * len(keys)


# -- messages that cannot be signed -----------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(MESSAGE.replace(b"From: Agent One <agent-1@example.com>\r\n", b""), id="none"),
        pytest.param(b"From: a@example.com\r\n" + MESSAGE, id="two"),
        pytest.param(b"", id="empty"),
        pytest.param(b" folded: first\r\n" + MESSAGE, id="starts-folded"),
        pytest.param(b"From a@example.com no colon\r\nnot a header\r\n\r\nbody", id="garbage"),
    ],
)
def test_message_without_exactly_one_from_is_refused(message: bytes, ed_key: DkimKey) -> None:
    with pytest.raises(InvalidInput) as caught:
        DkimSigner(DOMAIN, [ed_key]).sign(message)
    assert caught.value.field == "message"


def test_timestamp_must_be_unix_seconds(ed_key: DkimKey) -> None:
    with pytest.raises(InvalidInput, match="timestamp"):
        DkimSigner(DOMAIN, [ed_key]).sign(MESSAGE, timestamp=-1)


# -- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_generated_key_publishes_its_public_key(
    algorithm: str, rsa_key: DkimKey, ed_key: DkimKey
) -> None:
    key = rsa_key if algorithm == "rsa" else ed_key
    assert key.algorithm == algorithm
    assert key.private_pem.startswith("-----BEGIN PRIVATE KEY-----\n")  # PKCS#8
    assert key.dns_name("Example.COM") == f"{key.selector}._domainkey.example.com"
    match = re.fullmatch(rf"v=DKIM1; k={algorithm}; p=([A-Za-z0-9+/=]+)", key.dns_txt_value)
    assert match is not None
    published = base64.b64decode(match.group(1))
    private = serialization.load_pem_private_key(key.private_pem.encode(), password=None)
    if algorithm == "ed25519":
        assert isinstance(private, ed25519.Ed25519PrivateKey)
        assert len(published) == 32  # RFC 8463: the raw key, not SubjectPublicKeyInfo
        assert ed25519.Ed25519PublicKey.from_public_bytes(published) == private.public_key()
    else:
        assert isinstance(private, rsa.RSAPrivateKey)
        assert private.key_size == 2048
        assert serialization.load_der_public_key(published) == private.public_key()


def test_from_pem_round_trips_and_accepts_pkcs1(rsa_key: DkimKey, ed_key: DkimKey) -> None:
    assert DkimKey.from_pem(ed_key.private_pem, selector=ed_key.selector) == ed_key
    assert DkimKey.from_pem(rsa_key.private_pem.encode(), selector=rsa_key.selector) == rsa_key
    private = serialization.load_pem_private_key(rsa_key.private_pem.encode(), password=None)
    pkcs1 = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pkcs1.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert DkimKey.from_pem(pkcs1, selector=rsa_key.selector) == rsa_key
    # The store keeps {"selector", "algorithm", "private_pem"}: the fields rebuild the key.
    row = {"selector": "rsa2024", "algorithm": "rsa", "private_pem": rsa_key.private_pem}
    assert DkimKey(**row) == rsa_key  # type: ignore[arg-type]


def test_key_keeps_its_secret_out_of_repr_and_pickles(ed_key: DkimKey) -> None:
    assert "PRIVATE" not in repr(ed_key)
    assert pickle.loads(pickle.dumps(ed_key)) == ed_key
    signer = DkimSigner(DOMAIN, [pickle.loads(pickle.dumps(ed_key))])
    assert dkim.verify(signer.sign(MESSAGE), dnsfunc=txt_records(ed_key)) is True


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, password: bytes | None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


@pytest.mark.parametrize(
    "make_pem",
    [
        pytest.param(lambda k: "not a key", id="garbage"),
        pytest.param(lambda k: "", id="empty"),
        pytest.param(lambda k: k.private_pem[:200] + k.private_pem[-30:], id="truncated"),
        pytest.param(lambda k: k.private_pem.replace("A", "B"), id="corrupted"),
        pytest.param(lambda k: k.dns_txt_value, id="public-record"),
        pytest.param(lambda k: _pem(ec.generate_private_key(ec.SECP256R1()), None), id="ecdsa-key"),
        pytest.param(
            lambda k: _pem(rsa.generate_private_key(65537, 2048), b"secret"), id="encrypted"
        ),
    ],
)
def test_bad_pem_is_invalid_input(make_pem: Callable[[DkimKey], str], rsa_key: DkimKey) -> None:
    pem = make_pem(rsa_key)
    with pytest.raises(InvalidInput) as caught:
        DkimKey.from_pem(pem, selector="s1")
    assert isinstance(caught.value, ValueError)
    assert caught.value.field == "dkim_key"
    assert rsa_key.private_pem[40:80] not in str(caught.value)  # no key material in errors


def test_key_of_the_wrong_algorithm_is_invalid_input(rsa_key: DkimKey) -> None:
    with pytest.raises(InvalidInput, match="rsa key, not an ed25519 key") as caught:
        DkimKey("s1", "ed25519", rsa_key.private_pem)
    assert caught.value.field == "dkim_key"


@pytest.mark.parametrize("selector", ["", "has space", "-lead", "a..b", "under_score", "x" * 64])
def test_bad_selector_is_invalid_input(selector: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        generate_key("ed25519", selector=selector)
    assert caught.value.field == "selector"


def test_unknown_algorithm_is_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        generate_key("dsa", selector="s1")  # type: ignore[arg-type]
    assert caught.value.field == "algorithm"


# -- signer configuration ---------------------------------------------------------------


def test_signer_configuration_is_checked(ed_key: DkimKey) -> None:
    twin = generate_key("ed25519", selector=ed_key.selector)
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: DkimSigner(DOMAIN, []), "keys"),
        (lambda: DkimSigner(DOMAIN, [ed_key, twin]), "keys"),
        (lambda: DkimSigner("not a domain", [ed_key]), "domain"),
        (lambda: DkimSigner(DOMAIN, [ed_key], signed_headers=["To", "Subject"]), "signed_headers"),
        (lambda: DkimSigner(DOMAIN, [ed_key], signed_headers=["From", "Bcc"]), "signed_headers"),
        (lambda: DkimSigner(DOMAIN, [ed_key], signed_headers="From"), "signed_headers"),
        (
            lambda: DkimSigner(DOMAIN, [ed_key], oversigned_headers=["Received"]),
            "oversigned_headers",
        ),
    ]
    for build, field in cases:
        with pytest.raises(InvalidInput) as caught:
            build()
        assert caught.value.field == field


def test_signer_header_lists_are_configurable(ed_key: DkimKey) -> None:
    signer = DkimSigner(
        "EXAMPLE.com",
        [ed_key],
        signed_headers=["From", "Subject", "Reply-To"],
        # Oversigned implies signed: X-Not-Signed is signed too, and once more.
        oversigned_headers=["From", "X-Not-Signed", "Reply-To"],
    )
    assert signer.domain == "example.com"
    assert signer.keys == (ed_key,)
    signed = signer.sign(MESSAGE)
    assert tags(signed)[b"h"] == b"from:subject:x-not-signed:from:x-not-signed:reply-to"
    dnsfunc = txt_records(ed_key)
    assert dkim.verify(signed, dnsfunc=dnsfunc) is True
    assert dkim.verify(signed.replace(b"To: Someone", b"To: Other"), dnsfunc=dnsfunc) is True
    assert dkim.verify(signed.replace(b"Signed: yes", b"Signed: no"), dnsfunc=dnsfunc) is False
    # Reply-To was absent and oversigned: adding one breaks the signature.
    assert dkim.verify(b"Reply-To: evil@example.net\r\n" + signed, dnsfunc=dnsfunc) is False
