"""Groups in Redis (the :class:`~flask_obitox.state.capabilities.Groups` capability).

A group is a JSON record and a sorted set of member ids scored by join position, both
under the group's hash tag, so reading a group with its member ids is one round trip and
joining is one script that reads the record's ``sealed`` and ``status`` and adds the
members atomically (a seal or a status change either happened before it or waits for
it). Sealing and the status compare-and-set rewrite the JSON with the same
compare-and-swap script as upload updates. The owner's group indexes (all, and by
status) are kept like the upload indexes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import StateUnavailable
from .base import UploadRecord, check_ttl
from .capabilities import (
    GROUP_STATUSES,
    GroupChanges,
    GroupClosed,
    GroupNotFound,
    GroupRecord,
    Page,
    apply_group_changes,
    check_group_status,
    check_limit,
)
from .cursor import index_member, time_bound
from .redis_base import MAX_CAS_ATTEMPTS, ROW, STALE, RedisBase, text
from .redis_layout import JOIN_CLOSED, JOIN_GONE


class RedisGroups(GroupChanges, RedisBase):
    def _join_result(self, group_id: str, reply: Any) -> int:
        """The member count a join script answered, or the error it stands for."""
        count = int(reply)
        if count == JOIN_GONE:
            raise GroupNotFound(group_id)
        if count == JOIN_CLOSED:
            raise GroupClosed(group_id)
        return count

    def _join_command(self, group_id: str, upload_ids: Sequence[str]) -> tuple[Any, ...]:
        """The join as a raw command, for packing with a batch's writes."""
        keys = (self.layout.group(group_id), self.layout.group_members(group_id))
        return ("EVAL", self._join.script, len(keys), *keys, *upload_ids)

    def create_group(self, group: GroupRecord, ttl: int) -> None:
        check_ttl(ttl)
        check_group_status(group.status)
        layout = self.layout
        member = index_member(group.created_at, group.group_id)
        cutoff = "(" + time_bound(int(time.time()) - ttl)
        by_status = layout.owner_groups(group.owner, group.status)
        pipe = self._client.pipeline(transaction=False)
        pipe.set(layout.group(group.group_id), group.to_json(), ex=ttl)
        pipe.delete(layout.group_members(group.group_id))
        # Entries created more than a ttl ago lead to groups that are gone.
        for key in (layout.owner_groups(group.owner), *self._group_status_keys(group.owner)):
            pipe.zremrangebylex(key, "-", cutoff)
        for key in (layout.owner_groups(group.owner), by_status):
            pipe.zadd(key, {member: 0})
            pipe.expire(key, ttl)
        with self._guard("create_group"):
            pipe.execute()

    def _group_status_keys(self, owner: str) -> list[str]:
        return [self.layout.owner_groups(owner, status) for status in sorted(GROUP_STATUSES)]

    def get_group(self, group_id: str) -> GroupRecord | None:
        with self._guard("get_group"):
            raw: bytes | str | None = self._client.get(self.layout.group(group_id))
        return None if raw is None else GroupRecord.from_json(raw)

    def _group_and_members(self, group_id: str) -> tuple[GroupRecord, list[str]] | None:
        pipe = self._client.pipeline(transaction=False)
        pipe.get(self.layout.group(group_id))
        pipe.zrange(self.layout.group_members(group_id), 0, -1)
        raw, members = pipe.execute()
        if raw is None:
            return None
        return GroupRecord.from_json(raw), [text(m) for m in members]

    def group_members(self, group_id: str) -> list[str]:
        with self._guard("group_members"):
            found = self._group_and_members(group_id)
        return [] if found is None else found[1]

    def get_group_uploads(self, group_id: str) -> tuple[GroupRecord, list[UploadRecord]] | None:
        with self._guard("get_group_uploads"):
            found = self._group_and_members(group_id)
            if found is None:
                return None
            group, members = found
            records = self._load_uploads(members)
        return group, [r for r in records if r is not None]

    def add_members(self, group_id: str, upload_ids: Sequence[str]) -> int:
        keys = [self.layout.group(group_id), self.layout.group_members(group_id)]
        with self._guard("add_members"):
            reply = self._join(keys=keys, args=list(upload_ids))
        return self._join_result(group_id, reply)

    def _change_group(
        self, group_id: str, allowed: Callable[[GroupRecord], bool], **changes: Any
    ) -> GroupRecord | None:
        key = self.layout.group(group_id)
        with self._guard("update_group"):
            for _ in range(MAX_CAS_ATTEMPTS):
                old: bytes | str | None = self._client.get(key)
                if old is None:
                    return None
                group = GroupRecord.from_json(old)
                if not allowed(group):
                    return None
                before = group.status
                if all(getattr(group, name) == value for name, value in changes.items()):
                    return group  # sealing a sealed group changes nothing
                apply_group_changes(group, changes)
                if self._cas(keys=[key], args=[old, group.to_json()]) == 1:
                    if group.status != before:
                        self._move_member(
                            self.layout.owner_groups(group.owner),
                            index_member(group.created_at, group_id),
                            [self.layout.owner_groups(group.owner, before)],
                            [self.layout.owner_groups(group.owner, group.status)],
                        )
                    return group
        raise StateUnavailable(
            f"Redis at {self.url}: update of group {group_id!r} lost {MAX_CAS_ATTEMPTS} races in a row"
        )

    def list_groups(
        self,
        owner: str,
        *,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[GroupRecord]:
        check_limit(limit)
        if status is not None:
            check_group_status(status)
        index_key = self.layout.owner_groups(owner, status or "")

        def load(group_ids: list[str]) -> list[GroupRecord | None]:
            raw = self._mget([self.layout.group(group_id) for group_id in group_ids])
            return [None if r is None else GroupRecord.from_json(r) for r in raw]

        def verdict(member: str, group: GroupRecord) -> str:
            if group.owner != owner or member != index_member(group.created_at, group.group_id):
                return STALE  # the id was reused
            if status is not None and group.status != status:
                return STALE  # moved on; its move already put it in the right set
            return ROW

        with self._guard("list_groups"):
            return self._scan(index_key, ("groups", owner, status), limit, cursor, load, verdict)
