"""From signals to live events: the publisher ``init_app`` connects per app.

Each upload or group signal of the app becomes one event in its owner's stream
(``GET /events``), its body built as a webhook's is
(:func:`flask_obitox.domain.messages.message_body`, which webhooks' ``build_message``
uses):

======================  ======================  =======================================
signal                  event type              ``data``
======================  ======================  =======================================
upload-signed           upload.signed           the upload (:func:`render_upload`)
upload-progress         upload.progress         the upload
multipart-initiated     multipart.initiated     the upload
upload-completed        upload.completed        the upload
upload-rejected         upload.rejected         the upload (or ``uploadId: null`` and
                                                the filename) + reason, stage, code
upload-aborted          upload.aborted          the upload
upload-expired          upload.expired          the upload
upload-deleted          upload.deleted          the upload
group-created, -progress, -completed, -failed, -cancelled
                        group.<same>            the group view (the ``view`` argument)
processing-completed    processing.completed    the upload + ``processor``, ``result``
processing-failed       processing.failed       the upload + ``processor``, ``error``,
                                                ``final``
upload-ready            upload.ready            the upload
======================  ======================  =======================================

Inside a request the events wait until the request ends
(:mod:`flask_obitox.request_end`) and are appended together in one round trip, as
webhook jobs are enqueued: a batch of 100 signed files costs one. Outside a request (a
worker, a command) each is appended at once.
Publishing never fails the caller: the state already changed, so a state store that is
down is logged and the events are lost to streams (webhooks are separate).
``OBITOX_EVENTS = False`` connects nothing.

``upload.progress`` is for display, and clients report often (``obitox.js`` about once
a second per file, and after each part): each app process holds its reports and
publishes them together every :data:`OBITOX_EVENTS_PROGRESS_INTERVAL_MS` (250 ms), the
latest report of each upload (:class:`ProgressEvents`). A report then costs its request
no round trip, and a stream gets at most one progress event per upload per interval,
at most that much later. A later event of the upload (completed, aborted, ...) drops
its held report, so a stream never shows progress after it; a report held when its
process exits is lost. Signals and webhooks still see every report; ``0`` publishes
each with its request.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, current_app, has_request_context, request

from . import signals
from .appstate import get_state
from .domain.messages import message_body, sent_with_write, skips_sent_with_write
from .state import UploadRecord
from .webhooks.events import rejected_data, upload_data

logger = logging.getLogger("flask_obitox.events")

#: Where a request keeps its events until it ends (its WSGI environ).
PENDING_EVENTS = "flask_obitox.events.pending"

#: Signals whose only argument is the upload, and their event types.
UPLOAD_SIGNALS = (
    (signals.upload_signed, "upload.signed"),
    (signals.multipart_initiated, "multipart.initiated"),
    (signals.upload_completed, "upload.completed"),
    (signals.upload_aborted, "upload.aborted"),
    (signals.upload_expired, "upload.expired"),
    (signals.upload_deleted, "upload.deleted"),
    (signals.upload_ready, "upload.ready"),
)
#: Signals of a group (``group``, ``view``), and their event types.
GROUP_SIGNALS = (
    (signals.group_created, "group.created"),
    (signals.group_progress, "group.progress"),
    (signals.group_completed, "group.completed"),
    (signals.group_failed, "group.failed"),
    (signals.group_cancelled, "group.cancelled"),
)


def _publish(app: Flask, owner: str | None, body: bytes) -> None:
    """Append ``body`` to ``owner``'s stream now or, in a request of ``app``, when the
    request ends."""
    if owner is None:
        return
    if has_request_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        pending: list[tuple[Flask, str, bytes]] = request.environ.setdefault(PENDING_EVENTS, [])
        pending.append((app, owner, body))
        return
    try:
        get_state(app).service.publish_events([(owner, body)])
    except Exception:
        logger.exception("Event for %s could not be published; body: %s", owner, body.decode())


def publish_pending(pending: list[tuple[Flask, str, bytes]]) -> None:
    """Append the events a request left (its end, :mod:`flask_obitox.request_end`), one
    round trip per app. Never raises: the answer is made."""
    by_app: dict[int, tuple[Flask, list[tuple[str, bytes]]]] = {}
    for app, owner, body in pending:
        by_app.setdefault(id(app), (app, []))[1].append((owner, body))
    for app, events in by_app.values():
        try:
            get_state(app).service.publish_events(events)
        except Exception:
            logger.exception(
                "%d events could not be published; bodies: %s",
                len(events),
                [body.decode() for _, body in events],
            )


def _never_raises(receive: Callable[..., None]) -> Callable[..., None]:
    """``receive``, logging what it raises: the request that sent the signal has already
    changed state, and an event is not worth failing it."""

    @functools.wraps(receive)
    def guarded(sender: Flask, **kwargs: Any) -> None:
        try:
            receive(sender, **kwargs)
        except Exception:
            logger.exception("An event could not be built by %s", receive.__name__)

    return guarded


class ProgressEvents:
    """One app's ``upload.progress`` events, published together once per ``interval``
    seconds, the latest report of each upload (the module's docstring says why).
    Thread-safe; a forked process starts afresh (a parent's held reports are its own)."""

    def __init__(self, app: Flask, interval: float) -> None:
        self._app = weakref.ref(app)  # blinker holds the app weakly: so does this
        self.interval = interval
        self._lock = threading.Lock()
        self._held: dict[str, tuple[UploadRecord, float]] = {}  # id -> (latest, wall time)
        self._timer: threading.Timer | None = None
        self._pid = os.getpid()

    def offer(self, upload: UploadRecord) -> None:
        """Hold ``upload``'s report (replacing its last) until the interval ends."""
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's timer is not ours
                self._pid, self._held, self._timer = os.getpid(), {}, None
            self._held[upload.upload_id] = (upload, time.time())
            if self._timer is None:
                self._timer = threading.Timer(self.interval, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def discard(self, upload_id: str) -> None:
        """Drop ``upload_id``'s held report: a later event of it supersedes it."""
        with self._lock:
            self._held.pop(upload_id, None)

    def flush(self) -> None:
        """Publish every held report in one call. Under the lock, so that a report is
        never appended after the event that dropped it."""
        app = self._app()
        with self._lock:
            held, self._held, self._timer = self._held, {}, None
            if app is None or not held:
                return
            events = [(up.owner, _progress_body(up, at)) for up, at in held.values()]
            try:
                get_state(app).service.publish_events(events)
            except Exception:
                logger.exception("%d progress events could not be published", len(events))


#: Each app's :class:`ProgressEvents` (the app's own, gone with it).
_PROGRESS: weakref.WeakKeyDictionary[Flask, ProgressEvents] = weakref.WeakKeyDictionary()


def _progress_body(upload: UploadRecord, at: float | None = None) -> bytes:
    return message_body("upload.progress", upload_data(upload, include_owner=False), now=at)


def on_upload_progress(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
    progress = _PROGRESS.get(sender)
    if progress is None:  # OBITOX_EVENTS_PROGRESS_INTERVAL_MS = 0: every report
        _publish(sender, upload.owner, _progress_body(upload))
    else:
        progress.offer(upload)


def _upload_receiver(event: str) -> Callable[..., None]:
    def receive(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
        if event == "upload.signed" and sent_with_write(upload.upload_id):
            return  # the domain's write carried it (Signing.create_signed)
        progress = _PROGRESS.get(sender)
        if progress is not None:
            progress.discard(upload.upload_id)
        _publish(
            sender, upload.owner, message_body(event, upload_data(upload, include_owner=False))
        )

    receive.__name__ = f"publish_{event.replace('.', '_')}"
    return skips_sent_with_write(receive) if event == "upload.signed" else receive


def _group_receiver(event: str) -> Callable[..., None]:
    def receive(sender: Flask, group: Any, view: Mapping[str, Any], **extra: Any) -> None:
        _publish(sender, group.owner, message_body(event, view))

    receive.__name__ = f"publish_{event.replace('.', '_')}"
    return receive


def on_upload_rejected(
    sender: Flask,
    *,
    filename: str | None = None,
    reason: str = "",
    stage: str = "",
    code: str = "",
    owner: str | None = None,
    upload: UploadRecord | None = None,
    **extra: Any,
) -> None:
    data = rejected_data(filename=filename, reason=reason, stage=stage, code=code, upload=upload)
    body = message_body("upload.rejected", data)
    _publish(sender, owner or (upload.owner if upload is not None else None), body)


def _processing_data(upload: UploadRecord, name: str, **fields: Any) -> dict[str, Any]:
    data = upload_data(upload, include_owner=False)
    data.update(processor=name, **fields)
    return data


def on_processing_completed(
    sender: Flask, upload: UploadRecord, name: str, result: Any = None, **extra: Any
) -> None:
    data = _processing_data(upload, name, result=result)
    _publish(sender, upload.owner, message_body("processing.completed", data))


def on_processing_failed(
    sender: Flask,
    upload: UploadRecord,
    name: str,
    error: Any = None,
    final: bool = False,
    **extra: Any,
) -> None:
    data = _processing_data(upload, name, error=None if error is None else str(error), final=final)
    _publish(sender, upload.owner, message_body("processing.failed", data))


_UNGUARDED: list[tuple[Any, Callable[..., None]]] = [
    *((signal, _upload_receiver(event)) for signal, event in UPLOAD_SIGNALS),
    (signals.upload_progress, on_upload_progress),
    *((signal, _group_receiver(event)) for signal, event in GROUP_SIGNALS),
    (signals.upload_rejected, on_upload_rejected),
    (signals.processing_completed, on_processing_completed),
    (signals.processing_failed, on_processing_failed),
]
_RECEIVERS = tuple((signal, _never_raises(receiver)) for signal, receiver in _UNGUARDED)


def connect_signals(app: Flask) -> None:
    """Publish ``app``'s upload and group events to its owners' streams (module-level
    receivers, and blinker holds ``app`` weakly: nothing keeps the app alive)."""
    interval = get_state(app).settings.events_progress_interval_ms
    if interval:
        _PROGRESS[app] = ProgressEvents(app, interval / 1000)
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, sender=app)
