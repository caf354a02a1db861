"""What a state backend can do beyond its core: one protocol per capability.

:class:`~flask_obitox.state.StateBackend` stays small (create, get, update, delete, the
expiry index). A backend that can do more says so by having the methods of a capability
below, and the domain asks with ``isinstance(state, OwnerIndex)`` (every protocol is
``runtime_checkable``), the way ``limits`` adds ``MovingWindowSupport`` to a storage and
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
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import orjson

from .base import UploadRecord, expected_statuses

__all__ = [
    "GROUP_STATUSES",
    "GROUP_TERMINAL",
    "OPEN_GROUP_STATUSES",
    "BulkRead",
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
]

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
