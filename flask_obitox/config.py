"""Every ``OBITOX_*`` configuration key, its default and its validation, in one place.

:func:`load_settings` reads a Flask config, fills defaults with ``setdefault`` and
returns a frozen :class:`Settings`. Bad values fail here, at ``init_app``, with a
message naming the key, so a mistake shows at start-up and not on the first upload.
"""

from __future__ import annotations

import binascii
import dataclasses
import ipaddress
import re
from base64 import b64decode
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from limits import parse_many
from urllib3.util import parse_url

from .state.registry import plain_redis_schemes, scheme_list

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

#: S3's own limits.
S3_MAX_SINGLE_PUT = 5 * GiB
S3_MAX_OBJECT_SIZE = 5 * TiB
S3_MIN_PART_SIZE = 5 * MiB
S3_MAX_PARTS = 10_000
#: SigV4 presigned URLs cannot live longer than 7 days.
SIGV4_MAX_EXPIRY = 7 * 24 * 3600

NETWORK_TYPES = ("slow-2g", "2g", "3g", "4g", "wifi", "unknown")

#: A media type or a wildcard pattern of one: ``image/png``, ``image/*``, ``*/*``.
MEDIA_PATTERN = (
    r"^(\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})/(\*|[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126})\Z"
)
#: An extension, with or without its dot: ``png``, ``.tar.gz``.
EXTENSION_PATTERN = r"^\.?[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}\Z"
#: The events a webhook endpoint can subscribe to (``OBITOX_WEBHOOKS[...]["events"]``).
WEBHOOK_EVENTS = (
    "upload.completed",
    "upload.aborted",
    "upload.rejected",
    "upload.expired",
    "upload.deleted",
    "group.completed",
    "group.failed",
    "group.cancelled",
    "upload.ready",
    "processing.failed",
)
#: Download links (``GET /uploads/<id>/download``) live at most an hour (DESIGN §11).
MAX_DOWNLOAD_EXPIRY = 3600
#: What an endpoint that names no ``events`` receives: part one's upload events. The
#: newer ones (``upload.deleted``, ``group.*``, ``upload.ready``, ``processing.failed``)
#: are asked for by name, so an endpoint configured before them gets no new kind of
#: message.
DEFAULT_WEBHOOK_EVENTS = ("upload.completed", "upload.aborted", "upload.rejected", "upload.expired")
#: Standard Webhooks secrets: ``whsec_`` and the base64 of 24 to 64 random bytes.
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
WEBHOOK_SECRET_BYTES = (24, 64)
#: A host name, or ``*.`` and a domain (any of its subdomains), in ``OBITOX_WEBHOOK_ALLOWED_HOSTS``.
WEBHOOK_HOST_PATTERN = r"^(\*\.)?[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\Z"

#: Room the key prefix leaves for the upload id and a 255-byte file name in S3's
#: 1024-byte keys.
MAX_KEY_PREFIX_BYTES = 700


class ConfigVars:
    """The names of every configuration key (Flask-Limiter style)."""

    BUCKET = "OBITOX_BUCKET"
    REGION = "OBITOX_REGION"
    ENDPOINT_URL = "OBITOX_ENDPOINT_URL"
    ADDRESSING_STYLE = "OBITOX_ADDRESSING_STYLE"
    AWS_ACCESS_KEY_ID = "OBITOX_AWS_ACCESS_KEY_ID"
    AWS_SECRET_ACCESS_KEY = "OBITOX_AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a key name
    URL_PREFIX = "OBITOX_URL_PREFIX"
    KEY_PREFIX = "OBITOX_KEY_PREFIX"
    STATE_BACKEND = "OBITOX_STATE_BACKEND"
    MAX_FILE_SIZE = "OBITOX_MAX_FILE_SIZE"
    MAX_MULTIPART_SIZE = "OBITOX_MAX_MULTIPART_SIZE"
    MIN_FILE_SIZE = "OBITOX_MIN_FILE_SIZE"
    ALLOWED_CONTENT_TYPES = "OBITOX_ALLOWED_CONTENT_TYPES"
    ALLOWED_EXTENSIONS = "OBITOX_ALLOWED_EXTENSIONS"
    BLOCK_EXECUTABLES = "OBITOX_BLOCK_EXECUTABLES"
    BATCH_MAX_FILES = "OBITOX_BATCH_MAX_FILES"
    EXPIRY_MIN = "OBITOX_EXPIRY_MIN"
    EXPIRY_MAX = "OBITOX_EXPIRY_MAX"
    EXPIRY_DEFAULT = "OBITOX_EXPIRY_DEFAULT"
    MULTIPART_THRESHOLD = "OBITOX_MULTIPART_THRESHOLD"
    PART_SIZE = "OBITOX_PART_SIZE"
    UPLOAD_TTL = "OBITOX_UPLOAD_TTL"
    VERIFY_CONTENT = "OBITOX_VERIFY_CONTENT"
    MAX_REQUEST_SIZE = "OBITOX_MAX_REQUEST_SIZE"
    WEBHOOKS = "OBITOX_WEBHOOKS"
    WEBHOOK_RETRY_SCHEDULE = "OBITOX_WEBHOOK_RETRY_SCHEDULE"
    WEBHOOK_ALLOWED_HOSTS = "OBITOX_WEBHOOK_ALLOWED_HOSTS"
    WEBHOOK_ALLOW_PRIVATE = "OBITOX_WEBHOOK_ALLOW_PRIVATE"
    WEBHOOK_TIMEOUT = "OBITOX_WEBHOOK_TIMEOUT"
    WEBHOOK_INCLUDE_OWNER = "OBITOX_WEBHOOK_INCLUDE_OWNER"
    RQ_QUEUE = "OBITOX_RQ_QUEUE"
    RQ_REDIS_URL = "OBITOX_RQ_REDIS_URL"
    ALLOW_ANONYMOUS = "OBITOX_ALLOW_ANONYMOUS"
    COMPANION_ROUTES = "OBITOX_COMPANION_ROUTES"
    CORS_ORIGINS = "OBITOX_CORS_ORIGINS"
    CREATE_ONLY = "OBITOX_CREATE_ONLY"
    RATE_LIMITS = "OBITOX_RATE_LIMITS"
    METRICS = "OBITOX_METRICS"
    METRICS_TOKEN = "OBITOX_METRICS_TOKEN"  # noqa: S105 - a key name
    MAX_OPEN_MULTIPART = "OBITOX_MAX_OPEN_MULTIPART"
    MAX_OPEN_BYTES = "OBITOX_MAX_OPEN_BYTES"
    EVENTS = "OBITOX_EVENTS"
    EVENTS_RETENTION = "OBITOX_EVENTS_RETENTION"
    EVENTS_HEARTBEAT = "OBITOX_EVENTS_HEARTBEAT"
    EVENTS_PROGRESS_INTERVAL_MS = "OBITOX_EVENTS_PROGRESS_INTERVAL_MS"
    DOWNLOAD_EXPIRY = "OBITOX_DOWNLOAD_EXPIRY"
    SETTLED_TTL = "OBITOX_SETTLED_TTL"
    PROCESSING_QUEUE = "OBITOX_PROCESSING_QUEUE"
    PROCESSING_RETRY_SCHEDULE = "OBITOX_PROCESSING_RETRY_SCHEDULE"
    STORAGE_EVENTS_TOKEN = "OBITOX_STORAGE_EVENTS_TOKEN"  # noqa: S105 - a key name
    PROFILES = "OBITOX_PROFILES"
    MANAGER = "OBITOX_MANAGER"


