"""Every benchmark still runs: each script, with the fewest rounds, ends with its table.

No figure is checked (machines are shared: timings belong in ``docs/performance.rst``,
never in a test). What is checked is that a change did not leave a script broken until
the next person measures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"

pytestmark = pytest.mark.redis


def run(command: list[str], redis_url: str, **env: str) -> str:
    result = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "OBITOX_TEST_REDIS_URL": redis_url, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


CASES = [
    ("bench_batch.py", ["--rounds", "2", "--naive-rounds", "1"], "goal: batch request"),
    ("bench_batch.py", ["--rounds", "2", "--naive-rounds", "1", "--memory"], "goal:"),
    ("bench_signer.py", ["--rounds", "2"], "presign_put_objects, whole batch"),
    ("bench_components.py", ["--rounds", "2"], "write records to Redis"),
    ("bench_multipart.py", ["--rounds", "1"], "flask-obitox /parts requests (whole)"),
    (
        "bench_client.py",
        ["--size-mib", "12", "--part-mib", "5", "--runs", "1"],
        "ratio obitox / boto3",
    ),
    ("bench_webhooks.py", ["--events", "20", "--latency-rounds", "3"], "SimpleWorker vs Worker"),
]


@pytest.mark.parametrize(
    ("script", "args", "expected"),
    [pytest.param(*case, id=" ".join([case[0], *case[1]])) for case in CASES],
)
def test_benchmark_runs(script: str, args: list[str], expected: str, redis_url: str) -> None:
    out = run([sys.executable, str(BENCHMARKS / script), *args], redis_url)
    assert expected in out, out


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is missing: apt-get install wrk")
def test_bench_routes_runs(redis_url: str) -> None:
    """gunicorn and wrk for one second per route, without Companion (it needs npm)."""
    out = run(["bash", str(BENCHMARKS / "bench_routes.sh"), "1", "1s"], redis_url, COMPANION="0")
    assert "obitox /s3/params" in out, out
    assert "answers were not 2xx" not in out, out
    assert "x the issue's 1090" in out, out
