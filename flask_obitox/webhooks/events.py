"""Webhook messages: what an upload event looks like on the wire (built by
:func:`flask_obitox.domain.messages.build_message`, as live events are).

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

from typing import Any

from ..domain.messages import Message, build_message, message_id
from ..domain.render import render_upload
from ..state import UploadRecord

UPLOAD_COMPLETED = "upload.completed"
UPLOAD_ABORTED = "upload.aborted"
UPLOAD_REJECTED = "upload.rejected"
UPLOAD_EXPIRED = "upload.expired"

__all__ = [
    "UPLOAD_ABORTED",
    "UPLOAD_COMPLETED",
    "UPLOAD_EXPIRED",
    "UPLOAD_REJECTED",
    "Message",
    "build_message",
    "message_id",
    "rejected_data",
    "rejected_message",
    "upload_data",
    "upload_message",
]


def upload_data(upload: UploadRecord, *, include_owner: bool) -> dict[str, Any]:
    """The ``data`` of an upload event: the upload as the status route renders it."""
    data: dict[str, Any] = dict(render_upload(upload))
    if include_owner:
        data["owner"] = upload.owner
    return data


def upload_message(event: str, upload: UploadRecord, *, include_owner: bool) -> Message:
    """``upload.completed``, ``upload.aborted`` or ``upload.expired`` for ``upload``."""
    return build_message(
        event, upload_data(upload, include_owner=include_owner), upload_id=upload.upload_id
    )


def rejected_data(
    *,
    filename: str | None,
    reason: str,
    stage: str,
    code: str,
    upload: UploadRecord | None,
) -> dict[str, Any]:
    """The ``data`` of ``upload.rejected`` (without ``owner``): the upload when a record
    existed (refused after upload), else only the file name (``uploadId`` is ``None``)."""
    if upload is not None:
        data = upload_data(upload, include_owner=False)
    else:
        data = {"uploadId": None, "filename": filename}
    data.update(reason=reason, stage=stage, code=code)
    return data


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
    data = rejected_data(filename=filename, reason=reason, stage=stage, code=code, upload=upload)
    if upload is not None:
        owner = owner or upload.owner
    if include_owner:
        data["owner"] = owner
    return build_message(
        UPLOAD_REJECTED, data, upload_id=upload.upload_id if upload is not None else None
    )
