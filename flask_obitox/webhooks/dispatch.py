"""From upload signals to RQ jobs: the endpoints, the queue, and enqueueing.

``init_app`` creates one :class:`Webhooks` per app and connects this module's
receivers to ``upload-completed``, ``upload-aborted``, ``upload-rejected``,
``upload-expired``, ``upload-ready`` and ``processing-failed`` (final failures only)
for that app. Each event becomes one message (its body encoded
once) and one RQ job per subscribed endpoint, with a job id derived from the message
id and the endpoint, saved the way RQ's ``unique=True`` saves a job: RQ's own Lua
script refuses a second job with the same id atomically, so the same event enqueued
twice is delivered once.

Inside a request, the events wait until the request ends
(:mod:`flask_obitox.request_end`) and are enqueued together, in one Redis round trip
bounded by :data:`ENQUEUE_TIMEOUT`: a batch of 100 refused files costs what one costs,
even while Redis hangs. Outside a request (a worker, a command), each event is enqueued
at once, the same way.

Nothing here connects to Redis before the first enqueue: an app starts while Redis
is down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Mapping, MutableSequence
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, current_app, has_request_context, request
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT
from rq.utils import now

from .. import signals
from ..appstate import get_state
from ..config import ConfigError, ConfigVars, Settings, webhook_endpoint, webhook_secret_key
from ..redis_client import redis_from_url
from ..state import GroupRecord, UploadRecord
from ..state.redis import redact_url
from .events import (
    GROUP_CANCELLED,
    GROUP_COMPLETED,
    GROUP_FAILED,
    UPLOAD_ABORTED,
    UPLOAD_COMPLETED,
    UPLOAD_DELETED,
    UPLOAD_EXPIRED,
    UPLOAD_READY,
    Message,
    group_message,
    processing_failed_message,
    rejected_message,
    upload_message,
)
from .targets import display_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    import requests

logger = logging.getLogger("flask_obitox.webhooks")

#: The job function, by name: the web process never imports the HTTP client.
DELIVER = "flask_obitox.webhooks.delivery.deliver"
#: How long a delivered job (and so its id) is kept: within this window a second
#: enqueue of the same event is refused as a duplicate.
DEDUPLICATION_WINDOW = 24 * 3600
#: Seconds an attempt may take beyond ``OBITOX_WEBHOOK_TIMEOUT`` before RQ stops it.
JOB_TIMEOUT_MARGIN = 5
#: Seconds enqueueing waits for RQ's Redis to answer (connecting has its own second).
#: A request waits for it once at its end, whatever the number of its events.
ENQUEUE_TIMEOUT = 2.0
#: Where a request keeps its events until it ends (in its WSGI environ, which nested
#: app contexts share).
PENDING_EVENTS = "flask_obitox.webhooks.pending"
#: The script RQ runs for ``unique=True`` (the same in RQ 2.8 and 3): if the job's key
#: exists, 0; else save the job's hash, push its id on the queue, 1.
_UNIQUE_ENQUEUE_SHA = hashlib.sha1(
    UNIQUE_ENQUEUE_SCRIPT.encode(), usedforsecurity=False
).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL that receives the events it subscribed to, signed with its secret."""

    url: str
    secret: str = dataclasses.field(repr=False)
    events: tuple[str, ...]
    #: A short stable name for the URL, part of every job id.
    id: str
    key: bytes = dataclasses.field(repr=False)

    @classmethod
    def from_config(cls, value: Any, where: str, settings: Settings) -> Endpoint:
        """An endpoint from a config entry or ``add_webhook`` arguments (validated)."""
        checked = webhook_endpoint(value, where, allowed_hosts=settings.webhook_allowed_hosts)
        url = checked["url"]
        return cls(
            url=url,
            secret=checked["secret"],
            events=checked["events"],
            id="ep_" + hashlib.sha256(url.encode()).hexdigest()[:16],
            key=webhook_secret_key(checked["secret"]),
        )


def delivery_job_id(message_id: str, endpoint: Endpoint) -> str:
    """The RQ job id of one (message, endpoint) pair: the same on every enqueue."""
    return f"obitox-webhook-{message_id}-{endpoint.id}"


