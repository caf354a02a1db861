"""``flask obitox ...``: the operator's commands, registered on the app by ``init_app``.

Each command is thin: it parses options, calls the module that owns the logic and
prints the outcome. The logic lives with its concern (``service.py``, ``webhooks/``,
``storage/``), so the admin routes and the commands share it.
"""

from __future__ import annotations

import json
from typing import Any

import click
import redis
from flask import current_app
from flask.cli import AppGroup

from .appstate import get_state
from .doctor import render_table, run_checks
from .domain.render import render_processing
from .errors import ObitoXError, ServiceUnavailable
from .storage.cors import RULE_ID as CORS_RULE_ID
from .storage.lifecycle import RULE_ID as LIFECYCLE_RULE_ID
from .webhooks import UnknownFailedDelivery, failed_deliveries, replay, run_worker, webhooks_for
from .webhooks.worker import DEFAULT_WORKER_CLASS, MAINTENANCE_INTERVAL, WORKER_CLASSES

obitox_cli = AppGroup("obitox", help="Direct-to-S3 uploads: maintenance and operations.")


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
        report = get_state().service.cleanup(orphans=orphans)
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


# -- the bucket, its CORS and lifecycle, doctor (storage/, doctor.py) ----------------------


def _operator_error(error: ObitoXError) -> click.ClickException:
    """Bad input is a usage error (exit 2); a storage failure exits 1 with its sentence."""
    if error.code == "INVALID_INPUT":
        return click.UsageError(error.message)
    return click.ClickException(error.message)


def _warn(warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        click.secho(f"warning: {warning}", err=True, fg="yellow")


@obitox_cli.group("bucket")
def bucket_cli() -> None:
    """The bucket itself (OBITOX_BUCKET at OBITOX_ENDPOINT_URL / OBITOX_REGION)."""


@bucket_cli.command("create")
@click.option(
    "--cors",
    "with_cors",
    is_flag=True,
    help="Then merge the upload CORS rule into it, as `flask obitox cors setup` does.",
)
@click.option(
    "--origin",
    "origins",
    multiple=True,
    metavar="URL",
    help="With --cors: origin to allow (repeatable; default: OBITOX_CORS_ORIGINS).",
)
def bucket_create(with_cors: bool, origins: tuple[str, ...]) -> None:
    """Create OBITOX_BUCKET on the configured storage; a bucket that exists is left alone."""
    if origins and not with_cors:
        raise click.UsageError("--origin only applies with --cors.")
    try:
        if with_cors:  # a missing or bad origin is said before anything is created
            get_state().service.check_cors_origins(origins)
        result = get_state().service.create_bucket()
    except ObitoXError as error:
        raise _operator_error(error) from None
    if result.created:
        click.echo(f"Created bucket {result.bucket!r} at {result.location}.")
    elif result.reachable:
        click.echo(
            f"Bucket {result.bucket!r} already exists at {result.location} and these "
            "credentials can use it: nothing to create."
        )
    else:
        click.echo(f"Bucket {result.bucket!r} already exists at {result.location} and is yours.")
        _warn(
            (
                "these credentials may not call HeadBucket on it: grant s3:ListBucket on "
                f"arn:aws:s3:::{result.bucket}, which completing uploads needs.",
            )
        )
    if with_cors:
        click.get_current_context().invoke(cors_setup, origins=origins, dry_run=False)


@obitox_cli.group("cors")
def cors_cli() -> None:
    """Bucket CORS for browser uploads (origins default to OBITOX_CORS_ORIGINS)."""


@cors_cli.command("setup")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    metavar="URL",
    help="Origin to allow, e.g. https://app.example.com (repeatable; default: "
    "OBITOX_CORS_ORIGINS). '*' only when given here, and with a warning.",
)
@click.option("--dry-run", is_flag=True, help="Print the change without writing it.")
def cors_setup(origins: tuple[str, ...], dry_run: bool) -> None:
    """Merge the upload rule into the bucket's CORS configuration; other rules are kept."""
    try:
        result = get_state().service.setup_cors(origins, dry_run=dry_run)
    except ObitoXError as error:
        raise _operator_error(error) from None
    _warn(result.warnings)
    click.echo(f"Bucket {result.bucket!r}: rule {CORS_RULE_ID} for {', '.join(result.origins)}")
    if not result.changed:
        click.echo("Nothing to change: the bucket already has this rule.")
        return
    click.echo(result.diff, nl=False)
    if dry_run:
        click.echo("Dry run: nothing was written.")
    else:
        click.echo(f"Applied: the bucket has {len(result.after)} CORS rule(s).")


