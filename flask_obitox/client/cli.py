"""``obitox``: the command line of the Python client.

``obitox upload FILE...`` uploads; ``obitox ls`` lists the caller's uploads, ``obitox rm
ID...`` deletes, ``obitox get ID`` downloads and ``obitox events`` prints live events.
Every command takes ``--server`` and the auth options (``--token``, ``--header``).

Small files go in one batch (one signing call, parallel PUTs); files from
``--multipart-threshold`` up go in parts, one file at a time, each with a resume file
so that running the same command again after a crash, a lost connection or Ctrl-C
continues from the parts storage already holds. A resume file whose upload can no
longer be continued (unknown to the server, expired, aborted) fails that file with the
reason; ``--restart`` starts it over instead.

Exit status: 0 when every file was uploaded (every upload deleted, the download
written), 1 when any failed (each failure is named on stderr), 2 for a usage error, 130
when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

from tqdm import tqdm

from .api import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CONCURRENCY,
    ObitoXClient,
    Progress,
    RetryPolicy,
    UploadResult,
)
from .errors import ObitoXClientError, StaleResumeFile
from .files import FileIdentity, resolve
from .resume import resume_path_for

MiB = 1024 * 1024
#: The server's default ``OBITOX_MULTIPART_THRESHOLD``: below it one PUT is simplest.
DEFAULT_MULTIPART_THRESHOLD = 100 * MiB
DEFAULT_RETRIES = 4

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """Bytes from ``"8388608"``, ``"8M"``, ``"8MiB"`` (binary) or ``"8MB"`` (decimal)."""
    match = _SIZE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 8MiB, 5M, 10000000)")
    number, unit = int(match.group(1)), (match.group(2) or "").lower()
    if unit in ("", "b"):
        return number
    base = 1000 if unit.endswith("b") and not unit.endswith("ib") else 1024
    return int(number * base ** _POWERS[unit[0]])


def parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()):
        raise argparse.ArgumentTypeError(f"not a header: {text!r} (expected 'Name: value')")
    return name.strip(), value.strip()


def parse_token(text: str) -> str:
    token = text.strip()
    if not token or any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise argparse.ArgumentTypeError(
            "a token is one word of printable ASCII, with no spaces: copy it whole"
        )
    return token


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _connection_options() -> argparse.ArgumentParser:
    """--server and the auth options, shared by every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        default=os.environ.get("OBITOX_SERVER"),
        help="URL of the ObitoX routes, e.g. https://example.com/obitox; a URL without a "
        "path gets /obitox (default: $OBITOX_SERVER)",
    )
    common.add_argument(
        "--header",
        "-H",
        action="append",
        type=parse_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="header for every call to the server (not to storage), e.g. "
        "'Authorization: Bearer ...'; repeatable. $OBITOX_HEADERS may hold more, one per "
        "line, which keeps secrets out of the process list",
    )
    common.add_argument(
        "--token",
        type=parse_token,
        default=os.environ.get("OBITOX_TOKEN") or None,
        metavar="TOKEN",
        help="send 'Authorization: Bearer TOKEN' to the server (not to storage); a "
        "--header 'Authorization: ...' wins (default: $OBITOX_TOKEN, which keeps it out "
        "of the process list)",
    )
    common.add_argument(
        "--retries",
        type=_non_negative,
        default=DEFAULT_RETRIES,
        help=f"further tries of a failed call, part or PUT, with exponential backoff "
        f"(default {DEFAULT_RETRIES})",
    )
    return common


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obitox", description="Upload files through an ObitoX server, straight to storage."
    )
    common = _connection_options()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    upload = commands.add_parser(
        "upload",
        parents=[common],
        help="upload files (re-run the same command to resume an interrupted upload)",
        description="Small files go in one batch (one signing call, parallel PUTs); files "
        "from --multipart-threshold up go in parts, with a resume file: running the same "
        "command again after a crash, a lost connection or Ctrl-C sends only the parts "
        "storage does not hold yet. A resume file whose upload can no longer be continued "
        "fails its file, unless --restart. Exit status: 0 all uploaded, 1 any failed, 2 "
        "usage error, 130 interrupted.",
    )
    upload.add_argument("files", nargs="+", metavar="FILE")
    upload.add_argument(
        "--concurrency",
        "-c",
        type=_positive,
        default=DEFAULT_CONCURRENCY,
        help=f"parts or files sent at once (default {DEFAULT_CONCURRENCY})",
    )
    upload.add_argument(
        "--part-size",
        type=parse_size,
        default=None,
        metavar="SIZE",
        help="bytes per part of a multipart upload, at least 5MiB (default: the server's "
        "OBITOX_PART_SIZE); ignored when resuming, whose parts are already sized",
    )
    upload.add_argument(
        "--multipart-threshold",
        type=parse_size,
        default=DEFAULT_MULTIPART_THRESHOLD,
        metavar="SIZE",
        help="files of this size and larger go in resumable parts (default 100MiB)",
    )
    upload.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep resume files here instead of beside each file (FILE.obitox-resume)",
    )
    upload.add_argument(
        "--restart",
        action="store_true",
        help="when a resume file's upload can no longer be continued (unknown to the "
        "server: other credentials or an expired record; expired; aborted), upload the "
        "file from the start instead of failing",
    )
    upload.add_argument(
        "--network-type",
        default=None,
        help="told to the server, which sizes URL expiry by it (wifi, 4g, 3g...)",
    )
    upload.add_argument(
        "--group",
        metavar="NAME",
        default=None,
        help="make the files one group named NAME, sealed once every file is signed; "
        "its id is printed (GET /groups/ID, obitox ls --group ID)",
    )
    _progress_option(upload)
    upload.set_defaults(run=run_upload)

    ls = commands.add_parser(
        "ls",
        parents=[common],
        help="list your uploads, newest first",
        description="List your uploads, newest first, as a table (or JSON with --json). "
        "Exit status: 0 listed, 1 the server refused, 2 usage error.",
    )
    ls.add_argument("--status", help="only uploads in this status (completed, pending...)")
    ls.add_argument("--kind", choices=("single", "multipart"), help="only this kind")
    ls.add_argument("--group", metavar="GROUP_ID", help="only the members of this group")
    ls.add_argument(
        "--limit", type=_positive, default=None, help="at most this many (default: all)"
    )
    ls.add_argument(
        "--json", action="store_true", help="print a JSON array of upload views, for scripts"
    )
    ls.set_defaults(run=run_ls)

    rm = commands.add_parser(
        "rm",
        parents=[common],
        help="delete uploads (their stored objects too)",
        description="Delete uploads: an open one is aborted in storage, a completed one's "
        "object deleted. Exit status: 0 all deleted, 1 any failed, 2 usage error.",
    )
    rm.add_argument("ids", nargs="+", metavar="ID")
    rm.set_defaults(run=run_rm)

    get = commands.add_parser(
        "get",
        parents=[common],
        help="download a completed upload",
        description="Download a completed upload's object. The bytes go to a temporary "
        "file renamed into place at the end: an interrupted download leaves nothing "
        "behind. Exit status: 0 written, 1 failed, 2 usage error, 130 interrupted.",
    )
    get.add_argument("id", metavar="ID")
    get.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        metavar="PATH",
        help="file to write, or a directory to write the upload's filename into "
        "(default: the upload's filename in the current directory)",
    )
    _progress_option(get)
    get.set_defaults(run=run_get)

    events = commands.add_parser(
        "events",
        parents=[common],
        help="print your live events as they happen (Ctrl-C stops)",
        description="Print your events (GET /events) as they happen, one line each, or "
        "one JSON object a line with --json. Reconnects on its own after a dropped "
        "connection, missing nothing the server still holds. Exit status: 130 when "
        "stopped with Ctrl-C, 1 when the server refused, 2 usage error.",
    )
    events.add_argument("--group", metavar="GROUP_ID", help="only this group's events")
    events.add_argument("--upload", metavar="UPLOAD_ID", help="only this upload's events")
    events.add_argument(
        "--last-event-id", metavar="ID", help="begin after this event (an id printed before)"
    )
    events.add_argument("--json", action="store_true", help="one JSON object a line")
    events.set_defaults(run=run_events)
    return parser


