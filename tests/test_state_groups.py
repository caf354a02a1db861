"""The Groups contract: a group record, its members in join order, sealing, the status
compare-and-set and the owner's listing; run against every backend that claims it."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from redis.crc import key_slot
from state_support import BACKENDS, RoundTrips, backend_claiming, make_group, make_record

from flask_obitox.state import (
    GroupClosed,
    GroupNotFound,
    GroupRecord,
    Groups,
    InvalidCursor,
    RedisStateBackend,
)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    return backend_claiming(request, Groups)


def new_group(backend: Any, **changes: Any) -> GroupRecord:
    group = make_group(**changes)
    backend.create_group(group, ttl=60)
    return group


def test_create_and_get(backend: Any) -> None:
    group = make_group(description="two weeks", metadata={"trip": "caf\u00e9"})
    backend.create_group(group, ttl=60)
    assert backend.get_group(group.group_id) == group
    assert backend.get_group("no-such-group") is None
    assert backend.group_members(group.group_id) == []
    assert backend.group_members("no-such-group") == []
    assert backend.get_group_uploads("no-such-group") is None
    with pytest.raises(ValueError, match="status"):
        backend.create_group(make_group(status="open"), ttl=60)
    with pytest.raises(ValueError, match="ttl"):
        backend.create_group(make_group(), ttl=0)


def test_old_group_json_without_new_fields_loads() -> None:
    group = make_group()
    assert GroupRecord.from_json(group.to_json()) == group
    raw = b'{"group_id":"g","owner":"o","name":"n","status":"pending","created_at":1,'
    raw += b'"updated_at":1,"expires_at":2,"added_later":[1]}'
    assert GroupRecord.from_json(raw).sealed is False


def test_members_in_join_order(backend: Any) -> None:
    group = new_group(backend)
    batch = [make_record(group_id=group.group_id) for _ in range(3)]
    backend.create_many(batch, ttl=60)
    later = make_record(group_id=group.group_id)
    backend.create(later, ttl=60)
    assert backend.add_members(group.group_id, ["x-1", batch[1].upload_id, "x-2"]) == 6
    order = [r.upload_id for r in batch] + [later.upload_id, "x-1", "x-2"]
    assert backend.group_members(group.group_id) == order
    # A repeated join (a retried request) changes nothing.
    assert backend.add_members(group.group_id, ["x-2", "x-1"]) == 6
    assert backend.group_members(group.group_id) == order

    found = backend.get_group_uploads(group.group_id)
    assert found is not None
    got, uploads = found
    assert got == group
    assert uploads == [*batch, later]  # x-1 and x-2 have no record: left out

    backend.delete(batch[0].upload_id)
    found = backend.get_group_uploads(group.group_id)
    assert found is not None
    assert found[1] == [batch[1], batch[2], later]


def test_sealed_or_finished_groups_refuse_members(backend: Any) -> None:
    group = new_group(backend)
    backend.add_members(group.group_id, ["a"])
    sealed = backend.seal(group.group_id)
    assert sealed is not None
    assert sealed.sealed
    assert sealed.updated_at >= group.updated_at
    assert backend.get_group(group.group_id) == sealed
    assert backend.seal(group.group_id) == sealed  # idempotent
    assert backend.seal("no-such-group") is None
    with pytest.raises(GroupClosed):
        backend.add_members(group.group_id, ["b"])
    with pytest.raises(GroupNotFound):
        backend.add_members("no-such-group", ["b"])
    assert backend.group_members(group.group_id) == ["a"]

    for status in ("cancelled", "completed", "failed", "deleted"):
        other = new_group(backend)
        assert backend.update_group_status(other.group_id, {"pending"}, status) is not None
        with pytest.raises(GroupClosed):
            backend.add_members(other.group_id, ["b"])
    running = new_group(backend)
    backend.update_group_status(running.group_id, {"pending"}, "in_progress")
    assert backend.add_members(running.group_id, ["b"]) == 1


@pytest.mark.parametrize("closed", ["sealed", "unknown"])
def test_a_batch_into_a_closed_group_leaves_nothing(backend: Any, closed: str) -> None:
    group = new_group(backend)
    if closed == "sealed":
        backend.seal(group.group_id)
    group_id = group.group_id if closed == "sealed" else "no-such-group"
    batch = [make_record(group_id=group_id) for _ in range(3)]
    with pytest.raises(GroupClosed if closed == "sealed" else GroupNotFound):
        backend.create_many(batch, ttl=60)
    for record in batch:
        assert backend.get(record.upload_id) is None
        assert backend.upload_id_for_key(record.bucket, record.key) is None
    assert backend.list_uploads("user-1").items == []
    assert backend.group_members(group.group_id) == []


def test_seal_and_joins_race_atomically(backend: Any) -> None:
    """Every join that succeeded is a member; none that was refused is."""
    group = new_group(backend)
    joined: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(9)

    def join(worker: int) -> None:
        barrier.wait()
        for i in range(15):
            upload_id = f"w{worker}-{i}"
            try:
                backend.add_members(group.group_id, [upload_id])
                joined.append(upload_id)
            except GroupClosed:
                refused.append(upload_id)

    def seal() -> None:
        barrier.wait()
        time.sleep(0.005)
        backend.seal(group.group_id)

    threads = [threading.Thread(target=join, args=(w,)) for w in range(8)]
    threads.append(threading.Thread(target=seal))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(backend.group_members(group.group_id)) == sorted(joined)
    assert len(joined) + len(refused) == 8 * 15
    with pytest.raises(GroupClosed):
        backend.add_members(group.group_id, ["late"])


@pytest.mark.parametrize("round_", range(3))
def test_status_compare_and_set_has_one_winner(backend: Any, round_: int) -> None:
    group = new_group(backend, status="in_progress", sealed=True)
    barrier = threading.Barrier(12)
    results: list[Any] = [None] * 12

    def settle(i: int) -> None:
        barrier.wait()
        final = "completed" if i % 2 else "failed"
        results[i] = backend.update_group_status(group.group_id, {"in_progress"}, final)

    threads = [threading.Thread(target=settle, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert backend.get_group(group.group_id) == winners[0]
    assert winners[0].status in {"completed", "failed"}


def test_status_compare_and_set(backend: Any) -> None:
    group = new_group(backend)
    assert backend.update_group_status(group.group_id, "pend", "in_progress") is None
    moved = backend.update_group_status(group.group_id, "pending", "in_progress")
    assert moved is not None
    assert moved.status == "in_progress"
    assert moved.updated_at >= group.updated_at
    assert backend.update_group_status(group.group_id, {"pending"}, "cancelled") is None
    assert backend.update_group_status("no-such-group", {"pending"}, "cancelled") is None
    with pytest.raises(ValueError, match="status"):
        backend.update_group_status(group.group_id, {"in_progress"}, "done")
    assert backend.get_group(group.group_id) == moved


def test_every_group_write_has_a_new_revision(backend: Any) -> None:
    group = new_group(backend)
    sealed = backend.seal(group.group_id)
    assert sealed.revision is not None
    assert backend.get_group(group.group_id).revision == sealed.revision
    assert backend.seal(group.group_id).revision == sealed.revision  # nothing changed
    moved = backend.update_group_status(group.group_id, {"pending"}, "in_progress")
    assert moved.revision not in (None, sealed.revision)
    assert backend.get_group(group.group_id) == moved


def test_redis_same_tick_writers_of_the_same_change_have_one_winner(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two callers that read the group before either wrote, and write the same change in
    the same clock tick: without a revision both would write identical bytes, and the
    second compare-and-set would find "its own" write and claim to have won too."""
    group = new_group(redis_backend, status="in_progress")
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    original = redis_backend._cas
    winners: list[Any] = []

    def cas_after_a_rival(*args: Any, **kwargs: Any) -> Any:
        if not winners:  # the rival read the same group and writes first
            monkeypatch.setattr(redis_backend, "_cas", original)
            winners.append(
                redis_backend.update_group_status(group.group_id, {"in_progress"}, "completed")
            )
        return original(*args, **kwargs)

    monkeypatch.setattr(redis_backend, "_cas", cas_after_a_rival)
    mine = redis_backend.update_group_status(group.group_id, {"in_progress"}, "completed")
    assert winners[0] is not None
    assert mine is None
    assert redis_backend.get_group(group.group_id) == winners[0]


