"""Completion without the client: storage says an object was created (DESIGN §15).

An upload whose browser closed right after its last byte never calls ``complete``;
the store's event notification does instead. For the key of an open single upload,
:meth:`StorageEvents.complete_stored` runs the very completion of ``POST
/uploads/<id>/complete`` (:meth:`.settling.Settling.complete_upload`): the same
verification, the same compare-and-set (so a client completing at the same moment
and the event make one ``upload-completed`` between them), the same signals, webhooks
and processing. Keys of no upload, other buckets, multipart uploads (the server
completes those itself, holding the storage upload id) and replays change nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from urllib.parse import unquote_plus

from ..errors import ObitoXError, ServiceUnavailable
from .settling import Settling

logger = logging.getLogger("flask_obitox.storage_events")


@dataclasses.dataclass(frozen=True, slots=True)
class StoredObject:
    """An object a storage event reports as created."""

    bucket: str
    key: str
    #: The key may be URL-encoded (S3 notifications encode it, ``+`` for a space).
    encoded: bool = False


@dataclasses.dataclass(slots=True)
class StorageEventsReport:
    """What a notification did: uploads completed by it, refused (their object did not
    match), and records that changed nothing (unknown, settled, multipart)."""

    received: int = 0
    completed: list[str] = dataclasses.field(default_factory=list)
    rejected: list[str] = dataclasses.field(default_factory=list)
    ignored: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "received": self.received,
            "completed": self.completed,
            "rejected": self.rejected,
            "ignored": self.ignored,
        }


class StorageEvents(Settling):
    """Uploads completed from storage's side."""

    def complete_stored(self, objects: list[StoredObject]) -> StorageEventsReport:
        """Complete the open single upload behind each created object. A storage or
        state outage raises (503: the store retries the whole notification, and what
        this call already completed answers as settled then)."""
        report = StorageEventsReport(received=len(objects))
        seen: set[tuple[str, str]] = set()
        bucket = self.default_storage.bucket
        for item in objects:
            if (item.bucket, item.key) in seen:
                report.ignored += 1
                continue
            seen.add((item.bucket, item.key))
            upload_id, key = self._upload_for(item) if item.bucket == bucket else (None, "")
            if upload_id is None:
                report.ignored += 1
                continue
            outcome = self._complete_one(upload_id, item.bucket, key)
            if outcome == "completed":
                report.completed.append(upload_id)
            elif outcome == "rejected":
                report.rejected.append(upload_id)
            else:
                report.ignored += 1
        return report

    def _upload_for(self, item: StoredObject) -> tuple[str | None, str]:
        keys = [item.key]
        if item.encoded and unquote_plus(item.key) != item.key:
            keys.insert(0, unquote_plus(item.key))
        for key in keys:
            upload_id = self.upload_id_for_key(item.bucket, key)
            if upload_id is not None:
                return upload_id, key
        return None, ""

    def _complete_one(self, upload_id: str, bucket: str, key: str) -> str:
        record = self.state.get(upload_id)
        if (
            record is None
            or record.key != key
            or record.bucket != bucket
            or record.kind != "single"
            or record.status not in ("pending", "uploading")
        ):
            return "ignored"
        try:
            answer = self.complete_upload(record.owner, upload_id, key=key)
        except ServiceUnavailable:
            raise
        except ObitoXError as error:
            if error.code == "CONTENT_MISMATCH":
                return "rejected"
            logger.info("Storage event for upload %s changed nothing: %s", upload_id, error.message)
            return "ignored"
        return "completed" if answer["status"] == "completed" else "ignored"
