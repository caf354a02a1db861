"""What a state backend can do beyond its core: one protocol per capability.

:class:`~flask_obitox.state.StateBackend` stays small (create, get, update, delete, the
expiry index). A backend that can do more says so by having the methods of a capability
below, and the domain asks with ``supports(state, OwnerIndex)`` (every protocol is
``runtime_checkable``; :func:`supports` is ``isinstance`` remembered per class), the way ``limits`` adds ``MovingWindowSupport`` to a storage and
tusd composes stores. Each capability has its own contract test suite
(``tests/test_state_<capability>.py``) that runs against every backend claiming it.

- :class:`BulkRead`: many records in one round trip.
- :class:`OwnerIndex`: an owner's uploads, newest first, filtered, with a cursor.
- :class:`Groups`: groups of uploads, their members in join order, sealing and a
  compare-and-set on the group's status.
- :class:`KeyIndex`: ``(bucket, object key) -> upload id``, for storage events.
- :class:`EventStream`: an owner's events, capped, readable after an id, and waitable.
- :class:`EventFanIn`: many events appended in one round trip, and one blocked read
  over many owners' events (what one reader per process needs to feed every open
  event stream).
- :class:`ProgressReports`: an owner's progress report merged into a record atomically.
- :class:`ByteReports`: the common report (a byte count for an upload under way) checked
  and merged in one step, with no read before it.
- :class:`RecordChanges`: a compare-and-set whose changes are computed from the record
  it compares against (a read-modify-write, for fields several writers share).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Generic, Protocol, TypeGuard, TypeVar, runtime_checkable

import orjson

from .base import UploadRecord, expected_statuses

__all__ = [
    "GROUP_STATUSES",
    "GROUP_TERMINAL",
    "OPEN_GROUP_STATUSES",
    "BulkRead",
    "ByteReports",
    "EventFanIn",
    "EventStream",
    "GroupClosed",
    "GroupNotFound",
    "GroupRecord",
    "Groups",
    "InvalidCursor",
    "KeyIndex",
    "OwnerIndex",
    "Page",
    "ProgressReports",
    "RecordChanges",
    "merge_progress",
    "supports",
]

_Capability = TypeVar("_Capability")
#: ``(backend class, capability) -> whether it has it``, as :func:`supports` found.
_SUPPORTED: dict[tuple[type, type], bool] = {}


def supports(state: object, capability: type[_Capability]) -> TypeGuard[_Capability]:
    """``isinstance(state, capability)``, decided once per backend class: a check
    against a runtime protocol looks up every method of the protocol on each call
    (tens of microseconds on Python 3.11, several per request), while a backend's
    capabilities are its class's methods."""
    key = (type(state), capability)
    known = _SUPPORTED.get(key)
    if known is None:
        known = _SUPPORTED[key] = isinstance(state, capability)
    return known


#: Every status a group can be in.
GROUP_STATUSES: frozenset[str] = frozenset(
    {"pending", "in_progress", "completed", "failed", "cancelled", "deleted"}
)
#: Statuses a group never leaves (except that a finished group may become ``deleted``).
GROUP_TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "deleted"})
#: Statuses in which an unsealed group still takes members.
OPEN_GROUP_STATUSES: frozenset[str] = frozenset({"pending", "in_progress"})

#: The most rows one listing call returns.
MAX_PAGE_SIZE = 100
#: The longest one ``wait_for_events`` call blocks, in seconds.
MAX_WAIT = 60.0

T = TypeVar("T")


class InvalidCursor(ValueError):
    """A listing cursor or event id that this backend did not hand out for this query
    (tampered with, truncated, or issued for another owner or other filters)."""


class GroupNotFound(LookupError):
    """No such group (or its record expired)."""

    def __init__(self, group_id: str) -> None:
        super().__init__(f"no group {group_id!r}")
        self.group_id = group_id


