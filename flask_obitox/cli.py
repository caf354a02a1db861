"""``flask obitox ...``: the operator's commands, registered on the app by ``init_app``.

Each command is thin: it parses options, calls the module that owns the logic and
prints the outcome. The logic lives with its concern (``service.py``, ``webhooks/``,
``storage/``), so the admin routes and the commands share it.
"""

from __future__ import annotations

import json

import click
import redis
from flask import current_app
from flask.cli import AppGroup

from .errors import ServiceUnavailable
from .extension import EXTENSION_KEY, ObitoXState
from .webhooks import UnknownFailedDelivery, failed_deliveries, replay, run_worker, webhooks_for
from .webhooks.worker import DEFAULT_WORKER_CLASS, MAINTENANCE_INTERVAL, WORKER_CLASSES

obitox_cli = AppGroup("obitox", help="Direct-to-S3 uploads: maintenance and operations.")


def _ext() -> ObitoXState:
    state: ObitoXState = current_app.extensions[EXTENSION_KEY]
    return state


@obitox_cli.command("cleanup")
@click.option(
    "--orphans/--no-orphans",
    default=True,
    show_default=True,
    help="Also abort multipart uploads under OBITOX_KEY_PREFIX older than OBITOX_UPLOAD_TTL "
    "that have no record.",
)
def cleanup_command(orphans: bool) -> None:
    """Expire uploads past OBITOX_UPLOAD_TTL and free what they hold in storage."""
    try:
        report = _ext().service.cleanup(orphans=orphans)
    except ServiceUnavailable as error:
        raise click.ClickException(error.detail) from None
    for record in report.expired:
        what = "aborted multipart upload" if record.kind == "multipart" else "expired upload"
        click.echo(f"{what} {record.upload_id} ({record.key})")
    for key in report.orphans:
        click.echo(f"aborted orphan multipart upload {key}")
    for problem in report.errors:
        click.echo(f"failed: {problem} (retried on the next run)", err=True)
    click.echo(
        f"{len(report.expired)} expired, {len(report.orphans)} orphans aborted, "
        f"{len(report.errors)} failed."
    )
    if report.errors:
        raise SystemExit(1)


# -- webhooks (webhooks/) ----------------------------------------------------------------


def _redis_down(error: Exception) -> click.ClickException:
    return click.ClickException(
        f"Redis at {webhooks_for().redis_url} (OBITOX_RQ_REDIS_URL) is unavailable: {error}"
    )


@obitox_cli.command("worker")
@click.option(
    "--burst", is_flag=True, help="Quit when the queues are empty instead of waiting for jobs."
)
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Queue to work (repeatable; default: OBITOX_RQ_QUEUE).",
)
@click.option(
    "--worker-class",
    type=click.Choice(sorted(WORKER_CLASSES)),
    default=DEFAULT_WORKER_CLASS,
    show_default=True,
    help="simple: jobs run in this process; fork: one forked process per job.",
)
@click.option(
    "--maintenance-interval",
    type=click.IntRange(1, 3600),
    default=MAINTENANCE_INTERVAL,
    show_default=True,
    help="Seconds between two looks for deliveries whose worker died.",
)
def worker_command(
    burst: bool, queues: tuple[str, ...], worker_class: str, maintenance_interval: int
) -> None:
    """Deliver webhooks: an RQ worker, with RQ's scheduler for retries, inside this app."""
    try:
        run_worker(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            queues=queues,
            burst=burst,
            worker_class=worker_class,
            maintenance_interval=maintenance_interval,
        )
    except redis.exceptions.ConnectionError as error:
        raise _redis_down(error) from None


@obitox_cli.group("webhooks")
def webhooks_cli() -> None:
    """Webhook deliveries that gave up: list them, replay them."""


@webhooks_cli.command("failed")
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
def webhooks_failed(as_json: bool) -> None:
    """List deliveries in RQ's failed registry: event, endpoint, attempts, last error."""
    try:
        failed = failed_deliveries(current_app._get_current_object())  # type: ignore[attr-defined]
    except redis.exceptions.ConnectionError as error:
        raise _redis_down(error) from None
    if as_json:
        rows = [
            {
                "id": item.job_id,
                "webhookId": item.webhook_id,
                "event": item.event,
                "endpoint": item.url,
                "attempts": item.attempts,
                "lastError": item.last_error,
                "failedAt": item.failed_at.isoformat() if item.failed_at else None,
            }
            for item in failed
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    for item in failed:
        when = item.failed_at.strftime("%Y-%m-%d %H:%M:%S UTC") if item.failed_at else "?"
        click.echo(item.job_id)
        click.echo(f"    {item.event} -> {item.url}")
        click.echo(f"    attempts: {item.attempts}, last failed {when}: {item.last_error}")
    click.echo(f"{len(failed)} failed deliveries.")


@webhooks_cli.command("replay")
@click.argument("job_ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "replay_all", is_flag=True, help="Replay every failed delivery.")
def webhooks_replay(job_ids: tuple[str, ...], replay_all: bool) -> None:
    """Put failed deliveries (ids from `webhooks failed`) back on the queue, with the
    retry schedule from the start; the webhook-id and body stay the same."""
    if bool(job_ids) == replay_all:
        raise click.UsageError("Give the ids of failed deliveries, or --all.")
    try:
        replayed = replay(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            None if replay_all else job_ids,
        )
    except UnknownFailedDelivery as error:
        raise click.ClickException(str(error)) from None
    except redis.exceptions.ConnectionError as error:
        raise _redis_down(error) from None
    for job_id in replayed:
        click.echo(f"replayed {job_id}")
    click.echo(f"{len(replayed)} deliveries replayed.")
