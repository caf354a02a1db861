"""The upload domain: sign, batch, complete, status.

No Flask here: the service gets an owner id and loaded request bodies, and returns
plain dicts shaped like the response schemas. Failures are :class:`ObitoXError`.
Signals are sent with ``sender`` (the Flask app) so the host can subscribe per app.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from base64 import urlsafe_b64encode
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from . import signals
from .config import Settings, is_safe_key_path
from .errors import ObitoXError
from .expiry import smart_expiry
from .state import StateBackend, UploadRecord
from .storage import Storage, StorageRegistry, StorageSettings
from .storage.client import storage_settings_from
from .storage.signer import PutObjectSpec
from .validation import HEAD_BYTES, Rules, RuleSet, sanitize_filename, verify_content

KeyBuilder = Callable[[str, str, str, Mapping[str, str]], str]
StorageResolver = Callable[[str], "StorageSettings | Mapping[str, Any] | None"]


class HostHooks(Protocol):
    """The host callbacks the service consults (set after ``init_app``, so read late)."""

    key_builder: KeyBuilder | None
    storage_resolver: StorageResolver | None


#: Records outlive ``OBITOX_UPLOAD_TTL`` by this long, so a late client learns its
#: upload expired (410) instead of that it never existed (404).
EXPIRED_GRACE = 24 * 3600
#: S3 object keys are at most 1024 bytes of UTF-8.
MAX_KEY_BYTES = 1024

_OPEN = frozenset({"pending", "uploading"})
#: The one Content-Type botocore leaves out of a signature.
UNSIGNABLE_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


def isoformat(timestamp: float) -> str:
    """ISO 8601 UTC to the second, e.g. ``2026-11-21T05:30:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def new_upload_ids(count: int) -> list[str]:
    """``count`` upload ids of 128 random bits each, URL-safe (unguessable, so an id can
    serve as a resume token), from one read of the OS's randomness."""
    raw = os.urandom(16 * count)
    return [
        urlsafe_b64encode(raw[i : i + 16]).rstrip(b"=").decode() for i in range(0, 16 * count, 16)
    ]


class InvalidEntry(NamedTuple):
    """A batch entry that failed loading: its error, and its filename when it had one."""

    error: ObitoXError
    filename: str | None = None


class Planned(NamedTuple):
    """One validated file, ready to sign: its record, its PUT and its answer."""

    record: UploadRecord
    put: PutObjectSpec
    answer: dict[str, Any]


def _mismatch(upload_id: str, reason: str) -> ObitoXError:
    return ObitoXError(
        "CONTENT_MISMATCH",
        f"The upload was rejected: {reason}.",
        details={"uploadId": upload_id, "reason": reason},
    )


def _not_found(upload_id: str) -> ObitoXError:
    return ObitoXError(
        "UPLOAD_NOT_FOUND",
        f"No upload {upload_id!r} exists for this caller.",
        details={"uploadId": upload_id},
    )


