"""The one rendering of an upload: the status route, webhooks' ``data`` (and, as they
come, listings, event streams and the manager page) all show an upload through
:func:`render_upload`, so their shapes cannot drift apart."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..state import UploadRecord
from .common import OPEN, isoformat
from .results import UploadView


def effective_status(record: UploadRecord, now: float | None = None) -> str:
    """The status a reader sees: an open upload past its TTL is ``expired`` even before
    cleanup has marked it."""
    if record.status in OPEN and (time.time() if now is None else now) > record.expires_at:
        return "expired"
    return record.status


def render_upload(record: UploadRecord, *, now: float | None = None) -> UploadView:
    """``record`` in the HTTP API's camelCase names, timestamps in :func:`isoformat`."""
    result: Mapping[str, Any] = record.result or {}
    return {
        "uploadId": record.upload_id,
        "kind": record.kind,
        "status": effective_status(record, now),
        "key": record.key,
        "bucket": record.bucket,
        "filename": record.filename,
        "contentType": record.content_type,
        # The stored size once completed; the declared size before.
        "size": result.get("size", record.size),
        "metadata": dict(record.metadata),
        "createdAt": isoformat(record.created_at),
        "updatedAt": isoformat(record.updated_at),
        "expiresAt": isoformat(record.expires_at),
        "etag": result.get("etag"),
        "reason": result.get("reason"),
        "profile": record.profile,
    }
