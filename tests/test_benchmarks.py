"""Every benchmark still runs: each script, with the fewest rounds, ends with its table.

No figure is checked (machines are shared: timings belong in ``docs/performance.rst``,
never in a test). What is checked is that a change did not leave a script broken until
the next person measures, and that a broken script says so and cleans up: each runs in a
session of its own with a timeout that fits it; on a timeout or a failure its whole
process group is stopped (SIGTERM first, so that the script stops the children it
started in groups of their own, then SIGKILL), and no process of the run may outlive it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import botocore
import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
#: Every process of one run carries this variable (children inherit the environment).
RUN_VARIABLE = "OBITOX_BENCH_TEST_RUN"
#: Seconds a script has to stop its children after SIGTERM before its group gets SIGKILL.
STOP_GRACE = 20

pytestmark = pytest.mark.redis


def start(command: list[str], redis_url: str, run_id: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "OBITOX_TEST_REDIS_URL": redis_url, RUN_VARIABLE: run_id, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop_group(process: subprocess.Popen[str]) -> None:
    """SIGTERM to the script's process group, SIGKILL to what is left after STOP_GRACE."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline:
        process.poll()  # reaps the script: a zombie would keep its group alive
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def processes_of(run_id: str) -> list[str]:
    """``pid command`` of every live process of the run ``run_id``, in any process group
    (``pgrep -f`` cannot tell two runs of the same script apart: the environment can)."""
    marker = f"{RUN_VARIABLE}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found.append(f"{entry.name} {command.strip()}")
    return found


