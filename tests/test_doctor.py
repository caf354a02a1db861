"""``flask obitox doctor`` against a real HTTP S3 (moto's server), a real Redis and real
RQ workers in subprocesses."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import BUCKET, make_app
from flask import Flask
from rq import Queue, Worker
from rq.scheduler import RQScheduler

from flask_obitox import MemoryStateBackend
from flask_obitox.storage.cors import setup_cors
from flask_obitox.storage.lifecycle import setup_lifecycle

APP_ORIGIN = "https://app.example.com"
ALL_CHECKS = (
    "config",
    "credentials",
    "bucket",
    "presign",
    "create-only",
    "profiles",
    "cors",
    "lifecycle",
    "state",
    "queue",
    "workers",
    "webhooks",
)
#: Seconds a worker subprocess may take to register and take the scheduler lock.
WORKER_START_LIMIT = 60

#: The host app a worker subprocess runs: its config comes from the environment.
WORKER_APP = """
import json, os
from flask import Flask
from flask_obitox import ObitoX

app = Flask("doctor_worker")
app.config.update(json.loads(os.environ["OBITOX_DOCTOR_TEST_CONFIG"]))
ObitoX(app)
"""


def doctor(app: Flask) -> tuple[int, dict[str, dict[str, Any]]]:
    """The exit code and each check's result, by check name."""
    result = app.test_cli_runner().invoke(args=["obitox", "doctor", "--json"])
    checks = {item["check"]: item for item in json.loads(result.output)}
    assert tuple(checks) == ALL_CHECKS
    return result.exit_code, checks


def statuses(checks: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: check["status"] for name, check in checks.items()}


def failures(checks: dict[str, dict[str, Any]]) -> list[str]:
    return [name for name, check in checks.items() if check["status"] == "fail"]


def server_app(moto_server: str, redis_url: str, **config: Any) -> Flask:
    settings: dict[str, Any] = {
        "OBITOX_ENDPOINT_URL": moto_server,
        "OBITOX_ADDRESSING_STYLE": "path",
        "OBITOX_STATE_BACKEND": redis_url,
        "OBITOX_CORS_ORIGINS": [APP_ORIGIN],
    }
    settings.update(config)
    app, _ = make_app(None, **settings)
    return app


def prepare_bucket(app: Flask) -> None:
    """What an operator runs once: ``cors setup`` and ``lifecycle setup``."""
    ext = app.extensions["obitox"]
    storage = ext.storages.get(ext.service.default_storage)
    setup_cors(storage, None, configured=ext.settings.cors_origins)
    setup_lifecycle(storage, ext.settings.key_prefix, ext.settings.upload_ttl)


@pytest.fixture
def webhooks(redis_url: str) -> Iterator[dict[str, Any]]:
    """Webhook config on a queue of this test's own; its RQ keys are removed afterwards."""
    queue = f"obitox-doctor-{uuid.uuid4().hex[:12]}"
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    yield {
        "OBITOX_WEBHOOKS": [{"url": "http://127.0.0.1:9/hooks", "secret": secret}],
        "OBITOX_WEBHOOK_ALLOW_PRIVATE": True,
        "OBITOX_RQ_QUEUE": queue,
        "OBITOX_PROCESSING_QUEUE": f"{queue}-processing",
        "OBITOX_RQ_REDIS_URL": redis_url,
    }
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"rq:*{queue}*"))
    # A stopped worker leaves its hash to expire; those of this queue go now.
    for key in client.scan_iter(match="rq:worker:*", _type="hash"):  # not RQ 3's executions sets
        if (client.hget(key, "queues") or b"").startswith(queue.encode()):
            keys.append(key)
            client.srem("rq:workers", key)
    if keys:
        client.delete(*keys)


