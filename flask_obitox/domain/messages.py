"""What an event looks like on the wire, for webhooks and live event streams alike.

Every message body is ``{"type", "timestamp", "data"}``: the event type
(``upload.completed``), when it happened (ISO 8601 UTC to the millisecond, the one
timestamp format of the API, :func:`~flask_obitox.domain.isoformat`) and what it is
about (an upload as :func:`~flask_obitox.domain.render_upload` draws it, or a group
view). A webhook POSTs that body; ``GET /events`` sends the same body as an SSE
message's ``data:``. Both are built by :func:`message_body`, so the two cannot drift
apart.

The message id (a webhook's ``webhook-id`` header) is derived from the event type and
the upload id, so the same event always gets the same id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import orjson

from .common import isoformat


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """One event, ready to deliver: its id, its type and its exact body."""

    id: str
    type: str
    body: str

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(self.body)
        return data


def message_id(event: str, upload_id: str | None) -> str:
    """``msg_`` and 128 bits: a hash of the event and the upload, or random when the
    event has no upload (a file refused before any record existed is its own event)."""
    if upload_id is None:
        return "msg_" + secrets.token_hex(16)
    return "msg_" + hashlib.sha256(f"{event}\x00{upload_id}".encode()).hexdigest()[:32]


def message_body(event: str, data: Mapping[str, Any], *, now: float | None = None) -> bytes:
    """The body of every message: ``{"type", "timestamp", "data"}`` as JSON. A live
    event is this alone (its id is its stream position)."""
    body = {
        "type": event,
        "timestamp": isoformat(time.time() if now is None else now),
        "data": data,
    }
    try:
        return orjson.dumps(body)
    except TypeError:
        # A client's own text (a refused file's name) may hold a lone surrogate, which
        # no UTF-8 can carry (nor orjson read back): it becomes U+FFFD.
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def build_message(
    event: str,
    data: Mapping[str, Any],
    *,
    upload_id: str | None,
    now: float | None = None,
) -> Message:
    """The webhook message for ``event`` carrying ``data``, with its body encoded once:
    every attempt sends (and signs) exactly these bytes."""
    return Message(message_id(event, upload_id), event, message_body(event, data, now=now).decode())


#: Upload ids whose ``upload.signed`` event already went out with their records' write
#: (``EventFanIn.create_with_events``), while their signal is being sent: the publisher
#: of signals (:mod:`flask_obitox.events`) skips them. A context variable: each thread
#: and each greenlet has its own.
_SENT_WITH_WRITE: ContextVar[frozenset[str]] = ContextVar(
    "obitox_sent_with_write", default=frozenset()
)


def sent_with_write(upload_id: str) -> bool:
    """Whether ``upload_id``'s ``upload.signed`` event went out with its write."""
    return upload_id in _SENT_WITH_WRITE.get()


#: The mark of a receiver of ``upload-signed`` that does nothing for uploads whose
#: event went out with their write (the publisher of events).
_SKIPS_SENT = "obitox_skips_sent_with_write"
_Receiver = TypeVar("_Receiver", bound=Callable[..., Any])


def skips_sent_with_write(receiver: _Receiver) -> _Receiver:
    """Mark ``receiver`` (of ``upload-signed``) as one that skips :func:`sent_with_write`
    uploads: when every receiver is, the domain need not send the signal for them."""
    setattr(receiver, _SKIPS_SENT, True)
    return receiver


def all_skip_sent_with_write(receivers: Iterable[Any]) -> bool:
    """Whether every one of ``receivers`` skips uploads sent with their write."""
    return all(getattr(receiver, _SKIPS_SENT, False) for receiver in receivers)


@contextmanager
def sending_signed(upload_ids: frozenset[str]) -> Iterator[None]:
    """While ``upload-signed`` is sent for uploads whose events went with their write."""
    token = _SENT_WITH_WRITE.set(upload_ids)
    try:
        yield
    finally:
        _SENT_WITH_WRITE.reset(token)