#: Defaults, applied with ``app.config.setdefault``. ``STATE_BACKEND`` is resolved
#: from the app's ``REDIS_URL`` when unset, see :func:`load_settings`.
DEFAULTS: dict[str, Any] = {
    ConfigVars.BUCKET: None,
    ConfigVars.REGION: None,
    ConfigVars.ENDPOINT_URL: None,
    ConfigVars.ADDRESSING_STYLE: "auto",
    ConfigVars.AWS_ACCESS_KEY_ID: None,
    ConfigVars.AWS_SECRET_ACCESS_KEY: None,
    ConfigVars.URL_PREFIX: "/obitox",
    ConfigVars.KEY_PREFIX: "uploads/",
    ConfigVars.STATE_BACKEND: None,
    ConfigVars.MAX_FILE_SIZE: S3_MAX_SINGLE_PUT,
    ConfigVars.MAX_MULTIPART_SIZE: S3_MAX_OBJECT_SIZE,
    ConfigVars.MIN_FILE_SIZE: 0,
    ConfigVars.ALLOWED_CONTENT_TYPES: [],
    ConfigVars.ALLOWED_EXTENSIONS: [],
    ConfigVars.BLOCK_EXECUTABLES: True,
    ConfigVars.BATCH_MAX_FILES: 100,
    ConfigVars.EXPIRY_MIN: 60,
    ConfigVars.EXPIRY_MAX: 24 * 3600,
    ConfigVars.EXPIRY_DEFAULT: 300,
    ConfigVars.MULTIPART_THRESHOLD: 100 * MiB,
    ConfigVars.PART_SIZE: 8 * MiB,
    ConfigVars.UPLOAD_TTL: 7 * 24 * 3600,
    ConfigVars.DOWNLOAD_EXPIRY: 300,
    ConfigVars.VERIFY_CONTENT: True,
    ConfigVars.MAX_REQUEST_SIZE: 1 * MiB,
    ConfigVars.WEBHOOKS: [],
    ConfigVars.WEBHOOK_RETRY_SCHEDULE: [5, 300, 1800, 7200, 18000, 36000, 36000],
    ConfigVars.WEBHOOK_ALLOWED_HOSTS: [],
    ConfigVars.WEBHOOK_ALLOW_PRIVATE: False,
    ConfigVars.WEBHOOK_TIMEOUT: 15,
    ConfigVars.WEBHOOK_INCLUDE_OWNER: False,
    ConfigVars.RQ_QUEUE: "obitox-webhooks",
    ConfigVars.RQ_REDIS_URL: None,
    ConfigVars.ALLOW_ANONYMOUS: False,
    ConfigVars.COMPANION_ROUTES: True,
    ConfigVars.CORS_ORIGINS: [],
    ConfigVars.CREATE_ONLY: True,
    ConfigVars.RATE_LIMITS: "600 per minute",
    ConfigVars.METRICS: False,
    ConfigVars.METRICS_TOKEN: None,
    ConfigVars.MAX_OPEN_MULTIPART: 100,
    ConfigVars.MAX_OPEN_BYTES: 10 * 2**40,  # 10 TiB
    ConfigVars.EVENTS: True,
    ConfigVars.MANAGER: True,
    ConfigVars.EVENTS_RETENTION: 1000,
    ConfigVars.EVENTS_HEARTBEAT: 15,
    ConfigVars.EVENTS_PROGRESS_INTERVAL_MS: 250,
    ConfigVars.SETTLED_TTL: 24 * 3600,
    ConfigVars.PROCESSING_QUEUE: "obitox-processing",
    ConfigVars.PROCESSING_RETRY_SCHEDULE: [10, 60, 300],
    ConfigVars.STORAGE_EVENTS_TOKEN: None,
    ConfigVars.PROFILES: {},
}

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
ADDRESSING_STYLES = ("auto", "path", "virtual")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the key."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration of one app."""

    bucket: str
    region: str | None
    endpoint_url: str | None
    addressing_style: str
    aws_access_key_id: str | None = dataclasses.field(repr=False)
    aws_secret_access_key: str | None = dataclasses.field(repr=False)
    url_prefix: str
    key_prefix: str
    state_backend: str
    max_file_size: int
    max_multipart_size: int
    min_file_size: int
    allowed_content_types: tuple[str, ...]
    allowed_extensions: tuple[str, ...]
    block_executables: bool
    batch_max_files: int
    expiry_min: int
    expiry_max: int
    expiry_default: int
    multipart_threshold: int
    part_size: int
    upload_ttl: int
    verify_content: bool
    max_request_size: int
    webhooks: tuple[Mapping[str, Any], ...] = dataclasses.field(repr=False)
    webhook_retry_schedule: tuple[int, ...]
    webhook_allowed_hosts: tuple[str, ...]
    webhook_allow_private: bool
    webhook_timeout: int
    webhook_include_owner: bool
    rq_queue: str
    rq_redis_url: str = dataclasses.field(repr=False)
    allow_anonymous: bool
    companion_routes: bool
    cors_origins: tuple[str, ...]
    create_only: bool
    #: Flask-Limiter limit strings (``"600 per minute; 20 per second"``); ``""`` is off.
    rate_limits: str
    metrics: bool
    metrics_token: str | None = dataclasses.field(repr=False)
    #: Open (pending or uploading) multipart uploads one owner may hold; 0 is no cap.
    max_open_multipart: int = 100
    #: Bytes one owner's open multipart uploads may add up to; 0 is no cap.
    max_open_bytes: int = 10 * 2**40
    #: Publish upload and group events to the owners' event streams (``GET /events``).
    events: bool = True
    #: Events kept per owner for ``Last-Event-ID`` replay.
    events_retention: int = 1000
    #: Seconds between the comment lines that keep an idle event stream open.
    events_heartbeat: int = 15
    #: Milliseconds between two ``upload.progress`` events of one upload in the event
    #: streams (the latest report wins; 0: one event per report).
    events_progress_interval_ms: int = 250
    #: Serve the upload manager page, ``GET <prefix>/manager``.
    manager: bool = True
    #: Seconds a download link lives (at most an hour).
    download_expiry: int = 300
    #: How long a settled (completed, aborted, ...) upload's record is kept, seconds.
    settled_ttl: int = 24 * 3600
    #: The RQ queue processors run on (``flask obitox worker`` works it too).
    processing_queue: str = "obitox-processing"
    #: Seconds before each retry of a processor that failed; its length is the retries.
    processing_retry_schedule: tuple[int, ...] = (10, 60, 300)
    #: The bearer token of ``POST /storage-events``; ``None``: the route is 404.
    storage_events_token: str | None = dataclasses.field(default=None, repr=False)
    #: ``OBITOX_PROFILES``, validated: name -> :class:`Profile`.
    profiles: Mapping[str, Profile] = dataclasses.field(default_factory=dict)


