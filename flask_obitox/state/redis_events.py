"""An owner's events in a Redis stream (the
:class:`~flask_obitox.state.capabilities.EventStream` capability).

``XADD ... MAXLEN ~ retention`` keeps roughly the newest ``events_retention`` events
(at least that many; Redis trims whole nodes, so up to about 100 more), and the stream
key expires ``events_ttl`` seconds after the owner's last event. Event ids are the
stream's own ids. Waiting is ``XREAD BLOCK`` on a connection taken from the pool for
the wait alone, read with a deadline of the wait plus a margin, so a wait never trips
the client's short reply timeout and a dead server still surfaces as
``StateUnavailable``.

:meth:`RedisEvents.wait_for_owners` (the
:class:`~flask_obitox.state.capabilities.EventFanIn` capability) is one ``XREAD BLOCK``
over many owners' streams plus a wake stream of this backend object's own;
:meth:`~RedisEvents.wake_event_waiters` adds to that stream, so a reader blocked on the
old set of owners returns and an ``XADD`` that lands before the read still counts (the
reader reads the wake stream after the last wake it saw). Reading many streams in one
command needs them in one slot on Redis Cluster: this is for standalone Redis.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.exceptions import TimeoutError as RedisTimeoutError

from .capabilities import MAX_WAIT, InvalidCursor
from .cursor import following_event_id, format_event_id, parse_event_id
from .redis_base import UNAVAILABLE_ERRORS, RedisBase, text
from .redis_wire import pack_commands

#: How much longer than the block a blocked read may take before Redis counts as gone.
_WAIT_MARGIN = 5.0
_FIELD = "e"
#: XADD each ARGV[3..] to KEYS[1] (MAXLEN ~ ARGV[1]), EXPIRE it ARGV[2]; the new ids.
_APPEND_SCRIPT = """
local ids = {}
for i = 3, #ARGV do
    ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return ids