def start_worker(
    tmp_path: Path, config: dict[str, Any], command: list[str], *, scheduler: bool
) -> subprocess.Popen[bytes]:
    """A worker subprocess; returns once it is registered on the queue (and, with
    ``scheduler``, once its scheduler holds the queue's lock)."""
    (tmp_path / "doctor_worker_app.py").write_text(WORKER_APP)
    env = {
        **os.environ,
        "OBITOX_DOCTOR_TEST_CONFIG": json.dumps(config),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as output:  # a file, not a pipe: a chatty worker never blocks
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    connection = redis.Redis.from_url(config["OBITOX_RQ_REDIS_URL"])
    queue = Queue(config["OBITOX_RQ_QUEUE"], connection=connection)
    deadline = time.monotonic() + WORKER_START_LIMIT
    while time.monotonic() < deadline and process.poll() is None:
        registered = Worker.count(queue=queue) > 0
        scheduling = connection.exists(RQScheduler.get_locking_key(queue.name))
        if registered and (scheduling or not scheduler):
            return process
        time.sleep(0.1)
    stop_worker(process)
    output_text = log.read_text(errors="replace")[-2000:]
    pytest.fail(f"the worker did not start within {WORKER_START_LIMIT} s: {output_text}")


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # warm shutdown: it unregisters itself
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def obitox_worker(tmp_path: Path, webhooks: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``flask obitox worker`` (with RQ's scheduler) running on the test's queue."""
    config = {
        "OBITOX_BUCKET": BUCKET,
        "OBITOX_STATE_BACKEND": webhooks["OBITOX_RQ_REDIS_URL"],
        **webhooks,
    }
    command = [sys.executable, "-m", "flask", "--app", "doctor_worker_app:app", "obitox", "worker"]
    process = start_worker(tmp_path, config, command, scheduler=True)
    yield webhooks
    stop_worker(process)


def test_a_healthy_deployment_passes(
    s3_server: Any, moto_server: str, redis_url: str, obitox_worker: dict[str, Any]
) -> None:
    app = server_app(moto_server, redis_url, OBITOX_PROFILES=PROFILES, **obitox_worker)
    prepare_bucket(app)
    code, checks = doctor(app)
    assert statuses(checks) == dict.fromkeys(ALL_CHECKS, "ok"), checks
    assert code == 0
    assert "answered PING" in checks["state"]["detail"]
    assert "answered 200" in checks["presign"]["detail"]
    assert "1 worker(s)" in checks["workers"]["detail"]
    assert "127.0.0.1 -> 127.0.0.1" in checks["webhooks"]["detail"]
    # The probes cleaned up after themselves.
    assert s3_server.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


#: Upload profiles whose storage settings the doctor's probe PUT must see stored.
PROFILES = {
    "documents": {
        "key_prefix": "documents/",
        "server_side_encryption": "aws:kms",
        "sse_kms_key_id": "alias/docs",
        "storage_class": "STANDARD_IA",
        "content_disposition": "attachment",
        "metadata": {"kind": "document"},
    },
    "images": {"cache_control": "public, max-age=60", "acl": "private"},
    "rules-only": {"max_file_size": 1024},
}


def test_each_profile_is_probed_with_its_headers(
    s3_server: Any, moto_server: str, redis_url: str
) -> None:
    app = server_app(moto_server, redis_url, OBITOX_PROFILES=PROFILES)
    _code, checks = doctor(app)
    profiles = checks["profiles"]
    assert profiles["status"] == "ok", profiles
    assert (
        "'documents': a PUT with Content-Disposition, x-amz-server-side-encryption"
        in profiles["detail"]
    )
    assert "'images': a PUT with x-amz-acl, Cache-Control" in profiles["detail"]
    assert "'rules-only': rules only" in profiles["detail"]
    assert s3_server.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_no_profiles_skips_the_profiles_check(
    s3_server: Any, moto_server: str, redis_url: str
) -> None:
    _code, checks = doctor(server_app(moto_server, redis_url))
    assert checks["profiles"]["status"] == "skip"
    assert "OBITOX_PROFILES is empty" in checks["profiles"]["detail"]


def test_the_table_marks_each_check(s3_server: Any, moto_server: str, redis_url: str) -> None:
    app = server_app(moto_server, redis_url)
    prepare_bucket(app)
    result = app.test_cli_runner().invoke(args=["obitox", "doctor"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("✓ configuration")
    assert any(line.startswith("✓ presigned upload") for line in lines)
    assert any(line.startswith("- RQ queue") for line in lines)
    assert "✗" not in result.output
    assert lines[-1] == "8 passed, 0 failed, 4 skipped"


def test_redis_down_fails_the_state_and_queue_checks(
    s3_server: Any, moto_server: str, redis_url: str, webhooks: dict[str, Any]
) -> None:
    # Port 1 on loopback: nothing listens there, so the connection is refused.
    down = "redis://127.0.0.1:1/0"
    app = server_app(
        moto_server,
        redis_url,
        **{**webhooks, "OBITOX_STATE_BACKEND": down, "OBITOX_RQ_REDIS_URL": None},
    )
    prepare_bucket(app)
    code, checks = doctor(app)
    assert code == 1
    assert failures(checks) == ["state", "queue"]
    assert down in checks["state"]["detail"]
    assert "OBITOX_STATE_BACKEND" in checks["state"]["fix"]
    assert down in checks["queue"]["detail"]
    assert checks["workers"]["status"] == "skip"


def test_a_missing_bucket_is_named_and_the_checks_needing_it_skip(
    s3_server: Any, moto_server: str, redis_url: str
) -> None:
    app = server_app(moto_server, redis_url, OBITOX_BUCKET="obitox-not-created")
    code, checks = doctor(app)
    assert code == 1
    bucket = checks["bucket"]
    assert bucket["status"] == "fail"
    assert "The bucket 'obitox-not-created' does not exist" in bucket["detail"]
    assert "create the bucket" in bucket["fix"]
    assert {checks[name]["status"] for name in ("presign", "cors", "lifecycle")} == {"skip"}
    assert checks["state"]["status"] == "ok"


def test_a_cors_rule_without_etag_fails_the_cors_check(
    s3_server: Any, moto_server: str, redis_url: str
) -> None:
    app = server_app(moto_server, redis_url)
    prepare_bucket(app)
    rules = s3_server.get_bucket_cors(Bucket=BUCKET)["CORSRules"]
    rules[0]["ExposeHeaders"] = ["Location"]
    s3_server.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": rules})
    code, checks = doctor(app)
    assert code == 1
    cors = checks["cors"]
    assert cors["status"] == "fail"
    assert "does not expose ETag" in cors["detail"]
    assert cors["fix"] == "flask obitox cors setup"
    assert failures(checks) == ["cors"]


def test_a_missing_lifecycle_rule_fails_with_its_command(
    s3_server: Any, moto_server: str, redis_url: str
) -> None:
    app = server_app(moto_server, redis_url)
    ext = app.extensions["obitox"]
    setup_cors(ext.storages.get(ext.service.default_storage), None, configured=[APP_ORIGIN])
    code, checks = doctor(app)
    assert code == 1
    assert checks["lifecycle"]["status"] == "fail"
    assert checks["lifecycle"]["fix"] == "flask obitox lifecycle setup"


def test_an_unreachable_endpoint_is_named(redis_url: str) -> None:
    app, _ = make_app(
        MemoryStateBackend(),
        OBITOX_ENDPOINT_URL="http://127.0.0.1:9",
        OBITOX_CORS_ORIGINS=[APP_ORIGIN],
    )
    code, checks = doctor(app)
    assert code == 1
    assert checks["bucket"]["status"] == "fail"
    assert "http://127.0.0.1:9" in checks["bucket"]["detail"]
    assert "OBITOX_ENDPOINT_URL" in checks["bucket"]["fix"]


def test_no_identity_loader_fails_the_config_check(
    s3_server: Any, moto_server: str, redis_url: str
) -> None:
    from flask_obitox import ObitoX

    app = Flask("no_identity")
    app.config.update(
        TESTING=True,
        OBITOX_BUCKET=BUCKET,
        OBITOX_REGION="us-east-1",
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_STATE_BACKEND="memory://",
    )
    ObitoX(app)
    code, checks = doctor(app)
    assert code == 1
    assert checks["config"]["status"] == "fail"
    assert "identity_loader" in checks["config"]["detail"]


def test_no_cors_origins_skips_the_cors_check(
    s3_server: Any, moto_server: str, redis_url: str
) -> None:
    app = server_app(moto_server, redis_url, OBITOX_CORS_ORIGINS=[])
    ext = app.extensions["obitox"]
    setup_lifecycle(
        ext.storages.get(ext.service.default_storage),
        ext.settings.key_prefix,
        ext.settings.upload_ttl,
    )
    code, checks = doctor(app)
    assert code == 0
    assert checks["cors"]["status"] == "skip"
    assert "OBITOX_CORS_ORIGINS" in checks["cors"]["fix"]


@pytest.mark.parametrize("key", ["OBITOX_MAX_FILE_SIZE", "OBITOX_BUCKET"])
def test_config_changed_after_start_is_checked_again(
    s3_server: Any, moto_server: str, redis_url: str, key: str
) -> None:
    app = server_app(moto_server, redis_url)
    app.config[key] = -1 if key == "OBITOX_MAX_FILE_SIZE" else ""
    code, checks = doctor(app)
    assert code == 1
    assert checks["config"]["status"] == "fail"
    assert key in checks["config"]["detail"]


def test_no_worker_fails_the_workers_check(
    s3_server: Any, moto_server: str, redis_url: str, webhooks: dict[str, Any]
) -> None:
    app = server_app(moto_server, redis_url, **webhooks)
    prepare_bucket(app)
    code, checks = doctor(app)
    assert code == 1
    assert failures(checks) == ["workers"]
    assert checks["queue"]["status"] == "ok"
    assert "no live RQ worker" in checks["workers"]["detail"]
    assert "flask obitox worker" in checks["workers"]["fix"]


def test_a_worker_without_the_scheduler_fails_the_workers_check(
    s3_server: Any, moto_server: str, redis_url: str, webhooks: dict[str, Any], tmp_path: Path
) -> None:
    # A plain `rq worker` takes jobs but never runs the retries RQ schedules.
    command = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        "--url",
        redis_url,
        webhooks["OBITOX_RQ_QUEUE"],
    ]
    process = start_worker(tmp_path, webhooks, command, scheduler=False)
    try:
        app = server_app(moto_server, redis_url, **webhooks)
        prepare_bucket(app)
        code, checks = doctor(app)
    finally:
        stop_worker(process)
    assert code == 1
    assert failures(checks) == ["workers"]
    assert "no RQ scheduler holds" in checks["workers"]["detail"]


def test_a_private_webhook_target_fails_the_webhooks_check(
    s3_server: Any, moto_server: str, redis_url: str, obitox_worker: dict[str, Any]
) -> None:
    app = server_app(
        moto_server, redis_url, **{**obitox_worker, "OBITOX_WEBHOOK_ALLOW_PRIVATE": False}
    )
    prepare_bucket(app)
    code, checks = doctor(app)
    assert code == 1
    assert failures(checks) == ["webhooks"]
    assert "127.0.0.1" in checks["webhooks"]["detail"]
    assert "OBITOX_WEBHOOK_ALLOW_PRIVATE" in checks["webhooks"]["fix"]


@pytest.fixture
def header_blind_s3(moto_server: str) -> Iterator[str]:
    """The same (in-process) moto S3 behind a server that drops ``If-None-Match``, as
    a store without conditional writes does; yields its endpoint URL."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    moto_app = DomainDispatcherApplication(create_backend_app)

    def blind(environ: dict[str, Any], start_response: Any) -> Any:
        environ.pop("HTTP_IF_NONE_MATCH", None)
        return moto_app(environ, start_response)

    server = make_server("127.0.0.1", 0, blind, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_create_only_passes_where_a_second_conditional_put_is_refused(
    s3_server: Any, moto_server: str, redis_url: str
) -> None:
    app = server_app(moto_server, redis_url)
    prepare_bucket(app)
    _, checks = doctor(app)
    assert checks["create-only"]["status"] == "ok", checks["create-only"]
    assert "412" in checks["create-only"]["detail"]
    assert s3_server.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_a_store_that_ignores_if_none_match_fails_create_only(
    s3_server: Any, header_blind_s3: str, redis_url: str
) -> None:
    app = server_app(header_blind_s3, redis_url)
    prepare_bucket(app)
    code, checks = doctor(app)
    assert code == 1
    assert failures(checks) == ["create-only"]
    assert "instead of 412" in checks["create-only"]["detail"]
    assert "OBITOX_CREATE_ONLY=False" in checks["create-only"]["fix"]
    # The same store with the guard off: nothing to check, nothing fails.
    app = server_app(header_blind_s3, redis_url, OBITOX_CREATE_ONLY=False)
    code, checks = doctor(app)
    assert code == 0
    assert checks["create-only"]["status"] == "skip"
    assert "OBITOX_CREATE_ONLY is off" in checks["create-only"]["detail"]
