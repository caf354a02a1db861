"""What the state contract suites share: records to store, the backends that claim a
capability, and a round-trip counter for Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from redis.connection import Connection

from flask_obitox.state import GroupRecord, MemoryStateBackend, UploadRecord

#: Every backend a capability suite runs against (each suite skips those not claiming it).
#: "cluster" runs when OBITOX_TEST_REDIS_CLUSTER_URL names a Redis Cluster, else skips.
BACKENDS = ["memory", "redis", "cluster"]


def backend_claiming(request: pytest.FixtureRequest, capability: type) -> Any:
    """The backend ``request.param`` names, if it claims ``capability``."""
    if request.param == "memory":
        backend: Any = MemoryStateBackend()
    else:
        backend = request.getfixturevalue(f"{request.param}_backend")
    if not isinstance(backend, capability):
        pytest.skip(f"{type(backend).__name__} does not claim {capability.__name__}")
    return backend


def make_record(**changes: Any) -> UploadRecord:
    now = time.time()
    values: dict[str, Any] = {
        "upload_id": uuid.uuid4().hex,
        "owner": "user-1",
        "kind": "single",
        "bucket": "uploads",
        "key": f"u/1/{uuid.uuid4().hex}.jpg",
        "filename": "photo.jpg",
        "content_type": "image/jpeg",
        "size": 12345,
        "status": "pending",
        "created_at": now,
        "updated_at": now,
        "expires_at": now + 900,
    }
    values.update(changes)
    return UploadRecord(**values)


def make_group(**changes: Any) -> GroupRecord:
    now = time.time()
    values: dict[str, Any] = {
        "group_id": uuid.uuid4().hex,
        "owner": "user-1",
        "name": "holiday",
        "status": "pending",
        "created_at": now,
        "updated_at": now,
        "expires_at": now + 900,
    }
    values.update(changes)
    return GroupRecord(**values)


class RoundTrips:
    """Counts the packets sent to Redis (each one is a round trip: every command path of
    redis-py sends once, then reads its replies)."""

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def counting(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTrips]:
        original: Any = Connection.send_packed_command

        def spy(connection: Connection, command: Any, check_health: bool = True) -> None:
            self.count += 1
            original(connection, command, check_health)

        self.count = 0
        with monkeypatch.context() as patch:
            patch.setattr(Connection, "send_packed_command", spy)
            yield self
