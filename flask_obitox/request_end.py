"""What a request leaves for its end: live events, webhook deliveries, processing runs.

While a request runs, each of the three waits in its WSGI environ under a key of its
own; when the request ends they go out, one round trip per destination. One
``teardown_request`` of the app sends all three: Flask prepares every teardown function
on every request of the app (``ensure_sync``), the host's own routes included, and one
costs each request ~30k CPU instructions less than three did (docs/performance).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import request

from . import events, processing_queue
from .webhooks import dispatch

#: Each environ key, and what sends what a request left under it.
_SENDERS: tuple[tuple[str, Callable[[Any], None]], ...] = (
    (events.PENDING_EVENTS, events.publish_pending),
    (processing_queue.PENDING_RUNS, processing_queue.enqueue_pending),
    (dispatch.PENDING_EVENTS, dispatch.enqueue_pending),
)


def send_pending(error: BaseException | None = None) -> None:
    """``teardown_request``: send what the request that ends left. Never raises (each
    sender logs its own failures): the answer is made."""
    environ = request.environ
    for key, send in _SENDERS:
        pending = environ.pop(key, None)
        if pending:
            send(pending)
