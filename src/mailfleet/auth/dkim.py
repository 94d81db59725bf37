"""DKIM signing of outbound mail: RSA-SHA256 (RFC 6376) and Ed25519-SHA256 (RFC 8463).

A domain publishes one TXT record per key at ``<selector>._domainkey.<domain>``
(:attr:`DkimKey.dns_txt_value`); :class:`DkimSigner` prepends one
``DKIM-Signature`` header per key to each outbound message, so a domain holding
an Ed25519 and an RSA key signs every message twice and receivers that do not
know Ed25519 still find the RSA signature.

How the work is split with dkimpy: dkimpy does RSA in pure Python (~100
signatures/s), so the private-key step runs in OpenSSL through ``cryptography``
(keys parsed once, in :class:`DkimSigner`'s constructor). Everything a verifier
must reproduce byte for byte comes from dkimpy itself, the same functions its
own verifier calls: :func:`dkim.rfc822_parse` splits the message,
:class:`dkim.canonicalization.CanonicalizationPolicy` canonicalizes it
(relaxed/relaxed), and :func:`dkim.hash_headers` selects the signed header
fields (bottom-up, RFC 6376 5.4.2), strips ``b=`` from the signature header and
feeds the hash. Only the layout of the signature header (which tags, how they
are folded) is ours.

Signatures carry ``v a c d s t h bh b``; ``h=`` lists the present header fields
of :data:`DEFAULT_SIGNED_HEADERS` and each of :data:`DEFAULT_OVERSIGNED_HEADERS`
once more than it appears, so a From field added in transit breaks the
signature.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy

from mailfleet.model.addresses import normalize_domain
from mailfleet.model.errors import InvalidInput

__all__ = [
    "DEFAULT_OVERSIGNED_HEADERS",
    "DEFAULT_SIGNED_HEADERS",
    "DkimAlgorithm",
    "DkimKey",
    "DkimSigner",
    "generate_key",
]

DkimAlgorithm = Literal["rsa", "ed25519"]
"""A key type, as in the ``k=`` tag of the DNS record."""

DEFAULT_SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Reply-To",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
)
"""Header fields signed when present, every occurrence."""

DEFAULT_OVERSIGNED_HEADERS: tuple[str, ...] = ("From",)
"""Header fields signed once more than they appear, so none can be added in transit."""

RSA_KEY_BITS = 2048
"""The size of the RSA keys :func:`generate_key` makes."""

# RFC 8301: signers use at least 1024 bits; verifiers need not go beyond 4096.
_RSA_MIN_BITS = 1024
_RSA_MAX_BITS = 4096

_ALGORITHMS: tuple[str, ...] = get_args(DkimAlgorithm)
_SIGNATURE_ALGORITHM: dict[str, bytes] = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}

# RFC 6376 3.1: selector = sub-domain *( "." sub-domain ), sub-domain as in RFC 5321.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# RFC 5322 3.6.8: a field name is printable US-ASCII except the colon.
_FIELD_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+")

_HEADER_NAME = b"DKIM-Signature"
_LINE_LIMIT = 78  # RFC 5322 2.1.1: lines SHOULD be no longer than 78 characters.
_RELAXED: Any = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
_PRIVATE_KEY_TYPES = (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One DKIM private key of a domain, published under ``selector``.

    ``private_pem`` is an unencrypted PKCS#8 PEM (another PEM form given to
    the constructor is converted to it); it is kept out of ``repr``. Building
    a ``DkimKey`` parses and checks the key: a malformed or encrypted PEM, a
    key of the wrong type, or an RSA key outside 1024-4096 bits raises
    :class:`~mailfleet.model.errors.InvalidInput` with ``field="dkim_key"``.
    """

    selector: str
    algorithm: DkimAlgorithm
    private_pem: str = field(repr=False)
    _private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _check_selector(self.selector)
        if self.algorithm not in _ALGORITHMS:
            raise InvalidInput(
                "algorithm",
                f"{self.algorithm!r} is not a DKIM key type (expected one of {_ALGORITHMS})",
                value=self.algorithm,
            )
        key = _load_private_key(self.private_pem)
        found = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ed25519"
        if found != self.algorithm:
            raise InvalidInput(
                "dkim_key", f"the PEM holds an {found} key, not an {self.algorithm} key"
            )
        object.__setattr__(self, "_private_key", key)
        object.__setattr__(self, "private_pem", _pkcs8_pem(key))

    def __reduce__(self) -> tuple[type[DkimKey], tuple[str, str, str]]:
        # The parsed key does not pickle: rebuild it from the PEM.
        return (DkimKey, (self.selector, self.algorithm, self.private_pem))

    @classmethod
    def from_pem(cls, private_pem: str | bytes, *, selector: str) -> DkimKey:
        """Load an unencrypted private key (PKCS#8, or PKCS#1 for RSA) in PEM form.

        The algorithm is taken from the key. Raises
        :class:`~mailfleet.model.errors.InvalidInput` (``field="dkim_key"``)
        when the PEM is not a usable RSA or Ed25519 private key.
        """
        key = _load_private_key(private_pem)
        algorithm: DkimAlgorithm = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ed25519"
        return cls(selector, algorithm, _pkcs8_pem(key))

    def dns_name(self, domain: str) -> str:
        """Where the public key is published: ``<selector>._domainkey.<domain>``."""
        return f"{self.selector}._domainkey.{normalize_domain(domain)}"

    @property
    def dns_txt_value(self) -> str:
        """The TXT record value to publish at :meth:`dns_name`.

        ``v=DKIM1; k=rsa; p=<base64 DER SubjectPublicKeyInfo>`` for RSA,
        ``v=DKIM1; k=ed25519; p=<base64 of the raw 32-byte key>`` for Ed25519
        (RFC 8463 section 4). An RSA-2048 value is longer than 255 bytes: the
        DNS server must split it into several character-strings of one record.
        """
        public = self._private_key.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return f"v=DKIM1; k={self.algorithm}; p={base64.b64encode(raw).decode('ascii')}"


