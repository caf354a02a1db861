"""What every lifecycle of the upload domain stands on: its settings, state, storage,
the host's hooks, ownership, rules, signals, and the one way a record is made.

No Flask here: the domain gets an owner id and loaded request bodies and returns the
typed answers of :mod:`.results`. Failures are :class:`~flask_obitox.ObitoXError`.
Signals are sent with ``sender`` (the Flask app) so the host can subscribe per app.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from .. import signals
from ..config import Settings, is_safe_key_path
from ..errors import ObitoXError
from ..expiry import smart_expiry
from ..state import StateBackend, UploadRecord
from ..storage import Storage, StorageRegistry, StorageSettings
from ..storage.client import storage_settings_from
from ..validation import Rules, RuleSet
from .common import EXPIRED_GRACE, MAX_KEY_BYTES, not_found

KeyBuilder = Callable[[str, str, str, Mapping[str, str]], str]
StorageResolver = Callable[[str], "StorageSettings | Mapping[str, Any] | None"]


class CheckedFile(NamedTuple):
    """A file the rules accepted: its sanitised name, signable type and metadata."""

    filename: str
    content_type: str
    metadata: dict[str, str]


class HostHooks(Protocol):
    """The host callbacks the domain consults (set after ``init_app``, so read late)."""

    key_builder: Callable[..., str] | None
    storage_resolver: Callable[[str], Any] | None
    processors: dict[str, Any]


class DomainBase:
    """One app's settings, state and storage, and what every operation needs of them."""

    def __init__(
        self,
        settings: Settings,
        state: StateBackend,
        storages: StorageRegistry,
        *,
        sender: Any,
        hooks: HostHooks,
    ) -> None:
        self.settings = settings
        self.state = state
        self.storages = storages
        self.sender = sender
        self.hooks = hooks
        self.default_storage = StorageSettings(
            bucket=settings.bucket,
            region=settings.region,
            endpoint_url=settings.endpoint_url,
            addressing_style=settings.addressing_style,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
        )
        self.server_rules = Rules(
            max_size=settings.max_file_size,
            min_size=settings.min_file_size,
            allowed_types=settings.allowed_content_types,
            allowed_extensions=settings.allowed_extensions,
            block_executables=settings.block_executables,
        )
        self._default_rules = self.server_rules.tighten(None)
        self.multipart_rules = dataclasses.replace(
            self.server_rules,
            max_size=settings.max_multipart_size,
            max_size_setting="OBITOX_MAX_MULTIPART_SIZE",
        )
        self._default_multipart_rules = self.multipart_rules.tighten(None)

    # -- rules, storage, keys ---------------------------------------------------------

    def rules(self, *client_rules: Mapping[str, Any] | None, multipart: bool = False) -> RuleSet:
        """The server's rules, tightened by each client ``validation`` object given.

        Multipart uploads are limited by ``OBITOX_MAX_MULTIPART_SIZE`` instead of
        ``OBITOX_MAX_FILE_SIZE``; every other rule is the same.
        """
        rules = self._default_multipart_rules if multipart else self._default_rules
        for extra in client_rules:
            if extra:
                rules = rules.tighten(extra)
        return rules

    def rules_of(self, record: UploadRecord) -> RuleSet:
        """The rules ``record`` was signed under (the client's validation included)."""
        return self.rules(record.validation, multipart=record.kind == "multipart")

    def storage_for(self, owner: str, bucket: str | None = None) -> Storage:
        settings = self.default_storage
        resolver = self.hooks.storage_resolver
        if resolver is not None:
            resolved = resolver(owner)
            if resolved is not None:
                settings = storage_settings_from(resolved, self.default_storage)
        if bucket is not None and bucket != settings.bucket:
            settings = dataclasses.replace(settings, bucket=bucket)
        return self.storages.get(settings)

    def build_key(
        self, owner: str, filename: str, upload_id: str, metadata: Mapping[str, str]
    ) -> str:
        """The object key: ``<prefix><uploadId>/<filename>``, or the host's
        ``key_builder``, whose answer must stay under ``OBITOX_KEY_PREFIX``."""
        prefix = self.settings.key_prefix
        builder = self.hooks.key_builder
        if builder is None:
            return f"{prefix}{upload_id}/{filename}"
        key = builder(owner, filename, upload_id, metadata)
        # The prefix itself was checked at init_app; the rest must be as clean.
        if (
            not isinstance(key, str)
            or not key.startswith(prefix)
            or len(key.encode()) > MAX_KEY_BYTES
            or not is_safe_key_path(key[len(prefix) :])
        ):
            # A host bug, not a client error: fail loudly rather than write outside the prefix.
            raise RuntimeError(
                f"key_builder returned {key!r}: a key must start with OBITOX_KEY_PREFIX {prefix!r}, "
                f"be at most {MAX_KEY_BYTES} bytes and have no empty, '.' or '..' segments"
            )
        return key

    def has_default_key(self, record: UploadRecord) -> bool:
        """Whether ``record``'s key is the default ``<prefix><uploadId>/<filename>``,
        unique to the upload (a host ``key_builder`` may reuse keys)."""
        return record.key == f"{self.settings.key_prefix}{record.upload_id}/{record.filename}"

    def expiry(self, size: int, network_type: str | None, requested: int | None = None) -> int:
        """Seconds a URL for ``size`` bytes stays valid (smart expiry, the app's bounds)."""
        settings = self.settings
        return smart_expiry(
            size,
            network_type,
            minimum=settings.expiry_min,
            maximum=settings.expiry_max,
            allowance=settings.expiry_default,
            requested=requested,
        )

    # -- records ----------------------------------------------------------------------

    @property
    def record_ttl(self) -> int:
        """Seconds a record lives in the state backend: the upload TTL and a day's grace."""
        return self.settings.upload_ttl + EXPIRED_GRACE

    def new_record(
        self,
        upload_id: str,
        owner: str,
        storage: Storage,
        key: str,
        file: CheckedFile,
        *,
        kind: str,
        size: int,
        now: float,
        **fields: Any,
    ) -> UploadRecord:
        """The record of a new (``pending``) upload; ``fields`` are the optional ones."""
        return UploadRecord(
            upload_id=upload_id,
            owner=owner,
            kind=kind,
            bucket=storage.bucket,
            key=key,
            filename=file.filename,
            content_type=file.content_type,
            size=size,
            status="pending",
            created_at=now,
            updated_at=now,
            expires_at=now + self.settings.upload_ttl,
            metadata=file.metadata,
            **fields,
        )

    def owned(
        self,
        owner: str,
        upload_id: str,
        *,
        key: str | None = None,
        kind: str | None = None,
    ) -> UploadRecord:
        """The caller's upload ``upload_id``. Another owner's answers 404 exactly like a
        missing one (never reveal it exists), and so does a ``key`` (Companion sends one
        on every call) that is not the record's. ``kind``: the route's kind; the other
        kind is 400, naming the right route."""
        record = self.state.get(upload_id)
        if record is None or not secrets.compare_digest(record.owner.encode(), owner.encode()):
            raise not_found(upload_id)
        if key is not None and not secrets.compare_digest(record.key.encode(), key.encode()):
            raise not_found(upload_id)
        if kind is not None and record.kind != kind:
            message = (
                "This is a multipart upload: complete it with POST /multipart/<uploadId>/complete."
                if record.kind == "multipart"
                else "This is a single upload: use POST /uploads/<uploadId>/complete."
            )
            raise ObitoXError(
                "INVALID_INPUT", message, details={"uploadId": upload_id, "kind": record.kind}
            )
        return record

    def is_past_ttl(self, record: UploadRecord, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > record.expires_at

    # -- signals ----------------------------------------------------------------------

    def send(self, signal: Any, **kwargs: Any) -> None:
        """Send ``signal`` with the app as sender (skipped when nobody listens)."""
        if signal.receivers:
            signal.send(self.sender, **kwargs)

    def reject(
        self,
        owner: str,
        filename: str | None,
        error: ObitoXError,
        *,
        stage: str,
        upload: UploadRecord | None = None,
    ) -> None:
        """Tell the host a file was refused (``upload-rejected``); ``upload`` is the
        settled record when there is one (refused after upload), else ``None``."""
        self.send(
            signals.upload_rejected,
            filename=filename,
            reason=error.message,
            code=error.code,
            stage=stage,
            owner=owner,
            upload=upload,
        )
