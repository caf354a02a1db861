"""The batch goal's baseline across botocore releases: boto3's cached presign loop.

``bench_batch.py`` compares a 100-file batch with ``generate_presigned_url`` called 100
times on a cached boto3 client. What that loop costs is botocore's, and botocore
changes it: this script times the same loop (``bench_batch.boto3_loop``: 100 new keys
each round, as a server signs them) under each botocore release named, and with
``--instructions`` counts it in CPU instructions (:mod:`instructions`).

Each release other than the installed one is installed with the boto3 of the same
version (``pip install --no-deps --target``) into a directory of its own under
``--cache`` (pip needs the package index for that), and measured in a child Python
with that directory first on its path; everything else is this environment's.

Usage: ``python benchmarks/bench_botocore.py [VERSION ...] [--rounds N] [--instructions]``
(no version: the installed one only)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import botocore
from bench_batch import FILES, cached_loop
from instructions import (
    add_instruction_options,
    count_instructions,
    run_counted_workloads,
    skipped_line,
    valgrind,
)
from timing import median_seconds

#: Prefix of the child's one line of figures, which the parent reads.
RESULT = "release "


def measure(args: argparse.Namespace) -> None:
    """In the child: the loop under the botocore on its path, as one line."""
    if run_counted_workloads(args, {"boto3": cached_loop}):
        return
    seconds = median_seconds(cached_loop(), args.rounds)
    counts = count_instructions(args, ["boto3"]) if args.instructions else None
    count = f"{counts['boto3'] / FILES / 1e3:.0f}k" if counts else "-"
    print(f"{RESULT}{botocore.__version__} {seconds / FILES * 1e6:.1f} {count}")


def install(version: str, cache: Path) -> Path:
    target = cache / f"botocore-{version}"
    if not (target / "botocore").is_dir():
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        command += ["--target", str(target), f"boto3=={version}", f"botocore=={version}"]
        subprocess.run(command, check=True, capture_output=True)
    return target


def child(args: argparse.Namespace, path: Path | None) -> list[str]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    command = [sys.executable, __file__, "--child", "--rounds", str(args.rounds)]
    if args.instructions:
        command += ["--instructions", "--instruction-iterations", str(args.instruction_iterations)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return lines[0].removeprefix(RESULT).split()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("versions", nargs="*", help="botocore releases (default: the installed)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "obitox-botocore"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_instruction_options(parser)
    args = parser.parse_args()
    if args.child:
        measure(args)
        return
    print(f"boto3's cached presign loop ({FILES} new keys a round), per URL")
    if args.instructions and valgrind() is None:
        print(skipped_line())
    print(f"{'botocore':<12}{'median':>12}{'instructions':>14}")
    for version in args.versions or [botocore.__version__]:
        path = None if version == botocore.__version__ else install(version, args.cache)
        release, micros, count = child(args, path)
        print(f"{release:<12}{micros:>10}us{count:>14}")


if __name__ == "__main__":
    main()
