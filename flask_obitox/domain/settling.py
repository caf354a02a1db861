"""Settling an upload: verify what storage holds, then the status race.

Every way an upload finishes comes through here, whatever the protocol: a single
upload's ``complete``, Companion's ``POST /s3/complete``, a multipart upload once
storage assembled it (:meth:`Settling.finish`). Verification is the size (and, for an
upload whose size the client decided, the size rules), then the first bytes against
the declared type; the compare-and-set on the status picks exactly one winner, who
sends ``upload-completed``; everyone answers the winner's result.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, cast

from .. import signals
from ..errors import ObitoXError
from ..state import UploadRecord
from ..state.capabilities import KeyIndex, supports
from ..storage import Storage
from ..storage.client import STORED_FIELDS, ObjectInfo
from ..validation import HEAD_BYTES, verify_content
from .common import OPEN, aborted, mismatch, not_complete, not_found, upload_closed
from .groups import Grouping
from .processors import processing_plan
from .render import render_upload
from .results import CompletedUpload, UploadView


def stored_as(name: str, expected: str, actual: str | None) -> bool:
    """Whether a HEAD's ``actual`` value of ``name`` is what the profile set.

    S3 omits the storage class of STANDARD objects, and answers a KMS key as its ARN:
    a key id matches the ARN that ends with it; an alias, which only KMS can resolve,
    matches any key (the bucket policy in docs/profiles.rst pins the key itself).
    """
    if actual == expected:
        return True
    if name == "StorageClass":
        return expected == "STANDARD" and actual is None
    if name == "SSEKMSKeyId" and actual:
        return "alias/" in expected or actual.endswith("/" + expected)
    return False


class ObjectChanged(Exception):
    """The object was replaced or deleted between its HEAD and its ranged GET."""


class Settling(Grouping):
    """Ownership, verification and the status race (exactly one ``completed``)."""

    def settled(self, record: UploadRecord) -> CompletedUpload | None:
        """The stored answer of a finished upload (raising for a failed one), or
        ``None`` while it is still open."""
        if record.status == "completed":
            assert record.result is not None
            return cast("CompletedUpload", dict(record.result))
        if record.status == "rejected":
            raise mismatch(
                record.upload_id, (record.result or {}).get("reason", "content did not match")
            )
        if record.status == "aborted":
            raise aborted(record.upload_id)
        if record.status == "deleted":
            raise upload_closed(record.upload_id, "deleted")
        if record.status == "expired" or self.is_past_ttl(record):
            raise ObitoXError(
                "UPLOAD_EXPIRED",
                "The upload expired (OBITOX_UPLOAD_TTL); sign a new one.",
                details={"uploadId": record.upload_id},
            )
        return None

    def settle_race(self, upload_id: str) -> CompletedUpload:
        """Another caller changed the status first: answer what it decided."""
        record = self.state.get(upload_id)
        if record is None:
            raise not_found(upload_id)
        answer = self.settled(record)
        if answer is None:  # pragma: no cover - a CAS only fails when the status moved on
            raise not_complete(upload_id, "The upload is still in progress; retry.")
        return answer

    def get_upload(self, owner: str, upload_id: str) -> UploadView:
        """``GET /uploads/<id>``: where an upload of the caller stands."""
        return render_upload(self.owned(owner, upload_id))

    # -- single uploads ---------------------------------------------------------------

    def complete_upload(
        self, owner: str, upload_id: str, *, key: str | None = None
    ) -> CompletedUpload:
        """``POST /uploads/<id>/complete``: check the object, then mark it completed.

        Idempotent: a finished upload answers its stored result and sends nothing again.
        """
        record = self.owned(owner, upload_id, key=key, kind="single")
        storage = self.storage_for(owner, record.bucket)
        if record.status == "rejected":
            # Idempotent, and finishes a delete that failed the first time.
            storage.delete(record.key)
        answer = self.settled(record)
        if answer is not None:
            return answer
        info = storage.head(record.key)
        if info is None:
            # A concurrent caller may have refused the object and deleted it: then its
            # settled answer is this caller's too.
            answer = self.answer_if_settled(upload_id)
            if answer is not None:
                return answer
            raise not_complete(
                upload_id,
                "Storage holds no object for this upload yet: PUT the file to the signed URL first."
                if not record.deferred
                else "Storage holds no object for this upload yet: POST the file first.",
                key=record.key,
            )
        return self.finish(record, storage, info)

    def complete_by_key(self, owner: str, key: str) -> CompletedUpload:
        """``POST /s3/complete?key=``: the upload whose object is ``key`` (Uppy knows
        only the key), completed like ``POST /uploads/<id>/complete``."""
        upload_id = self.upload_id_for_key(self.storage_for(owner).bucket, key)
        try:
            if upload_id is None:
                raise not_found(key)
            record = self.owned(owner, upload_id, key=key)
        except ObitoXError as error:
            if error.code != "UPLOAD_NOT_FOUND":
                raise
            # One answer for an unknown key and another owner's: the key index must not
            # reveal that the key exists, nor whose upload id it names.
            raise not_found(key) from None
        if record.kind == "multipart":
            answer = self.settled(record)
            if answer is None:
                raise not_complete(
                    upload_id,
                    "Complete a multipart upload with POST /s3/multipart/<uploadId>/complete.",
                )
            return answer
        return self.complete_upload(owner, upload_id, key=key)

    def upload_id_for_key(self, bucket: str, key: str) -> str | None:
        """The upload whose object is ``key`` in ``bucket``: the state's key index, else
        the default key layout ``<OBITOX_KEY_PREFIX><uploadId>/<filename>``."""
        if supports(self.state, KeyIndex):
            found = self.state.upload_id_for_key(bucket, key)
            if found is not None:
                return found
        return self.upload_id_in_key(key)

    # -- verification and the race ----------------------------------------------------

    def verify(self, record: UploadRecord, storage: Storage, info: ObjectInfo) -> str | None:
        """Why the stored object does not match what was signed, or ``None``: its size,
        and with ``OBITOX_VERIFY_CONTENT`` its first bytes (a ranged GET, never more)."""
        if info.size != record.size:
            return f"stored size {info.size} differs from the declared size {record.size}"
        stored = self.profile_mismatch(record, info)
        if stored is not None:
            return stored
        if not self.settings.verify_content:
            return None
        # An empty object is checked too: an empty "image/png" is not a PNG.
        head = (
            storage.read_head(record.key, min(HEAD_BYTES, record.size), etag=info.etag)
            if record.size
            else b""
        )
        if head is None:  # replaced or deleted since the HEAD
            raise ObjectChanged(record.upload_id)
        return verify_content(record.content_type, head, self.rules_of(record))

    def profile_mismatch(self, record: UploadRecord, info: ObjectInfo) -> str | None:
        """How the stored object breaks its profile's storage settings (a PUT that
        dropped a signed header storage did not enforce, a bucket default that
        overrode it), or ``None``. The ACL is not in a HEAD's answer: not checked."""
        profile = self.profiles.get(record.profile) if record.profile is not None else None
        if profile is None:
            return None
        for name, expected in profile.storage_params.items():
            actual = info.stored.get(name)
            if name in STORED_FIELDS and not stored_as(name, expected, actual):
                return (
                    f"the stored object has {name} {actual!r} where the profile "
                    f"{profile.name!r} requires {expected!r}"
                )
        for name, expected in profile.metadata.items():
            if info.metadata.get(name) != expected:
                return (
                    f"the stored object lacks the metadata {name}={expected!r} of the "
                    f"profile {profile.name!r}"
                )
        return None

    def answer_if_settled(self, upload_id: str) -> CompletedUpload | None:
        """The settled answer, read again, of an upload whose object changed or vanished
        under this caller (raising for a refused one), or ``None`` while it is open."""
        current = self.state.get(upload_id)
        if current is None:
            raise not_found(upload_id)
        return self.settled(current)

    def finish(
        self, record: UploadRecord, storage: Storage, info: ObjectInfo, **answer: Any
    ) -> CompletedUpload:
        """``record``'s object is in storage (``info``): verify it, then race for
        ``completed``. ``answer``: extra fields of the result (a multipart ``location``).

        For an upload whose size the client decided, the size rules are checked here,
        and the size is stored with the status, in the same compare-and-set.
        """
        stored = record
        if record.deferred:
            try:
                self.rules_of(record).check(record.filename, record.content_type, info.size)
            except ObitoXError as error:
                return self.reject_stored(record, storage, error.message)
            record = dataclasses.replace(record, size=info.size)
        try:
            reason = self.verify(record, storage, info)
        except ObjectChanged:
            settled = self.answer_if_settled(record.upload_id)
            if settled is not None:
                return settled
            raise not_complete(
                record.upload_id,
                "The object changed while it was being verified; call complete again.",
            ) from None
        if reason is not None:
            return self.reject_stored(record, storage, reason)
        result: dict[str, Any] = {
            "uploadId": record.upload_id,
            "status": "completed",
            "key": record.key,
            "bucket": record.bucket,
            "size": info.size,
            "etag": info.etag,
        }
        result.update(answer if answer else {"contentType": record.content_type})
        changes: dict[str, Any] = {"status": "completed", "result": result}
        if record.deferred:
            changes["size"] = info.size
        # Its processors are queued in the same write that completes it: a completed
        # upload always says what runs after it, whoever completed it.
        plan = processing_plan(
            getattr(self.hooks, "processors", None) or {}, record, self.settings, time.time()
        )
        if plan is not None:
            changes["processing"] = plan
        updated = self.state.update(record.upload_id, OPEN, current=stored, **changes)
        if updated is None:
            self.free_after_lost_race(record, storage)
            return self.settle_race(record.upload_id)
        self.send(signals.upload_completed, upload=updated)
        self.member_settled(updated)
        if plan is None:
            self.send(signals.upload_ready, upload=updated)
        return cast("CompletedUpload", result)

    def free_after_lost_race(self, record: UploadRecord, storage: Storage) -> None:
        """An abort (or cleanup) won the race while storage assembled a multipart
        object: honour it. The object is no multipart upload any more for cleanup to
        find, so whoever lost must delete it."""
        if record.kind != "multipart":
            return
        current = self.state.get(record.upload_id)
        if current is not None and current.status in ("aborted", "expired", "deleted"):
            storage.delete(record.key)

    def reject_stored(self, record: UploadRecord, storage: Storage, reason: str) -> CompletedUpload:
        """The stored object is refused: exactly one caller wins the CAS to ``rejected``
        and tells the host, then the object is deleted and every caller answers 422.
        If the delete fails, the record already says ``rejected`` and every later
        complete retries the delete before answering 422."""
        updated = self.state.update(
            record.upload_id,
            OPEN,
            current=record if not record.deferred else None,
            status="rejected",
            result={"reason": reason, "stage": "verification"},
        )
        if updated is None:
            self.free_after_lost_race(record, storage)
            return self.settle_race(record.upload_id)
        error = mismatch(record.upload_id, reason)
        self.reject(record.owner, record.filename, error, stage="verification", upload=updated)
        self.member_settled(updated)
        storage.delete(record.key)
        raise error
