"""Processing runs on RQ: the queue, enqueueing, and the failed registry.

The same machinery as webhook deliveries (:mod:`flask_obitox.webhooks.dispatch`): the
RQ Redis of ``OBITOX_RQ_REDIS_URL``, jobs saved with RQ's unique-enqueue script under a
deterministic id (``obitox-process-<uploadId>-<name>-<run>``, so one run is queued
once however often it is asked for), retries with RQ's ``Retry`` and scheduler, and
inside a request one round trip when the request ends. The queue is
``OBITOX_PROCESSING_QUEUE``; ``flask obitox worker`` works it beside the webhook queue.

When an upload completes, the domain has already marked its processors ``queued``
(:mod:`flask_obitox.domain.processing`); the ``upload-completed`` receiver here queues
their jobs. A job is :func:`flask_obitox.jobs.process`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flask import Flask, current_app, has_request_context, request
from redis.exceptions import RedisError
from rq import Callback, Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.utils import now

from . import signals
from .appstate import get_state
from .config import Settings
from .domain.processors import Processor
from .state import UploadRecord
from .webhooks.dispatch import DEDUPLICATION_WINDOW, Webhooks, save_unique_jobs

logger = logging.getLogger("flask_obitox.processing")

#: The job function and the callback of a job whose worker died, by name.
PROCESS = "flask_obitox.jobs.process"
ON_FAILURE = "flask_obitox.jobs.processing_failed"
#: Where a request keeps its runs until it ends.
PENDING_RUNS = "flask_obitox.processing.pending"
#: Seconds beyond a processor's timeout before RQ's own bookkeeping gives up on it.
JOB_TIMEOUT_MARGIN = 0


def process_job_id(upload_id: str, name: str, run: int) -> str:
    """The RQ job id of run ``run`` of processor ``name`` on ``upload_id``."""
    return f"obitox-process-{upload_id}-{name}-{run}"


class ProcessingQueue:
    """One app's processing queue (``OBITOX_PROCESSING_QUEUE``), on the RQ Redis the
    webhooks use. Nothing connects before the first enqueue."""

    def __init__(self, settings: Settings, webhooks: Webhooks, processors: dict[str, Any]) -> None:
        self.settings = settings
        self.webhooks = webhooks
        self._processors = processors
        self._queue: Queue | None = None

    @property
    def queue(self) -> Queue:
        if self._queue is None:
            self._queue = Queue(self.settings.processing_queue, connection=self.webhooks.connection)
        return self._queue

    def retry(self, processor: Processor | None) -> Retry | None:
        """RQ's ``Retry`` for ``processor``: its ``retries`` with the delays of
        ``OBITOX_PROCESSING_RETRY_SCHEDULE`` (``None``: no retry)."""
        schedule = self.settings.processing_retry_schedule
        intervals = processor.retry_intervals(schedule) if processor is not None else []
        return Retry(max=len(intervals), interval=intervals) if intervals else None

    def _job(self, record: UploadRecord, name: str) -> Job:
        entry = (record.processing or {})[name]
        run = int(entry.get("run", 1))
        processor: Processor | None = self._processors.get(name)
        timeout = processor.timeout if processor is not None else 60
        queue = self.queue
        job = queue.create_job(
            PROCESS,
            args=(record.upload_id, name, run),
            job_id=process_job_id(record.upload_id, name, run),
            timeout=timeout + JOB_TIMEOUT_MARGIN,
            result_ttl=DEDUPLICATION_WINDOW,
            retry=self.retry(processor),
            on_failure=Callback(ON_FAILURE),
            description=f"process {name} {record.upload_id} (run {run})",
            meta={"upload": record.upload_id, "processor": name, "run": run},
            status=JobStatus.QUEUED,
        )
        job.origin = queue.name
        job.enqueued_at = now()
        return job

    def enqueue(self, record: UploadRecord, names: Sequence[str]) -> None:
        """Queue the current run of each of ``names`` on ``record``: at the end of the
        request inside one, else now. Never raises: the upload is already completed,
        and a run that could not be queued is logged (``flask obitox processing
        retry`` queues it again once it is marked failed)."""
        jobs = [self._job(record, name) for name in names]
        if not jobs:
            return
        app = current_app._get_current_object() if has_request_context() else None  # type: ignore[attr-defined]
        if app is not None and get_state(app).processing is self:
            pending: list[tuple[ProcessingQueue, Job]] = request.environ.setdefault(
                PENDING_RUNS, []
            )
            pending.extend((self, job) for job in jobs)
            return
        self.save(jobs)

    def save(self, jobs: Sequence[Job]) -> list[str]:
        """Save ``jobs`` in one round trip; the ids of those enqueued now."""
        try:
            replies = save_unique_jobs(self.webhooks.enqueue_connection, self.queue, jobs)
        except (RedisError, OSError) as error:
            replies = [error] * len(jobs)
        enqueued: list[str] = []
        for job, reply in zip(jobs, replies, strict=True):
            if isinstance(reply, Exception):
                logger.error(
                    "Processing job %s could not be enqueued, Redis at %s is unavailable (%s: %s)",
                    job.id,
                    self.webhooks.redis_url,
                    type(reply).__name__,
                    reply,
                )
            elif reply:
                enqueued.append(job.id)
        return enqueued

    # -- the failed registry ------------------------------------------------------------

    def failed_runs(self) -> list[FailedRun]:
        """Every processing job in the failed registry, oldest failure first."""
        registry = FailedJobRegistry(queue=self.queue)
        jobs = Job.fetch_many(registry.get_job_ids(), connection=self.webhooks.connection)
        return [
            FailedRun(
                job_id=job.id,
                upload_id=job.args[0],
                name=job.args[1],
                run=int(job.args[2]),
                failed_at=job.ended_at,
            )
            for job in jobs
            if job is not None and job.func_name == PROCESS
        ]


@dataclasses.dataclass(frozen=True, slots=True)
class FailedRun:
    """A processing job RQ gave up on."""

    job_id: str
    upload_id: str
    name: str
    run: int
    failed_at: datetime | None


def enqueue_pending(pending: list[tuple[ProcessingQueue, Job]]) -> None:
    """Queue the runs a request left (its end, :mod:`flask_obitox.request_end`), one
    round trip per app. Never raises."""
    by_queue: dict[int, tuple[ProcessingQueue, list[Job]]] = {}
    for queue, job in pending:
        by_queue.setdefault(id(queue), (queue, []))[1].append(job)
    for queue, jobs in by_queue.values():
        try:
            queue.save(jobs)
        except Exception:
            logger.exception("Processing jobs %s could not be enqueued", [job.id for job in jobs])


def on_upload_completed(sender: Flask, upload: UploadRecord, **extra: Any) -> None:
    queued = [
        name for name, entry in (upload.processing or {}).items() if entry["status"] == "queued"
    ]
    if queued:
        get_state(sender).processing.enqueue(upload, queued)


def connect_signals(app: Flask) -> None:
    """Queue the processors of every upload ``app`` completes."""
    signals.upload_completed.connect(on_upload_completed, sender=app)
