"""``POST /storage-events`` (DESIGN §15): S3 event notifications complete uploads whose
client never called ``complete``, through the very completion of the complete route."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote_plus

import pytest
from conftest import BUCKET, UserClient, make_app
from flask import Flask

from flask_obitox import ObitoX, signals
from flask_obitox.state import MemoryStateBackend

TOKEN = "storage-events-token-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


@pytest.fixture
def obitox_app(s3: Any) -> tuple[Flask, ObitoX]:
    return make_app(
        MemoryStateBackend(),
        OBITOX_STORAGE_EVENTS_TOKEN=TOKEN,
        # Nothing here subscribes: no RQ Redis is needed.
        OBITOX_RQ_REDIS_URL="redis://127.0.0.1:1/0",
    )


@pytest.fixture
def completed(app: Flask) -> Any:
    log: list[str] = []

    def receive(sender: Any, upload: Any, **extra: Any) -> None:
        log.append(upload.upload_id)

    signals.upload_completed.connect(receive, sender=app)
    yield log
    signals.upload_completed.disconnect(receive, sender=app)


def notify(app: Flask, body: Any, *, token: str | None = TOKEN, raw: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return app.test_client().post(
        "/obitox/storage-events",
        data=raw if raw is not None else json.dumps(body),
        headers={**headers, "Content-Type": "application/json"},
    )


def s3_record(key: str, *, bucket: str = BUCKET, event: str = "s3:ObjectCreated:Put") -> Any:
    return {
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 1, "eTag": "x"}},
    }


def signed(client: UserClient, name: str = "cat.png", body: bytes = PNG) -> dict[str, Any]:
    answer = client.post(
        "/uploads", {"filename": name, "contentType": "image/png", "size": len(body)}
    )
    assert answer.status_code == 201, answer.json
    result: dict[str, Any] = answer.json
    return result


def test_an_object_created_event_completes_the_upload_once(
    app: Flask, client: UserClient, s3: Any, completed: list[str]
) -> None:
    upload = signed(client)
    s3.put_object(Bucket=BUCKET, Key=upload["key"], Body=PNG, ContentType="image/png")
    answer = notify(app, {"Records": [s3_record(quote_plus(upload["key"]))]})
    assert answer.status_code == 200, answer.json
    assert answer.json == {
        "received": 1,
        "completed": [upload["uploadId"]],
        "rejected": [],
        "ignored": 0,
    }
    view = client.get(f"/uploads/{upload['uploadId']}").json
    assert view["status"] == "completed"
    assert view["ready"] is True
    # A replay, then the client's own complete: the same settled answer, no second event.
    replay = notify(app, {"Records": [s3_record(upload["key"])]})
    assert replay.status_code == 200
    assert replay.json["ignored"] == 1
    assert client.post(f"/uploads/{upload['uploadId']}/complete").status_code == 200
    assert completed == [upload["uploadId"]]


def test_keys_with_spaces_come_url_encoded_and_are_found(
    app: Flask, client: UserClient, s3: Any
) -> None:
    upload = signed(client, name="holiday photo+1.png")
    s3.put_object(Bucket=BUCKET, Key=upload["key"], Body=PNG, ContentType="image/png")
    answer = notify(app, {"Records": [s3_record(quote_plus(upload["key"]))]})
    assert answer.json["completed"] == [upload["uploadId"]]


@pytest.mark.parametrize(
    "shape",
    ["single-record", "minio-key", "eventbridge", "aws-without-prefix"],
)
def test_every_accepted_shape_completes(
    app: Flask, client: UserClient, s3: Any, shape: str
) -> None:
    upload = signed(client)
    key = upload["key"]
    s3.put_object(Bucket=BUCKET, Key=key, Body=PNG, ContentType="image/png")
    body: Any = {
        "single-record": s3_record(key),
        "minio-key": {"EventName": "s3:ObjectCreated:Put", "Key": f"{BUCKET}/{key}"},
        "eventbridge": {
            "detail-type": "Object Created",
            "detail": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": len(PNG)}},
        },
        "aws-without-prefix": {"Records": [s3_record(key, event="ObjectCreated:Put")]},
    }[shape]
    answer = notify(app, body)
    assert answer.status_code == 200, answer.json
    assert answer.json["completed"] == [upload["uploadId"]]


def test_unknown_keys_other_buckets_other_events_and_missing_objects_change_nothing(
    app: Flask, client: UserClient, s3: Any, completed: list[str]
) -> None:
    upload = signed(client)  # never stored: storage holds no object yet
    answer = notify(
        app,
        {
            "Records": [
                s3_record("uploads/nobody/nothing.png"),
                s3_record(upload["key"], bucket="another-bucket"),
                s3_record(upload["key"], event="s3:ObjectRemoved:Delete"),
                s3_record(upload["key"]),
                s3_record("elsewhere/x.png"),
            ]
        },
    )
    assert answer.status_code == 200
    assert answer.json == {"received": 4, "completed": [], "rejected": [], "ignored": 4}
    assert client.get(f"/uploads/{upload['uploadId']}").json["status"] == "pending"
    assert completed == []


def test_an_object_that_does_not_match_is_rejected_like_on_complete(
    app: Flask, client: UserClient, s3: Any
) -> None:
    upload = signed(client)
    fake = b"MZ" + bytes(len(PNG) - 2)  # a Windows executable, declared a PNG
    s3.put_object(Bucket=BUCKET, Key=upload["key"], Body=fake, ContentType="image/png")
    answer = notify(app, s3_record(upload["key"]))
    assert answer.json["rejected"] == [upload["uploadId"]]
    assert client.get(f"/uploads/{upload['uploadId']}").json["status"] == "rejected"
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=upload["key"])["KeyCount"] == 0


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("wrong-token-0123456789", 401), (TOKEN + "x", 401), ("", 401)],
)
def test_a_wrong_or_missing_token_is_401(app: Flask, token: str | None, status: int) -> None:
    answer = notify(app, {"Records": []}, token=token)
    assert answer.status_code == status
    assert answer.json["error"] == "UNAUTHENTICATED"


def test_without_a_token_configured_the_route_is_404(s3: Any) -> None:
    app, _ = make_app(MemoryStateBackend())
    answer = notify(app, {"Records": []})
    assert answer.status_code == 404
    assert set(answer.json) == {"error", "message", "details"}


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"Records": "nope"},
        {"Records": [42]},
        {"Records": [{"eventName": "s3:ObjectCreated:Put"}]},
        {"Records": [{"eventName": "s3:ObjectCreated:Put", "s3": {"bucket": {"name": 1}}}]},
        {"EventName": "s3:ObjectCreated:Put", "Key": "no-slash"},
        {"detail-type": "Object Created", "detail": "x"},
        {"something": "else"},
    ],
)
def test_malformed_bodies_are_400_in_the_json_error_shape(app: Flask, body: Any) -> None:
    answer = notify(app, body)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"] == "INVALID_INPUT"
    assert set(answer.json) == {"error", "message", "details"}


def test_malformed_json_is_400(app: Flask) -> None:
    answer = notify(app, None, raw="{not json")
    assert answer.status_code == 400
    assert answer.json["error"] == "INVALID_JSON"


def test_a_body_of_a_thousand_records_is_handled_whole(
    app: Flask, client: UserClient, s3: Any
) -> None:
    uploads = [signed(client, name=f"f{i}.png") for i in range(5)]
    for upload in uploads:
        s3.put_object(Bucket=BUCKET, Key=upload["key"], Body=PNG, ContentType="image/png")
    records = [s3_record(f"uploads/unknown-{i}/x.png") for i in range(995)]
    records += [s3_record(upload["key"]) for upload in uploads]
    body = json.dumps({"Records": records})
    assert len(body) > app.config["OBITOX_MAX_REQUEST_SIZE"] // 16  # a real bulk body
    answer = notify(app, None, raw=body)
    assert answer.status_code == 200, answer.json
    assert answer.json["received"] == 1000
    assert sorted(answer.json["completed"]) == sorted(u["uploadId"] for u in uploads)
    assert answer.json["ignored"] == 995
