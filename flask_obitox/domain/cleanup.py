"""Cleanup: expire open uploads past ``OBITOX_UPLOAD_TTL`` and free their storage."""

from __future__ import annotations

import dataclasses
import time

from .. import signals
from ..errors import ServiceUnavailable
from ..state import UploadRecord
from ..storage.client import PendingMultipart
from .common import OPEN
from .groups import Grouping


@dataclasses.dataclass(slots=True)
class CleanupReport:
    """What :meth:`Cleanup.cleanup` did."""

    expired: list[UploadRecord] = dataclasses.field(default_factory=list)
    orphans: list[str] = dataclasses.field(default_factory=list)  # keys aborted
    errors: list[str] = dataclasses.field(default_factory=list)


class Cleanup(Grouping):
    """``flask obitox cleanup`` and :func:`flask_obitox.jobs.cleanup`."""

    def cleanup(
        self, *, now: float | None = None, orphans: bool = True, page: int = 1000
    ) -> CleanupReport:
        """Expire every open upload past ``OBITOX_UPLOAD_TTL`` and free its storage.

        For each due record: compare-and-set to ``expired`` (the winner sends
        ``upload-expired``), then abort its multipart upload in storage, or delete the
        object a never-completed single upload may have left (bytes nobody verified) --
        only when its key is the default ``<prefix><uploadId>/<filename>``, unique to the
        upload: a host ``key_builder`` may reuse keys, and a later upload's object must
        never be deleted.
        When storage fails, the record stays in the expiry index and the next run
        retries. With ``orphans``, also aborts multipart uploads storage holds under
        ``OBITOX_KEY_PREFIX`` in the default bucket that are older than the TTL (their
        records are gone, e.g. a flushed Redis).
        """
        now = time.time() if now is None else now
        report = CleanupReport()
        while True:
            due = self.state.expired_ids(now, page)
            settled: list[str] = []
            for upload_id in due:
                record = self.state.get(upload_id)
                if record is None or record.status not in (*OPEN, "expired"):
                    settled.append(upload_id)  # finished, or its record is gone
                    continue
                if record.status != "expired":
                    updated = self.state.update(upload_id, OPEN, status="expired")
                    if updated is None:  # finished meanwhile; the next page sees it
                        continue
                    record = updated
                    report.expired.append(record)
                    self.send(signals.upload_expired, upload=record)
                    self.member_settled(record)
                try:
                    self.release_storage(record)
                except ServiceUnavailable as error:
                    report.errors.append(f"{upload_id}: {error.detail}")
                    continue
                settled.append(upload_id)
            self.state.forget_expired(settled)
            if len(due) < page or not settled:
                break
        if orphans:
            try:
                self._abort_orphans(now, report)
            except ServiceUnavailable as error:
                report.errors.append(f"listing multipart uploads: {error.detail}")
        return report

    def _abort_orphans(self, now: float, report: CleanupReport) -> None:
        storage = self.storages.get(self.default_storage)
        prefix = self.settings.key_prefix
        cutoff = now - self.settings.upload_ttl
        for pending in storage.pending_multiparts(prefix):
            if pending.initiated >= cutoff or self._claimed(pending, prefix, now):
                continue
            storage.abort_multipart(pending.key, pending.upload_id)
            report.orphans.append(pending.key)

    def _claimed(self, pending: PendingMultipart, prefix: str, now: float) -> bool:
        """Whether a live record owns ``pending``. Storage's start date alone is not
        trusted (some S3-compatible servers report a fixed one): a key in the default
        layout ``<prefix><uploadId>/<filename>`` names its record, which is checked."""
        upload_id = self.upload_id_in_key(pending.key)
        record = self.state.get(upload_id) if upload_id else None
        return (
            record is not None
            and record.s3_upload_id == pending.upload_id
            and record.status in OPEN
            and record.expires_at > now
        )
