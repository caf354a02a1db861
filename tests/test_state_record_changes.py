"""The RecordChanges contract: a read-modify-write whose changes are computed from the
very record compared against, so concurrent writers of one field lose nothing; run
against every backend that claims it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from state_support import make_record

from flask_obitox.state import MemoryStateBackend, RecordChanges, RedisStateBackend, UploadRecord


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryStateBackend()
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"obitox-test-processing-{uuid.uuid4().hex[:12]}"
    yield RedisStateBackend.from_url(url, prefix=prefix)
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def test_both_backends_claim_it(backend: Any) -> None:
    assert isinstance(backend, RecordChanges)


def test_changes_are_computed_from_the_stored_record(backend: Any) -> None:
    record = make_record(status="completed", processing={"a": {"status": "queued"}})
    backend.create(record, ttl=60)

    def add_b(current: UploadRecord) -> dict[str, Any]:
        return {"processing": {**(current.processing or {}), "b": {"status": "queued"}}}

    updated = backend.update_with(record.upload_id, {"completed"}, add_b)
    assert updated is not None
    assert updated.processing == {"a": {"status": "queued"}, "b": {"status": "queued"}}
    stored = backend.get(record.upload_id)
    assert stored.processing == updated.processing
    assert stored.revision == updated.revision != record.revision


def test_nothing_is_written_for_another_status_a_missing_record_or_a_declined_change(
    backend: Any,
) -> None:
    record = make_record(status="deleted")
    backend.create(record, ttl=60)
    calls: list[UploadRecord] = []

    def change(current: UploadRecord) -> dict[str, Any]:
        calls.append(current)
        return {"derived": ["x"]}

    assert backend.update_with(record.upload_id, {"completed"}, change) is None
    assert backend.update_with("no-such-upload", {"completed"}, change) is None
    assert calls == []
    assert backend.update_with(record.upload_id, {"deleted"}, lambda current: None) is None
    assert backend.get(record.upload_id).revision == record.revision


def test_a_bad_change_raises_and_writes_nothing(backend: Any) -> None:
    record = make_record(status="completed")
    backend.create(record, ttl=60)
    with pytest.raises(TypeError):
        backend.update_with(record.upload_id, {"completed"}, lambda current: {"upload_id": "x"})
    assert backend.get(record.upload_id).revision == record.revision


def test_concurrent_writers_of_one_field_lose_nothing(backend: Any) -> None:
    record = make_record(status="completed", processing={})
    backend.create(record, ttl=60)
    names = [f"p{i}" for i in range(8)]
    barrier = threading.Barrier(len(names))

    def write(name: str) -> None:
        barrier.wait()
        for attempt in range(5):
            backend.update_with(
                record.upload_id,
                {"completed"},
                lambda current, attempts=attempt + 1: {
                    "processing": {**(current.processing or {}), name: {"attempts": attempts}}
                },
            )

    threads = [threading.Thread(target=write, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = backend.get(record.upload_id)
    assert stored.processing == {name: {"attempts": 5} for name in names}
