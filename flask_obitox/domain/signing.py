"""Signing single uploads: one file, a batch, or Uppy's presigned POST.

Validation, the key, smart expiry and the record are decided with no I/O
(:meth:`Signing.plan`); then every URL of the request is signed in one presigner call
and every record written in one state round trip.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from .. import signals
from ..config import Profile
from ..errors import ObitoXError, ServiceUnavailable
from ..state import UploadRecord
from ..state.capabilities import EventFanIn, GroupRecord, supports
from ..storage import Storage
from ..storage.signer import PutObjectSpec
from ..validation import RuleSet, sanitize_filename
from .base import CheckedFile
from .common import UNSIGNABLE_CONTENT_TYPE, isoformat, new_upload_ids
from .groups import Grouping
from .messages import all_skip_sent_with_write, message_body, sending_signed
from .render import render_group, render_upload
from .results import BatchError, BatchResult, SignedPost, SignedUpload


class InvalidEntry(NamedTuple):
    """A batch entry that failed loading: its error, and its filename when it had one."""

    error: ObitoXError
    filename: str | None = None


class Planned(NamedTuple):
    """One validated file, ready to sign: its record, its PUT and its answer (less the
    URL, which :meth:`Signing.sign_planned` adds)."""

    record: UploadRecord
    put: PutObjectSpec
    headers: dict[str, str]
    expires_in: int


def batch_error(index: int, filename: str | None, error: ObitoXError) -> BatchError:
    return {
        "index": index,
        "filename": filename,
        "error": error.code,
        "message": error.message,
        "details": error.details,
    }


class Signing(Grouping):
    """``POST /uploads``, ``POST /uploads/batch`` and Companion's ``GET /s3/params``."""

    def create_signed(self, records: Sequence[UploadRecord], now: float) -> frozenset[str]:
        """Write new records (``create_many``) with their ``upload.signed`` events when
        the state can carry them (``EventFanIn.create_with_events``: one round trip on a
        standalone Redis instead of two); the ids whose events went out, for
        :meth:`send_signed`. Records joining a group leave their events to the publisher
        of signals: appended when the request ends in one packet with the group's own
        (``group.created``, ``group.progress``), where ``create_with_events`` would take
        a round trip of its own for them."""
        state = self.state
        grouped = any(record.group_id for record in records)
        if grouped or not (self.settings.events and supports(state, EventFanIn)):
            state.create_many(records, self.record_ttl)
            return frozenset()
        events = [
            (record.owner, message_body("upload.signed", render_upload(record), now=now))
            for record in records
        ]
        state.create_with_events(records, self.record_ttl, events)
        return frozenset(record.upload_id for record in records)

    def send_signed(self, records: Sequence[UploadRecord], sent: frozenset[str]) -> None:
        """``upload-signed`` for each record; ``sent``: those whose event went out with
        the write (:meth:`create_signed`), which the publisher then skips."""
        signal = signals.upload_signed
        if len(sent) == len(records) and all_skip_sent_with_write(
            signal.receivers_for(self.sender)
        ):
            return  # every receiver would skip every record
        with sending_signed(sent):
            for record in records:
                self.send(signal, upload=record)

    @staticmethod
    def checked_file(spec: Mapping[str, Any], rules: RuleSet) -> CheckedFile:
        """The file's sanitised name, signable content type and metadata, after
        ``rules`` accepted its name, type and size."""
        filename = sanitize_filename(spec["filename"])
        content_type = spec["contentType"].strip()
        if content_type.lower() == UNSIGNABLE_CONTENT_TYPE:
            # botocore never signs this exact value (its own default form type), so the
            # upload could then be sent with any type: sign the same type, spaceless.
            content_type = content_type.replace("; ", ";")
        rules.check(filename, content_type, spec["size"])
        metadata = {k.lower(): v.strip() for k, v in spec.get("metadata", {}).items()}
        return CheckedFile(filename, content_type, metadata)

    @classmethod
    def checked_deferred_file(cls, spec: Mapping[str, Any], rules: RuleSet) -> CheckedFile:
        """:meth:`checked_file` for a file whose client decides its size later (Uppy):
        every rule now, the size ones at completion (the smallest allowed size passes)."""
        return cls.checked_file({**spec, "size": max(rules.min_size, 0)}, rules)

    def plan(
        self,
        owner: str,
        spec: Mapping[str, Any],
        rules: RuleSet,
        network_type: str | None,
        storage: Storage,
        upload_id: str,
        now: float,
        profile: Profile | None = None,
        group_id: str | None = None,
    ) -> Planned:
        """Validate one file and decide its key, expiry and signed headers (no I/O);
        ``profile``'s rules are ``rules``, its key prefix, bounds and headers apply."""
        file = self.checked_file(spec, rules)
        if profile is not None:
            file = self.with_profile_metadata(file, profile)
        filename, content_type, metadata = file
        size = spec["size"]
        checksum = spec.get("checksumSha256")
        key = self.build_key(owner, filename, upload_id, metadata, profile)
        expires_in = self.expiry(
            size,
            spec.get("networkType", network_type),
            spec.get("expiresIn"),
            profile.settings if profile is not None else None,
        )
        headers = {"Content-Type": content_type}
        # Create-only: storage refuses this URL's PUT (412) once the object exists, so
        # a leaked or replayed URL cannot replace what was uploaded and verified.
        if_none_match = "*" if self.settings.create_only else None
        if if_none_match:
            headers["If-None-Match"] = if_none_match
        if checksum:
            headers["x-amz-checksum-sha256"] = checksum
        for name, value in metadata.items():
            headers[f"x-amz-meta-{name}"] = value
        storage_headers: tuple[tuple[str, str], ...] = ()
        if profile is not None:
            # Signed: a PUT without them (the encryption header dropped) is refused.
            storage_headers = profile.put_headers
            headers.update(storage_headers)
        record = self.new_record(
            upload_id,
            owner,
            storage,
            key,
            file,
            kind="single",
            size=size,
            now=now,
            checksum_sha256=checksum,
            validation=rules.client_rules or None,
            group_id=group_id,
            profile=profile.name if profile is not None else None,
        )
        put = PutObjectSpec(
            key, content_type, size, expires_in, checksum, metadata, if_none_match, storage_headers
        )
        return Planned(record, put, headers, expires_in)

    @staticmethod
    def sign_planned(
        storage: Storage, planned: Sequence[Planned], now: float
    ) -> list[SignedUpload]:
        """Presign every planned PUT in one call (one credentials read, one clock) and
        answer each."""
        urls = storage.presign_puts([p.put for p in planned])
        # One clock for the request: a batch's files share a few expiries, so each
        # distinct one is formatted once.
        expires_at: dict[int, str] = {}
        answers: list[SignedUpload] = []
        for plan, url in zip(planned, urls, strict=True):
            record, expires_in = plan.record, plan.expires_in
            at = expires_at.get(expires_in)
            if at is None:
                at = expires_at[expires_in] = isoformat(now + expires_in)
            answers.append(
                {
                    "uploadId": record.upload_id,
                    "key": record.key,
                    "bucket": record.bucket,
                    "method": "PUT",
                    "url": url,
                    "headers": plan.headers,
                    "expiresIn": expires_in,
                    "expiresAt": at,
                }
            )
        return answers

    def sign_upload(self, owner: str, spec: Mapping[str, Any]) -> SignedUpload:
        """``POST /uploads``: validate one file and return its presigned PUT."""
        profile = self.profile(owner, spec.get("profile"))
        storage = self.storage_for(owner)
        now = time.time()
        group_id = spec.get("groupId")
        try:
            rules = self.rules(spec.get("validation"), profile=spec.get("profile"))
            upload_id = new_upload_ids(1)[0]
            plan = self.plan(
                owner, spec, rules, None, storage, upload_id, now, profile, group_id=group_id
            )
        except ObitoXError as error:
            self.reject(owner, spec.get("filename"), error, stage="validation")
            raise
        if group_id is not None:
            self.joinable_group(owner, group_id)
        [answer] = self.sign_planned(storage, [plan], now)
        with self.joining(group_id):
            sent = self.create_signed([plan.record], now)
        self.send_signed([plan.record], sent)
        return answer

    def check_batch_size(self, count: int, profile: Profile | None = None) -> None:
        limit = (profile.settings if profile is not None else self.settings).batch_max_files
        if count < 1:
            raise ObitoXError(
                "INVALID_INPUT", "files must hold at least one file.", details={"field": "files"}
            )
        if count > limit:
            raise ObitoXError(
                "BATCH_TOO_LARGE",
                f"A batch holds at most {limit} files (OBITOX_BATCH_MAX_FILES); got {count}.",
                details={"limit": limit, "actual": count},
            )

    def sign_batch(
        self,
        owner: str,
        entries: Sequence[Any],
        load: Callable[[Any], Mapping[str, Any] | InvalidEntry],
        *,
        validation: Mapping[str, Any] | None = None,
        network_type: str | None = None,
        group_id: str | None = None,
        group: Mapping[str, Any] | None = None,
        profile: str | None = None,
    ) -> BatchResult:
        """``POST /uploads/batch``: each file on its own; one state round trip for all.

        ``entries`` are the request's raw file entries and ``load`` the adapter's parser
        of one (a loaded spec, or an :class:`InvalidEntry` for one that does not load),
        so an oversize batch is refused before any entry is parsed, and a malformed
        entry fails alone and keeps its index. ``profile`` applies to every file.

        ``group_id``: every signed file joins that group of the caller's. ``group``
        (``{name, description?, metadata?}``): a new group holding exactly the signed
        files, sealed (made only when a file is signed; the answer then has its id).
        """
        chosen = self.profile(owner, profile)
        self.check_batch_size(len(entries), chosen)
        if group_id is not None and group is not None:
            raise ObitoXError(
                "INVALID_INPUT",
                "Send groupId (join a group) or group (make one), not both.",
                details={"field": "group"},
            )
        if group_id is not None:
            self.joinable_group(owner, group_id)
        storage = self.storage_for(owner)
        batch_rules = self.rules(validation, profile=profile)
        now = time.time()
        upload_ids = new_upload_ids(len(entries))
        planned: list[Planned] = []
        indexes: list[int] = []
        errors: list[BatchError] = []
        rejected: list[tuple[str, ObitoXError]] = []
        for index, entry in enumerate(entries):
            spec = load(entry)
            if isinstance(spec, InvalidEntry):  # malformed: answered, but not a rejected file
                errors.append(batch_error(index, spec.filename, spec.error))
                continue
            file_rules = spec.get("validation")
            try:
                rules = batch_rules.tighten(file_rules) if file_rules else batch_rules
                plan = self.plan(
                    owner,
                    spec,
                    rules,
                    network_type,
                    storage,
                    upload_ids[index],
                    now,
                    chosen,
                    group_id=group_id,
                )
            except ObitoXError as error:
                errors.append(batch_error(index, spec["filename"], error))
                rejected.append((spec["filename"], error))
                continue
            planned.append(plan)
            indexes.append(index)
        uploads: list[SignedUpload] = []
        made: GroupRecord | None = None
        sent: frozenset[str] = frozenset()
        if planned:
            uploads = self.sign_planned(storage, planned, now)
            if group is not None:
                made = self.new_group(owner, group)
                for plan in planned:
                    plan.record.group_id = made.group_id
            try:
                with self.joining(made.group_id if made is not None else group_id):
                    sent = self.create_signed([p.record for p in planned], now)
            except ServiceUnavailable:
                if made is not None:  # no empty group left behind, if the state allows
                    with contextlib.suppress(ServiceUnavailable):
                        self.groups.update_group_status(made.group_id, ("pending",), "deleted")
                raise
            if made is not None:
                made = self.groups.seal(made.group_id) or made
        for answer, plan, index in zip(uploads, planned, indexes, strict=True):
            answer["index"] = index
            answer["filename"] = plan.record.filename
        self.send_signed([plan.record for plan in planned], sent)
        for filename, refused in rejected:
            self.reject(owner, filename, refused, stage="validation")
        result: BatchResult = {
            "total": len(entries),
            "successful": len(planned),
            "failed": len(errors),
            "uploads": uploads,
            "errors": errors,
        }
        if made is not None:
            view = render_group(made, [p.record for p in planned])
            self.send(signals.group_created, group=made, view=view)
            result["groupId"] = made.group_id
        elif group_id is not None:
            result["groupId"] = group_id
        return result

    def sign_post(self, owner: str, spec: Mapping[str, Any]) -> SignedPost:
        """Companion's ``GET /s3/params``: validate like ``POST /uploads`` (all but the
        size, which the browser decides and :meth:`~.Settling.finish` checks), record the
        upload, and answer a presigned POST whose policy bounds the size by the rules."""
        profile = self.profile(owner, spec.get("profile"))
        settings = profile.settings if profile is not None else self.settings
        storage = self.storage_for(owner)
        rules = self.rules(profile=spec.get("profile"))
        try:
            file = self.with_profile_metadata(self.checked_deferred_file(spec, rules), profile)
        except ObitoXError as error:
            self.reject(owner, spec.get("filename"), error, stage="validation")
            raise
        upload_id = new_upload_ids(1)[0]
        key = self.build_key(owner, file.filename, upload_id, file.metadata, profile)
        # Uppy POSTs files below its multipart threshold (100 MiB by default): a URL for
        # that size, not for the largest file allowed, so the policy does not outlive the
        # upload by a day (until it expires, the same form could replace the object).
        expires_in = self.expiry(
            min(rules.max_size, settings.multipart_threshold), None, settings=settings
        )
        post = storage.presign_post(
            key,
            content_type=file.content_type,
            metadata=file.metadata,
            min_size=max(rules.min_size, 0),
            max_size=rules.max_size,
            expires_in=expires_in,
            extra_fields=profile.post_fields if profile is not None else None,
        )
        record = self.new_record(
            upload_id,
            owner,
            storage,
            key,
            file,
            kind="single",
            size=0,
            now=time.time(),
            size_deferred=True,
            profile=profile.name if profile is not None else None,
        )
        self.send_signed([record], self.create_signed([record], record.created_at))
        return {"method": "POST", "url": post.url, "fields": post.fields, "expires": expires_in}
