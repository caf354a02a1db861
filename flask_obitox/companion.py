"""Uppy/Companion-compatible routes, mounted at ``<prefix>/s3``.

``@uppy/aws-s3`` with ``companionEndpoint`` speaks Uppy Companion's S3 protocol. These
routes answer it with the same identity hook, ownership, validation, signals and
verification as the native routes, through the same :class:`UploadService`.

Two things differ from the native protocol, and shape this module:

* **Identity of an upload.** Companion clients send back ``uploadId`` and ``key`` on
  every call. The ``uploadId`` we hand out is *our* upload id (128 random bits, bound to
  the owner), not storage's UploadId, which stays server-side as for native uploads.
  So every call is one state read; a ``key`` that is not the record's key is 404, like
  another owner's upload: the client's key is never trusted or used.
* **The browser decides the size.** Uppy sends no size when it starts an upload and
  picks its own part size, so the server cannot sign a Content-Length. Such records
  carry ``part_size == 0`` (:data:`BROWSER_LAYOUT`, never a native value) and ``size == 0``
  until completion, where the real size (the sum of the parts, or the stored object's
  size for a POST) is checked against the same rules before the record takes it and the
  service's own verification runs. POST uploads are still bounded while they happen: their
  policy carries a ``content-length-range`` that storage enforces.

Uppy never tells the server a POST upload finished, so :func:`complete_post`
(``POST /s3/complete?key=``, not part of Companion's protocol) lets the page do it, as
the docs' recipe does in its ``upload-success`` handler.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any

from flask import Blueprint, Flask, Response, request
from flask_cors import CORS

from . import signals
from .config import S3_MAX_PARTS, S3_MIN_PART_SIZE, Settings
from .errors import ObitoXError
from .expiry import smart_expiry
from .service import UploadService, new_upload_ids
from .state import UploadRecord
from .storage import Storage
from .storage.client import STORAGE_ERRORS, PartInfo
from .storage.post import presign_post
from .views import _ext, _json_body, _load, _owner, _respond, load_file_spec, load_multipart
from .views import bp as _parent

#: ``part_size`` of a record whose size and parts the browser decides (Companion).
BROWSER_LAYOUT = 0
#: Companion's ``partNumbers`` query of ``/batch``: at most this many per call.
MAX_BATCH_PARTS = 1000
#: Metadata Uppy sends for every file that duplicates the upload's own fields (and a
#: ``name`` may be non-ASCII, which S3 metadata cannot hold): not stored as metadata.
_UPPY_OWN_META = frozenset({"name", "type"})
_OPEN = ("pending", "uploading")

bp = Blueprint("companion", __name__)


def _not_found(upload_id: str) -> ObitoXError:
    return ObitoXError(
        "UPLOAD_NOT_FOUND",
        f"No upload {upload_id!r} exists for this caller.",
        details={"uploadId": upload_id},
    )


def _metadata(raw: Any) -> dict[str, Any]:
    """Uppy's ``file.meta`` as upload metadata: its own fields and empty values dropped,
    scalars as strings; the rest is validated by the native schema."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ObitoXError(
            "INVALID_INPUT", "metadata must be an object.", details={"field": "metadata"}
        )
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _UPPY_OWN_META or value is None or value in ("", "null", "undefined"):
            continue
        out[name] = str(value).lower() if isinstance(value, bool) else value
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = str(value)
    return out


def _part_number(raw: str) -> int:
    """A part number from the URL: 1..10000, else 400."""
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if not raw.isdigit() or not 1 <= number <= S3_MAX_PARTS:
        raise ObitoXError(
            "INVALID_INPUT",
            f"Part numbers must be whole numbers from 1 to {S3_MAX_PARTS}; got {raw[:20]!r}.",
            details={"field": "partNumber", "min": 1, "max": S3_MAX_PARTS},
        )
    return number


def _query_key() -> str:
    key = request.args.get("key")
    if not key:
        raise ObitoXError(
            "INVALID_INPUT", "The key query parameter is required.", details={"field": "key"}
        )
    return key


