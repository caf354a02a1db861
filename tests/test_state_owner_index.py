"""The OwnerIndex contract: an owner's uploads, newest first, filtered, with a cursor;
run against every backend that claims it, plus what only Redis can get wrong."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot
from state_support import BACKENDS, RoundTrips, backend_claiming, make_group, make_record

from flask_obitox.state import (
    Groups,
    InvalidCursor,
    OwnerIndex,
    RedisStateBackend,
    StateBackend,
    UploadRecord,
)
from flask_obitox.state.cursor import index_member, time_bound
from flask_obitox.state.redis_layout import RedisLayout


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    return backend_claiming(request, OwnerIndex)


@given(st.floats(min_value=0.0, max_value=9_999_999_999_999.0) | st.integers(0, 2**40))
def test_index_members_keep_their_written_form(when: float) -> None:
    # Members already stored were written as f"{when:020.6f}": every member written
    # now must be that same text, or an index would hold two orders at once.
    assert time_bound(when) == f"{float(when):020.6f}"
    assert index_member(when, "id") == f"{float(when):020.6f}:id"
    assert time_bound(when) == time_bound(when)  # and again, from what it remembered


def created(backend: Any, count: int, start: float | None = None, **changes: Any) -> list[Any]:
    """``count`` records 10 ms apart (oldest first), created in one batch."""
    start = time.time() - count / 100 if start is None else start
    group_id = changes.get("group_id")
    if group_id and isinstance(backend, Groups) and backend.get_group(group_id) is None:
        backend.create_group(
            make_group(group_id=group_id, owner=changes.get("owner", "user-1")), 60
        )
    records = [make_record(created_at=start + i / 100, **changes) for i in range(count)]
    backend.create_many(records, ttl=60)
    return records


def newest_first(records: list[UploadRecord]) -> list[str]:
    return [r.upload_id for r in sorted(records, key=lambda r: (r.created_at, r.upload_id))][::-1]


def every_page(
    list_page: Callable[..., Any], limit: int, **filters: Any
) -> tuple[list[str], list[int]]:
    """Follow ``next_cursor`` to the end: the ids in order, and each page's size."""
    ids: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(1000):
        page = list_page(limit=limit, cursor=cursor, **filters)
        ids += [r.upload_id for r in page.items]
        sizes.append(len(page.items))
        cursor = page.next_cursor
        if cursor is None:
            return ids, sizes
    raise AssertionError("the cursor never ended")


def test_backends_claim_the_capability(backend: Any) -> None:
    assert isinstance(backend, OwnerIndex)
    assert isinstance(backend, StateBackend)


def test_newest_first_with_full_pages(backend: Any) -> None:
    records = created(backend, 23)
    records.append(make_record(created_at=time.time() + 5))
    backend.create(records[-1], ttl=60)

    first = backend.list_uploads("user-1")
    assert [r.upload_id for r in first.items] == newest_first(records)
    assert first.next_cursor is None
    assert first.items[5] == records[-6]  # whole records, as stored

    ids, sizes = every_page(lambda **kw: backend.list_uploads("user-1", **kw), limit=5)
    assert ids == newest_first(records)
    assert sizes == [5, 5, 5, 5, 4]
    ids, sizes = every_page(lambda **kw: backend.list_uploads("user-1", **kw), limit=8)
    assert sizes == [8, 8, 8]  # the end is seen without an empty page
    assert backend.list_uploads("nobody").items == []
    assert backend.list_uploads("nobody").next_cursor is None


def test_ties_on_created_at_page_by_id(backend: Any) -> None:
    """A batch often shares one timestamp: paging must neither skip nor repeat."""
    now = time.time()
    records = [make_record(created_at=now) for _ in range(17)]
    backend.create_many(records, ttl=60)
    ids, sizes = every_page(lambda **kw: backend.list_uploads("user-1", **kw), limit=4)
    assert ids == sorted(r.upload_id for r in records)[::-1]
    assert sizes == [4, 4, 4, 4, 1]


