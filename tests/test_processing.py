"""Processing after upload (DESIGN §14), in one process: the app's routes, moto, the
real Redis for RQ and a real RQ worker run in this process until its queue is empty.
The worker subprocesses (timeouts, SIGKILL) are in tests/test_processing_worker.py."""

from __future__ import annotations

import hashlib
import logging
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import BUCKET, UserClient, make_app
from flask import Flask
from webhook_support import delete_rq_keys

from flask_obitox import ObitoX, signals
from flask_obitox.config import ConfigError
from flask_obitox.domain import stored_keys
from flask_obitox.processing_queue import process_job_id
from flask_obitox.state import MemoryStateBackend
from flask_obitox.webhooks.worker import make_worker

pytestmark = pytest.mark.redis

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
TEXT = b"hello, processing\n" * 10


@pytest.fixture
def queues(redis_url: str) -> Iterator[tuple[str, str]]:
    name = f"obitox-test-processing-{uuid.uuid4().hex[:10]}"
    yield f"{name}-hooks", f"{name}-work"
    client = redis.Redis.from_url(redis_url)
    delete_rq_keys(client, f"{name}-hooks")
    delete_rq_keys(client, f"{name}-work")


@pytest.fixture
def app_and_ext(s3: Any, redis_url: str, queues: tuple[str, str]) -> tuple[Flask, ObitoX]:
    app, obitox = make_app(
        MemoryStateBackend(),
        OBITOX_RQ_REDIS_URL=redis_url,
        OBITOX_RQ_QUEUE=queues[0],
        OBITOX_PROCESSING_QUEUE=queues[1],
        OBITOX_PROCESSING_RETRY_SCHEDULE=[0, 0],
    )
    return app, obitox


@pytest.fixture
def app(app_and_ext: tuple[Flask, ObitoX]) -> Flask:
    return app_and_ext[0]


@pytest.fixture
def obitox(app_and_ext: tuple[Flask, ObitoX]) -> ObitoX:
    return app_and_ext[1]


@pytest.fixture
def sent(app: Flask) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    log: list[tuple[str, dict[str, Any]]] = []
    wanted = [
        signals.upload_completed,
        signals.processing_completed,
        signals.processing_failed,
        signals.upload_ready,
    ]

    def receiver(name: str) -> Any:
        def receive(sender: Any, **kwargs: Any) -> None:
            log.append((name, kwargs))

        return receive

    receivers = [(signal_, receiver(signal_.name)) for signal_ in wanted]
    for signal_, receive in receivers:
        signal_.connect(receive, sender=app)
    yield log
    for signal_, receive in receivers:
        signal_.disconnect(receive, sender=app)


def upload(client: UserClient, s3: Any, body: bytes, content_type: str, name: str) -> str:
    signed = client.post(
        "/uploads", {"filename": name, "contentType": content_type, "size": len(body)}
    )
    assert signed.status_code == 201, signed.json
    s3.put_object(Bucket=BUCKET, Key=signed.json["key"], Body=body, ContentType=content_type)
    done = client.post(f"/uploads/{signed.json['uploadId']}/complete")
    assert done.status_code == 200, done.json
    upload_id: str = signed.json["uploadId"]
    return upload_id