"""
#: Seconds a wake stream outlives its last wake-up.
_WAKE_TTL = 3600

Events = list[tuple[str, dict[str, Any]]]


def _entries(raw: Any) -> Events:
    """Stream entries ``[[id, [field, value, ...]], ...]`` as (id, event) pairs."""
    found: Events = []
    for entry_id, fields in raw or ():
        values = fields if isinstance(fields, list) else [x for kv in fields.items() for x in kv]
        for name, value in zip(values[::2], values[1::2], strict=True):
            if text(name) == _FIELD:
                found.append((text(entry_id), orjson.loads(value)))
    return found


def _encoded(event: Mapping[str, Any] | bytes) -> bytes:
    return event if isinstance(event, bytes) else orjson.dumps(event)


class RedisEvents(RedisBase):
    events_retention: int = 1000
    #: Whether one blocked ``XREAD`` may follow many owners' streams (and the wake-up
    #: stream) at once: not on a cluster, where they live on different slots.
    many_owner_reads: bool = True
    #: An owner's stream is dropped this long after its last event (seconds).
    events_ttl: int = 8 * 86400

    _waker: str | None = None
    _wake_seen: str = "0-0"

    def append_event(self, owner: str, event: Mapping[str, Any]) -> str:
        return self.append_events([(owner, event)])[0]

    def append_events(self, events: Sequence[tuple[str, Mapping[str, Any] | bytes]]) -> list[str]:
        if not events:
            return []
        by_owner, commands = self._append_commands(events)
        replies = self._send_appends(commands)
        ids: list[str] = [""] * len(events)
        for indexes, reply in zip(by_owner.values(), replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            for index, event_id in zip(indexes, reply, strict=True):
                ids[index] = text(event_id)
        return ids

    def _append_commands(
        self, events: Sequence[tuple[str, Mapping[str, Any] | bytes]]
    ) -> tuple[dict[str, list[int]], list[tuple[Any, ...]]]:
        """The commands appending ``events``, and which events each one carries."""
        # One EVAL per owner (one slot each), all in one packet: a batch of 100 events
        # of one owner is one command, far cheaper to pack and parse than 100 XADDs.
        by_owner: dict[str, list[int]] = {}
        for index, (owner, _) in enumerate(events):
            by_owner.setdefault(owner, []).append(index)
        maxlen = max(self.events_retention, 1)
        commands = [
            (
                "EVAL",
                _APPEND_SCRIPT,
                1,
                self.layout.owner_events(owner),
                maxlen,
                self.events_ttl,
                *(_encoded(events[index][1]) for index in indexes),
            )
            for owner, indexes in by_owner.items()
        ]
        return by_owner, commands

    def _send_appends(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Every append command in one packet on one connection, sent once and never
        retried: a resent XADD would append its events twice."""
        pool = self._client.connection_pool
        with self._guard("append_events"):
            connection: Any = pool.get_connection()
        try:
            connection.send_packed_command([pack_commands(commands, connection.encoder)])
            return [connection.read_response() for _ in commands]
        except UNAVAILABLE_ERRORS as exc:
            connection.disconnect()  # a reply may be left unread: never reuse it
            raise self._unavailable("append_events", exc) from exc
        finally:
            pool.release(connection)

    def _check_count(self, count: int) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"count must be a positive whole number, got {count!r}")

    def read_events(
        self, owner: str, after_id: str | None = None, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        self._check_count(count)
        after = parse_event_id(after_id) if after_id else (0, 0)
        key = self.layout.owner_events(owner)
        pipe = self._client.pipeline(transaction=False)
        pipe.xrevrange(key, "+", "-", count=1)
        # Inclusive from the next id: exclusive ranges need Redis 6.2.
        pipe.xrange(key, format_event_id(following_event_id(after)), "+", count=count)
        with self._guard("read_events"):
            newest, found = pipe.execute()
        if newest and after > parse_event_id(text(newest[0][0])):
            raise InvalidCursor(f"event id {after_id} is beyond the newest event")
        return _entries([[entry_id, fields] for entry_id, fields in found])

    def wait_for_events(
        self, owner: str, after_id: str | None, timeout: float, count: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        found = self.read_events(owner, after_id, count)
        wait = min(max(timeout, 0.0), MAX_WAIT)
        if found or wait <= 0:
            return found
        streams = self._blocked_read(
            "wait_for_events", {self.layout.owner_events(owner): after_id or "0-0"}, wait, count
        )
        return [pair for entries in streams.values() for pair in _entries(entries)]

    def _blocked_read(
        self, action: str, positions: Mapping[str, str], wait: float, count: int
    ) -> dict[str, Any]:
        """``XREAD COUNT count BLOCK wait STREAMS ...`` on a connection of its own:
        stream key -> its raw entries, for the streams that had any. On a cluster every
        key must live on one slot (the caller's business)."""
        with self._guard(action):
            pool = self._pool_for(next(iter(positions)))
            connection: Any = pool.get_connection()
        try:
            # BLOCK 0 would mean forever.
            block_ms = max(int(wait * 1000), 1)
            connection.send_command(
                "XREAD",
                "COUNT",
                count,
                "BLOCK",
                block_ms,
                "STREAMS",
                *positions,
                *positions.values(),
            )
            if not connection.can_read(timeout=wait + _WAIT_MARGIN):
                raise RedisTimeoutError(
                    f"no answer {wait + _WAIT_MARGIN:.0f} s into a blocked read"
                )
            reply = connection.read_response()
        except UNAVAILABLE_ERRORS as exc:
            connection.disconnect()  # a reply may still come: never reuse it
            raise self._unavailable(action, exc) from exc
        finally:
            pool.release(connection)
        if not reply:
            return {}
        pairs = reply.items() if isinstance(reply, dict) else [(s[0], s[1]) for s in reply]
        return {text(key): entries for key, entries in pairs}

    @property
    def _wake_key(self) -> str:
        if self._waker is None:
            self._waker = self.layout.event_waker(secrets.token_hex(8))
        return self._waker

    def wait_for_owners(
        self, positions: Mapping[str, str | None], timeout: float, count: int = 100
    ) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        self._check_count(count)
        keys = {self.layout.owner_events(owner): owner for owner in positions}
        streams = {
            key: format_event_id(parse_event_id(after_id)) if after_id else "0-0"
            for key, after_id in zip(keys, positions.values(), strict=True)
        }
        wake_key = self._wake_key
        streams[wake_key] = self._wake_seen
        wait = min(max(timeout, 0.0), MAX_WAIT)
        found = self._blocked_read("wait_for_owners", streams, wait, count)
        woken = found.pop(wake_key, None)
        if woken:
            self._wake_seen = text(woken[-1][0])
        return {keys[key]: _entries(entries) for key, entries in found.items()}

    def wake_event_waiters(self) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(self._wake_key, {"w": b"1"}, maxlen=1)
        pipe.expire(self._wake_key, _WAKE_TTL)
        with self._guard("wake_event_waiters"):
            pipe.execute()

    def last_event_id(self, owner: str) -> str | None:
        with self._guard("last_event_id"):
            newest: Any = self._client.xrevrange(self.layout.owner_events(owner), "+", "-", count=1)
        return text(newest[0][0]) if newest else None
