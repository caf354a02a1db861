"""What every part of the Redis backend shares: the client, the key layout, the scripts,
turning connection failures into ``StateUnavailable``, and paging through an index.

:class:`~flask_obitox.state.redis.RedisStateBackend` is this base plus one mixin per
capability (``redis_groups``, ``redis_events``), each a module of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from redis.exceptions import (
    AskError,
    ClusterError,
    InvalidResponse,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

from ..errors import StateUnavailable
from ..redis_client import describe_client, redact_url
from .base import UploadRecord
from .capabilities import Page
from .cursor import decode_cursor, encode_cursor, member_id
from .redis_layout import BYTES_SCRIPT, CAS_SCRIPT, JOIN_SCRIPT, MOVE_SCRIPT, RedisLayout
from .redis_wire import pack_commands

T = TypeVar("T")

#: redis-py errors that mean "the store cannot answer now", not "you asked wrongly".
#: ConnectionError covers refused/reset, AuthenticationError, BusyLoadingError and
#: MaxConnectionsError; InvalidResponse is something other than Redis answering (a
#: proxy, an HTTP port). A cluster that is moving slots, failing over or missing a node
#: answers with the rest: ClusterError covers ClusterDownError and MasterDownError,
#: AskError covers MovedError (a plain client sent to a cluster node gets those too).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    ClusterError,
    AskError,
    TryAgainError,
    SlotNotCoveredError,
    InvalidResponse,
    OSError,
)

#: How many lost compare-and-swap races an update tolerates before giving up.
MAX_CAS_ATTEMPTS = 64

#: A listing reads the index in at most this many rounds (each: a range, then the
#: records), the first ``limit + 1`` entries long and each next one twice as long, up to
#: ``MAX_SCAN_BATCH``. Only entries that are stale (record gone or moved on) or that
#: fail a second filter make a listing need more than one round.
MAX_SCAN_ROUNDS = 4
MAX_SCAN_BATCH = 1000

#: ``verdict`` of one index entry: a row, an entry to skip, or one to drop from the index.
ROW, SKIP, STALE = "row", "skip", "stale"


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisBase:
    """The client, the layout and the shared machinery."""

    #: How long a settled upload's record is kept (seconds): ``OBITOX_SETTLED_TTL``.
    settled_ttl: int = 86400

    def __init__(
        self, client: redis.Redis, *, prefix: str = "obitox", url: str | None = None
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.url = redact_url(url) if url is not None else describe_client(client)
        self.layout = RedisLayout(prefix)
        # register_script does not talk to the server: scripts load on first use.
        self._cas = client.register_script(CAS_SCRIPT)
        self._move = client.register_script(MOVE_SCRIPT)
        self._join = client.register_script(JOIN_SCRIPT)
        self._bytes = client.register_script(BYTES_SCRIPT)

    @property
    def client(self) -> redis.Redis:
        return self._client

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

    def _mget(self, keys: Sequence[str]) -> list[bytes | str | None]:
        """The values of ``keys`` in one ``MGET`` (a cluster backend sends one pipeline
        per node)."""
        return list(self._client.mget(keys)) if keys else []

    def _pool_for(self, key: str) -> Any:
        """The connection pool of the server that holds ``key``."""
        return self._client.connection_pool

    def _run_script(self, script: Any, key: str, args: Sequence[Any]) -> Any:
        """``script`` on its one ``key``: ``EVALSHA`` packed by
        :func:`~.redis_wire.pack_commands` on a connection of the key's server, for a
        third of the instructions redis-py's way costs. Anything unusual (a server that
        has not loaded the script, a connection that fails, a cluster slot that moved)
        goes redis-py's way, which loads, retries and follows: the script must be safe
        to run twice."""
        pool = self._pool_for(key)
        connection: Any = pool.get_connection()
        try:
            command = ("EVALSHA", script.sha, 1, key, *args)
            connection.send_packed_command([pack_commands([command], connection.encoder)])
            return connection.read_response()
        except ResponseError:
            pass  # answered (NOSCRIPT, MOVED, a script error): the connection is sound
        except UNAVAILABLE_ERRORS:
            connection.disconnect()  # a reply may be left unread: never reuse it
        finally:
            pool.release(connection)
        return script(keys=[key], args=args)

    def _load_uploads(self, upload_ids: Sequence[str]) -> list[UploadRecord | None]:
        """Records by id in one round trip."""
        raw = self._mget([self.layout.upload(upload_id) for upload_id in upload_ids])
        return [None if r is None else UploadRecord.from_json(r) for r in raw]

    def _move_member(
        self, all_key: str, member: str, leave: Sequence[str], join: Sequence[str]
    ) -> None:
        """Move ``member`` of an owner index from the ``leave`` sets to the ``join`` sets
        (one atomic script on the owner's slot)."""
        if leave or join:
            self._move(keys=[all_key, *leave, *join], args=[member, len(leave)])

    def _scan(
        self,
        index_key: str,
        query: tuple[str | None, ...],
        limit: int,
        cursor: str | None,
        load: Callable[[list[str]], Sequence[T | None]],
        verdict: Callable[[str, T], str],
    ) -> Page[T]:
        """One page of an owner index, newest first (call inside ``_guard``).

        Each round reads a range of members after the position, then their items
        (``load``, by id); ``verdict`` judges each. A page ends with a cursor only when a
        further row was seen, or when the rounds ran out first; stale entries are
        dropped from ``index_key`` on the way out.
        """
        after = decode_cursor(cursor, query) if cursor else None
        start = f"({after}" if after else "+"
        rows: list[T] = []
        last_row = ""
        stale: list[str] = []
        size = limit + 1
        resume = ""
        for _ in range(MAX_SCAN_ROUNDS):
            members = [text(m) for m in self._client.zrevrangebylex(index_key, start, "-", 0, size)]
            items = load([member_id(m) for m in members]) if members else []
            for member, item in zip(members, items, strict=True):
                if item is None or (judged := verdict(member, item)) == STALE:
                    stale.append(member)
                elif judged == ROW:
                    if len(rows) == limit:  # a further row exists
                        return self._page(index_key, stale, rows, last_row, query)
                    rows.append(item)
                    last_row = member
            if len(members) < size:  # the index ends here
                return self._page(index_key, stale, rows, "", query)
            start = f"({members[-1]}"
            size = min(size * 2, MAX_SCAN_BATCH)
            resume = members[-1]
        # The rounds ran out: the next page goes on after what was scanned.
        return self._page(index_key, stale, rows, resume, query)

    def _page(
        self,
        index_key: str,
        stale: list[str],
        rows: list[T],
        resume: str,
        query: tuple[str | None, ...],
    ) -> Page[T]:
        if stale:
            self._client.zrem(index_key, *stale)
        return Page(rows, encode_cursor(resume, query) if resume else None)
