"""The EventStream contract: append, read after an id, wait for new ones; run against
every backend that claims it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from state_support import BACKENDS, RoundTrips, backend_claiming

from flask_obitox.state import EventFanIn, EventStream, InvalidCursor, RedisStateBackend


@pytest.fixture
def redis_backend(redis_url: str) -> Iterator[RedisStateBackend]:
    """The events engineer's key prefix (the Redis is shared with other work)."""
    prefix = f"obitox-test-events-{uuid.uuid4().hex[:12]}"
    backend = RedisStateBackend.from_url(redis_url, prefix=prefix)
    yield backend
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    return backend_claiming(request, EventStream)


@pytest.fixture(params=BACKENDS)
def fan_in(request: pytest.FixtureRequest) -> Any:
    return backend_claiming(request, EventFanIn)


@pytest.fixture
def fan_in_reader(fan_in: Any) -> Any:
    """A backend whose one blocked read follows many owners (not a cluster: their
    streams live on different slots, so its streams each wait on their own)."""
    if not getattr(fan_in, "many_owner_reads", True):
        pytest.skip("this backend reads each owner's stream on its own")
    return fan_in


def position(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def event(n: int) -> dict[str, Any]:
    return {"type": "upload.progress", "timestamp": "2026-12-01T00:00:00Z", "data": {"n": n}}


def test_append_then_read_after(backend: Any) -> None:
    ids = [backend.append_event("user-1", event(n)) for n in range(30)]
    assert [position(i) for i in ids] == sorted({position(i) for i in ids})  # increasing
    backend.append_event("user-2", event(99))

    everything = backend.read_events("user-1")
    assert everything == [(i, event(n)) for n, i in enumerate(ids)]
    assert backend.read_events("user-1", "") == everything
    assert backend.read_events("user-1", ids[9]) == everything[10:]
    assert backend.read_events("user-1", ids[9], count=3) == everything[10:13]
    assert backend.read_events("user-1", ids[-1]) == []
    assert backend.read_events("user-1", "0-0", count=1) == everything[:1]
    assert backend.last_event_id("user-1") == ids[-1]
    assert backend.last_event_id("nobody") is None
    assert backend.read_events("nobody") == []
    with pytest.raises(ValueError, match="count"):
        backend.read_events("user-1", count=0)


@pytest.mark.parametrize(
    "bad", ["garbage", "1-2-3", "-1-0", "1.5-0", "12", "0x1-0", "1-18446744073709551616", " 1-0"]
)
def test_garbage_ids_are_invalid_cursors(backend: Any, bad: str) -> None:
    backend.append_event("user-1", event(1))
    with pytest.raises(InvalidCursor):
        backend.read_events("user-1", bad)
    with pytest.raises(InvalidCursor):
        backend.wait_for_events("user-1", bad, timeout=0.1)


def test_an_id_beyond_the_newest_is_invalid(backend: Any) -> None:
    newest = position(backend.append_event("user-1", event(1)))
    for beyond in (f"{newest[0]}-{newest[1] + 1}", f"{newest[0] + 10**6}-0"):
        with pytest.raises(InvalidCursor):
            backend.read_events("user-1", beyond)


def test_only_the_newest_are_kept(backend: Any) -> None:
    backend.events_retention = 20
    ids = [backend.append_event("user-1", event(n)) for n in range(400)]
    kept = backend.read_events("user-1", count=1000)
    # Redis trims whole stream nodes (MAXLEN ~): at least the retention stays, and
    # always the newest.
    assert 20 <= len(kept) < 400
    assert [i for i, _ in kept] == ids[-len(kept) :]
    # An id older than everything kept reads from the oldest kept.
    assert backend.read_events("user-1", ids[0], count=1000) == kept


def test_wait_returns_at_once_when_events_are_there(backend: Any) -> None:
    first = backend.append_event("user-1", event(1))
    second = backend.append_event("user-1", event(2))
    assert backend.wait_for_events("user-1", first, timeout=30) == [(second, event(2))]
    assert backend.wait_for_events("user-1", None, timeout=30)[0] == (first, event(1))


def test_wait_times_out_empty(backend: Any) -> None:
    last = backend.append_event("user-1", event(1))
    assert backend.wait_for_events("user-1", last, timeout=0.2) == []
    assert backend.wait_for_events("nobody", None, timeout=0) == []


def waiter(backend: Any, owner: str, after: str | None) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []

    def wait() -> None:
        got.append(backend.wait_for_events(owner, after, timeout=20))

    thread = threading.Thread(target=wait)
    thread.start()
    return thread, got


def test_wait_wakes_for_a_new_event_from_another_thread(backend: Any) -> None:
    last = backend.append_event("user-1", event(0))
    thread, got = waiter(backend, "user-1", last)
    other, other_got = waiter(backend, "user-2", None)
    threading.Event().wait(0.2)  # let them block (correct either way)
    new = backend.append_event("user-1", event(1))
    thread.join(timeout=30)
    assert got == [[(new, event(1))]]
    # user-2's waiter is not woken by user-1's events.
    assert other.is_alive() or other_got == [[]]
    mine = backend.append_event("user-2", event(2))
    other.join(timeout=30)
    assert other_got == [[(mine, event(2))]]


def test_redis_events_reach_waiters_of_another_client(
    redis_backend: RedisStateBackend, redis_url: str
) -> None:
    """Another process (here: another client and pool) appends; the waiter wakes."""
    elsewhere = RedisStateBackend.from_url(redis_url, prefix=redis_backend.prefix)
    last = elsewhere.append_event("user-1", event(0))
    thread, got = waiter(redis_backend, "user-1", last)
    threading.Event().wait(0.2)
    new = elsewhere.append_event("user-1", event(1))
    thread.join(timeout=30)
    assert got == [[(new, event(1))]]
    elsewhere.client.close()


def test_redis_append_and_read_are_one_round_trip_each(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_backend.ping()
    with RoundTrips().counting(monkeypatch) as trips:
        first = redis_backend.append_event("user-1", event(1))
    assert trips.count == 1
    with RoundTrips().counting(monkeypatch) as trips:
        assert redis_backend.read_events("user-1", "0-0") == [(first, event(1))]
    assert trips.count == 1
    key = redis_backend.layout.owner_events("user-1")
    assert 0 < redis_backend.client.ttl(key) <= redis_backend.events_ttl


# -- EventFanIn --------------------------------------------------------------------


def test_append_events_keeps_order_across_owners(fan_in: Any) -> None:
    ids = fan_in.append_events([("user-1", event(1)), ("user-2", event(2)), ("user-1", event(3))])
    assert len(ids) == 3
    assert fan_in.read_events("user-1") == [(ids[0], event(1)), (ids[2], event(3))]
    assert fan_in.read_events("user-2") == [(ids[1], event(2))]
    assert fan_in.append_events([]) == []


def test_wait_for_owners_returns_what_each_owner_missed(fan_in_reader: Any) -> None:
    first = fan_in_reader.append_event("user-1", event(1))
    second = fan_in_reader.append_event("user-1", event(2))
    other = fan_in_reader.append_event("user-2", event(3))
    found = fan_in_reader.wait_for_owners({"user-1": first, "user-2": None, "user-3": None}, 30)
    assert found == {"user-1": [(second, event(2))], "user-2": [(other, event(3))]}
    with pytest.raises(InvalidCursor):
        fan_in_reader.wait_for_owners({"user-1": "garbage"}, 0.1)


def test_wait_for_owners_wakes_for_an_event_and_for_a_wake(fan_in_reader: Any) -> None:
    last = fan_in_reader.append_event("user-1", event(0))
    got: list[Any] = []

    def wait() -> None:
        got.append(fan_in_reader.wait_for_owners({"user-1": last}, 20))
        got.append(fan_in_reader.wait_for_owners({"user-1": last}, 20))

    thread = threading.Thread(target=wait)
    thread.start()
    threading.Event().wait(0.2)  # let it block (correct either way)
    new = fan_in_reader.append_events([("user-2", event(9)), ("user-1", event(1))])[1]
    fan_in_reader.wake_event_waiters()  # the second wait returns at once, or when woken
    thread.join(timeout=30)
    assert got[0] == {"user-1": [(new, event(1))]}
    assert got[1] in ({}, {"user-1": [(new, event(1))]})


def test_a_wake_before_the_wait_is_not_lost(fan_in_reader: Any) -> None:
    fan_in_reader.wait_for_owners({}, 0)  # whatever wake-up came before is seen
    fan_in_reader.wake_event_waiters()
    assert fan_in_reader.wait_for_owners({"user-1": None}, 20) == {}
    assert fan_in_reader.wait_for_owners({"user-1": None}, 0.2) == {}


def test_redis_append_events_is_one_round_trip(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_backend.ping()
    batch = [(f"user-{n % 7}", event(n)) for n in range(100)]
    with RoundTrips().counting(monkeypatch) as trips:
        ids = redis_backend.append_events(batch)
    assert trips.count == 1
    # Ids are per owner's stream: unique within each owner, in the order appended.
    for owner in {owner for owner, _ in batch}:
        mine = [i for (who, _), i in zip(batch, ids, strict=True) if who == owner]
        assert [i for i, _ in redis_backend.read_events(owner)] == mine


def test_events_that_cannot_be_appended_after_a_write_never_fail_it(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from state_support import make_record

    from flask_obitox.errors import StateUnavailable

    def down(events: Any) -> Any:
        raise StateUnavailable("Redis went away between the write and the append")

    record = make_record()
    redis_backend.appends_ride_writes = False  # the two steps, as on a cluster
    monkeypatch.setattr(redis_backend, "append_events", down)
    redis_backend.create_with_events([record], 60, [(record.owner, b'{"type":"x"}')])
    assert redis_backend.get(record.upload_id) == record


def test_a_resent_write_appends_its_events_once(redis_backend: RedisStateBackend) -> None:
    # What the retry policy does when a write's reply is lost: the same packet again.
    from state_support import make_record

    records = [
        make_record(owner="user-1"),
        make_record(owner="user-2"),
        make_record(owner="user-1"),
    ]
    events = [(r.owner, b'{"type":"upload.signed","n":%d}' % n) for n, r in enumerate(records)]
    commands, _ = redis_backend._create_commands(records, 60, events)
    assert len(commands) == 1  # one script: the records, their indexes, their events
    assert redis_backend._send(commands, "create") == [0]
    assert redis_backend._send(commands, "create") == [0]
    for record in records:
        assert redis_backend.get(record.upload_id) == record
    assert [e["n"] for _, e in redis_backend.read_events("user-1")] == [0, 2]
    assert [e["n"] for _, e in redis_backend.read_events("user-2")] == [1]
    assert {r.upload_id for r in redis_backend.list_uploads("user-1").items} == {
        records[0].upload_id,
        records[2].upload_id,
    }


def test_a_refused_append_loses_its_events_not_the_write(
    redis_backend: RedisStateBackend, caplog: pytest.LogCaptureFixture
) -> None:
    from state_support import make_record

    record = make_record(owner="user-1")
    # The owner's stream key holds something else: every XADD to it is refused.
    redis_backend.client.set(redis_backend.layout.owner_events("user-1"), "not a stream")
    redis_backend.create_with_events([record], 60, [(record.owner, b'{"type":"x"}')])
    assert redis_backend.get(record.upload_id) == record
    assert "1 events sent with a write were refused" in caplog.text