class UploadService:
    """Everything an upload route does, for one app."""

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

    # -- helpers -----------------------------------------------------------------

    def rules(self, *client_rules: Mapping[str, Any] | None) -> RuleSet:
        """The server's rules, tightened by each client ``validation`` object given."""
        rules = self._default_rules
        for extra in client_rules:
            if extra:
                rules = rules.tighten(extra)
        return rules

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

    def _build_key(
        self, owner: str, filename: str, upload_id: str, metadata: Mapping[str, str]
    ) -> str:
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

    def _owned(self, owner: str, upload_id: str) -> UploadRecord:
        record = self.state.get(upload_id)
        # Another owner's upload answers exactly like a missing one: never reveal it exists.
        if record is None or not secrets.compare_digest(record.owner.encode(), owner.encode()):
            raise _not_found(upload_id)
        return record

    def _send(self, signal: Any, **kwargs: Any) -> None:
        if signal.receivers:
            signal.send(self.sender, **kwargs)

    def reject(self, owner: str, filename: str | None, error: ObitoXError, *, stage: str) -> None:
        """Tell the host a file was refused (``upload-rejected``)."""
        self._send(
            signals.upload_rejected,
            filename=filename,
            reason=error.message,
            code=error.code,
            stage=stage,
            owner=owner,
            upload=None,
        )

    # -- signing -----------------------------------------------------------------

    def _plan(
        self,
        owner: str,
        spec: Mapping[str, Any],
        rules: RuleSet,
        network_type: str | None,
        storage: Storage,
        upload_id: str,
        now: float,
    ) -> Planned:
        """Validate one file and decide its key, expiry and signed headers (no I/O)."""
        filename = sanitize_filename(spec["filename"])
        content_type = spec["contentType"].strip()
        if content_type.lower() == UNSIGNABLE_CONTENT_TYPE:
            # botocore never signs this exact value (its own default form type), so the
            # upload could then be sent with any type: sign the same type, spaceless.
            content_type = content_type.replace("; ", ";")
        size = spec["size"]
        rules.check(filename, content_type, size)

        metadata = {k.lower(): v.strip() for k, v in spec.get("metadata", {}).items()}
        checksum = spec.get("checksumSha256")
        key = self._build_key(owner, filename, upload_id, metadata)
        settings = self.settings
        expires_in = smart_expiry(
            size,
            spec.get("networkType", network_type),
            minimum=settings.expiry_min,
            maximum=settings.expiry_max,
            allowance=settings.expiry_default,
            requested=spec.get("expiresIn"),
        )
        headers = {"Content-Type": content_type}
        if checksum:
            headers["x-amz-checksum-sha256"] = checksum
        for name, value in metadata.items():
            headers[f"x-amz-meta-{name}"] = value

        record = UploadRecord(
            upload_id=upload_id,
            owner=owner,
            kind="single",
            bucket=storage.bucket,
            key=key,
            filename=filename,
            content_type=content_type,
            size=size,
            status="pending",
            created_at=now,
            updated_at=now,
            expires_at=now + settings.upload_ttl,
            metadata=metadata,
            checksum_sha256=checksum,
            validation=rules.client_rules or None,
        )
        put = PutObjectSpec(key, content_type, size, expires_in, checksum, metadata)
        answer = {
            "uploadId": upload_id,
            "key": key,
            "bucket": storage.bucket,
            "method": "PUT",
            "url": "",  # filled in by _sign_all
            "headers": headers,
            "expiresIn": expires_in,
            "expiresAt": isoformat(now + expires_in),
        }
        return Planned(record, put, answer)

    @staticmethod
    def _sign_all(storage: Storage, planned: Sequence[Planned]) -> None:
        """Presign every planned PUT in one call: one credentials read, one clock."""
        urls = storage.presign_puts([p.put for p in planned])
        for plan, url in zip(planned, urls, strict=True):
            plan.answer["url"] = url

    @property
    def _record_ttl(self) -> int:
        return self.settings.upload_ttl + EXPIRED_GRACE

    def sign_upload(self, owner: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /uploads``: validate one file and return its presigned PUT."""
        storage = self.storage_for(owner)
        try:
            rules = self.rules(spec.get("validation"))
            plan = self._plan(owner, spec, rules, None, storage, new_upload_ids(1)[0], time.time())
        except ObitoXError as error:
            self.reject(owner, spec.get("filename"), error, stage="validation")
            raise
        self._sign_all(storage, [plan])
        self.state.create(plan.record, self._record_ttl)
        self._send(signals.upload_signed, upload=plan.record)
        return plan.answer

    def check_batch_size(self, count: int) -> None:
        limit = self.settings.batch_max_files
        if count < 1:
            raise ObitoXError(
                "INVALID_INPUT", "files must hold at least one file.", details={"field": "files"}
            )
        if count > limit:
            raise ObitoXError(
                "BATCH_TOO_LARGE",
                f"A batch holds at most {limit} files (OBITOX_BATCH_MAX_FILES); got {count}.",
                details={"limit": limit, "actual": count},
            )

    def sign_batch(
        self,
        owner: str,
        files: Sequence[Mapping[str, Any] | InvalidEntry],
        *,
        validation: Mapping[str, Any] | None = None,
        network_type: str | None = None,
    ) -> dict[str, Any]:
        """``POST /uploads/batch``: each file on its own; one state round trip for all.

        ``files`` holds loaded file specs, or an :class:`InvalidEntry` for one that did
        not load, so a malformed entry fails alone and keeps its index.
        """
        self.check_batch_size(len(files))
        storage = self.storage_for(owner)
        batch_rules = self.rules(validation)
        now = time.time()
        upload_ids = new_upload_ids(len(files))
        planned: list[Planned] = []
        errors: list[dict[str, Any]] = []
        rejected: list[tuple[str, ObitoXError]] = []
        for index, spec in enumerate(files):
            if isinstance(spec, InvalidEntry):  # malformed: answered, but not a rejected file
                errors.append({"index": index, "filename": spec.filename, **spec.error.to_dict()})
                continue
            file_rules = spec.get("validation")
            try:
                rules = batch_rules.tighten(file_rules) if file_rules else batch_rules
                plan = self._plan(owner, spec, rules, network_type, storage, upload_ids[index], now)
            except ObitoXError as error:
                errors.append({"index": index, "filename": spec["filename"], **error.to_dict()})
                rejected.append((spec["filename"], error))
                continue
            plan.answer["index"] = index
            plan.answer["filename"] = plan.record.filename
            planned.append(plan)
        if planned:
            self._sign_all(storage, planned)
            self.state.create_many([p.record for p in planned], self._record_ttl)
        for plan in planned:
            self._send(signals.upload_signed, upload=plan.record)
        for filename, refused in rejected:
            self.reject(owner, filename, refused, stage="validation")
        return {
            "total": len(files),
            "successful": len(planned),
            "failed": len(errors),
            "uploads": [p.answer for p in planned],
            "errors": errors,
        }

    # -- completion and status ---------------------------------------------------

    def _settled(self, record: UploadRecord) -> dict[str, Any] | None:
        """The stored answer of a finished upload (raising for a failed one), or
        ``None`` while it is still open."""
        if record.status == "completed":
            assert record.result is not None
            return dict(record.result)
        if record.status == "rejected":
            raise _mismatch(
                record.upload_id, (record.result or {}).get("reason", "content did not match")
            )
        if record.status == "aborted":
            raise ObitoXError(
                "UPLOAD_ABORTED", "The upload was aborted.", details={"uploadId": record.upload_id}
            )
        if record.status == "expired" or time.time() > record.expires_at:
            raise ObitoXError(
                "UPLOAD_EXPIRED",
                "The upload expired (OBITOX_UPLOAD_TTL); sign a new one.",
                details={"uploadId": record.upload_id},
            )
        return None

    def _settle_race(self, upload_id: str) -> dict[str, Any]:
        """Another caller changed the status first: answer what it decided."""
        record = self.state.get(upload_id)
        if record is None:
            raise _not_found(upload_id)
        answer = self._settled(record)
        if answer is None:  # pragma: no cover - a CAS only fails when the status moved on
            raise ObitoXError("UPLOAD_NOT_COMPLETE", "The upload is still in progress; retry.")
        return answer

    def complete_upload(self, owner: str, upload_id: str) -> dict[str, Any]:
        """``POST /uploads/<id>/complete``: check the object, then mark it completed.

        Idempotent: a finished upload answers its stored result and sends nothing again.
        """
        record = self._owned(owner, upload_id)
        if record.kind != "single":
            raise ObitoXError(
                "INVALID_INPUT",
                "This is a multipart upload: complete it with POST /multipart/<uploadId>/complete.",
                details={"uploadId": upload_id, "kind": record.kind},
            )
        storage = self.storage_for(owner, record.bucket)
        if record.status == "rejected":
            # Idempotent, and finishes a delete that failed the first time.
            storage.delete(record.key)
        answer = self._settled(record)
        if answer is not None:
            return answer

        info = storage.head(record.key)
        if info is None:
            raise ObitoXError(
                "UPLOAD_NOT_COMPLETE",
                "Storage holds no object for this upload yet: PUT the file to the signed URL first.",
                details={"uploadId": upload_id, "key": record.key},
            )
        reason = None
        if info.size != record.size:
            reason = f"stored size {info.size} differs from the declared size {record.size}"
        elif self.settings.verify_content:
            # An empty object is checked too: an empty "image/png" is not a PNG.
            head = (
                storage.read_head(record.key, min(HEAD_BYTES, record.size), etag=info.etag)
                if record.size
                else b""
            )
            if head is None:  # replaced between the HEAD and the GET: judge the new one
                raise ObitoXError(
                    "UPLOAD_NOT_COMPLETE",
                    "The object changed while it was being verified; call complete again.",
                    details={"uploadId": upload_id},
                )
            reason = verify_content(record.content_type, head, self.rules(record.validation))
        if reason is not None:
            return self._reject_stored(record, storage, reason)

        result = {
            "uploadId": upload_id,
            "status": "completed",
            "key": record.key,
            "bucket": record.bucket,
            "size": info.size,
            "etag": info.etag,
            "contentType": record.content_type,
        }
        updated = self.state.update(upload_id, _OPEN, status="completed", result=result)
        if updated is None:
            return self._settle_race(upload_id)
        self._send(signals.upload_completed, upload=updated)
        return result

    def _reject_stored(self, record: UploadRecord, storage: Storage, reason: str) -> dict[str, Any]:
        # Decide first (exactly one caller wins the CAS and tells the host), then delete.
        # If the delete fails, the record already says "rejected" and every later
        # complete retries the delete (see complete_upload) before answering 422.
        updated = self.state.update(
            record.upload_id,
            _OPEN,
            status="rejected",
            result={"reason": reason, "stage": "verification"},
        )
        if updated is None:
            return self._settle_race(record.upload_id)
        error = _mismatch(record.upload_id, reason)
        self._send(
            signals.upload_rejected,
            filename=record.filename,
            reason=error.message,
            code=error.code,
            stage="verification",
            owner=record.owner,
            upload=updated,
        )
        storage.delete(record.key)
        raise error

    def get_upload(self, owner: str, upload_id: str) -> dict[str, Any]:
        """``GET /uploads/<id>``: where an upload of the caller stands."""
        record = self._owned(owner, upload_id)
        status = record.status
        if status in _OPEN and time.time() > record.expires_at:
            status = "expired"  # complete answers 410; the status route just says so
        result = record.result or {}
        return {
            "uploadId": record.upload_id,
            "kind": record.kind,
            "status": status,
            "key": record.key,
            "bucket": record.bucket,
            "filename": record.filename,
            "contentType": record.content_type,
            "size": record.size,
            "metadata": dict(record.metadata),
            "createdAt": isoformat(record.created_at),
            "updatedAt": isoformat(record.updated_at),
            "expiresAt": isoformat(record.expires_at),
            "etag": result.get("etag"),
            "reason": result.get("reason"),
        }
