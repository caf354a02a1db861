"""Processors run by real ``flask obitox worker`` subprocesses: real Redis (state and
RQ), the moto server for storage, real bytes. A processor that hangs past its timeout
or is killed with its worker (SIGKILL) is retried and never blocks other uploads."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import BUCKET
from flask import Flask
from processing_support import create_app
from webhook_support import WorkerProcess, delete_rq_keys, wait_for

pytestmark = pytest.mark.redis

TEXT = b"bytes that really went to storage\n" * 1000


@pytest.fixture
def config(
    redis_url: str, moto_server: str, s3_server: Any, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    name = f"obitox-test-processing-{uuid.uuid4().hex[:10]}"
    yield {
        "OBITOX_RQ_REDIS_URL": redis_url,
        "OBITOX_RQ_QUEUE": f"{name}-hooks",
        "OBITOX_PROCESSING_QUEUE": f"{name}-work",
        "OBITOX_PROCESSING_RETRY_SCHEDULE": [1],
        "OBITOX_ENDPOINT_URL": moto_server,
        "OBITOX_ADDRESSING_STYLE": "path",
        "PROCESSING_TEST_PREFIX": name,
        "PROCESSING_TEST_DIR": str(tmp_path),
    }
    client = redis.Redis.from_url(redis_url)
    delete_rq_keys(client, f"{name}-hooks")
    delete_rq_keys(client, f"{name}-work")
    keys = list(client.scan_iter(match=f"{name}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def app(config: dict[str, Any]) -> Flask:
    return create_app(config)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(config: dict[str, Any]) -> WorkerProcess:
        worker = WorkerProcess(
            config,
            tmp_path / f"worker-{len(started)}.log",
            app="processing_support:create_app",
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def upload(app: Flask, s3: Any, content_type: str, body: bytes = TEXT) -> str:
    client = app.test_client()
    headers = {"X-User": "alice"}
    signed = client.post(
        "/obitox/uploads",
        json={"filename": "file.bin", "contentType": content_type, "size": len(body)},
        headers=headers,
    )
    assert signed.status_code == 201, signed.json
    s3.put_object(Bucket=BUCKET, Key=signed.json["key"], Body=body, ContentType=content_type)
    done = client.post(
        f"/obitox/uploads/{signed.json['uploadId']}/complete", json={}, headers=headers
    )
    assert done.status_code == 200, done.json
    upload_id: str = signed.json["uploadId"]
    return upload_id


def view(app: Flask, upload_id: str) -> dict[str, Any]:
    answer = app.test_client().get(f"/obitox/uploads/{upload_id}", headers={"X-User": "alice"})
    result: dict[str, Any] = answer.json
    return result


def status_of(app: Flask, upload_id: str, name: str) -> str:
    return str(view(app, upload_id)["processing"][name]["status"])


def test_a_worker_runs_the_processor_with_the_real_bytes(
    app: Flask, config: dict[str, Any], s3_server: Any, workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(config)
    upload_id = upload(app, s3_server, "text/plain")
    wait_for(lambda: view(app, upload_id)["ready"], 60, "the upload to become ready", worker.log)
    entry = view(app, upload_id)["processing"]["sha256"]
    assert entry["result"] == {"sha256": hashlib.sha256(TEXT).hexdigest()}
    assert entry["attempts"] == 1


def test_a_processor_killed_with_its_worker_is_retried_and_blocks_nothing(
    app: Flask,
    config: dict[str, Any],
    s3_server: Any,
    tmp_path: Path,
    workers: Callable[..., WorkerProcess],
) -> None:
    first = workers(config)
    slow = upload(app, s3_server, "application/x-slow")
    marker = tmp_path / f"slow-{slow}"
    wait_for(marker.exists, 60, "the slow processor to start", first.log)
    # Another upload completes while the only worker is busy: it waits, never fails.
    other = upload(app, s3_server, "text/plain")
    assert status_of(app, other, "sha256") == "queued"
    first.kill()  # SIGKILL, mid-job
    assert status_of(app, slow, "slow") == "running"

    second = workers(config)
    wait_for(
        lambda: status_of(app, other, "sha256") == "completed",
        60,
        "the other upload's processor",
        second.log,
    )
    wait_for(
        lambda: status_of(app, slow, "slow") == "completed",
        90,
        "the killed processor's retry",
        second.log,
    )
    entry = view(app, slow)["processing"]["slow"]
    assert entry["attempts"] == 2
    assert entry["result"] == {"attempt": 2}
    assert view(app, slow)["ready"] is True


def test_a_processor_that_hangs_past_its_timeout_fails_after_its_retries(
    app: Flask, config: dict[str, Any], s3_server: Any, workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(config)
    hung = upload(app, s3_server, "application/x-hang")
    other = upload(app, s3_server, "text/plain")
    wait_for(
        lambda: status_of(app, hung, "hang") == "failed",
        90,
        "the hanging processor to fail",
        worker.log,
    )
    entry = view(app, hung)["processing"]["hang"]
    assert entry["attempts"] == 2
    assert "JobTimeoutException" in entry["error"]
    assert view(app, hung)["ready"] is False
    assert view(app, hung)["status"] == "completed"  # the upload itself is never lost
    wait_for(lambda: view(app, other)["ready"], 60, "the other upload", worker.log)


def test_a_processor_killed_on_its_last_attempt_fails_and_the_cli_retries_it(
    app: Flask,
    config: dict[str, Any],
    s3_server: Any,
    tmp_path: Path,
    workers: Callable[..., WorkerProcess],
) -> None:
    first = workers(config)
    doomed = upload(app, s3_server, "application/x-doomed")
    wait_for((tmp_path / f"doomed-{doomed}").exists, 60, "the processor to start", first.log)
    first.kill()
    second = workers(config)
    wait_for(
        lambda: status_of(app, doomed, "doomed") == "failed",
        90,
        "the killed run to be recorded as failed",
        second.log,
    )
    assert view(app, doomed)["processing"]["doomed"]["error"] == (
        "the worker running it stopped or was killed"
    )

    runner = app.test_cli_runner()
    listed = runner.invoke(args=["obitox", "processing", "failed", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [(row["uploadId"], row["processor"], row["attempts"]) for row in rows] == [
        (doomed, "doomed", 1)
    ]
    retried = runner.invoke(args=["obitox", "processing", "retry", "--", doomed, "doomed"])
    assert retried.exit_code == 0, retried.output
    assert f"queued {doomed} doomed" in retried.output
    wait_for(
        lambda: status_of(app, doomed, "doomed") == "completed",
        60,
        "the retried run",
        second.log,
    )
    assert view(app, doomed)["processing"]["doomed"]["result"] == {"attempt": 2}
    again = runner.invoke(args=["obitox", "processing", "retry", "--", doomed, "doomed"])
    assert again.exit_code == 1
    assert "only a failed processor" in again.output
