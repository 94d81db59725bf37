"""Settings, read from ``MAILFLEET_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .model.addresses import normalize_domain
from .model.errors import InvalidInput
from .model.nameservers import parse_nameserver

__all__ = ["Settings"]

_DNS_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?")


class Settings(BaseSettings):
    """Every setting of a fleet, with its embedded default.

    Each field ``name`` is read from the environment variable ``MAILFLEET_NAME``.
    """

    model_config = SettingsConfigDict(
        env_prefix="MAILFLEET_", env_file=".env", extra="ignore", frozen=True
    )

    home: Path = Field(Path(".mailfleet"), description="folder for embedded state (SQLite file)")
    database_url: str | None = Field(
        None,
        description="sqlite:///PATH or postgresql://USER@HOST/DB; default: SQLite under home",
    )
    application: str = Field("default", description="the application (tenant) this fleet runs")
    dev_mode: bool = Field(True, description="register agents' domains automatically")
    provision_batch_size: int = Field(
        1000, ge=1, le=10_000, description="addresses per transaction in bulk provisioning"
    )

    concurrency: int = Field(64, ge=1, description="handlers running at once, across grants")
    queue_limit: int = Field(
        1000, ge=1, description="messages waiting per grant before deliveries are refused (451)"
    )
    handler_timeout: float | None = Field(
        30.0, gt=0, description="seconds a handler may run; unset for no limit"
    )
    max_attempts: int = Field(5, ge=1, description="handler attempts before a dead letter")
    retry_base: float = Field(1.0, gt=0, description="seconds before the first retry (doubles)")
    retry_max: float = Field(300.0, gt=0, description="longest wait between retries")
    idle_timeout: float = Field(60.0, gt=0, description="seconds before an idle agent stops")
    lease_ttl: float = Field(
        30.0, gt=0, description="seconds a dead worker's grants wait before another takes them"
    )
    poll_interval: float = Field(1.0, gt=0, description="seconds between looks for new work")
    shutdown_grace: float = Field(
        10.0, ge=0, description="seconds running handlers get to finish at shutdown"
    )
    worker_id: str | None = Field(None, description="this worker's name (default: host-pid-tag)")
    run_worker: bool = Field(
        True,
        description="false: a front end only (SMTP, IMAP) that stores mail for other workers",
    )
    smtp_host: str = Field("127.0.0.1", description="address the SMTP server (MX) listens on")
    smtp_port: int | None = Field(
        None, ge=0, le=65535, description="SMTP port; unset: no SMTP server (`run` uses 2525)"
    )
    api_host: str = Field("127.0.0.1", description="address the HTTP API listens on")
    api_port: int = Field(
        8025, ge=0, le=65535, description="HTTP API port (`run` and `api`; 0: any free one)"
    )
    api_key: SecretStr | None = Field(
        None,
        description="dev mode: the admin API key `run` registers and prints (default: a new one)",
    )
    api_events_poll: float = Field(
        0.25,
        gt=0,
        le=10,
        description="seconds between the event stream's reads of the store's new events",
    )
    api_events_settle: float = Field(
        2.0,
        ge=0,
        le=60,
        description="seconds the event log waits for a missing id (PostgreSQL) before passing it",
    )
    api_sse_keepalive: float = Field(
        15.0, gt=0, le=300, description="seconds between keep-alive comments of an idle SSE stream"
    )
    api_idempotency_ttl: float = Field(
        86_400.0, gt=0, description="seconds an Idempotency-Key and its first answer are kept"
    )
    api_idempotency_lock: float = Field(
        60.0,
        gt=0,
        description="seconds a request holds its Idempotency-Key; a retry after that takes over",
    )
    smtp_hostname: str = Field("localhost", description="the name the MX greets with")
    smtp_max_recipients: int = Field(100, ge=1, description="recipients per message")
    smtp_tls_cert: Path | None = Field(None, description="PEM certificate: offer STARTTLS")
    smtp_tls_key: Path | None = Field(None, description="PEM private key of the certificate")
    relay_host: str | None = Field(
        None, description="outbound relay (smarthost); unset: dev mode (local delivery, capture)"
    )
    relay_port: int = Field(587, ge=1, le=65535, description="relay port")
    relay_starttls: bool | None = Field(
        None, description="true: require STARTTLS; false: never; unset: when offered"
    )
    relay_tls: bool = Field(False, description="implicit TLS (port 465 style)")
    relay_username: str | None = Field(None, description="relay AUTH user")
    relay_password: SecretStr | None = Field(None, description="relay AUTH password")
    relay_pool_size: int = Field(4, ge=1, le=64, description="reused connections to the relay")
    relay_validate_certs: bool = Field(True, description="verify the relay's certificate")
    relay_timeout: float = Field(
        60.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds the relay has to accept a connection and to answer each command "
        "(the end of DATA too); a send it takes longer over is deferred (4xx)",
    )
    send_lease: float = Field(
        300.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a sender holds the messages it claimed; one it crashed with is "
        "sent again once this passes (give it at least 4 x relay_timeout)",
    )
    simulate: bool = Field(
        False,
        description="route mail for external domains to the simulated internet instead of "
        "the capture sink (dev mode; excludes relay_host)",
    )
    simulator_profiles: Annotated[dict[str, dict[str, float]], NoDecode] = Field(
        default_factory=dict,
        description="the simulated internet's domain profiles, merged over its defaults: "
        'a JSON object domain -> rates, e.g. {"corp.example.net": {"late_bounce": 0.2}} '
        "(unknown_user, mailbox_full, throttle, greylist, late_bounce, complaint)",
    )
    simulator_seed: int = Field(0, description="the seed the simulated internet's outcomes follow")
    simulator_report_delay: float = Field(
        2.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds before the simulated internet mails a late bounce or complaint",
    )
    retry_schedule: list[float] = Field(
        [60.0, 300.0, 1800.0, 7200.0, 21600.0],
        description="seconds between tries after a 4xx; a soft bounce when spent (JSON list)",
    )
    soft_bounce_limit: int = Field(
        3, ge=0, description="soft bounces in a row that suppress a recipient (0: never)"
    )
    dns_nameservers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="nameservers to ask, each host or host:port ([v6]:port); "
        "a JSON list or comma-separated; empty: the system's (/etc/resolv.conf)",
    )
    dns_timeout: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a DNS lookup may take, retries and servers included",
    )
    recipient_domain_check: Literal["auto", "on", "off"] = Field(
        "auto",
        description="look up each recipient domain's MX before a send is queued; "
        "auto: when dns_nameservers is set or outside dev mode",
    )
    dkim_key_secret: SecretStr | None = Field(
        None, description="a passphrase; DKIM private keys are stored sealed under it"
    )
    dkim_key_dir: Path | None = Field(
        None,
        description="a folder the operator controls; DKIM private keys are kept there as "
        "PEM files, the database holds only their paths (outside dev mode with no "
        "dkim_key_secret: home/dkim-keys)",
    )
    mx_host: str | None = Field(
        None, description="the host the domains' MX records point at; default: smtp_hostname"
    )
    relay_addresses: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IP addresses or networks the relay sends from, authorised by SPF "
        "(a JSON list or comma-separated); default: relay_host's addresses",
    )
    spf_include: str | None = Field(
        None, description="a domain whose SPF record the domains' SPF includes (the relay's)"
    )
    bounce_domain: str | None = Field(
        None,
        description="the envelope (VERP) domain of sends, if not the sender's own; "
        "{domain} stands for the sender's domain (e.g. bounces.{domain})",
    )
    public_url: str = Field(
        "http://127.0.0.1:8025",
        description="the HTTP API's base URL as recipients reach it: the one-click "
        "unsubscribe and opt-in links of sent mail start with it",
    )
    unsubscribe_secret: SecretStr | None = Field(
        None,
        description="the key unsubscribe and opt-in tokens are signed with (HMAC-SHA256); "
        "unset: a random key made once per application and kept in the database",
    )
    opt_in_expiry_days: float = Field(
        7.0,
        gt=0,
        allow_inf_nan=False,
        description="days a double opt-in confirmation may be answered before it expires",
    )
    dmarc_policy: Literal["none", "quarantine", "reject"] = Field(
        "none", description="the DMARC policy (p=) of the records mailfleet prints"
    )
    domain_audit_interval: float = Field(
        3600.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds between DNS audits of each registered domain (0: never)",
    )
    webhook_delivery: bool = Field(
        True, description="deliver webhook events in `serve()` (any number of processes may)"
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, allow_inf_nan=False, description="seconds an endpoint has to answer a POST"
    )
    webhook_retry_base_seconds: float = Field(
        5.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds before a failed delivery's first retry (doubles, ±20 %)",
    )
    webhook_retry_max_seconds: float = Field(
        3600.0,
        gt=0,
        allow_inf_nan=False,
        description="longest wait between two tries of an endpoint",
    )
    webhook_failing_after: int = Field(
        5, ge=1, description="failed attempts in a row that mark a subscription failing"
    )
    webhook_disable_after_failures: int = Field(
        50, ge=1, description="failed attempts in a row before a failing subscription is disabled"
    )
    webhook_disable_after_hours: float = Field(
        120.0,
        ge=0,
        allow_inf_nan=False,
        description="hours a subscription must have been failing before it is disabled",
    )
    webhook_secret_grace_hours: float = Field(
        24.0,
        ge=0,
        allow_inf_nan=False,
        description="hours a rotated-out signing secret keeps signing beside the new one",
    )
    webhook_lanes: int = Field(
        32, ge=1, le=1024, description="grants whose deliveries are posted in parallel"
    )
    webhook_retention_days: float = Field(
        30.0,
        ge=0,
        allow_inf_nan=False,
        description="days delivered webhook deliveries and their attempts are kept (0: forever)",
    )
    webhook_poll_interval: float = Field(
        0.2, gt=0, allow_inf_nan=False, description="seconds between looks for new events"
    )
    dnsbl_zones: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="DNS blocklists the MX asks about each connecting IP (e.g. "
        "zen.spamhaus.org; a JSON list or comma-separated); empty: none",
    )
    dnsbl_domain_zones: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="domain blocklists the MX asks about each sender's From domain "
        "(e.g. dbl.spamhaus.org; a JSON list or comma-separated); empty: none",
    )
    dnsbl_score: float = Field(
        4.0, ge=0, le=1000, allow_inf_nan=False, description="spam score of each listing"
    )
    dnsbl_timeout: float = Field(
        2.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds the MX waits for the blocklists' answers (slower ones count as "
        "not listed)",
    )
    retention_sweep_interval: float = Field(
        3600.0,
        ge=0,
        allow_inf_nan=False,
        description="seconds between sweeps deleting mail past its retention (0: never)",
    )
    retention_batch_size: int = Field(
        500, ge=1, le=10_000, description="messages each retention transaction deletes at most"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="what the command line logs: debug, info, warning or error"
    )
    log_format: Literal["auto", "rich", "json", "text"] = Field(
        "auto", description="log lines: rich (terminal), json (one object a line), text; auto"
    )
    plugins: str | None = Field(
        None, description="comma-separated plugin names to load (default: all installed)"
    )

    @field_validator("log_level", "log_format", "recipient_domain_check", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator(
        "dns_nameservers", "relay_addresses", "dnsbl_zones", "dnsbl_domain_zones", mode="before"
    )
    @classmethod
    def _list_of_entries(cls, value: Any) -> Any:
        """A JSON list, or comma-separated entries (from the environment); blank: none."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):  # a JSON list, or an entry like [::1]:53
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [entry.strip() for entry in text.split(",")]

    @field_validator("simulator_profiles", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        """A JSON object (from the environment); blank: none."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ValueError("not JSON: give an object, domain -> profile rates") from None
        if not isinstance(parsed, dict):
            raise ValueError("give a JSON object, domain -> profile rates")
        return parsed

    @field_validator("simulator_profiles")
    @classmethod
    def _valid_profiles(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        if not value:
            return value
        from .transports.simulator import profiles_with  # only when profiles are given

        try:
            profiles_with(value)
        except InvalidInput as exc:
            raise ValueError(f"{exc.field}: {exc.message}") from None
        return {domain.strip().lower().rstrip("."): rates for domain, rates in value.items()}

    @field_validator("send_lease")
    @classmethod
    def _lease_outlasts_a_send(cls, value: float, info: ValidationInfo) -> float:
        timeout = info.data.get("relay_timeout")
        if timeout is not None and value < 4 * timeout:
            raise ValueError(
                f"give at least 4 x relay_timeout ({4 * timeout:g} s): a send may use a "
                "quarter of its lease, the rest is kept for waiting and recording"
            )
        return value

    @field_validator("simulate")
    @classmethod
    def _simulate_or_relay(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("relay_host"):
            raise ValueError(
                "simulate sends every message to the simulated internet, relay_host to a "
                "real relay: set one or the other"
            )
        return value

    @field_validator("dns_nameservers")
    @classmethod
    def _valid_nameservers(cls, value: list[str]) -> list[str]:
        entries = [entry.strip() for entry in value]
        for entry in entries:
            try:
                parse_nameserver(entry)
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        return entries

    @field_validator("relay_addresses")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        entries = [entry.strip() for entry in value]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return entries

    @field_validator("spf_include", "mx_host")
    @classmethod
    def _host_name(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        name = value.strip().rstrip(".").lower()
        if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in name.split(".")):
            raise ValueError(f"{value!r} is not a DNS name")
        return name

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        text = value.strip().rstrip("/")
        match = re.fullmatch(r"(https?)://([^/?#\s]+)(/[^?#\s]*)?", text, re.IGNORECASE)
        if match is None:
            raise ValueError("give an http:// or https:// URL without query or fragment")
        return text

    @field_validator("unsubscribe_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("give at least 16 characters (or leave it unset)")
        return value

    @field_validator("dnsbl_zones", "dnsbl_domain_zones")
    @classmethod
    def _zones(cls, value: list[str]) -> list[str]:
        zones: list[str] = []
        for entry in value:
            name = cls._host_name(entry)
            if name is None:
                raise ValueError("an empty zone name")
            if name not in zones:
                zones.append(name)
        return zones

    @field_validator("bounce_domain")
    @classmethod
    def _bounce_domain(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        text = value.strip().lower().rstrip(".")
        if text.count("{domain}") > 1 or (
            text != "{domain}" and not text.endswith("{domain}") and "{domain}" in text
        ):
            raise ValueError("{domain} may appear once, at the end (e.g. bounces.{domain})")
        sample = text.replace("{domain}", "example.com")
        normalize_domain(sample, field="bounce_domain")
        return text

    @classmethod
    def load(cls, base: Settings | None = None, /, **overrides: Any) -> Settings:
        """Settings from ``base`` (default: the environment) with ``overrides``, validated.

        A wrong value or an unknown name is an :class:`~mailfleet.InvalidInput`
        whose ``field`` is ``settings.<name>``, as for the environment.
        """
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise InvalidInput(
                f"settings.{unknown[0]}", "no such setting (see `Settings` for the names)"
            )
        try:
            if base is None:
                return cls(**overrides)
            if not overrides:
                return base
            return cls.model_validate({**base.model_dump(), **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            name = field.split(".", 1)[0]
            message = str(first["msg"]).removeprefix("Value error, ")  # a validator's words
            raise InvalidInput(f"settings.{field}", message, value=overrides.get(name)) from None

    @property
    def plugin_allowlist(self) -> frozenset[str] | None:
        """The plugins to load, or None for every installed one."""
        if self.plugins is None:
            return None
        return frozenset(name.strip() for name in self.plugins.split(",") if name.strip())

    @property
    def effective_dkim_key_dir(self) -> Path | None:
        """Where DKIM key files go: ``dkim_key_dir``; outside dev mode with no
        ``dkim_key_secret`` either, ``<home>/dkim-keys`` (keys never sit in clear in
        the database there); else None."""
        if self.dkim_key_dir is not None:
            return self.dkim_key_dir
        if not self.dev_mode and self.dkim_key_secret is None:
            return self.home / "dkim-keys"
        return None

    @property
    def check_recipient_domains(self) -> bool:
        """Whether sends look up recipient domains first (``recipient_domain_check``):
        auto is on outside dev mode, or in dev mode when nameservers are set (dev
        mode and the tests send to example.org with no network: they must not wait
        on the system resolver)."""
        if self.recipient_domain_check != "auto":
            return self.recipient_domain_check == "on"
        return not self.dev_mode or bool(self.dns_nameservers)

    @property
    def audit_domains(self) -> bool:
        """Whether a serving fleet audits its domains: outside dev mode, or in dev mode
        when nameservers are set (with the system's, dev mode stays off the network)."""
        if self.domain_audit_interval <= 0:
            return False
        return not self.dev_mode or bool(self.dns_nameservers)

    @property
    def effective_mx_host(self) -> str:
        """The host the domains' MX records point at: ``mx_host``, else ``smtp_hostname``."""
        return self.mx_host or self.smtp_hostname.lower()

    def envelope_domain(self, domain: str) -> str:
        """The envelope (VERP) domain of mail sent from ``domain`` (``bounce_domain``)."""
        if self.bounce_domain is None:
            return domain
        return self.bounce_domain.replace("{domain}", domain)

    def bounce_domain_of(self, name: str) -> str | None:
        """The sending domain whose envelope domain ``name`` is, when it is one (else None).

        With ``bounce_domain`` ``bounces.{domain}``, ``bounces.example.com`` gives
        ``example.com``; with a fixed bounce domain, that domain gives ``""`` (any sender).
        """
        template = self.bounce_domain
        if template is None:
            return None
        if "{domain}" not in template:
            return "" if name == template else None
        prefix = template.removesuffix("{domain}")
        if prefix and name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
        return None

    @property
    def effective_database_url(self) -> str:
        """``database_url``, or the SQLite file under ``home``."""
        return self.database_url or f"sqlite:///{self.home / 'mailfleet.db'}"
