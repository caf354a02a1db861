"""Blinker signals for every upload event.

Every signal is sent with the Flask app as sender, so a host subscribes with
``signals.upload_completed.connect_via(app)``. Webhook signals are sent in the RQ
worker, inside an app context.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A URL was signed for an upload. Keyword arguments: ``upload`` (the
#: :class:`~flask_obitox.state.UploadRecord`).
upload_signed = _signals.signal("upload-signed")

#: A file was refused. Keyword arguments: ``filename``, ``reason`` (a sentence),
#: ``stage`` (``"validation"`` before signing, ``"verification"`` after upload),
#: ``code`` (the error code), ``owner`` and ``upload`` (the record, or ``None`` when
#: the file was refused before any record existed).
upload_rejected = _signals.signal("upload-rejected")

#: A multipart upload was created. Keyword arguments: ``upload``.
multipart_initiated = _signals.signal("multipart-initiated")

#: A client asked where a multipart upload stands. Keyword arguments: ``upload``,
#: ``uploaded_parts`` (count).
multipart_resumed = _signals.signal("multipart-resumed")

#: An upload was verified and marked completed; sent once per upload. Keyword
#: arguments: ``upload``.
upload_completed = _signals.signal("upload-completed")

#: An upload was aborted. Keyword arguments: ``upload``.
upload_aborted = _signals.signal("upload-aborted")

#: An upload passed its TTL and was cleaned up. Keyword arguments: ``upload``.
upload_expired = _signals.signal("upload-expired")

#: The owner reported how far an upload got. Keyword arguments: ``upload`` (the record
#: after the report).
upload_progress = _signals.signal("upload-progress")

#: An upload was deleted (its object and derived objects too). Keyword arguments:
#: ``upload``.
upload_deleted = _signals.signal("upload-deleted")

#: A group was created. Keyword arguments: ``group`` (the
#: :class:`~flask_obitox.state.GroupRecord`), ``view`` (the group as
#: ``GET /groups/<groupId>`` shows it, without ``uploads``).
group_created = _signals.signal("group-created")

#: A group's members moved on. Keyword arguments: ``group``, ``view``.
group_progress = _signals.signal("group-progress")

#: A sealed group's members all completed; sent once. Keyword arguments: ``group``,
#: ``view``.
group_completed = _signals.signal("group-completed")

#: A sealed group's members all settled, one or more not completed; sent once.
#: Keyword arguments: ``group``, ``view``.
group_failed = _signals.signal("group-failed")

#: A group was cancelled. Keyword arguments: ``group``, ``view``.
group_cancelled = _signals.signal("group-cancelled")

#: A processor finished. Keyword arguments: ``upload``, ``name`` (the processor),
#: ``result``.
processing_completed = _signals.signal("processing-completed")

#: A processor failed. Keyword arguments: ``upload``, ``name``, ``error`` (a sentence),
#: ``final`` (no retry left).
processing_failed = _signals.signal("processing-failed")

#: An upload is completed and every processor of it completed. Keyword arguments:
#: ``upload``.
upload_ready = _signals.signal("upload-ready")

#: A webhook was delivered (2xx). Keyword arguments: ``delivery``.
webhook_delivered = _signals.signal("webhook-delivered")

#: A webhook attempt failed. Keyword arguments: ``delivery``, ``final`` (no retry left).
webhook_failed = _signals.signal("webhook-failed")

__all__ = [
    "group_cancelled",
    "group_completed",
    "group_created",
    "group_failed",
    "group_progress",
    "multipart_initiated",
    "multipart_resumed",
    "processing_completed",
    "processing_failed",
    "upload_aborted",
    "upload_completed",
    "upload_deleted",
    "upload_expired",
    "upload_progress",
    "upload_ready",
    "upload_rejected",
    "upload_signed",
    "webhook_delivered",
    "webhook_failed",
]