def generate_key(algorithm: DkimAlgorithm, *, selector: str) -> DkimKey:
    """A new key: RSA-2048 (``"rsa"``) or Ed25519 (``"ed25519"``), published under ``selector``."""
    _check_selector(selector)
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise InvalidInput(
            "algorithm",
            f"{algorithm!r} is not a DKIM key type (expected one of {_ALGORITHMS})",
            value=algorithm,
        )
    return DkimKey(selector, algorithm, _pkcs8_pem(key))


class DkimSigner:
    """Signs the outbound mail of ``domain`` (``d=``) with each of ``keys``.

    Keys are parsed once, here; :meth:`sign` is pure CPU work and keeps no
    state between calls, so one signer may serve every message of the domain.
    Signatures appear in the order of ``keys``, the first one topmost.

    ``signed_headers`` (present fields are signed, every occurrence) must
    include From and none of the fields RFC 6376 says not to sign (Received,
    Return-Path, Bcc, DKIM-Signature...); ``oversigned_headers`` are signed
    once more than they appear (so none can be added without breaking the
    signature). Raises
    :class:`~mailfleet.model.errors.InvalidInput` for a bad domain
    (``field="domain"``), no keys or two keys with the same selector
    (``field="keys"``), or a bad header list (``field="signed_headers"``).
    """

    __slots__ = ("_domain", "_keys", "_oversigned", "_signed", "_signers")

    def __init__(
        self,
        domain: str,
        keys: Sequence[DkimKey],
        *,
        signed_headers: Iterable[str] = DEFAULT_SIGNED_HEADERS,
        oversigned_headers: Iterable[str] = DEFAULT_OVERSIGNED_HEADERS,
    ) -> None:
        self._domain = normalize_domain(domain)
        self._keys = tuple(keys)
        if not self._keys:
            raise InvalidInput("keys", "a signer needs at least one key", value=[])
        for key in self._keys:
            if not isinstance(key, DkimKey):
                raise InvalidInput("keys", f"{key!r} is not a DkimKey", value=key)
        selectors = [key.selector for key in self._keys]
        if len(set(selectors)) != len(selectors):
            raise InvalidInput("keys", "two keys share a selector", value=selectors)
        signed = _field_names(signed_headers, "signed_headers")
        if b"from" not in signed:
            raise InvalidInput("signed_headers", "the From field must be signed (RFC 6376 5.4)")
        self._oversigned = _field_names(oversigned_headers, "oversigned_headers")
        self._signed = frozenset(signed + self._oversigned)
        self._signers = tuple(_KeySigner(self._domain, key) for key in self._keys)

    @property
    def domain(self) -> str:
        """The signing domain (``d=``), lower-case ASCII."""
        return self._domain

    @property
    def keys(self) -> tuple[DkimKey, ...]:
        """The keys, in the order their signatures appear."""
        return self._keys

    def sign(self, message: bytes, /, *, timestamp: int | None = None) -> bytes:
        """``message`` with one ``DKIM-Signature`` header per key prepended.

        ``message`` is the complete RFC 5322 message as it will be sent, with
        CRLF or LF-only line endings; the added headers use the same ones.
        ``timestamp`` (``t=``, Unix seconds) defaults to now. Raises
        :class:`~mailfleet.model.errors.InvalidInput` (``field="message"``)
        when the message cannot be parsed or does not have exactly one From
        header field.
        """
        if not isinstance(message, bytes | bytearray | memoryview):
            raise InvalidInput("message", "a message to sign must be bytes", value=type(message))
        if timestamp is None:
            timestamp = int(time.time())
        elif not isinstance(timestamp, int) or timestamp < 0:
            raise InvalidInput("timestamp", "expected Unix seconds, an int >= 0", value=timestamp)
        message = bytes(message)
        headers, body = _parse(message)
        include, fields = self._select(headers)
        # Only the fields named in h= are hashed: canonicalize just those.
        canonical_headers = _RELAXED.canonicalize_headers(fields)
        body_hash = hashlib.sha256(_RELAXED.canonicalize_body(body)).digest()
        after_s = [b"t=%d;" % timestamp, *_h_tokens(include)]
        after_s.append(b"bh=" + base64.b64encode(body_hash) + b";")
        linesep = b"\n" if _lf_only(message) else b"\r\n"
        added = [
            signer.header(after_s, include, canonical_headers, linesep) for signer in self._signers
        ]
        return b"".join(added) + message

    def _select(self, headers: list[list[bytes]]) -> tuple[list[bytes], list[list[bytes]]]:
        """The ``h=`` list (signed fields in message order, then the oversigned names
        once more) and the header fields it names, in message order."""
        names = [name.lower() for name, _ in headers]
        froms = names.count(b"from")
        if froms != 1:
            raise InvalidInput(
                "message",
                "the message has no From header"
                if froms == 0
                else f"the message has {froms} From headers (RFC 5322 allows one)",
            )
        signed = self._signed
        include = [name for name in names if name in signed]
        fields = [field for name, field in zip(names, headers, strict=True) if name in signed]
        include.extend(self._oversigned)
        return include, fields

    def __repr__(self) -> str:
        keys = ", ".join(f"{k.algorithm}:{k.selector}" for k in self._keys)
        return f"DkimSigner({self._domain!r}, [{keys}])"


