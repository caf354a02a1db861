"""The KeyIndex and BulkRead contracts: which upload an object key belongs to, and many
records in one round trip; run against every backend that claims them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.crc import key_slot
from state_support import BACKENDS, RoundTrips, backend_claiming, make_record

from flask_obitox.state import BulkRead, KeyIndex, RedisStateBackend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    return backend_claiming(request, KeyIndex)


@pytest.fixture(params=BACKENDS)
def bulk(request: pytest.FixtureRequest) -> Any:
    return backend_claiming(request, BulkRead)


def test_key_to_upload_id(backend: Any) -> None:
    single = make_record(key="u/1/{odd}%/name.jpg")
    batch = [make_record() for _ in range(3)]
    backend.create(single, ttl=60)
    backend.create_many(batch, ttl=60)
    for record in [single, *batch]:
        assert backend.upload_id_for_key(record.bucket, record.key) == record.upload_id
    assert backend.upload_id_for_key("other-bucket", single.key) is None
    assert backend.upload_id_for_key(single.bucket, single.key + "x") is None
    # Status changes leave it alone.
    backend.update(single.upload_id, {"pending"}, status="completed")
    assert backend.upload_id_for_key(single.bucket, single.key) == single.upload_id


def test_delete_removes_only_its_own_entry(backend: Any) -> None:
    first = make_record(key="u/shared.jpg")
    backend.create(first, ttl=60)
    backend.delete(first.upload_id)
    assert backend.upload_id_for_key(first.bucket, first.key) is None

    older = make_record(key="u/again.jpg")
    newer = make_record(key="u/again.jpg")
    backend.create(older, ttl=60)
    backend.create(newer, ttl=60)  # the key was issued again: the newer upload owns it
    backend.delete(older.upload_id)
    assert backend.upload_id_for_key(newer.bucket, newer.key) == newer.upload_id


def test_entries_expire_with_their_record(backend: Any) -> None:
    record = make_record()
    backend.create(record, ttl=1)
    time.sleep(1.1)
    assert backend.upload_id_for_key(record.bucket, record.key) is None


def test_get_many(bulk: Any) -> None:
    records = [make_record() for _ in range(5)]
    bulk.create_many(records, ttl=60)
    ids = [records[3].upload_id, "no-such-upload", records[0].upload_id, records[3].upload_id]
    assert bulk.get_many(ids) == [records[3], None, records[0], records[3]]
    assert bulk.get_many([]) == []


def test_redis_key_entries_live_in_the_slot_of_their_key(redis_backend: RedisStateBackend) -> None:
    record = make_record(key="a/{b}/c")
    redis_backend.create(record, ttl=60)
    entry = redis_backend.layout.object_key(record.bucket, record.key)
    assert redis_backend.client.get(entry) == record.upload_id.encode()
    assert 0 < redis_backend.client.ttl(entry) <= 60
    other = redis_backend.layout.object_key(record.bucket + "/a", "{b}/c")
    assert other != entry  # a slash in a bucket cannot shift the key's text
    assert key_slot(entry.encode()) == key_slot(
        redis_backend.layout.object_key(record.bucket, record.key).encode()
    )


def test_redis_get_many_is_one_round_trip(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [make_record() for _ in range(100)]
    redis_backend.create_many(records, ttl=60)
    with RoundTrips().counting(monkeypatch) as trips:
        assert redis_backend.get_many([r.upload_id for r in records]) == records
    assert trips.count == 1
