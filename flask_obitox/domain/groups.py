"""Groups of uploads (DESIGN §11): create, seal, read, list, cancel and delete, and the
re-evaluation that settles a group when its members settle.

A group's numbers are never stored: :func:`~.render.render_group` works them out from
its members' records each time it is read (two state round trips for any size of
group). Only its status is stored, and it moves by compare-and-set: when members
settle at the same moment, each re-reads the group after its own write, so at least
one of them sees them all settled, and the compare-and-set lets exactly one of those
send ``group-completed`` (or ``group-failed``).

Every operation that settles an upload calls :meth:`Grouping.member_settled`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .. import signals
from ..errors import ObitoXError, ServiceUnavailable
from ..state import STATUSES, UploadRecord
from ..state.capabilities import (
    GROUP_STATUSES,
    GROUP_TERMINAL,
    OPEN_GROUP_STATUSES,
    GroupClosed,
    GroupNotFound,
    GroupRecord,
    Groups,
    InvalidCursor,
    supports,
)
from .base import DomainBase
from .common import OPEN, new_upload_ids, not_found
from .render import render_group, render_upload
from .results import GroupDetail, GroupPage, GroupView

logger = logging.getLogger("flask_obitox")

#: Every status an upload may be deleted from (a deleted one stays deleted).
DELETABLE = tuple(sorted(STATUSES - {"deleted"}))
#: What a finished group may still become: ``deleted``.
UNDELETED_GROUP = tuple(sorted(GROUP_STATUSES - {"deleted"}))


def group_not_found(group_id: str) -> ObitoXError:
    return ObitoXError(
        "GROUP_NOT_FOUND",
        f"No group {group_id!r} exists for this caller.",
        details={"groupId": group_id},
    )


def group_closed(group_id: str, status: str, sealed: bool) -> ObitoXError:
    why = "sealed" if sealed and status in OPEN_GROUP_STATUSES else status
    return ObitoXError(
        "GROUP_CLOSED",
        f"The group is {why}: it takes no more uploads.",
        details={"groupId": group_id, "status": status, "sealed": sealed},
    )


def invalid_cursor() -> ObitoXError:
    return ObitoXError(
        "INVALID_INPUT",
        "cursor is not a nextCursor this listing handed out (for this caller and filters).",
        details={"field": "cursor"},
    )


class Grouping(DomainBase):
    """``/groups`` and what every settling operation does for a member's group."""

    @property
    def groups(self) -> Groups:
        """The state's :class:`~flask_obitox.state.Groups` capability (both built-in
        backends have it); a backend without it has no groups to find."""
        state = self.state
        if not supports(state, Groups):
            raise ObitoXError(
                "GROUP_NOT_FOUND", "This app's state backend keeps no groups.", details={}
            )
        return state

    def owned_group(self, owner: str, group_id: str) -> GroupRecord:
        """The caller's group; another owner's is 404 exactly like a missing one."""
        group = self.groups.get_group(group_id)
        if group is None or not secrets.compare_digest(group.owner.encode(), owner.encode()):
            raise group_not_found(group_id)
        return group

    def joinable_group(self, owner: str, group_id: str) -> GroupRecord:
        """The caller's group, if it still takes members (409 ``GROUP_CLOSED`` if not)."""
        group = self.owned_group(owner, group_id)
        if group.sealed or group.status not in OPEN_GROUP_STATUSES:
            raise group_closed(group_id, group.status, group.sealed)
        return group

    @contextmanager
    def joining(self, group_id: str | None) -> Iterator[None]:
        """Turn the state's refusal to add members (the group closed or expired since
        :meth:`joinable_group` read it) into the API's errors."""
        try:
            yield
        except GroupNotFound:
            raise group_not_found(group_id or "") from None
        except GroupClosed:
            group = self.groups.get_group(group_id or "")
            status = group.status if group is not None else "cancelled"
            sealed = True if group is None else group.sealed
            raise group_closed(group_id or "", status, sealed) from None

    # -- create, seal, read -----------------------------------------------------------

    def new_group(self, owner: str, spec: Mapping[str, Any]) -> GroupRecord:
        """Store a new, empty ``pending`` group (no signal: the caller sends it)."""
        now = time.time()
        group = GroupRecord(
            group_id=new_upload_ids(1)[0],
            owner=owner,
            name=spec["name"],
            status="pending",
            created_at=now,
            updated_at=now,
            expires_at=now + self.settings.upload_ttl,
            description=spec.get("description"),
            metadata={k.lower(): v.strip() for k, v in spec.get("metadata", {}).items()},
        )
        self.groups.create_group(group, self.record_ttl)
        return group

    def create_group(self, owner: str, spec: Mapping[str, Any]) -> GroupView:
        """``POST /groups``: a new group, ``pending`` and not sealed."""
        group = self.new_group(owner, spec)
        view = render_group(group, [])
        self.send(signals.group_created, group=group, view=view)
        return view

    def seal_group(self, owner: str, group_id: str) -> GroupView:
        """``POST /groups/<id>/seal``: no more members; idempotent. A group whose members
        are all settled settles now."""
        group = self.owned_group(owner, group_id)
        if not group.sealed and self.groups.seal(group_id) is None:
            raise group_not_found(group_id)
        view = self.settle_group(group_id)
        if view is None:
            raise group_not_found(group_id)
        return view

    def get_group(self, owner: str, group_id: str) -> GroupDetail:
        """``GET /groups/<id>``: the group and its uploads in join order, in two state
        round trips. A group whose members all settled but whose own settlement did not
        land (the process died in between) is settled here."""
        found = self.groups.get_group_uploads(group_id)
        if found is None or not secrets.compare_digest(found[0].owner.encode(), owner.encode()):
            raise group_not_found(group_id)
        group, members = found
        _group, view = self._apply(group, members, progress=False)
        return {**view, "uploads": [render_upload(member) for member in members]}

    def list_groups(
        self, owner: str, *, status: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> GroupPage:
        """``GET /groups``: the caller's groups, newest first."""
        try:
            page = self.groups.list_groups(owner, status=status, limit=limit, cursor=cursor)
        except InvalidCursor:
            raise invalid_cursor() from None
        views: list[GroupView] = []
        for group in page.items:
            found = self.groups.get_group_uploads(group.group_id)
            views.append(render_group(*found) if found is not None else render_group(group, []))
        return {"groups": views, "nextCursor": page.next_cursor}

    # -- settling ---------------------------------------------------------------------

    def member_settled(self, record: UploadRecord) -> None:
        """``record`` just settled (or started): re-evaluate its group. The member's own
        answer stands whatever happens here: if the state fails now, the group is
        settled by the next member that settles or the next read of the group."""
        if not record.group_id or not supports(self.state, Groups):
            return
        try:
            self.settle_group(record.group_id, progress=True)
        except ServiceUnavailable as error:
            logger.warning("group %s not re-evaluated: %s", record.group_id, error.detail)

    def settle_group(self, group_id: str, *, progress: bool = False) -> GroupView | None:
        """Move the group's stored status to what its members say; with ``progress``,
        tell the host its numbers changed (``group-progress``). ``None`` when the group
        is gone."""
        found = self.groups.get_group_uploads(group_id)
        if found is None:
            return None
        group, members = found
        _group, view = self._apply(group, members, progress=progress)
        return view

    def _apply(
        self, group: GroupRecord, members: Sequence[UploadRecord], *, progress: bool
    ) -> tuple[GroupRecord, GroupView]:
        view = render_group(group, members)
        target = view["status"]
        settled: GroupRecord | None = None
        if target != group.status and group.status in OPEN_GROUP_STATUSES:
            expect = OPEN_GROUP_STATUSES if target in GROUP_TERMINAL else (group.status,)
            settled = self.groups.update_group_status(group.group_id, expect, target)
            current = settled or self.groups.get_group(group.group_id)
            if current is not None:
                group = current
                view = render_group(group, members)
        if progress:
            self.send(signals.group_progress, group=group, view=view)
        if settled is not None and target == "completed":
            self.send(signals.group_completed, group=group, view=view)
        elif settled is not None and target == "failed":
            self.send(signals.group_failed, group=group, view=view)
        return group, view

    # -- cancel, delete ---------------------------------------------------------------

    def cancel_group(self, owner: str, group_id: str) -> GroupView:
        """``POST /groups/<id>/cancel``: the group becomes ``cancelled`` (exactly one
        caller wins and sends ``group-cancelled``), then every member not yet finished
        is aborted and its storage freed. Idempotent: cancelling again finishes what a
        failed storage call left open. A completed, failed or deleted group is 409."""
        group = self.owned_group(owner, group_id)
        cancelled: GroupRecord | None = None
        if group.status in OPEN_GROUP_STATUSES:
            cancelled = self.groups.update_group_status(group_id, OPEN_GROUP_STATUSES, "cancelled")
            if cancelled is None:  # settled meanwhile: answer by its new status
                return self.cancel_group(owner, group_id)
            group = cancelled
        elif group.status != "cancelled":
            raise group_closed(group_id, group.status, group.sealed)
        members = self._members(group_id)
        members = [self.abort_member(m) if m.status in OPEN else m for m in members]
        view = render_group(group, members)
        if cancelled is not None:
            self.send(signals.group_cancelled, group=group, view=view)
        return view

    def delete_group(self, owner: str, group_id: str) -> GroupView:
        """``DELETE /groups/<id>``: cancel an unfinished group, then delete every
        member (its object, its derivatives) and mark members and group ``deleted``.
        Idempotent: deleting again finishes what a failed storage call left."""
        group = self.owned_group(owner, group_id)
        if group.status in OPEN_GROUP_STATUSES:
            self.cancel_group(owner, group_id)
        if group.status != "deleted":
            group = self.groups.update_group_status(
                group_id, UNDELETED_GROUP, "deleted"
            ) or self.owned_group(owner, group_id)
        members = [self.discard(m) for m in self._members(group_id)]
        return render_group(group, members)

    def _members(self, group_id: str) -> list[UploadRecord]:
        found = self.groups.get_group_uploads(group_id)
        if found is None:
            raise group_not_found(group_id)
        return found[1]

    def abort_member(self, record: UploadRecord) -> UploadRecord:
        """Abort an open upload (one caller wins and sends ``upload-aborted``) and free
        what storage holds of it; answers the record as it then stands."""
        updated = self.state.update(record.upload_id, OPEN, current=record, status="aborted")
        if updated is None:
            return self.state.get(record.upload_id) or record
        self.send(signals.upload_aborted, upload=updated)
        self.release_storage(updated)
        return updated

    def discard(self, record: UploadRecord) -> UploadRecord:
        """Mark ``record`` ``deleted`` (one caller wins and sends ``upload-deleted``),
        then free its storage: abort an open multipart upload, delete its object (when
        it was completed, or its key is the upload's own) and every derived object.
        Storage is freed again on every call, so a repeat finishes a failed delete."""
        if record.status != "deleted":
            updated = self.state.update(
                record.upload_id, DELETABLE, current=record, status="deleted"
            )
            if updated is None:
                current = self.state.get(record.upload_id)
                if current is None:
                    raise not_found(record.upload_id)
                return self.discard(current)
            self.send(signals.upload_deleted, upload=updated)
            record = updated
        self.release_storage(record, completed=(record.result or {}).get("status") == "completed")
        return record

    def release_storage(self, record: UploadRecord, *, completed: bool = False) -> None:
        """Free what storage holds of ``record``: its open multipart upload, and its
        object when ``completed`` or when its key is the default
        ``<prefix><uploadId>/<filename>``, unique to the upload (a host ``key_builder``
        may reuse keys, and a later upload's object must never be deleted); and every
        derived object."""
        storage = self.storage_for(record.owner, record.bucket)
        if record.kind == "multipart" and record.s3_upload_id is not None:
            storage.abort_multipart(record.key, record.s3_upload_id)
        if completed or (record.kind == "single" and self.has_default_key(record)):
            storage.delete(record.key)
        for key in record.derived or ():
            storage.delete(key)
