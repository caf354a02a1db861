"""An in-process state backend: for tests, development and single-process deployments.

Records are kept as their JSON text, so a caller mutating a returned record never changes
the stored one (the same semantics as Redis). TTLs run on the monotonic clock and are
checked on every read; a heap of deadlines lets writes drop expired records so memory
does not grow with uploads nobody reads again.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Collection, Sequence
from typing import Any

from .base import (
    UploadRecord,
    apply_changes,
    check_changes,
    check_ttl,
    expected_statuses,
)


class MemoryStateBackend:
    """A dict and a lock. Nothing is shared between processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # upload_id -> (monotonic deadline, record JSON)
        self._records: dict[str, tuple[float, bytes]] = {}
        # (monotonic deadline, upload_id); may hold stale entries, checked on pop
        self._deadlines: list[tuple[float, str]] = []
        # upload_id -> expires_at (the expiry index)
        self._expiry: dict[str, float] = {}

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
            deadline, upload_id = heapq.heappop(heap)
            entry = self._records.get(upload_id)
            if entry is not None and entry[0] == deadline:
                del self._records[upload_id]
                # The record is gone for good: its index entry can lead nowhere.
                self._expiry.pop(upload_id, None)

    def _live(self, upload_id: str, now: float) -> tuple[float, bytes] | None:
        entry = self._records.get(upload_id)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._records[upload_id]
            return None
        return entry

    def _put(self, record: UploadRecord, deadline: float) -> None:
        self._records[record.upload_id] = (deadline, record.to_json())
        heapq.heappush(self._deadlines, (deadline, record.upload_id))
        self._expiry[record.upload_id] = record.expires_at

    # -- StateBackend ------------------------------------------------------------------

    def create(self, record: UploadRecord, ttl: int) -> None:
        self.create_many((record,), ttl)

    def create_many(self, records: Sequence[UploadRecord], ttl: int) -> None:
        check_ttl(ttl)
        with self._lock:
            now = time.monotonic()
            self._purge(now)
            deadline = now + ttl
            for record in records:
                self._put(record, deadline)

    def get(self, upload_id: str) -> UploadRecord | None:
        with self._lock:
            entry = self._live(upload_id, time.monotonic())
        return None if entry is None else UploadRecord.from_json(entry[1])

    def update(
        self, upload_id: str, expect_status: Collection[str], **changes: Any
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
            # Keep the deadline: the TTL is not extended by an update.
            self._records[upload_id] = (entry[0], new.to_json())
            if "expires_at" in changes:
                self._expiry[upload_id] = new.expires_at
        return new

    def delete(self, upload_id: str) -> None:
        with self._lock:
            self._records.pop(upload_id, None)
            self._expiry.pop(upload_id, None)

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
