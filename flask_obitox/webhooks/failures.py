"""Deliveries that gave up: listing RQ's failed registry, and replaying from it.

After its last attempt (or a final failure: ``410 Gone``, a refused target) a
delivery job stays in the queue's ``FailedJobRegistry`` for RQ's failure TTL (one
year). ``flask obitox webhooks failed`` lists them; ``flask obitox webhooks replay``
puts them back on the queue with a fresh retry schedule, keeping their message id
and body, so a receiver that already saw the message can recognise it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime

from flask import Flask
from rq.job import Job
from rq.registry import FailedJobRegistry

from .dispatch import DELIVER, webhooks_for
from .targets import display_url


@dataclasses.dataclass(frozen=True, slots=True)
class FailedDelivery:
    """One delivery in the failed registry."""

    #: The RQ job id: what ``flask obitox webhooks replay`` takes.
    job_id: str
    webhook_id: str
    event: str
    #: The endpoint, without the credentials its URL may hold.
    url: str
    attempts: int
    last_error: str
    failed_at: datetime | None


class UnknownFailedDelivery(LookupError):
    """No delivery with that job id is in the failed registry."""


def _registry(app: Flask) -> FailedJobRegistry:
    return FailedJobRegistry(queue=webhooks_for(app).queue)


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"


def _describe(job: Job) -> FailedDelivery:
    message_id, event, url, _body = job.args
    meta = job.meta
    return FailedDelivery(
        job_id=job.id,
        webhook_id=message_id,
        event=event,
        url=display_url(url),
        attempts=int(meta.get("attempts", 0)),
        # RQ's own reason (e.g. an abandoned job) when the job never recorded one.
        last_error=meta.get("last_error") or _last_line(job.exc_info),
        failed_at=job.ended_at,
    )


def failed_deliveries(app: Flask) -> list[FailedDelivery]:
    """Every delivery in ``app``'s failed registry, oldest failure first."""
    webhooks = webhooks_for(app)
    ids = _registry(app).get_job_ids()
    jobs = Job.fetch_many(ids, connection=webhooks.connection)
    return [_describe(job) for job in jobs if job is not None and job.func_name == DELIVER]


def replay(app: Flask, job_ids: Iterable[str] | None = None) -> list[str]:
    """Put failed deliveries back on the queue (``None``: all of them), each with the
    current retry schedule from its first delay on. Returns the job ids replayed;
    an id not in the failed registry raises :class:`UnknownFailedDelivery` before
    anything is replayed."""
    webhooks = webhooks_for(app)
    registry = _registry(app)
    failed = set(registry.get_job_ids())
    wanted = list(dict.fromkeys(job_ids)) if job_ids is not None else sorted(failed)
    missing = [job_id for job_id in wanted if job_id not in failed]
    if missing:
        raise UnknownFailedDelivery(
            f"no failed webhook delivery with id {', '.join(missing)} in queue {registry.name!r}"
        )
    retry = webhooks.retry()
    replayed: list[str] = []
    for job in Job.fetch_many(wanted, connection=webhooks.connection):
        if job is None or job.func_name != DELIVER:
            continue
        job.retries_left = retry.max if retry is not None else None
        job.retry_intervals = retry.intervals if retry is not None else None
        job.timeout = webhooks.job_timeout
        registry.requeue(job)
        replayed.append(job.id)
    return replayed
