"""The upload record and the protocol every state backend implements.

A backend stores one :class:`UploadRecord` per upload id, with a time to live, plus an
*expiry index* (upload id -> ``expires_at``) that cleanup jobs walk to find uploads that
outlived their window. The one operation that needs care is :meth:`StateBackend.update`:
an atomic compare-and-set on the record's status, so that of N concurrent "complete this
upload" requests exactly one wins and the others see the stored result.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, fields
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, Protocol, runtime_checkable

#: Every status an upload can be in.
STATUSES: frozenset[str] = frozenset(
    {"pending", "uploading", "completed", "aborted", "rejected", "expired"}
)
#: Statuses an upload never leaves.
TERMINAL: frozenset[str] = frozenset({"completed", "aborted", "rejected", "expired"})
#: Kinds of upload.
KINDS: frozenset[str] = frozenset({"single", "multipart"})


@dataclass(slots=True)
class UploadRecord:
    """Everything the server remembers about one upload between its requests."""

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

    def to_dict(self) -> dict[str, Any]:
        """A shallow dict of every field (``metadata``/``result`` are not copied)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def to_json(self) -> str:
        """Compact JSON (ASCII only) that :meth:`from_json` turns back into an equal record.

        The output is exactly ``json.dumps(self.to_dict(), separators=(",", ":"))``; the
        common case (every field of its declared type) is written by hand because this
        runs once per file on the batch hot path and the generic encoder is ~3x slower.
        """
        try:
            return _fast_json(self)
        except (TypeError, ValueError):
            # A field of an unexpected type (say an int in created_at): the generic
            # encoder writes the same thing for it, or raises for what JSON cannot hold.
            return _ENCODER.encode({name: getattr(self, name) for name in _FIELD_NAMES})

    @classmethod
    def from_json(cls, data: str | bytes) -> UploadRecord:
        """Rebuild a record from :meth:`to_json` output.

        Keys this version does not know are ignored, so records written by a newer
        release (during a rolling deploy) can still be read.
        """
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("an upload record must be a JSON object")
        if raw.keys() <= _FIELD_SET:
            return cls(**raw)
        return cls(**{k: v for k, v in raw.items() if k in _FIELD_SET})


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(UploadRecord))
_FIELD_SET: frozenset[str] = frozenset(_FIELD_NAMES)
#: Fields ``update`` may not change.
_IMMUTABLE: frozenset[str] = frozenset({"upload_id", "updated_at"})
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_str = encode_basestring_ascii  # C function: raises TypeError for a non-str

if c_make_encoder is not None:  # CPython: one reusable C encoder (no per-call setup)
    _c_encoder = c_make_encoder(
        None, _ENCODER.default, encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def _encode(value: object) -> str:
        return "".join(_c_encoder(value, 0))

else:  # pragma: no cover - other interpreters

    def _encode(value: object) -> str:
        return _ENCODER.encode(value)


#: float -> repr. A batch shares its timestamps and repr of a float is the slowest part
#: of encoding a record, so the last few are remembered (bounded, thread-safe enough:
#: a race only recomputes).
_FLOAT_REPRS: dict[float, str] = {}


def json_number(value: object) -> str:
    """``json.dumps`` of a plain int or finite float (TypeError / ValueError otherwise)."""
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float:
        text = _FLOAT_REPRS.get(value)
        if text is not None:
            return text
        if value - value != 0.0:  # nan or inf
            raise ValueError("Out of range float values are not JSON compliant")
        text = float.__repr__(value)
        if value:  # never cache zero: 0.0 == -0.0 but their reprs differ
            if len(_FLOAT_REPRS) >= 64:
                _FLOAT_REPRS.clear()
            _FLOAT_REPRS[value] = text
        return text
    raise TypeError("not a plain number")


def _fast_json(r: UploadRecord) -> str:
    s = _str
    return (
        f'{{"upload_id":{s(r.upload_id)},"owner":{s(r.owner)},"kind":{s(r.kind)},'
        f'"bucket":{s(r.bucket)},"key":{s(r.key)},"filename":{s(r.filename)},'
        f'"content_type":{s(r.content_type)},"size":{json_number(r.size)},"status":{s(r.status)},'
        f'"created_at":{json_number(r.created_at)},"updated_at":{json_number(r.updated_at)},'
        f'"expires_at":{json_number(r.expires_at)},'
        f'"metadata":{"{}" if r.metadata == {} else _encode(r.metadata)},'
        f'"checksum_sha256":{"null" if r.checksum_sha256 is None else s(r.checksum_sha256)},'
        f'"part_size":{"null" if r.part_size is None else json_number(r.part_size)},'
        f'"total_parts":{"null" if r.total_parts is None else json_number(r.total_parts)},'
        f'"s3_upload_id":{"null" if r.s3_upload_id is None else s(r.s3_upload_id)},'
        f'"storage":{"null" if r.storage is None else s(r.storage)},'
        f'"result":{"null" if r.result is None else _encode(r.result)},'
        f'"validation":{"null" if r.validation is None else _encode(r.validation)}}}'
    )


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
        self, upload_id: str, expect_status: Collection[str], **changes: Any
    ) -> UploadRecord | None:
        """Atomic compare-and-set.

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
