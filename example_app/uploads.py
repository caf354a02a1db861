"""The page's list of completed uploads, and their download links.

A host app usually keeps what it needs of an upload in its own database when it
completes; the example does the same in memory, from the ``upload-completed`` signal
(single and multipart uploads, native or Companion routes alike).

- ``GET /uploads/completed``: the caller's completed uploads, newest first, with where
  their processors stand (``example_app/processors.py``).
- ``GET /uploads/<uploadId>/thumbnail``: a redirect to the thumbnail the
  ``thumbnail`` processor made.
- ``GET /uploads/<uploadId>/download``: a redirect to a presigned GET of the object,
  valid :data:`DOWNLOAD_EXPIRES` seconds. Another owner's upload (or one this process
  never saw complete) answers 404 ``UPLOAD_NOT_FOUND``, like the extension's routes:
  never reveal that it exists.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, redirect, url_for
from flask.typing import ResponseReturnValue

from flask_obitox import ObitoX, ObitoXError, UploadRecord, signals

#: How long a download link from the page stays valid: long enough to click, short
#: enough that a copied link soon stops working.
DOWNLOAD_EXPIRES = 300
#: Completed uploads remembered per owner (the oldest are forgotten first).
KEPT_PER_OWNER = 200


class CompletedUploads:
    """Completed uploads by owner, newest first; thread-safe (the dev server is threaded)."""

    def __init__(self, kept_per_owner: int = KEPT_PER_OWNER) -> None:
        self._lock = threading.Lock()
        self._kept = kept_per_owner
        self._by_owner: dict[str, OrderedDict[str, UploadRecord]] = {}

    def add(self, upload: UploadRecord) -> None:
        with self._lock:
            uploads = self._by_owner.setdefault(upload.owner, OrderedDict())
            uploads[upload.upload_id] = upload
            uploads.move_to_end(upload.upload_id)
            while len(uploads) > self._kept:
                uploads.popitem(last=False)

    def of(self, owner: str) -> list[UploadRecord]:
        """``owner``'s completed uploads, newest first."""
        with self._lock:
            uploads = self._by_owner.get(owner)
            return list(reversed(uploads.values())) if uploads else []

    def get(self, owner: str, upload_id: str) -> UploadRecord | None:
        """``owner``'s upload ``upload_id``, or ``None`` (also when another owner has it)."""
        with self._lock:
            uploads = self._by_owner.get(owner)
            return uploads.get(upload_id) if uploads else None


def _processing(obitox: ObitoX, upload: UploadRecord) -> dict[str, Any]:
    """Where the upload's processors stand now (the record the signal carried is the
    one of its completion, when they were only queued)."""
    try:
        view = obitox.service.get_upload(upload.owner, upload.upload_id)
    except ObitoXError:
        return {"processing": {}, "ready": False}
    processing = view["processing"]
    extra: dict[str, Any] = {"processing": processing, "ready": view["ready"]}
    thumb = processing.get("thumbnail", {})
    if thumb.get("status") == "completed" and (thumb.get("result") or {}).get("thumbnail"):
        extra["thumbnailUrl"] = url_for("thumbnail_of", upload_id=upload.upload_id)
    return extra


def _describe(upload: UploadRecord) -> dict[str, Any]:
    result = upload.result or {}
    return {
        "uploadId": upload.upload_id,
        "filename": upload.filename,
        "contentType": upload.content_type,
        # Companion uploads learn their size only at completion: the result has it.
        "size": result.get("size") or upload.size,
        "kind": upload.kind,
        "key": upload.key,
        "completedAt": upload.updated_at,
        "downloadUrl": url_for("download_upload", upload_id=upload.upload_id),
    }


def register_downloads(app: Flask, obitox: ObitoX, owner_of: Callable[[], str]) -> CompletedUploads:
    """Keep ``app``'s completed uploads and add the two routes; ``owner_of()`` names the
    caller (the same function as the extension's identity loader)."""
    completed = CompletedUploads()

    def remember(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
        completed.add(upload)

    # weak=False: the receiver is a closure that nothing else holds on to.
    signals.upload_completed.connect(remember, sender=app, weak=False)

    @app.get("/uploads/completed")
    def list_completed() -> ResponseReturnValue:
        uploads = completed.of(owner_of())
        return jsonify(
            uploads=[{**_describe(upload), **_processing(obitox, upload)} for upload in uploads]
        )

    @app.get("/uploads/<upload_id>/thumbnail")
    def thumbnail_of(upload_id: str) -> ResponseReturnValue:
        owner = owner_of()
        upload = completed.get(owner, upload_id)
        thumb = (
            _processing(obitox, upload).get("processing", {}).get("thumbnail") if upload else None
        )
        key = ((thumb or {}).get("result") or {}).get("thumbnail")
        if upload is None or not key:
            return jsonify(
                error="UPLOAD_NOT_FOUND",
                message=f"No thumbnail of upload {upload_id!r} exists for this caller.",
                details={"uploadId": upload_id},
            ), 404
        storage = obitox.service.storage_for(owner, upload.bucket)
        url = storage.presigner.presign_get_object(upload.bucket, key, expires_in=DOWNLOAD_EXPIRES)
        response = redirect(url, code=302)
        response.headers["Cache-Control"] = "private, no-store"
        return response

    @app.get("/uploads/<upload_id>/download")
    def download_upload(upload_id: str) -> ResponseReturnValue:
        owner = owner_of()
        upload = completed.get(owner, upload_id)
        if upload is None:
            return jsonify(
                error="UPLOAD_NOT_FOUND",
                message=f"No completed upload {upload_id!r} exists for this caller.",
                details={"uploadId": upload_id},
            ), 404
        storage = obitox.service.storage_for(owner, upload.bucket)
        url = storage.presigner.presign_get_object(
            upload.bucket, upload.key, expires_in=DOWNLOAD_EXPIRES
        )
        response = redirect(url, code=302)
        # The URL is a bearer token for the object: keep it out of shared caches.
        response.headers["Cache-Control"] = "private, no-store"
        return response

    return completed