class Webhooks:
    """One app's webhook endpoints, its RQ connection and queue, and enqueueing.

    :param added: the extension's list of ``add_webhook`` endpoints, read live, so an
        endpoint added after ``init_app`` counts from the next event on.
    """

    def __init__(self, settings: Settings, added: MutableSequence[dict[str, Any]]) -> None:
        self.settings = settings
        self._added = added
        self._configured = tuple(
            Endpoint.from_config(value, f"{ConfigVars.WEBHOOKS}[{index}]", settings)
            for index, value in enumerate(settings.webhooks)
        )
        self._endpoints: tuple[Endpoint, ...] = self._configured
        self._added_seen = 0
        self._lock = threading.Lock()
        self._connection: redis.Redis | None = None
        self._enqueue_connection: redis.Redis | None = None
        self._queue: Queue | None = None
        self._session: requests.Session | None = None
        self._refresh(strict=True)

    # -- endpoints -----------------------------------------------------------------

    def _refresh(self, *, strict: bool) -> None:
        """Merge the ``add_webhook`` endpoints in. At ``init_app`` (``strict``) a bad or
        duplicate one is a :class:`ConfigError`; later it is logged and skipped, since
        raising would fail the upload request that sent the event."""
        endpoints = list(self._configured)
        seen = {endpoint.url for endpoint in endpoints}
        added = list(self._added)
        for index, value in enumerate(added):
            try:
                endpoint = Endpoint.from_config(value, f"add_webhook #{index + 1}", self.settings)
                if endpoint.url in seen:
                    raise ConfigError(
                        f"add_webhook #{index + 1}: {endpoint.url} is already an endpoint"
                    )
            except ConfigError as error:
                if strict:
                    raise
                logger.error("Webhook endpoint skipped: %s", error)
                continue
            seen.add(endpoint.url)
            endpoints.append(endpoint)
        self._endpoints = tuple(endpoints)
        self._added_seen = len(added)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every endpoint: ``OBITOX_WEBHOOKS`` first, then ``add_webhook`` ones."""
        if len(self._added) != self._added_seen:
            with self._lock:
                self._refresh(strict=False)
        return self._endpoints

    def endpoint(self, url: str) -> Endpoint | None:
        """The endpoint whose URL is ``url``, if it is still configured."""
        return next((e for e in self.endpoints if e.url == url), None)

    def subscribers(self, event: str) -> list[Endpoint]:
        return [e for e in self.endpoints if event in e.events]

    # -- Redis and RQ --------------------------------------------------------------

    @property
    def connection(self) -> redis.Redis:
        """The Redis client RQ uses (``OBITOX_RQ_REDIS_URL``); created on first use, with
        the package's client options and a 5 s reply timeout."""
        if self._connection is None:
            with self._lock:
                if self._connection is None:
                    self._connection = redis_from_url(
                        self.settings.rq_redis_url, socket_timeout=5.0
                    )
        return self._connection

    @property
    def enqueue_connection(self) -> redis.Redis:
        """The Redis client enqueueing uses: RQ's Redis, with a reply timeout of
        :data:`ENQUEUE_TIMEOUT` since a request waits for it."""
        if self._enqueue_connection is None:
            with self._lock:
                if self._enqueue_connection is None:
                    self._enqueue_connection = redis_from_url(
                        self.settings.rq_redis_url, socket_timeout=ENQUEUE_TIMEOUT
                    )
        return self._enqueue_connection

    @property
    def queue(self) -> Queue:
        """The RQ queue deliveries go to (``OBITOX_RQ_QUEUE``)."""
        if self._queue is None:
            self._queue = Queue(self.settings.rq_queue, connection=self.connection)
        return self._queue

    @property
    def redis_url(self) -> str:
        """Where RQ's Redis is, without its password (for logs and messages)."""
        return redact_url(self.settings.rq_redis_url)

    def retry(self) -> Retry | None:
        """RQ's ``Retry`` for ``OBITOX_WEBHOOK_RETRY_SCHEDULE`` (``None``: no retry)."""
        schedule = list(self.settings.webhook_retry_schedule)
        return Retry(max=len(schedule), interval=schedule) if schedule else None

    @property
    def session(self) -> requests.Session:
        """The HTTP session deliveries use in this process (created on first use)."""
        if self._session is None:
            from .session import new_session

            self._session = new_session(self.settings)
        return self._session

    @property
    def job_timeout(self) -> int:
        return self.settings.webhook_timeout + JOB_TIMEOUT_MARGIN

    # -- enqueueing ----------------------------------------------------------------

    def enqueue(self, message: Message) -> list[str]:
        """One delivery job per endpoint subscribed to ``message.type``: see
        :meth:`enqueue_many`."""
        return self.enqueue_many([message])

    def enqueue_many(self, messages: Sequence[Message]) -> list[str]:
        """One delivery job per (message, subscribed endpoint), all saved in one Redis
        round trip (a ``MULTI``/``EXEC`` transaction); returns the ids of the jobs
        enqueued now (a duplicate of an existing job is skipped).

        Each job is saved by the Lua script of RQ's ``unique=True``, so a job id that
        exists is refused atomically, as ``enqueue_call(..., unique=True)`` refuses it.
        ``Queue.enqueue_many`` would not do: it overwrites an existing job.

        Redis being down or slow does not fail the caller, which is the upload request
        that already changed state: after :data:`ENQUEUE_TIMEOUT` at most, each message
        is logged at ERROR, body included, so an operator can resend it.
        """
        planned = [
            (message, endpoint)
            for message in messages
            for endpoint in self.subscribers(message.type)
        ]
        if not planned:
            return []
        jobs = [self._job(message, endpoint) for message, endpoint in planned]
        try:
            replies = self._save_unique(jobs)
        except (RedisError, OSError) as error:
            replies = [error] * len(jobs)
        enqueued: list[str] = []
        for (message, endpoint), job, reply in zip(planned, jobs, replies, strict=True):
            if isinstance(reply, Exception):
                logger.error(
                    "Webhook %s (%s) to %s could not be enqueued, Redis at %s is unavailable "
                    "(%s: %s); body: %s",
                    message.id,
                    message.type,
                    display_url(endpoint.url),
                    self.redis_url,
                    type(reply).__name__,
                    reply,
                    message.body,
                )
            elif not reply:
                logger.info(
                    "Webhook %s to %s is already enqueued.", message.id, display_url(endpoint.url)
                )
            else:
                enqueued.append(job.id)
        return enqueued

    def _job(self, message: Message, endpoint: Endpoint) -> Job:
        """The delivery job of ``message`` to ``endpoint``, as RQ would enqueue it (not
        saved: nothing here touches Redis)."""
        queue = self.queue
        job = queue.create_job(
            DELIVER,
            args=(message.id, message.type, endpoint.url, message.body),
            job_id=delivery_job_id(message.id, endpoint),
            timeout=self.job_timeout,
            result_ttl=DEDUPLICATION_WINDOW,
            retry=self.retry(),
            description=f"{message.type} {message.id} -> {display_url(endpoint.url)}",
            meta={"event": message.type, "url": endpoint.url, "attempts": 0},
            status=JobStatus.QUEUED,
        )
        job.origin = queue.name
        job.enqueued_at = now()
        return job

    def _save_unique(self, jobs: Sequence[Job]) -> list[Any]:
        return save_unique_jobs(self.enqueue_connection, self.queue, jobs)


