"""The upload domain: sign, batch, complete, status.

No Flask here: the service gets an owner id and loaded request bodies, and returns
plain dicts shaped like the response schemas. Failures are :class:`ObitoXError`.
Signals are sent with ``sender`` (the Flask app) so the host can subscribe per app.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import secrets
import time
from base64 import urlsafe_b64encode
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from . import signals
from .config import S3_MAX_PARTS, S3_MAX_SINGLE_PUT, S3_MIN_PART_SIZE, Settings, is_safe_key_path
from .errors import ObitoXError, ServiceUnavailable
from .expiry import smart_expiry
from .state import StateBackend, UploadRecord
from .storage import Storage, StorageRegistry, StorageSettings
from .storage.client import ObjectInfo, PartInfo, PendingMultipart, storage_settings_from
from .storage.signer import PutObjectSpec, UploadPartSpec
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
#: Part URLs one ``/parts`` call may ask for.
MAX_PARTS_PER_CALL = 1000
MiB = 1024 * 1024

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


def _invalid_parts(upload_id: str, message: str, **details: Any) -> ObitoXError:
    return ObitoXError("INVALID_PARTS", message, details={"uploadId": upload_id, **details})


def _aborted(upload_id: str) -> ObitoXError:
    return ObitoXError("UPLOAD_ABORTED", "The upload was aborted.", details={"uploadId": upload_id})


def part_layout(size: int, requested: int | None, default: int) -> tuple[int, int]:
    """``(part size, number of parts)`` for a multipart upload of ``size`` bytes.

    The client's ``partSize`` (else ``OBITOX_PART_SIZE``) is raised, to a whole MiB, as
    far as needed to keep within S3's 10,000 parts. A requested size below S3's 5 MiB
    minimum or above its 5 GiB maximum is refused (422).
    """
    part_size = default if requested is None else requested
    if requested is not None and not S3_MIN_PART_SIZE <= requested <= S3_MAX_SINGLE_PUT:
        raise ObitoXError(
            "VALIDATION_FAILED",
            f"partSize must be between {S3_MIN_PART_SIZE} (5 MiB) and {S3_MAX_SINGLE_PUT} "
            f"(5 GiB) bytes; got {requested}. Only the last part may be smaller.",
            details={"field": "partSize", "min": S3_MIN_PART_SIZE, "max": S3_MAX_SINGLE_PUT},
        )
    smallest = math.ceil(size / S3_MAX_PARTS)
    if part_size < smallest:
        part_size = math.ceil(smallest / MiB) * MiB
    return part_size, max(1, math.ceil(size / part_size))


def part_length(record: UploadRecord, part_number: int) -> int:
    """The exact size of part ``part_number`` (every part is full but the last)."""
    assert record.part_size is not None
    assert record.total_parts is not None
    if part_number < record.total_parts:
        return record.part_size
    return record.size - (record.total_parts - 1) * record.part_size


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
        self.multipart_rules = dataclasses.replace(
            self.server_rules,
            max_size=settings.max_multipart_size,
            max_size_setting="OBITOX_MAX_MULTIPART_SIZE",
        )
        self._default_multipart_rules = self.multipart_rules.tighten(None)

    # -- helpers -----------------------------------------------------------------

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

    def owned(self, owner: str, upload_id: str) -> UploadRecord:
        """The caller's upload ``upload_id``; another owner's answers 404 like a missing one."""
        record = self.state.get(upload_id)
        # Another owner's upload answers exactly like a missing one: never reveal it exists.
        if record is None or not secrets.compare_digest(record.owner.encode(), owner.encode()):
            raise _not_found(upload_id)
        return record

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
        filename, content_type, metadata = self.checked_file(spec, rules)
        size = spec["size"]
        checksum = spec.get("checksumSha256")
        key = self.build_key(owner, filename, upload_id, metadata)
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
    def checked_file(spec: Mapping[str, Any], rules: RuleSet) -> tuple[str, str, dict[str, str]]:
        """The file's sanitised name, signable content type and metadata, after
        ``rules`` accepted its name, type and size."""
        filename = sanitize_filename(spec["filename"])
        content_type = spec["contentType"].strip()
        if content_type.lower() == UNSIGNABLE_CONTENT_TYPE:
            # botocore never signs this exact value (its own default form type), so the
            # upload could then be sent with any type: sign the same type, spaceless.
            content_type = content_type.replace("; ", ";")
        rules.check(filename, content_type, spec["size"])
        metadata = {k.lower(): v.strip() for k, v in spec.get("metadata", {}).items()}
        return filename, content_type, metadata

    @staticmethod
    def _sign_all(storage: Storage, planned: Sequence[Planned]) -> None:
        """Presign every planned PUT in one call: one credentials read, one clock."""
        urls = storage.presign_puts([p.put for p in planned])
        for plan, url in zip(planned, urls, strict=True):
            plan.answer["url"] = url

    @property
    def record_ttl(self) -> int:
        """Seconds a record lives in the state backend: the upload TTL and a day's grace."""
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
        self.state.create(plan.record, self.record_ttl)
        self.send(signals.upload_signed, upload=plan.record)
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
            self.state.create_many([p.record for p in planned], self.record_ttl)
        for plan in planned:
            self.send(signals.upload_signed, upload=plan.record)
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

    def settled(self, record: UploadRecord) -> dict[str, Any] | None:
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
            raise _aborted(record.upload_id)
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
        answer = self.settled(record)
        if answer is None:  # pragma: no cover - a CAS only fails when the status moved on
            raise ObitoXError("UPLOAD_NOT_COMPLETE", "The upload is still in progress; retry.")
        return answer

    def complete_upload(self, owner: str, upload_id: str) -> dict[str, Any]:
        """``POST /uploads/<id>/complete``: check the object, then mark it completed.

        Idempotent: a finished upload answers its stored result and sends nothing again.
        """
        record = self.owned(owner, upload_id)
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
        answer = self.settled(record)
        if answer is not None:
            return answer

        info = storage.head(record.key)
        if info is None:
            raise ObitoXError(
                "UPLOAD_NOT_COMPLETE",
                "Storage holds no object for this upload yet: PUT the file to the signed URL first.",
                details={"uploadId": upload_id, "key": record.key},
            )
        reason = self._verify(record, storage, info)
        if reason is not None:
            return self.reject_stored(record, storage, reason)

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
        self.send(signals.upload_completed, upload=updated)
        return result

    def _verify(self, record: UploadRecord, storage: Storage, info: ObjectInfo) -> str | None:
        """Why the stored object does not match what was signed, or ``None``: its size,
        and with ``OBITOX_VERIFY_CONTENT`` its first bytes (a ranged GET, never more)."""
        if info.size != record.size:
            return f"stored size {info.size} differs from the declared size {record.size}"
        if not self.settings.verify_content:
            return None
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
                details={"uploadId": record.upload_id},
            )
        rules = self.rules(record.validation, multipart=record.kind == "multipart")
        return verify_content(record.content_type, head, rules)

    def reject_stored(self, record: UploadRecord, storage: Storage, reason: str) -> dict[str, Any]:
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
        self.reject(record.owner, record.filename, error, stage="verification", upload=updated)
        storage.delete(record.key)
        raise error

    def get_upload(self, owner: str, upload_id: str) -> dict[str, Any]:
        """``GET /uploads/<id>``: where an upload of the caller stands."""
        record = self.owned(owner, upload_id)
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

    # -- multipart -----------------------------------------------------------------

    def owned_multipart(self, owner: str, upload_id: str) -> UploadRecord:
        record = self.owned(owner, upload_id)
        if record.kind != "multipart":
            raise ObitoXError(
                "INVALID_INPUT",
                "This is a single upload: use POST /uploads/<uploadId>/complete.",
                details={"uploadId": upload_id, "kind": record.kind},
            )
        return record

    def check_open(self, record: UploadRecord) -> None:
        """Refuse a multipart upload that can take no more parts (or an abort)."""
        if record.status == "completed":
            raise ObitoXError(
                "UPLOAD_COMPLETED",
                "The upload is already completed.",
                details={"uploadId": record.upload_id},
            )
        self.settled(record)  # raises for aborted, rejected and expired

    def open_multipart(
        self,
        owner: str,
        storage: Storage,
        filename: str,
        content_type: str,
        metadata: dict[str, str],
        *,
        size: int,
        part_size: int,
        total_parts: int,
        validation: dict[str, Any] | None = None,
        network_type: str | None = None,
    ) -> UploadRecord:
        """For a validated file: a new upload id and key, one ``CreateMultipartUpload``,
        one record, and ``multipart-initiated``. Shared by the native and the Companion
        routes."""
        upload_id = new_upload_ids(1)[0]
        key = self.build_key(owner, filename, upload_id, metadata)
        s3_upload_id = storage.create_multipart(key, content_type, metadata)
        now = time.time()
        record = UploadRecord(
            upload_id=upload_id,
            owner=owner,
            kind="multipart",
            bucket=storage.bucket,
            key=key,
            filename=filename,
            content_type=content_type,
            size=size,
            status="pending",
            created_at=now,
            updated_at=now,
            expires_at=now + self.settings.upload_ttl,
            metadata=metadata,
            part_size=part_size,
            total_parts=total_parts,
            s3_upload_id=s3_upload_id,
            validation=validation,
            network_type=network_type,
        )
        try:
            self.state.create(record, self.record_ttl)
        except ServiceUnavailable:
            # No half-written upload: give storage its upload back (if that fails too,
            # ``flask obitox cleanup`` aborts the orphan once it is older than the TTL).
            with contextlib.suppress(ServiceUnavailable):
                storage.abort_multipart(key, s3_upload_id)
            raise
        self.send(signals.multipart_initiated, upload=record)
        return record

    def initiate_multipart(self, owner: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /multipart``: validate, one ``CreateMultipartUpload``, one record.

        The answer's ``uploadId`` is ours (128 random bits, bound to the owner): it is
        the resume token. Storage's UploadId never leaves the server.
        """
        storage = self.storage_for(owner)
        try:
            rules = self.rules(spec.get("validation"), multipart=True)
            filename, content_type, metadata = self.checked_file(spec, rules)
            part_size, total_parts = part_layout(
                spec["size"], spec.get("partSize"), self.settings.part_size
            )
        except ObitoXError as error:
            self.reject(owner, spec.get("filename"), error, stage="validation")
            raise
        record = self.open_multipart(
            owner,
            storage,
            filename,
            content_type,
            metadata,
            size=spec["size"],
            part_size=part_size,
            total_parts=total_parts,
            validation=rules.client_rules or None,
            network_type=spec.get("networkType"),
        )
        return {
            "uploadId": record.upload_id,
            "key": record.key,
            "bucket": storage.bucket,
            "partSize": part_size,
            "totalParts": total_parts,
            "expiresAt": isoformat(record.expires_at),
        }

    def sign_parts(
        self,
        owner: str,
        upload_id: str,
        part_numbers: Sequence[int],
        network_type: str | None = None,
    ) -> dict[str, Any]:
        """``POST /multipart/<id>/parts``: one presigned ``UploadPart`` URL per part
        number, its exact Content-Length signed, all signed in one presigner call."""
        record = self.owned_multipart(owner, upload_id)
        self.check_open(record)
        total = record.total_parts
        assert total is not None
        assert record.s3_upload_id is not None
        wanted = list(dict.fromkeys(part_numbers))  # repeats answered once, order kept
        outside = [n for n in wanted if not 1 <= n <= total]
        if outside:
            raise ObitoXError(
                "INVALID_INPUT",
                f"Part numbers must be between 1 and {total} (totalParts); got {outside[:10]}.",
                details={"field": "partNumbers", "invalid": outside[:100], "totalParts": total},
            )
        now = time.time()
        settings = self.settings
        network = network_type or record.network_type
        # A URL never outlives its upload's record.
        remaining = max(1, int(record.expires_at - now))
        expiry_by_size: dict[int, int] = {}
        specs: list[UploadPartSpec] = []
        for number in wanted:
            length = part_length(record, number)
            expires_in = expiry_by_size.get(length)
            if expires_in is None:
                expires_in = expiry_by_size[length] = min(
                    remaining,
                    smart_expiry(
                        length,
                        network,
                        minimum=settings.expiry_min,
                        maximum=settings.expiry_max,
                        allowance=settings.expiry_default,
                    ),
                )
            specs.append(UploadPartSpec(number, length, expires_in))
        storage = self.storage_for(owner, record.bucket)
        urls = storage.presign_parts(record.key, record.s3_upload_id, specs)
        if record.status == "pending":
            # Once per upload; losing this CAS (a concurrent call won it) is fine.
            self.state.update(upload_id, ("pending",), status="uploading")
        return {
            "parts": [
                {
                    "partNumber": spec.part_number,
                    "url": url,
                    "size": spec.content_length,
                    "headers": {},
                    "expiresAt": isoformat(now + spec.expires_in),
                    "expiresIn": spec.expires_in,  # not in the answer; for the Companion routes
                }
                for spec, url in zip(specs, urls, strict=True)
            ]
        }

    def _storage_parts(self, record: UploadRecord, storage: Storage) -> list[PartInfo] | None:
        assert record.s3_upload_id is not None
        return storage.list_parts(record.key, record.s3_upload_id)

    def resume_multipart(self, owner: str, upload_id: str) -> dict[str, Any]:
        """``GET /multipart/<id>``: which parts storage holds (ListParts, every page:
        storage is the truth, the record only a cache) and which remain."""
        record = self.owned_multipart(owner, upload_id)
        total = record.total_parts
        assert total is not None
        view = {
            "uploadId": upload_id,
            "key": record.key,
            "partSize": record.part_size,
            "totalParts": total,
            "totalBytes": record.size,
        }
        if record.status == "completed":
            return {
                **view,
                "status": "completed",
                "uploadedParts": [],
                "remainingParts": [],
                "uploadedBytes": record.size,
                "percentage": 100.0,
            }
        self.settled(record)  # aborted, rejected, expired: nothing to resume
        storage = self.storage_for(owner, record.bucket)
        held = self._storage_parts(record, storage)
        if held is None:
            # Storage no longer knows the upload: a concurrent complete just finished it,
            # or storage aborted it (a lifecycle rule).
            current = self.state.get(upload_id)
            if current is not None and current.status == "completed":
                return self.resume_multipart(owner, upload_id)
            raise _aborted(upload_id)
        uploaded = [p for p in held if p.part_number <= total]
        have = {p.part_number for p in uploaded}
        uploaded_bytes = sum(p.size for p in uploaded)
        self.send(signals.multipart_resumed, upload=record, uploaded_parts=len(uploaded))
        return {
            **view,
            "status": record.status,
            "uploadedParts": [
                {"partNumber": p.part_number, "etag": p.etag, "size": p.size} for p in uploaded
            ],
            "remainingParts": [n for n in range(1, total + 1) if n not in have],
            "uploadedBytes": uploaded_bytes,
            "percentage": round(100.0 * uploaded_bytes / record.size, 2) if record.size else 0.0,
        }

    @staticmethod
    def _choose_parts(
        record: UploadRecord,
        held: Sequence[PartInfo],
        claimed: Sequence[Mapping[str, Any]] | None,
    ) -> list[PartInfo]:
        """The parts to complete with, in order, checked against what storage holds."""
        total = record.total_parts
        assert total is not None
        upload_id = record.upload_id
        by_number = {p.part_number: p for p in held if p.part_number <= total}
        missing = [n for n in range(1, total + 1) if n not in by_number]
        if missing:
            raise ObitoXError(
                "UPLOAD_NOT_COMPLETE",
                f"Storage does not hold {len(missing)} of the {total} parts yet "
                f"(first missing: {missing[:10]}); upload them, then complete.",
                details={"uploadId": upload_id, "missingParts": missing[:1000]},
            )
        wrong_size = [n for n, part in by_number.items() if part.size != part_length(record, n)]
        if wrong_size:
            raise _invalid_parts(
                upload_id,
                f"Parts {wrong_size[:10]} do not have the size that was signed.",
                parts=wrong_size[:1000],
            )
        if claimed is not None:
            numbers = [p["partNumber"] for p in claimed]
            if len(set(numbers)) != len(numbers) or sorted(numbers) != list(range(1, total + 1)):
                raise _invalid_parts(
                    upload_id,
                    f"parts must list each part number 1..{total} exactly once.",
                    totalParts=total,
                )
            mismatched = sorted(
                p["partNumber"]
                for p in claimed
                if p["etag"].strip().strip('"').lower() != by_number[p["partNumber"]].etag.lower()
            )
            if mismatched:
                raise _invalid_parts(
                    upload_id,
                    f"The ETags of parts {mismatched[:10]} differ from what storage holds.",
                    parts=mismatched[:1000],
                )
        return [by_number[n] for n in range(1, total + 1)]

    def complete_multipart(
        self, owner: str, upload_id: str, parts: Sequence[Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        """``POST /multipart/<id>/complete``: check the parts against ListParts,
        ``CompleteMultipartUpload``, then verify the object as a single upload is.

        Concurrent callers may all reach storage; the status compare-and-set picks one
        winner (who sends ``upload-completed``), and everyone answers the winner's result.
        """
        record = self.owned_multipart(owner, upload_id)
        storage = self.storage_for(owner, record.bucket)
        if record.status == "rejected":
            storage.delete(record.key)  # finishes a delete that failed the first time
        answer = self.settled(record)
        if answer is not None:
            return answer
        assert record.s3_upload_id is not None
        held = self._storage_parts(record, storage)
        if held is not None:
            chosen = self._choose_parts(record, held, parts)
            if storage.complete_multipart(record.key, record.s3_upload_id, chosen) is not None:
                return self.finish_multipart(record, storage)
        # Storage no longer knows the upload: another caller completed it (finish the
        # same way: verify and race for the status) or it was aborted.
        current = self.state.get(upload_id)
        if current is None:
            raise _not_found(upload_id)
        answer = self.settled(current)
        if answer is not None:
            return answer
        if storage.head(record.key) is None:
            if self.state.update(upload_id, _OPEN, status="aborted") is not None:
                self.send(signals.upload_aborted, upload=current)
            raise _aborted(upload_id)
        return self.finish_multipart(record, storage)

    def finish_multipart(self, record: UploadRecord, storage: Storage) -> dict[str, Any]:
        """After storage assembled the object: verify it, then race for ``completed``."""
        info = storage.head(record.key)
        if info is None:
            raise ObitoXError(
                "UPLOAD_NOT_COMPLETE",
                "Storage has not made the object visible yet; call complete again.",
                details={"uploadId": record.upload_id},
            )
        reason = self._verify(record, storage, info)
        if reason is not None:
            return self.reject_stored(record, storage, reason)
        result = {
            "uploadId": record.upload_id,
            "status": "completed",
            "key": record.key,
            "bucket": record.bucket,
            "size": info.size,
            "etag": info.etag,
            "location": storage.object_url(record.key),
        }
        updated = self.state.update(record.upload_id, _OPEN, status="completed", result=result)
        if updated is None:
            current = self.state.get(record.upload_id)
            if current is not None and current.status in ("aborted", "expired"):
                # An abort (or cleanup) won the race while storage assembled the object:
                # honour it; the object is no multipart upload any more for cleanup to find.
                storage.delete(record.key)
            return self._settle_race(record.upload_id)
        self.send(signals.upload_completed, upload=updated)
        return result

    def abort_multipart(self, owner: str, upload_id: str) -> dict[str, Any]:
        """``DELETE /multipart/<id>``: mark it aborted (one caller wins and sends
        ``upload-aborted``), then ``AbortMultipartUpload``. Idempotent: aborting again
        answers the same and retries a storage abort that failed."""
        record = self.owned_multipart(owner, upload_id)
        if record.status != "aborted":
            self.check_open(record)
            updated = self.state.update(upload_id, _OPEN, status="aborted")
            if updated is None:  # the status moved on meanwhile: answer by the new one
                return self.abort_multipart(owner, upload_id)
            self.send(signals.upload_aborted, upload=updated)
        assert record.s3_upload_id is not None
        self.storage_for(owner, record.bucket).abort_multipart(record.key, record.s3_upload_id)
        return {
            "uploadId": upload_id,
            "status": "aborted",
            "key": record.key,
            "bucket": record.bucket,
        }

    # -- cleanup -------------------------------------------------------------------

    def cleanup(
        self, *, now: float | None = None, orphans: bool = True, page: int = 1000
    ) -> CleanupReport:
        """Expire every open upload past ``OBITOX_UPLOAD_TTL`` and free its storage.

        For each due record: compare-and-set to ``expired`` (the winner sends
        ``upload-expired``), then abort its multipart upload in storage, or delete the
        object a never-completed single upload may have left (bytes nobody verified) --
        only when its key is the default ``<prefix><uploadId>/<filename>``, unique to the
        upload: a host ``key_builder`` may reuse keys, and a later upload's object must
        never be deleted.
        When storage fails, the record stays in the expiry index and the next run
        retries. With ``orphans``, also aborts multipart uploads storage holds under
        ``OBITOX_KEY_PREFIX`` in the default bucket that are older than the TTL (their
        records are gone, e.g. a flushed Redis).
        """
        now = time.time() if now is None else now
        report = CleanupReport()
        while True:
            due = self.state.expired_ids(now, page)
            settled: list[str] = []
            for upload_id in due:
                record = self.state.get(upload_id)
                if record is None or record.status not in (*_OPEN, "expired"):
                    settled.append(upload_id)  # finished, or its record is gone
                    continue
                if record.status != "expired":
                    updated = self.state.update(upload_id, _OPEN, status="expired")
                    if updated is None:  # finished meanwhile; the next page sees it
                        continue
                    record = updated
                    report.expired.append(record)
                    self.send(signals.upload_expired, upload=record)
                try:
                    self._free_storage(record)
                except ServiceUnavailable as error:
                    report.errors.append(f"{upload_id}: {error.detail}")
                    continue
                settled.append(upload_id)
            self.state.forget_expired(settled)
            if len(due) < page or not settled:
                break
        if orphans:
            try:
                self._abort_orphans(now, report)
            except ServiceUnavailable as error:
                report.errors.append(f"listing multipart uploads: {error.detail}")
        return report

    def _free_storage(self, record: UploadRecord) -> None:
        storage = self.storage_for(record.owner, record.bucket)
        if record.kind == "multipart":
            assert record.s3_upload_id is not None
            storage.abort_multipart(record.key, record.s3_upload_id)
        elif record.key == f"{self.settings.key_prefix}{record.upload_id}/{record.filename}":
            storage.delete(record.key)

    def _abort_orphans(self, now: float, report: CleanupReport) -> None:
        storage = self.storages.get(self.default_storage)
        prefix = self.settings.key_prefix
        cutoff = now - self.settings.upload_ttl
        for pending in storage.pending_multiparts(prefix):
            if pending.initiated >= cutoff or self._claimed(pending, prefix, now):
                continue
            storage.abort_multipart(pending.key, pending.upload_id)
            report.orphans.append(pending.key)

    def _claimed(self, pending: PendingMultipart, prefix: str, now: float) -> bool:
        """Whether a live record owns ``pending``. Storage's start date alone is not
        trusted (some S3-compatible servers report a fixed one): a key in the default
        layout ``<prefix><uploadId>/<filename>`` names its record, which is checked."""
        upload_id = pending.key[len(prefix) :].partition("/")[0]
        record = self.state.get(upload_id) if upload_id else None
        return (
            record is not None
            and record.s3_upload_id == pending.upload_id
            and record.status in _OPEN
            and record.expires_at > now
        )


@dataclasses.dataclass(slots=True)
class CleanupReport:
    """What :meth:`UploadService.cleanup` did."""

    expired: list[UploadRecord] = dataclasses.field(default_factory=list)
    orphans: list[str] = dataclasses.field(default_factory=list)  # keys aborted
    errors: list[str] = dataclasses.field(default_factory=list)
