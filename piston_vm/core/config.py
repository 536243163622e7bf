"""Frozen service settings, built from PISTON_VM_* environment variables and CLI flags."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from piston_vm import __version__

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_COUCHDB_DIR = REPO_ROOT / "couchdb"
DEFAULT_SCHEMAS_DIR = REPO_ROOT / "schemas"

ENV_PREFIX = "PISTON_VM_"

LOG_FORMATS = ("text", "json")
SMTP_SECURITY = ("none", "starttls", "tls")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CouchEndpoint:
    """Where CouchDB is and how to log in; the URL never carries the credentials."""

    url: str
    user: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url_with_credentials: str) -> CouchEndpoint:
        parts = urlsplit(url_with_credentials.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) CouchDB URL: {parts.scheme}://{parts.hostname}")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        if ":" in parts.hostname:  # IPv6 literal
            netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
        url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(url=url, user=user, password=password)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable; the defaults are the platform's (README.md, "Configuration")."""

    couchdb: CouchEndpoint | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var/couchdb")
    page_size: int = 50
    max_created_window_s: int = 2_682_000
    retention_days: int = 93
    max_upload_bytes: int = 8_000_000
    max_pin_length: int = 6
    token_secret: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    token_expiry_s: int = 3600
    # Extra HS256 secrets accepted (never used to sign): tokens of a co-existing platform
    # (docs/decisions.md P-24).
    token_verification_keys: tuple[str, ...] = field(default=(), repr=False)
    node_name: str = field(default_factory=lambda: f"piston_vm@{socket.gethostname()}")
    version: str = __version__
    default_timezone: str = "America/Los_Angeles"
    anonymous_caller_id: str = "anonymous"
    transcribe_default: bool = False
    modb_design_dir: Path | None = None
    migration_retry_limit: int = 5
    couchdb_timeout_s: float = 5.0
    # Copies a document write waits for on a CouchDB cluster: "all", "default" or a number
    # (docs/operations.md, "A CouchDB cluster").
    couchdb_w: str = "all"
    account_cache_ttl_s: float = 5.0
    # Box counts kept per MODB and checked against its update_seq on every read
    # (docs/storage.md 7.3): the longest an entry is trusted (it bounds what a lagging copy on
    # a CouchDB cluster can hide; 0 turns the cache off), and how many MODBs it holds.
    count_cache_s: float = 60.0
    count_cache_modbs: int = 4096
    # How often one process looks for an account's moves that a crash left unfinished.
    move_repair_interval_s: float = 30.0
    couchdb_dir: Path = DEFAULT_COUCHDB_DIR
    schemas_dir: Path = DEFAULT_SCHEMAS_DIR
    # Proxies whose X-Forwarded-For is believed: the client address of the access log and of
    # the login throttle (docs/operations.md, "Behind a proxy").
    trusted_proxies: tuple[Network, ...] = ()
    # Observability (docs/operations.md, "Logs" and "Metrics"); the switches exist so that the
    # benchmark can measure what they cost.
    log_format: str = "text"
    access_log: bool = True
    metrics: bool = True
    # None: /metrics is served on the API's own port.
    metrics_port: int | None = None
    # `piston-vm serve` on SIGTERM (docs/operations.md, "Shutdown").
    shutdown_grace_s: float = 5.0
    shutdown_timeout_s: float = 30.0
    # The build's commit for piston_vm_build_info; None: `piston-vm serve` asks git.
    commit: str | None = None
    # Voicemail events (docs/events.md): the engine, webhooks and the live stream.
    events: bool = True
    # The engine's own database: checkpoints, leases and the events of the last hours.
    events_db: str = "piston_vm_events"
    event_shards: int = 4
    event_lease_s: float = 15.0
    events_keep_h: float = 48.0
    events_heartbeat_s: float = 15.0
    max_message_count: int = 100
    webhook_allow_private: bool = False
    webhook_timeout_s: float = 10.0
    webhook_backoff_s: float = 2.0
    # The platform's auto-disable (system_config.webhooks): this many failed attempts of one
    # hook within this many seconds disable it.
    webhook_failure_count: int = 6
    webhook_failure_expiry_s: float = 60.0
    # Voicemail to email (docs/email.md). No smtp_host: no email is attempted.
    smtp_host: str | None = None
    smtp_port: int = 25
    # "none", "starttls" or "tls"; None: none on port 25, else starttls (see smtp_security).
    smtp_tls: str | None = None
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = field(default_factory=lambda: f"voicemail@{socket.gethostname()}")
    smtp_timeout_s: float = 30.0
    # Larger recordings are not attached: the email carries a download link instead.
    email_attachment_max_bytes: int = 10_000_000
    # First retry delay after a temporary failure, doubling; at most email_retries retries.
    email_backoff_s: float = 30.0
    email_retries: int = 5
    # Operator's template files, each overriding the bundled one of the same name.
    email_templates_dir: Path | None = None
    # Where people reach this service (https://vm.example.com): the download link's base.
    public_url: str | None = None
    # The browser inbox at / and /inbox/… (README, "The inbox"); off: those routes do not exist.
    inbox: bool = True
    # Audio formats (docs/audio.md): refuse uploads that are no known audio (415), and how many
    # FFmpeg jobs (transcodes, duration measurements) one process runs at once.
    require_audio: bool = False
    transcode_workers: int = 4

    @property
    def token_secrets(self) -> tuple[str, ...]:
        return (self.token_secret, *self.token_verification_keys)

    @property
    def retention_s(self) -> int:
        # One extra hour, as the original: a message recorded "93 days ago" in another
        # time zone must not flip in and out of the window.
        return self.retention_days * 86_400 + 3_600

    @property
    def smtp_security(self) -> str:
        if self.smtp_tls is not None:
            return self.smtp_tls
        return "none" if self.smtp_port == 25 else "starttls"

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_INT_FIELDS = {
    "PORT": "port",
    "PAGE_SIZE": "page_size",
    "MAX_CREATED_WINDOW_S": "max_created_window_s",
    "RETENTION_DAYS": "retention_days",
    "MAX_UPLOAD_BYTES": "max_upload_bytes",
    "MAX_PIN_LENGTH": "max_pin_length",
    "TOKEN_EXPIRY_S": "token_expiry_s",
    "MIGRATION_RETRY_LIMIT": "migration_retry_limit",
    "METRICS_PORT": "metrics_port",
    "EVENT_SHARDS": "event_shards",
    "MAX_MESSAGE_COUNT": "max_message_count",
    "WEBHOOK_FAILURE_COUNT": "webhook_failure_count",
    "SMTP_PORT": "smtp_port",
    "EMAIL_ATTACHMENT_MAX_BYTES": "email_attachment_max_bytes",
    "EMAIL_RETRIES": "email_retries",
    "TRANSCODE_WORKERS": "transcode_workers",
    "COUNT_CACHE_MODBS": "count_cache_modbs",
}
_FLOAT_FIELDS = {
    "COUCHDB_TIMEOUT_S": "couchdb_timeout_s",
    "ACCOUNT_CACHE_TTL_S": "account_cache_ttl_s",
    "COUNT_CACHE_S": "count_cache_s",
    "MOVE_REPAIR_INTERVAL_S": "move_repair_interval_s",
    "SHUTDOWN_GRACE_S": "shutdown_grace_s",
    "SHUTDOWN_TIMEOUT_S": "shutdown_timeout_s",
    "EVENT_LEASE_S": "event_lease_s",
    "EVENTS_KEEP_H": "events_keep_h",
    "EVENTS_HEARTBEAT_S": "events_heartbeat_s",
    "WEBHOOK_TIMEOUT_S": "webhook_timeout_s",
    "WEBHOOK_BACKOFF_S": "webhook_backoff_s",
    "WEBHOOK_FAILURE_EXPIRY_S": "webhook_failure_expiry_s",
    "SMTP_TIMEOUT_S": "smtp_timeout_s",
    "EMAIL_BACKOFF_S": "email_backoff_s",
}
_STR_FIELDS = {
    "HOST": "host",
    "TOKEN_SECRET": "token_secret",
    "NODE_NAME": "node_name",
    "VERSION": "version",
    "DEFAULT_TIMEZONE": "default_timezone",
    "ANONYMOUS_CALLER_ID": "anonymous_caller_id",
    "COMMIT": "commit",
    "EVENTS_DB": "events_db",
    "SMTP_HOST": "smtp_host",
    "SMTP_USERNAME": "smtp_username",
    "SMTP_PASSWORD": "smtp_password",
    "SMTP_FROM": "smtp_from",
    "PUBLIC_URL": "public_url",
}
_PATH_FIELDS = {
    "DATA_DIR": "data_dir",
    "MODB_DESIGN_DIR": "modb_design_dir",
    "COUCHDB_DIR": "couchdb_dir",
    "SCHEMAS_DIR": "schemas_dir",
    "EMAIL_TEMPLATES_DIR": "email_templates_dir",
}


