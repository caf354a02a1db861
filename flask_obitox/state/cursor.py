"""Positions in listings and event streams, shared by every backend.

An owner index orders entries by a *member* string, ``"<created_at>:<id>"`` with
``created_at`` as 20 fixed-width characters (``0001712345678.123456``), so that string
order is time order and ties fall to the id: Redis keeps the index as a sorted set read
by lexical range, the memory backend sorts the same strings.

A cursor is that member of the last row a page returned, plus a check over it and the
query (what is listed, the owner, the filters), base64url-encoded::

    base64url( b"\\x01" + sha256(query, member)[:12] + member )

Decoding recomputes the check for the query it is used with, so a cursor only continues
the listing it came from, and a cursor with any byte changed is refused; either way
:class:`InvalidCursor`. The check is not a secret and need not be: a listing only ever
reads the index of the owner the caller passes, so no cursor, forged or not, can reach
another owner's rows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

from .capabilities import InvalidCursor

_VERSION = b"\x01"
_CHECK_BYTES = 12
_TIME_WIDTH = 20
_MAX_TIME = 9_999_999_999_999.0
_MEMBER = re.compile(r"\d{13}\.\d{6}:.+", re.DOTALL)
_EVENT_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_MAX_ID_PART = 2**64 - 1


def index_member(created_at: float, item_id: str) -> str:
    """The member that orders ``item_id`` in an owner index."""
    return time_bound(created_at) + ":" + item_id


def time_bound(when: float) -> str:
    """A member prefix that sorts before every member created at or after ``when``."""
    text = _STAMPS.get(when)
    if text is None:
        # Fixed-precision float formatting costs some 10 k instructions, and a batch's
        # records share their creation time: each time is formatted once.
        text = f"{min(max(float(when), 0.0), _MAX_TIME):0{_TIME_WIDTH}.6f}"
        if len(_STAMPS) >= _STAMPS_KEPT:
            _STAMPS.clear()
        _STAMPS[when] = text
    return text


#: Each time :func:`time_bound` formatted lately (bounded, emptied when full; dict
#: operations are atomic, so threads share it safely).
_STAMPS: dict[float, str] = {}
_STAMPS_KEPT = 4096


def member_id(member: str) -> str:
    """The item id inside a member."""
    return member[_TIME_WIDTH + 1 :]


def _check(query: tuple[str | None, ...], member: bytes) -> bytes:
    text = "\x1f".join("\x00" if part is None else part for part in query)
    return hashlib.sha256(text.encode() + b"\x1e" + member).digest()[:_CHECK_BYTES]


def encode_cursor(member: str, query: tuple[str | None, ...]) -> str:
    position = member.encode()
    raw = _VERSION + _check(query, position) + position
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, query: tuple[str | None, ...]) -> str:
    """The member ``cursor`` resumes after; :class:`InvalidCursor` unless it was made by
    :func:`encode_cursor` for this same ``query``."""
    refused = InvalidCursor("cursor is not one this listing handed out")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        position = raw[1 + _CHECK_BYTES :]
        member = position.decode()
    except (binascii.Error, ValueError) as exc:
        raise refused from exc
    head = raw[: 1 + _CHECK_BYTES]
    if not hmac.compare_digest(head, _VERSION + _check(query, position)):
        raise refused
    if not _MEMBER.fullmatch(member):
        raise refused
    return member


def parse_event_id(event_id: str) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as two integers; :class:`InvalidCursor` for anything else."""
    match = _EVENT_ID.fullmatch(event_id) if isinstance(event_id, str) else None
    if match is None:
        raise InvalidCursor("event id must look like <milliseconds>-<sequence>")
    ms, seq = int(match[1]), int(match[2])
    if ms >= _MAX_ID_PART or seq > _MAX_ID_PART:
        raise InvalidCursor("event id out of range")
    return ms, seq


def format_event_id(position: tuple[int, int]) -> str:
    return f"{position[0]}-{position[1]}"


def following_event_id(position: tuple[int, int]) -> tuple[int, int]:
    """The smallest id after ``position`` (for an inclusive range that starts after it)."""
    ms, seq = position
    return (ms, seq + 1) if seq < _MAX_ID_PART else (ms + 1, 0)


def next_event_id(previous: tuple[int, int] | None) -> tuple[int, int]:
    """The id after ``previous`` on the wall clock, as ``XADD *`` makes them: the
    current millisecond, or ``previous``'s with the next sequence if the clock has not
    moved past it."""
    now = time.time_ns() // 1_000_000
    if previous is None or now > previous[0]:
        return now, 0
    return previous[0], previous[1] + 1
