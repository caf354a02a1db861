"""Instruction counts of a benchmark's workloads: a figure that does not move with load.

Wall-clock time on a shared machine moves with whatever else runs; the number of CPU
instructions a piece of work executes does not (it moves with the Python, library and
CPU versions, not with the neighbours). ``--instructions`` adds, beside a script's
timings, the instructions of one iteration of each workload, counted by valgrind's
callgrind: the script runs itself twice under ``valgrind --tool=callgrind``, the same
set-up and warm-up each time, then the workload K times and 0 times; the difference
divided by K is what one iteration costs, start-up and set-up cancelled out.

callgrind runs Python some 50 times slower: K is small (``--instruction-iterations``,
default 5). Without valgrind (``apt-get install valgrind``; a machine tool, not a
project dependency) the counts are skipped with a line that says so.

A script opts in with::

    add_instruction_options(parser)
    args = parser.parse_args()
    if run_counted_workload(args, {"batch": make_batch, "boto3": make_loop}):
        return  # this was one of the counted runs
    ...
    counts = count_instructions(args, ["batch", "boto3"])

where each factory does the set-up (outside the count) and returns the workload.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

INSTALL_HINT = "apt-get install valgrind"
_WORKLOAD = "--counted-workload"
_ITERATIONS = "--counted-iterations"


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
    # Set by count_instructions for the runs under callgrind, never by hand.
    parser.add_argument(_WORKLOAD, dest="counted_workload", help=argparse.SUPPRESS)
    parser.add_argument(_ITERATIONS, dest="counted_iterations", type=int, help=argparse.SUPPRESS)


def run_counted_workload(
    args: argparse.Namespace, factories: Mapping[str, Callable[[], Callable[[], Any]]]
) -> bool:
    """In a run under callgrind: set up the named workload, warm it up once, run it the
    given number of times, and answer ``True`` (the script then only exits). Otherwise
    ``False``."""
    name = args.counted_workload
    if name is None:
        return False
    workload = factories[name]()
    workload()
    for _ in range(args.counted_iterations):
        workload()
    return True


def valgrind() -> str | None:
    return shutil.which("valgrind")


def skipped_line() -> str:
    return f"instruction counts skipped: valgrind is missing ({INSTALL_HINT})"


def count_instructions(
    args: argparse.Namespace,
    names: Sequence[str],
    *,
    iterations: Mapping[str, int] | None = None,
) -> dict[str, float] | None:
    """Instructions of one iteration of each workload in ``names`` (``None`` without
    valgrind). ``iterations`` overrides K for a workload (a slow one)."""
    binary = valgrind()
    if binary is None:
        return None
    # The script and its own options, less --instructions: each counted run re-parses
    # them, so it sets up exactly what the timed run did.
    argv = [arg for arg in sys.argv if arg != "--instructions"]
    counts: dict[str, float] = {}
    for name in names:
        k = (iterations or {}).get(name, args.instruction_iterations)
        with_k = _callgrind_total(binary, [*argv, _WORKLOAD, name, _ITERATIONS, str(k)])
        without = _callgrind_total(binary, [*argv, _WORKLOAD, name, _ITERATIONS, "0"])
        counts[name] = (with_k - without) / k
    return counts


def _callgrind_total(binary: str, argv: list[str]) -> int:
    """Every instruction of ``python argv`` under callgrind."""
    with tempfile.TemporaryDirectory(prefix="obitox-callgrind-") as work:
        out = Path(work) / "callgrind.out"
        # A fixed hash seed: dict and set layouts, and so the instructions, repeat.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(
            [binary, "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, *argv],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"the counted run {' '.join(argv)} failed under callgrind "
                f"(exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        for line in out.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"callgrind wrote no summary for {' '.join(argv)}")


def millions(count: float) -> str:
    return f"{count / 1e6:.2f}M"
