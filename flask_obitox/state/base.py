"""The upload record and the protocol every state backend implements.

A backend stores one :class:`UploadRecord` per upload id, with a time to live, plus an
*expiry index* (upload id -> ``expires_at``) that cleanup jobs walk to find uploads that
outlived their window. The one operation that needs care is :meth:`StateBackend.update`:
an atomic compare-and-set on the record's status, so that of N concurrent "complete this
upload" requests exactly one wins and the others see the stored result.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import orjson

#: Every status an upload can be in.
STATUSES: frozenset[str] = frozenset(
    {"pending", "uploading", "completed", "aborted", "rejected", "expired", "deleted"}
)
#: Statuses an upload never leaves (except that a settled upload may become ``deleted``).
TERMINAL: frozenset[str] = frozenset({"completed", "aborted", "rejected", "expired", "deleted"})
#: Kinds of upload.
KINDS: frozenset[str] = frozenset({"single", "multipart"})


@dataclass
class UploadRecord:
    """Everything the server remembers about one upload between its requests.

    Not ``slots=True``: orjson writes a dataclass from its ``__dict__`` three times
    faster than from slots, and :meth:`to_json` runs once per file of a batch.
    """

    upload_id: str
    owner: str
    kind: str  # "single" | "multipart"
    bucket: str
    key: str
    filename: str
    content_type: str
    size: int
    status: str  # one of STATUSES
    created_at: float  # unix seconds
    updated_at: float
    expires_at: float  # created_at + upload ttl: after this the upload is expired
    metadata: dict[str, str] = field(default_factory=dict)
    checksum_sha256: str | None = None
    part_size: int | None = None
    total_parts: int | None = None
    s3_upload_id: str | None = None
    storage: str | None = None  # name of the storage settings, None = default
    result: dict[str, Any] | None = None  # completion answer / rejection reason
    validation: dict[str, Any] | None = None  # the client's validation rules, re-checked later
    network_type: str | None = None  # the client's networkType, for part URL expiry
    group_id: str | None = None  # the group it joined when it was created
    profile: str | None = None  # the upload profile it was created under
    #: The client decides the size (and, multipart, its own parts) and the server checks
    #: it at completion: Uppy's POST and multipart uploads. Records of releases before
    #: this field marked it with ``part_size == 0``; see :attr:`deferred`.
    size_deferred: bool = False
    #: Each processor's run: ``name -> {status, attempts, result?, error?, updatedAt,
    #: run}`` (see :mod:`flask_obitox.domain.processing`); ``None``: none planned.
    processing: dict[str, dict[str, Any]] | None = None
    #: Keys of the objects processors derived from this upload (deleted with it).
    derived: list[str] | None = None
    #: A random token written with every change: no two callers' compare-and-sets write
    #: the same bytes, so a retried one that finds its own write knows it won.
    revision: str | None = None
    #: The owner's own report of how many bytes it sent (display only; never goes down).
    uploaded_bytes: int = 0
    #: The owner's reports per part number (as a string): ``uploading``, ``uploaded`` or
    #: ``failed``. Storage's ListParts wins over them wherever it knows a part.
    part_reports: dict[str, str] | None = None

    @property
    def deferred(self) -> bool:
        """Whether the client, not the server, lays out this upload's size and parts."""
        return self.size_deferred or self.part_size == 0

    def to_dict(self) -> dict[str, Any]:
        """A shallow dict of every field (``metadata``/``result`` are not copied)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def to_json(self) -> bytes:
        """Compact JSON that :meth:`from_json` turns back into an equal record.

        orjson writes the dataclass directly, ~5x faster than ``json.dumps`` of a dict:
        this runs once per file on the batch hot path.
        """
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: str | bytes) -> UploadRecord:
        """Rebuild a record from :meth:`to_json` output.

        Keys this version does not know are ignored, so records written by a newer
        release (during a rolling deploy) can still be read.
        """
        raw = orjson.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("an upload record must be a JSON object")
        if raw.keys() <= _FIELD_SET:
            return cls(**raw)
        return cls(**{k: v for k, v in raw.items() if k in _FIELD_SET})


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(UploadRecord))
_FIELD_SET: frozenset[str] = frozenset(_FIELD_NAMES)
#: Fields ``update`` may not change.
_IMMUTABLE: frozenset[str] = frozenset({"upload_id", "updated_at", "revision"})


def apply_changes(record: UploadRecord, changes: dict[str, Any], now: float) -> UploadRecord:
    """A copy of ``record`` with ``changes`` applied and ``updated_at`` set to ``now``.

    Raises :class:`TypeError` for a name that is not a field (or may not change) and
    :class:`ValueError` for an unknown status.
    """
    check_changes(changes)
    new = UploadRecord(**{name: getattr(record, name) for name in _FIELD_NAMES})
    for name, value in changes.items():
        setattr(new, name, value)
    new.updated_at = now
    new.revision = secrets.token_hex(8)
    return new


def check_changes(changes: dict[str, Any]) -> None:
    """Validate ``update(**changes)`` before touching the store."""
    bad = [name for name in changes if name not in _FIELD_SET or name in _IMMUTABLE]
    if bad:
        raise TypeError(f"update() cannot change {', '.join(sorted(bad))}")
    status = changes.get("status")
    if "status" in changes and status not in STATUSES:
        raise ValueError(f"unknown upload status {status!r}")


def expected_statuses(expect_status: Collection[str]) -> Collection[str]:
    """``expect_status`` as a collection: a bare string means that one status (so that
    ``"pending"`` does not also match ``"pend"`` by substring)."""
    if isinstance(expect_status, str):
        return (expect_status,)
    return expect_status


def settles(old_status: str, new_status: str) -> bool:
    """Whether a change from ``old_status`` to ``new_status`` settles an upload: its
    record is then kept only ``OBITOX_SETTLED_TTL`` (if its TTL is not shorter)."""
    return new_status in TERMINAL and new_status != old_status


def leaves_expiry_index(old_status: str, new_status: str) -> bool:
    """Whether the change takes the upload out of the expiry index: cleanup has nothing
    left to do for a settled upload, except an ``expired`` one whose storage it frees
    (and then forgets it)."""
    return settles(old_status, new_status) and new_status != "expired"


def check_ttl(ttl: int) -> None:
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 1:
        raise ValueError(f"ttl must be a positive whole number of seconds, got {ttl!r}")


@runtime_checkable
class StateBackend(Protocol):
    """Where upload records live between requests."""

    def create(self, record: UploadRecord, ttl: int) -> None:
        """Store ``record`` for ``ttl`` seconds (overwriting one with the same id) and add
        it to the expiry index with score ``record.expires_at``."""
        ...

    def create_many(self, records: Sequence[UploadRecord], ttl: int) -> None:
        """:meth:`create` for a whole batch in one round trip. Not all-or-nothing."""
        ...

    def get(self, upload_id: str) -> UploadRecord | None:
        """The record, or ``None`` if it is unknown or its TTL ran out."""
        ...

    def update(
        self,
        upload_id: str,
        expect_status: Collection[str],
        *,
        current: UploadRecord | None = None,
        **changes: Any,
    ) -> UploadRecord | None:
        """Atomic compare-and-set.

        ``current``: the record as the caller just read it, so a backend may compare
        against it instead of reading it again (one round trip less); a stale one only
        costs that read.

        If the record exists and its status is in ``expect_status``, apply ``changes``,
        set ``updated_at`` to now, store it keeping its TTL and return the new record;
        otherwise return ``None``. Of N concurrent callers with the same expectation
        and a status change out of it, exactly one gets a record.
        """
        ...

    def delete(self, upload_id: str) -> None:
        """Forget the record and its expiry index entry. Unknown ids are ignored."""
        ...

    def expired_ids(self, now: float, limit: int = 1000) -> list[str]:
        """Up to ``limit`` ids whose ``expires_at <= now``, oldest first."""
        ...

    def forget_expired(self, upload_ids: Sequence[str]) -> None:
        """Remove ids from the expiry index (records themselves are left alone)."""
        ...

    def ping(self) -> float:
        """Round-trip latency in seconds; raises ``StateUnavailable``."""
        ...