@cors_cli.command("verify")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    metavar="URL",
    help="Origin to check (repeatable; default: OBITOX_CORS_ORIGINS).",
)
def cors_verify(origins: tuple[str, ...]) -> None:
    """Check, per origin, that a browser upload would work; exit 1 if one would not."""
    try:
        report = get_state().service.verify_cors(origins)
    except ObitoXError as error:
        raise _operator_error(error) from None
    click.echo(f"Bucket {report.bucket!r}: {len(report.rules)} CORS rule(s)")
    for origin in report.origins:
        click.echo(f"{'✓' if origin.ok else '✗'} {origin.origin}")
        if not origin.ok:
            for check in origin.checks:
                click.echo(f"    {'✓' if check.ok else '✗'} {check.message}")
            click.echo(f"    fix: {origin.fix}")
    if not report.ok:
        raise click.exceptions.Exit(1)


@obitox_cli.group("lifecycle")
def lifecycle_cli() -> None:
    """Bucket lifecycle: let storage reap abandoned multipart uploads."""


@lifecycle_cli.command("setup")
@click.option("--dry-run", is_flag=True, help="Print the change without writing it.")
def lifecycle_setup(dry_run: bool) -> None:
    """Merge an AbortIncompleteMultipartUpload rule for OBITOX_KEY_PREFIX (days from
    OBITOX_UPLOAD_TTL, rounded up) into the bucket's lifecycle; other rules are kept."""
    try:
        result = get_state().service.setup_lifecycle(dry_run=dry_run)
    except ObitoXError as error:
        raise _operator_error(error) from None
    click.echo(
        f"Bucket {result.bucket!r}: rule {LIFECYCLE_RULE_ID} aborts incomplete multipart "
        f"uploads under {result.prefix!r} after {result.days} day(s)"
    )
    if not result.changed:
        click.echo("Nothing to change: the bucket already has this rule.")
        return
    click.echo(result.diff, nl=False)
    click.echo("Dry run: nothing was written." if dry_run else "Applied.")


@obitox_cli.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def doctor_command(as_json: bool) -> None:
    """Check the deployment end to end; exit 1 if any check fails."""
    results = run_checks(current_app._get_current_object())  # type: ignore[attr-defined]
    if as_json:
        click.echo(json.dumps([result.to_dict() for result in results], indent=2))
    else:
        click.echo(render_table(results))
    if any(result.failed for result in results):
        raise click.exceptions.Exit(1)


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
    help="Queue to work (repeatable; default: OBITOX_RQ_QUEUE and OBITOX_PROCESSING_QUEUE).",
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
    """Deliver webhooks and run processors: an RQ worker, with RQ's scheduler for
    retries, inside this app."""
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


# -- processing (domain/processing.py, processing_queue.py) -------------------------------


@obitox_cli.group("processing")
def processing_cli() -> None:
    """Processors that gave up on an upload: list them, queue them again."""


def _failed_processing() -> list[tuple[Any, str]]:
    ext = get_state()
    try:
        runs = ext.processing.failed_runs()
    except redis.exceptions.ConnectionError as error:
        raise _redis_down(error) from None
    try:
        return ext.service.failed_processing([run.upload_id for run in runs])
    except ServiceUnavailable as error:
        raise click.ClickException(error.detail) from None


@processing_cli.command("failed")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def processing_failed(as_json: bool) -> None:
    """List failed processors (from RQ's failed registry of OBITOX_PROCESSING_QUEUE):
    upload, processor, attempts, last error."""
    failed = _failed_processing()
    rows = [
        {
            "uploadId": record.upload_id,
            "processor": name,
            "owner": record.owner,
            "key": record.key,
            **render_processing(record)[name],
        }
        for record, name in failed
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['uploadId']} {row['processor']}")
        click.echo(f"    {row['key']} (owner {row['owner']})")
        click.echo(
            f"    attempts: {row['attempts']}, failed {row['updatedAt']}: {row.get('error')}"
        )
    click.echo(f"{len(rows)} failed processors.")


@processing_cli.command("retry")
@click.argument("upload_id", required=False)
@click.argument("name", required=False)
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed processor.")
def processing_retry(upload_id: str | None, name: str | None, retry_all: bool) -> None:
    """Queue a new run of a failed processor (UPLOAD_ID NAME), or of every one (--all).
    An upload id may start with '-': put -- before it."""
    service = get_state().service
    targets: list[tuple[str, str]]
    if retry_all and upload_id is None:
        targets = [(record.upload_id, failed) for record, failed in _failed_processing()]
    elif not retry_all and upload_id is not None and name is not None:
        targets = [(upload_id, name)]
    else:
        raise click.UsageError("Give an upload id and a processor name, or --all.")
    retried = 0
    for target_id, target_name in targets:
        try:
            service.retry_processing(None, target_id, target_name)
        except ServiceUnavailable as error:
            raise click.ClickException(error.detail) from None
        except ObitoXError as error:
            if not retry_all:
                raise click.ClickException(error.message) from None
            click.echo(f"skipped {target_id} {target_name}: {error.message}", err=True)
            continue
        retried += 1
        click.echo(f"queued {target_id} {target_name}")
    click.echo(f"{retried} processors queued again.")
