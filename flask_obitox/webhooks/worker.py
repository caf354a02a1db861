"""``flask obitox worker``: an RQ worker, with RQ's scheduler, running inside the app.

It works the webhook queue (``OBITOX_RQ_QUEUE``) and the processing queue
(``OBITOX_PROCESSING_QUEUE``), in that order: a delivery never waits behind a batch of
processors.

Each job runs in a fresh app context of the app the command was started for, so the
delivery job reads that app's config and the ``webhook-delivered`` /
``webhook-failed`` signals reach the host's receivers.

Two worker classes, measured in ``benchmarks/bench_webhooks.py`` (figures in
``docs/performance.rst``):

- ``simple`` (default): RQ's ``SimpleWorker``, jobs run in the worker process. A
  delivery is one HTTP request, so forking a process for it costs more than the
  request itself; the HTTP session (and its keep-alive connections) is reused.
- ``fork``: RQ's ``Worker``, one forked work horse per job, so a job that crashes the
  interpreter cannot take the worker down.

Recovery from a killed worker (RQ's abandoned-job handling, made faster where RQ lets
a worker choose): a job whose worker died stays in the queue's
``StartedJobRegistry`` until its entry expires; the maintenance of any live worker on
the queue then hands it to ``Retry`` (the next attempt waits for the next delay in
the schedule) or, with no retry left, to the failed registry. RQ sets the entry to
expire 60 s after the job's timeout (``SimpleWorker``) or after the next heartbeat
(``Worker``), and runs maintenance every 10 minutes; these workers use
:data:`HEARTBEAT_MARGIN` instead of 60 s and run maintenance every
``--maintenance-interval`` seconds (:data:`MAINTENANCE_INTERVAL`). See
``docs/webhooks.rst`` for the resulting times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from flask import Flask
from rq import Queue, SimpleWorker, Worker
from rq.job import Job

from ..domain.processing import ProcessorFailed
from .delivery import WebhookDeliveryFailed
from .dispatch import webhooks_for

#: Seconds a job's StartedJobRegistry entry outlives its last sign of life (RQ: 60).
HEARTBEAT_MARGIN = 10
#: Seconds between two maintenance runs (RQ: 600): how often a worker looks for jobs
#: whose worker died.
MAINTENANCE_INTERVAL = 15
#: Seconds between two heartbeats of a forking worker watching its work horse (RQ: 30).
JOB_MONITORING_INTERVAL = 5
#: RQ renews the worker's key several times per job; renewals this close together
#: (with the default TTL, outside a pipeline) are skipped: two Redis round trips each.
HEARTBEAT_MIN_INTERVAL = 1.0


class _InApp:
    """Run every job inside an app context, and shorten abandoned-job detection."""

    flask_app: Flask
    _renewed_until: float = 0.0

    # RQ 3 added arguments to perform_job (the Execution) and get_heartbeat_ttl (the
    # working time): pass whatever the installed RQ gives straight through.

    def unsubscribe(self) -> None:
        """RQ's, with its command thread told to stop first. RQ runs that thread with a
        60-second read, and redis-py 8's ``PubSubWorkerThread.stop()`` waits for it:
        when the reply to RQ's ``UNSUBSCRIBE`` ended a read before the thread was told
        to stop, it started another, and a worker took a whole minute to leave (1 run
        in 5 of ``flask obitox worker --burst`` on an empty queue). Told first, the
        thread leaves on that reply."""
        running = getattr(getattr(self, "pubsub_thread", None), "_running", None)
        if running is not None:
            running.clear()
        super().unsubscribe()  # type: ignore[misc]

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        with self.flask_app.app_context():
            done: bool = super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc]
            return done

    def clean_registries(self, *args: Any, **kwargs: Any) -> None:
        # Maintenance hands abandoned jobs (their worker was killed) to their failure
        # callbacks, which record the failure through the app's domain.
        with self.flask_app.app_context():
            super().clean_registries(*args, **kwargs)  # type: ignore[misc]

    def get_heartbeat_ttl(self, job: Job, *args: Any, **kwargs: Any) -> int:
        # RQ adds 60 s to the time a job may run silently before its entry expires;
        # the death penalty stops the job at its timeout, so a few seconds suffice.
        ttl: int = super().get_heartbeat_ttl(job, *args, **kwargs)  # type: ignore[misc]
        return max(1, ttl - 60 + HEARTBEAT_MARGIN)

    def _set_ip_address(self, connection: Any) -> None:
        # RQ 3 parses CLIENT INFO; a server that answers it in another shape (fakeredis
        # 2.41, which the example app embeds, prints a tuple as the address) must not
        # keep the worker from starting: the address is only shown in `rq info`.
        try:
            super()._set_ip_address(connection)  # type: ignore[misc]
        except (ValueError, KeyError, IndexError):
            self.ip_address = "unknown"

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if timeout is None:
            now = time.monotonic()
            if pipeline is None and now < self._renewed_until:
                return  # renewed for worker_ttl + 60 s less than a second ago
            self._renewed_until = now + HEARTBEAT_MIN_INTERVAL
        else:
            self._renewed_until = 0.0  # a shorter TTL was set: renew on the next call
        super().heartbeat(timeout, pipeline)  # type: ignore[misc]

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        error = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(error, ProcessorFailed):
            return  # logged, one line, where the attempt was recorded
        if isinstance(error, WebhookDeliveryFailed):
            # An expected outcome (the receiver said no): one line, not a traceback.
            self.log.warning(  # type: ignore[attr-defined]
                "Webhook attempt %d failed%s: %s",
                error.delivery.attempt,
                " (final)" if error.final else "",
                error,
            )
            return
        super().handle_exception(job, *exc_info)  # type: ignore[misc]


class AppSimpleWorker(_InApp, SimpleWorker):
    """RQ's ``SimpleWorker`` (jobs in the worker process) inside a Flask app."""


