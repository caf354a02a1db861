"""Webhook messages: what an upload event looks like on the wire.

Every message body is ``{"type", "timestamp", "data"}``:

- ``type``: ``upload.completed``, ``upload.aborted``, ``upload.rejected`` or
  ``upload.expired``;
- ``timestamp``: when the event happened, ISO 8601 UTC to the millisecond (the one
  timestamp format of the API, :func:`flask_obitox.domain.isoformat`);
- ``data``: the upload exactly as ``GET /uploads/<id>`` shows it
  (:func:`flask_obitox.domain.render_upload`). ``upload.rejected`` adds ``reason``,
  ``stage`` and ``code``. ``owner`` is there only with ``OBITOX_WEBHOOK_INCLUDE_OWNER``.

The message id (the ``webhook-id`` header) is derived from the event type and the
upload id, so the same event always gets the same id: with the deterministic job id
built from it, a second enqueue of the same event is refused by RQ.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from collections.abc import Mapping
from typing import Any

import orjson

from ..domain.common import isoformat
from ..domain.render import render_upload
from ..state import UploadRecord

UPLOAD_COMPLETED = "upload.completed"
UPLOAD_ABORTED = "upload.aborted"
UPLOAD_REJECTED = "upload.rejected"
UPLOAD_EXPIRED = "upload.expired"
UPLOAD_READY = "upload.ready"
PROCESSING_FAILED = "processing.failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One event, ready to deliver: its id, its type and its exact body."""

    id: str
    type: str
    body: str

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data


def message_id(event: str, upload_id: str | None) -> str:
    """``msg_`` and 128 bits: a hash of the event and the upload, or random when the
    event has no upload (a file refused before any record existed is its own event)."""
    if upload_id is None:
        return "msg_" + secrets.token_hex(16)
    return "msg_" + hashlib.sha256(f"{event}\x00{upload_id}".encode()).hexdigest()[:32]


def upload_data(upload: UploadRecord, *, include_owner: bool) -> dict[str, Any]:
    """The ``data`` of an upload event: the upload as the status route renders it."""
    data: dict[str, Any] = dict(render_upload(upload))
    if include_owner:
        data["owner"] = upload.owner
    return data


def build_message(
    event: str,
    data: Mapping[str, Any],
    *,
    upload_id: str | None,
    now: float | None = None,
) -> Message:
    """The message for ``event`` carrying ``data``, with its body encoded once: every
    attempt sends (and signs) exactly these bytes."""
    body = orjson.dumps(
        {"type": event, "timestamp": isoformat(time.time() if now is None else now), "data": data}
    ).decode()
    return Message(message_id(event, upload_id), event, body)


def upload_message(event: str, upload: UploadRecord, *, include_owner: bool) -> Message:
    """``upload.completed``, ``upload.aborted`` or ``upload.expired`` for ``upload``."""
    return build_message(
        event, upload_data(upload, include_owner=include_owner), upload_id=upload.upload_id
    )


def rejected_message(
    *,
    filename: str | None,
    reason: str,
    stage: str,
    code: str,
    owner: str | None,
    upload: UploadRecord | None,
    include_owner: bool,
) -> Message:
    """``upload.rejected``: the upload when a record existed (refused after upload),
    else only the file name (refused before signing, ``uploadId`` is ``None``)."""
    if upload is not None:
        data = upload_data(upload, include_owner=False)
        owner = owner or upload.owner
    else:
        data = {"uploadId": None, "filename": filename}
    data.update(reason=reason, stage=stage, code=code)
    if include_owner:
        data["owner"] = owner
    return build_message(
        UPLOAD_REJECTED, data, upload_id=upload.upload_id if upload is not None else None
    )


def processing_failed_message(
    upload: UploadRecord, name: str, error: str, *, include_owner: bool
) -> Message:
    """``processing.failed``: processor ``name`` gave up on ``upload`` (its last
    attempt failed). ``data`` is the upload view plus ``processor`` and ``error``; each
    run that fails (a retried one is a new run) is its own message."""
    data = upload_data(upload, include_owner=include_owner)
    data.update(processor=name, error=error)
    run = (upload.processing or {}).get(name, {}).get("run", 1)
    return build_message(
        PROCESSING_FAILED, data, upload_id=f"{upload.upload_id}\x00{name}\x00{run}"
    )
