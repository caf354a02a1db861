"""An in-process state backend: for tests, development and single-process deployments.

Records and groups are kept as their JSON text, so a caller mutating a returned record
never changes the stored one (the same semantics as Redis). TTLs run on the monotonic
clock and are checked on every read; a heap of deadlines lets writes drop expired
records and groups, with their index entries, so memory does not grow with uploads
nobody reads again.

It has every capability of :mod:`flask_obitox.state.capabilities`. Listings filter
the owner's live records in Python (no per-filter index is needed in one process), and
events wake waiting threads through a :class:`threading.Condition` on the backend's one
lock.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from .base import (
    KINDS,
    STATUSES,
    UploadRecord,
    apply_changes,
    check_changes,
    check_ttl,
    expected_statuses,
    leaves_expiry_index,
    settles,
)
from .capabilities import (
    MAX_WAIT,
    OPEN_GROUP_STATUSES,
    GroupChanges,
    GroupClosed,
    GroupNotFound,
    GroupRecord,
    InvalidCursor,
    Page,
    ProgressByChanges,
    apply_group_changes,
    check_group_status,
    check_limit,
)
from .cursor import (
    decode_cursor,
    encode_cursor,
    format_event_id,
    index_member,
    next_event_id,
    parse_event_id,
)

T = TypeVar("T")


_UPLOAD = "u"
_GROUP = "g"


def _encoded(event: Mapping[str, Any] | bytes) -> bytes:
    return event if isinstance(event, bytes) else orjson.dumps(event)


class MemoryStateBackend(GroupChanges, ProgressByChanges):
    """Dicts behind one lock. Nothing is shared between processes."""

    #: How long a settled upload's record is kept (seconds): ``OBITOX_SETTLED_TTL``.
    settled_ttl: int = 86400

    def __init__(self, *, events_retention: int = 1000) -> None:
        self._lock = threading.Lock()
        self._events_added = threading.Condition(self._lock)
        # upload_id -> (monotonic deadline, record JSON)
        self._records: dict[str, tuple[float, bytes]] = {}
        # (monotonic deadline, _UPLOAD | _GROUP, id); may hold stale entries, checked on pop
        self._deadlines: list[tuple[float, str, str]] = []
        # upload_id -> expires_at (the expiry index)
        self._expiry: dict[str, float] = {}
        # owner -> {upload_id: index member}
        self._owner_uploads: dict[str, dict[str, str]] = {}
        # (bucket, key) -> upload_id
        self._keys: dict[tuple[str, str], str] = {}
        # group_id -> (monotonic deadline, group JSON)
        self._groups: dict[str, tuple[float, bytes]] = {}
        # group_id -> member ids in join order (a dict keeps order and finds in O(1))
        self._members: dict[str, dict[str, None]] = {}
        # owner -> {group_id: index member}
        self._owner_groups: dict[str, dict[str, str]] = {}
        # owner -> (event id, event JSON), oldest first; owner -> newest id ever issued
        self._events: dict[str, deque[tuple[tuple[int, int], bytes]]] = {}
        self._last_event: dict[str, tuple[int, int]] = {}
        self.events_retention = events_retention
        # wake_event_waiters calls so far, and how many wait_for_owners has seen
        self._wakes = 0
        self._wakes_seen = 0

    def __len__(self) -> int:
        """How many live records are held (records past their TTL do not count)."""
        with self._lock:
            self._purge(time.monotonic())
            return len(self._records)

    def __repr__(self) -> str:
        return f"<MemoryStateBackend records={len(self._records)}>"

    # -- internals (call with the lock held) ------------------------------------------

    def _purge(self, now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, what, item_id = heapq.heappop(heap)
            table = self._records if what == _UPLOAD else self._groups
            entry = table.get(item_id)
            if entry is not None and entry[0] == deadline:
                if what == _UPLOAD:
                    self._forget_upload(item_id)
                else:
                    self._forget_group(item_id)

    def _forget_upload(self, upload_id: str) -> None:
        entry = self._records.pop(upload_id, None)
        # The record is gone for good: its index entries can lead nowhere.
        self._expiry.pop(upload_id, None)
        if entry is None:
            return
        record = UploadRecord.from_json(entry[1])
        self._owner_uploads.get(record.owner, {}).pop(upload_id, None)
        if self._keys.get((record.bucket, record.key)) == upload_id:
            del self._keys[(record.bucket, record.key)]

    def _forget_group(self, group_id: str) -> None:
        entry = self._groups.pop(group_id, None)
        self._members.pop(group_id, None)
        if entry is not None:
            owner = GroupRecord.from_json(entry[1]).owner
            self._owner_groups.get(owner, {}).pop(group_id, None)

    def _live(self, upload_id: str, now: float) -> tuple[float, bytes] | None:
        entry = self._records.get(upload_id)
        if entry is None:
            return None
        if entry[0] <= now:
            self._forget_upload(upload_id)
            return None
        return entry

    def _live_group(self, group_id: str, now: float) -> tuple[float, bytes] | None:
        entry = self._groups.get(group_id)
        if entry is None:
            return None
        if entry[0] <= now:
            self._forget_group(group_id)
            return None
        return entry

    def _put(self, record: UploadRecord, deadline: float) -> None:
        if record.upload_id in self._records:
            self._forget_upload(record.upload_id)  # an overwrite may change owner or key
        self._records[record.upload_id] = (deadline, record.to_json())
        heapq.heappush(self._deadlines, (deadline, _UPLOAD, record.upload_id))
        self._expiry[record.upload_id] = record.expires_at
        member = index_member(record.created_at, record.upload_id)
        self._owner_uploads.setdefault(record.owner, {})[record.upload_id] = member
        self._keys[(record.bucket, record.key)] = record.upload_id

    def _open_group(self, group_id: str, now: float) -> dict[str, None]:
        entry = self._live_group(group_id, now)
        if entry is None:
            raise GroupNotFound(group_id)
        group = GroupRecord.from_json(entry[1])
        if group.sealed or group.status not in OPEN_GROUP_STATUSES:
            raise GroupClosed(group_id)
        return self._members.setdefault(group_id, {})

    # -- StateBackend ------------------------------------------------------------------

    def create(self, record: UploadRecord, ttl: int) -> None:
        self.create_many((record,), ttl)

    def create_many(self, records: Sequence[UploadRecord], ttl: int) -> None:
        check_ttl(ttl)
        with self._lock:
            now = time.monotonic()
            self._purge(now)
            # Every group must take its members before any record is written.
            joining = {r.group_id: self._open_group(r.group_id, now) for r in records if r.group_id}
            deadline = now + ttl
            for record in records:
                self._put(record, deadline)
                if record.group_id:
                    joining[record.group_id].setdefault(record.upload_id)

    def get(self, upload_id: str) -> UploadRecord | None:
        with self._lock:
            entry = self._live(upload_id, time.monotonic())
        return None if entry is None else UploadRecord.from_json(entry[1])

    def update(
        self,
        upload_id: str,
        expect_status: Collection[str],
        *,
        current: UploadRecord | None = None,  # nothing to save: reads cost nothing here
        **changes: Any,
    ) -> UploadRecord | None:
        check_changes(changes)
        expect_status = expected_statuses(expect_status)
        with self._lock:
            entry = self._live(upload_id, time.monotonic())
            if entry is None:
                return None
            record = UploadRecord.from_json(entry[1])
            if record.status not in expect_status:
                return None
            new = apply_changes(record, changes, time.time())
            # Keep the deadline: the TTL is not extended by an update. A settled upload
            # is kept at most settled_ttl.
            deadline = entry[0]
            if settles(record.status, new.status):
                deadline = min(deadline, time.monotonic() + self.settled_ttl)
                heapq.heappush(self._deadlines, (deadline, _UPLOAD, upload_id))
            self._records[upload_id] = (deadline, new.to_json())
            if leaves_expiry_index(record.status, new.status):
                self._expiry.pop(upload_id, None)
            elif "expires_at" in changes:
                self._expiry[upload_id] = new.expires_at
        return new

    def update_with(
        self,
        upload_id: str,
        expect_status: Collection[str],
        change: Callable[[UploadRecord], dict[str, Any] | None],
        *,
        current: UploadRecord | None = None,  # a read is free here
    ) -> UploadRecord | None:
        expect_status = expected_statuses(expect_status)
        with self._lock:
            entry = self._live(upload_id, time.monotonic())
            if entry is None:
                return None
            record = UploadRecord.from_json(entry[1])
            if record.status not in expect_status:
                return None
            changes = change(record)
            if changes is None:
                return None
            check_changes(changes)
            new = apply_changes(record, changes, time.time())
            self._records[upload_id] = (entry[0], new.to_json())
            if "expires_at" in changes:
                self._expiry[upload_id] = new.expires_at
        return new

    def delete(self, upload_id: str) -> None:
        with self._lock:
            self._forget_upload(upload_id)

    def expired_ids(self, now: float, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        with self._lock:
            due = [(at, uid) for uid, at in self._expiry.items() if at <= now]
        return [uid for _, uid in heapq.nsmallest(limit, due)]

    def forget_expired(self, upload_ids: Sequence[str]) -> None:
        with self._lock:
            for upload_id in upload_ids:
                self._expiry.pop(upload_id, None)

    def ping(self) -> float:
        start = time.perf_counter()
        with self._lock:
            pass
        return time.perf_counter() - start

    # -- BulkRead, KeyIndex ------------------------------------------------------------

    def get_many(self, upload_ids: Sequence[str]) -> list[UploadRecord | None]:
        with self._lock:
            now = time.monotonic()
            entries = [self._live(upload_id, now) for upload_id in upload_ids]
        return [None if e is None else UploadRecord.from_json(e[1]) for e in entries]

    def upload_id_for_key(self, bucket: str, key: str) -> str | None:
        with self._lock:
            upload_id = self._keys.get((bucket, key))
            if upload_id is None or self._live(upload_id, time.monotonic()) is None:
                return None
            return upload_id

    # -- OwnerIndex --------------------------------------------------------------------

    def list_uploads(
        self,
        owner: str,
        *,
        status: str | None = None,
        kind: str | None = None,
        group_id: str | None = None,
        profile: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[UploadRecord]:
        check_limit(limit)
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown upload status {status!r}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown upload kind {kind!r}")
        query = ("uploads", owner, status, kind, group_id, profile)
        after = decode_cursor(cursor, query) if cursor else None

        def matches(record: UploadRecord) -> bool:
            return (
                (status is None or record.status == status)
                and (kind is None or record.kind == kind)
                and (group_id is None or record.group_id == group_id)
                and (profile is None or record.profile == profile)
            )

        with self._lock:
            now = time.monotonic()
            self._purge(now)
            index = list(self._owner_uploads.get(owner, {}).items())
            live = {uid: self._records[uid][1] for uid, _ in index if uid in self._records}
        rows = [(m, UploadRecord.from_json(live[uid])) for uid, m in index if uid in live]
        return _page(rows, matches, after, limit, query)

    # -- Groups ------------------------------------------------------------------------

    def create_group(self, group: GroupRecord, ttl: int) -> None:
        check_ttl(ttl)
        check_group_status(group.status)
        with self._lock:
            now = time.monotonic()
            self._purge(now)
            if group.group_id in self._groups:
                self._forget_group(group.group_id)
            deadline = now + ttl
            self._groups[group.group_id] = (deadline, group.to_json())
            self._members[group.group_id] = {}
            heapq.heappush(self._deadlines, (deadline, _GROUP, group.group_id))
            member = index_member(group.created_at, group.group_id)
            self._owner_groups.setdefault(group.owner, {})[group.group_id] = member

    def get_group(self, group_id: str) -> GroupRecord | None:
        with self._lock:
            entry = self._live_group(group_id, time.monotonic())
        return None if entry is None else GroupRecord.from_json(entry[1])

    def group_members(self, group_id: str) -> list[str]:
        with self._lock:
            if self._live_group(group_id, time.monotonic()) is None:
                return []
            return list(self._members.get(group_id, ()))

    def get_group_uploads(self, group_id: str) -> tuple[GroupRecord, list[UploadRecord]] | None:
        with self._lock:
            now = time.monotonic()
            entry = self._live_group(group_id, now)
            if entry is None:
                return None
            found = [self._live(uid, now) for uid in self._members.get(group_id, ())]
        uploads = [UploadRecord.from_json(e[1]) for e in found if e is not None]
        return GroupRecord.from_json(entry[1]), uploads

    def add_members(self, group_id: str, upload_ids: Sequence[str]) -> int:
        with self._lock:
            members = self._open_group(group_id, time.monotonic())
            for upload_id in upload_ids:
                members.setdefault(upload_id)
            return len(members)

    def _change_group(
        self, group_id: str, allowed: Callable[[GroupRecord], bool], **changes: Any
    ) -> GroupRecord | None:
        with self._lock:
            entry = self._live_group(group_id, time.monotonic())
            if entry is None:
                return None
            group = GroupRecord.from_json(entry[1])
            if not allowed(group):
                return None
            if all(getattr(group, name) == value for name, value in changes.items()):
                return group  # sealing a sealed group changes nothing
            apply_group_changes(group, changes)
            self._groups[group_id] = (entry[0], group.to_json())
            return group

    def list_groups(
        self,
        owner: str,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[GroupRecord]:
        check_limit(limit)
        if status is not None:
            check_group_status(status)
        query = ("groups", owner, status)
        after = decode_cursor(cursor, query) if cursor else None
        with self._lock:
            now = time.monotonic()
            self._purge(now)
            index = list(self._owner_groups.get(owner, {}).items())
            live = {gid: self._groups[gid][1] for gid, _ in index if gid in self._groups}
        rows = [(m, GroupRecord.from_json(live[gid])) for gid, m in index if gid in live]
        return _page(rows, lambda g: status is None or g.status == status, after, limit, query)

    # -- EventStream -------------------------------------------------------------------

    def append_event(self, owner: str, event: Mapping[str, Any]) -> str:
        return self.append_events([(owner, event)])[0]

    def _append(self, owner: str, data: bytes) -> str:
        """Append one encoded event (call with the lock held)."""
        position = next_event_id(self._last_event.get(owner))
        self._last_event[owner] = position
        kept = self._events.setdefault(owner, deque())
        kept.append((position, data))
        while len(kept) > max(self.events_retention, 1):
            kept.popleft()
        return format_event_id(position)

    def create_with_events(
        self, records: Sequence[UploadRecord], ttl: int, events: Sequence[tuple[str, bytes]]
    ) -> None:
        self.create_many(records, ttl)
        self.append_events(events)

    def append_events(self, events: Sequence[tuple[str, Mapping[str, Any] | bytes]]) -> list[str]:
        encoded = [(owner, _encoded(event)) for owner, event in events]
        with self._events_added:
            ids = [self._append(owner, data) for owner, data in encoded]
            if ids:
                self._events_added.notify_all()
        return ids

    def wait_for_owners(
        self, positions: Mapping[str, str | None], timeout: float, count: int = 100
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT)
        with self._events_added:
            while True:
                found = {
                    owner: events
                    for owner, after_id in positions.items()
                    if (events := self._after(owner, after_id, count))
                }
                woken = self._wakes != self._wakes_seen
                self._wakes_seen = self._wakes
                remaining = deadline - time.monotonic()
                if found or woken or remaining <= 0:
                    return found
                self._events_added.wait(remaining)

    def wake_event_waiters(self) -> None:
        with self._events_added:
            self._wakes += 1
            self._events_added.notify_all()

    def _after(
        self, owner: str, after_id: str | None, count: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Events after ``after_id`` (call with the lock held)."""
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive whole number, got {count!r}")
        after = parse_event_id(after_id) if after_id else (0, 0)
        last = self._last_event.get(owner)
        if last is not None and after > last:
            raise InvalidCursor(f"event id {after_id} is beyond the newest event")
        found: list[tuple[str, dict[str, Any]]] = []
        for position, data in self._events.get(owner, ()):
            if position > after:
                found.append((format_event_id(position), orjson.loads(data)))
                if len(found) == count:
                    break
        return found

    def read_events(
        self, owner: str, after_id: str | None = None, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return self._after(owner, after_id, count)

    def wait_for_events(
        self, owner: str, after_id: str | None, timeout: float, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + min(max(timeout, 0.0), MAX_WAIT)
        with self._events_added:
            while True:
                found = self._after(owner, after_id, count)
                remaining = deadline - time.monotonic()
                if found or remaining <= 0:
                    return found
                self._events_added.wait(remaining)

    def last_event_id(self, owner: str) -> str | None:
        with self._lock:
            kept = self._events.get(owner)
            return format_event_id(kept[-1][0]) if kept else None


def _page(
    rows: list[tuple[str, T]],
    matches: Callable[[T], bool],
    after: str | None,
    limit: int,
    query: tuple[str | None, ...],
) -> Page[T]:
    """One page of ``rows`` (index member, item), newest member first, after ``after``."""
    rows.sort(key=lambda row: row[0], reverse=True)
    picked = [row for row in rows if (after is None or row[0] < after) and matches(row[1])]
    page = picked[:limit]
    more = len(picked) > limit
    return Page([item for _, item in page], encode_cursor(page[-1][0], query) if more else None)
