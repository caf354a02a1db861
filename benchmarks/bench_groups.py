"""State round trips and CPU of the group view (``GET /groups/<id>``) of a 100-file
group, against the naive way (read the group, then each member on its own).

Real Redis (``OBITOX_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/15``) under a
key prefix of its own, deleted afterwards. Round trips are counted as the packets
redis-py sends (every command path sends once, then reads its replies); commands are
counted from ``INFO commandstats`` before and after (other clients of the same server
add to those, so they are shown only as an upper bound).

Usage: python benchmarks/bench_groups.py [ITERATIONS] [ours|naive]
  ITERATIONS 0: set up and count only. With ``ours`` or ``naive`` only that way is
  timed, for instruction counts: ``valgrind --tool=callgrind`` of K and of 0 iterations,
  the difference divided by K, is one view's instructions whatever the machine's load.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from typing import Any

import redis
from redis.connection import Connection

from flask_obitox import RedisStateBackend
from flask_obitox.domain import render_group, render_upload
from flask_obitox.state import GroupRecord, UploadRecord

MEMBERS = 100


class Counter:
    def __init__(self) -> None:
        self.packets = 0
        original: Any = Connection.send_packed_command

        def spy(connection: Connection, command: Any, check_health: bool = True) -> None:
            self.packets += 1
            original(connection, command, check_health)

        Connection.send_packed_command = spy  # type: ignore[method-assign]


def commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


def setup(backend: RedisStateBackend) -> str:
    now = time.time()
    group = GroupRecord(
        group_id=uuid.uuid4().hex, owner="bench", name="holiday", status="pending",
        created_at=now, updated_at=now, expires_at=now + 3600,
    )  # fmt: skip
    backend.create_group(group, ttl=3600)
    records = [
        UploadRecord(
            upload_id=uuid.uuid4().hex,
            owner="bench",
            kind="single",
            bucket="b",
            key=f"uploads/{i}/f.bin",
            filename="f.bin",
            content_type="image/png",
            size=1000 + i,
            status="pending",
            created_at=now,
            updated_at=now,
            expires_at=now + 3600,
            group_id=group.group_id,
        )
        for i in range(MEMBERS)
    ]
    backend.create_many(records, ttl=3600)
    return group.group_id


def ours(backend: RedisStateBackend, group_id: str) -> dict[str, Any]:
    found = backend.get_group_uploads(group_id)
    assert found is not None
    group, members = found
    return {**render_group(group, members), "uploads": [render_upload(m) for m in members]}


def naive(backend: RedisStateBackend, group_id: str) -> dict[str, Any]:
    group = backend.get_group(group_id)
    assert group is not None
    members = [backend.get(upload_id) for upload_id in backend.group_members(group_id)]
    found = [m for m in members if m is not None]
    return {**render_group(group, found), "uploads": [render_upload(m) for m in found]}


def main() -> None:
    iterations = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    url = os.environ.get("OBITOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    prefix = f"obitox-bench-groups-{uuid.uuid4().hex[:8]}"
    backend = RedisStateBackend.from_url(url, prefix=prefix)
    admin = redis.Redis.from_url(url)
    counter = Counter()
    try:
        group_id = setup(backend)
        assert ours(backend, group_id) == naive(backend, group_id)
        print(f"group view of {MEMBERS} files, {iterations} iterations each")
        only = sys.argv[2] if len(sys.argv) > 2 else None
        ways = (("ours (get_group_uploads)", ours), ("naive (a GET per member)", naive))
        for name, view in ways:
            if only is not None and not name.startswith(only):
                continue
            before_commands = commands(admin)
            before_packets = counter.packets
            view(backend, group_id)
            trips = counter.packets - before_packets
            spent = commands(admin) - before_commands - 1  # less the INFO itself
            start = time.process_time()
            for _ in range(iterations):
                view(backend, group_id)
            cpu = (time.process_time() - start) / iterations if iterations else 0.0
            print(
                f"  {name:<26} round trips {trips:4d}   commands <= {spent:4d}   "
                f"client CPU {cpu * 1e3:7.2f} ms/view"
            )
            if name.startswith("ours"):
                ours_cpu, ours_trips = cpu, trips
            elif only is None:
                if iterations:
                    print(f"  naive / ours: {cpu / ours_cpu:.2f}x the client CPU, ", end="")
                print(f"{trips / ours_trips:.0f}x the round trips")
    finally:
        keys = list(admin.scan_iter(match=f"{prefix}*"))
        if keys:
            admin.delete(*keys)


if __name__ == "__main__":
    main()