_SWITCH_FIELDS = {
    "ACCESS_LOG": "access_log",
    "METRICS": "metrics",
    "EVENTS": "events",
    "WEBHOOK_ALLOW_PRIVATE": "webhook_allow_private",
    "INBOX": "inbox",
    "REQUIRE_AUDIO": "require_audio",
}
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def parse_switch(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{ENV_PREFIX}{name} must be on or off, not {raw!r}")


def parse_networks(raw: str) -> tuple[Network, ...]:
    """Comma-separated IP addresses and CIDR blocks (`10.0.0.0/8, 192.0.2.7`)."""
    networks = []
    for item in raw.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}TRUSTED_PROXIES: {item.strip()!r} is not an IP "
                                 "address or CIDR block") from None
    return tuple(networks)


def log_format_from_env(env: Mapping[str, str] | None = None) -> str:
    """PISTON_VM_LOG_FORMAT alone: logging is set up before a command reads its settings."""
    env = os.environ if env is None else env
    raw = (env.get(ENV_PREFIX + "LOG_FORMAT") or "text").strip().lower()
    if raw not in LOG_FORMATS:
        raise ValueError(f"{ENV_PREFIX}LOG_FORMAT must be text or json, not {raw!r}")
    return raw


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from PISTON_VM_* variables; unknown or empty variables are ignored."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}

    def get(name: str) -> str | None:
        value = env.get(ENV_PREFIX + name)
        return value if value else None

    for name, attr in _INT_FIELDS.items():
        if (raw := get(name)) is not None:
            values[attr] = int(raw)
    for name, attr in _FLOAT_FIELDS.items():
        if (raw := get(name)) is not None:
            values[attr] = float(raw)
    for name, attr in _STR_FIELDS.items():
        if (raw := get(name)) is not None:
            values[attr] = raw
    for name, attr in _PATH_FIELDS.items():
        if (raw := get(name)) is not None:
            values[attr] = Path(raw)
    for name, attr in _SWITCH_FIELDS.items():
        if (raw := get(name)) is not None:
            values[attr] = parse_switch(name, raw)
    values["log_format"] = log_format_from_env(env)
    if (raw := get("TRUSTED_PROXIES")) is not None:
        values["trusted_proxies"] = parse_networks(raw)
    for attr in ("shutdown_grace_s", "shutdown_timeout_s", "count_cache_s", "count_cache_modbs"):
        if values.get(attr, 0) < 0:
            raise ValueError(f"{ENV_PREFIX}{attr.upper()} must not be negative")
    if values.get("event_shards", 1) < 1:
        raise ValueError(f"{ENV_PREFIX}EVENT_SHARDS must be at least 1")
    if values.get("transcode_workers", 1) < 1:
        raise ValueError(f"{ENV_PREFIX}TRANSCODE_WORKERS must be at least 1")
    if values.get("metrics_port") == 0:
        # 0 would be "any free port": a scraper could never find it.
        del values["metrics_port"]
    if (raw := get("TRANSCRIBE_DEFAULT")) is not None:
        values["transcribe_default"] = raw.lower() in ("1", "true", "yes")
    if (raw := get("TOKEN_VERIFICATION_KEYS")) is not None:
        values["token_verification_keys"] = tuple(k for k in raw.split(",") if k)
    if (raw := get("COUCHDB_W")) is not None:
        if raw not in ("all", "default") and not (raw.isdigit() and int(raw) > 0):
            raise ValueError(f"{ENV_PREFIX}COUCHDB_W must be all, default or a number of copies, "
                             f"not {raw!r}")
        values["couchdb_w"] = raw
    if (raw := get("SMTP_TLS")) is not None:
        if raw.lower() not in SMTP_SECURITY:
            raise ValueError(f"{ENV_PREFIX}SMTP_TLS must be none, starttls or tls, not {raw!r}")
        values["smtp_tls"] = raw.lower()
    for attr in ("email_backoff_s", "email_retries", "email_attachment_max_bytes"):
        if values.get(attr, 0) < 0:
            raise ValueError(f"{ENV_PREFIX}{attr.upper()} must not be negative")
    if (raw := get("COUCHDB_URL")) is not None:
        values["couchdb"] = CouchEndpoint.parse(raw)
    return Settings(**values)