def finish(
    process: subprocess.Popen[str], run_id: str, command: list[str], timeout: float
) -> tuple[str, str]:
    """The script's output once it ends; fails after ``timeout`` seconds. Either way its
    group is stopped, and no process of the run may be left."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        out, err = process.communicate(timeout=30)
        pytest.fail(f"{' '.join(command)} did not end in {timeout} s:\n{out}{err}")
    finally:
        stop_group(process)
        left = processes_of(run_id)
        assert not left, "processes left behind by the benchmark:\n" + "\n".join(left)
    return out, err


def run(command: list[str], redis_url: str, timeout: float, **env: str) -> str:
    run_id = uuid.uuid4().hex
    process = start(command, redis_url, run_id, **env)
    out, err = finish(process, run_id, command, timeout)
    assert process.returncode == 0, out + err
    return out


#: script, arguments, what its output ends with, seconds it may take (about ten times
#: what it takes on the CI machine, at least a minute).
CASES = [
    ("bench_batch.py", ["--rounds", "2", "--naive-rounds", "1"], "goal: batch request", 60),
    ("bench_batch.py", ["--rounds", "2", "--naive-rounds", "1", "--memory"], "goal:", 60),
    ("bench_signer.py", ["--rounds", "2"], "presign_put_objects, whole batch", 60),
    ("bench_parts.py", ["--rounds", "2"], "the whole request (test client)", 60),
    ("bench_parts.py", ["--route", "params", "--rounds", "2"], "the whole request (WSGI)", 60),
    ("bench_profiles.py", ["--rounds", "2"], "profiled batch vs boto3 loop", 60),
    ("bench_profiles.py", ["--callgrind", "1", "--variant", "profiled"], "", 60),
    ("bench_components.py", ["--rounds", "2"], "write records to Redis", 60),
    ("bench_multipart.py", ["--rounds", "1"], "flask-obitox /parts requests (whole)", 180),
    ("bench_requests.py", ["--rounds", "2"], "/parts (10)", 120),
    (
        "bench_client.py",
        ["--size-mib", "12", "--part-mib", "5", "--runs", "1"],
        "ratio obitox / boto3",
        120,
    ),
    ("bench_publish.py", ["--rounds", "2"], "naive / batched", 60),
    (
        "bench_events.py",
        ["--streams", "20", "--owners", "5", "--runs", "1", "--rounds", "2"],
        "goal p50",
        120,
    ),
    (
        "bench_client.py",
        ["--size-mib", "12", "--part-mib", "5", "--runs", "1", "--reports"],
        "ratio obitox with reports / without",
        120,
    ),
    ("bench_sse.py", ["--events", "50", "--rounds", "1"], "ratio naive / sse", 60),
    (
        "bench_webhooks.py",
        ["--events", "20", "--latency-rounds", "3"],
        "SimpleWorker vs Worker",
        120,
    ),
    (
        "bench_processing.py",
        ["--jobs", "20", "--latency-rounds", "3"],
        "ratio p50 processor / bare",
        180,
    ),
]


@pytest.mark.parametrize(
    ("script", "args", "expected", "timeout"),
    [pytest.param(*case, id=" ".join([case[0], *case[1]])) for case in CASES],
)
def test_benchmark_runs(
    script: str, args: list[str], expected: str, timeout: float, redis_url: str
) -> None:
    out = run([sys.executable, str(BENCHMARKS / script), *args], redis_url, timeout)
    assert expected in out, out


def test_instruction_counts_skip_cleanly_without_valgrind(redis_url: str) -> None:
    """No valgrind on the PATH: the timings, then one line saying how to install it."""
    command = [sys.executable, str(BENCHMARKS / "bench_batch.py"), "--rounds", "2"]
    command += ["--naive-rounds", "1", "--memory", "--instructions"]
    out = run(command, redis_url, 60, PATH=str(Path(sys.executable).parent))
    assert "goal: batch request" in out, out
    assert "instruction counts skipped: valgrind is missing (apt-get install valgrind)" in out


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="apt-get install valgrind")
def test_instruction_counts_come_from_callgrind(redis_url: str) -> None:
    """One counted iteration of each workload: a figure per row, and the verdict."""
    command = [sys.executable, str(BENCHMARKS / "bench_batch.py"), "--rounds", "2"]
    command += ["--naive-rounds", "1", "--memory", "--instructions"]
    out = run([*command, "--instruction-iterations", "1"], redis_url, 600)
    counted = out[out.index("CPU instructions (callgrind") :]
    assert re.search(r"flask-obitox batch request \(whole\)\s+\d+\.\d\dM", counted), out
    assert re.search(r"boto3 generate_presigned_url, cached\s+\d+\.\d\dM", counted), out
    assert "goal by instructions: >= 10x fewer" in counted, out


def test_botocore_releases_bench_measures_the_installed_one(redis_url: str) -> None:
    """No release named: the installed botocore's loop, timed in a child Python (no
    install, no index)."""
    out = run(
        [sys.executable, str(BENCHMARKS / "bench_botocore.py"), "--rounds", "2"], redis_url, 60
    )
    assert re.search(rf"^{re.escape(botocore.__version__)}\s+\d+\.\dus\s+-$", out, re.M), out


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is missing: apt-get install wrk")
@pytest.mark.parametrize("server", ["sync", "granian"])
def test_bench_routes_runs(redis_url: str, server: str) -> None:
    """gunicorn (or granian) and wrk for one second per route, without Companion (it
    needs npm)."""
    if server == "granian" and shutil.which("granian") is None:
        pytest.skip("pip install granian")
    command = ["bash", str(BENCHMARKS / "bench_routes.sh"), "1", "1s", server]
    out = run(command, redis_url, 120, COMPANION="0")
    assert f"({'granian wsgi' if server == 'granian' else 'gunicorn sync'}" in out, out
    assert "obitox /s3/params" in out, out
    assert "answers were not 2xx" not in out, out
    assert "x the issue's 1090" in out, out


# -- a broken benchmark stops at once, and leaves nothing behind -----------------------


def test_bench_webhooks_stops_at_once_when_its_worker_cannot_start(redis_url: str) -> None:
    run_id = uuid.uuid4().hex
    command = [sys.executable, str(BENCHMARKS / "bench_webhooks.py"), "--events", "20"]
    # Flask's CLI reads --maintenance-interval, which the benchmark does not pass, from
    # this variable: every worker exits with code 2 as it starts.
    process = start(
        command, redis_url, run_id, FLASK_OBITOX_WORKER_MAINTENANCE_INTERVAL="not-a-number"
    )
    # 30 s: less than the benchmark's own wait for a delivery (SILENCE, 60 s), so only a
    # benchmark that noticed its dead worker passes.
    out, err = finish(process, run_id, command, timeout=30)
    assert process.returncode == 1, out + err
    assert "fork worker (pid " in err
    assert "exited with code 2; its last lines of output:" in err
    assert "Invalid value for '--maintenance-interval'" in err
    assert "SimpleWorker vs Worker" not in out


def test_a_benchmark_stopped_midway_stops_its_children(redis_url: str) -> None:
    run_id = uuid.uuid4().hex
    command = [sys.executable, str(BENCHMARKS / "bench_webhooks.py"), "--events", "5000"]
    process = start(command, redis_url, run_id)
    deadline = time.monotonic() + 60
    while not any("obitox worker" in p for p in processes_of(run_id)):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_group(process)
            out, err = process.communicate(timeout=30)
            pytest.fail(f"no worker of the benchmark ran within 60 s:\n{out}{err}")
        time.sleep(0.1)
    stop_group(process)  # what a timeout does
    out, err = finish(process, run_id, command, timeout=30)
    # The script turned SIGTERM into an exit that stopped its workers (in groups of their
    # own, which the SIGTERM to its group did not reach).
    assert process.returncode == 128 + signal.SIGTERM, out + err
