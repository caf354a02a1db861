"""RQ jobs that maintain uploads, run by ``flask obitox worker`` inside the app context.

Schedule :func:`cleanup` periodically with RQ's cron scheduler (``rq cron``), for
example hourly::

    # obitox_cron.py, run with: rq cron obitox_cron.py --url redis://...
    from rq import cron
    from flask_obitox.jobs import cleanup

    cron.register(cleanup, queue_name="obitox-webhooks", interval=3600)

or enqueue it once from anywhere with ``queue.enqueue("flask_obitox.jobs.cleanup")``.

:func:`process` is the job of one processor on one upload (DESIGN §14).
"""

from __future__ import annotations

from typing import Any

from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job

from .appstate import get_state
from .domain.processing import KILLED


def cleanup(orphans: bool = True) -> dict[str, Any]:
    """``flask obitox cleanup`` as an RQ job; returns what it did (the job's result).

    Raises when storage failed for some upload, so the job lands in RQ's failed
    registry and the failure is visible; the next run retries those uploads.
    """
    ext = get_state()
    report = ext.service.cleanup(orphans=orphans)
    summary = {
        "expired": [record.upload_id for record in report.expired],
        "orphans": report.orphans,
        "errors": report.errors,
    }
    if report.errors:
        raise RuntimeError(f"cleanup could not free storage for some uploads: {summary}")
    return summary


def process(upload_id: str, name: str, run: int) -> dict[str, Any]:
    """One attempt of a processor on an upload (queued by
    :mod:`flask_obitox.processing_queue`); its result is the job's result. A failed
    attempt raises, so RQ retries it on ``OBITOX_PROCESSING_RETRY_SCHEDULE``."""
    job = get_current_job()
    retries_left = int(job.retries_left or 0) if job is not None else 0
    return get_state().service.run_processor(upload_id, name, int(run), retries_left=retries_left)


def processing_failed(job: Job, connection: Any, exc_type: Any, error: Any, *rest: Any) -> None:
    """RQ's failure callback of a processing job. An attempt that raised was recorded
    by the job itself; this records the attempts that never returned: the worker was
    killed (RQ finds the job abandoned and calls this from a live worker's
    maintenance, inside the app context ``flask obitox worker`` gives it)."""
    if not isinstance(error, AbandonedJobError):
        return
    upload_id, name, run = job.args
    final = not job.retries_left
    get_state().service.record_failure(upload_id, name, int(run), KILLED, final=final)
