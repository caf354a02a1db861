"""RQ jobs that maintain uploads, run by ``flask obitox worker`` inside the app context.

Schedule :func:`cleanup` periodically with RQ's cron scheduler (``rq cron``), for
example hourly::

    # obitox_cron.py, run with: rq cron obitox_cron.py --url redis://...
    from rq import cron
    from flask_obitox.jobs import cleanup

    cron.register(cleanup, queue_name="obitox-webhooks", interval=3600)

or enqueue it once from anywhere with ``queue.enqueue("flask_obitox.jobs.cleanup")``.
"""

from __future__ import annotations

from typing import Any

from .appstate import get_state


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