class _KeySigner:
    """The parsed key and fixed tags of one signature; builds its header."""

    __slots__ = ("_head", "_sign")

    def __init__(self, domain: str, key: DkimKey) -> None:
        private = key._private_key
        self._head = (
            b"v=1;",
            b"a=" + _SIGNATURE_ALGORITHM[key.algorithm] + b";",
            b"c=relaxed/relaxed;",
            b"d=" + domain.encode("ascii") + b";",
            b"s=" + key.selector.encode("ascii") + b";",
        )
        self._sign: Callable[[bytes], bytes]
        if isinstance(private, rsa.RSAPrivateKey):
            pkcs1, prehashed = padding.PKCS1v15(), Prehashed(hashes.SHA256())

            def sign_rsa(digest: bytes) -> bytes:
                return private.sign(digest, pkcs1, prehashed)

            self._sign = sign_rsa
        else:
            # RFC 8463 3: Ed25519 (pure) signs the SHA-256 hash of the headers.
            self._sign = private.sign

    def header(
        self,
        tail: list[bytes],
        include: list[bytes],
        canonical_headers: list[list[bytes]],
        linesep: bytes,
    ) -> bytes:
        """The folded ``DKIM-Signature`` header line, terminated by ``linesep``.

        ``tail`` holds the tokens after ``s=`` (``t=``, ``h=``, ``bh=``); a token
        that does not end a tag (a piece of ``h=`` ending in a colon) is glued
        to the next one without a space.
        """
        folder = _Folder(_HEADER_NAME + b":", linesep)
        glue = b" "
        for token in (*self._head, *tail):
            folder.add(token, glue=glue)
            glue = b"" if token.endswith(b":") else b" "
        # Like dkimpy, b= starts a line of its own; the signature then fills whole lines.
        folder.newline()
        folder.add(b"b=", glue=b"")
        unsigned = folder.value()
        hasher = hashlib.sha256()
        # dkimpy's own verifier hashes with this function: same selection, same b= stripping.
        sig_header = (_HEADER_NAME, unsigned)
        dkim.hash_headers(hasher, _RELAXED, canonical_headers, include, sig_header, None)
        signature = base64.b64encode(self._sign(hasher.digest()))
        folder.add_split(signature)
        return _HEADER_NAME + b":" + folder.value() + linesep