class GroupClosed(Exception):
    """The group takes no more members: it is sealed, or no longer pending/in progress."""

    def __init__(self, group_id: str) -> None:
        super().__init__(f"group {group_id!r} is closed to new members")
        self.group_id = group_id


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing. ``next_cursor`` is ``None`` when nothing follows."""

    items: list[T]
    next_cursor: str | None


@dataclass(slots=True)
class GroupRecord:
    """Everything the server remembers about one group (its members are kept apart)."""

    group_id: str
    owner: str
    name: str
    status: str  # one of GROUP_STATUSES
    created_at: float  # unix seconds
    updated_at: float
    expires_at: float
    description: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    sealed: bool = False
    #: A random token written with every change, as :attr:`UploadRecord.revision`: no
    #: two callers' compare-and-sets write the same bytes (even within one clock tick),
    #: so a retried one that finds its own write knows it won, and no other caller can.
    revision: str | None = None

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: str | bytes) -> GroupRecord:
        """Rebuild a group from :meth:`to_json`; keys this version does not know are
        ignored (records from a newer release stay readable)."""
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a group record must be a JSON object")
        return cls(**{k: v for k, v in raw.items() if k in _GROUP_FIELDS})


_GROUP_FIELDS: frozenset[str] = frozenset(f.name for f in fields(GroupRecord))


def apply_group_changes(group: GroupRecord, changes: dict[str, Any]) -> None:
    """Apply ``changes`` to ``group`` in place, with a new ``updated_at`` and revision."""
    for name, value in changes.items():
        setattr(group, name, value)
    group.updated_at = time.time()
    group.revision = secrets.token_hex(8)


#: The statuses a client may report for a part.
PART_REPORT_STATUSES: frozenset[str] = frozenset({"uploading", "uploaded", "failed"})


def merge_progress(
    record: UploadRecord, uploaded_bytes: int, parts: Mapping[int, str]
) -> dict[str, Any]:
    """The changes a progress report makes to ``record`` (``{}`` when none): the byte
    count only ever grows (a lower report keeps the higher one), a part reported
    ``uploaded`` stays so (a late ``uploading`` report of it is stale), and a
    ``pending`` upload becomes ``uploading`` once bytes are reported."""
    changes: dict[str, Any] = {}
    if uploaded_bytes > record.uploaded_bytes:
        changes["uploaded_bytes"] = uploaded_bytes
    reports = dict(record.part_reports or {})
    for number, status in parts.items():
        if status not in PART_REPORT_STATUSES:
            raise ValueError(f"unknown part status {status!r}")
        name = str(number)
        if reports.get(name) != "uploaded":
            reports[name] = status
    if reports != (record.part_reports or {}):
        changes["part_reports"] = reports
    if record.status == "pending" and max(uploaded_bytes, record.uploaded_bytes) > 0:
        changes["status"] = "uploading"
    return changes


def check_limit(limit: int) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, got {limit!r}")


def check_group_status(status: str) -> None:
    if status not in GROUP_STATUSES:
        raise ValueError(f"unknown group status {status!r}")


class GroupChanges:
    """``seal`` and the group status compare-and-set, for a backend whose
    ``_change_group(group_id, allowed, **changes)`` applies ``changes`` atomically when
    ``allowed(group)`` holds (and returns the new group, else ``None``)."""

    def _change_group(
        self, group_id: str, allowed: Callable[[GroupRecord], bool], **changes: Any
    ) -> GroupRecord | None:
        raise NotImplementedError

    def seal(self, group_id: str) -> GroupRecord | None:
        return self._change_group(group_id, lambda group: True, sealed=True)

    def update_group_status(
        self, group_id: str, expect_status: Collection[str], status: str
    ) -> GroupRecord | None:
        check_group_status(status)
        expected = expected_statuses(expect_status)
        return self._change_group(group_id, lambda group: group.status in expected, status=status)


@runtime_checkable
class BulkRead(Protocol):
    def get_many(self, upload_ids: Sequence[str]) -> list[UploadRecord | None]:
        """The records of ``upload_ids``, in that order, ``None`` for unknown ones; one
        round trip (per node)."""
        ...


@runtime_checkable
class OwnerIndex(Protocol):
    """An owner's uploads, newest first.

    Kept by ``create``/``create_many``/``update``/``delete`` of the core: a status,
    group or profile change moves the upload between filters. Entries expire with the
    records (an entry whose record is gone is dropped when a listing meets it).
    """

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
        """Up to ``limit`` (1..100) of ``owner``'s uploads matching every filter given,
        newest ``created_at`` first (ties by upload id, descending).

        ``cursor`` is a page's ``next_cursor``; it only continues the listing it came
        from (same owner, same filters), anything else raises :class:`InvalidCursor`.
        Following ``next_cursor`` until it is ``None`` visits every matching upload
        once. A page is short only at the end, or when the backend gave up scanning
        past many stale entries in one call (its ``next_cursor`` then goes on).
        Raises :class:`ValueError` for a limit out of range or an unknown status/kind.
        """
        ...


@runtime_checkable
class Groups(Protocol):
    """Groups of uploads (DESIGN §11). A group's members are upload ids in join order.

    An upload created (``create``/``create_many``) with a ``group_id`` joins that
    group in the same round trip; if the group refuses (unknown: :class:`GroupNotFound`,
    closed: :class:`GroupClosed`), the call raises and leaves none of those records.
    """

    def create_group(self, group: GroupRecord, ttl: int) -> None:
        """Store ``group`` for ``ttl`` seconds and index it under its owner."""
        ...

    def get_group(self, group_id: str) -> GroupRecord | None: ...

    def group_members(self, group_id: str) -> list[str]:
        """The member upload ids in join order (``[]`` for an unknown group)."""
        ...

    def get_group_uploads(self, group_id: str) -> tuple[GroupRecord, list[UploadRecord]] | None:
        """The group and its members' records in join order, in two round trips
        (members whose record is gone are left out); ``None`` for an unknown group."""
        ...

    def add_members(self, group_id: str, upload_ids: Sequence[str]) -> int:
        """Append ``upload_ids`` (ids already members keep their place) and return the
        member count. Atomic with :meth:`seal`: raises :class:`GroupNotFound` or
        :class:`GroupClosed` (sealed, or status not pending/in progress)."""
        ...

    def seal(self, group_id: str) -> GroupRecord | None:
        """Take no more members; idempotent. ``None`` for an unknown group."""
        ...

    def update_group_status(
        self, group_id: str, expect_status: Collection[str], status: str
    ) -> GroupRecord | None:
        """Compare-and-set on the group's status, as ``update`` is for uploads: of N
        concurrent callers with the same expectation exactly one gets the record."""
        ...

    def list_groups(
        self,
        owner: str,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[GroupRecord]:
        """``owner``'s groups, newest first; same cursor rules as
        :meth:`OwnerIndex.list_uploads`."""
        ...


@runtime_checkable
class ProgressReports(Protocol):
    """An owner's progress report (DESIGN §12) merged into its record in one atomic step,
    so concurrent reports never lose one another and the byte count never goes down."""

    def report_progress(
        self,
        upload_id: str,
        expect_status: Collection[str],
        uploaded_bytes: int,
        parts: Mapping[int, str],
        *,
        current: UploadRecord | None = None,
    ) -> UploadRecord | None:
        """Merge the report (:func:`merge_progress`) into the record if its status is in
        ``expect_status``, and return the record as it now stands (unchanged, and not
        written, when the report adds nothing); ``None`` when the record is gone or its
        status is not expected. ``current``: as for ``StateBackend.update``."""
        ...


@runtime_checkable
class ByteReports(Protocol):
    """The common progress report, a byte count for an upload under way, checked and
    merged in one step (DESIGN §12): a report then costs one round trip, as a status
    read does, instead of a read and a compare-and-set."""

    def report_bytes(
        self, upload_id: str, owner: str, uploaded_bytes: int, now: float
    ) -> tuple[UploadRecord, bool] | None:
        """If ``upload_id`` is ``owner``'s, ``uploading``, of a size the server laid out
        (not deferred), not expired at ``now`` and no shorter than ``uploaded_bytes``:
        the record as it stands after merging the count (it only grows; ``updated_at``
        ``now`` and a new revision when it did) and whether it changed. ``None`` when
        any of that does not hold, or the backend cannot tell: the caller then takes the
        checked path (:class:`ProgressReports`), which answers the right error."""
        ...


class ProgressByChanges:
    """:meth:`ProgressReports.report_progress` for a backend with
    :class:`RecordChanges`: the report merged by that read-modify-write (so a concurrent
    report is merged again from what is stored, and none is lost)."""

    def report_progress(
        self,
        upload_id: str,
        expect_status: Collection[str],
        uploaded_bytes: int,
        parts: Mapping[int, str],
        *,
        current: UploadRecord | None = None,
    ) -> UploadRecord | None:
        unchanged: list[UploadRecord | None] = [None]

        def change(record: UploadRecord) -> dict[str, Any] | None:
            changes = merge_progress(record, uploaded_bytes, parts)
            unchanged[0] = None if changes else record
            return changes or None

        changes_of: Any = self
        new: UploadRecord | None = changes_of.update_with(
            upload_id, expect_status, change, current=current
        )
        # Nothing written: the report added nothing to the record (as it stands), or the
        # record is gone or not in an expected status (``None``).
        return new if new is not None else unchanged[0]


@runtime_checkable
class KeyIndex(Protocol):
    """Which upload an object key belongs to (for storage events, DESIGN §15)."""

    def upload_id_for_key(self, bucket: str, key: str) -> str | None:
        """The id of the live upload last created for ``bucket``/``key``, or ``None``.
        Written with the record, gone with it (delete or TTL)."""
        ...


@runtime_checkable
class EventStream(Protocol):
    """An owner's events (DESIGN §13), the newest ``events_retention`` kept.

    Ids are strings ``"<milliseconds>-<sequence>"`` (Redis stream ids), strictly
    increasing per owner: an SSE ``Last-Event-ID``. ``after_id`` ``None`` or ``""``
    means "from the oldest event kept"; :meth:`last_event_id` gives the position to
    follow only new events. An id that is not of that form, or lies beyond the newest
    event, raises :class:`InvalidCursor`.
    """

    events_retention: int

    def append_event(self, owner: str, event: Mapping[str, Any]) -> str:
        """Append a JSON-serialisable ``event``; returns its id."""
        ...

    def read_events(
        self, owner: str, after_id: str | None = None, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``count`` events strictly after ``after_id``, oldest first."""
        ...

    def wait_for_events(
        self, owner: str, after_id: str | None, timeout: float, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """:meth:`read_events`, but when there are none, block up to ``timeout``
        seconds (at most 60) for new ones; ``[]`` when none came. Safe from any
        thread; events appended by any process reach it (one process for memory)."""
        ...

    def last_event_id(self, owner: str) -> str | None:
        """The id of ``owner``'s newest event kept, ``None`` when there is none."""
        ...


@runtime_checkable
class EventFanIn(Protocol):
    """Events in bulk, for a process that serves many event streams (DESIGN §13).

    :meth:`wait_for_owners` is meant for one reader per process (it keeps which wake-up
    it has seen); :meth:`wake_event_waiters` makes that reader return early, so it can
    start following an owner it was not following.
    """

    def append_events(self, events: Sequence[tuple[str, Mapping[str, Any] | bytes]]) -> list[str]:
        """Append each ``(owner, event)`` in order, in one round trip (per node);
        returns their ids in the same order. An event given as ``bytes`` is its JSON
        already (a message body encoded once, stored as it is)."""
        ...

    def create_with_events(
        self, records: Sequence[UploadRecord], ttl: int, events: Sequence[tuple[str, bytes]]
    ) -> None:
        """``create_many(records, ttl)``, then ``append_events(events)`` (their
        ``upload.signed``), in one round trip where the backend can. The records are
        written as ``create_many`` writes them; the events at most once, and lost (not
        raised) if their part fails: the records stand. Records joining a group take
        two steps, the events only after ``create_many`` succeeded (a refused join
        deletes the records again, and no event of theirs may have gone out)."""
        ...

    def wait_for_owners(
        self, positions: Mapping[str, str | None], timeout: float, count: int = 100
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """For every owner of ``positions`` with events after its position (``None``:
        from the oldest kept), up to ``count`` of them, oldest first. When there are
        none, block up to ``timeout`` seconds (at most 60) for any; returns early, maybe
        with nothing, after :meth:`wake_event_waiters`. Raises :class:`InvalidCursor`
        for a malformed position."""
        ...

    def wake_event_waiters(self) -> None:
        """Make this backend's (this process's) :meth:`wait_for_owners` return now, or
        at once the next time it is called."""
        ...


@runtime_checkable
class RecordChanges(Protocol):
    """A read-modify-write of one upload record. ``update`` applies fixed changes, so
    two writers of the same field (two processors of one upload each recording their
    outcome in ``processing``) would lose one write; here the changes are computed
    again from every record the compare is made against."""

    def update_with(
        self,
        upload_id: str,
        expect_status: Collection[str],
        change: Callable[[UploadRecord], dict[str, Any] | None],
        *,
        current: UploadRecord | None = None,
    ) -> UploadRecord | None:
        """``current``: as for ``StateBackend.update``. If the record exists and its status is in ``expect_status``, store the
        record with ``change(record)`` applied (``updated_at`` set, TTL kept) and return
        it. ``change`` may run several times (once per lost race) and must have no side
        effect; it returns ``None`` to leave the record alone. ``None`` when nothing was
        written."""
        ...
