"""Upload state in Redis.

Layout (every upload key is hash-tagged, so it is Redis Cluster safe)::

    <prefix>:{<upload_id>}:upload   string, the record as compact JSON, SET ... EX ttl
    <prefix>:expiry                 sorted set, member upload_id, score expires_at

``update`` is a compare-and-swap on the whole stored value: read, check the status in
Python, build the new JSON, and let a one-key Lua script write it only if the stored
value is still byte-for-byte what was read (``SET ... KEEPTTL``). If another writer got
there first the loop re-reads and re-checks the expectation.

Every connectivity failure (refused, timed out, loading, read-only replica, cluster
down, ...) is raised as :class:`~flask_obitox.errors.StateUnavailable`, whose message
names the server without its password.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.exceptions import (
    ClusterDownError,
    InvalidResponse,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    TryAgainError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from ..errors import StateUnavailable
from ..redis_client import describe_client, redact_url, redis_from_url
from .base import (
    UploadRecord,
    apply_changes,
    check_changes,
    check_ttl,
    expected_statuses,
)

__all__ = ["UNAVAILABLE_ERRORS", "RedisStateBackend", "redact_url"]

#: redis-py errors that mean "the store cannot answer now", not "you asked wrongly".
#: ConnectionError covers refused/reset, AuthenticationError, BusyLoadingError and
#: MaxConnectionsError; ClusterDownError covers MasterDownError; InvalidResponse is
#: something other than Redis answering (a proxy, an HTTP port).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    ClusterDownError,
    TryAgainError,
    InvalidResponse,
    OSError,
)

#: Set KEYS[1] to ARGV[2] only if it still holds ARGV[1]; keep its TTL.
_CAS_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
    return 1
end
return 0
"""

