"""Progress reports and the part grid (DESIGN §12)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from conftest import BUCKET, UserClient, file_spec, make_app
from flask import Flask
from state_support import RoundTrips

from flask_obitox import MemoryStateBackend, ObitoX, RedisStateBackend, signals

BIN = {"contentType": "application/octet-stream"}
MiB = 2**20


@pytest.fixture(params=["memory", "redis"])
def obitox_app(
    request: pytest.FixtureRequest, s3: Any, config: dict[str, Any]
) -> tuple[Flask, ObitoX]:
    """Every test on both: Redis merges a byte count in one step (``ByteReports``), the
    memory backend the checked way."""
    if request.param == "memory":
        return make_app(MemoryStateBackend(), **config)
    return make_app(request.getfixturevalue("redis_backend"), **config)


@pytest.fixture
def reports(app: Flask) -> Iterator[list[Any]]:
    log: list[Any] = []
    lock = threading.Lock()

    def receiver(sender: Any, upload: Any, **extra: Any) -> None:
        with lock:
            log.append(upload)

    signals.upload_progress.connect(receiver, sender=app)
    yield log
    signals.upload_progress.disconnect(receiver, sender=app)


def single(client: UserClient, size: int = 1000) -> str:
    return str(client.post("/uploads", json=file_spec(size=size, **BIN)).json["uploadId"])


def multipart(client: UserClient, size: int = 20 * MiB, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/multipart", json=file_spec(filename="b.bin", size=size, **BIN, **extra)
    )
    assert response.status_code == 201, response.json
    return dict(response.json)


def report(client: UserClient, upload_id: str, **body: Any) -> Any:
    return client.post(f"/uploads/{upload_id}/progress", json=body)


def test_uploaded_bytes_only_grow(client: UserClient, reports: list[Any]) -> None:
    uid = single(client)
    first = report(client, uid, uploadedBytes=400)
    assert first.status_code == 202
    assert first.json == {"uploadId": uid, "uploadedBytes": 400, "percentage": 40.0}
    lower = report(client, uid, uploadedBytes=100)
    assert (lower.status_code, lower.json["uploadedBytes"]) == (202, 400)
    assert len(reports) == 1  # the lower report changed nothing
    assert reports[0].uploaded_bytes == 400
    view = client.get(f"/uploads/{uid}").json
    assert (view["status"], view["uploadedBytes"], view["percentage"]) == ("uploading", 400, 40.0)
    assert (view["totalParts"], view["completedParts"]) == (None, None)
    assert report(client, uid, uploadedBytes=1000).json["percentage"] == 100.0
    assert len(reports) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"uploadedBytes": 1001},
        {"uploadedBytes": -1},
        {"uploadedBytes": 1.5},
        {"uploadedBytes": "10"},
        {},
        {"uploadedBytes": 1, "parts": [{"partNumber": 1, "status": "uploaded"}]},  # single
        {"uploadedBytes": 1, "extra": True},
    ],
)
def test_bad_reports_are_400_and_store_nothing(
    client: UserClient, reports: list[Any], body: Any
) -> None:
    uid = single(client)
    response = report(client, uid, **body)
    assert response.status_code == 400, response.json
    assert response.json["error"] == "INVALID_INPUT"
    view = client.get(f"/uploads/{uid}").json
    assert (view["status"], view["uploadedBytes"]) == ("pending", 0)
    assert reports == []


def test_part_numbers_past_total_parts_are_400(client: UserClient) -> None:
    started = multipart(client)
    response = report(
        client,
        started["uploadId"],
        uploadedBytes=1,
        parts=[{"partNumber": 1, "status": "uploaded"}, {"partNumber": 4, "status": "uploaded"}],
    )
    assert (response.status_code, response.json["details"]["invalid"]) == (400, [4])
    assert client.get(f"/uploads/{started['uploadId']}").json["completedParts"] == 0


def test_a_finished_upload_is_409_and_another_owners_404(
    client: UserClient, other_client: UserClient, s3: Any
) -> None:
    started = multipart(client)
    assert report(other_client, started["uploadId"], uploadedBytes=1).status_code == 404
    client.delete(f"/multipart/{started['uploadId']}")
    response = report(client, started["uploadId"], uploadedBytes=1)
    assert (response.status_code, response.json["error"]) == (409, "UPLOAD_CLOSED")
    assert response.json["details"]["status"] == "aborted"


def test_a_members_report_moves_its_group(client: UserClient, app: Flask) -> None:
    views: list[dict[str, Any]] = []

    def on_progress(sender: Any, group: Any, view: dict[str, Any], **extra: Any) -> None:
        views.append(view)

    signals.group_progress.connect(on_progress, sender=app)
    try:
        gid = client.post("/groups", json={"name": "g"}).json["groupId"]
        uid = client.post("/uploads", json=file_spec(size=1000, groupId=gid, **BIN)).json[
            "uploadId"
        ]
        report(client, uid, uploadedBytes=250)
        report(client, uid, uploadedBytes=500)
        assert [v["uploadedBytes"] for v in views] == [250, 500]
        assert views[0]["status"] == "in_progress"
        assert client.get("/groups?status=in_progress").json["groups"][0]["groupId"] == gid
    finally:
        signals.group_progress.disconnect(on_progress, sender=app)


def test_a_report_after_the_first_is_one_round_trip_on_redis(
    redis_backend: RedisStateBackend, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = make_app(redis_backend, OBITOX_EVENTS=False)
    client, other = UserClient(app, "alice"), UserClient(app, "mallory")
    uid = single(client)
    assert report(client, uid, uploadedBytes=100).status_code == 202  # pending: checked
    with RoundTrips().counting(monkeypatch) as trips:
        answer = report(client, uid, uploadedBytes=300)
    assert (answer.status_code, answer.json) == (
        202,
        {"uploadId": uid, "uploadedBytes": 300, "percentage": 30.0},
    )
    assert trips.count == 1  # no read before the merge
    # What the one step does not settle, the checked path answers as before.
    assert report(other, uid, uploadedBytes=400).status_code == 404
    assert report(client, uid, uploadedBytes=1001).status_code == 400
    assert client.get(f"/uploads/{uid}").json["uploadedBytes"] == 300


# -- the part grid, against a moto server ------------------------------------------------


@pytest.fixture
def e2e_app(s3_server: Any, moto_server: str, redis_backend: RedisStateBackend) -> Flask:
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL=moto_server)
    return app


def test_list_parts_wins_over_reports(alice: UserClient, s3_server: Any) -> None:
    started = multipart(alice)
    uid = started["uploadId"]
    [part] = alice.post(f"/multipart/{uid}/parts", json={"partNumbers": [1]}).json["parts"]
    assert requests.put(part["url"], data=b"x" * part["size"], timeout=30).status_code == 200
    answer = report(
        alice,
        uid,
        uploadedBytes=9 * MiB,
        parts=[
            {"partNumber": 1, "status": "failed"},  # storage holds it: uploaded
            {"partNumber": 2, "status": "uploaded"},  # storage does not: still uploading
        ],
    )
    assert answer.status_code == 202
    resume = alice.get(f"/multipart/{uid}").json
    [stored] = s3_server.list_parts(
        Bucket=BUCKET, Key=started["key"], UploadId=_s3_upload_id(s3_server, started["key"])
    )["Parts"]
    assert resume["parts"] == [
        {"partNumber": 1, "size": 8 * MiB, "status": "uploaded", "etag": stored["ETag"].strip('"')},
        {"partNumber": 2, "size": 8 * MiB, "status": "uploading"},
        {"partNumber": 3, "size": 4 * MiB, "status": "pending"},
    ]
    view = alice.get(f"/uploads/{uid}").json
    assert (view["totalParts"], view["completedParts"], view["uploadedBytes"]) == (3, 1, 9 * MiB)


def _s3_upload_id(s3: Any, key: str) -> str:
    [upload] = [u for u in s3.list_multipart_uploads(Bucket=BUCKET)["Uploads"] if u["Key"] == key]
    return str(upload["UploadId"])
