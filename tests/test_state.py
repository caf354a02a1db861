"""One contract suite for every state backend, plus what only Redis can get wrong.

The Redis half uses ``OBITOX_TEST_REDIS_URL``; when it is unset it tries
``redis://127.0.0.1:6379/15`` and skips if nothing answers there. When the variable *is*
set, a Redis that does not answer is a failure. Every test works under its own key
prefix (``obitox-test-<uuid>``) and deletes its keys afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import fields, replace
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.connection import Connection
from redis.crc import key_slot
from state_support import make_record

from flask_obitox.config import DEFAULT_REDIS_URL as DEFAULT_APP_REDIS_URL
from flask_obitox.config import load_settings
from flask_obitox.errors import StateUnavailable
from flask_obitox.state import (
    STATUSES,
    TERMINAL,
    GroupRecord,
    MemoryStateBackend,
    RedisClusterStateBackend,
    RedisStateBackend,
    StateBackend,
    UploadRecord,
    backend_from_uri,
    plain_redis_schemes,
    register_backend,
    registered_schemes,
    registry,
)

REDIS_URL_ENV = "OBITOX_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
CLOSED_URL = "redis://:s3cret@127.0.0.1:1/0"


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    configured = os.environ.get(REDIS_URL_ENV) or None
    url = configured or DEFAULT_REDIS_URL
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if configured:
            pytest.fail(f"{REDIS_URL_ENV} is set but Redis does not answer: {exc}")
        pytest.skip(f"no Redis at {DEFAULT_REDIS_URL} (set {REDIS_URL_ENV}): {exc}")
    finally:
        client.close()
    return url


@pytest.fixture
def redis_backend(redis_url: str) -> Iterator[RedisStateBackend]:
    prefix = f"obitox-test-{uuid.uuid4().hex}"
    backend = RedisStateBackend.from_url(redis_url, prefix=prefix)
    try:
        yield backend
    finally:
        client = backend.client
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> StateBackend:
    if request.param == "memory":
        return MemoryStateBackend()
    result: StateBackend = request.getfixturevalue(f"{request.param}_backend")
    return result


def full_record(**changes: Any) -> UploadRecord:
    """Every field set to something other than its default."""
    values: dict[str, Any] = {
        "kind": "multipart",
        "filename": 'r\u00e9sum\u00e9 \u2603 "quoted"\n.pdf',
        "content_type": "application/pdf",
        "size": 5 * 1024**3,
        "status": "uploading",
        "created_at": 1712345678.123456,
        "updated_at": 1712345679.5,
        "expires_at": 1712349278.123456,
        "metadata": {"album": "holiday", "caf\u00e9": "\U0001f600"},
        "checksum_sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        "part_size": 8 * 1024 * 1024,
        "total_parts": 640,
        "s3_upload_id": "2~abcDEF_ghi-jkl",
        "storage": "tenant-42",
        "result": {"etag": '"abc"', "parts": [1, 2.5, None, True], "nested": {"x": []}},
        "validation": {"maxSize": 10, "allowedTypes": ["application/pdf"]},
    }
    values.update(changes)
    return make_record(**values)


def wait_until_gone(backend: StateBackend, upload_id: str, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if backend.get(upload_id) is None:
            return True
        time.sleep(0.05)
    return backend.get(upload_id) is None


# -- the record ---------------------------------------------------------------------------


def test_statuses() -> None:
    assert {"pending", "uploading"} | TERMINAL == STATUSES
    assert TERMINAL < STATUSES


def test_record_json_is_compact_and_round_trips() -> None:
    record = full_record()
    encoded = record.to_json()
    assert b": " not in encoded.replace(b'": "', b"")  # no separator spaces
    assert json.loads(encoded) == record.to_dict()
    assert UploadRecord.from_json(encoded) == record
    assert UploadRecord.from_json(encoded.decode()) == record


def test_record_json_ignores_unknown_keys_and_rejects_non_objects() -> None:
    record = make_record()
    data = json.loads(record.to_json())
    data["added_in_a_later_release"] = 1
    assert UploadRecord.from_json(json.dumps(data)) == record
    with pytest.raises(ValueError, match="JSON object"):
        UploadRecord.from_json("[1]")


def test_record_json_from_the_previous_release_loads() -> None:
    """Records written before ``group_id`` and ``profile`` existed stay readable."""
    written_before = (
        b'{"upload_id":"u1","owner":"o","kind":"single","bucket":"b","key":"k",'
        b'"filename":"f.jpg","content_type":"image/jpeg","size":3,"status":"pending",'
        b'"created_at":1.5,"updated_at":1.5,"expires_at":901.5,"metadata":{},'
        b'"checksum_sha256":null,"part_size":null,"total_parts":null,"s3_upload_id":null,'
        b'"storage":null,"result":null,"validation":null,"network_type":null}'
    )
    record = UploadRecord.from_json(written_before)
    assert record.group_id is None
    assert record.profile is None
    assert record.size == 3
    assert UploadRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    "changes",
    [
        {"created_at": 1712345678, "expires_at": 0, "updated_at": -0.0},
        {"size": True, "part_size": False},
        {"metadata": None, "result": {}},
        {"total_parts": 3.5, "s3_upload_id": None, "validation": {"1": [1e300, -1e-300]}},
    ],
)
def test_record_json_is_exact_for_unusual_types(changes: dict[str, Any]) -> None:
    """Off-type values (ints in float fields, bools, None) come back as what went in."""
    record = make_record(**changes)
    back = UploadRecord.from_json(record.to_json())
    assert back == record
    for name in changes:
        assert type(getattr(back, name)) is type(getattr(record, name))
        assert repr(getattr(back, name)) == repr(getattr(record, name))


#: What a record can hold: UTF-8 text (no lone surrogates) and 64-bit integers, as
#: orjson writes them; our records never carry anything else.
utf8_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)))
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | int64
    | st.floats(allow_nan=False, allow_infinity=False)
    | utf8_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(utf8_text, inner, max_size=3),
    max_leaves=8,
)
numbers = st.integers(min_value=0, max_value=2**63 - 1) | st.floats(
    allow_nan=False, allow_infinity=False
)
optional_text = st.none() | utf8_text
optional_int = st.none() | st.integers(min_value=0, max_value=2**63 - 1)


@settings(max_examples=300, deadline=None)
@given(
    text=st.tuples(*[utf8_text] * 7),
    size=st.integers(min_value=0, max_value=2**63 - 1) | st.booleans(),
    times=st.tuples(numbers, numbers, numbers),
    metadata=st.dictionaries(utf8_text, utf8_text, max_size=4),
    optionals=st.tuples(optional_text, optional_int, optional_int, optional_text, optional_text),
    result=st.none() | st.dictionaries(utf8_text, json_values, max_size=4),
    validation=st.none() | st.dictionaries(utf8_text, json_values, max_size=3),
)
def test_record_json_round_trip_property(
    text: tuple[str, ...],
    size: int,
    times: tuple[float, float, float],
    metadata: dict[str, str],
    optionals: tuple[Any, ...],
    result: dict[str, Any] | None,
    validation: dict[str, Any] | None,
) -> None:
    upload_id, owner, kind, bucket, key, filename, content_type = text
    checksum, part_size, total_parts, s3_upload_id, storage = optionals
    record = UploadRecord(
        upload_id=upload_id,
        owner=owner,
        kind=kind,
        bucket=bucket,
        key=key,
        filename=filename,
        content_type=content_type,
        size=size,
        status="pending",
        created_at=times[0],
        updated_at=times[1],
        expires_at=times[2],
        metadata=metadata,
        checksum_sha256=checksum,
        part_size=part_size,
        total_parts=total_parts,
        s3_upload_id=s3_upload_id,
        storage=storage,
        result=result,
        validation=validation,
    )
    back = UploadRecord.from_json(record.to_json())
    assert back == record
    for f in fields(UploadRecord):  # same types too (1 vs 1.0 vs True)
        assert type(getattr(back, f.name)) is type(getattr(record, f.name))


# -- the contract: both backends ------------------------------------------------------------


def test_create_get_round_trips_every_field(backend: StateBackend) -> None:
    record = full_record()
    backend.create(record, ttl=60)
    got = backend.get(record.upload_id)
    assert got == record
    assert got is not record
    plain = make_record()
    backend.create(plain, ttl=60)
    assert backend.get(plain.upload_id) == plain


def test_returned_records_are_copies(backend: StateBackend) -> None:
    record = full_record()
    backend.create(record, ttl=60)
    record.metadata["changed"] = "after create"
    got = backend.get(record.upload_id)
    assert got is not None
    assert "changed" not in got.metadata
    got.status = "completed"
    assert got.result is not None
    got.result["mutated"] = True
    again = backend.get(record.upload_id)
    assert again is not None
    assert again.status == "uploading"
    assert again.result is not None
    assert "mutated" not in again.result


def test_unknown_id_is_none(backend: StateBackend) -> None:
    assert backend.get("no-such-upload") is None


def test_create_overwrites_same_id(backend: StateBackend) -> None:
    record = make_record()
    backend.create(record, ttl=60)
    backend.create(replace(record, filename="second.jpg"), ttl=60)
    got = backend.get(record.upload_id)
    assert got is not None
    assert got.filename == "second.jpg"


def test_create_many_then_get_each(backend: StateBackend) -> None:
    records = [make_record(key=f"u/1/{i}.jpg", filename=f"{i}.jpg", size=i) for i in range(100)]
    records[7] = full_record()
    backend.create_many(records, ttl=60)
    for record in records:
        assert backend.get(record.upload_id) == record
    backend.create_many([], ttl=60)  # nothing to do, no error


def test_ttl_must_be_positive(backend: StateBackend) -> None:
    for ttl in (0, -1):
        with pytest.raises(ValueError, match="ttl"):
            backend.create(make_record(), ttl=ttl)
        with pytest.raises(ValueError, match="ttl"):
            backend.create_many([make_record()], ttl=ttl)


def test_ttl_is_honoured(backend: StateBackend) -> None:
    short, batch, long = make_record(), make_record(), make_record()
    backend.create(short, ttl=1)
    backend.create_many([batch], ttl=1)
    backend.create(long, ttl=60)
    if isinstance(backend, RedisStateBackend):
        assert 0 < backend.client.ttl(backend.key(short.upload_id)) <= 1
        assert 0 < backend.client.ttl(backend.key(batch.upload_id)) <= 1
        assert 55 < backend.client.ttl(backend.key(long.upload_id)) <= 60
    assert backend.get(short.upload_id) == short
    time.sleep(1.05)
    assert wait_until_gone(backend, short.upload_id)
    assert wait_until_gone(backend, batch.upload_id)
    assert backend.get(long.upload_id) == long
    assert backend.update(short.upload_id, {"pending"}, status="expired") is None


def test_update_compare_and_set(backend: StateBackend) -> None:
    record = make_record(created_at=time.time() - 5, updated_at=time.time() - 5)
    backend.create(record, ttl=60)

    before = time.time()
    started = backend.update(
        record.upload_id, {"pending"}, status="uploading", s3_upload_id="s3-1", total_parts=3
    )
    assert started is not None
    assert started.status == "uploading"
    assert started.s3_upload_id == "s3-1"
    assert started.total_parts == 3
    assert started.updated_at >= before
    assert started.created_at == record.created_at
    assert backend.get(record.upload_id) == started

    # The expectation no longer holds: nothing changes.
    assert backend.update(record.upload_id, {"pending"}, status="aborted") is None
    assert backend.get(record.upload_id) == started

    done = backend.update(
        record.upload_id,
        {"pending", "uploading"},
        status="completed",
        result={"etag": "x", "size": 3},
    )
    assert done is not None
    assert done.result == {"etag": "x", "size": 3}
    assert backend.get(record.upload_id) == done
    # Terminal: an idempotent repeat sees None and reads the stored result.
    assert backend.update(record.upload_id, {"pending", "uploading"}, status="aborted") is None
    stored = backend.get(record.upload_id)
    assert stored is not None
    assert stored.result == {"etag": "x", "size": 3}


def test_update_without_changes_only_touches_updated_at(backend: StateBackend) -> None:
    """... and the revision token every write carries (what makes a write unique)."""
    record = make_record(updated_at=1.0)
    backend.create(record, ttl=60)
    touched = backend.update(record.upload_id, ["pending"])
    assert touched is not None
    assert touched.updated_at > 1.0
    assert touched.revision
    assert replace(touched, updated_at=1.0, revision=None) == record
    again = backend.update(record.upload_id, ["pending"])
    assert again is not None
    assert again.revision != touched.revision


def test_redis_a_retried_compare_whose_reply_was_lost_still_wins(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection drops after Redis ran the compare-and-set, before its reply: the
    retry must find its own write and answer that it won (else nobody wins, and
    upload-completed is never sent)."""
    record = make_record(status="uploading")
    redis_backend.create(record, ttl=60)
    real_swap = redis_backend._swap

    def reply_lost(key: str, old: Any, current: UploadRecord, new: UploadRecord) -> bool:
        real_swap(key, old, current, new)  # ran on the server; its reply never arrived
        return real_swap(key, old, current, new)  # the client's retry of the same command

    monkeypatch.setattr(redis_backend, "_swap", reply_lost)
    won = redis_backend.update(record.upload_id, ["uploading"], status="completed")
    assert won is not None
    assert redis_backend.get(record.upload_id) == won