def _int(
    config: Mapping[str, Any], key: str, *, minimum: int = 0, maximum: int | None = None
) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key} must be <= {maximum}, got {value}")
    return value


def _bool(config: Mapping[str, Any], key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be True or False, got {value!r}")
    return value


def _optional_str(config: Mapping[str, Any], key: str) -> str | None:
    value = config[key]
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    return value


def _str_list(config: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = config[key]
    if isinstance(value, str):
        # A comma-separated string is what an environment variable gives.
        value = [part for part in (p.strip() for p in value.split(",")) if part]
    if not isinstance(value, Sequence) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{key} must be a list of non-empty strings, got {value!r}")
    return tuple(value)


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url


def is_safe_key_path(path: str) -> bool:
    """Whether ``path`` (part of an object key) has no empty, ``.`` or ``..`` segment and
    no control character: browsers and HTTP clients rewrite the former in URLs (breaking
    the signature, or leaving the prefix), and the latter cannot travel in a URL path."""
    return all(segment not in ("", ".", "..") for segment in path.split("/")) and all(
        0x20 <= ord(c) != 0x7F for c in path
    )


def _is_key_prefix(prefix: str) -> bool:
    if prefix == "":
        return True
    return len(prefix.encode()) <= MAX_KEY_PREFIX_BYTES and is_safe_key_path(prefix[:-1])


def _patterned(config: Mapping[str, Any], key: str, pattern: str, example: str) -> tuple[str, ...]:
    values = _str_list(config, key)
    bad = [v for v in values if not re.match(pattern, v)]
    if bad:
        raise ConfigError(f"{key} holds {bad!r}: each entry must look like {example}")
    return values


def webhook_secret_key(secret: object) -> bytes:
    """The HMAC key inside a ``whsec_...`` secret; :class:`ValueError` if it is not one."""
    if not isinstance(secret, str) or not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError(
            f"a webhook secret must be a string starting with {WEBHOOK_SECRET_PREFIX!r}"
        )
    encoded = secret[len(WEBHOOK_SECRET_PREFIX) :]
    try:
        key = b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret must be whsec_ followed by base64") from None
    low, high = WEBHOOK_SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(
            f"a webhook secret must hold {low} to {high} random bytes (Standard Webhooks), "
            f"this one holds {len(key)}"
        )
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookURL:
    """Where a delivery to a webhook URL connects."""

    scheme: str
    #: Lower case; an IPv6 address without its brackets.
    host: str
    port: int


#: A host as it may appear in a webhook URL: an ASCII name (an IPv4 address is one too).
_WEBHOOK_URL_HOST = re.compile(r"[a-z0-9_.-]+")


def parse_webhook_url(url: str) -> WebhookURL:
    """The scheme, host and port a delivery to ``url`` connects to, or
    :class:`ValueError` with the end of a sentence saying why ``url`` is refused.

    The host is checked against ``OBITOX_WEBHOOK_ALLOWED_HOSTS`` from this parse, while
    requests connects where urllib3's ``parse_url`` says. Where the two could read a URL
    differently, it is refused: ``http://127.0.0.1:5094\\@hooks.example.com/`` is
    ``hooks.example.com`` to :func:`~urllib.parse.urlsplit` and ``127.0.0.1`` to
    urllib3. So are credentials (``user:pass@``: the signature authenticates a
    delivery), a fragment (never sent, only there to confuse), whitespace, control
    characters and backslashes anywhere, and a host that is neither an ASCII name nor
    an IP address (a percent-encoded or internationalised name, which HTTP clients
    rewrite; write the latter in its ``xn--`` form).
    """
    odd = next((c for c in url if c == "\\" or c.isspace() or not c.isprintable()), None)
    if odd is not None:
        raise ValueError(
            f"holds {odd!r}: whitespace, control characters and backslashes are read "
            "differently by URL parsers and HTTP clients (percent-encode them in the path)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
        client = parse_url(url)
    except ValueError as error:
        raise ValueError(f"is not a valid URL ({error})") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("is not an http:// or https:// URL with a host")
    if "@" in parts.netloc or client.auth is not None:
        raise ValueError(
            "carries credentials (user:password@): deliveries are authenticated by their "
            "webhook-signature header; put a token in the path or query if the receiver needs one"
        )
    if "#" in url:
        raise ValueError("has a fragment (#...), which is never sent")
    if not _WEBHOOK_URL_HOST.fullmatch(host):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"has the host {host!r}, which is not an ASCII host name or an IP address "
                "(write an internationalised name in its xn-- form)"
            ) from None
    client_host = (client.host or "").lower().removeprefix("[").removesuffix("]")
    if (client.scheme, client_host, client.port) != (parts.scheme, host, port):
        raise ValueError(
            f"is read as {_origin(parts.scheme, host, port)} by urllib.parse but as "
            f"{_origin(client.scheme, client_host, client.port)} by urllib3, which requests "
            "connects with"
        )
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return WebhookURL(parts.scheme, host, port)


def _origin(scheme: str | None, host: str, port: int | None) -> str:
    return f"{scheme}://{host}" + ("" if port is None else f":{port}")


def display_url(url: str) -> str:
    """``url`` without the credentials it may carry (``https://user:pass@host/``), for
    logs, job descriptions and messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def webhook_endpoint(
    value: Any, where: str = ConfigVars.WEBHOOKS, *, allowed_hosts: Sequence[str] = ()
) -> dict[str, Any]:
    """One webhook endpoint, checked and normalised to ``{"url", "secret", "events"}``.

    ``events`` defaults to every event. A bad endpoint raises :class:`ConfigError`
    naming ``where``; the secret itself never appears in the message.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where} must be an object with 'url', 'secret' and 'events', got {value!r}"
        )
    unknown = sorted(set(value) - {"url", "secret", "events"})
    if unknown:
        raise ConfigError(
            f"{where} has unknown fields {unknown}: an endpoint has 'url', 'secret' and 'events'"
        )
    url = value.get("url")
    if not isinstance(url, str):
        raise ConfigError(f"{where} needs a 'url' that is an http:// or https:// URL, got {url!r}")
    try:
        host = parse_webhook_url(url).host
    except ValueError as error:
        raise ConfigError(f"{where}: the url {display_url(url)!r} {error}") from None
    try:
        webhook_secret_key(value.get("secret"))
    except ValueError as error:
        raise ConfigError(f"{where} ({url}): {error}") from None
    events = value.get("events", DEFAULT_WEBHOOK_EVENTS)
    if isinstance(events, str) or not isinstance(events, Sequence) or not events:
        raise ConfigError(
            f"{where} ({url}): 'events' must be a non-empty list of event names, got {events!r}"
        )
    bad = [event for event in events if event not in WEBHOOK_EVENTS]
    if bad:
        raise ConfigError(
            f"{where} ({url}): unknown events {bad!r}; events are {', '.join(WEBHOOK_EVENTS)}"
        )
    if allowed_hosts and not webhook_host_allowed(host, allowed_hosts):
        raise ConfigError(
            f"{where} ({url}): host {host!r} is not in {ConfigVars.WEBHOOK_ALLOWED_HOSTS} {list(allowed_hosts)}"
        )
    return {"url": url, "secret": value["secret"], "events": tuple(dict.fromkeys(events))}


