"""Instruction counts of a benchmark's workloads: a figure that does not move with load.

Wall-clock time on a shared machine moves with whatever else runs; the number of CPU
instructions a piece of work executes does not (it moves with the Python, library and
CPU versions, not with the neighbours). ``--instructions`` adds, beside a script's
timings, the instructions of one iteration of each workload, counted by valgrind's
callgrind in one run of the script under ``valgrind --tool=callgrind``: it sets up and
warms up every workload, then runs each K times between two calls of ``os.getppid()``
(a C function nothing else here calls), and callgrind, started with
``--dump-before=getppid``, writes the instructions of each stretch to a file of its own.
One iteration is a stretch divided by K: set-up, imports, start-up and
:data:`WARM_UP_CALLS` calls of each workload are in other stretches, and so is a full
garbage collection before each workload's stretch, which thus starts from the same
collector state whatever ran before it. So a workload's count does not depend on the
order of the rows. (The same figure as running the script with K and with 0 iterations
and dividing the difference by K, in one run instead of two per workload.)

callgrind runs Python some 50 times slower: K is small (``--instruction-iterations``,
default 5). Without valgrind (``apt-get install valgrind``; a machine tool, not a
project dependency) the counts are skipped with a line that says so.

A script opts in with::

    add_instruction_options(parser)
    args = parser.parse_args()
    if run_counted_workloads(args, {"batch": make_batch, "boto3": make_loop}):
        return  # this was the counted run
    ...
    counts = count_instructions(args, ["batch", "boto3"])

where each factory does the set-up (outside the count) and returns the workload.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

INSTALL_HINT = "apt-get install valgrind"
_WORKLOADS = "--counted-workloads"
_ITERATIONS = "--counted-iterations"
#: The C function whose calls separate the counted stretches (``os.getppid``).
_MARKER = "getppid"
#: Calls of each workload before any is counted. CPython (3.11+) specialises a
#: function's bytecode only after it ran several times: with one warm-up call, the
#: first workload counted paid the specialisation of what the others share (Flask's
#: request handling: 30k to 45k instructions a request more for whichever route came
#: first).
WARM_UP_CALLS = 10
#: ... or fewer (two at least) when they take longer than this under callgrind: a
#: workload that long loops over its own work (100 files, 100 URLs), which its first
#: call specialised, and ten calls of boto3's loop would add minutes to a run.
WARM_UP_SECONDS = 3.0


def add_instruction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count the CPU instructions of one iteration of each workload "
        f"(valgrind --tool=callgrind; {INSTALL_HINT})",
    )
    parser.add_argument(
        "--instruction-iterations",
        type=int,
        default=5,
        metavar="K",
        help="iterations counted under callgrind (default 5)",
    )
    # Set by count_instructions for the run under callgrind, never by hand.
    parser.add_argument(_WORKLOADS, dest="counted_workloads", help=argparse.SUPPRESS)
    parser.add_argument(_ITERATIONS, dest="counted_iterations", type=int, help=argparse.SUPPRESS)


def run_counted_workloads(
    args: argparse.Namespace, factories: Mapping[str, Callable[[], Callable[[], Any]]]
) -> bool:
    """In the run under callgrind: set up and warm up the named workloads, then run
    each K times between two markers, and answer ``True`` (the script then only exits).
    Otherwise ``False``."""
    if args.counted_workloads is None:
        return False
    workloads = [factories[name]() for name in args.counted_workloads.split(",")]
    for workload in workloads:
        deadline = time.monotonic() + WARM_UP_SECONDS
        for call in range(WARM_UP_CALLS):
            workload()
            if call and time.monotonic() > deadline:
                break  # a heavy workload: its own loop warmed it up
    for workload in workloads:
        # Each counted stretch starts from the same collector state (nothing left to
        # collect, its counts at zero): a collection the workload's own garbage
        # triggers is counted, never one of what set-up or an earlier workload left.
        # The collection itself runs in a stretch of its own, between two markers.
        gc.collect()
        os.getppid()  # the marker: callgrind writes what ran since the last one
        for _ in range(args.counted_iterations):
            workload()
        os.getppid()
    return True


def valgrind() -> str | None:
    return shutil.which("valgrind")


def skipped_line() -> str:
    return f"instruction counts skipped: valgrind is missing ({INSTALL_HINT})"


def count_instructions(args: argparse.Namespace, names: Sequence[str]) -> dict[str, float] | None:
    """Instructions of one iteration of each workload in ``names`` (``None`` without
    valgrind), from one run of this script under callgrind."""
    binary = valgrind()
    if binary is None:
        return None
    k = args.instruction_iterations
    # The script and its own options, less --instructions: the counted run re-parses
    # them, so it sets up exactly what the timed run did.
    argv = [arg for arg in sys.argv if arg != "--instructions"]
    argv += [_WORKLOADS, ",".join(names), _ITERATIONS, str(k)]
    stretches = _callgrind_stretches(binary, argv)
    # Stretch 0 is start-up and set-up; then each workload's, each followed by the
    # collection before the next (the last by the exit).
    if len(stretches) != 2 * len(names) + 1:
        raise SystemExit(
            f"callgrind wrote {len(stretches)} stretches for {len(names)} workloads: "
            f"something else called {_MARKER}(), so the counts cannot be told apart"
        )
    return {name: stretches[2 * i + 1] / k for i, name in enumerate(names)}


def _callgrind_stretches(binary: str, argv: list[str]) -> list[int]:
    """The instructions of ``python argv`` under callgrind, cut at each marker."""
    with tempfile.TemporaryDirectory(prefix="obitox-callgrind-") as work:
        out = Path(work) / "callgrind.out"
        # A fixed hash seed: dict and set layouts, and so the instructions, repeat.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        command = [binary, "--tool=callgrind", f"--dump-before={_MARKER}"]
        command += [f"--callgrind-out-file={out}", sys.executable, *argv]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(
                f"the counted run {' '.join(argv)} failed under callgrind "
                f"(exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        parts: dict[int, int] = {}
        for dump in Path(work).glob("callgrind.out*"):
            number = summary = None
            for line in dump.read_text().splitlines():
                if line.startswith("part:"):
                    number = int(line.split()[1])
                elif line.startswith("summary:"):
                    summary = int(line.split()[1])
            if number is None or summary is None:
                raise SystemExit(f"callgrind wrote {dump.name} without a part or a summary")
            parts[number] = summary
    return [parts[number] for number in sorted(parts)]


def millions(count: float) -> str:
    return f"{count / 1e6:.2f}M"