def test_redis_a_lost_compare_keeps_the_winners_index_entry(
    redis_backend: RedisStateBackend,
) -> None:
    """Two callers move the same upload to the same status; the loser's index move was
    sent before it knew it lost, and must not take the winner's entry out."""
    record = make_record(status="pending", owner="racer")
    redis_backend.create(record, ttl=60)
    stale = redis_backend.get(record.upload_id)
    assert redis_backend.update(record.upload_id, ["pending"], status="uploading") is not None
    # The loser compares against the record as it was: its compare loses.
    assert (
        redis_backend.update(record.upload_id, ["pending"], current=stale, status="uploading")
        is None
    )
    listed = redis_backend.list_uploads("racer", status="uploading").items
    assert [r.upload_id for r in listed] == [record.upload_id]
    assert redis_backend.list_uploads("racer", status="pending").items == []


def test_update_a_bare_string_expectation_is_one_status(backend: StateBackend) -> None:
    record = make_record(status="pending")
    backend.create(record, ttl=60)
    assert backend.update(record.upload_id, "pendingX", status="completed") is None
    assert backend.update(record.upload_id, "pend", status="completed") is None
    assert backend.update(record.upload_id, "pending", status="completed") is not None


def test_update_rejects_bad_changes(backend: StateBackend) -> None:
    record = make_record()
    backend.create(record, ttl=60)
    with pytest.raises(TypeError, match="no_such_field"):
        backend.update(record.upload_id, {"pending"}, no_such_field=1)
    with pytest.raises(TypeError, match="updated_at"):
        backend.update(record.upload_id, {"pending"}, updated_at=1.0)
    with pytest.raises(ValueError, match="status"):
        backend.update(record.upload_id, {"pending"}, status="done")
    with pytest.raises(TypeError):  # even for an unknown id
        backend.update("no-such-upload", {"pending"}, nope=1)
    assert backend.get(record.upload_id) == record


