"""The owner's progress reports and the part grid (DESIGN §12).

A report is for display only: completion still trusts storage alone. It is merged into
the record in one atomic step (:class:`~flask_obitox.state.capabilities.ProgressReports`):
``uploadedBytes`` never goes down (a lower report is accepted and keeps the higher
value) and never passes the upload's size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from .. import signals
from ..errors import ObitoXError
from ..state import UploadRecord
from ..state.capabilities import ByteReports, ProgressReports, supports
from ..storage.client import PartInfo
from .common import OPEN, not_found, part_length, upload_closed
from .groups import Grouping
from .render import effective_status, percentage, uploaded_bytes
from .results import PartState, ProgressAck, ResumeView


def part_states(record: UploadRecord, held: Sequence[PartInfo]) -> list[PartState]:
    """Every part of a multipart upload with its status: what storage holds (ListParts)
    is ``uploaded`` whatever was reported; the others as the owner last reported them,
    else ``pending``. A client-laid-out upload has as many parts as storage holds or
    were reported."""
    by_number = {part.part_number: part for part in held}
    reports = {int(n): status for n, status in (record.part_reports or {}).items()}
    if record.status == "completed" and record.total_parts is not None:
        reports = dict.fromkeys(range(1, record.total_parts + 1), "uploaded")
    total = record.total_parts
    if total is None:
        total = max([*by_number, *reports, 0])
    parts: list[PartState] = []
    for number in range(1, total + 1):
        stored = by_number.get(number)
        if stored is not None:
            parts.append(
                {
                    "partNumber": number,
                    "size": stored.size,
                    "status": "uploaded",
                    "etag": stored.etag,
                }
            )
            continue
        size = part_length(record, number) if record.total_parts is not None else None
        status = reports.get(number, "pending")
        if status == "uploaded" and record.status != "completed":
            # Reported, but storage does not hold it: the report was wrong or early.
            status = "uploading"
        parts.append({"partNumber": number, "size": size, "status": status})
    return parts


class Progress(Grouping):
    """``POST /uploads/<id>/progress``."""

    def report_progress(
        self, owner: str, upload_id: str, uploaded: int, parts: Mapping[int, str]
    ) -> ProgressAck:
        """Merge the owner's report into its upload; ``upload-progress`` when it changed
        anything (and ``group-progress`` for its group).

        A byte count alone, on a backend with :class:`ByteReports`, is checked and merged
        in one step; whatever that step does not settle (another owner's upload, a
        settled or expired one, a first report, a count past the size, a deferred size)
        goes the checked way below, which answers it."""
        state = self.state
        if not parts and supports(state, ByteReports):
            merged = state.report_bytes(upload_id, owner, uploaded, time.time())
            if merged is not None:
                record, changed = merged
                if changed:
                    self._progressed(record, started=False)
                return self._acknowledged(record)
        record = self.owned(owner, upload_id)
        status = effective_status(record)
        if status not in OPEN:
            raise upload_closed(upload_id, status)
        limit = self.rules_of(record).max_size if record.deferred else record.size
        if uploaded > limit:
            raise ObitoXError(
                "INVALID_INPUT",
                f"uploadedBytes {uploaded} exceeds the upload's size ({limit} bytes).",
                details={"field": "uploadedBytes", "limit": limit},
            )
        if parts:
            self._check_part_numbers(record, parts)
        if not supports(state, ProgressReports):
            raise ObitoXError(
                "NOT_FOUND", "This app's state backend keeps no progress.", details={}
            )
        updated = state.report_progress(upload_id, OPEN, uploaded, parts, current=record)
        if updated is None:  # settled meanwhile
            current = self.state.get(upload_id)
            if current is None:
                raise not_found(upload_id)
            raise upload_closed(upload_id, effective_status(current))
        if updated.revision != record.revision:
            started = record.status == "pending" and updated.status != "pending"
            self._progressed(updated, started=started)
        return self._acknowledged(updated)

    def _progressed(self, updated: UploadRecord, *, started: bool) -> None:
        """``upload-progress``, and the group's view when its numbers are watched or the
        member has just ``started`` (a pending group turns ``in_progress``)."""
        self.send(signals.upload_progress, upload=updated)
        if updated.group_id and (started or signals.group_progress.receivers):
            self.member_settled(updated)

    @staticmethod
    def _acknowledged(record: UploadRecord) -> ProgressAck:
        status = effective_status(record)
        done = uploaded_bytes(record, status)
        return {
            "uploadId": record.upload_id,
            "uploadedBytes": done,
            "percentage": percentage(record, status, done),
        }

    @staticmethod
    def _check_part_numbers(record: UploadRecord, parts: Mapping[int, str]) -> None:
        if record.kind != "multipart":
            raise ObitoXError(
                "INVALID_INPUT",
                "parts belong to multipart uploads; this is a single upload.",
                details={"field": "parts"},
            )
        total = record.total_parts
        if total is not None:
            outside = sorted(n for n in parts if not 1 <= n <= total)
            if outside:
                raise ObitoXError(
                    "INVALID_INPUT",
                    f"Part numbers must be between 1 and {total} (totalParts); got {outside[:10]}.",
                    details={"field": "parts", "invalid": outside[:100], "totalParts": total},
                )


def resume_view(
    record: UploadRecord, uploaded: Sequence[PartInfo], remaining: list[int], uploaded_bytes: int
) -> ResumeView:
    """Where a multipart upload stands, as ``GET /multipart/<id>`` shows it."""
    return {
        "uploadId": record.upload_id,
        "key": record.key,
        "status": record.status,
        "partSize": record.part_size,
        "totalParts": record.total_parts,
        "uploadedParts": [
            {"partNumber": p.part_number, "etag": p.etag, "size": p.size} for p in uploaded
        ],
        "remainingParts": remaining,
        "uploadedBytes": uploaded_bytes,
        "totalBytes": record.size,
        "parts": part_states(record, uploaded),
        "percentage": 100.0
        if record.status == "completed"
        else round(100.0 * uploaded_bytes / record.size, 2)
        if record.size
        else 0.0,
    }