def test_filters(backend: Any) -> None:
    start = time.time() - 40  # within a ttl: older entries are pruned on write
    singles = created(backend, 6, start=start)
    parts = created(backend, 4, start=start + 10, kind="multipart", status="uploading")
    grouped = created(backend, 3, start=start + 20, group_id="g-1", profile="avatars")
    created(backend, 2, start=start + 30, owner="user-2", group_id="g-1")
    everything = singles + parts + grouped

    def ids(**filters: Any) -> list[str]:
        return every_page(lambda **kw: backend.list_uploads("user-1", **kw), 2, **filters)[0]

    assert ids() == newest_first(everything)
    assert ids(status="pending") == newest_first(singles + grouped)
    assert ids(status="uploading") == newest_first(parts)
    assert ids(kind="multipart") == newest_first(parts)
    assert ids(kind="single", status="uploading") == []
    assert ids(group_id="g-1") == newest_first(grouped)
    assert ids(profile="avatars") == newest_first(grouped)
    assert ids(group_id="g-1", status="pending", kind="single") == newest_first(grouped)
    assert ids(group_id="g-2") == []
    assert ids(status="completed") == []


def test_updates_move_and_delete_removes(backend: Any) -> None:
    records = created(backend, 8)
    done = records[2]
    assert backend.update(done.upload_id, {"pending"}, status="uploading") is not None
    assert backend.update(done.upload_id, {"uploading"}, status="completed") is not None
    moved = backend.update(records[5].upload_id, {"pending"}, group_id="g-9", profile="docs")
    assert moved is not None

    def ids(**filters: Any) -> list[str]:
        return [r.upload_id for r in backend.list_uploads("user-1", **filters).items]

    assert ids(status="completed") == [done.upload_id]
    assert done.upload_id not in ids(status="pending")
    assert ids(status="uploading") == []
    assert ids(group_id="g-9") == ids(profile="docs") == [records[5].upload_id]
    got = backend.list_uploads("user-1", status="completed").items[0]
    assert got.status == "completed"

    backend.delete(records[5].upload_id)
    backend.update(done.upload_id, {"completed"}, status="deleted")
    assert ids(group_id="g-9") == []
    assert ids(status="deleted") == [done.upload_id]  # still listed, as deleted
    assert ids() == newest_first([r for r in records if r is not records[5]])


def test_other_owners_never_show(backend: Any) -> None:
    mine = created(backend, 3)
    created(backend, 3, owner="user-2")
    created(backend, 3, owner="user-1 ")
    ids = [r.upload_id for r in backend.list_uploads("user-1").items]
    assert ids == newest_first(mine)


def test_cursor_binds_owner_and_filters(backend: Any) -> None:
    created(backend, 5)
    created(backend, 5, owner="user-2")
    cursor = backend.list_uploads("user-1", limit=2).next_cursor
    assert cursor
    assert len(backend.list_uploads("user-1", limit=2, cursor=cursor).items) == 2

    with pytest.raises(InvalidCursor):
        backend.list_uploads("user-2", limit=2, cursor=cursor)
    for filters in ({"status": "pending"}, {"kind": "single"}, {"group_id": "x"}, {"profile": "x"}):
        with pytest.raises(InvalidCursor):
            backend.list_uploads("user-1", limit=2, cursor=cursor, **filters)
    filtered = backend.list_uploads("user-1", status="pending", limit=2).next_cursor
    with pytest.raises(InvalidCursor):
        backend.list_uploads("user-1", limit=2, cursor=filtered)

    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    tampered = []
    for index in (0, 5, len(raw) - 1):  # version, fingerprint, position
        copy = bytearray(raw)
        copy[index] ^= 0x01
        tampered.append(base64.urlsafe_b64encode(bytes(copy)).decode().rstrip("="))
    for bad in [*tampered, "x", "!!!!", cursor[:-3], "AAAA", cursor + "A"]:
        with pytest.raises(InvalidCursor):
            backend.list_uploads("user-1", limit=2, cursor=bad)
    assert issubclass(InvalidCursor, ValueError)


@pytest.mark.parametrize(
    "arguments",
    [{"limit": 0}, {"limit": 101}, {"limit": True}, {"status": "done"}, {"kind": "huge"}],
)
def test_bad_arguments(backend: Any, arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"limit|status|kind"):
        backend.list_uploads("user-1", **arguments)


def test_limit_bounds_are_allowed(backend: Any) -> None:
    records = created(backend, 101)
    assert len(backend.list_uploads("user-1", limit=100).items) == 100
    assert [r.upload_id for r in backend.list_uploads("user-1", limit=1).items] == [
        records[-1].upload_id
    ]


def test_records_past_their_ttl_leave_the_listing(backend: Any) -> None:
    short = make_record(created_at=time.time() - 1)
    backend.create(short, ttl=1)
    long = make_record()
    backend.create(long, ttl=60)
    time.sleep(1.1)
    assert [r.upload_id for r in backend.list_uploads("user-1").items] == [long.upload_id]