class CompanionService:
    """The Companion protocol on top of one app's :class:`UploadService`."""

    def __init__(self, service: UploadService) -> None:
        self.service = service

    # -- lookup ------------------------------------------------------------------------

    def owned(self, owner: str, upload_id: str, key: str) -> UploadRecord:
        """The caller's multipart upload ``upload_id`` if ``key`` is its key; else 404."""
        record = self.service.owned_multipart(owner, upload_id)
        if not secrets.compare_digest(record.key.encode(), key.encode()):
            raise _not_found(upload_id)
        return record

    # -- single uploads: presigned POST -------------------------------------------------

    def sign_post(
        self, owner: str, filename: str, content_type: str, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``GET /s3/params``: validate like ``POST /uploads``, record the upload, and
        answer a presigned POST whose policy bounds the size by the server's rules."""
        service = self.service
        storage = service.storage_for(owner)
        spec = {"filename": filename, "contentType": content_type, "size": 0}
        if metadata:
            spec["metadata"] = dict(metadata)
        try:
            spec = _load(load_file_spec, spec)
            rules = service.rules()
            spec["size"] = max(rules.min_size, 0)  # the size rules apply at completion
            name, content_type, meta = service.checked_file(spec, rules)
        except ObitoXError as error:
            service.reject(owner, filename, error, stage="validation")
            raise
        upload_id = new_upload_ids(1)[0]
        key = service.build_key(owner, name, upload_id, meta)
        settings = service.settings
        # Uppy POSTs files below its multipart threshold (100 MiB by default): a URL for
        # that size, not for the largest file allowed, so the policy does not outlive the
        # upload by a day (until it expires, the same form could replace the object).
        expires_in = smart_expiry(
            min(rules.max_size, settings.multipart_threshold),
            None,
            minimum=settings.expiry_min,
            maximum=settings.expiry_max,
            allowance=settings.expiry_default,
        )
        try:
            post = presign_post(
                storage.presigner,
                storage.bucket,
                key,
                content_type=content_type,
                metadata=meta,
                min_size=max(rules.min_size, 0),
                max_size=rules.max_size,
                expires_in=expires_in,
            )
        except STORAGE_ERRORS as error:
            raise storage.unavailable(error) from error
        now = time.time()
        record = self._post_record(owner, storage, upload_id, key, name, content_type, meta, now)
        service.state.create(record, service.record_ttl)
        service.send(signals.upload_signed, upload=record)
        return {"method": "POST", "url": post.url, "fields": post.fields, "expires": expires_in}

    def _post_record(
        self,
        owner: str,
        storage: Storage,
        upload_id: str,
        key: str,
        filename: str,
        content_type: str,
        metadata: dict[str, str],
        now: float,
    ) -> UploadRecord:
        """The record of a presigned POST: its size is known only at completion."""
        return UploadRecord(
            upload_id=upload_id,
            owner=owner,
            kind="single",
            bucket=storage.bucket,
            key=key,
            filename=filename,
            content_type=content_type,
            size=0,
            status="pending",
            created_at=now,
            updated_at=now,
            expires_at=now + self.service.settings.upload_ttl,
            metadata=metadata,
            part_size=BROWSER_LAYOUT,
        )

    def complete_post(self, owner: str, key: str) -> dict[str, Any]:
        """``POST /s3/complete?key=``: the size rules, then the service's own completion
        (HEAD, magic bytes, ``upload-completed``). Finds the upload by the default key
        layout ``<OBITOX_KEY_PREFIX><uploadId>/<filename>``."""
        service = self.service
        prefix = service.settings.key_prefix
        upload_id = key[len(prefix) :].partition("/")[0] if key.startswith(prefix) else ""
        if not upload_id:
            raise _not_found(key)
        record = service.owned(owner, upload_id)
        if not secrets.compare_digest(record.key.encode(), key.encode()):
            raise _not_found(upload_id)
        if (
            record.kind == "single"
            and record.part_size == BROWSER_LAYOUT
            and record.status in _OPEN
        ):
            storage = service.storage_for(owner, record.bucket)
            info = storage.head(record.key)
            if info is None:
                raise ObitoXError(
                    "UPLOAD_NOT_COMPLETE",
                    "Storage holds no object for this upload yet: POST the file first.",
                    details={"uploadId": upload_id, "key": key},
                )
            self._take_size(record, storage, info.size)
        if record.kind == "multipart":
            answer = service.settled(record)
            if answer is None:
                raise ObitoXError(
                    "UPLOAD_NOT_COMPLETE",
                    "Complete a multipart upload with POST /s3/multipart/<uploadId>/complete.",
                    details={"uploadId": upload_id},
                )
            return answer
        return service.complete_upload(owner, upload_id)

    def _take_size(self, record: UploadRecord, storage: Storage, size: int) -> UploadRecord:
        """Check the browser's ``size`` against the rules (a refusal deletes the stored
        object, like a failed verification) and store it in the record."""
        service = self.service
        rules = service.rules(record.validation, multipart=record.kind == "multipart")
        try:
            rules.check(record.filename, record.content_type, size)
        except ObitoXError as error:
            # Raises when this call rejects; returns when another caller settled it first.
            service.reject_stored(record, storage, error.message)
            current = service.state.get(record.upload_id)
            if current is None:
                raise _not_found(record.upload_id) from None
            return current
        updated = service.state.update(record.upload_id, _OPEN, size=size)
        if updated is None:
            current = service.state.get(record.upload_id)
            if current is None:
                raise _not_found(record.upload_id)
            return current
        return updated

    # -- multipart ---------------------------------------------------------------------

    def create_multipart(
        self, owner: str, filename: str, content_type: str, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``POST /s3/multipart``: the native validation (the size waits for
        completion), one ``CreateMultipartUpload``, one record."""
        service = self.service
        spec: dict[str, Any] = {"filename": filename, "contentType": content_type, "size": 0}
        if metadata:
            spec["metadata"] = dict(metadata)
        storage = service.storage_for(owner)
        try:
            spec = _load(load_multipart, spec)
            rules = service.rules(multipart=True)
            spec["size"] = max(rules.min_size, 0)
            name, content_type, meta = service.checked_file(spec, rules)
        except ObitoXError as error:
            service.reject(owner, filename, error, stage="validation")
            raise
        # One part of 0 bytes: a native route used on this record signs nothing usable
        # and cannot complete it, but never fails on a negative length.
        record = service.open_multipart(
            owner,
            storage,
            name,
            content_type,
            meta,
            size=0,
            part_size=BROWSER_LAYOUT,
            total_parts=1,
        )
        return {"key": record.key, "uploadId": record.upload_id, "bucket": storage.bucket}

    def list_parts(self, owner: str, upload_id: str, key: str) -> list[dict[str, Any]]:
        """``GET /s3/multipart/<id>?key=``: every part storage holds, all pages."""
        record = self.owned(owner, upload_id, key)
        if record.part_size != BROWSER_LAYOUT:
            view = self.service.resume_multipart(owner, upload_id)
            held = [PartInfo(p["partNumber"], p["etag"], p["size"]) for p in view["uploadedParts"]]
        else:
            self.service.check_open(record)
            assert record.s3_upload_id is not None
            storage = self.service.storage_for(owner, record.bucket)
            found = storage.list_parts(record.key, record.s3_upload_id)
            if found is None:
                raise ObitoXError(
                    "UPLOAD_ABORTED", "The upload was aborted.", details={"uploadId": upload_id}
                )
            held = found
            self.service.send(signals.multipart_resumed, upload=record, uploaded_parts=len(held))
        return [{"PartNumber": p.part_number, "ETag": f'"{p.etag}"', "Size": p.size} for p in held]

    def sign_parts(
        self, owner: str, upload_id: str, key: str, numbers: Sequence[int]
    ) -> tuple[dict[int, str], int]:
        """Presigned ``UploadPart`` URLs by part number, and their lifetime in seconds.

        No checksum is signed (the browser computes none), and a Content-Length only
        when the server chose the layout (an upload started natively).
        """
        record = self.owned(owner, upload_id, key)
        service = self.service
        if record.part_size != BROWSER_LAYOUT:
            parts = service.sign_parts(owner, upload_id, numbers)["parts"]
            return {p["partNumber"]: p["url"] for p in parts}, min(p["expiresIn"] for p in parts)
        service.check_open(record)
        assert record.s3_upload_id is not None
        settings = service.settings
        # Every part but the last is at least 5 MiB, so an upload within the size limit
        # never needs a higher part number: refusing them bounds what storage can hold.
        most = min(S3_MAX_PARTS, -(-settings.max_multipart_size // S3_MIN_PART_SIZE))
        beyond = [n for n in numbers if n > most]
        if beyond:
            raise ObitoXError(
                "INVALID_INPUT",
                f"Part numbers above {most} cannot belong to an upload within "
                f"OBITOX_MAX_MULTIPART_SIZE; got {beyond[:10]}.",
                details={"field": "partNumbers", "max": most},
            )
        remaining = max(1, int(record.expires_at - time.time()))
        expires_in = min(
            remaining,
            smart_expiry(
                S3_MIN_PART_SIZE,
                record.network_type,
                minimum=settings.expiry_min,
                maximum=settings.expiry_max,
                allowance=settings.expiry_default,
            ),
        )
        storage = service.storage_for(owner, record.bucket)
        try:
            presigner = storage.presigner
            urls = {
                number: presigner.presign(
                    "PUT",
                    storage.bucket,
                    record.key,
                    expires_in=expires_in,
                    params={"uploadId": record.s3_upload_id, "partNumber": str(number)},
                )
                for number in dict.fromkeys(numbers)
            }
        except STORAGE_ERRORS as error:
            raise storage.unavailable(error) from error
        if record.status == "pending":
            service.state.update(upload_id, ("pending",), status="uploading")
        return urls, expires_in

    def complete_multipart(
        self, owner: str, upload_id: str, key: str, claimed: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """``POST /s3/multipart/<id>/complete?key=``: the claimed parts checked against
        ListParts (ETags quoted or not), the total size against the rules, then
        ``CompleteMultipartUpload`` and the service's verification and status race."""
        record = self.owned(owner, upload_id, key)
        service = self.service
        parts = [{"partNumber": p["PartNumber"], "etag": p["ETag"]} for p in claimed]
        if record.part_size != BROWSER_LAYOUT:
            result = service.complete_multipart(owner, upload_id, parts)
            return {
                "location": result["location"],
                "key": result["key"],
                "bucket": result["bucket"],
            }
        storage = service.storage_for(owner, record.bucket)
        if record.status == "rejected":
            storage.delete(record.key)
        answer = service.settled(record)
        if answer is None:
            assert record.s3_upload_id is not None
            held = storage.list_parts(record.key, record.s3_upload_id)
            if held is not None:
                chosen = self._choose_parts(record, held, parts)
                size = sum(p.size for p in chosen)
                rules = service.rules(record.validation, multipart=True)
                try:
                    rules.check(record.filename, record.content_type, size)
                except ObitoXError as error:
                    self._refuse_parts(record, storage, error)
                if storage.complete_multipart(record.key, record.s3_upload_id, chosen) is None:
                    held = None
            if held is None:
                answer = self._after_lost_race(record, storage)
            else:
                answer = service.finish_multipart(self._take_size(record, storage, size), storage)
        return {"location": answer["location"], "key": answer["key"], "bucket": answer["bucket"]}

    def _refuse_parts(self, record: UploadRecord, storage: Storage, error: ObitoXError) -> None:
        """The parts break the size rules: settle the upload as ``rejected`` (one caller
        wins and tells the host, with the record, so webhooks deduplicate), free the parts
        in storage, and raise ``error``. Later calls answer the stored rejection."""
        service = self.service
        updated = service.state.update(
            record.upload_id,
            _OPEN,
            status="rejected",
            result={"reason": error.message, "stage": "verification"},
        )
        if updated is not None:
            service.reject(
                record.owner, record.filename, error, stage="verification", upload=updated
            )
        assert record.s3_upload_id is not None
        storage.abort_multipart(record.key, record.s3_upload_id)
        raise error

    def _after_lost_race(self, record: UploadRecord, storage: Storage) -> dict[str, Any]:
        """Storage no longer knows the upload: another caller completed it, or it was
        aborted. Answer as the service does in the same case."""
        service = self.service
        current = service.state.get(record.upload_id)
        if current is None:
            raise _not_found(record.upload_id)
        answer = service.settled(current)
        if answer is not None:
            return answer
        info = storage.head(record.key)
        if info is None:
            if service.state.update(record.upload_id, _OPEN, status="aborted") is not None:
                service.send(signals.upload_aborted, upload=current)
            raise ObitoXError(
                "UPLOAD_ABORTED", "The upload was aborted.", details={"uploadId": record.upload_id}
            )
        return service.finish_multipart(self._take_size(current, storage, info.size), storage)

    @staticmethod
    def _choose_parts(
        record: UploadRecord, held: Sequence[PartInfo], claimed: Sequence[Mapping[str, Any]]
    ) -> list[PartInfo]:
        upload_id = record.upload_id
        numbers = [p["partNumber"] for p in claimed]
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            raise ObitoXError(
                "INVALID_PARTS",
                "parts must list each part number from 1 up exactly once.",
                details={"uploadId": upload_id},
            )
        by_number = {p.part_number: p for p in held}
        wrong = sorted(
            p["partNumber"]
            for p in claimed
            if p["partNumber"] not in by_number
            or p["etag"].strip().strip('"').lower() != by_number[p["partNumber"]].etag.lower()
        )
        if wrong:
            raise ObitoXError(
                "INVALID_PARTS",
                f"Storage holds no part with the given ETag for parts {wrong[:10]}.",
                details={"uploadId": upload_id, "parts": wrong[:1000]},
            )
        chosen = [by_number[n] for n in sorted(numbers)]
        small = [p.part_number for p in chosen[:-1] if p.size < S3_MIN_PART_SIZE]
        if small:
            raise ObitoXError(
                "INVALID_PARTS",
                f"Parts {small[:10]} are smaller than 5 MiB; only the last part may be.",
                details={"uploadId": upload_id, "parts": small[:1000]},
            )
        return chosen

    def abort(self, owner: str, upload_id: str, key: str) -> dict[str, Any]:
        """``DELETE /s3/multipart/<id>?key=``: the native abort (idempotent)."""
        self.owned(owner, upload_id, key)
        self.service.abort_multipart(owner, upload_id)
        return {}


# -- routes ----------------------------------------------------------------------------


def _companion() -> tuple[CompanionService, str]:
    ext = _ext()
    if not ext.settings.companion_routes:
        raise ObitoXError("NOT_FOUND", "The Companion routes are off (OBITOX_COMPANION_ROUTES).")
    return CompanionService(ext.service), _owner(ext)


def _string(body: Mapping[str, Any], name: str, *, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise ObitoXError(
            "INVALID_INPUT", f"{name} must be a non-empty string.", details={"field": name}
        )
    return value


@bp.get("/params")
def params() -> Response:
    companion, owner = _companion()
    args = request.args
    metadata = {
        name[len("metadata[") : -1]: value
        for name, value in args.items(multi=False)
        if name.startswith("metadata[") and name.endswith("]")
    }
    answer = companion.sign_post(
        owner,
        _string(args, "filename"),
        _string(args, "type", default="application/octet-stream"),
        _metadata(metadata),
    )
    return _respond(answer)


@bp.post("/complete")
def complete_post() -> Response:
    companion, owner = _companion()
    _json_body(_ext(), empty={})
    return _respond(companion.complete_post(owner, _query_key()))


@bp.post("/multipart")
def create_multipart() -> Response:
    companion, owner = _companion()
    body = _json_body(_ext())
    if not isinstance(body, dict):
        raise ObitoXError("INVALID_INPUT", "The body must be a JSON object.")
    answer = companion.create_multipart(
        owner,
        _string(body, "filename"),
        _string(body, "type", default="application/octet-stream"),
        _metadata(body.get("metadata")),
    )
    return _respond(answer)


@bp.get("/multipart/<upload_id>")
def list_parts(upload_id: str) -> Response:
    companion, owner = _companion()
    return _respond(companion.list_parts(owner, upload_id, _query_key()))  # type: ignore[arg-type]


@bp.get("/multipart/<upload_id>/batch")
def sign_batch(upload_id: str) -> Response:
    companion, owner = _companion()
    raw = request.args.get("partNumbers", "")
    numbers = [_part_number(n.strip()) for n in raw.split(",") if n.strip()]
    if not 1 <= len(numbers) <= MAX_BATCH_PARTS:
        raise ObitoXError(
            "INVALID_INPUT",
            f"partNumbers must list 1 to {MAX_BATCH_PARTS} part numbers, comma-separated.",
            details={"field": "partNumbers", "max": MAX_BATCH_PARTS},
        )
    urls, _expires = companion.sign_parts(owner, upload_id, _query_key(), numbers)
    return _respond({"presignedUrls": {str(n): url for n, url in urls.items()}})


@bp.get("/multipart/<upload_id>/<part_number>")
def sign_part(upload_id: str, part_number: str) -> Response:
    companion, owner = _companion()
    number = _part_number(part_number)
    urls, expires = companion.sign_parts(owner, upload_id, _query_key(), [number])
    return _respond({"url": urls[number], "expires": expires})


@bp.post("/multipart/<upload_id>/complete")
def complete_multipart(upload_id: str) -> Response:
    companion, owner = _companion()
    key = _query_key()
    body = _json_body(_ext())
    parts = body.get("parts") if isinstance(body, dict) else None
    if not isinstance(parts, list) or not 1 <= len(parts) <= S3_MAX_PARTS:
        raise ObitoXError(
            "INVALID_INPUT",
            f"parts must be a list of 1 to {S3_MAX_PARTS} {{PartNumber, ETag}} objects.",
            details={"field": "parts"},
        )
    claimed = []
    for part in parts:
        number = part.get("PartNumber") if isinstance(part, dict) else None
        etag = part.get("ETag") if isinstance(part, dict) else None
        if isinstance(number, str) and number.isascii() and number.isdigit() and len(number) <= 5:
            number = int(number)
        if (
            isinstance(number, bool)
            or not isinstance(number, int)
            or not 1 <= number <= S3_MAX_PARTS
            or not isinstance(etag, str)
            or not 1 <= len(etag) <= 200
        ):
            raise ObitoXError(
                "INVALID_INPUT",
                f"Each part needs a PartNumber from 1 to {S3_MAX_PARTS} and an ETag.",
                details={"field": "parts"},
            )
        claimed.append({"PartNumber": number, "ETag": etag})
    return _respond(companion.complete_multipart(owner, upload_id, key, claimed))


@bp.delete("/multipart/<upload_id>")
def abort_multipart(upload_id: str) -> Response:
    companion, owner = _companion()
    return _respond(companion.abort(owner, upload_id, _query_key()))


def init_browser_routes(app: Flask, settings: Settings) -> None:
    """Answer CORS for ``OBITOX_CORS_ORIGINS`` on every route under the prefix
    (flask-cors: preflights included); nothing is added when the list is empty."""
    if not settings.cors_origins:
        return
    CORS(
        app,
        resources={f"{settings.url_prefix}/*": {"origins": list(settings.cors_origins)}},
        methods=["GET", "POST", "DELETE", "OPTIONS"],
        max_age=600,
        vary_header=True,
    )


# Nested under the ``obitox`` blueprint: its error handlers (the JSON error shape) and
# its prefix apply, and endpoints read ``obitox.companion.*``.
_parent.register_blueprint(bp, url_prefix="/s3")

__all__ = ["BROWSER_LAYOUT", "CompanionService", "bp", "init_browser_routes"]