def test_list_groups_newest_first_by_status_with_a_cursor(backend: Any) -> None:
    now = time.time()
    groups = [new_group(backend, created_at=now - 10 + i) for i in range(7)]
    new_group(backend, owner="user-2")
    backend.update_group_status(groups[1].group_id, {"pending"}, "in_progress")
    backend.update_group_status(groups[4].group_id, {"pending"}, "cancelled")

    def ids(**filters: Any) -> list[str]:
        found: list[str] = []
        cursor = None
        while True:
            page = backend.list_groups("user-1", limit=2, cursor=cursor, **filters)
            found += [g.group_id for g in page.items]
            cursor = page.next_cursor
            if cursor is None:
                return found

    newest_first = [g.group_id for g in reversed(groups)]
    assert ids() == newest_first
    assert ids(status="pending") == [
        g for g in newest_first if g not in {groups[1].group_id, groups[4].group_id}
    ]
    assert ids(status="cancelled") == [groups[4].group_id]
    page = backend.list_groups("user-1", status="in_progress")
    assert [g.status for g in page.items] == ["in_progress"]
    assert page.next_cursor is None

    cursor = backend.list_groups("user-1", limit=2).next_cursor
    with pytest.raises(InvalidCursor):
        backend.list_groups("user-2", limit=2, cursor=cursor)
    with pytest.raises(InvalidCursor):
        backend.list_groups("user-1", status="pending", limit=2, cursor=cursor)
    backend.create_many([make_record(), make_record()], ttl=60)
    upload_cursor = backend.list_uploads("user-1", limit=1).next_cursor
    with pytest.raises(InvalidCursor):  # an upload listing's cursor is not a group one
        backend.list_groups("user-1", cursor=upload_cursor)
    with pytest.raises(ValueError, match="limit"):
        backend.list_groups("user-1", limit=0)
    with pytest.raises(ValueError, match="status"):
        backend.list_groups("user-1", status="open")