def webhook_host_allowed(host: str, allowed_hosts: Sequence[str]) -> bool:
    """Whether ``host`` is named by ``allowed_hosts`` (empty: every host is).

    An entry ``*.example.com`` allows the subdomains of ``example.com``, not
    ``example.com`` itself; other entries match the whole host name, case-insensitively.
    """
    if not allowed_hosts:
        return True
    host = host.lower().rstrip(".")
    for entry in allowed_hosts:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def _webhook_hosts(config: Mapping[str, Any]) -> tuple[str, ...]:
    hosts = tuple(
        h.lower().rstrip(".") for h in _str_list(config, ConfigVars.WEBHOOK_ALLOWED_HOSTS)
    )
    for host in hosts:
        try:
            ipaddress.ip_address(host.strip("[]"))
            continue
        except ValueError:
            pass
        if not re.match(WEBHOOK_HOST_PATTERN, host):
            raise ConfigError(
                f"{ConfigVars.WEBHOOK_ALLOWED_HOSTS} holds {host!r}: each entry is a host name "
                "('hooks.example.com'), '*.' and a domain ('*.example.com') or an IP address, "
                "without scheme, port or path"
            )
    return tuple(h.strip("[]") for h in hosts)


#: State schemes that are a Redis RQ cannot use: RQ's queues need their own Redis.
CLUSTER_SCHEMES = frozenset({"redis+cluster"})


