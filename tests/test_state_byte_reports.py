"""The ByteReports contract: a byte-count report checked and merged in one step, with
no read before it; run against every backend that claims it (the Redis ones).

The Redis script rewrites the stored JSON as text rather than re-encoding it, so the
property test stores records whose every client-written field (name, metadata, the
client's rules, processors' results) holds the very field names the script looks for,
and checks the result against the Python merge of the checked path."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from state_support import BACKENDS, RoundTrips, backend_claiming, make_record

from flask_obitox.state import UploadRecord
from flask_obitox.state.capabilities import ByteReports, merge_progress


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    return backend_claiming(request, ByteReports)


def stored(backend: Any, **changes: Any) -> UploadRecord:
    record = make_record(**{"status": "uploading", "uploaded_bytes": 100, **changes})
    backend.create(record, ttl=60)
    return record


def expected(record: UploadRecord, uploaded: int, now: float, revision: str | None) -> UploadRecord:
    """What the checked path's merge makes of ``record`` (its timestamp and revision
    are the writer's)."""
    merged = dataclasses.replace(record, **merge_progress(record, uploaded, {}))
    merged.updated_at, merged.revision = now, revision
    return merged


def test_a_higher_count_is_merged_in_one_round_trip(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = stored(backend)
    now = time.time()
    with RoundTrips().counting(monkeypatch) as trips:
        new, changed = backend.report_bytes(record.upload_id, "user-1", 5000, now)
    assert changed is True
    if type(backend).__name__ == "RedisStateBackend":
        assert trips.count == 1
    assert new == expected(record, 5000, now, new.revision)
    assert new.revision not in (None, record.revision)
    assert backend.get(record.upload_id) == new


def test_a_count_that_is_not_higher_writes_nothing(backend: Any) -> None:
    record = stored(backend)
    for uploaded in (100, 40, 0):
        same, changed = backend.report_bytes(record.upload_id, "user-1", uploaded, time.time())
        assert (same, changed) == (record, False)
    assert backend.get(record.upload_id) == record


@pytest.mark.parametrize(
    ("changes", "owner", "uploaded", "late"),
    [
        ({}, "user-2", 500, 0),  # another owner's
        ({"status": "pending", "uploaded_bytes": 0}, "user-1", 500, 0),  # a first report
        ({"status": "completed"}, "user-1", 500, 0),
        ({}, "user-1", 500, 1000),  # expired at ``now``
        ({}, "user-1", 12346, 0),  # past the size
        ({"size_deferred": True}, "user-1", 500, 0),  # the client decides the size
        ({"kind": "multipart", "part_size": 0}, "user-1", 500, 0),  # the same, before 0.9
    ],
    ids=["other-owner", "pending", "completed", "expired", "past-size", "deferred", "legacy"],
)
def test_what_it_does_not_settle_is_left_to_the_checked_path(
    backend: Any, changes: dict[str, Any], owner: str, uploaded: int, late: float
) -> None:
    record = stored(backend, **changes)
    assert backend.report_bytes(record.upload_id, owner, uploaded, time.time() + late) is None
    assert backend.get(record.upload_id) == record
    assert backend.report_bytes("no-such-upload", "user-1", 1, time.time()) is None


def test_concurrent_reports_keep_the_highest(backend: Any) -> None:
    record = stored(backend, size=10_000)
    barrier = threading.Barrier(8)

    def report(worker: int) -> None:
        barrier.wait()
        for step in range(10):
            backend.report_bytes(record.upload_id, "user-1", 100 + step * 8 + worker, time.time())

    threads = [threading.Thread(target=report, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert backend.get(record.upload_id).uploaded_bytes == 100 + 9 * 8 + 7


#: The names the script finds its way by, and text that looks like their values.
TRAPS = [
    ',"updated_at":',
    ',"revision":',
    ',"uploaded_bytes":',
    ',"part_reports":',
    "updated_at",
    "revision",
    "uploaded_bytes",
    "part_reports",
    '"}',
    "\\",
    "é",
    "\u2028",
]
text = st.one_of(st.sampled_from(TRAPS), st.text(max_size=12)).filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
records = st.fixed_dictionaries(
    {
        "filename": text,
        "metadata": st.dictionaries(text, text, max_size=4),
        "result": st.none() | st.dictionaries(text, json_values, max_size=4),
        "validation": st.none() | st.dictionaries(text, json_values, max_size=3),
        "processing": st.none()
        | st.dictionaries(
            text, st.fixed_dictionaries({"status": text, "result": json_values}), max_size=2
        ),
        "derived": st.none() | st.lists(text, max_size=3),
        "revision": st.none() | st.sampled_from(["0123456789abcdef", ""]),
        "part_reports": st.none()
        | st.dictionaries(
            st.integers(1, 10_000).map(str),
            st.sampled_from(["uploading", "uploaded", "failed"]),
            max_size=4,
        ),
        "uploaded_bytes": st.integers(0, 10**6),
        "created_at": st.floats(1.5e9, 2e9),
    }
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fields=records, uploaded=st.integers(0, 2 * 10**6))
def test_the_merge_equals_the_checked_paths_whatever_the_record_holds(
    backend: Any, fields: dict[str, Any], uploaded: int
) -> None:
    now = time.time()
    record = stored(backend, size=10**6 + 1, updated_at=fields["created_at"], **fields)
    merged = backend.report_bytes(record.upload_id, "user-1", uploaded, now)
    if uploaded > record.size:
        assert merged is None
        assert backend.get(record.upload_id) == record
        return
    assert merged is not None
    new, changed = merged
    assert changed is (uploaded > record.uploaded_bytes)
    want = expected(record, uploaded, now, new.revision) if changed else record
    assert new == want
    assert backend.get(record.upload_id) == want


def test_a_script_the_server_has_not_loaded_runs_the_way_redis_py_loads_it(
    redis_backend: Any,
) -> None:
    key = f"{redis_backend.prefix}:script-test"
    redis_backend.client.set(key, "stored")
    # A script no server has seen (its text is new): the lean EVALSHA meets NOSCRIPT.
    script = redis_backend.client.register_script(
        f"-- {uuid.uuid4()}\nreturn redis.call('GET', KEYS[1])"
    )
    assert redis_backend._run_script(script, key, []) == b"stored"
    assert redis_backend._run_script(script, key, []) == b"stored"  # loaded now
