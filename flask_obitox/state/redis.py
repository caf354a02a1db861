"""Upload state in Redis: the core, the owner index, the key index and bulk reads.

The key layout is in :mod:`~flask_obitox.state.redis_layout` (every key hash-tagged
so that each operation touches one Redis Cluster slot); groups and events are mixins
of their own modules.

``update`` is a compare-and-swap on the whole stored value: read, check the status in
Python, build the new JSON, and let a one-key Lua script write it only if the stored
value is still byte-for-byte what was read (``SET ... KEEPTTL``). If another writer got
there first the loop re-reads and re-checks the expectation. A status, group or profile
change then moves the upload between the owner's index sets with a script on the
owner's slot: another slot, so not in the same atomic step. The sets are therefore
checked when read: a listing drops (and removes) entries whose record is gone, belongs
to someone else, or no longer has the set's status/group/profile. Because statuses only
move forward, a late move never takes an entry out of the set of its current status.

Every connectivity failure (refused, timed out, loading, read-only replica, cluster
down, ...) is raised as :class:`~flask_obitox.errors.StateUnavailable`, whose message
names the server without its password.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from operator import attrgetter
from typing import Any, cast

import orjson
import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from ..errors import StateUnavailable
from ..redis_client import redact_url, redis_from_url
from .base import (
    KINDS,
    STATUSES,
    UploadRecord,
    apply_changes,
    check_changes,
    check_ttl,
    expected_statuses,
    leaves_expiry_index,
    settles,
)
from .capabilities import GroupClosed, GroupNotFound, Page, ProgressByChanges, check_limit
from .cursor import index_member, time_bound
from .redis_base import MAX_CAS_ATTEMPTS, ROW, SKIP, STALE, UNAVAILABLE_ERRORS, text
from .redis_events import RedisEvents
from .redis_groups import RedisGroups
from .redis_layout import DELETE_IF_SCRIPT, WRITE_SCRIPT
from .redis_wire import pack_commands

logger = logging.getLogger("flask_obitox.state")

__all__ = ["MAX_CAS_ATTEMPTS", "UNAVAILABLE_ERRORS", "RedisStateBackend", "redact_url"]


#: The owner index set each filter reads, most selective first, and the field it holds.
def _default_layout(record: UploadRecord) -> bool:
    """Whether ``record``'s key ends ``<uploadId>/<filename>`` (the default key layout),
    so that the key alone names the record."""
    return record.key.endswith(f"/{record.upload_id}/{record.filename}") or record.key == (
        f"{record.upload_id}/{record.filename}"
    )


_DIMENSIONS = (("g", "group_id"), ("s", "status"), ("p", "profile"), ("k", "kind"))
#: A record's fields that decide its index sets (:meth:`RedisStateBackend._index_keys`).
_INDEXED_BY = attrgetter("owner", *(name for _, name in _DIMENSIONS))
#: How many combinations of those fields a backend keeps the key names of.
_INDEX_KEYS_KEPT = 4096


def counted(groups: Iterable[Sequence[Any]]) -> list[Any]:
    """Each group as its length, then its items: how the write scripts read a list of
    lists (:data:`~.redis_layout.WRITE_SCRIPT`, :data:`~.redis_layout.INDEX_SCRIPT`)."""
    flat: list[Any] = []
    for group in groups:
        flat.append(len(group))
        flat += group
    return flat


class RedisStateBackend(RedisGroups, RedisEvents, ProgressByChanges):
    """Upload records in Redis (standalone, or Sentinel-managed), with every capability.

    Bulk reads use ``MGET`` and a batch is one packed send on one connection: a Redis
    Cluster backend keeps this layout and sends those per node instead.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "obitox",
        url: str | None = None,
        events_retention: int = 1000,
    ) -> None:
        if isinstance(client, RedisCluster):
            raise TypeError(
                "RedisStateBackend talks to one Redis; for a RedisCluster client use "
                "RedisClusterStateBackend (OBITOX_STATE_BACKEND=redis+cluster://host:port)"
            )
        super().__init__(client, prefix=prefix, url=url)
        self.events_retention = events_retention
        # The index key names of each owner/status/kind/... combination written lately:
        # naming a write's sets was a sixth of its instructions. Bounded, emptied when
        # full (dict operations are atomic: threads share it safely).
        self._index_keys_of: dict[tuple[Any, ...], tuple[str, ...]] = {}

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "obitox", events_retention: int = 1000, **kw: Any
    ) -> RedisStateBackend:
        """A backend with its own client for ``url``
        (:func:`~flask_obitox.redis_client.redis_from_url`).

        Nothing connects here. Replies time out after 2 s; ``kw`` overrides any client
        option (``socket_timeout``, ``retry``, ``max_connections``, ...).
        """
        client = redis_from_url(url, **kw)
        return cls(client, prefix=prefix, url=url, events_retention=events_retention)

    def __repr__(self) -> str:
        return f"<RedisStateBackend {self.url} prefix={self.prefix!r}>"

    def key(self, upload_id: str) -> str:
        """The Redis key holding ``upload_id``'s record."""
        return self.layout.upload(upload_id)

    # -- StateBackend ------------------------------------------------------------------

    def create(self, record: UploadRecord, ttl: int) -> None:
        self.create_many((record,), ttl)

    def create_many(self, records: Sequence[UploadRecord], ttl: int) -> None:
        """Every write of a batch sent together on one connection: one round trip.

        The record of each and, unless its key is of the default layout
        ``.../<uploadId>/<filename>`` (which names the record by itself), its object key's
        entry, ``SET``; their entries added to the expiry index and to their owners'
        index sets: all by one script (:data:`~.redis_layout.WRITE_SCRIPT`; a cluster: a
        ``SET`` per key, a ``ZADD`` per expiry shard and a script per owner); then per
        group one join script. A reply per command, not per key. The commands are packed by
        :func:`~.redis_wire.pack_commands` (redis-py's bytes, a quarter of its
        instructions) and the replies read with ``read_response``, without a
        ``Pipeline`` object: for 100 records that halves the time (its per-command
        bookkeeping dominates; measured in ``docs/performance.rst``).

        Not a MULTI/EXEC transaction: the keys live in many hash slots (so the layout
        works on Redis Cluster), and a transaction cannot span slots. Each command is
        atomic, so no record is ever half written; if Redis fails part way, the caller
        answers 503 and never hands out the ids of the records that did land, which
        expire with their TTL. If a group refuses its members, the records are deleted
        again (a second round trip) and :class:`GroupNotFound`/:class:`GroupClosed`
        raised.
        """
        check_ttl(ttl)
        if not records:
            return
        commands, joining = self._create_commands(records, ttl)
        first_join = len(commands) - len(joining)
        replies = self._send(commands, "create")
        try:
            for group_id, reply in zip(joining, replies[first_join:], strict=True):
                self._join_result(group_id, reply)
        except (GroupNotFound, GroupClosed):
            self._undo_create(records, joining)
            raise

    #: Whether :meth:`create_with_events` sends the appends in the writes' packet.
    appends_ride_writes = True

    def create_with_events(
        self, records: Sequence[UploadRecord], ttl: int, events: Sequence[tuple[str, bytes]]
    ) -> None:
        """``EventFanIn``: on one standalone server, the records' writes and the events'
        appends in one script (:data:`~.redis_layout.WRITE_SCRIPT`), which appends only
        when the records are new: a retry after a lost reply finds them and appends
        nothing twice. A refused append loses its event (logged), never the write."""
        check_ttl(ttl)
        grouped = any(record.group_id for record in records)
        if not self.appends_ride_writes or grouped or not records or not events:
            self.create_many(records, ttl)  # a refused join raises: no event goes out
            if events:
                try:
                    self.append_events(events)
                except (StateUnavailable, RedisError):
                    logger.warning("Events of a write could not be appended; they are lost.")
            return
        commands, _ = self._create_commands(records, ttl, events)
        refused = self._send(commands, "create")[0]
        if refused:
            logger.warning("%d events sent with a write were refused; they are lost.", refused)

    def _create_commands(
        self,
        records: Sequence[UploadRecord],
        ttl: int,
        events: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[list[tuple[Any, ...]], dict[str, list[str]]]:
        """The writes of ``records`` (with ``events``, where :attr:`appends_ride_writes`),
        the group joins last (one per group, in the order of the map returned: group id
        -> the ids joining it)."""
        layout = self.layout
        keys: list[str] = []
        values: list[Any] = []
        joining: dict[str, list[str]] = {}
        for r in records:
            keys.append(layout.upload(r.upload_id))
            values.append(r.to_json())
            if not _default_layout(r):  # found from the key itself (upload_id_for_key)
                keys.append(layout.object_key(r.bucket, r.key))
                values.append(r.upload_id)
            if r.group_id:
                joining.setdefault(r.group_id, []).append(r.upload_id)
        commands = self._write_commands(keys, values, records, ttl, events)
        commands += [self._join_command(gid, ids) for gid, ids in joining.items()]
        return commands, joining

    def _write_commands(
        self,
        keys: Sequence[str],
        values: Sequence[Any],
        records: Sequence[UploadRecord],
        ttl: int,
        events: Sequence[tuple[str, bytes]],
    ) -> list[tuple[Any, ...]]:
        """``SET`` each key to its value with ``EX ttl``, add ``records`` to the expiry
        set and their owners' index sets, and append ``events``: on one server, one
        script (:data:`~.redis_layout.WRITE_SCRIPT`), one reply (how many events were
        refused)."""
        [(expiry, entries)] = self._expiry_entries(records).items()  # one set unsharded
        sets = {
            key: added
            for owned in self._index_entries(records).values()
            for key, added in owned.items()
        }
        streams: dict[str, list[bytes]] = {}
        for owner, body in events:
            streams.setdefault(self.layout.owner_events(owner), []).append(body)
        args: list[Any] = [ttl, len(keys), *values, self._expiry_cutoff(ttl), len(entries)]
        args += entries
        args += (self._index_cutoff(ttl), len(sets), *counted(sets.values()))
        args += (max(self.events_retention, 1), self.events_ttl, *counted(streams.values()))
        names = (*keys, expiry, *sets, *streams)
        return [("EVAL", WRITE_SCRIPT, len(names), *names, *args)]

    def _expiry_key(self, upload_id: str) -> str:
        """The expiry index set holding ``upload_id`` (one set; a cluster shards it)."""
        return self.layout.expiry

    def _expiry_entries(self, records: Sequence[UploadRecord]) -> dict[str, list[str]]:
        """Per expiry set, the score/id pairs adding ``records`` to it. A score as redis-py
        writes it (repr), each distinct one formatted once: a batch's records share a
        few expiries, and a float's repr costs some 6 k instructions."""
        by_set: dict[str, list[str]] = {}
        scores: dict[float, str] = {}
        for record in records:
            score = scores.get(record.expires_at)
            if score is None:
                score = scores[record.expires_at] = repr(record.expires_at)
            by_set.setdefault(self._expiry_key(record.upload_id), []).extend(
                (score, record.upload_id)
            )
        return by_set

    @staticmethod
    def _expiry_cutoff(ttl: int) -> str:
        """The expiry sets' prune bound: an entry that expired more than ``ttl`` ago
        belongs to a record created even earlier, whose key (``ttl`` from its creation)
        is gone. Pruned before the adds, so a write's own entries always stay. To the
        second: no float to format."""
        return f"({int(time.time()) - ttl}"

    @staticmethod
    def _index_cutoff(ttl: int) -> str:
        """The owner index sets' prune bound: entries created more than a ttl ago lead to
        records that are gone, dropped from each set a write adds to (before its own are
        added). A set nobody adds to expires with its TTL, and listings drop the stale
        entries they meet."""
        return "(" + time_bound(int(time.time()) - ttl)

    def _index_keys(self, record: UploadRecord) -> list[str]:
        """Every owner index set ``record`` belongs in."""
        layout, owner = self.layout, record.owner
        keys = [layout.owner_uploads(owner)]
        for dimension, name in _DIMENSIONS:
            value = getattr(record, name)
            if value:
                keys.append(layout.owner_uploads(owner, dimension, value))
        return keys

    def _every_set(self, owner: str) -> list[str]:
        """The owner's sets that exist whatever its uploads are (all, statuses, kinds)."""
        layout = self.layout
        return [
            layout.owner_uploads(owner),
            *(layout.owner_uploads(owner, "s", status) for status in sorted(STATUSES)),
            *(layout.owner_uploads(owner, "k", kind) for kind in sorted(KINDS)),
        ]

    def _index_entries(self, records: Sequence[UploadRecord]) -> dict[str, dict[str, list[str]]]:
        """Per owner, the members each of its index sets gains from ``records``."""
        members: dict[str, dict[str, list[str]]] = {}  # owner -> set -> members
        keys_of = self._index_keys_of
        for record in records:
            member = index_member(record.created_at, record.upload_id)
            fields = _INDEXED_BY(record)
            keys = keys_of.get(fields)
            if keys is None:
                if len(keys_of) >= _INDEX_KEYS_KEPT:
                    keys_of.clear()
                keys = keys_of[fields] = tuple(self._index_keys(record))
            sets = members.setdefault(record.owner, {})
            for key in keys:
                sets.setdefault(key, []).append(member)
        return members

    def _send(self, commands: list[tuple[Any, ...]], action: str) -> list[Any]:
        """Send ``commands`` in one packet on one connection and read every reply."""
        pool = self._client.connection_pool
        try:
            connection: Any = pool.get_connection()
        except RedisError as exc:
            raise self._unavailable(action, exc) from exc

        def attempt() -> list[Any]:
            # A list of buffers, as redis-py sends its own (a bare bytes is iterated).
            connection.send_packed_command([pack_commands(commands, connection.encoder)])
            return [connection.read_response() for _ in commands]

        try:
            # Every command sent this way is idempotent: the retry policy may resend.
            replies: list[Any] = connection.retry.call_with_retry(
                attempt, lambda _error: connection.disconnect()
            )
        except RedisError as exc:
            # A reply may be left unread after an error: never reuse this connection.
            connection.disconnect()
            raise self._unavailable(action, exc) from exc
        finally:
            pool.release(connection)
        return replies

    def _undo_create(self, records: Sequence[UploadRecord], joined: dict[str, list[str]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for record in records:
            self._queue_forget(pipe, record)
        for group_id, upload_ids in joined.items():
            pipe.zrem(self.layout.group_members(group_id), *upload_ids)
        with self._guard("create"):
            pipe.execute()

    def _queue_forget(self, pipe: Any, record: UploadRecord) -> None:
        """Queue the removal of ``record`` and every index entry of it on ``pipe``."""
        layout = self.layout
        pipe.delete(layout.upload(record.upload_id))
        pipe.zrem(self._expiry_key(record.upload_id), record.upload_id)
        # EVAL, not the registered script: a pipeline with scripts first asks the server
        # whether they are loaded, which is one more round trip.
        # (``execute_command``: redis-py's cluster pipeline has no ``eval`` of its own.)
        pipe.execute_command(
            "EVAL",
            DELETE_IF_SCRIPT,
            1,
            layout.object_key(record.bucket, record.key),
            record.upload_id,
        )
        member = index_member(record.created_at, record.upload_id)
        for key in dict.fromkeys([*self._every_set(record.owner), *self._index_keys(record)]):
            pipe.zrem(key, member)

    def get(self, upload_id: str) -> UploadRecord | None:
        with self._guard("get"):
            raw: bytes | str | None = self._client.get(self.key(upload_id))
        return None if raw is None else UploadRecord.from_json(raw)

    def update(
        self,
        upload_id: str,
        expect_status: Collection[str],
        *,
        current: UploadRecord | None = None,
        **changes: Any,
    ) -> UploadRecord | None:
        check_changes(changes)
        expect_status = expected_statuses(expect_status)
        key = self.key(upload_id)
        client = self._client
        with self._guard("update"):
            old: bytes | str
            for _ in range(MAX_CAS_ATTEMPTS):
                if current is not None and current.status in expect_status:
                    # The caller's own read: compare against it without reading again. A
                    # record that changed since (or serialises differently) fails the
                    # compare, and the next round reads the store.
                    record, old = current, current.to_json()
                    current = None
                else:
                    current = None
                    stored: bytes | str | None = client.get(key)
                    if stored is None:
                        return None
                    record, old = UploadRecord.from_json(stored), stored
                    if record.status not in expect_status:
                        return None
                new = apply_changes(record, changes, time.time())
                # 0: someone else wrote in between; re-read and re-check. If the reply to
                # a CAS that did write is lost and the command retried, the retry finds
                # its own write (unique by its ``revision``) and answers 1: still one
                # winner, and it knows it won.
                if self._swap(key, old, record, new):
                    self._after_swap(record, new, moved_expiry="expires_at" in changes)
                    return new
        raise StateUnavailable(
            f"Redis at {self.url}: update of {upload_id!r} lost {MAX_CAS_ATTEMPTS} races in a row"
        )

    def _after_swap(self, old: UploadRecord, new: UploadRecord, *, moved_expiry: bool) -> None:
        """The expiry index after a won compare-and-set: a moved ``expires_at`` moves the
        entry; an upload that settled leaves the index (an ``expired`` one stays until
        cleanup has freed its storage and forgets it)."""
        expiry = self._expiry_key(new.upload_id)
        if leaves_expiry_index(old.status, new.status):
            self._client.zrem(expiry, new.upload_id)
        elif moved_expiry:
            self._client.zadd(expiry, {new.upload_id: new.expires_at})

    def _cas_args(self, old: bytes | str, record: UploadRecord, new: UploadRecord) -> list[Any]:
        """The compare-and-set script's arguments: a settling change lowers the record's
        TTL to ``settled_ttl``."""
        args: list[Any] = [old, new.to_json()]
        if settles(record.status, new.status):
            args.append(self.settled_ttl * 1000)
        return args

    def report_bytes(
        self, upload_id: str, owner: str, uploaded_bytes: int, now: float
    ) -> tuple[UploadRecord, bool] | None:
        """``ByteReports``: one script (``BYTES_SCRIPT``). A retry after a lost reply
        finds the count already merged and answers it unchanged."""
        # ``now`` once, as the record's JSON writes a time: compared, and written.
        args = [owner, str(uploaded_bytes), orjson.dumps(now), secrets.token_hex(8)]
        with self._guard("report_bytes"):
            reply = self._run_script(self._bytes, self.key(upload_id), args)
        if not reply:
            return None
        changed, stored = reply
        return UploadRecord.from_json(stored), changed == 1

    def update_with(
        self,
        upload_id: str,
        expect_status: Collection[str],
        change: Callable[[UploadRecord], dict[str, Any] | None],
        *,
        current: UploadRecord | None = None,
    ) -> UploadRecord | None:
        expect_status = expected_statuses(expect_status)
        key = self.key(upload_id)
        client = self._client
        with self._guard("update"):
            stored: bytes | str | None
            for _ in range(MAX_CAS_ATTEMPTS):
                if current is not None and current.status in expect_status:
                    # Compared against as the caller read it: one round trip less.
                    record, stored, current = current, current.to_json(), None
                else:
                    current = None
                    stored = client.get(key)
                    if stored is None:
                        return None
                    record = UploadRecord.from_json(stored)
                    if record.status not in expect_status:
                        return None
                # Computed from this very read: a lost compare re-reads and recomputes.
                changes = change(record)
                if changes is None:
                    return None
                check_changes(changes)
                new = apply_changes(record, changes, time.time())
                if self._swap(key, stored, record, new):
                    self._after_swap(record, new, moved_expiry="expires_at" in changes)
                    return new
        raise StateUnavailable(
            f"Redis at {self.url}: update of {upload_id!r} lost {MAX_CAS_ATTEMPTS} races in a row"
        )

    def _swap(self, key: str, old: bytes | str, record: UploadRecord, new: UploadRecord) -> bool:
        """The compare-and-set of ``record`` (stored as ``old``) to ``new``, and its owner
        index move, in one round trip: both scripts in one pipeline (they live on two
        slots). The move is sent before the outcome is known; when the compare loses,
        the entry is moved from ``new``'s sets to those of the record that is stored,
        so a winner's entry is never taken out (listings check every entry anyway)."""
        move = self._index_move(record, new)
        cas_args = self._cas_args(old, record, new)
        if move is None:
            return bool(self._cas(keys=[key], args=cas_args) == 1)
        keys, args = move
        pipe: Any = self._client.pipeline(transaction=False)
        # ``execute_command``: redis-py's cluster pipeline refuses ``evalsha`` by name
        # before 6.2, and sends the raw command to the node of its first key.
        pipe.execute_command("EVALSHA", self._cas.sha, 1, key, *cas_args)
        pipe.execute_command("EVALSHA", self._move.sha, len(keys), *keys, *args)
        swapped, moved = pipe.execute(raise_on_error=False)
        if isinstance(swapped, NoScriptError):
            # A server that has not loaded the scripts yet: the two-step way loads them.
            swapped = self._cas(keys=[key], args=cas_args)
            moved = NoScriptError() if isinstance(moved, Exception) else moved
        if swapped == 1:
            if isinstance(moved, Exception):
                self._reindex(record, new)  # the record is ours: its entry must follow
            return True
        if not isinstance(moved, Exception):
            self._settle_index(key, new)
        if isinstance(swapped, Exception):
            raise swapped
        return False

    def _settle_index(self, key: str, moved_to: UploadRecord) -> None:
        """After a lost compare whose move ran: move the entry from ``moved_to``'s sets
        to those of the record actually stored (nothing to do when they agree)."""
        stored: bytes | str | None = self._client.get(key)
        if stored is not None:
            self._reindex(moved_to, UploadRecord.from_json(stored))

    def _index_move(
        self, old: UploadRecord, new: UploadRecord
    ) -> tuple[list[str], list[Any]] | None:
        """The keys and arguments of the move script for what changed, or ``None``.
        (The owner, kind, ``created_at`` and object key of an upload never change.)"""
        leave: list[str] = []
        join: list[str] = []
        for dimension, name in _DIMENSIONS:
            before, after = getattr(old, name), getattr(new, name)
            if before != after:
                if before:
                    leave.append(self.layout.owner_uploads(old.owner, dimension, before))
                if after:
                    join.append(self.layout.owner_uploads(new.owner, dimension, after))
        if not leave and not join:
            return None
        member = index_member(new.created_at, new.upload_id)
        return [self.layout.owner_uploads(new.owner), *leave, *join], [member, len(leave)]

    def _reindex(self, old: UploadRecord, new: UploadRecord) -> None:
        """Move ``new`` between its owner's sets for what changed since ``old``."""
        move = self._index_move(old, new)
        if move is not None:
            keys, args = move
            self._move(keys=keys, args=args)

    def delete(self, upload_id: str) -> None:
        with self._guard("delete"):
            raw: bytes | str | None = self._client.get(self.key(upload_id))
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(self.key(upload_id))
            pipe.zrem(self._expiry_key(upload_id), upload_id)
            if raw is not None:
                self._queue_forget(pipe, UploadRecord.from_json(raw))
            pipe.execute()

    def expired_ids(self, now: float, limit: int = 1000) -> list[str]:
        if limit <= 0:
            return []
        with self._guard("expired_ids"):
            ids = cast(
                "list[bytes | str]",
                self._client.zrangebyscore(self.layout.expiry, "-inf", now, start=0, num=limit),
            )
        return [text(i) for i in ids]

    def forget_expired(self, upload_ids: Sequence[str]) -> None:
        if not upload_ids:
            return
        with self._guard("forget_expired"):
            self._client.zrem(self.layout.expiry, *upload_ids)

    def ping(self) -> float:
        with self._guard("ping"):
            start = time.perf_counter()
            self._client.ping()
            return time.perf_counter() - start

    # -- BulkRead, KeyIndex ------------------------------------------------------------

    def get_many(self, upload_ids: Sequence[str]) -> list[UploadRecord | None]:
        with self._guard("get_many"):
            return self._load_uploads(upload_ids)

    def upload_id_for_key(self, bucket: str, key: str) -> str | None:
        # A key of the default layout ``.../<uploadId>/<filename>`` has no entry of its
        # own (see create_many): its candidate record is read in the same round trip.
        parts = key.rsplit("/", 2)
        candidate = parts[-2] if len(parts) >= 2 and parts[-2] else None
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self.layout.object_key(bucket, key))
        if candidate is not None:
            pipe.get(self.layout.upload(candidate))
        with self._guard("upload_id_for_key"):
            found, *record = pipe.execute()
        if found is not None:
            return text(found)
        if record and record[0] is not None:
            stored = UploadRecord.from_json(record[0])
            if stored.key == key and stored.bucket == bucket and _default_layout(stored):
                return stored.upload_id
        return None

    # -- OwnerIndex --------------------------------------------------------------------

    def list_uploads(
        self,
        owner: str,
        *,
        status: str | None = None,
        kind: str | None = None,
        group_id: str | None = None,
        profile: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[UploadRecord]:
        """Reads the set of the most selective filter given (group, status, profile,
        kind, else all) and checks the rest on the records."""
        check_limit(limit)
        if status is not None and status not in STATUSES:
            raise ValueError(f"unknown upload status {status!r}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown upload kind {kind!r}")
        wanted = {"status": status, "kind": kind, "group_id": group_id, "profile": profile}
        primary = next(((d, n) for d, n in _DIMENSIONS if wanted[n] is not None), None)
        index_key = self.layout.owner_uploads(owner)
        if primary is not None:
            index_key = self.layout.owner_uploads(owner, primary[0], wanted[primary[1]] or "")

        def verdict(member: str, record: UploadRecord) -> str:
            if record.owner != owner or member != index_member(record.created_at, record.upload_id):
                return STALE  # the id was reused
            if primary is not None and getattr(record, primary[1]) != wanted[primary[1]]:
                return STALE  # moved on; its move put it in the right set
            if any(v is not None and getattr(record, n) != v for n, v in wanted.items()):
                return SKIP
            return ROW

        query = ("uploads", owner, status, kind, group_id, profile)
        with self._guard("list_uploads"):
            return self._scan(index_key, query, limit, cursor, self._load_uploads, verdict)
