"""The one rendering of an upload and of a group: the status route, listings, the group
view, webhooks' ``data`` and event streams all show an upload through
:func:`render_upload` and a group through :func:`render_group`, so their shapes cannot
drift apart."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..state import UploadRecord
from ..state.capabilities import OPEN_GROUP_STATUSES, GroupRecord
from .common import OPEN, isoformat
from .results import GroupView, UploadView


def effective_status(record: UploadRecord, now: float | None = None) -> str:
    """The status a reader sees: an open upload past its TTL is ``expired`` even before
    cleanup has marked it."""
    if record.status in OPEN and (time.time() if now is None else now) > record.expires_at:
        return "expired"
    return record.status


def _percentage(done: int, total: int) -> float:
    # round() to digits formats the float: skip it for nothing done (most views).
    return round(100.0 * done / total, 2) if total and done else 0.0


def percentage(record: UploadRecord, status: str, done: int) -> float:
    """How much of the upload is there, in percent of its size (``done`` bytes)."""
    if status == "completed":
        return 100.0
    return _percentage(done, (record.result or {}).get("size", record.size))


def uploaded_bytes(record: UploadRecord, status: str | None = None) -> int:
    """The bytes an upload holds as far as the server knows: all of them once completed,
    else the owner's own report (never above the declared size)."""
    status = record.status if status is None else status
    if status == "completed":
        size: int = (record.result or {}).get("size", record.size)
        return size
    if record.deferred:
        return record.uploaded_bytes  # the size is the client's to decide
    return min(record.uploaded_bytes, record.size)


def completed_parts(record: UploadRecord, status: str) -> int | None:
    """How many parts of a multipart upload are uploaded, as the owner reported them (all
    of them once completed); ``None`` for a single upload."""
    if record.kind != "multipart":
        return None
    if status == "completed" and record.total_parts is not None:
        return record.total_parts
    reports = record.part_reports or {}
    total = record.total_parts
    return sum(
        1
        for number, state in reports.items()
        if state == "uploaded" and (total is None or int(number) <= total)
    )


def render_upload(record: UploadRecord, *, now: float | None = None) -> UploadView:
    """``record`` in the HTTP API's camelCase names, timestamps in :func:`isoformat`."""
    result = record.result
    status = effective_status(record, now)
    # Each helper below is asked only when its answer can differ from a new upload's
    # (nothing sent, not multipart, no processing, no result, not yet changed): most
    # views, and every batch event.
    completed = status == "completed"
    done = uploaded_bytes(record, status) if completed or record.uploaded_bytes else 0
    multipart = record.kind == "multipart"
    created_at = isoformat(record.created_at)
    return {
        "uploadId": record.upload_id,
        "kind": record.kind,
        "status": status,
        "key": record.key,
        "bucket": record.bucket,
        "filename": record.filename,
        "contentType": record.content_type,
        # The stored size once completed; the declared size before.
        "size": result.get("size", record.size) if result else record.size,
        "metadata": dict(record.metadata),
        "createdAt": created_at,
        "updatedAt": (
            created_at if record.updated_at == record.created_at else isoformat(record.updated_at)
        ),
        "expiresAt": isoformat(record.expires_at),
        "etag": result.get("etag") if result else None,
        "reason": result.get("reason") if result else None,
        "groupId": record.group_id,
        "uploadedBytes": done,
        "percentage": percentage(record, status, done) if completed or done else 0.0,
        "totalParts": record.total_parts if multipart else None,
        "completedParts": completed_parts(record, status) if multipart else None,
        "processing": render_processing(record) if record.processing else {},
        "ready": completed and is_ready(record),  # an effective "completed" is stored
        "profile": record.profile,
    }


def group_status(group: GroupRecord, statuses: Sequence[str], started: bool) -> str:
    """The status ``group`` has by DESIGN §11, its members' (effective) ``statuses``
    given: a finished group keeps its status; a sealed one whose members are all
    finished is ``completed`` when every one completed, else ``failed``; otherwise
    ``in_progress`` once any member ``started``, else ``pending``."""
    if group.status not in OPEN_GROUP_STATUSES:
        return group.status
    if group.sealed and all(status not in OPEN for status in statuses):
        return "completed" if all(s == "completed" for s in statuses) else "failed"
    return "in_progress" if started or group.status == "in_progress" else "pending"


def render_group(
    group: GroupRecord, members: Sequence[UploadRecord], *, now: float | None = None
) -> GroupView:
    """``group`` with its numbers worked out from its ``members``' records."""
    now = time.time() if now is None else now
    statuses = [effective_status(member, now) for member in members]
    total_bytes = uploaded = completed = failed = 0
    started = False
    for member, status in zip(members, statuses, strict=True):
        total_bytes += (member.result or {}).get("size", member.size)
        uploaded += uploaded_bytes(member, status)
        completed += status == "completed"
        failed += status not in OPEN and status != "completed"
        started = started or status != "pending" or member.uploaded_bytes > 0
    status = group_status(group, statuses, started)
    return {
        "groupId": group.group_id,
        "name": group.name,
        "description": group.description,
        "metadata": dict(group.metadata),
        "status": status,
        "sealed": group.sealed,
        "totalFiles": len(members),
        "completedFiles": completed,
        "failedFiles": failed,
        "totalBytes": total_bytes,
        "uploadedBytes": uploaded,
        "percentage": 100.0 if status == "completed" else _percentage(uploaded, total_bytes),
        "createdAt": isoformat(group.created_at),
        "updatedAt": isoformat(group.updated_at),
    }


def render_processing(record: UploadRecord) -> dict[str, dict[str, Any]]:
    """``processing`` as the upload view shows it: ``{status, attempts, result?, error?,
    updatedAt}`` per processor (the internal run counter left out)."""
    shown: dict[str, dict[str, Any]] = {}
    for name, entry in (record.processing or {}).items():
        view = {
            "status": entry["status"],
            "attempts": entry["attempts"],
            "updatedAt": entry["updatedAt"],
        }
        for optional in ("result", "error"):
            if entry.get(optional) is not None:
                view[optional] = entry[optional]
        shown[name] = view
    return shown


def is_ready(record: UploadRecord) -> bool:
    """Completed, and every processor of it completed (none: ready at once)."""
    return record.status == "completed" and all(
        entry["status"] == "completed" for entry in (record.processing or {}).values()
    )