def save_unique_jobs(connection: redis.Redis, queue: Queue, jobs: Sequence[Job]) -> list[Any]:
    """Save and queue ``jobs`` (built with ``queue.create_job``, each with its own
    deterministic id) in one round trip; per job, 1 (enqueued), 0 (its id exists) or
    the error Redis answered. Webhook deliveries and processing runs both use it."""
    pipe = connection.pipeline(transaction=True)
    # Loaded in the same transaction, so no EVALSHA can miss it.
    pipe.script_load(UNIQUE_ENQUEUE_SCRIPT)
    pipe.sadd(queue.redis_queues_keys, queue.key)
    for job in jobs:
        fields = [
            item
            for name, value in job.to_dict().items()
            if value is not None
            for item in (name, value if isinstance(value, bytes | str) else str(value))
        ]
        ttl = -1 if job.ttl is None else job.ttl
        pipe.evalsha(_UNIQUE_ENQUEUE_SHA, 2, job.key, queue.key, job.id, "R", ttl, *fields)
    replies: list[Any] = pipe.execute(raise_on_error=False)
    return replies[2:]


# -- per app -----------------------------------------------------------------------


def webhooks_for(app: Flask | None = None) -> Webhooks:
    """``app``'s (default: the current app's) :class:`Webhooks`."""
    webhooks: Webhooks = get_state(app).webhooks
    return webhooks


def webhook_queue(app: Flask | None = None) -> Queue:
    """The RQ queue ``app``'s (default: the current app's) deliveries go to, on the
    Redis ``OBITOX_RQ_REDIS_URL`` names. Creating it does not connect."""
    return webhooks_for(app).queue


# -- signal receivers --------------------------------------------------------------


def _dispatch(app: Flask, webhooks: Webhooks, message: Message) -> None:
    """Enqueue ``message`` now or, in a request of ``app``, when the request ends."""
    if has_request_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
        pending: list[tuple[Webhooks, Message]] = request.environ.setdefault(PENDING_EVENTS, [])
        pending.append((webhooks, message))
    else:
        webhooks.enqueue(message)


