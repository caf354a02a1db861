"""Upload state on a Redis Cluster: ``OBITOX_STATE_BACKEND=redis+cluster://host:port``.

The standalone backend's layout already puts every key of one operation in one hash
slot (:mod:`~flask_obitox.state.redis_layout`); this backend keeps that layout and
changes only what a cluster cannot do:

- **Many slots in one round trip.** A batch, a bulk read (no cross-slot ``MGET``) and a
  compare-and-set with its index move go through redis-py's cluster pipeline, which
  sends one packet per node and reads the replies after all are sent: one round trip
  per node, the nodes in parallel.
- **No hot key.** The expiry index is :data:`EXPIRY_SHARDS` sorted sets, each tagged to
  a slot of its own share of the slot space, so any even slot assignment spreads them
  evenly over the primaries. An upload's entry goes to the shard whose share holds the
  upload's own slot: usually on the node of its record.
- **Nothing connects at start-up.** redis-py's ``RedisCluster`` asks a node for the
  slot map when it is made, so the client is made on first use, and a cluster that
  cannot be reached then is ``StateUnavailable`` like every other failure.

Redirections (``MOVED``/``ASK``) are followed by redis-py; when a slot has no node
(a primary died and its replica has not taken over yet) or redirections run out, the
error is ``StateUnavailable`` (503), and the next request after the failover works.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import RedisClusterException, RedisError
from redis.retry import Retry

from ..redis_client import DEFAULT_CLIENT_OPTIONS, redact_url
from .base import UploadRecord
from .redis import RedisStateBackend, counted
from .redis_base import text
from .redis_layout import (
    BYTES_SCRIPT,
    CAS_SCRIPT,
    INDEX_SCRIPT,
    JOIN_SCRIPT,
    MOVE_SCRIPT,
    RedisLayout,
)

__all__ = ["EXPIRY_SHARDS", "ClusterLayout", "RedisClusterStateBackend"]

#: How many sorted sets the expiry index is split into: a multiple of the primaries of
#: any usual cluster (3, 6, 12, 4, 8, 24 all divide it evenly or nearly).
EXPIRY_SHARDS = 24


def _shard_tags(prefix: str, shards: int) -> list[str]:
    """For each shard ``n``, the smallest tag ``x:<i>`` whose slot lies in the ``n``-th
    of ``shards`` equal shares of the slot space."""
    tags: list[str] = []
    for n in range(shards):
        low = n * REDIS_CLUSTER_HASH_SLOTS // shards
        high = (n + 1) * REDIS_CLUSTER_HASH_SLOTS // shards
        i = 0
        while not low <= key_slot(f"x:{n}.{i}".encode()) < high:
            i += 1
        tags.append(f"x:{n}.{i}")
    return [f"{prefix}:{{{tag}}}:expiry" for tag in tags]


class ClusterLayout(RedisLayout):
    """The standalone layout, with the expiry index sharded."""

    def __init__(self, prefix: str, shards: int = EXPIRY_SHARDS) -> None:
        super().__init__(prefix)
        self.expiry_shards = _shard_tags(prefix, shards)

    def expiry_of(self, upload_id: str) -> str:
        """The expiry shard whose share of the slot space holds ``upload_id``'s slot."""
        slot = key_slot(self.upload(upload_id).encode())
        return self.expiry_shards[slot * len(self.expiry_shards) // REDIS_CLUSTER_HASH_SLOTS]


def cluster_client(url: str, *, socket_timeout: float = 2.0, **overrides: Any) -> RedisCluster:
    """A ``RedisCluster`` for ``redis+cluster://[user:password@]host:port[,host:port...]``
    (connects: call it on first use). Timeouts as for a standalone client; a command
    that meets a failover retries three times within about a second, then fails."""
    parts = urlsplit(url)
    nodes = []
    for netloc in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = netloc.rpartition(":")
        node: Any = ClusterNode
        nodes.append(node(host.strip("[]") or "localhost", int(port or 6379)))
    options: dict[str, Any] = dict(DEFAULT_CLIENT_OPTIONS)
    options.update(
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
    )
    if parts.username:
        options["username"] = parts.username
    if parts.password:
        options["password"] = parts.password
    options.update(overrides)
    return RedisCluster(startup_nodes=nodes, **options)


class RedisClusterStateBackend(RedisStateBackend):
    """Upload records on a Redis Cluster, with every capability of the standalone
    backend and the same keys (but a sharded expiry index).

    ``connect`` makes the ``RedisCluster`` client on first use: :meth:`from_url` builds
    one from the URL; a host with a client of its own passes ``lambda: client``.
    """

    layout: ClusterLayout

    def __init__(
        self,
        connect: Any,
        *,
        prefix: str = "obitox",
        url: str = "redis+cluster://",
        events_retention: int = 1000,
    ) -> None:
        # RedisBase.__init__ is not run: it needs a client, and this one is made on
        # first use (``_client``).
        self._connect = connect
        self._cluster: RedisCluster | None = None
        self._scripts: tuple[Script, Script, Script, Script] | None = None
        self._connecting = threading.Lock()
        self.prefix = prefix
        self.url = redact_url(url)
        self.layout = ClusterLayout(prefix)
        self.events_retention = events_retention
        self._index_keys_of: dict[tuple[Any, ...], tuple[str, ...]] = {}  # as RedisStateBackend

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "obitox", events_retention: int = 1000, **kw: Any
    ) -> RedisClusterStateBackend:
        """A backend for ``redis+cluster://host:port`` (more seed nodes after commas).
        Nothing connects here; ``kw`` overrides any client option."""
        node_url = "redis://" + url.partition("://")[2]
        return cls(
            lambda: cluster_client(node_url, **kw),
            prefix=prefix,
            url=url,
            events_retention=events_retention,
        )

    def __repr__(self) -> str:
        return f"<RedisClusterStateBackend {self.url} prefix={self.prefix!r}>"

    # -- the client, made on first use ------------------------------------------------

    @property
    def _client(self) -> Any:  # type: ignore[override]
        cluster = self._cluster
        if cluster is None:
            with self._connecting:
                if self._cluster is None:
                    try:
                        made = self._connect()
                    except (RedisError, RedisClusterException, OSError) as exc:
                        raise self._unavailable("connect", exc) from exc
                    self._scripts = (
                        made.register_script(CAS_SCRIPT),
                        made.register_script(MOVE_SCRIPT),
                        made.register_script(JOIN_SCRIPT),
                        made.register_script(BYTES_SCRIPT),
                    )
                    self._cluster = made
                cluster = self._cluster
        return cluster

    def _script(self, index: int) -> Script:
        if self._scripts is None:
            self._client  # noqa: B018 -- made with the client
        assert self._scripts is not None
        return self._scripts[index]

    @property
    def _cas(self) -> Script:  # type: ignore[override]
        return self._script(0)

    @property
    def _move(self) -> Script:  # type: ignore[override]
        return self._script(1)

    @property
    def _join(self) -> Script:  # type: ignore[override]
        return self._script(2)

    @property
    def _bytes(self) -> Script:  # type: ignore[override]
        return self._script(3)

    @property
    def client(self) -> Any:
        return self._client

    def close(self) -> None:
        """Close every connection (a new client is made on the next use)."""
        with self._connecting:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()

    # -- what a cluster does differently ------------------------------------------------

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """As for a standalone Redis, plus redis-py's own cluster failures: no node of the
        cluster reachable (``RedisClusterUnreachableError`` since redis-py 6.2, a bare
        ``RedisClusterException`` before)."""
        try:
            with super()._guard(action):
                yield
        except RedisClusterException as exc:
            raise self._unavailable(action, exc) from exc

    #: A cluster pipeline may resend its commands, appends included: two steps.
    appends_ride_writes = False

    def _send(self, commands: list[tuple[Any, ...]], action: str) -> list[Any]:
        """``commands`` through the cluster pipeline: one packet per node."""
        with self._guard(action):
            pipe = self._client.pipeline()
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute())

    def _write_commands(
        self,
        keys: Sequence[str],
        values: Sequence[Any],
        records: Sequence[UploadRecord],
        ttl: int,
        events: Sequence[tuple[str, bytes]],
    ) -> list[tuple[Any, ...]]:
        """A ``SET`` per key, per expiry shard a prune and a ``ZADD``, per owner one
        :data:`~.redis_layout.INDEX_SCRIPT`: the keys lie in many slots, which no script
        may span (an owner's sets share its slot). No events: a cluster pipeline may
        resend its commands, so they are appended on their own
        (:attr:`appends_ride_writes`)."""
        assert not events, "a cluster appends events on their own"
        commands: list[tuple[Any, ...]] = [
            ("SET", key, value, "EX", ttl) for key, value in zip(keys, values, strict=True)
        ]
        cutoff = self._expiry_cutoff(ttl)
        for key, entries in self._expiry_entries(records).items():
            commands.append(("ZREMRANGEBYSCORE", key, "-inf", cutoff))
            commands.append(("ZADD", key, *entries))
        cutoff = self._index_cutoff(ttl)
        for sets in self._index_entries(records).values():
            commands.append(
                ("EVAL", INDEX_SCRIPT, len(sets), *sets, ttl, cutoff, *counted(sets.values()))
            )
        return commands

    def _mget(self, keys: Sequence[str]) -> list[bytes | str | None]:
        if not keys:
            return []
        pipe = self._client.pipeline()
        for key in keys:
            pipe.get(key)
        return list(pipe.execute())

    def _pool_for(self, key: str) -> Any:
        node = self._client.get_node_from_key(key)
        return self._client.get_redis_connection(node).connection_pool

    #: An owner's events stream and the wake-up stream live on different slots: streams
    #: each wait on their own (:meth:`wait_for_events`), not on one shared read.
    many_owner_reads = False

    def _send_appends(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """One ``EVAL`` per owner (one key each), pipelined: one round trip per node."""
        with self._guard("append_events"):
            pipe = self._client.pipeline()
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute(raise_on_error=False))

    def _expiry_key(self, upload_id: str) -> str:
        return self.layout.expiry_of(upload_id)

    def expired_ids(self, now: float, limit: int = 1000) -> list[str]:
        """Up to ``limit`` of each shard (one pipeline), merged oldest first."""
        if limit <= 0:
            return []
        with self._guard("expired_ids"):
            pipe = self._client.pipeline()
            for key in self.layout.expiry_shards:
                pipe.zrangebyscore(key, "-inf", now, start=0, num=limit, withscores=True)
            shards = pipe.execute()
        due = heapq.merge(*([(score, text(i)) for i, score in shard] for shard in shards))
        return [upload_id for _, upload_id in list(due)[:limit]]

    def forget_expired(self, upload_ids: Sequence[str]) -> None:
        if not upload_ids:
            return
        by_shard: dict[str, list[str]] = {}
        for upload_id in upload_ids:
            by_shard.setdefault(self._expiry_key(upload_id), []).append(upload_id)
        with self._guard("forget_expired"):
            pipe = self._client.pipeline()
            for key, ids in by_shard.items():
                pipe.zrem(key, *ids)
            pipe.execute()

    def ping(self) -> float:
        """The round trip to every primary (the slowest one's)."""
        with self._guard("ping"):
            start = time.perf_counter()
            self._client.ping(target_nodes=RedisCluster.PRIMARIES)
            return time.perf_counter() - start
