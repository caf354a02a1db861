"""Resumable multipart uploads: start, sign parts, resume, complete, abort.

Two part layouts, one lifecycle. Usually the server lays the upload out from its
declared size (every part's length is signed into its URL). An upload whose size the
client decides (``record.deferred``: Uppy sends no size and picks its own part sizes)
has unsized part URLs, and its size and parts are checked at completion instead.
Storage (ListParts) is the truth about which parts exist; the record is a cache.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .. import signals
from ..config import S3_MAX_PARTS, S3_MIN_PART_SIZE
from ..errors import ObitoXError, ServiceUnavailable
from ..state import UploadRecord
from ..state.capabilities import OwnerIndex, supports
from ..storage import Storage
from ..storage.client import PartInfo
from ..storage.signer import UploadPartSpec
from .common import (
    OPEN,
    aborted,
    invalid_parts,
    isoformat,
    new_upload_ids,
    not_complete,
    not_found,
    part_layout,
    part_length,
)
from .progress import resume_view
from .results import Aborted, CompletedUpload, MultipartCreated, ResumeView, SignedPart, SignedParts
from .settling import Settling
from .signing import Signing

#: Seconds between looks for the object of an upload storage no longer knows, before it
#: counts as aborted (0.75 s in all): another caller's completion may be under way.
ASSEMBLY_WAITS = (0.05, 0.1, 0.2, 0.4)


class Multipart(Settling):
    """``/multipart`` and Companion's ``/s3/multipart`` routes."""

    def owned_multipart(self, owner: str, upload_id: str, key: str | None = None) -> UploadRecord:
        return self.owned(owner, upload_id, key=key, kind="multipart")

    def check_open(self, record: UploadRecord) -> None:
        """Refuse a multipart upload that can take no more parts (or an abort)."""
        if record.status == "completed":
            raise ObitoXError(
                "UPLOAD_COMPLETED",
                "The upload is already completed.",
                details={"uploadId": record.upload_id},
            )
        self.settled(record)  # raises for aborted, rejected and expired

    # -- start ------------------------------------------------------------------------

    def initiate_multipart(
        self, owner: str, spec: Mapping[str, Any], *, deferred: bool = False
    ) -> MultipartCreated:
        """``POST /multipart``: validate, one ``CreateMultipartUpload``, one record.

        With ``deferred`` (Companion's ``POST /s3/multipart``) the client decides the
        size and its parts: ``spec`` has no size, and the size rules wait for completion.
        The answer's ``uploadId`` is ours (128 random bits, bound to the owner): it is
        the resume token. Storage's UploadId never leaves the server.
        """
        profile = self.profile(owner, spec.get("profile"))
        settings = profile.settings if profile is not None else self.settings
        storage = self.storage_for(owner)
        layout: dict[str, Any]
        try:
            rules = self.rules(
                None if deferred else spec.get("validation"),
                multipart=True,
                profile=spec.get("profile"),
            )
            if deferred:
                file = Signing.checked_deferred_file(spec, rules)
                layout = {"size": 0, "size_deferred": True}
            else:
                file = Signing.checked_file(spec, rules)
                part_size, total_parts = part_layout(
                    spec["size"], spec.get("partSize"), settings.part_size
                )
                layout = {"size": spec["size"], "part_size": part_size, "total_parts": total_parts}
            file = self.with_profile_metadata(file, profile)
        except ObitoXError as error:
            self.reject(owner, spec.get("filename"), error, stage="validation")
            raise
        self.check_open_caps(owner, layout["size"])
        group_id = spec.get("groupId")
        if group_id is not None:
            self.joinable_group(owner, group_id)
        upload_id = new_upload_ids(1)[0]
        key = self.build_key(owner, file.filename, upload_id, file.metadata, profile)
        s3_upload_id = storage.create_multipart(
            key,
            file.content_type,
            file.metadata,
            profile.storage_params if profile is not None else None,
        )
        record = self.new_record(
            upload_id,
            owner,
            storage,
            key,
            file,
            kind="multipart",
            now=time.time(),
            s3_upload_id=s3_upload_id,
            validation=rules.client_rules or None,
            network_type=spec.get("networkType"),
            group_id=group_id,
            profile=profile.name if profile is not None else None,
            **layout,
        )
        try:
            with self.joining(group_id):
                self.state.create(record, self.record_ttl)
        except (ServiceUnavailable, ObitoXError):
            # No half-written upload: give storage its upload back (if that fails too,
            # ``flask obitox cleanup`` aborts the orphan once it is older than the TTL).
            with contextlib.suppress(ServiceUnavailable):
                storage.abort_multipart(key, s3_upload_id)
            raise
        self.send(signals.multipart_initiated, upload=record)
        return {
            "uploadId": upload_id,
            "key": key,
            "bucket": storage.bucket,
            "partSize": record.part_size,
            "totalParts": record.total_parts,
            "expiresAt": isoformat(record.expires_at),
        }

    def check_open_caps(self, owner: str, size: int) -> None:
        """429 when ``owner`` already holds ``OBITOX_MAX_OPEN_MULTIPART`` open multipart
        uploads, or when ``size`` more bytes would pass ``OBITOX_MAX_OPEN_BYTES`` (an
        upload whose client decides its size counts as 0 until it completes).

        Counted from the owner index (a backend without one is not capped), so the caps
        are soft: two uploads started at the same instant may both pass the last place.
        """
        settings = self.settings
        most, budget = settings.max_open_multipart, settings.max_open_bytes
        if not (most or budget) or not supports(self.state, OwnerIndex):
            return
        open_count, open_bytes = 0, 0
        for status in OPEN:
            cursor: str | None = None
            while True:
                page = self.state.list_uploads(
                    owner, status=status, kind="multipart", limit=100, cursor=cursor
                )
                open_count += len(page.items)
                open_bytes += sum(record.size for record in page.items)
                cursor = page.next_cursor
                if cursor is None or (most and open_count >= most):
                    break
        if most and open_count >= most:
            raise ObitoXError(
                "RATE_LIMITED",
                f"You have {open_count} open multipart uploads, the most "
                f"OBITOX_MAX_OPEN_MULTIPART allows ({most}): complete or abort one first.",
                details={"setting": "OBITOX_MAX_OPEN_MULTIPART", "limit": most, "open": open_count},
            )
        if budget and open_bytes + size > budget:
            raise ObitoXError(
                "RATE_LIMITED",
                f"Your open multipart uploads hold {open_bytes} bytes; {size} more would pass "
                f"OBITOX_MAX_OPEN_BYTES ({budget}): complete or abort some first.",
                details={"setting": "OBITOX_MAX_OPEN_BYTES", "limit": budget, "open": open_bytes},
            )

    # -- parts ------------------------------------------------------------------------

    def sign_parts(
        self,
        owner: str,
        upload_id: str,
        part_numbers: Sequence[int],
        network_type: str | None = None,
        *,
        key: str | None = None,
    ) -> SignedParts:
        """``POST /multipart/<id>/parts``: one presigned ``UploadPart`` URL per part
        number (repeats answered once, order kept), all signed in one presigner call.
        Each URL signs its part's exact Content-Length, unless the client lays the
        upload out (no checksum is ever signed: the browser computes none)."""
        record = self.owned_multipart(owner, upload_id, key)
        self.check_open(record)
        assert record.s3_upload_id is not None
        wanted = list(dict.fromkeys(part_numbers))
        now = time.time()
        network = network_type or record.network_type
        # A URL never outlives its upload's record.
        remaining = max(1, int(record.expires_at - now))
        storage = self.storage_for(owner, record.bucket)
        settings = self.settings_of(record.profile)
        sizes: list[int | None]
        if record.deferred:
            # Every part but the last is at least 5 MiB, so an upload within the size
            # limit never needs a higher part number: refusing them bounds what storage
            # can hold.
            most = min(S3_MAX_PARTS, -(-settings.max_multipart_size // S3_MIN_PART_SIZE))
            beyond = [n for n in wanted if n > most]
            if beyond:
                raise ObitoXError(
                    "INVALID_INPUT",
                    f"Part numbers above {most} cannot belong to an upload within "
                    f"OBITOX_MAX_MULTIPART_SIZE; got {beyond[:10]}.",
                    details={"field": "partNumbers", "max": most},
                )
            expires_in = min(remaining, self.expiry(S3_MIN_PART_SIZE, network, None, settings))
            urls = storage.presign_unsized_parts(
                record.key, record.s3_upload_id, wanted, expires_in
            )
            sizes, lifetimes = [None] * len(wanted), [expires_in] * len(wanted)
        else:
            total = record.total_parts
            assert total is not None
            outside = [n for n in wanted if not 1 <= n <= total]
            if outside:
                raise ObitoXError(
                    "INVALID_INPUT",
                    f"Part numbers must be between 1 and {total} (totalParts); got {outside[:10]}.",
                    details={"field": "partNumbers", "invalid": outside[:100], "totalParts": total},
                )
            expiry_by_size: dict[int, int] = {}
            specs: list[UploadPartSpec] = []
            for number in wanted:
                length = part_length(record, number)
                expires_in = expiry_by_size.get(length) or expiry_by_size.setdefault(
                    length, min(remaining, self.expiry(length, network, None, settings))
                )
                specs.append(UploadPartSpec(number, length, expires_in))
            urls = storage.presign_parts(record.key, record.s3_upload_id, specs)
            sizes = [spec.content_length for spec in specs]
            lifetimes = [spec.expires_in for spec in specs]
        if record.status == "pending":
            # Once per upload; losing this CAS (a concurrent call won it) is fine.
            self.state.update(upload_id, ("pending",), status="uploading")
        parts: list[SignedPart] = [
            {
                "partNumber": number,
                "url": url,
                "size": size,
                "headers": {},
                "expiresAt": isoformat(now + lifetime),
                "expiresIn": lifetime,
            }
            for number, url, size, lifetime in zip(wanted, urls, sizes, lifetimes, strict=True)
        ]
        return {"parts": parts}

    # -- resume -----------------------------------------------------------------------

    def resume_multipart(
        self, owner: str, upload_id: str, *, key: str | None = None, open_only: bool = False
    ) -> ResumeView:
        """``GET /multipart/<id>``: which parts storage holds (ListParts, every page:
        storage is the truth, the record only a cache) and which remain. With
        ``open_only``, a completed upload is 409 ``UPLOAD_COMPLETED`` instead."""
        record = self.owned_multipart(owner, upload_id, key)
        if open_only:
            self.check_open(record)
        if record.status == "completed":
            return resume_view(record, [], [], record.size)
        self.settled(record)  # aborted, rejected, expired: nothing to resume
        assert record.s3_upload_id is not None
        storage = self.storage_for(owner, record.bucket)
        held = storage.list_parts(record.key, record.s3_upload_id)
        if held is None:
            # Storage no longer knows the upload: another caller's complete assembled it
            # and is verifying the object (then this answers what that complete settles),
            # or storage aborted it (a lifecycle rule).
            for current in self._looks_while_assembled(upload_id):
                if current.status not in OPEN:
                    return self.resume_multipart(owner, upload_id, key=key, open_only=open_only)
            if storage.head(record.key) is not None:
                raise not_complete(
                    upload_id,
                    "Storage holds the assembled object and its completion is under way: "
                    "call complete to finish it.",
                )
            raise aborted(upload_id)
        total = record.total_parts
        uploaded = [p for p in held if total is None or p.part_number <= total]
        have = {p.part_number for p in uploaded}
        remaining = [n for n in range(1, (total or 0) + 1) if n not in have]
        self.send(signals.multipart_resumed, upload=record, uploaded_parts=len(uploaded))
        return resume_view(record, uploaded, remaining, sum(p.size for p in uploaded))

    # -- complete ---------------------------------------------------------------------

    def choose_parts(
        self,
        record: UploadRecord,
        held: Sequence[PartInfo],
        claimed: Sequence[Mapping[str, Any]] | None,
    ) -> list[PartInfo]:
        """The parts to complete with, in order, checked against what storage holds:
        the signed layout for a server-laid-out upload; for a client-laid-out one,
        the claimed parts (all held parts when none are claimed)."""
        if record.deferred:
            return self._client_parts(record, held, claimed)
        total = record.total_parts
        assert total is not None
        upload_id = record.upload_id
        by_number = {p.part_number: p for p in held if p.part_number <= total}
        missing = [n for n in range(1, total + 1) if n not in by_number]
        if missing:
            raise not_complete(
                upload_id,
                f"Storage does not hold {len(missing)} of the {total} parts yet "
                f"(first missing: {missing[:10]}); upload them, then complete.",
                missingParts=missing[:1000],
            )
        wrong_size = [n for n, part in by_number.items() if part.size != part_length(record, n)]
        if wrong_size:
            raise invalid_parts(
                upload_id,
                f"Parts {wrong_size[:10]} do not have the size that was signed.",
                parts=wrong_size[:1000],
            )
        if claimed is not None:
            numbers = [p["partNumber"] for p in claimed]
            if len(set(numbers)) != len(numbers) or sorted(numbers) != list(range(1, total + 1)):
                raise invalid_parts(
                    upload_id,
                    f"parts must list each part number 1..{total} exactly once.",
                    totalParts=total,
                )
            self._check_etags(record, by_number, claimed)
        return [by_number[n] for n in range(1, total + 1)]

    @staticmethod
    def _check_etags(
        record: UploadRecord,
        by_number: Mapping[int, PartInfo],
        claimed: Sequence[Mapping[str, Any]],
    ) -> None:
        """Every claimed ETag (quoted or not) is the one storage holds for its part."""
        wrong = sorted(
            p["partNumber"]
            for p in claimed
            if p["partNumber"] not in by_number
            or p["etag"].strip().strip('"').lower() != by_number[p["partNumber"]].etag.lower()
        )
        if wrong:
            raise invalid_parts(
                record.upload_id,
                f"The ETags of parts {wrong[:10]} differ from what storage holds.",
                parts=wrong[:1000],
            )

    def _client_parts(
        self,
        record: UploadRecord,
        held: Sequence[PartInfo],
        claimed: Sequence[Mapping[str, Any]] | None,
    ) -> list[PartInfo]:
        by_number = {p.part_number: p for p in held}
        if claimed is None:
            claimed = [{"partNumber": p.part_number, "etag": p.etag} for p in held]
        numbers = [p["partNumber"] for p in claimed]
        if not numbers or sorted(numbers) != list(range(1, len(numbers) + 1)):
            raise invalid_parts(
                record.upload_id, "parts must list each part number from 1 up exactly once."
            )
        self._check_etags(record, by_number, claimed)
        chosen = [by_number[n] for n in sorted(numbers)]
        small = [p.part_number for p in chosen[:-1] if p.size < S3_MIN_PART_SIZE]
        if small:
            raise invalid_parts(
                record.upload_id,
                f"Parts {small[:10]} are smaller than 5 MiB; only the last part may be.",
                parts=small[:1000],
            )
        return chosen

    def complete_multipart(
        self,
        owner: str,
        upload_id: str,
        parts: Sequence[Mapping[str, Any]] | None = None,
        *,
        key: str | None = None,
    ) -> CompletedUpload:
        """``POST /multipart/<id>/complete``: check the parts against ListParts,
        ``CompleteMultipartUpload``, then verify the object as a single upload is.

        Concurrent callers may all reach storage; the status compare-and-set picks one
        winner (who sends ``upload-completed``), and everyone answers the winner's result.
        """
        record = self.owned_multipart(owner, upload_id, key)
        storage = self.storage_for(owner, record.bucket)
        if record.status == "rejected":
            storage.delete(record.key)  # finishes a delete that failed the first time
        answer = self.settled(record)
        if answer is not None:
            return answer
        assert record.s3_upload_id is not None
        held = storage.list_parts(record.key, record.s3_upload_id)
        if held is not None:
            chosen = self.choose_parts(record, held, parts)
            if record.deferred:
                self._check_client_size(record, storage, sum(p.size for p in chosen))
            if storage.complete_multipart(record.key, record.s3_upload_id, chosen) is not None:
                return self._finish_assembled(record, storage)
        # Storage no longer knows the upload: another caller completed it (finish the
        # same way: verify and race for the status) or it was aborted. Storage may
        # forget the upload id before the other caller's object exists: look again for
        # a while before settling it as aborted, which is final.
        for current in self._looks_while_assembled(upload_id):
            answer = self.settled(current)
            if answer is not None:
                return answer
            if storage.head(record.key) is not None:
                return self._finish_assembled(record, storage)
        settled = self.state.update(upload_id, OPEN, status="aborted")
        if settled is not None:
            self.send(signals.upload_aborted, upload=settled)
            self.member_settled(settled)
        raise aborted(upload_id)

    def _looks_while_assembled(self, upload_id: str) -> Iterator[UploadRecord]:
        """The record of an upload storage no longer knows, read now and after each of
        :data:`ASSEMBLY_WAITS` (a completion may be under way); 404 once it is gone."""
        for delay in (0.0, *ASSEMBLY_WAITS):
            time.sleep(delay)
            current = self.state.get(upload_id)
            if current is None:
                raise not_found(upload_id)
            yield current

    def _check_client_size(self, record: UploadRecord, storage: Storage, size: int) -> None:
        """The parts of a client-laid-out upload break the size rules: settle it as
        ``rejected`` (one caller wins and tells the host), free the parts in storage,
        and raise the rule's error. Later calls answer the stored rejection."""
        try:
            self.rules_of(record).check(record.filename, record.content_type, size)
        except ObitoXError as error:
            updated = self.state.update(
                record.upload_id,
                OPEN,
                status="rejected",
                result={"reason": error.message, "stage": "verification"},
            )
            if updated is not None:
                self.reject(
                    record.owner, record.filename, error, stage="verification", upload=updated
                )
                self.member_settled(updated)
            assert record.s3_upload_id is not None
            storage.abort_multipart(record.key, record.s3_upload_id)
            raise

    def _finish_assembled(self, record: UploadRecord, storage: Storage) -> CompletedUpload:
        """After storage assembled the object: verify it, then race for ``completed``."""
        info = storage.head(record.key)
        if info is None:
            answer = self.answer_if_settled(record.upload_id)  # refused and deleted meanwhile?
            if answer is not None:
                return answer
            raise not_complete(
                record.upload_id,
                "Storage has not made the object visible yet; call complete again.",
            )
        return self.finish(record, storage, info, location=storage.object_url(record.key))

    # -- abort ------------------------------------------------------------------------

    def abort_multipart(self, owner: str, upload_id: str, *, key: str | None = None) -> Aborted:
        """``DELETE /multipart/<id>``: mark it aborted (one caller wins and sends
        ``upload-aborted``), then ``AbortMultipartUpload``. Idempotent: aborting again
        answers the same and retries a storage abort that failed."""
        record = self.owned_multipart(owner, upload_id, key)
        if record.status != "aborted":
            self.check_open(record)
            updated = self.state.update(upload_id, OPEN, status="aborted")
            if updated is None:  # the status moved on meanwhile: answer by the new one
                return self.abort_multipart(owner, upload_id, key=key)
            self.send(signals.upload_aborted, upload=updated)
            self.member_settled(updated)
        assert record.s3_upload_id is not None
        self.storage_for(owner, record.bucket).abort_multipart(record.key, record.s3_upload_id)
        return {
            "uploadId": upload_id,
            "status": "aborted",
            "key": record.key,
            "bucket": record.bucket,
        }