def _rq_redis_url(config: Mapping[str, Any], state_backend: str) -> str:
    """Where RQ keeps its queues: ``OBITOX_RQ_REDIS_URL``, else the state backend when it
    is a plain Redis, else the app's ``REDIS_URL``, else the default. Required with a
    cluster state: RQ runs two-key scripts and cannot use a cluster, and falling back to
    some other Redis would hide that."""
    redis_schemes = plain_redis_schemes()
    url = _optional_str(config, ConfigVars.RQ_REDIS_URL)
    scheme = state_backend.strip().partition("://")[0].lower()
    if url is None and scheme in CLUSTER_SCHEMES:
        raise ConfigError(
            f"{ConfigVars.RQ_REDIS_URL} is required when {ConfigVars.STATE_BACKEND} is a "
            f"{scheme}:// URL: RQ cannot run on a Redis Cluster, so set it to a standalone "
            "or Sentinel-managed Redis (redis://host:6379/0)"
        )
    if url is None:
        url = state_backend if scheme in redis_schemes else None
    url = url or config.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not isinstance(url, str) or url.partition("://")[0].lower() not in redis_schemes:
        shown = url.partition("://")[0] + "://..." if isinstance(url, str) else repr(url)
        raise ConfigError(
            f"{ConfigVars.RQ_REDIS_URL} must be a {scheme_list(sorted(redis_schemes))} URL, got {shown}"
        )
    return url


def _rate_limits(config: Mapping[str, Any]) -> str:
    value = config[ConfigVars.RATE_LIMITS]
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(
            f"{ConfigVars.RATE_LIMITS} must be a string like '600 per minute' (or '' for no "
            f"limit), got {value!r}"
        )
    if not value.strip():
        return ""
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{ConfigVars.RATE_LIMITS} must be Flask-Limiter limits like '600 per minute' or "
            f"'600/minute; 20/second', got {value!r}"
        ) from None
    return value.strip()


def _metrics_token(config: Mapping[str, Any]) -> str | None:
    return _secret_token(config, ConfigVars.METRICS_TOKEN)


def _secret_token(config: Mapping[str, Any], key: str) -> str | None:
    """A bearer token: ``None`` (unset) or at least 16 printable ASCII characters."""
    token = _optional_str(config, key)
    if token is not None and (len(token) < 16 or not token.isascii() or not token.isprintable()):
        # Shown nowhere: the token itself never appears in the message.
        raise ConfigError(
            f"{key} must be at least 16 printable ASCII characters "
            "(a random secret, e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
        )
    return token


def _schedule(config: Mapping[str, Any], key: str) -> tuple[int, ...]:
    """A retry schedule: a list of delays in seconds (its length is the retries)."""
    schedule = config[key]
    if (
        isinstance(schedule, str)
        or not isinstance(schedule, Sequence)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in schedule)
    ):
        raise ConfigError(f"{key} must be a list of seconds, got {schedule!r}")
    return tuple(schedule)


def _queue_name(config: Mapping[str, Any], key: str) -> str:
    name = config[key]
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{key} must be a non-empty string, got {name!r}")
    return name


