"""Redis Cluster specifics (the contract suites run on the cluster through
``state_support.BACKENDS`` and ``test_state.backend``): one slot per operation, one
round trip per node, a sharded expiry index, settled uploads, a plain URL that reaches a
cluster node, RQ's Redis, and 503 for every cluster error."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import pytest
import redis
from conftest import BUCKET, UserClient, file_spec, make_app
from redis.connection import Connection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MovedError,
    SlotNotCoveredError,
    TryAgainError,
)
from state_support import make_record

from flask_obitox.config import ConfigError, load_settings
from flask_obitox.errors import StateUnavailable
from flask_obitox.state import MemoryStateBackend, RedisStateBackend, backend_from_uri
from flask_obitox.state.redis_cluster import (
    EXPIRY_SHARDS,
    ClusterLayout,
    RedisClusterStateBackend,
)

# -- nothing connects until first use ---------------------------------------------------


def test_the_scheme_builds_a_cluster_backend_without_connecting() -> None:
    backend = backend_from_uri("redis+cluster://:s3cret@127.0.0.1:1")  # nothing listens
    assert isinstance(backend, RedisClusterStateBackend)
    assert "s3cret" not in repr(backend)
    with pytest.raises(StateUnavailable) as info:
        backend.get("x")  # first use: the slot map cannot be read
    assert "127.0.0.1:1" in info.value.detail
    assert "s3cret" not in info.value.detail


def test_a_cluster_client_is_refused_by_the_standalone_backend(redis_cluster_url: str) -> None:
    from flask_obitox.state.redis_cluster import cluster_client

    client = cluster_client("redis://" + redis_cluster_url.partition("://")[2])
    try:
        with pytest.raises(TypeError, match="RedisClusterStateBackend"):
            RedisStateBackend(client)
        # The cluster backend takes a client of the host's own, made on first use.
        backend = RedisClusterStateBackend(lambda: client, prefix="obitox-test-cluster-own")
        assert backend.get("nothing") is None
    finally:
        client.close()


def test_an_unreachable_cluster_answers_503_and_the_app_starts() -> None:
    app, _ = make_app(
        backend_from_uri("redis+cluster://127.0.0.1:1"),
        OBITOX_STATE_BACKEND="redis+cluster://127.0.0.1:1",
        OBITOX_RQ_REDIS_URL="redis://127.0.0.1:1/0",
    )
    response = UserClient(app, "alice").post("/uploads", json=file_spec())
    assert response.status_code == 503
    assert response.json["error"] == "STATE_UNAVAILABLE"


# -- the layout ---------------------------------------------------------------------------


def test_expiry_shards_spread_evenly_over_the_slot_space() -> None:
    layout = ClusterLayout("obitox")
    slots = [key_slot(key.encode()) for key in layout.expiry_shards]
    assert len(set(layout.expiry_shards)) == EXPIRY_SHARDS
    share = 16384 // EXPIRY_SHARDS
    assert all(n * share <= slot < (n + 2) * share for n, slot in enumerate(slots))
    # Three primaries with the even split redis-cli makes hold a third of the shards each.
    thirds = Counter(min(slot * 3 // 16384, 2) for slot in slots)
    assert sorted(thirds.values()) == [EXPIRY_SHARDS // 3] * 3
    # An upload's entry goes to the shard of its own share of the slot space.
    for _ in range(50):
        upload_id = uuid.uuid4().hex
        shard = layout.expiry_of(upload_id)
        own = key_slot(layout.upload(upload_id).encode()) * EXPIRY_SHARDS // 16384
        assert shard == layout.expiry_shards[own]


@pytest.mark.parametrize(
    "error",
    [
        MovedError("3999 127.0.0.1:6381"),
        AskError("3999 127.0.0.1:6381"),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        MasterDownError("MASTERDOWN"),
        SlotNotCoveredError("slot 12 is not covered"),
        TryAgainError("TRYAGAIN"),
        ClusterError("TTL exhausted"),
    ],
)
def test_every_cluster_error_is_state_unavailable(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = RedisStateBackend(redis.Redis(), prefix="obitox-test-cluster-errors")

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(backend.client, "get", fail)
    with pytest.raises(StateUnavailable) as info:
        backend.get("x")
    assert type(error).__name__ in info.value.detail


# -- against the real cluster ---------------------------------------------------------------


def test_every_key_of_one_upload_operation_is_on_one_slot(
    cluster_backend: RedisClusterStateBackend, redis_cluster_url: str
) -> None:
    """A batch of several owners, a group, an event: every key the backend wrote is
    hash-tagged, and the keys of one record, owner or group share a slot."""
    group_owner = "owner-{0}"  # braces in an owner must not end its tag early
    from state_support import make_group

    group = make_group(owner=group_owner)
    cluster_backend.create_group(group, ttl=60)
    records = [
        make_record(owner=f"owner-{{{i % 3}}}", key=f"custom/{i}.jpg", group_id=None)
        for i in range(9)
    ]
    records.append(make_record(owner=group_owner, group_id=group.group_id))
    cluster_backend.create_many(records, ttl=60)
    cluster_backend.append_event(group_owner, {"type": "x"})
    keys = _keys(redis_cluster_url, cluster_backend.prefix)
    assert all("{" in key and "}" in key for key in keys)
    layout = cluster_backend.layout
    owner_keys = [k for k in keys if k.startswith(layout.owner_uploads(group_owner)[:-8])]
    assert len({key_slot(k.encode()) for k in owner_keys}) == 1
    group_keys = [layout.group(group.group_id), layout.group_members(group.group_id)]
    assert len({key_slot(k.encode()) for k in group_keys}) == 1
    # Every key lives with a TTL except the expiry shards.
    shards = set(layout.expiry_shards)
    client = cluster_backend.client
    assert all(client.ttl(key) > 0 for key in keys if key not in shards)


def _keys(url: str, prefix: str) -> list[str]:
    client = cluster_backend_client(url)
    try:
        found: list[str] = []
        for node in client.get_primaries():
            connection = client.get_redis_connection(node)
            found += [k.decode() for k in connection.scan_iter(match=f"{prefix}*", count=1000)]
        return found
    finally:
        client.close()


def cluster_backend_client(url: str) -> Any:
    from flask_obitox.state.redis_cluster import cluster_client

    return cluster_client("redis://" + url.partition("://")[2])


def test_a_batch_is_one_round_trip_per_node(
    cluster_backend: RedisClusterStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster_backend.ping()  # connect to every primary first: the handshakes are not the batch's
    cluster_backend.create_many([make_record()], ttl=60)
    sent: list[tuple[Any, int]] = []
    original: Any = Connection.send_packed_command

    def spy(self: Connection, command: Any, check_health: bool = True) -> None:
        sent.append((self.port, len(command)))
        original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", spy)
    records = [make_record(owner=f"user-{i % 7}") for i in range(100)]
    cluster_backend.create_many(records, ttl=60)
    ports = [port for port, _ in sent]
    assert len(ports) == len(set(ports)) == 3  # one packet to each primary
    sent.clear()
    assert cluster_backend.get_many([r.upload_id for r in records]) == records
    assert sorted(port for port, _ in sent) == sorted(set(ports))
    monkeypatch.undo()
    assert len(cluster_backend.expired_ids(time.time() + 10_000)) == 101


def test_the_expiry_index_spreads_over_every_primary(
    cluster_backend: RedisClusterStateBackend,
) -> None:
    records = [make_record() for _ in range(300)]
    cluster_backend.create_many(records, ttl=60)
    client = cluster_backend.client
    per_node: Counter[str] = Counter()
    for key in cluster_backend.layout.expiry_shards:
        node = client.get_node_from_key(key)
        per_node[node.name] += client.zcard(key)
    assert len(per_node) == 3
    assert max(per_node.values()) <= 1.5 * (300 / 3)
    # Oldest first across the shards, and a limit cuts the merged list.
    expires = sorted((r.expires_at, r.upload_id) for r in records)
    now = time.time() + 10_000
    assert cluster_backend.expired_ids(now, limit=7) == [i for _, i in expires[:7]]
    cluster_backend.forget_expired([i for _, i in expires[:150]])
    assert cluster_backend.expired_ids(now, limit=1000) == [i for _, i in expires[150:]]


@pytest.mark.parametrize("kind", ["memory", "redis", "cluster"])
def test_a_settled_upload_leaves_the_index_and_keeps_its_record_a_settled_ttl(
    kind: str, request: pytest.FixtureRequest
) -> None:
    backend: Any = (
        MemoryStateBackend() if kind == "memory" else request.getfixturevalue(f"{kind}_backend")
    )
    backend.settled_ttl = 60
    done, failed, expired, stays = (make_record(expires_at=time.time() - 1) for _ in range(4))
    backend.create_many([done, failed, expired, stays], ttl=3600)
    assert backend.update(done.upload_id, {"pending"}, status="completed") is not None
    assert backend.update(failed.upload_id, {"pending"}, status="rejected") is not None
    assert backend.update(expired.upload_id, {"pending"}, status="expired") is not None
    assert backend.update(stays.upload_id, {"pending"}, status="uploading") is not None
    # Cleanup still frees an expired upload's storage; nothing is left to do for the rest.
    assert sorted(backend.expired_ids(time.time())) == sorted([expired.upload_id, stays.upload_id])
    # A later change (completed -> deleted) never lengthens it.
    assert backend.update(done.upload_id, {"completed"}, status="deleted") is not None
    if kind != "memory":
        client = backend.client
        for record in (done, failed, expired):
            assert 0 < client.ttl(backend.key(record.upload_id)) <= 60
        assert client.ttl(backend.key(stays.upload_id)) > 3000
    else:
        backend._purge(time.monotonic() + 61)
        assert [backend.get(r.upload_id) for r in (done, failed, expired)] == [None] * 3
        assert backend.get(stays.upload_id) is not None


def test_records_of_the_previous_release_stay_readable_on_standalone(
    redis_backend: RedisStateBackend,
) -> None:
    """A record and expiry entry written the way today's release writes them (plain
    ``SET``, the one ``<prefix>:expiry`` set) are read, completed and cleaned up."""
    record = make_record(status="uploading", expires_at=time.time() - 1)
    client = redis_backend.client
    client.set(redis_backend.key(record.upload_id), record.to_json(), ex=3600)
    client.zadd(f"{redis_backend.prefix}:expiry", {record.upload_id: record.expires_at})
    assert redis_backend.get(record.upload_id) == record
    assert redis_backend.expired_ids(time.time()) == [record.upload_id]
    assert redis_backend.update(record.upload_id, {"uploading"}, status="completed") is not None
    assert redis_backend.expired_ids(time.time()) == []


# -- a plain URL that reaches a cluster node ------------------------------------------------


def _node_url(cluster_url: str) -> str:
    return "redis://" + cluster_url.partition("://")[2] + "/0"


def test_a_plain_url_to_a_cluster_node_fails_at_first_use(redis_cluster_url: str) -> None:
    backend = RedisStateBackend.from_url(_node_url(redis_cluster_url), prefix="obitox-test-x")
    with pytest.raises(StateUnavailable) as info:
        backend.create(make_record(), ttl=60)  # not even a third of the keys lands
    assert "Redis Cluster node" in info.value.detail
    assert "redis+cluster://" in info.value.detail
    app, _ = make_app(backend)
    response = UserClient(app, "alice").post("/uploads", json=file_spec())
    assert response.status_code == 503
    assert response.json["error"] == "STATE_UNAVAILABLE"


def test_the_doctor_names_redis_cluster_for_the_state_and_the_queue(
    redis_cluster_url: str, s3_server: Any, moto_server: str
) -> None:
    node = _node_url(redis_cluster_url)
    app, _ = make_app(
        None,
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_STATE_BACKEND=node,
        OBITOX_RQ_REDIS_URL=node,
        OBITOX_WEBHOOKS=[{"url": "http://127.0.0.1:9/hooks", "secret": "whsec_" + "A" * 44}],
        OBITOX_WEBHOOK_ALLOW_PRIVATE=True,
        OBITOX_RQ_QUEUE=f"obitox-test-cluster-{uuid.uuid4().hex[:8]}",
    )
    result = app.test_cli_runner().invoke(args=["obitox", "doctor", "--json"])
    import json

    checks = {item["check"]: item for item in json.loads(result.output)}
    assert result.exit_code == 1
    for name in ("state", "queue"):
        assert checks[name]["status"] == "fail"
        assert "redis+cluster://" in checks[name]["detail"]


def test_the_doctor_passes_a_cluster_state(
    redis_cluster_url: str, redis_url: str, s3_server: Any, moto_server: str
) -> None:
    app, _ = make_app(
        None,
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_STATE_BACKEND=redis_cluster_url,
        OBITOX_RQ_REDIS_URL=redis_url,
    )
    result = app.test_cli_runner().invoke(args=["obitox", "doctor", "--json"])
    import json

    checks = {item["check"]: item for item in json.loads(result.output)}
    assert checks["state"]["status"] == "ok", checks["state"]
    assert "answered PING" in checks["state"]["detail"]


# -- configuration --------------------------------------------------------------------------


def test_a_cluster_state_requires_its_own_rq_redis() -> None:
    with pytest.raises(ConfigError, match="OBITOX_RQ_REDIS_URL is required") as info:
        load_settings({"OBITOX_BUCKET": BUCKET, "OBITOX_STATE_BACKEND": "redis+cluster://n:7000"})
    assert "redis+cluster://" in str(info.value)
    with pytest.raises(ConfigError, match="OBITOX_RQ_REDIS_URL"):
        load_settings(
            {
                "OBITOX_BUCKET": BUCKET,
                "OBITOX_STATE_BACKEND": "redis+cluster://n:7000",
                "OBITOX_RQ_REDIS_URL": "redis+cluster://n:7000",
            }
        )
    settings = load_settings(
        {
            "OBITOX_BUCKET": BUCKET,
            "OBITOX_STATE_BACKEND": "redis+cluster://n:7000",
            "OBITOX_RQ_REDIS_URL": "redis://q:6379/0",
        }
    )
    assert settings.rq_redis_url == "redis://q:6379/0"
    assert settings.settled_ttl == 86400


def test_settled_ttl_is_validated_and_reaches_the_backend() -> None:
    with pytest.raises(ConfigError, match="OBITOX_SETTLED_TTL"):
        load_settings({"OBITOX_BUCKET": BUCKET, "OBITOX_SETTLED_TTL": 5})
    state = MemoryStateBackend()
    make_app(state, OBITOX_SETTLED_TTL=3600)
    assert state.settled_ttl == 3600


def test_rate_limits_on_a_cluster_state_count_on_rq_redis(
    redis_cluster_url: str, redis_url: str
) -> None:
    app, _ = make_app(
        None,
        OBITOX_STATE_BACKEND=redis_cluster_url,
        OBITOX_RQ_REDIS_URL=redis_url,
        OBITOX_RATE_LIMITS="2 per minute",
    )
    limiter = app.extensions["obitox"].limiter
    assert limiter is not None
    client = UserClient(app, f"rate-{uuid.uuid4().hex[:8]}")
    codes = [client.post("/uploads", json=file_spec()).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
