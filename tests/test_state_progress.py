"""The ProgressReports contract: an owner's progress report merged into its record
atomically; run against every backend that claims it."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from state_support import BACKENDS, backend_claiming, make_record

from flask_obitox.state import ProgressReports, RedisStateBackend, UploadRecord

OPEN = ("pending", "uploading")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    return backend_claiming(request, ProgressReports)


def stored(backend: Any, **changes: Any) -> UploadRecord:
    record = make_record(**changes)
    backend.create(record, ttl=60)
    return record


def test_bytes_only_grow_and_a_pending_upload_starts_uploading(backend: Any) -> None:
    record = stored(backend)
    first = backend.report_progress(record.upload_id, OPEN, 500, {})
    assert (first.uploaded_bytes, first.status) == (500, "uploading")
    assert first.revision is not None
    lower = backend.report_progress(record.upload_id, OPEN, 100, {})
    assert lower.uploaded_bytes == 500
    assert lower.revision == first.revision  # nothing to write: nothing written
    assert backend.get(record.upload_id) == first
    higher = backend.report_progress(record.upload_id, OPEN, 900, {})
    assert higher.uploaded_bytes == 900
    assert backend.get(record.upload_id).uploaded_bytes == 900


def test_zero_bytes_keeps_a_pending_upload_pending(backend: Any) -> None:
    record = stored(backend)
    same = backend.report_progress(record.upload_id, OPEN, 0, {})
    assert same.status == "pending"
    assert backend.get(record.upload_id) == record


def test_part_reports_merge_and_uploaded_stays(backend: Any) -> None:
    record = stored(backend, kind="multipart", part_size=5, total_parts=3)
    backend.report_progress(record.upload_id, OPEN, 5, {1: "uploaded", 2: "uploading"})
    after = backend.report_progress(record.upload_id, OPEN, 5, {1: "uploading", 2: "failed"})
    assert after.part_reports == {"1": "uploaded", "2": "failed"}
    with pytest.raises(ValueError, match="part status"):
        backend.report_progress(record.upload_id, OPEN, 5, {3: "done"})
    assert backend.get(record.upload_id).part_reports == {"1": "uploaded", "2": "failed"}


def test_unexpected_status_or_unknown_upload_changes_nothing(backend: Any) -> None:
    record = stored(backend, status="completed")
    assert backend.report_progress(record.upload_id, OPEN, 10, {1: "uploaded"}) is None
    assert backend.get(record.upload_id) == record
    assert backend.report_progress("no-such-upload", OPEN, 10, {}) is None


def test_a_stale_current_copy_is_read_again(backend: Any) -> None:
    record = stored(backend)
    backend.report_progress(record.upload_id, OPEN, 700, {2: "uploaded"})
    # The caller's copy predates that report: the merge goes into the stored record.
    after = backend.report_progress(record.upload_id, OPEN, 300, {1: "uploaded"}, current=record)
    assert after.uploaded_bytes == 700
    assert after.part_reports == {"1": "uploaded", "2": "uploaded"}


def test_concurrent_reports_lose_nothing(backend: Any) -> None:
    record = stored(backend, kind="multipart", size=10_000, part_size=5, total_parts=40)
    barrier = threading.Barrier(8)

    def report(worker: int) -> None:
        barrier.wait()
        for step in range(5):
            part = worker * 5 + step + 1
            backend.report_progress(record.upload_id, OPEN, part * 100, {part: "uploaded"})

    threads = [threading.Thread(target=report, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = backend.get(record.upload_id)
    assert final.uploaded_bytes == 4000
    assert final.part_reports == {str(n): "uploaded" for n in range(1, 41)}


def test_redis_a_report_moves_the_upload_between_status_indexes(
    redis_backend: RedisStateBackend,
) -> None:
    record = stored(redis_backend)
    redis_backend.report_progress(record.upload_id, OPEN, 1, {})
    uploading = redis_backend.list_uploads(record.owner, status="uploading")
    assert [r.upload_id for r in uploading.items] == [record.upload_id]
    assert redis_backend.list_uploads(record.owner, status="pending").items == []
