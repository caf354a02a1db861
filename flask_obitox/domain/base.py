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
from ..config import S3_MAX_METADATA_BYTES, ConfigVars, Profile, Settings, is_safe_key_path
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


def profile_rules(profile: Profile) -> tuple[RuleSet, RuleSet]:
    """``profile``'s compiled (single, multipart) rules; errors name its own keys
    (``OBITOX_PROFILES['avatars'].max_file_size``) where it set them."""
    settings, source = profile.settings, profile.source
    single = Rules(
        max_size=settings.max_file_size,
        min_size=settings.min_file_size,
        allowed_types=settings.allowed_content_types,
        allowed_extensions=settings.allowed_extensions,
        block_executables=settings.block_executables,
        max_size_setting=source(ConfigVars.MAX_FILE_SIZE),
        min_size_setting=source(ConfigVars.MIN_FILE_SIZE),
        types_setting=source(ConfigVars.ALLOWED_CONTENT_TYPES),
        extensions_setting=source(ConfigVars.ALLOWED_EXTENSIONS),
    )
    multipart = dataclasses.replace(
        single,
        max_size=settings.max_multipart_size,
        max_size_setting=source(ConfigVars.MAX_MULTIPART_SIZE),
    )
    return single.tighten(None), multipart.tighten(None)


class HostHooks(Protocol):
    """The host callbacks the domain consults (set after ``init_app``, so read late)."""

    key_builder: Callable[..., str] | None
    storage_resolver: Callable[[str], Any] | None
    processors: dict[str, Any]
    profile_guard: Callable[[str, str], Any] | None


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
        self.profiles: Mapping[str, Profile] = settings.profiles
        #: Each profile's (single, multipart) rules, compiled once: a create call
        #: under a profile costs a dict lookup more than one without.
        self._profile_rules: dict[str, tuple[RuleSet, RuleSet]] = {
            name: profile_rules(profile) for name, profile in self.profiles.items()
        }
        #: Every key prefix uploads are made under, longest first.
        self.key_prefixes: tuple[str, ...] = tuple(
            sorted(
                {settings.key_prefix, *(p.settings.key_prefix for p in self.profiles.values())},
                key=len,
                reverse=True,
            )
        )

    # -- rules, storage, keys ---------------------------------------------------------

    def rules(
        self,
        *client_rules: Mapping[str, Any] | None,
        multipart: bool = False,
        profile: str | None = None,
    ) -> RuleSet:
        """The server's rules (``profile``'s, when given), tightened by each client
        ``validation`` object given.

        Multipart uploads are limited by ``OBITOX_MAX_MULTIPART_SIZE`` instead of
        ``OBITOX_MAX_FILE_SIZE``; every other rule is the same.
        """
        if profile is None:
            rules = self._default_multipart_rules if multipart else self._default_rules
        else:
            rules = self._profile_rules[profile][multipart]
        for extra in client_rules:
            if extra:
                rules = rules.tighten(extra)
        return rules

    def rules_of(self, record: UploadRecord) -> RuleSet:
        """The rules ``record`` was signed under (the client's validation included)."""
        # A profile removed from the config since: the OBITOX_* rules.
        profile = record.profile if record.profile in self._profile_rules else None
        return self.rules(record.validation, multipart=record.kind == "multipart", profile=profile)

    def profile(self, owner: str, name: str | None) -> Profile | None:
        """The profile a create call named (``None``: the ``OBITOX_*`` defaults): 400 for
        one ``OBITOX_PROFILES`` does not define, 403 when the host's ``profile_guard``
        refuses it to ``owner``."""
        if name is None:
            return None
        profile = self.profiles.get(name)
        if profile is None:
            raise ObitoXError(
                "INVALID_INPUT",
                f"Unknown profile {name[:64]!r}: OBITOX_PROFILES defines no such profile.",
                details={"field": "profile", "profile": name[:64]},
            )
        guard = self.hooks.profile_guard
        if guard is not None and not guard(owner, name):
            raise ObitoXError(
                "FORBIDDEN",
                f"You may not upload to the profile {name!r}.",
                details={"field": "profile", "profile": name},
            )
        return profile

    @staticmethod
    def with_profile_metadata(file: CheckedFile, profile: Profile | None) -> CheckedFile:
        """``file`` carrying ``profile``'s fixed metadata pairs (which win over the
        client's own of the same name)."""
        if profile is None or not profile.metadata:
            return file
        metadata = {**file.metadata, **profile.metadata}
        total = sum(len(name) + len(value) for name, value in metadata.items())
        if total > S3_MAX_METADATA_BYTES:
            raise ObitoXError(
                "VALIDATION_FAILED",
                f"metadata with the profile's own pairs is {total} bytes; storage allows at "
                f"most {S3_MAX_METADATA_BYTES}",
                details={"field": "metadata", "limit": S3_MAX_METADATA_BYTES, "actual": total},
            )
        return file._replace(metadata=metadata)

    def settings_of(self, profile: str | None) -> Settings:
        """The settings an upload of ``profile`` follows (the app's without one, or for
        a profile removed from the config since)."""
        found = self.profiles.get(profile) if profile is not None else None
        return found.settings if found is not None else self.settings

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
        self,
        owner: str,
        filename: str,
        upload_id: str,
        metadata: Mapping[str, str],
        profile: Profile | None = None,
    ) -> str:
        """The object key: ``<prefix><uploadId>/<filename>``, or the host's
        ``key_builder``, whose answer must stay under ``OBITOX_KEY_PREFIX`` (and the
        profile's ``key_prefix`` inside it)."""
        prefix = (profile.settings if profile is not None else self.settings).key_prefix
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
                f"key_builder returned {key!r}: a key must start with {prefix!r} (OBITOX_KEY_PREFIX"
                f"{', then the profile key_prefix' if profile is not None else ''}), "
                f"be at most {MAX_KEY_BYTES} bytes and have no empty, '.' or '..' segments"
            )
        return key

    def upload_id_in_key(self, key: str) -> str | None:
        """The upload id a key of the default layout ``<prefix><uploadId>/<filename>``
        names (under a profile's prefix or ``OBITOX_KEY_PREFIX``), or ``None``."""
        for prefix in self.key_prefixes:
            if key.startswith(prefix):
                upload_id, slash, _filename = key[len(prefix) :].partition("/")
                if slash and upload_id:
                    return upload_id
        return None

    def has_default_key(self, record: UploadRecord) -> bool:
        """Whether ``record``'s key is the default ``<prefix><uploadId>/<filename>``,
        unique to the upload (a host ``key_builder`` may reuse keys)."""
        prefix = self.settings_of(record.profile).key_prefix
        return record.key == f"{prefix}{record.upload_id}/{record.filename}"

    def expiry(
        self,
        size: int,
        network_type: str | None,
        requested: int | None = None,
        settings: Settings | None = None,
    ) -> int:
        """Seconds a URL for ``size`` bytes stays valid (smart expiry, the bounds of
        ``settings``: the app's, or a profile's)."""
        settings = settings or self.settings
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
        # The required fields in their declared order: by position, a third of the
        # instructions of by name (a batch makes one record per file).
        return UploadRecord(
            upload_id,
            owner,
            kind,
            storage.bucket,
            key,
            file.filename,
            file.content_type,
            size,
            "pending",
            now,  # created_at
            now,  # updated_at
            now + self.settings.upload_ttl,  # expires_at
            file.metadata,
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