def load_settings(config: MutableMapping[str, Any]) -> Settings:
    """Fill defaults into ``config`` and return the validated :class:`Settings`."""
    for key, default in DEFAULTS.items():
        config.setdefault(
            key, type(default)(default) if isinstance(default, list | dict) else default
        )
    if config[ConfigVars.STATE_BACKEND] is None:
        config[ConfigVars.STATE_BACKEND] = config.get("REDIS_URL") or DEFAULT_REDIS_URL

    bucket = _optional_str(config, ConfigVars.BUCKET)
    if not bucket:
        raise ConfigError(f"{ConfigVars.BUCKET} is required: the name of the bucket uploads go to")

    style = config[ConfigVars.ADDRESSING_STYLE]
    if style not in ADDRESSING_STYLES:
        raise ConfigError(
            f"{ConfigVars.ADDRESSING_STYLE} must be one of {ADDRESSING_STYLES}, got {style!r}"
        )

    endpoint_url = _optional_str(config, ConfigVars.ENDPOINT_URL)
    if endpoint_url and not _is_http_url(endpoint_url):
        raise ConfigError(
            f"{ConfigVars.ENDPOINT_URL} must be an http:// or https:// URL with a host, got {endpoint_url!r}"
        )

    access_key = _optional_str(config, ConfigVars.AWS_ACCESS_KEY_ID)
    secret_key = _optional_str(config, ConfigVars.AWS_SECRET_ACCESS_KEY)
    if bool(access_key) != bool(secret_key):
        raise ConfigError(
            f"{ConfigVars.AWS_ACCESS_KEY_ID} and {ConfigVars.AWS_SECRET_ACCESS_KEY} must be set together"
        )

    url_prefix = config[ConfigVars.URL_PREFIX]
    if (
        not isinstance(url_prefix, str)
        or not url_prefix.startswith("/")
        or url_prefix.endswith("/")
    ):
        raise ConfigError(
            f"{ConfigVars.URL_PREFIX} must start with '/' and not end with one, got {url_prefix!r}"
        )

    key_prefix = config[ConfigVars.KEY_PREFIX]
    if isinstance(key_prefix, str) and key_prefix and not key_prefix.endswith("/"):
        key_prefix += "/"
    if not isinstance(key_prefix, str) or not _is_key_prefix(key_prefix):
        raise ConfigError(
            f"{ConfigVars.KEY_PREFIX} must be a relative key prefix like 'uploads/' (segments "
            f"without '.', '..', empty parts or control characters, at most "
            f"{MAX_KEY_PREFIX_BYTES} bytes), got {key_prefix!r}"
        )

    state_backend = config[ConfigVars.STATE_BACKEND]
    if not isinstance(state_backend, str) or "://" not in state_backend:
        raise ConfigError(
            f"{ConfigVars.STATE_BACKEND} must be a URI like redis://host:6379/0 or memory://, got {state_backend!r}"
        )

    max_file_size = _int(config, ConfigVars.MAX_FILE_SIZE, minimum=1, maximum=S3_MAX_SINGLE_PUT)
    max_multipart_size = _int(
        config, ConfigVars.MAX_MULTIPART_SIZE, minimum=1, maximum=S3_MAX_OBJECT_SIZE
    )
    min_file_size = _int(config, ConfigVars.MIN_FILE_SIZE, minimum=0)
    if min_file_size > max_file_size:
        raise ConfigError(
            f"{ConfigVars.MIN_FILE_SIZE} ({min_file_size}) exceeds {ConfigVars.MAX_FILE_SIZE} ({max_file_size})"
        )

    expiry_min = _int(config, ConfigVars.EXPIRY_MIN, minimum=1, maximum=SIGV4_MAX_EXPIRY)
    expiry_max = _int(config, ConfigVars.EXPIRY_MAX, minimum=1, maximum=SIGV4_MAX_EXPIRY)
    expiry_default = _int(config, ConfigVars.EXPIRY_DEFAULT, minimum=1, maximum=SIGV4_MAX_EXPIRY)
    if expiry_min > expiry_max:
        raise ConfigError(
            f"{ConfigVars.EXPIRY_MIN} ({expiry_min}) exceeds {ConfigVars.EXPIRY_MAX} ({expiry_max})"
        )

    upload_ttl = _int(config, ConfigVars.UPLOAD_TTL, minimum=60)
    if upload_ttl < expiry_max:
        # Otherwise a URL could still work after its upload record expired: the object
        # would land, and completing it would answer 410.
        raise ConfigError(
            f"{ConfigVars.UPLOAD_TTL} ({upload_ttl}) must be at least {ConfigVars.EXPIRY_MAX} ({expiry_max})"
        )

    part_size = _int(
        config, ConfigVars.PART_SIZE, minimum=S3_MIN_PART_SIZE, maximum=S3_MAX_SINGLE_PUT
    )

    extensions = tuple(
        e.lower().lstrip(".")
        for e in _patterned(
            config, ConfigVars.ALLOWED_EXTENSIONS, EXTENSION_PATTERN, "'png' or '.pdf'"
        )
    )

    webhook_hosts = _webhook_hosts(config)
    webhooks = config[ConfigVars.WEBHOOKS]
    if not isinstance(webhooks, Sequence) or isinstance(webhooks, str):
        raise ConfigError(
            f"{ConfigVars.WEBHOOKS} must be a list of endpoint objects, got {webhooks!r}"
        )
    endpoints = tuple(
        webhook_endpoint(hook, f"{ConfigVars.WEBHOOKS}[{index}]", allowed_hosts=webhook_hosts)
        for index, hook in enumerate(webhooks)
    )
    urls = [endpoint["url"] for endpoint in endpoints]
    twice = sorted({url for url in urls if urls.count(url) > 1})
    if twice:
        raise ConfigError(f"{ConfigVars.WEBHOOKS} lists {twice} more than once: one entry per URL")

    schedule = _schedule(config, ConfigVars.WEBHOOK_RETRY_SCHEDULE)
    rq_queue = _queue_name(config, ConfigVars.RQ_QUEUE)
    processing_queue = _queue_name(config, ConfigVars.PROCESSING_QUEUE)
    if processing_queue == rq_queue:
        # One queue for both would let a slow processor hold every webhook back.
        raise ConfigError(
            f"{ConfigVars.PROCESSING_QUEUE} and {ConfigVars.RQ_QUEUE} must differ, "
            f"both are {rq_queue!r}"
        )

    settings = Settings(
        bucket=bucket,
        region=_optional_str(config, ConfigVars.REGION),
        endpoint_url=endpoint_url,
        addressing_style=style,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        url_prefix=url_prefix,
        key_prefix=key_prefix,
        state_backend=state_backend,
        max_file_size=max_file_size,
        max_multipart_size=max_multipart_size,
        min_file_size=min_file_size,
        allowed_content_types=tuple(
            t.lower()
            for t in _patterned(
                config, ConfigVars.ALLOWED_CONTENT_TYPES, MEDIA_PATTERN, "'image/png' or 'image/*'"
            )
        ),
        allowed_extensions=extensions,
        block_executables=_bool(config, ConfigVars.BLOCK_EXECUTABLES),
        batch_max_files=_int(config, ConfigVars.BATCH_MAX_FILES, minimum=1, maximum=1000),
        expiry_min=expiry_min,
        expiry_max=expiry_max,
        expiry_default=expiry_default,
        multipart_threshold=_int(config, ConfigVars.MULTIPART_THRESHOLD, minimum=S3_MIN_PART_SIZE),
        part_size=part_size,
        upload_ttl=upload_ttl,
        verify_content=_bool(config, ConfigVars.VERIFY_CONTENT),
        max_request_size=_int(config, ConfigVars.MAX_REQUEST_SIZE, minimum=1024),
        webhooks=endpoints,
        webhook_retry_schedule=schedule,
        webhook_allowed_hosts=webhook_hosts,
        webhook_allow_private=_bool(config, ConfigVars.WEBHOOK_ALLOW_PRIVATE),
        webhook_timeout=_int(config, ConfigVars.WEBHOOK_TIMEOUT, minimum=1, maximum=300),
        webhook_include_owner=_bool(config, ConfigVars.WEBHOOK_INCLUDE_OWNER),
        rq_queue=rq_queue,
        rq_redis_url=_rq_redis_url(config, state_backend),
        allow_anonymous=_bool(config, ConfigVars.ALLOW_ANONYMOUS),
        companion_routes=_bool(config, ConfigVars.COMPANION_ROUTES),
        cors_origins=_str_list(config, ConfigVars.CORS_ORIGINS),
        create_only=_bool(config, ConfigVars.CREATE_ONLY),
        rate_limits=_rate_limits(config),
        metrics=_bool(config, ConfigVars.METRICS),
        metrics_token=_metrics_token(config),
        max_open_multipart=_int(config, ConfigVars.MAX_OPEN_MULTIPART, minimum=0, maximum=10_000),
        max_open_bytes=_int(config, ConfigVars.MAX_OPEN_BYTES, minimum=0),
        events=_bool(config, ConfigVars.EVENTS),
        events_retention=_int(config, ConfigVars.EVENTS_RETENTION, minimum=1, maximum=1_000_000),
        events_heartbeat=_int(config, ConfigVars.EVENTS_HEARTBEAT, minimum=1, maximum=300),
        events_progress_interval_ms=_int(
            config, ConfigVars.EVENTS_PROGRESS_INTERVAL_MS, minimum=0, maximum=60_000
        ),
        manager=_bool(config, ConfigVars.MANAGER),
        download_expiry=_int(
            config, ConfigVars.DOWNLOAD_EXPIRY, minimum=1, maximum=MAX_DOWNLOAD_EXPIRY
        ),
        settled_ttl=_int(config, ConfigVars.SETTLED_TTL, minimum=60),
        processing_queue=processing_queue,
        processing_retry_schedule=_schedule(config, ConfigVars.PROCESSING_RETRY_SCHEDULE),
        storage_events_token=_secret_token(config, ConfigVars.STORAGE_EVENTS_TOKEN),
    )
    profiles = load_profiles(config, settings)
    return dataclasses.replace(settings, profiles=profiles) if profiles else settings