def _headers(args: argparse.Namespace) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in os.environ.get("OBITOX_HEADERS", "").splitlines():
        if line.strip():
            name, value = parse_header(line)
            headers[name] = value
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    headers.update(dict(args.header))
    return headers


@dataclass
class _Bar:
    """A tqdm bar created on the first report, so that bytes a resumed upload already
    holds count as its start and not as speed."""

    description: str
    enabled: bool | None
    stream: TextIO
    bar: tqdm[NoReturn] | None = field(default=None)

    def __call__(self, progress: Progress) -> None:
        if self.bar is None:
            self.bar = bar = tqdm(
                total=progress.total_bytes,
                initial=progress.bytes_sent,
                desc=self.description,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=None if self.enabled is None else not self.enabled,
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
            )
        else:
            bar = self.bar
            bar.update(progress.bytes_sent - bar.n)
        if progress.total_parts > 1:
            bar.set_postfix_str(f"{progress.parts_done}/{progress.total_parts}", refresh=False)

    def close(self) -> None:
        """End the bar; a later report begins a new one."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _report_ok(result: UploadResult, out: TextIO) -> None:
    resumed = ", resumed" if result.resumed else ""
    print(
        f"uploaded {result.path} -> {result.bucket}/{result.key} "
        f"({_size(result.size)}, upload {result.upload_id}{resumed})",
        file=out,
        flush=True,
    )


def _report_failure(path: Path, error: ObitoXClientError, err: TextIO) -> None:
    print(f"obitox: failed {path}: {error.code}: {error.message}", file=err, flush=True)


def _announce_restart(bar: _Bar, err: TextIO) -> Callable[[StaleResumeFile], None]:
    def announce(stale: StaleResumeFile) -> None:
        bar.close()  # the new upload's bar starts from zero
        print(f"obitox: {stale.message}; starting over", file=err, flush=True)

    return announce


def _client(args: argparse.Namespace, err: TextIO, **options: Any) -> ObitoXClient | None:
    """The client the options describe, or ``None`` after saying what is wrong."""
    if not args.server:
        print("obitox: --server is required (or set OBITOX_SERVER)", file=err)
        return None
    try:
        return ObitoXClient(
            args.server,
            auth_headers=_headers(args),
            retry=RetryPolicy(attempts=args.retries + 1),
            **options,
        )
    except (ValueError, argparse.ArgumentTypeError) as error:
        print(f"obitox: {error}", file=err)
        return None


def run_upload(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client = _client(args, err, concurrency=args.concurrency, network_type=args.network_type)
    if client is None:
        return EXIT_USAGE

    files = list(dict.fromkeys(resolve(name) for name in args.files))
    failed = 0
    small: list[Path] = []
    large: list[Path] = []
    for path in files:
        try:
            identity = FileIdentity.of(path)
        except ObitoXClientError as error:
            _report_failure(path, error, err)
            failed += 1
            continue
        (large if identity.size >= args.multipart_threshold else small).append(path)

    bar: _Bar | None = None
    current: Path | None = None
    # One batch holds the group whole: its "group" field creates and seals it. More
    # than a batch, or files sent in parts, join a group created first, sealed last.
    shorthand = args.group is not None and not large and len(small) <= DEFAULT_BATCH_SIZE
    group_id: str | None = None
    unsealed = False
    try:
        with client:
            if args.group is not None and not shorthand and (small or large):
                try:
                    group_id = str(client.create_group(args.group)["groupId"])
                except (ObitoXClientError, KeyError) as error:
                    print(f"obitox: cannot create group {args.group!r}: {error}", file=err)
                    return EXIT_FAILED
            if small:
                label = small[0].name if len(small) == 1 else f"{len(small)} files"
                bar = _Bar(label, args.progress, err)
                outcomes = client.upload_files(
                    small,
                    on_progress=bar,
                    group=args.group if shorthand else None,
                    group_id=group_id,
                )
                if shorthand:
                    group_id = outcomes.group_id
                bar.close()
                for outcome in outcomes:
                    if outcome.result is not None:
                        _report_ok(outcome.result, out)
                    else:
                        assert outcome.error is not None
                        _report_failure(outcome.path, outcome.error, err)
                        failed += 1
            for path in large:
                current = path
                state = resume_path_for(path, args.state_dir)
                bar = _Bar(path.name, args.progress, err)
                try:
                    result = client.resumable_upload(
                        path,
                        part_size=args.part_size,
                        concurrency=args.concurrency,
                        on_progress=bar,
                        resume_file=state,
                        restart=args.restart,
                        on_restart=_announce_restart(bar, err),
                        group_id=group_id,
                    )
                except StaleResumeFile as stale:
                    bar.close()
                    print(f"obitox: {stale.message}", file=err)
                    print(
                        f"obitox: re-run with --restart to upload {path.name} from the start",
                        file=err,
                    )
                    failed += 1
                except ObitoXClientError as error:
                    bar.close()
                    _report_failure(path, error, err)
                    if state.exists():
                        print(
                            f"obitox: run the same command again to continue {path.name} "
                            f"from the parts already stored (resume file {state})",
                            file=err,
                        )
                    failed += 1
                else:
                    bar.close()
                    _report_ok(result, out)
            current = None
            if group_id is not None:
                if not shorthand:
                    try:
                        client.seal_group(group_id)
                    except ObitoXClientError as error:
                        print(f"obitox: cannot seal group {group_id}: {error}", file=err)
                        unsealed = True
                print(f"group {group_id} ({_printable(args.group)})", file=out, flush=True)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        where = f" during {current}" if current is not None else ""
        print(
            f"\nobitox: interrupted{where}; run the same command again to continue "
            "from the parts already stored",
            file=err,
        )
        return EXIT_INTERRUPTED
    if failed and len(files) > 1:
        print(f"obitox: {len(files) - failed} of {len(files)} files uploaded", file=err)
    return EXIT_FAILED if failed or unsealed else EXIT_OK


def _printable(text: object) -> str:
    """``text`` safe to print to a terminal: a name chosen by whoever uploaded the file
    must not move the cursor or recolour the screen."""
    return "".join(c if c.isprintable() else "?" for c in str(text))


def _percentage(view: Mapping[str, Any]) -> str:
    value = view.get("percentage")
    if isinstance(value, int | float):
        return f"{value:.0f}%"
    return "100%" if view.get("status") == "completed" else "-"


_COLUMNS = ("UPLOAD ID", "STATUS", "KIND", "SIZE", "DONE", "CREATED", "FILENAME")


def _table(views: Iterable[Mapping[str, Any]], out: TextIO) -> None:
    rows = [_COLUMNS]
    for view in views:
        size = view.get("size")
        rows.append(
            (
                _printable(view.get("uploadId", "")),
                _printable(view.get("status", "")),
                _printable(view.get("kind", "")),
                _size(size) if isinstance(size, int) else "-",
                _percentage(view),
                _printable(view.get("createdAt", "")),
                _printable(view.get("filename", "")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]), file=out)


def run_ls(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client = _client(args, err)
    if client is None:
        return EXIT_USAGE
    try:
        with client:
            views = list(
                client.list_uploads(
                    status=args.status, kind=args.kind, group_id=args.group, limit=args.limit
                )
            )
    except ObitoXClientError as error:
        print(f"obitox: cannot list uploads: {error}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(views), file=out)
    else:
        _table(views, out)
    return EXIT_OK


def run_rm(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client = _client(args, err)
    if client is None:
        return EXIT_USAGE
    failed = 0
    try:
        with client:
            for upload_id in dict.fromkeys(args.ids):
                try:
                    view = client.delete(upload_id)
                except ObitoXClientError as error:
                    print(f"obitox: failed {upload_id}: {error}", file=err, flush=True)
                    failed += 1
                    continue
                name = _printable(view.get("filename") or "")
                print(f"deleted {upload_id} {name}".rstrip(), file=out, flush=True)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK


def run_get(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client = _client(args, err)
    if client is None:
        return EXIT_USAGE
    bar = _Bar(args.id, args.progress, err)
    try:
        with client:
            path = client.download(args.id, args.output, on_progress=bar)
    except ObitoXClientError as error:
        bar.close()
        print(f"obitox: failed {args.id}: {error}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        bar.close()
        print(f"\nobitox: interrupted; nothing was written for {args.id}", file=err)
        return EXIT_INTERRUPTED
    bar.close()
    print(f"downloaded {args.id} -> {path} ({_size(path.stat().st_size)})", file=out)
    return EXIT_OK


def _describe(event: Mapping[str, Any]) -> str:
    data = event.get("data") or {}
    parts = [str(event.get("id", "")), str(event.get("type", ""))]
    for name in ("groupId", "uploadId", "status", "filename", "name"):
        if data.get(name) is not None and not (name == "groupId" and "uploadId" in data):
            parts.append(f"{name}={data[name]}")
    if isinstance(data.get("percentage"), int | float):
        parts.append(f"{data['percentage']:.0f}%")
    return _printable(" ".join(parts))


def run_events(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client = _client(args, err)
    if client is None:
        return EXIT_USAGE
    try:
        with client, client.events(args.group, args.upload, args.last_event_id) as stream:
            for event in stream:
                line = json.dumps(event) if args.json else _describe(event)
                print(line, file=out, flush=True)
    except ObitoXClientError as error:
        print(f"obitox: the event stream stopped: {error}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK  # pragma: no cover - the stream ends only by Ctrl-C or a refusal


def main(argv: Sequence[str] | None = None) -> int:
    """The ``obitox`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.run(args, sys.stdout, sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