class _Folder:
    """Lays tokens out on lines of at most 78 characters, folding with ``linesep`` + space."""

    __slots__ = ("_column", "_linesep", "_parts")

    def __init__(self, start: bytes, linesep: bytes) -> None:
        self._parts: list[bytes] = []
        self._column = len(start)
        self._linesep = linesep

    def add(self, token: bytes, *, glue: bytes = b" ") -> None:
        """Append ``token`` after ``glue``, or on a new line when it would not fit."""
        if self._column + len(glue) + len(token) > _LINE_LIMIT and self._column > 1:
            self._parts.append(self._linesep + b" " + token)
            self._column = 1 + len(token)
        else:
            self._parts.append(glue + token)
            self._column += len(glue) + len(token)

    def newline(self) -> None:
        """Fold here."""
        self._parts.append(self._linesep + b" ")
        self._column = 1

    def add_split(self, data: bytes) -> None:
        """Append ``data`` directly, cut over as many lines as it needs (FWS is allowed in b=)."""
        while data:
            room = _LINE_LIMIT - self._column
            if room <= 0:
                self.newline()
                continue
            self._parts.append(data[:room])
            self._column += min(room, len(data))
            data = data[room:]

    def value(self) -> bytes:
        """The header value so far (after the colon, starting with a space)."""
        return b"".join(self._parts)


def _h_tokens(include: list[bytes]) -> list[bytes]:
    """``h=a:b:c;`` as tokens, foldable after each colon (RFC 6376 3.5 allows FWS there)."""
    tokens = [name + b":" for name in include]
    tokens[0] = b"h=" + tokens[0]
    tokens[-1] = tokens[-1][:-1] + b";"
    return tokens


def _parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """Split a message into header fields and body with dkimpy's own parser."""
    try:
        headers, body = dkim.rfc822_parse(message)
    except (dkim.MessageFormatError, IndexError) as exc:
        # IndexError: the message starts with a continuation line.
        raise InvalidInput("message", f"the message header cannot be parsed: {exc}") from None
    return cast(list[list[bytes]], headers), cast(bytes, body)


def _lf_only(message: bytes) -> bool:
    """Whether the message ends its lines with a bare LF (judged by the first line)."""
    end = message.find(b"\n")
    return end > 0 and message[end - 1] != 0x0D  # 0x0D is CR


def _field_names(names: Iterable[str], field_name: str) -> tuple[bytes, ...]:
    """Lower-case field names as bytes, checked against RFC 5322 and RFC 6376's do-not-sign list."""
    if isinstance(names, str):
        raise InvalidInput(field_name, "expected a list of header field names", value=names)
    result: list[bytes] = []
    for name in names:
        raw = name.strip().lower().encode("ascii", "replace") if isinstance(name, str) else b""
        if not _FIELD_NAME.fullmatch(raw):
            raise InvalidInput(field_name, f"{name!r} is not a header field name", value=name)
        if raw in dkim.DKIM.SHOULD_NOT:
            raise InvalidInput(field_name, f"{name} must not be signed (RFC 6376 5.4)", value=name)
        result.append(raw)
    return tuple(result)


def _check_selector(selector: str) -> None:
    if not isinstance(selector, str) or not _SELECTOR.fullmatch(selector):
        raise InvalidInput(
            "selector",
            f"{selector!r} is not a DKIM selector (dot-separated letters, digits and hyphens)",
            value=selector,
        )


def _load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey:
    """Parse an unencrypted PEM private key; the key material never appears in errors."""
    if isinstance(pem, str):
        data = pem.encode("ascii", "replace")
    elif isinstance(pem, bytes):
        data = pem
    else:
        raise InvalidInput("dkim_key", f"a PEM must be str or bytes, not {type(pem).__name__}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InvalidInput("dkim_key", "the private key is encrypted; give it in clear") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput("dkim_key", "not a PEM-encoded private key") from None
    if not isinstance(key, _PRIVATE_KEY_TYPES):
        raise InvalidInput(
            "dkim_key", f"a DKIM key must be RSA or Ed25519, not {type(key).__name__}"
        )
    if isinstance(key, rsa.RSAPrivateKey) and not _RSA_MIN_BITS <= key.key_size <= _RSA_MAX_BITS:
        raise InvalidInput(
            "dkim_key",
            f"an RSA key of {key.key_size} bits; DKIM needs {_RSA_MIN_BITS} to {_RSA_MAX_BITS}",
        )
    return key


def _pkcs8_pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
