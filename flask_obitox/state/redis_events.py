"""An owner's events in a Redis stream (the
:class:`~flask_obitox.state.capabilities.EventStream` capability).

``XADD ... MAXLEN ~ retention`` keeps roughly the newest ``events_retention`` events
(at least that many; Redis trims whole nodes, so up to about 100 more), and the stream
key expires ``events_ttl`` seconds after the owner's last event. Event ids are the
stream's own ids. Waiting is ``XREAD BLOCK`` on a connection taken from the pool for
the wait alone, read with a deadline of the wait plus a margin, so a wait never trips
the client's short reply timeout and a dead server still surfaces as
``StateUnavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from redis.exceptions import TimeoutError as RedisTimeoutError

from .capabilities import MAX_WAIT, InvalidCursor
from .cursor import following_event_id, format_event_id, parse_event_id
from .redis_base import UNAVAILABLE_ERRORS, RedisBase, text

#: How much longer than the block a blocked read may take before Redis counts as gone.
_WAIT_MARGIN = 5.0
_FIELD = "e"

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


class RedisEvents(RedisBase):
    events_retention: int = 1000
    #: An owner's stream is dropped this long after its last event (seconds).
    events_ttl: int = 8 * 86400

    def append_event(self, owner: str, event: Mapping[str, Any]) -> str:
        key = self.layout.owner_events(owner)
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(
            key,
            {_FIELD: orjson.dumps(event)},
            maxlen=max(self.events_retention, 1),
            approximate=True,
        )
        pipe.expire(key, self.events_ttl)
        with self._guard("append_event"):
            event_id, _ = pipe.execute()
        return text(event_id)

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
        after = after_id or "0-0"
        key = self.layout.owner_events(owner)
        with self._guard("wait_for_events"):
            pool = self._pool_for(key)
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
                key,
                after,
            )
            if not connection.can_read(timeout=wait + _WAIT_MARGIN):
                raise RedisTimeoutError(
                    f"no answer {wait + _WAIT_MARGIN:.0f} s into a blocked read"
                )
            reply = connection.read_response()
        except UNAVAILABLE_ERRORS as exc:
            connection.disconnect()  # a reply may still come: never reuse it
            raise self._unavailable("wait_for_events", exc) from exc
        finally:
            pool.release(connection)
        if not reply:
            return []
        streams = reply.values() if isinstance(reply, dict) else [s[1] for s in reply]
        return [pair for entries in streams for pair in _entries(entries)]

    def last_event_id(self, owner: str) -> str | None:
        with self._guard("last_event_id"):
            newest: Any = self._client.xrevrange(self.layout.owner_events(owner), "+", "-", count=1)
        return text(newest[0][0]) if newest else None
