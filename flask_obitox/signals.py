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

#: A webhook was delivered (2xx). Keyword arguments: ``delivery``.
webhook_delivered = _signals.signal("webhook-delivered")

#: A webhook attempt failed. Keyword arguments: ``delivery``, ``final`` (no retry left).
webhook_failed = _signals.signal("webhook-failed")

#: A processor finished for an upload. Keyword arguments: ``upload`` (the record
#: after it), ``name`` (the processor), ``result`` (what it returned).
processing_completed = _signals.signal("processing-completed")

#: A processor's attempt failed. Keyword arguments: ``upload``, ``name``, ``error``
#: (a sentence) and ``final`` (no retry left: its status is now ``failed``).
processing_failed = _signals.signal("processing-failed")

#: An upload is completed and every processor of it completed; sent once per upload.
#: Keyword arguments: ``upload``.
upload_ready = _signals.signal("upload-ready")

__all__ = [
    "multipart_initiated",
    "multipart_resumed",
    "processing_completed",
    "processing_failed",
    "upload_aborted",
    "upload_completed",
    "upload_expired",
    "upload_ready",
    "upload_rejected",
    "upload_signed",
    "webhook_delivered",
    "webhook_failed",
]