# -- Redis specifics --------------------------------------------------------------------------


def escaped(text: str, *also: str) -> str:
    text = text.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return text.replace("/", "%2F") if "/" in also else text


@given(st.text(), st.text())
def test_hash_tags_escape_whatever_could_end_them(name: str, key: str) -> None:
    layout = RedisLayout("p")
    assert layout.owner_events(name) == "p:{o:" + escaped(name) + "}:events"
    assert layout.object_key(name, key) == f"p:{{k:{escaped(name, '/')}/{escaped(key)}}}:upload"


def owner_keys(backend: RedisStateBackend, owner: str) -> list[bytes]:
    head = backend.layout.owner_uploads(owner)
    return sorted(backend.client.scan_iter(match=head + "*"))


def test_redis_owner_keys_share_the_owner_slot_and_expire(redis_backend: RedisStateBackend) -> None:
    owner = "we}ird{owner%"
    created(redis_backend, 3, owner=owner, group_id="g{1}", profile="p/1")
    created(redis_backend, 2, owner=owner, kind="multipart", status="uploading")
    keys = owner_keys(redis_backend, owner)
    assert len(keys) >= 7  # all, 2 statuses, 2 kinds, a group, a profile
    slot = key_slot(redis_backend.layout.owner_uploads(owner).encode())
    for key in keys:
        assert key_slot(key) == slot
        assert 0 < redis_backend.client.ttl(key) <= 60
    # The braces of another owner cannot reach into this one's keys.
    assert redis_backend.list_uploads("we").items == []
    assert len(redis_backend.list_uploads(owner).items) == 5


def test_redis_listing_is_two_round_trips(
    redis_backend: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    created(redis_backend, 120, status="uploading")
    redis_backend.ping()
    with RoundTrips().counting(monkeypatch) as trips:
        page = redis_backend.list_uploads("user-1", status="uploading", limit=50)
    assert len(page.items) == 50
    assert page.next_cursor
    assert trips.count == 2  # the index range, then the records


def test_redis_stale_entries_are_dropped_without_short_pages(
    redis_backend: RedisStateBackend,
) -> None:
    records = created(redis_backend, 40)
    client = redis_backend.client
    gone = records[5:35]  # records whose key vanished behind the index's back
    client.delete(*[redis_backend.key(r.upload_id) for r in gone])
    alive = [r for r in records if r not in gone]

    ids, sizes = every_page(lambda **kw: redis_backend.list_uploads("user-1", **kw), limit=4)
    assert ids == newest_first(alive)
    assert sizes == [4, 4, 2]
    all_key = redis_backend.layout.owner_uploads("user-1")
    assert client.zcard(all_key) == len(alive)  # pruned on the way


def test_redis_a_late_index_move_is_corrected_on_read(redis_backend: RedisStateBackend) -> None:
    """An entry left in a status set it no longer has (a move that never ran) is
    neither listed nor kept."""
    record = created(redis_backend, 1)[0]
    done = redis_backend.update(record.upload_id, {"pending"}, status="completed")
    assert done is not None
    pending_key = redis_backend.layout.owner_uploads("user-1", "s", "pending")
    member = redis_backend.client.zrange(redis_backend.layout.owner_uploads("user-1"), 0, -1)[0]
    redis_backend.client.zadd(pending_key, {member: 0})
    assert redis_backend.list_uploads("user-1", status="pending").items == []
    assert redis_backend.client.zscore(pending_key, member) is None
    assert redis_backend.list_uploads("user-1", status="completed").items == [done]


def test_redis_a_reused_id_is_listed_once_for_its_owner(redis_backend: RedisStateBackend) -> None:
    record = created(redis_backend, 1)[0]
    again = make_record(upload_id=record.upload_id, owner="user-2")
    redis_backend.create(again, ttl=60)
    assert redis_backend.list_uploads("user-1").items == []
    assert redis_backend.list_uploads("user-2").items == [again]


def test_redis_writes_prune_entries_older_than_a_ttl(redis_backend: RedisStateBackend) -> None:
    old = make_record(created_at=time.time() - 1000)
    redis_backend.create(old, ttl=60)
    redis_backend.create(make_record(), ttl=60)
    all_key = redis_backend.layout.owner_uploads("user-1")
    assert redis_backend.client.zcard(all_key) == 1