#: How many lost compare-and-swap races ``update`` tolerates before giving up.
MAX_CAS_ATTEMPTS = 64


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStateBackend:
    """Upload records in Redis (standalone, Sentinel-managed or Cluster-compatible keys)."""

    def __init__(
        self, client: redis.Redis, *, prefix: str = "obitox", url: str | None = None
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.url = redact_url(url) if url is not None else describe_client(client)
        self._expiry_key = f"{prefix}:expiry"
        self._key_head = f"{prefix}:{{"
        # register_script does not talk to the server: the script is loaded on first use.
        self._cas = client.register_script(_CAS_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "obitox", **kw: Any) -> RedisStateBackend:
        """A backend with its own client for ``url``
        (:func:`~flask_obitox.redis_client.redis_from_url`).

        Nothing connects here. Replies time out after 2 s; ``kw`` overrides any client
        option (``socket_timeout``, ``retry``, ``max_connections``, ...).
        """
        return cls(redis_from_url(url, **kw), prefix=prefix, url=url)

    @property
    def client(self) -> redis.Redis:
        return self._client

    def __repr__(self) -> str:
        return f"<RedisStateBackend {self.url} prefix={self.prefix!r}>"

    def key(self, upload_id: str) -> str:
        """The Redis key holding ``upload_id``'s record."""
        return f"{self._key_head}{upload_id}}}:upload"

    def _unavailable(self, action: str, exc: BaseException) -> StateUnavailable:
        return StateUnavailable(
            f"Redis at {self.url} is unavailable ({action}): {type(exc).__name__}: {exc}"
        )

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise self._unavailable(action, exc) from exc

    # -- StateBackend ------------------------------------------------------------------

    def create(self, record: UploadRecord, ttl: int) -> None:
        self.create_many((record,), ttl)

    def create_many(self, records: Sequence[UploadRecord], ttl: int) -> None:
        """One ``SET key json EX ttl`` per record and one ``ZADD`` for the batch, sent
        together on one connection: one round trip.

        The commands are packed by redis-py's own ``Connection.pack_commands`` and the
        replies read with ``read_response``, without a ``Pipeline`` object: for 100
        records that halves the time (its per-command bookkeeping dominates; measured
        in ``docs/performance.rst``).

        Not a MULTI/EXEC transaction: each record lives in its own hash slot (so the
        layout works on Redis Cluster), and a transaction cannot span slots. Each record
        is one atomic SET, so no record is ever half written; if Redis fails part way,
        the caller answers 503 and never hands out the ids of the records that did land,
        which expire with their TTL.
        """
        check_ttl(ttl)
        if not records:
            return
        commands: list[tuple[Any, ...]] = [
            ("SET", self.key(r.upload_id), r.to_json(), "EX", ttl) for r in records
        ]
        # Keep the index bounded: an entry that expired more than ``ttl`` ago belongs to a
        # record created even earlier, whose key (``ttl`` from its creation) is gone.
        # Pruned before the ZADD, so this batch's own entries always stay.
        commands.append(("ZREMRANGEBYSCORE", self._expiry_key, "-inf", f"({time.time() - ttl}"))
        zadd: list[Any] = ["ZADD", self._expiry_key]
        for record in records:
            zadd += (record.expires_at, record.upload_id)
        commands.append(tuple(zadd))
        pool = self._client.connection_pool
        try:
            connection: Any = pool.get_connection()
        except RedisError as exc:
            raise self._unavailable("create", exc) from exc

        def attempt() -> None:
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                connection.read_response()

        try:
            # Every command here is idempotent, so the connection's retry policy may resend.
            connection.retry.call_with_retry(attempt, lambda _error: connection.disconnect())
        except RedisError as exc:
            # A reply may be left unread after an error: never reuse this connection.
            connection.disconnect()
            raise self._unavailable("create", exc) from exc
        finally:
            pool.release(connection)

    def get(self, upload_id: str) -> UploadRecord | None:
        with self._guard("get"):
            raw: bytes | str | None = self._client.get(self.key(upload_id))
        return None if raw is None else UploadRecord.from_json(raw)

    def update(
        self, upload_id: str, expect_status: Collection[str], **changes: Any
    ) -> UploadRecord | None:
        check_changes(changes)
        expect_status = expected_statuses(expect_status)
        key = self.key(upload_id)
        client = self._client
        with self._guard("update"):
            for _ in range(MAX_CAS_ATTEMPTS):
                old: bytes | str | None = client.get(key)
                if old is None:
                    return None
                record = UploadRecord.from_json(old)
                if record.status not in expect_status:
                    return None
                new = apply_changes(record, changes, time.time())
                # 0: someone else wrote in between; re-read and re-check. (If the reply
                # to a CAS that did write is lost and the command retried, the retry
                # answers 0 and the caller sees None, as a loser would; the stored record
                # is ours. Claiming success there could give two winners.)
                if self._cas(keys=[key], args=[old, new.to_json()]) == 1:
                    if "expires_at" in changes:
                        client.zadd(self._expiry_key, {upload_id: new.expires_at})
                    return new
        raise StateUnavailable(
            f"Redis at {self.url}: update of {upload_id!r} lost {MAX_CAS_ATTEMPTS} races in a row"
        )

    def delete(self, upload_id: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self.key(upload_id))
        pipe.zrem(self._expiry_key, upload_id)
        with self._guard("delete"):
            pipe.execute()

    def expired_ids(self, now: float, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        with self._guard("expired_ids"):
            ids = cast(
                "list[bytes | str]",
                self._client.zrangebyscore(self._expiry_key, "-inf", now, start=0, num=limit),
            )
        return [_text(i) for i in ids]

    def forget_expired(self, upload_ids: Sequence[str]) -> None:
        if not upload_ids:
            return
        with self._guard("forget_expired"):
            self._client.zrem(self._expiry_key, *upload_ids)

    def ping(self) -> float:
        with self._guard("ping"):
            start = time.perf_counter()
            self._client.ping()
            return time.perf_counter() - start