def test_groups_expire(backend: Any) -> None:
    short = make_group()
    backend.create_group(short, ttl=1)
    backend.add_members(short.group_id, ["a"])
    kept = new_group(backend)
    time.sleep(1.1)
    assert backend.get_group(short.group_id) is None
    assert backend.group_members(short.group_id) == []
    assert [g.group_id for g in backend.list_groups("user-1").items] == [kept.group_id]


# -- Redis specifics --------------------------------------------------------------------------


def test_redis_group_keys_share_one_slot_and_expire(redis_backend: RedisStateBackend) -> None:
    group = new_group(redis_backend, group_id="g}{%odd")
    redis_backend.add_members(group.group_id, ["a", "b"])
    layout = redis_backend.layout
    keys = [layout.group(group.group_id), layout.group_members(group.group_id)]
    assert key_slot(keys[0].encode()) == key_slot(keys[1].encode())
    for key in keys:
        assert 0 < redis_backend.client.ttl(key) <= 60
    index = [layout.owner_groups("user-1"), layout.owner_groups("user-1", "pending")]
    assert key_slot(index[0].encode()) == key_slot(index[1].encode())
    assert key_slot(index[0].encode()) == key_slot(layout.owner_uploads("user-1").encode())


def test_redis_a_group_of_100_reads_in_two_round_trips(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = new_group(redis_backend)
    records = [make_record(group_id=group.group_id) for _ in range(100)]
    redis_backend.ping()
    with RoundTrips().counting(monkeypatch) as trips:
        redis_backend.create_many(records, ttl=60)
    assert trips.count == 1  # records, indexes and membership in one send

    with RoundTrips().counting(monkeypatch) as trips:
        found = redis_backend.get_group_uploads(group.group_id)
    assert found is not None
    assert found[1] == records
    assert trips.count == 2  # the group and its member ids, then the records
