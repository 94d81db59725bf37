"""DKIM private keys at rest: sealed under the operator's passphrase, or in the operator's files.

A key is stored in one of three forms (the JSON the domain row keeps):

- **sealed** (``dkim_key_secret`` set): AES-256-GCM under a key derived from
  the passphrase with scrypt (a random salt per key); the domain and the
  selector are the associated data, so a sealed key copied to another
  domain or selector does not open. ``{"sealed": {"v": 1, "kdf": "scrypt",
  "n", "r", "p", "salt", "nonce", "ciphertext"}}``, base64 values.
- **key file** (``dkim_key_dir`` set): the PEM is written to
  ``<dir>/<domain>/<selector>.pem`` (mode 0600, folders 0700) and the row
  holds only ``{"key_file": path}``.
- Outside dev mode with neither set, keys go to key files under the fleet's
  home (``Settings.effective_dkim_key_dir``), never in clear in the database.
- **clear** (neither set; dev mode only, the embedded default of a laptop
  fleet): ``{"private_pem": ...}``, said once per process in the debug log
  (a warning would be noise on every command of a laptop fleet).

Every form also keeps ``selector``, ``algorithm`` and ``dns_txt`` (the
public record). Opening a key that cannot be opened (a wrong passphrase, a
missing file) raises :class:`~mailfleet.model.errors.SigningFailed` naming
the domain and selector, never the key.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mailfleet.model.errors import InvalidInput, SigningFailed

from .dkim import DkimKey

__all__ = ["KeySettings", "KeyStore"]

log = logging.getLogger("mailfleet.keys")

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1  # ~50 ms and 32 MiB per key opened
_warned_clear = False


class _Secret(Protocol):
    def get_secret_value(self) -> str: ...


class KeySettings(Protocol):
    """The settings a key store is made from (``mailfleet.Settings`` has them)."""

    @property
    def dkim_key_secret(self) -> _Secret | None: ...
    @property
    def effective_dkim_key_dir(self) -> Path | None: ...
    @property
    def dev_mode(self) -> bool: ...


class KeyStore:
    """Seals and opens the DKIM private keys of an application's domains.

    ``secret`` is the operator's passphrase (``dkim_key_secret``), ``key_dir``
    the folder for key files (``dkim_key_dir``); with neither, keys are kept
    in clear, which only ``allow_clear`` (dev mode) permits.
    """

    def __init__(
        self, *, secret: str | None = None, key_dir: Path | None = None, allow_clear: bool = True
    ) -> None:
        if secret is not None and not secret:
            raise InvalidInput("settings.dkim_key_secret", "the passphrase is empty")
        self._secret = secret.encode() if secret else None
        self._key_dir = key_dir
        self._allow_clear = allow_clear

    @classmethod
    def from_settings(cls, settings: KeySettings) -> KeyStore:
        """The key store the settings describe (``dkim_key_secret``, the key folder;
        keys in clear only in ``dev_mode``)."""
        secret = settings.dkim_key_secret
        return cls(
            secret=None if secret is None else secret.get_secret_value(),
            key_dir=settings.effective_dkim_key_dir,
            allow_clear=settings.dev_mode,
        )

    def seal(self, domain: str, key: DkimKey, **extra: Any) -> dict[str, Any]:
        """The stored form of ``key`` (``extra`` fields added: status, created_at...)."""
        entry: dict[str, Any] = {
            "selector": key.selector,
            "algorithm": key.algorithm,
            "dns_txt": key.dns_txt_value,
            **extra,
        }
        self.require_storage()
        if self._key_dir is not None:
            entry["key_file"] = str(self._write_file(domain, key))
        elif self._secret is not None:
            entry["sealed"] = self._encrypt(domain, key)
        else:
            _warn_clear()
            entry["private_pem"] = key.private_pem
        return entry

    def require_storage(self) -> None:
        """Raise :class:`InvalidInput` when keys would have to be kept in clear outside
        dev mode: before any key is made, so a refusal stores nothing."""
        if self._key_dir is None and self._secret is None and not self._allow_clear:
            raise InvalidInput(
                "settings.dkim_key_secret",
                "outside dev mode DKIM private keys are not stored in clear: set "
                "MAILFLEET_DKIM_KEY_SECRET (a passphrase they are sealed under) or "
                "MAILFLEET_DKIM_KEY_DIR (a folder for key files)",
            )

    def open(self, domain: str, entry: dict[str, Any]) -> DkimKey:
        """The private key a stored entry holds; :class:`SigningFailed` when it cannot be had."""
        selector = str(entry.get("selector", "?"))
        where = f"the DKIM key {selector} of {domain}"
        if "private_pem" in entry:
            pem = str(entry["private_pem"])
        elif "key_file" in entry:
            try:
                pem = Path(entry["key_file"]).read_text("ascii")
            except OSError as exc:
                raise SigningFailed(f"{where}: cannot read its key file: {exc.strerror}") from None
            except UnicodeError:
                raise SigningFailed(f"{where}: its key file is not a PEM") from None
        elif "sealed" in entry:
            pem = self._decrypt(domain, selector, entry["sealed"], where)
        else:
            raise SigningFailed(f"{where} holds no private key")
        try:
            return DkimKey.from_pem(pem, selector=selector)
        except InvalidInput as exc:
            raise SigningFailed(f"{where}: {exc.message}") from None

    def forget(self, entry: dict[str, Any]) -> None:
        """Delete a retired key's file, if it lives in one."""
        if "key_file" in entry:
            Path(entry["key_file"]).unlink(missing_ok=True)

    def _encrypt(self, domain: str, key: DkimKey) -> dict[str, Any]:
        assert self._secret is not None
        salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
        sealed = AESGCM(_derive(self._secret, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)).encrypt(
            nonce, key.private_pem.encode("ascii"), _associated(domain, key.selector)
        )
        return {
            "v": 1,
            "kdf": "scrypt",
            "n": _SCRYPT_N,
            "r": _SCRYPT_R,
            "p": _SCRYPT_P,
            "salt": _b64(salt),
            "nonce": _b64(nonce),
            "ciphertext": _b64(sealed),
        }

    def _decrypt(self, domain: str, selector: str, sealed: Any, where: str) -> str:
        if self._secret is None:
            raise SigningFailed(f"{where} is sealed: set MAILFLEET_DKIM_KEY_SECRET to open it")
        try:
            key = _derive(
                self._secret,
                _unb64(sealed["salt"]),
                int(sealed["n"]),
                int(sealed["r"]),
                int(sealed["p"]),
            )
            clear = AESGCM(key).decrypt(
                _unb64(sealed["nonce"]),
                _unb64(sealed["ciphertext"]),
                _associated(domain, selector),
            )
        except InvalidTag:
            raise SigningFailed(
                f"{where} does not open: a wrong MAILFLEET_DKIM_KEY_SECRET, or a key "
                "sealed for another domain or selector"
            ) from None
        except (KeyError, TypeError, ValueError):
            raise SigningFailed(f"{where}: its sealed form is damaged") from None
        return clear.decode("ascii")

    def _write_file(self, domain: str, key: DkimKey) -> Path:
        assert self._key_dir is not None
        folder = self._key_dir.expanduser().resolve() / domain
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        path = folder / f"{key.selector}.pem"
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.read_text("ascii") == key.private_pem:
                return path
            raise InvalidInput(
                "settings.dkim_key_dir", f"{path} exists and holds another key: not overwritten"
            ) from None
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(key.private_pem)
        return path


def _derive(secret: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)


def _associated(domain: str, selector: str) -> bytes:
    return f"mailfleet-dkim:{domain}:{selector}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    return base64.b64decode(str(text), validate=True)


def _warn_clear() -> None:
    global _warned_clear
    if not _warned_clear:
        _warned_clear = True
        log.debug(
            "DKIM private keys are stored unencrypted; set MAILFLEET_DKIM_KEY_SECRET "
            "(or MAILFLEET_DKIM_KEY_DIR)"
        )
