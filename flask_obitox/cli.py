"""``flask obitox ...``: the operator's commands, registered on the app by ``init_app``.

Each command is thin: it parses options, calls the module that owns the logic and
prints the outcome. The logic lives with its concern (``service.py``, ``webhooks/``,
``storage/``), so the admin routes and the commands share it.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import ServiceUnavailable
from .extension import EXTENSION_KEY, ObitoXState

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
