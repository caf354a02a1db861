"""``POST /storage-events``: S3 event notifications, read into the objects they report.

An adapter like the views: it checks the bearer token, reads the wire format and hands
the domain a list of :class:`~flask_obitox.domain.storage_events.StoredObject`; the
domain completes the uploads they belong to (:mod:`flask_obitox.domain.storage_events`).

Accepted bodies (DESIGN §15):

- S3 event notifications: ``{"Records": [{"eventName": "s3:ObjectCreated:Put", "s3":
  {"bucket": {"name"}, "object": {"key", "size", "eTag"}}}, ...]}`` (AWS S3 writes
  ``ObjectCreated:Put``, MinIO and others ``s3:ObjectCreated:Put``), or one such record;
- MinIO's webhook target: the same ``Records`` with ``EventName`` and ``Key``
  (``bucket/object``) beside them, or ``EventName`` and ``Key`` alone;
- EventBridge (an API destination): ``{"detail-type": "Object Created", "detail":
  {"bucket": {"name"}, "object": {"key", "size", "etag"}}}``.

Keys in S3 notifications are URL-encoded (``+`` for a space); the domain tries the key
as sent and decoded.
"""

from __future__ import annotations

import hmac
from typing import Any

from .appstate import ObitoXState
from .domain.storage_events import StoredObject
from .errors import ObitoXError

#: Bytes a notification body may have: 1,000 MinIO records are about 1.5 MB.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: Records one body may hold.
MAX_RECORDS = 10_000


def check_token(ext: ObitoXState, authorization: str | None) -> None:
    """404 when no ``OBITOX_STORAGE_EVENTS_TOKEN`` is set (the route does not exist);
    401 unless ``Authorization: Bearer <token>`` matches (a constant-time compare)."""
    token = ext.settings.storage_events_token
    if token is None:
        raise ObitoXError("NOT_FOUND", "The requested URL was not found on the server.")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ObitoXError(
            "UNAUTHENTICATED",
            "Send Authorization: Bearer <OBITOX_STORAGE_EVENTS_TOKEN>.",
        )


def _invalid(message: str, **details: Any) -> ObitoXError:
    return ObitoXError("INVALID_INPUT", message, details=details)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(f"{where} must be a non-empty string.", field=where)
    return value


def _record(record: Any, index: int) -> StoredObject | None:
    where = f"Records[{index}]"
    if not isinstance(record, dict):
        raise _invalid(f"{where} must be an object.", field=where)
    event = _text(record.get("eventName"), f"{where}.eventName")
    s3 = record.get("s3")
    if not isinstance(s3, dict):
        raise _invalid(f"{where}.s3 must be an object.", field=f"{where}.s3")
    bucket = s3.get("bucket")
    obj = s3.get("object")
    if not isinstance(bucket, dict) or not isinstance(obj, dict):
        raise _invalid(f"{where}.s3 must hold the objects bucket and object.", field=f"{where}.s3")
    name = _text(bucket.get("name"), f"{where}.s3.bucket.name")
    key = _text(obj.get("key"), f"{where}.s3.object.key")
    if not _created(event):
        return None
    return StoredObject(bucket=name, key=key, encoded=True)


def _created(event: str) -> bool:
    return event.removeprefix("s3:").startswith("ObjectCreated:")


def parse_notification(body: Any) -> list[StoredObject]:
    """The objects a notification says were created (other events are left out).
    400 ``INVALID_INPUT`` naming the first malformed part."""
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object (an S3 event notification).")
    if "detail-type" in body:
        detail = body.get("detail")
        if not isinstance(detail, dict):
            raise _invalid("detail must be an object.", field="detail")
        if body["detail-type"] != "Object Created":
            return []
        bucket = detail.get("bucket")
        obj = detail.get("object")
        if not isinstance(bucket, dict) or not isinstance(obj, dict):
            raise _invalid("detail must hold the objects bucket and object.", field="detail")
        return [
            StoredObject(
                bucket=_text(bucket.get("name"), "detail.bucket.name"),
                key=_text(obj.get("key"), "detail.object.key"),
                encoded=True,
            )
        ]
    if "Records" in body:
        records = body["Records"]
        if not isinstance(records, list):
            raise _invalid("Records must be a list.", field="Records")
        if len(records) > MAX_RECORDS:
            raise ObitoXError(
                "PAYLOAD_TOO_LARGE",
                f"At most {MAX_RECORDS} records per notification; got {len(records)}.",
                details={"limit": MAX_RECORDS},
            )
        found = [_record(record, index) for index, record in enumerate(records)]
        return [item for item in found if item is not None]
    if "eventName" in body:
        created = _record(body, 0)
        return [created] if created is not None else []
    if "EventName" in body:
        event = _text(body.get("EventName"), "EventName")
        bucket, _, key = _text(body.get("Key"), "Key").partition("/")
        if not bucket or not key:
            raise _invalid("Key must be <bucket>/<object key>.", field="Key")
        return [StoredObject(bucket=bucket, key=key, encoded=True)] if _created(event) else []
    raise _invalid(
        "The body is not an S3 event notification: expected Records, eventName, "
        "EventName and Key, or an EventBridge Object Created event."
    )