class AppForkWorker(_InApp, Worker):
    """RQ's forking ``Worker`` (one work horse per job) inside a Flask app."""


WORKER_CLASSES: dict[str, type[AppSimpleWorker] | type[AppForkWorker]] = {
    "simple": AppSimpleWorker,
    "fork": AppForkWorker,
}
DEFAULT_WORKER_CLASS = "simple"


def make_worker(
    app: Flask,
    *,
    queues: Sequence[str] = (),
    worker_class: str = DEFAULT_WORKER_CLASS,
    maintenance_interval: int = MAINTENANCE_INTERVAL,
    name: str | None = None,
) -> AppSimpleWorker | AppForkWorker:
    """A worker for ``app`` on ``queues`` (default: ``OBITOX_RQ_QUEUE`` and
    ``OBITOX_PROCESSING_QUEUE``, webhooks first), on the Redis ``OBITOX_RQ_REDIS_URL``
    names."""
    webhooks = webhooks_for(app)
    connection = webhooks.connection
    settings = webhooks.settings
    names = list(queues) or [settings.rq_queue, settings.processing_queue]
    cls = WORKER_CLASSES[worker_class]
    worker = cls(
        [Queue(queue, connection=connection) for queue in names],
        connection=connection,
        name=name,
        maintenance_interval=maintenance_interval,
        # An idle worker wakes from its blocking dequeue every worker_ttl - 15 s, and
        # only then runs maintenance: keep the two in step.
        worker_ttl=maintenance_interval + 15,
        job_monitoring_interval=JOB_MONITORING_INTERVAL,
    )
    worker.flask_app = app
    return worker


def run_worker(
    app: Flask,
    *,
    queues: Sequence[str] = (),
    burst: bool = False,
    worker_class: str = DEFAULT_WORKER_CLASS,
    maintenance_interval: int = MAINTENANCE_INTERVAL,
    name: str | None = None,
    logging_level: str = "INFO",
) -> bool:
    """Work the queues, with RQ's scheduler (retries are scheduled jobs), until stopped
    (SIGINT/SIGTERM: warm shutdown) or, with ``burst``, until they are empty. Returns
    whether any job ran."""
    worker = make_worker(
        app,
        queues=queues,
        worker_class=worker_class,
        maintenance_interval=maintenance_interval,
        name=name,
    )
    logging.getLogger("flask_obitox.webhooks").setLevel(logging_level)
    worked: bool = worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)
    return worked