def test_update_unknown_is_none(backend: StateBackend) -> None:
    assert backend.update("no-such-upload", {"pending"}, status="completed") is None


def race_to_complete(backend: StateBackend, upload_id: str, threads: int) -> list[Any]:
    """``threads`` threads released together, each trying pending -> completed."""
    barrier = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def complete(i: int) -> None:
        try:
            barrier.wait()
            results[i] = backend.update(
                upload_id, {"pending"}, status="completed", result={"winner": i}
            )
        except BaseException as exc:  # reported by the caller
            results[i] = exc

    workers = [threading.Thread(target=complete, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    return results


@pytest.mark.parametrize("round_", range(3))
def test_update_race_has_exactly_one_winner(backend: StateBackend, round_: int) -> None:
    record = make_record()
    backend.create(record, ttl=60)
    results = race_to_complete(backend, record.upload_id, threads=12)
    assert not [r for r in results if isinstance(r, BaseException)]
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    stored = backend.get(record.upload_id)
    assert stored == winners[0]
    assert stored is not None
    assert stored.status == "completed"
    assert stored.result == {"winner": results.index(winners[0])}


def test_update_keeps_the_ttl(backend: StateBackend) -> None:
    record = make_record()
    backend.create(record, ttl=1)
    assert backend.update(record.upload_id, {"pending"}, status="uploading") is not None
    if isinstance(backend, RedisStateBackend):
        assert 0 < backend.client.ttl(backend.key(record.upload_id)) <= 1
    time.sleep(1.05)
    assert wait_until_gone(backend, record.upload_id)


def test_expired_ids_and_forget_expired(backend: StateBackend) -> None:
    now = time.time()
    oldest = make_record(expires_at=now - 10)
    older = make_record(expires_at=now - 5)
    edge = make_record(expires_at=now)
    live = make_record(expires_at=now + 100)
    backend.create_many([live, older], ttl=60)
    backend.create(oldest, ttl=60)
    backend.create(edge, ttl=60)

    assert backend.expired_ids(now) == [oldest.upload_id, older.upload_id, edge.upload_id]
    assert backend.expired_ids(now, limit=2) == [oldest.upload_id, older.upload_id]
    assert backend.expired_ids(now, limit=0) == []
    assert backend.expired_ids(now - 100) == []
    assert live.upload_id in backend.expired_ids(now + 1000)

    backend.forget_expired([oldest.upload_id, "never-indexed"])
    assert backend.expired_ids(now) == [older.upload_id, edge.upload_id]
    backend.forget_expired([])
    # Forgetting only touches the index, not the record.
    assert backend.get(oldest.upload_id) == oldest

    # Moving expires_at with update moves the index entry.
    moved = backend.update(live.upload_id, {"pending"}, expires_at=now - 1)
    assert moved is not None
    assert backend.expired_ids(now) == [older.upload_id, live.upload_id, edge.upload_id]


def test_delete(backend: StateBackend) -> None:
    record = make_record(expires_at=time.time() - 1)
    backend.create(record, ttl=60)
    backend.delete(record.upload_id)
    assert backend.get(record.upload_id) is None
    assert record.upload_id not in backend.expired_ids(time.time())
    assert backend.update(record.upload_id, {"pending"}, status="completed") is None
    backend.delete(record.upload_id)  # twice, and unknown ids, are fine
    backend.delete("no-such-upload")


def test_ping(backend: StateBackend) -> None:
    latency = backend.ping()
    assert isinstance(latency, float)
    assert 0 <= latency < 5


def test_backends_satisfy_the_protocol(backend: StateBackend) -> None:
    assert isinstance(backend, StateBackend)


# -- Redis specifics --------------------------------------------------------------------------


def test_redis_layout_is_hash_tagged(redis_backend: RedisStateBackend) -> None:
    client = redis_backend.client
    prefix = redis_backend.prefix
    # A live record, created now: entries created or expired long ago are pruned.
    record = full_record(created_at=time.time(), expires_at=time.time() + 3600)
    batch = [make_record(key=f"u/1/{i}.jpg") for i in range(3)]
    redis_backend.create(record, ttl=60)
    redis_backend.create_many(batch, ttl=60)

    expected = {f"{prefix}:expiry"}
    for r in [record, *batch]:
        key = f"{prefix}:{{{r.upload_id}}}:upload"
        assert redis_backend.key(r.upload_id) == key
        assert client.type(key) == b"string"
        assert client.get(key) == r.to_json()
        # Cluster: the key lives in the slot of its upload id.
        assert key_slot(key.encode()) == key_slot(r.upload_id.encode())
        assert client.zscore(f"{prefix}:expiry", r.upload_id) == r.expires_at
        object_key = f"{prefix}:{{k:{r.bucket}/{r.key}}}:upload"
        assert key_slot(object_key.encode()) == key_slot(f"k:{r.bucket}/{r.key}".encode())
        expected |= {key, object_key, f"{prefix}:{{o:{r.owner}}}:uploads"}
        expected |= {f"{prefix}:{{o:{r.owner}}}:uploads:s:{r.status}"}
        expected |= {f"{prefix}:{{o:{r.owner}}}:uploads:k:{r.kind}"}
    assert sorted(client.scan_iter(match=f"{prefix}:*")) == sorted(k.encode() for k in expected)
    for key in expected - {f"{prefix}:expiry"}:
        assert 0 < client.ttl(key) <= 60  # nothing but the expiry index lives forever


def test_redis_create_many_is_one_round_trip(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_backend.client.ping()  # connect first: the handshake is not the batch's
    sent: list[Any] = []
    original: Any = Connection.send_packed_command

    def spy(self: Connection, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", spy)

    records = [make_record() for _ in range(100)]
    redis_backend.create_many(records, ttl=60)

    assert len(sent) == 1  # every command in one send, then the replies: one round trip
    monkeypatch.undo()
    for record in records:
        assert redis_backend.get(record.upload_id) == record
    assert len(redis_backend.expired_ids(time.time() + 10_000)) == 100


def test_redis_update_keeps_a_long_ttl(redis_backend: RedisStateBackend) -> None:
    record = make_record()
    redis_backend.create(record, ttl=100)
    redis_backend.client.expire(redis_backend.key(record.upload_id), 50)
    assert redis_backend.update(record.upload_id, {"pending"}, status="uploading")
    assert 45 < redis_backend.client.ttl(redis_backend.key(record.upload_id)) <= 50


def test_redis_update_retries_after_losing_a_race(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer sneaking in between our GET and our CAS makes us re-read and re-check."""
    client = redis_backend.client
    real_swap = redis_backend._swap
    calls: list[int] = []

    # The seam is the compare-and-set itself (``_swap``: the CAS with its index move).
    def interfering(record_change: dict[str, Any]) -> Any:
        def swap(key: str, old: Any, record: UploadRecord, new: UploadRecord) -> bool:
            calls.append(1)
            if len(calls) == 1:
                current = UploadRecord.from_json(client.get(key) or b"")
                sneaky = replace(current, **record_change)
                client.set(key, sneaky.to_json(), keepttl=True)
            return real_swap(key, old, record, new)

        return swap

    # The other writer only touched metadata: we retry and both changes survive.
    record = make_record()
    redis_backend.create(record, ttl=60)
    monkeypatch.setattr(redis_backend, "_swap", interfering({"metadata": {"by": "other"}}))
    won = redis_backend.update(record.upload_id, {"pending"}, status="uploading")
    assert won is not None
    assert len(calls) == 2
    assert won.metadata == {"by": "other"}
    assert won.status == "uploading"
    assert redis_backend.get(record.upload_id) == won

    # The other writer completed it: the retry sees the expectation fail.
    calls.clear()
    record = make_record()
    redis_backend.create(record, ttl=60)
    monkeypatch.setattr(redis_backend, "_swap", interfering({"status": "completed"}))
    assert redis_backend.update(record.upload_id, {"pending"}, status="aborted") is None
    assert len(calls) == 1
    stored = redis_backend.get(record.upload_id)
    assert stored is not None
    assert stored.status == "completed"


def test_redis_works_with_decoded_responses(redis_url: str) -> None:
    prefix = f"obitox-test-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    backend = RedisStateBackend(client, prefix=prefix)
    try:
        record = full_record(expires_at=1.0)
        backend.create_many([record], ttl=60)
        assert backend.get(record.upload_id) == record
        assert backend.expired_ids(2.0) == [record.upload_id]
        done = backend.update(record.upload_id, {"uploading"}, status="completed")
        assert done is not None
        assert backend.expired_ids(2.0) == []  # settled: out of the expiry index
        assert "s3cret" not in repr(backend)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_redis_down_raises_state_unavailable_quickly(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_connecting(self: Any, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("constructing a backend must not connect")

    with monkeypatch.context() as patch:
        patch.setattr(Connection, "connect", no_connecting)
        backend = RedisStateBackend.from_url(CLOSED_URL)
        assert isinstance(backend_from_uri(CLOSED_URL), RedisStateBackend)
    assert "s3cret" not in repr(backend)
    record = make_record()
    operations: dict[str, Any] = {
        "get": lambda: backend.get("x"),
        "create": lambda: backend.create(record, ttl=60),
        "create_many": lambda: backend.create_many([record, make_record()], ttl=60),
        "update": lambda: backend.update("x", {"pending"}, status="completed"),
        "delete": lambda: backend.delete("x"),
        "expired_ids": lambda: backend.expired_ids(time.time()),
        "forget_expired": lambda: backend.forget_expired(["x"]),
        "ping": backend.ping,
        "get_many": lambda: backend.get_many(["x"]),
        "list_uploads": lambda: backend.list_uploads("o"),
        "upload_id_for_key": lambda: backend.upload_id_for_key("b", "k"),
        "create_group": lambda: backend.create_group(
            GroupRecord("g", "o", "n", "pending", 1.0, 1.0, 2.0), ttl=60
        ),
        "get_group": lambda: backend.get_group("g"),
        "group_members": lambda: backend.group_members("g"),
        "get_group_uploads": lambda: backend.get_group_uploads("g"),
        "add_members": lambda: backend.add_members("g", ["x"]),
        "seal": lambda: backend.seal("g"),
        "update_group_status": lambda: backend.update_group_status("g", "pending", "failed"),
        "list_groups": lambda: backend.list_groups("o"),
        "append_event": lambda: backend.append_event("o", {"type": "x"}),
        "read_events": lambda: backend.read_events("o"),
        "wait_for_events": lambda: backend.wait_for_events("o", None, timeout=5),
        "last_event_id": lambda: backend.last_event_id("o"),
    }
    for operation in operations.values():
        with pytest.raises(StateUnavailable) as info:
            operation()
        assert info.value.code == "STATE_UNAVAILABLE"
        assert info.value.status == 503
        assert "127.0.0.1:1" in info.value.detail
        assert "s3cret" not in info.value.detail + info.value.message
        assert isinstance(info.value.__cause__, redis.RedisError)


@pytest.fixture
def fake_server() -> Iterator[Any]:
    """Start TCP servers on 127.0.0.1 that are not Redis; yields a starter(reply)."""
    servers: list[socket.socket] = []
    stop = threading.Event()

    def start(reply: bytes | None) -> str:
        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(0.1)
        servers.append(server)

        def serve() -> None:
            held = []
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                if reply is None:
                    held.append(conn)  # accept, read nothing, answer nothing
                else:
                    conn.sendall(reply)
                    conn.close()
            for conn in held:
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return f"redis://127.0.0.1:{server.getsockname()[1]}/0"

    yield start
    stop.set()
    time.sleep(0.15)
    for server in servers:
        server.close()


def test_redis_not_redis_is_unavailable(fake_server: Any) -> None:
    url = fake_server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    backend = RedisStateBackend.from_url(url)
    for operation in (lambda: backend.get("x"), backend.ping):
        with pytest.raises(StateUnavailable) as info:
            operation()
        assert "127.0.0.1" in info.value.detail


def test_redis_silent_server_times_out_as_unavailable(fake_server: Any) -> None:
    url = fake_server(None)
    backend = RedisStateBackend.from_url(url, socket_timeout=0.2)
    with pytest.raises(StateUnavailable) as info:
        backend.create_many([make_record()], ttl=60)
    assert "Timeout" in info.value.detail


def test_redis_client_options(redis_url: str) -> None:
    backend = RedisStateBackend.from_url(redis_url, prefix="p", socket_timeout=7)
    kwargs = backend.client.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == 1.0
    assert kwargs["socket_timeout"] == 7  # overrides win
    assert kwargs["health_check_interval"] > 0
    assert backend.prefix == "p"
    backend.client.close()


# -- backend_from_uri ---------------------------------------------------------------------------


def test_backend_from_uri() -> None:
    assert isinstance(backend_from_uri("memory://"), MemoryStateBackend)
    for uri in (
        "redis://127.0.0.1:1/0",
        "rediss://:pw@127.0.0.1:1/0",
        "unix:///tmp/nowhere.sock",
        " REDIS://127.0.0.1:1 ",
    ):
        built = backend_from_uri(uri)  # nothing connects
        assert isinstance(built, RedisStateBackend)
        assert "pw" not in built.url
    unix = backend_from_uri("unix:///tmp/nowhere.sock")
    assert isinstance(unix, RedisStateBackend)
    assert unix.url == "unix:///tmp/nowhere.sock"


@pytest.mark.parametrize(
    "uri", ["", "memory", "postgres://user:hunter2@db/0", "http://x", "127.0.0.1:6379"]
)
def test_backend_from_uri_rejects_others(uri: str) -> None:
    with pytest.raises(ValueError, match="OBITOX_STATE_BACKEND") as info:
        backend_from_uri(uri)
    assert "hunter2" not in str(info.value)


def test_backend_from_uri_names_the_registered_schemes() -> None:
    with pytest.raises(
        ValueError, match=r"memory://, redis://, rediss://, unix:// or redis\+cluster:// URI"
    ):
        backend_from_uri("ftp://x")


def test_a_registered_scheme_builds_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_SCHEMES", dict(registry._SCHEMES))
    built: list[str] = []

    def cluster(uri: str) -> StateBackend:
        built.append(uri)
        return MemoryStateBackend()

    register_backend("redis+cluster", cluster)
    assert isinstance(backend_from_uri(" REDIS+CLUSTER://node:7000 "), MemoryStateBackend)
    assert built == ["redis+cluster://node:7000"]
    assert registered_schemes()[-1] == "redis+cluster"
    # Only a plain Redis URL may double as RQ's: another scheme makes RQ look elsewhere,
    # and a cluster state needs OBITOX_RQ_REDIS_URL (tests/test_state_cluster.py).
    assert plain_redis_schemes() == {"redis", "rediss", "unix"}
    register_backend("redis+sentinelish", cluster)
    settings = load_settings(
        {"OBITOX_BUCKET": "b", "OBITOX_STATE_BACKEND": "redis+sentinelish://node:7000"}
    )
    assert settings.rq_redis_url == DEFAULT_APP_REDIS_URL
    shared = load_settings({"OBITOX_BUCKET": "b", "OBITOX_STATE_BACKEND": "rediss://q:1/2"})
    assert shared.rq_redis_url == "rediss://q:1/2"
    for bad in ("", "redis://"):
        with pytest.raises(ValueError, match="scheme"):
            register_backend(bad, cluster)


def test_the_expiry_index_stays_bounded(backend: StateBackend) -> None:
    old = make_record(expires_at=time.time() - 10_000)
    backend.create(old, ttl=60)
    fresh = make_record()
    if isinstance(backend, RedisClusterStateBackend):
        # The index is sharded: a write prunes the shard it writes to.
        while backend._expiry_key(fresh.upload_id) != backend._expiry_key(old.upload_id):
            fresh = make_record()
    backend.create(fresh, ttl=60)  # a later write prunes entries older than its ttl
    if isinstance(backend, MemoryStateBackend):
        backend._purge(time.monotonic() + 61)
        assert backend.expired_ids(time.time() + 10**9) == []
    else:
        assert backend.expired_ids(time.time() + 10**9) == [fresh.upload_id]
