"""The app under granian, the WSGI server ``docs/production.rst`` measures lightest: real
uploads over real HTTP, end to end (moto S3, Redis state), through the very app
``benchmarks/bench_routes.sh`` serves (``benchmarks/routes_app.py``), so the figures in
``docs/performance.rst`` are of a server that does the whole job.

What a server could get wrong is checked here: request bodies (JSON, a chunked one), the
query string (Companion's ``metadata[...]``), status codes and JSON errors, headers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import BUCKET
from events_support import delete_prefix
from test_companion import post_form
from test_uploads import png_bytes

from flask_obitox.client import ObitoXClient

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(shutil.which("granian") is None, reason="pip install granian"),
]

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
ALICE = {"X-User": "alice"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def granian(moto_server: str, redis_url: str) -> Iterator[str]:
    """``routes_app`` under granian (two workers, as bench_routes runs it); yields the
    base URL of its routes."""
    port, prefix = free_port(), f"obitox-granian-{uuid.uuid4().hex[:8]}:"
    env = {
        **os.environ,
        "BENCH_S3": moto_server,
        "BENCH_REDIS": redis_url,
        "BENCH_PREFIX": prefix,
        "BENCH_BUCKET": BUCKET,
    }
    command = [shutil.which("granian") or "granian", "--interface", "wsgi", "--workers", "2"]
    command += ["--blocking-threads", "1", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--log-level", "warning", "--no-ws", "routes_app:app"]
    server = subprocess.Popen(
        command,
        cwd=BENCHMARKS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{base}/bench/noop", timeout=2)
                break
            except requests.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    pytest.fail(f"granian did not answer:\n{server.communicate()[0]}")
                time.sleep(0.2)
        yield f"{base}/obitox"
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        delete_prefix(redis_url, prefix)


@pytest.fixture
def alice(granian: str, s3_server: Any) -> Iterator[ObitoXClient]:
    with ObitoXClient(granian, auth_headers=ALICE) as client:
        yield client


def test_a_batch_and_a_multipart_upload_end_to_end(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path
) -> None:
    contents = [png_bytes(extra=1000 * i) for i in range(3)]
    paths = []
    for i, content in enumerate(contents):
        paths.append(tmp_path / f"photo-{i}.png")
        paths[-1].write_bytes(content)
    outcomes = alice.upload_files(paths)
    for outcome, content in zip(outcomes, contents, strict=True):
        assert outcome.ok, outcome.error
        assert outcome.result is not None
        stored = s3_server.get_object(Bucket=BUCKET, Key=outcome.result.key)["Body"].read()
        assert stored == content
    big = tmp_path / "movie.bin"
    big.write_bytes(b"OBITOX-TEST-DATA\n" + os.urandom(11 * 1024 * 1024))
    done = alice.resumable_upload(big, content_type="application/octet-stream")
    stored = s3_server.get_object(Bucket=BUCKET, Key=done.key)["Body"].read()
    assert hashlib.sha256(stored).digest() == hashlib.sha256(big.read_bytes()).digest()
    assert alice.get_upload(done.upload_id)["status"] == "completed"


def test_companion_post_upload_end_to_end(granian: str, s3_server: Any) -> None:
    answer = requests.get(
        f"{granian}/s3/params?filename=cat.png&type=image/png&metadata%5Balbum%5D=summer",
        headers=ALICE,
        timeout=10,
    ).json()
    assert answer["fields"]["x-amz-meta-album"] == "summer"
    data = png_bytes(extra=500)
    assert post_form(answer, data).status_code in (200, 204)
    key = answer["fields"]["key"]
    done = requests.post(
        f"{granian}/s3/complete", params={"key": key}, json={}, headers=ALICE, timeout=10
    )
    assert done.status_code == 200, done.text
    assert done.json()["size"] == len(data)
    assert s3_server.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data


def test_errors_are_json_with_their_status(granian: str) -> None:
    anonymous = requests.post(f"{granian}/uploads", json={}, timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "UNAUTHENTICATED"
    broken = requests.post(
        f"{granian}/uploads",
        data=b"{not json",
        headers={**ALICE, "Content-Type": "application/json"},
        timeout=10,
    )
    assert broken.status_code == 400
    assert broken.json()["error"] == "INVALID_JSON"
    # A chunked body (no Content-Length) larger than any request may be: 413, not read whole.
    chunks = (b"x" * 65536 for _ in range(64))
    oversize = requests.post(
        f"{granian}/uploads",
        data=chunks,
        headers={**ALICE, "Content-Type": "application/json"},
        timeout=10,
    )
    assert oversize.status_code == 413, oversize.text
    assert oversize.json()["error"] == "PAYLOAD_TOO_LARGE"
    missing = requests.get(f"{granian}/uploads/nothing-here", headers=ALICE, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"] == "UPLOAD_NOT_FOUND"