# -- upload profiles (OBITOX_PROFILES) --------------------------------------------------

#: What a client sends as ``profile``.
PROFILE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
#: The rule keys of part one a profile may set, and the ``OBITOX_*`` key each replaces.
PROFILE_RULE_KEYS: dict[str, str] = {
    "max_file_size": ConfigVars.MAX_FILE_SIZE,
    "max_multipart_size": ConfigVars.MAX_MULTIPART_SIZE,
    "min_file_size": ConfigVars.MIN_FILE_SIZE,
    "allowed_content_types": ConfigVars.ALLOWED_CONTENT_TYPES,
    "allowed_extensions": ConfigVars.ALLOWED_EXTENSIONS,
    "block_executables": ConfigVars.BLOCK_EXECUTABLES,
    "batch_max_files": ConfigVars.BATCH_MAX_FILES,
    "expiry_min": ConfigVars.EXPIRY_MIN,
    "expiry_max": ConfigVars.EXPIRY_MAX,
    "expiry_default": ConfigVars.EXPIRY_DEFAULT,
    "multipart_threshold": ConfigVars.MULTIPART_THRESHOLD,
    "part_size": ConfigVars.PART_SIZE,
}
#: The storage settings a profile may set: key -> (the boto3 parameter, the header a
#: single PUT URL signs, the field of a presigned POST policy).
PROFILE_STORAGE_KEYS: dict[str, tuple[str, str, str]] = {
    "acl": ("ACL", "x-amz-acl", "acl"),
    "cache_control": ("CacheControl", "Cache-Control", "Cache-Control"),
    "content_disposition": ("ContentDisposition", "Content-Disposition", "Content-Disposition"),
    "server_side_encryption": (
        "ServerSideEncryption",
        "x-amz-server-side-encryption",
        "x-amz-server-side-encryption",
    ),
    "sse_kms_key_id": (
        "SSEKMSKeyId",
        "x-amz-server-side-encryption-aws-kms-key-id",
        "x-amz-server-side-encryption-aws-kms-key-id",
    ),
    "storage_class": ("StorageClass", "x-amz-storage-class", "x-amz-storage-class"),
}
PROFILE_KEYS: tuple[str, ...] = (
    *PROFILE_RULE_KEYS,
    "key_prefix",
    *PROFILE_STORAGE_KEYS,
    "metadata",
    "processors",
    "webhooks",
)
#: Storage classes an object can be read back from at once (``complete`` reads its first
#: bytes): GLACIER and DEEP_ARCHIVE need a restore first, so a lifecycle rule moves
#: objects there instead.
STORAGE_CLASSES = (
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
)
SERVER_SIDE_ENCRYPTIONS = ("AES256", "aws:kms")
CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
#: S3 limits user metadata to 2 KB (names and values together).
S3_MAX_METADATA_BYTES = 2048
_METADATA_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """One entry of ``OBITOX_PROFILES``, resolved once at ``init_app``."""

    name: str
    #: The app's settings with this profile's rule keys (and its key prefix, inside
    #: ``OBITOX_KEY_PREFIX``) in place of the ``OBITOX_*`` values.
    settings: Settings = dataclasses.field(repr=False)
    #: The ``OBITOX_*`` keys this profile replaced -> how errors name them
    #: (``OBITOX_PROFILES['avatars'].max_file_size``).
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: boto3 parameter -> value (``ServerSideEncryption``...): CreateMultipartUpload's.
    storage_params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: (header, value) pairs signed into every single PUT URL, in the order given.
    put_headers: tuple[tuple[str, str], ...] = ()
    #: The presigned POST policy's fields (and exact-match conditions).
    post_fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Fixed ``x-amz-meta-*`` pairs every upload of the profile carries (names lower case).
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: The only processors run for its uploads (``None``: every matching one).
    processors: tuple[str, ...] | None = None
    #: The only webhook events its uploads send (``None``: all).
    webhooks: tuple[str, ...] | None = None

    def source(self, key: str) -> str:
        """How errors name the ``OBITOX_*`` key ``key`` for this profile."""
        return self.sources.get(key, key)


def load_profiles(config: Mapping[str, Any], settings: Settings) -> dict[str, Profile]:
    """``OBITOX_PROFILES`` validated against ``settings`` (the app's own), one
    :class:`ConfigError` per mistake, naming the profile and the key."""
    raw = config[ConfigVars.PROFILES]
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{ConfigVars.PROFILES} must be a dict of profile name -> settings, got {raw!r}"
        )
    profiles: dict[str, Profile] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not re.match(PROFILE_NAME_PATTERN, name):
            raise ConfigError(
                f"{ConfigVars.PROFILES} names a profile {name!r}: a name is 1 to 64 letters, "
                "digits, '_', '.' or '-', starting with a letter or digit"
            )
        profiles[name] = _profile(config, settings, name, value)
    return profiles