def work(app: Flask) -> None:
    """A real RQ worker on the app's processing queue, in this process, until empty."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    settings = app.extensions["obitox"].settings
    try:
        make_worker(app, queues=[settings.processing_queue]).work(
            burst=True, logging_level="WARNING"
        )
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def register(obitox: ObitoX, calls: list[str]) -> None:
    @obitox.processor("sha256")
    def sha256(ctx: Any) -> dict[str, Any]:
        calls.append(f"sha256:{ctx.upload['uploadId']}")
        digest = hashlib.sha256()
        stream = ctx.open()
        for chunk in iter(lambda: stream.read(64), b""):
            digest.update(chunk)
        return {"sha256": digest.hexdigest()}

    @obitox.processor("copy", content_types=["image/*"], timeout=30)
    def copy(ctx: Any) -> dict[str, Any]:
        calls.append(f"copy:{ctx.upload['uploadId']}")
        key = ctx.save("copy.png", ctx.open().read(), "image/png")
        return {"copy": key}


def test_each_matching_processor_runs_once_and_the_upload_becomes_ready(
    app: Flask, obitox: ObitoX, client: UserClient, s3: Any, sent: list[Any]
) -> None:
    calls: list[str] = []
    register(obitox, calls)
    image = upload(client, s3, PNG, "image/png", "cat.png")
    text = upload(client, s3, TEXT, "text/plain", "notes.txt")

    view = client.get(f"/uploads/{image}").json
    assert view["ready"] is False
    assert {name: entry["status"] for name, entry in view["processing"].items()} == {
        "sha256": "queued",
        "copy": "queued",
    }
    assert set(client.get(f"/uploads/{text}").json["processing"]) == {"sha256"}
    # Completing again (idempotent) queues nothing more: one job per upload and processor.
    assert client.post(f"/uploads/{image}/complete").status_code == 200

    work(app)

    assert sorted(calls) == sorted([f"sha256:{image}", f"copy:{image}", f"sha256:{text}"])
    view = client.get(f"/uploads/{image}").json
    assert view["ready"] is True
    assert view["processing"]["sha256"]["status"] == "completed"
    assert view["processing"]["sha256"]["attempts"] == 1
    assert view["processing"]["sha256"]["result"] == {"sha256": hashlib.sha256(PNG).hexdigest()}
    copy_key = view["processing"]["copy"]["result"]["copy"]
    assert copy_key == f"uploads/{image}/derived/copy/copy.png"
    assert s3.get_object(Bucket=BUCKET, Key=copy_key)["Body"].read() == PNG
    record = app.extensions["obitox"].state.get(image)
    assert stored_keys(record) == [record.key, copy_key]
    ready = [kwargs["upload"].upload_id for name, kwargs in sent if name == "upload-ready"]
    assert sorted(ready) == sorted([image, text])  # once each
    done = [
        (kwargs["upload"].upload_id, kwargs["name"])
        for name, kwargs in sent
        if name == "processing-completed"
    ]
    assert sorted(done) == sorted([(image, "sha256"), (image, "copy"), (text, "sha256")])


def test_an_upload_no_processor_matches_is_ready_when_it_completes(
    obitox: ObitoX, client: UserClient, s3: Any, sent: list[Any]
) -> None:
    @obitox.processor("images-only", content_types=["image/*"])
    def images_only(ctx: Any) -> None:
        raise AssertionError("never called for text")

    text = upload(client, s3, TEXT, "text/plain", "notes.txt")
    view = client.get(f"/uploads/{text}").json
    assert view["processing"] == {}
    assert view["ready"] is True
    assert [name for name, _ in sent] == ["upload-completed", "upload-ready"]


def test_a_failing_processor_is_retried_then_fails_with_its_error_and_can_be_retried(
    app: Flask, obitox: ObitoX, client: UserClient, s3: Any, sent: list[Any], caplog: Any
) -> None:
    attempts: list[int] = []
    fixed = False

    @obitox.processor("fragile", retries=2)
    def fragile(ctx: Any) -> dict[str, Any]:
        attempts.append(ctx.attempt)
        if not fixed:
            raise RuntimeError("the thumbnailer is out of ink")
        return {"ok": True}

    image = upload(client, s3, PNG, "image/png", "cat.png")
    work(app)

    assert attempts == [1, 2, 3]
    entry = client.get(f"/uploads/{image}").json["processing"]["fragile"]
    assert entry["status"] == "failed"
    assert entry["attempts"] == 3
    assert entry["error"] == "RuntimeError: the thumbnailer is out of ink"
    finals = [kwargs["final"] for name, kwargs in sent if name == "processing-failed"]
    assert finals == [False, False, True]

    # Only the owner (or an admin) may retry; another owner's upload is 404.
    other = UserClient(app, "mallory")
    assert other.post(f"/uploads/{image}/processing/fragile/retry").status_code == 404
    assert client.post(f"/uploads/{image}/processing/nope/retry").json["error"] == (
        "PROCESSING_NOT_FOUND"
    )
    fixed = True
    retried = client.post(f"/uploads/{image}/processing/fragile/retry")
    assert retried.status_code == 202, retried.json
    assert retried.json["processing"]["fragile"]["status"] == "queued"
    again = client.post(f"/uploads/{image}/processing/fragile/retry")
    assert again.status_code == 409
    assert again.json["error"] == "PROCESSING_NOT_FAILED"
    queue = app.extensions["obitox"].processing.queue
    assert process_job_id(image, "fragile", 2) in queue.get_job_ids()

    work(app)
    view = client.get(f"/uploads/{image}").json
    assert view["processing"]["fragile"]["status"] == "completed"
    assert view["processing"]["fragile"]["attempts"] == 4
    assert "error" not in view["processing"]["fragile"]
    assert view["ready"] is True


def test_an_admin_may_retry_any_owners_processing(
    app: Flask, obitox: ObitoX, client: UserClient, s3: Any
) -> None:
    @obitox.processor("broken", retries=0)
    def broken(ctx: Any) -> None:
        raise ValueError("no")

    @obitox.admin_loader
    def is_admin() -> bool:
        from flask import request

        return request.headers.get("X-User") == "root"

    image = upload(client, s3, PNG, "image/png", "cat.png")
    work(app)
    assert client.get(f"/uploads/{image}").json["processing"]["broken"]["status"] == "failed"
    answer = UserClient(app, "root").post(f"/uploads/{image}/processing/broken/retry")
    assert answer.status_code == 202, answer.json


def test_a_processor_for_a_deleted_upload_does_nothing_and_says_so(
    app: Flask, obitox: ObitoX, client: UserClient, s3: Any, caplog: Any
) -> None:
    calls: list[str] = []
    register(obitox, calls)
    image = upload(client, s3, PNG, "image/png", "cat.png")
    state = app.extensions["obitox"].state
    state.update(image, {"completed"}, status="deleted")
    with caplog.at_level(logging.INFO, logger="flask_obitox.processing"):
        work(app)
    assert calls == []
    assert "the upload was deleted or expired; nothing to do" in caplog.text


def test_a_processor_result_that_is_not_json_fails_the_attempt(
    app: Flask, obitox: ObitoX, client: UserClient, s3: Any
) -> None:
    @obitox.processor("odd", retries=0)
    def odd(ctx: Any) -> Any:
        return {"when": object()}

    image = upload(client, s3, PNG, "image/png", "cat.png")
    work(app)
    entry = client.get(f"/uploads/{image}").json["processing"]["odd"]
    assert entry["status"] == "failed"
    assert entry["error"].startswith("TypeError")


def test_a_derived_object_of_a_deleted_upload_is_not_kept(
    app: Flask, obitox: ObitoX, client: UserClient, s3: Any
) -> None:
    state = app.extensions["obitox"].state

    @obitox.processor("late")
    def late(ctx: Any) -> None:
        state.update(ctx.record.upload_id, {"completed"}, status="deleted")
        ctx.save("late.txt", b"too late", "text/plain")

    image = upload(client, s3, PNG, "image/png", "cat.png")
    work(app)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"uploads/{image}/derived/")
    assert listed["KeyCount"] == 0
    assert state.get(image).processing["late"]["status"] == "running"  # as it was left


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name"}, "a name is 1 to 64"),
        ({"name": "ok", "content_types": "image/*"}, "content_types must be a list"),
        ({"name": "ok", "content_types": ["nope"]}, "content_types must be a list"),
        ({"name": "ok", "retries": -1}, "retries must be"),
        ({"name": "ok", "timeout": 0}, "timeout must be"),
    ],
)
def test_bad_processor_arguments_fail_where_they_are_registered(
    kwargs: dict[str, Any], message: str
) -> None:
    obitox = ObitoX()
    name = kwargs.pop("name")
    with pytest.raises(ConfigError, match=message):
        obitox.processor(name, **kwargs)(lambda ctx: None)


def test_a_processor_name_is_registered_once() -> None:
    obitox = ObitoX()
    obitox.processor("thumb")(lambda ctx: None)
    with pytest.raises(ConfigError, match="already registered"):
        obitox.processor("thumb")(lambda ctx: None)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"OBITOX_PROCESSING_QUEUE": ""}, "OBITOX_PROCESSING_QUEUE must be a non-empty string"),
        ({"OBITOX_PROCESSING_QUEUE": "obitox-webhooks"}, "must differ"),
        ({"OBITOX_PROCESSING_RETRY_SCHEDULE": [1, -1]}, "OBITOX_PROCESSING_RETRY_SCHEDULE"),
        ({"OBITOX_STORAGE_EVENTS_TOKEN": "short"}, "OBITOX_STORAGE_EVENTS_TOKEN must be"),
    ],
)
def test_bad_processing_config_fails_at_init_app(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_app(MemoryStateBackend(), **config)
