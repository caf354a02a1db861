"""The group and deletion webhook events (``group.completed``, ``group.failed``,
``group.cancelled``, ``upload.deleted``), delivered by a real RQ worker to a receiver on
127.0.0.1 and verified with the ``standardwebhooks`` reference library."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import UserClient
from standardwebhooks.webhooks import Webhook
from webhook_support import SECRET, Receiver, create_app, webhook_config, work_burst

from flask_obitox.webhooks import webhook_queue

GROUP_EVENTS = ["group.completed", "group.failed", "group.cancelled", "upload.deleted"]


@pytest.fixture
def app(s3: Any, redis_url: str, queue_name: str, receiver: Receiver) -> Any:
    return create_app(
        webhook_config(
            redis_url,
            queue_name,
            receiver.url,
            OBITOX_WEBHOOK_INCLUDE_OWNER=True,
            OBITOX_WEBHOOKS=[{"url": receiver.url, "secret": SECRET, "events": GROUP_EVENTS}],
        )
    )


def delivered(app: Any, receiver: Receiver) -> list[dict[str, Any]]:
    work_burst(app)
    return [Webhook(SECRET).verify(got["body"], got["headers"]) for got in receiver.requests]


def test_group_and_deletion_events_carry_the_views(app: Any, s3: Any, receiver: Receiver) -> None:
    alice = UserClient(app, "alice")
    body = alice.post(
        "/uploads/batch",
        json={
            "files": [{"filename": "a.bin", "contentType": "application/octet-stream", "size": 3}],
            "group": {"name": "done"},
        },
    ).json
    [signed] = body["uploads"]
    s3.put_object(Bucket="obitox-test", Key=signed["key"], Body=b"abc")
    assert alice.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200
    alice.post(f"/uploads/{signed['uploadId']}/complete")  # a retry sends nothing again
    cancelled = alice.post("/groups", json={"name": "never mind"}).json["groupId"]
    cancel_view = alice.post(f"/groups/{cancelled}/cancel").json
    alice.post(f"/groups/{cancelled}/cancel")
    deleted = alice.delete(f"/uploads/{signed['uploadId']}").json
    alice.delete(f"/uploads/{signed['uploadId']}")
    assert len(webhook_queue(app).get_jobs()) == 3

    payloads = {p["type"]: p for p in delivered(app, receiver)}
    assert sorted(payloads) == ["group.cancelled", "group.completed", "upload.deleted"]
    completed = payloads["group.completed"]["data"]
    assert completed["groupId"] == body["groupId"]
    assert (completed["status"], completed["completedFiles"], completed["owner"]) == (
        "completed",
        1,
        "alice",
    )
    assert "uploads" not in completed
    assert payloads["group.cancelled"]["data"] == {**cancel_view, "owner": "alice"}
    assert payloads["upload.deleted"]["data"] == {**deleted, "owner": "alice"}