def enqueue_pending(pending: list[tuple[Webhooks, Message]]) -> None:
    """Enqueue the deliveries a request left (its end, :mod:`flask_obitox.request_end`),
    one round trip per app. Never raises: the answer is made, and a teardown error
    would break it."""
    by_app: dict[int, tuple[Webhooks, list[Message]]] = {}
    for webhooks, message in pending:
        by_app.setdefault(id(webhooks), (webhooks, []))[1].append(message)
    for webhooks, messages in by_app.values():
        try:
            webhooks.enqueue_many(messages)
        except Exception:
            logger.exception(
                "Webhooks %s could not be enqueued; bodies: %s",
                ", ".join(message.id for message in messages),
                [message.body for message in messages],
            )


def profile_sends(settings: Settings, upload: UploadRecord | None, event: str) -> bool:
    """Whether ``upload``'s profile lets ``event`` out: its ``webhooks`` lists the
    events its uploads send (``None``: all; an upload without a profile sends all)."""
    if upload is None or upload.profile is None:
        return True
    profile = settings.profiles.get(upload.profile)
    return profile is None or profile.webhooks is None or event in profile.webhooks


def _dispatch_upload(app: Flask, event: str, upload: UploadRecord) -> None:
    webhooks = webhooks_for(app)
    if webhooks.subscribers(event) and profile_sends(webhooks.settings, upload, event):
        include_owner = webhooks.settings.webhook_include_owner
        _dispatch(app, webhooks, upload_message(event, upload, include_owner=include_owner))


def on_upload_completed(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
    _dispatch_upload(sender, UPLOAD_COMPLETED, upload)


def on_upload_aborted(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
    _dispatch_upload(sender, UPLOAD_ABORTED, upload)


def on_upload_expired(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
    _dispatch_upload(sender, UPLOAD_EXPIRED, upload)


def on_upload_deleted(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
    _dispatch_upload(sender, UPLOAD_DELETED, upload)


def _dispatch_group(app: Flask, event: str, group: GroupRecord, view: Mapping[str, Any]) -> None:
    webhooks = webhooks_for(app)
    if webhooks.subscribers(event):
        include_owner = webhooks.settings.webhook_include_owner
        _dispatch(app, webhooks, group_message(event, group, view, include_owner=include_owner))


def on_group_completed(
    sender: Flask, group: GroupRecord, view: Mapping[str, Any], **extra: Any
) -> None:
    _dispatch_group(sender, GROUP_COMPLETED, group, view)


def on_group_failed(
    sender: Flask, group: GroupRecord, view: Mapping[str, Any], **extra: Any
) -> None:
    _dispatch_group(sender, GROUP_FAILED, group, view)


def on_group_cancelled(
    sender: Flask, group: GroupRecord, view: Mapping[str, Any], **extra: Any
) -> None:
    _dispatch_group(sender, GROUP_CANCELLED, group, view)


def on_upload_ready(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
    _dispatch_upload(sender, UPLOAD_READY, upload)


def on_processing_failed(
    sender: Flask, upload: UploadRecord, name: str, error: str, final: bool, **extra: Any
) -> None:
    if not final:
        return  # a retry is coming: only a processor that gave up is an event
    webhooks = webhooks_for(sender)
    if webhooks.subscribers("processing.failed"):
        include_owner = webhooks.settings.webhook_include_owner
        message = processing_failed_message(upload, name, error, include_owner=include_owner)
        _dispatch(sender, webhooks, message)


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
    webhooks = webhooks_for(sender)
    if webhooks.subscribers("upload.rejected") and profile_sends(
        webhooks.settings, upload, "upload.rejected"
    ):
        _dispatch(
            sender,
            webhooks,
            rejected_message(
                filename=filename,
                reason=reason,
                stage=stage,
                code=code,
                owner=owner,
                upload=upload,
                include_owner=webhooks.settings.webhook_include_owner,
            ),
        )


def connect_signals(app: Flask) -> None:
    """Enqueue deliveries for ``app``'s upload events, those of a request when it ends.
    The receivers are module functions and blinker holds ``app`` weakly, so nothing
    keeps the app alive."""
    signals.upload_completed.connect(on_upload_completed, sender=app)
    signals.upload_aborted.connect(on_upload_aborted, sender=app)
    signals.upload_rejected.connect(on_upload_rejected, sender=app)
    signals.upload_expired.connect(on_upload_expired, sender=app)
    signals.upload_deleted.connect(on_upload_deleted, sender=app)
    signals.group_completed.connect(on_group_completed, sender=app)
    signals.group_failed.connect(on_group_failed, sender=app)
    signals.group_cancelled.connect(on_group_cancelled, sender=app)
    signals.upload_ready.connect(on_upload_ready, sender=app)
    signals.processing_failed.connect(on_processing_failed, sender=app)