def _profile(config: Mapping[str, Any], settings: Settings, name: str, value: object) -> Profile:
    where = f"{ConfigVars.PROFILES}[{name!r}]"
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a dict of profile settings, got {value!r}")
    unknown = sorted(str(key) for key in set(value) - set(PROFILE_KEYS))
    if unknown:
        raise ConfigError(
            f"{where} has unknown keys {unknown}: a profile may set {', '.join(PROFILE_KEYS)}"
        )
    overrides = {PROFILE_RULE_KEYS[key]: v for key, v in value.items() if key in PROFILE_RULE_KEYS}
    sources = {
        PROFILE_RULE_KEYS[key]: f"{where}.{key}" for key in value if key in PROFILE_RULE_KEYS
    }
    if value.get("key_prefix") is not None:
        prefix = value["key_prefix"]
        if isinstance(prefix, str) and prefix and not prefix.endswith("/"):
            prefix += "/"
        if (
            not isinstance(prefix, str)
            or not prefix
            or not _is_key_prefix(settings.key_prefix + prefix)
        ):
            raise ConfigError(
                f"{where}.key_prefix must be a relative key prefix like 'avatars/' (it goes "
                f"after {ConfigVars.KEY_PREFIX} {settings.key_prefix!r}; segments without "
                f"'.', '..', empty parts or control characters), got {value['key_prefix']!r}"
            )
        overrides[ConfigVars.KEY_PREFIX] = settings.key_prefix + prefix
        sources[ConfigVars.KEY_PREFIX] = f"{where}.key_prefix"
    rule_settings = settings
    if overrides:
        merged = {**config, **overrides, ConfigVars.PROFILES: {}}
        try:
            rule_settings = load_settings(merged)
        except ConfigError as error:
            message = str(error)
            for key, shown in sources.items():
                message = re.sub(rf"\b{key}\b", shown, message)
            raise ConfigError(message if message != str(error) else f"{where}: {message}") from None

    storage: dict[str, str] = {}
    for key, (param, _header, _field) in PROFILE_STORAGE_KEYS.items():
        setting = value.get(key)
        if setting is None:
            continue
        if (
            not isinstance(setting, str)
            or not setting
            or not re.fullmatch(r"[\x20-\x7e]+", setting)
        ):
            raise ConfigError(
                f"{where}.{key} must be a non-empty printable ASCII string, got {setting!r}"
            )
        storage[param] = setting.strip()
    _check_storage(where, value)
    metadata = _profile_metadata(where, value.get("metadata"))
    return Profile(
        name=name,
        settings=rule_settings,
        sources=sources,
        storage_params=storage,
        put_headers=tuple(
            (header, storage[param])
            for param, header, _field in PROFILE_STORAGE_KEYS.values()
            if param in storage
        ),
        post_fields={
            field: storage[param]
            for param, _header, field in PROFILE_STORAGE_KEYS.values()
            if param in storage
        },
        metadata=metadata,
        processors=_profile_names(where, "processors", value.get("processors")),
        webhooks=_profile_names(where, "webhooks", value.get("webhooks"), WEBHOOK_EVENTS),
    )


def _check_storage(where: str, value: Mapping[str, Any]) -> None:
    """The storage keys' values S3 would refuse, refused here (a typo in a storage
    class would otherwise fail every upload of the profile)."""
    choices = {
        "storage_class": STORAGE_CLASSES,
        "server_side_encryption": SERVER_SIDE_ENCRYPTIONS,
        "acl": CANNED_ACLS,
    }
    for key, allowed in choices.items():
        setting = value.get(key)
        if setting is not None and setting not in allowed:
            extra = (
                " (GLACIER and DEEP_ARCHIVE objects cannot be read back to verify them: "
                "move them there with a lifecycle rule)"
                if key == "storage_class"
                else ""
            )
            raise ConfigError(
                f"{where}.{key} must be one of {', '.join(allowed)}, got {setting!r}{extra}"
            )
    sse = value.get("server_side_encryption")
    if value.get("sse_kms_key_id") is not None and sse != "aws:kms":
        raise ConfigError(
            f"{where}.sse_kms_key_id needs server_side_encryption 'aws:kms', got {sse!r}"
        )


def _profile_metadata(where: str, metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(
        isinstance(k, str) and _METADATA_NAME.fullmatch(k) and isinstance(v, str)
        for k, v in metadata.items()
    ):
        raise ConfigError(
            f"{where}.metadata must be a dict of names (letters, digits, '-', '_') to "
            f"strings, got {metadata!r}"
        )
    bad = [v for v in metadata.values() if not re.fullmatch(r"[\x20-\x7e]*", v)]
    if bad:
        raise ConfigError(f"{where}.metadata values must be printable ASCII, got {bad!r}")
    if sum(len(k) + len(v) for k, v in metadata.items()) > S3_MAX_METADATA_BYTES:
        raise ConfigError(
            f"{where}.metadata holds more than the {S3_MAX_METADATA_BYTES} bytes S3 allows"
        )
    return {k.lower(): v.strip() for k, v in metadata.items()}


def _profile_names(
    where: str, key: str, names: object, allowed: Sequence[str] | None = None
) -> tuple[str, ...] | None:
    """``processors``/``webhooks``: ``None`` (all) or a list of names."""
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise ConfigError(f"{where}.{key} must be a list of names (or None for all), got {names!r}")
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{where}.{key} must hold non-empty strings, got {list(names)!r}")
    if allowed is not None:
        bad = [n for n in names if n not in allowed]
        if bad:
            raise ConfigError(
                f"{where}.{key} holds unknown events {bad!r}; events are {', '.join(allowed)}"
            )
    return tuple(dict.fromkeys(names))
