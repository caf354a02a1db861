"""The exactly-once race of DESIGN §15: the client's ``complete`` and the store's
ObjectCreated event for the same upload, at the same moment, over real Redis state and
the moto server with the real bytes: one ``upload-completed``, both answered
"completed"."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import BUCKET, make_app
from flask import Flask

from flask_obitox import signals
from flask_obitox.state import RedisStateBackend

pytestmark = pytest.mark.redis

TOKEN = "storage-events-token-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
ROUNDS = 8


@pytest.fixture
def app(redis_url: str, moto_server: str, s3_server: Any) -> Iterator[Flask]:
    prefix = f"obitox-test-processing-{uuid.uuid4().hex[:12]}"
    state = RedisStateBackend.from_url(redis_url, prefix=prefix)
    app, _ = make_app(
        state,
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_ADDRESSING_STYLE="path",
        OBITOX_STORAGE_EVENTS_TOKEN=TOKEN,
        OBITOX_RQ_REDIS_URL=redis_url,
    )
    yield app
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def race(app: Flask, signed: dict[str, Any]) -> dict[str, Any]:
    """The client's complete and the storage event for ``signed``, released together."""
    barrier = threading.Barrier(2)
    answers: dict[str, Any] = {}

    def by_client() -> None:
        barrier.wait()
        answers["client"] = app.test_client().post(
            f"/obitox/uploads/{signed['uploadId']}/complete", json={}, headers={"X-User": "alice"}
        )

    def by_storage() -> None:
        record = {
            "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": BUCKET}, "object": {"key": signed["key"]}},
        }
        barrier.wait()
        answers["storage"] = app.test_client().post(
            "/obitox/storage-events",
            json={"Records": [record]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    threads = [threading.Thread(target=by_client), threading.Thread(target=by_storage)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


def test_client_complete_and_storage_event_make_one_completion(app: Flask, s3_server: Any) -> None:
    completed: list[str] = []
    lock = threading.Lock()

    def receive(sender: Any, upload: Any, **extra: Any) -> None:
        with lock:
            completed.append(upload.upload_id)

    signals.upload_completed.connect(receive, sender=app)
    try:
        ids = []
        for _ in range(ROUNDS):
            client = app.test_client()
            signed = client.post(
                "/obitox/uploads",
                json={"filename": "cat.png", "contentType": "image/png", "size": len(PNG)},
                headers={"X-User": "alice"},
            ).json
            s3_server.put_object(
                Bucket=BUCKET, Key=signed["key"], Body=PNG, ContentType="image/png"
            )
            answers = race(app, signed)
            assert answers["client"].status_code == 200, answers["client"].json
            assert answers["client"].json["status"] == "completed"
            assert answers["storage"].status_code == 200, answers["storage"].json
            # Whoever won, the event reports the upload completed (by it or just before).
            storage = answers["storage"].json
            assert storage["completed"] == [signed["uploadId"]] or storage["ignored"] == 1
            ids.append(signed["uploadId"])
        assert sorted(completed) == sorted(ids)  # exactly one upload-completed each
    finally:
        signals.upload_completed.disconnect(receive, sender=app)
