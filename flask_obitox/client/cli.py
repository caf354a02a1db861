"""``obitox upload FILE... --server URL``: the command-line uploader.

Small files go in one batch (one signing call, parallel PUTs); files from
``--multipart-threshold`` up go in parts, one file at a time, each with a resume file
so that running the same command again after a crash, a lost connection or Ctrl-C
continues from the parts storage already holds. A resume file whose upload can no
longer be continued (unknown to the server, expired, aborted) fails that file with the
reason; ``--restart`` starts it over instead.

Exit status: 0 when every file was uploaded, 1 when any failed (each failure is named
on stderr), 2 for a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TextIO

from tqdm import tqdm

from .api import DEFAULT_CONCURRENCY, ObitoXClient, Progress, RetryPolicy, UploadResult
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obitox", description="Upload files through an ObitoX server, straight to storage."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    upload = commands.add_parser(
        "upload",
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
        "--server",
        default=os.environ.get("OBITOX_SERVER"),
        help="URL of the ObitoX routes, e.g. https://example.com/obitox; a URL without a "
        "path gets /obitox (default: $OBITOX_SERVER)",
    )
    upload.add_argument(
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
    upload.add_argument(
        "--token",
        type=parse_token,
        default=os.environ.get("OBITOX_TOKEN") or None,
        metavar="TOKEN",
        help="send 'Authorization: Bearer TOKEN' to the server (not to storage); a "
        "--header 'Authorization: ...' wins (default: $OBITOX_TOKEN, which keeps it out "
        "of the process list)",
    )
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
        "--retries",
        type=_non_negative,
        default=DEFAULT_RETRIES,
        help=f"further tries of a failed part or PUT, with exponential backoff "
        f"(default {DEFAULT_RETRIES})",
    )
    upload.add_argument(
        "--network-type",
        default=None,
        help="told to the server, which sizes URL expiry by it (wifi, 4g, 3g...)",
    )
    upload.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )
    upload.set_defaults(run=run_upload)
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


def run_upload(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.server:
        print("obitox: --server is required (or set OBITOX_SERVER)", file=err)
        return EXIT_USAGE
    try:
        headers = _headers(args)
        client = ObitoXClient(
            args.server,
            auth_headers=headers,
            concurrency=args.concurrency,
            retry=RetryPolicy(attempts=args.retries + 1),
            network_type=args.network_type,
        )
    except (ValueError, argparse.ArgumentTypeError) as error:
        print(f"obitox: {error}", file=err)
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
    try:
        with client:
            if small:
                label = small[0].name if len(small) == 1 else f"{len(small)} files"
                bar = _Bar(label, args.progress, err)
                outcomes = client.upload_files(small, on_progress=bar)
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
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """The ``obitox`` console script."""
    args = build_parser().parse_args(argv)
    code: int = args.run(args, sys.stdout, sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
