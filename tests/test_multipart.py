"""Resumable multipart uploads, end to end: real bytes PUT to signed part URLs of a moto
S3 server, real Redis state."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import BUCKET, UserClient, make_app
from flask import Flask
from test_uploads import EXE, png_bytes

from flask_obitox import RedisStateBackend, UploadRecord
from flask_obitox.domain import part_layout
from flask_obitox.storage import Storage

MiB = 1024 * 1024
PART = 5 * MiB


def content_of(size: int) -> bytes:
    """A PNG of exactly ``size`` bytes (so verification's magic-byte check passes)."""
    head = png_bytes()
    body = hashlib.sha256(b"seed").digest() * (size // 32 + 1)
    return (head + body)[:size]


@pytest.fixture
def e2e_app(s3_server: Any, moto_server: str, e2e_state: RedisStateBackend) -> Flask:
    app, _ = make_app(e2e_state, OBITOX_ENDPOINT_URL=moto_server, OBITOX_PART_SIZE=PART)
    return app


def start(client: UserClient, size: int, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/multipart",
        json={"filename": "movie.png", "contentType": "image/png", "size": size, **extra},
    )
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


def sign(client: UserClient, upload_id: str, numbers: list[int]) -> list[dict[str, Any]]:
    response = client.post(f"/multipart/{upload_id}/parts", json={"partNumbers": numbers})
    assert response.status_code == 200, response.json
    parts: list[dict[str, Any]] = response.json["parts"]
    return parts


def put_part(part: dict[str, Any], content: bytes, part_size: int = PART) -> str:
    n = part["partNumber"]
    chunk = content[(n - 1) * part_size : n * part_size]
    assert len(chunk) == part["size"]
    response = requests.put(part["url"], data=chunk, headers=part["headers"], timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["ETag"].strip('"')


def upload_all(client: UserClient, upload: dict[str, Any], content: bytes) -> dict[int, str]:
    parts = sign(client, upload["uploadId"], list(range(upload["totalParts"], 0, -1)))
    return {p["partNumber"]: put_part(p, content, upload["partSize"]) for p in parts}


def stored(s3: Any, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def open_uploads(s3: Any) -> list[dict[str, Any]]:
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    return uploads


# -- the happy path ------------------------------------------------------------------


def test_out_of_order_parts_resume_view_and_complete_without_parts(
    alice: UserClient, s3_server: Any, events: list[tuple[str, dict[str, Any]]]
) -> None:
    content = content_of(12 * MiB + 123)
    upload = start(alice, len(content), metadata={"album": "x"})
    assert upload["partSize"] == PART
    assert upload["totalParts"] == 3
    assert upload["key"].startswith("uploads/")
    # The resume token is ours: 128 random bits, never storage's UploadId.
    assert len(upload["uploadId"]) == 22
    assert open_uploads(s3_server)[0]["UploadId"] != upload["uploadId"]

    parts = sign(alice, upload["uploadId"], [3, 1])
    assert [p["partNumber"] for p in parts] == [3, 1]
    assert set(parts[0]) == {"partNumber", "url", "size", "headers", "expiresAt"}
    assert [p["size"] for p in parts] == [2 * MiB + 123, PART]
    # Content-Length is signed into each URL.
    assert "content-length" in parse_qs(urlsplit(parts[0]["url"]).query)["X-Amz-SignedHeaders"][0]
    etags = {p["partNumber"]: put_part(p, content) for p in parts}

    view = alice.get(f"/multipart/{upload['uploadId']}").json
    assert view["status"] == "uploading"
    assert [p["partNumber"] for p in view["uploadedParts"]] == [1, 3]
    assert view["uploadedParts"][0]["etag"] == etags[1]
    assert view["remainingParts"] == [2]
    assert view["uploadedBytes"] == PART + 2 * MiB + 123
    assert view["totalBytes"] == len(content)
    assert 0 < view["percentage"] < 100

    put_part(sign(alice, upload["uploadId"], [2])[0], content)
    done = alice.post(f"/multipart/{upload['uploadId']}/complete")
    assert done.status_code == 200, done.json
    assert done.json["status"] == "completed"
    assert done.json["size"] == len(content)
    assert done.json["location"].endswith(upload["key"].replace(" ", "%20"))
    assert stored(s3_server, upload["key"]) == content
    head = s3_server.head_object(Bucket=BUCKET, Key=upload["key"])
    assert head["ContentType"] == "image/png"
    assert head["Metadata"] == {"album": "x"}

    # Repeats answer the same; the status route knows it; the resume view says done.
    assert alice.post(f"/multipart/{upload['uploadId']}/complete").json == done.json
    assert alice.get(f"/uploads/{upload['uploadId']}").json["status"] == "completed"
    view = alice.get(f"/multipart/{upload['uploadId']}").json
    assert (view["status"], view["percentage"], view["remainingParts"]) == ("completed", 100, [])
    names = [name for name, _ in events]
    assert names.count("multipart_initiated") == 1
    assert names.count("multipart_resumed") == 1
    assert names.count("upload_completed") == 1


def test_complete_with_explicit_parts_accepts_quoted_etags(
    alice: UserClient, s3_server: Any
) -> None:
    content = content_of(6 * MiB)
    upload = start(alice, len(content))
    etags = upload_all(alice, upload, content)
    parts = [{"partNumber": n, "etag": f'"{e}"'} for n, e in sorted(etags.items(), reverse=True)]
    done = alice.post(f"/multipart/{upload['uploadId']}/complete", json={"parts": parts})
    assert done.status_code == 200, done.json
    assert stored(s3_server, upload["key"]) == content


def test_small_file_is_one_part_and_empty_file_works(alice: UserClient, s3_server: Any) -> None:
    for size in (1000, 0):
        content = content_of(size)
        upload = start(alice, size, contentType="application/octet-stream")
        assert upload["totalParts"] == 1
        upload_all(alice, upload, content)
        done = alice.post(f"/multipart/{upload['uploadId']}/complete")
        assert done.status_code == 200, done.json
        assert stored(s3_server, upload["key"]) == content


# -- what completes and what does not -----------------------------------------------


def test_missing_part_is_409_naming_it(alice: UserClient) -> None:
    content = content_of(11 * MiB)
    upload = start(alice, len(content))
    put_part(sign(alice, upload["uploadId"], [1])[0], content)
    response = alice.post(f"/multipart/{upload['uploadId']}/complete")
    assert response.status_code == 409
    assert response.json["error"] == "UPLOAD_NOT_COMPLETE"
    assert response.json["details"]["missingParts"] == [2, 3]
    assert alice.get(f"/multipart/{upload['uploadId']}").json["status"] == "uploading"


def test_wrong_etag_is_422_invalid_parts_and_changes_nothing(
    alice: UserClient, s3_server: Any
) -> None:
    content = content_of(6 * MiB)
    upload = start(alice, len(content))
    etags = upload_all(alice, upload, content)
    parts = [{"partNumber": n, "etag": e} for n, e in etags.items()]
    parts[0]["etag"] = "0" * 32
    response = alice.post(f"/multipart/{upload['uploadId']}/complete", json={"parts": parts})
    assert response.status_code == 422
    assert response.json["error"] == "INVALID_PARTS"
    assert response.json["details"]["parts"] == [parts[0]["partNumber"]]
    # Nothing changed: the upload is still open in storage and can complete.
    assert len(open_uploads(s3_server)) == 1
    incomplete = alice.post(f"/multipart/{upload['uploadId']}/complete", json={"parts": parts[1:]})
    assert incomplete.status_code == 422
    assert alice.post(f"/multipart/{upload['uploadId']}/complete").status_code == 200


def test_disguised_executable_is_rejected_and_removed(alice: UserClient, s3_server: Any) -> None:
    content = (EXE + b"\0" * PART)[: PART + 10]
    upload = start(alice, len(content))
    upload_all(alice, upload, content)
    response = alice.post(f"/multipart/{upload['uploadId']}/complete")
    assert response.status_code == 422
    assert response.json["error"] == "CONTENT_MISMATCH"
    assert s3_server.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert alice.post(f"/multipart/{upload['uploadId']}/complete").status_code == 422


def test_twelve_concurrent_completes_one_winner(
    e2e_app: Flask, alice: UserClient, events: list[tuple[str, dict[str, Any]]]
) -> None:
    content = content_of(11 * MiB)
    upload = start(alice, len(content))
    upload_all(alice, upload, content)
    answers: list[tuple[int, Any]] = []
    barrier = threading.Barrier(12)

    def complete() -> None:
        client = UserClient(e2e_app, "alice")
        barrier.wait()
        response = client.post(f"/multipart/{upload['uploadId']}/complete")
        answers.append((response.status_code, response.json))

    threads = [threading.Thread(target=complete) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in answers] == [200] * 12, answers
    assert len({str(body) for _, body in answers}) == 1
    assert [name for name, _ in events].count("upload_completed") == 1
    assert alice.post(f"/multipart/{upload['uploadId']}/complete").json == answers[0][1]


def all_parts_uploaded(
    alice: UserClient, state: RedisStateBackend
) -> tuple[dict[str, Any], UploadRecord, bytes]:
    """A 6 MiB multipart upload whose parts are all in storage: its answer, its record,
    its content."""
    content = content_of(6 * MiB)
    upload = start(alice, len(content))
    upload_all(alice, upload, content)
    record = state.get(upload["uploadId"])
    assert record is not None
    assert record.s3_upload_id is not None
    return upload, record, content


def complete_in_storage(s3: Any, record: UploadRecord) -> None:
    """Another caller's CompleteMultipartUpload: storage assembles the object and
    forgets the upload id, while the record is still open."""
    held = s3.list_parts(Bucket=BUCKET, Key=record.key, UploadId=record.s3_upload_id)
    s3.complete_multipart_upload(
        Bucket=BUCKET,
        Key=record.key,
        UploadId=record.s3_upload_id,
        MultipartUpload={
            "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in held["Parts"]]
        },
    )


def test_a_completion_in_flight_is_not_taken_for_an_abort(
    alice: UserClient, s3_server: Any, e2e_state: RedisStateBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage forgets the upload id when another caller's CompleteMultipartUpload
    starts, and the object exists only when it ends: a caller in between finds neither
    and must look again, not settle the upload as aborted (the flaky run of the twelve
    concurrent completes on a cluster: moto answered one caller in that gap)."""
    upload, record, content = all_parts_uploaded(alice, e2e_state)
    complete_in_storage(s3_server, record)  # the other caller's, already in storage
    head = Storage.head
    unseen = [record.key]

    def late_head(self: Storage, key: str) -> Any:
        if key in unseen:  # its object is not there yet at the first look
            unseen.remove(key)
            return None
        return head(self, key)

    monkeypatch.setattr(Storage, "head", late_head)
    response = alice.post(f"/multipart/{upload['uploadId']}/complete")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "completed"
    assert stored(s3_server, record.key) == content


def test_a_resume_during_a_completion_answers_what_it_settles(
    e2e_app: Flask,
    alice: UserClient,
    s3_server: Any,
    e2e_state: RedisStateBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GET /multipart/<id> while another caller completes the upload: storage no longer
    lists its parts and the record, read just then, is still open. The resume waits for
    that completion's answer; it answered UPLOAD_ABORTED (the manager page's 409 in a
    CI run), for an upload that was completing."""
    upload, record, content = all_parts_uploaded(alice, e2e_state)
    upload_id = upload["uploadId"]
    complete_in_storage(s3_server, record)
    # The other caller finishes right after the resume's first look at the record.
    get, list_parts, me = e2e_state.get, Storage.list_parts, threading.get_ident()
    looks: list[str] = []

    def listed(self: Storage, key: str, s3_upload_id: str) -> Any:
        looks.append("parts")
        return list_parts(self, key, s3_upload_id)

    def read(wanted: str) -> Any:
        found = get(wanted)
        if threading.get_ident() == me and looks == ["parts"]:
            looks.append("record")
            other = threading.Thread(
                target=lambda: UserClient(e2e_app, "alice").post(f"/multipart/{upload_id}/complete")
            )
            other.start()
            other.join(30)
        return found

    monkeypatch.setattr(Storage, "list_parts", listed)
    monkeypatch.setattr(e2e_state, "get", read)
    response = alice.get(f"/multipart/{upload_id}")
    assert looks == ["parts", "record", "parts"], looks  # the other completed meanwhile
    assert response.status_code == 200, response.json
    assert response.json["status"] == "completed"
    assert response.json["percentage"] == 100.0
    assert stored(s3_server, record.key) == content


def test_a_resume_of_an_upload_storage_forgot_without_an_object_is_aborted(
    alice: UserClient, s3_server: Any, e2e_state: RedisStateBackend
) -> None:
    """Storage aborted the upload (a lifecycle rule): no parts, no object, after the
    waits for a completion that could be under way."""
    upload, record, _ = all_parts_uploaded(alice, e2e_state)
    s3_server.abort_multipart_upload(Bucket=BUCKET, Key=record.key, UploadId=record.s3_upload_id)
    response = alice.get(f"/multipart/{upload['uploadId']}")
    assert response.status_code == 409
    assert response.json["error"] == "UPLOAD_ABORTED"


def test_a_resume_while_a_completion_is_still_verifying_says_so(
    alice: UserClient, s3_server: Any, e2e_state: RedisStateBackend
) -> None:
    """Storage assembled the object, and no caller settled the record within the
    waits: not aborted (the object is there), not completed (nobody verified it yet)."""
    upload, record, _ = all_parts_uploaded(alice, e2e_state)
    complete_in_storage(s3_server, record)
    response = alice.get(f"/multipart/{upload['uploadId']}")
    assert response.status_code == 409
    assert response.json["error"] == "UPLOAD_NOT_COMPLETE"
    done = alice.post(f"/multipart/{upload['uploadId']}/complete")
    assert done.status_code == 200, done.json
    assert alice.get(f"/multipart/{upload['uploadId']}").json["status"] == "completed"


# -- abort ---------------------------------------------------------------------------


def test_abort_then_complete_is_409(
    alice: UserClient, s3_server: Any, events: list[tuple[str, dict[str, Any]]]
) -> None:
    content = content_of(6 * MiB)
    upload = start(alice, len(content))
    put_part(sign(alice, upload["uploadId"], [1])[0], content)
    response = alice.delete(f"/multipart/{upload['uploadId']}")
    assert response.status_code == 200
    assert response.json["status"] == "aborted"
    assert open_uploads(s3_server) == []
    # Idempotent, and the signal fired once.
    assert alice.delete(f"/multipart/{upload['uploadId']}").status_code == 200
    assert [name for name, _ in events].count("upload_aborted") == 1
    for call in (
        lambda: alice.post(f"/multipart/{upload['uploadId']}/complete"),
        lambda: alice.post(f"/multipart/{upload['uploadId']}/parts", json={"partNumbers": [2]}),
        lambda: alice.get(f"/multipart/{upload['uploadId']}"),
    ):
        answer = call()
        assert answer.status_code == 409
        assert answer.json["error"] == "UPLOAD_ABORTED"
    assert alice.get(f"/uploads/{upload['uploadId']}").json["status"] == "aborted"


def test_abort_after_complete_is_409(alice: UserClient) -> None:
    content = content_of(100)
    upload = start(alice, len(content))
    upload_all(alice, upload, content)
    assert alice.post(f"/multipart/{upload['uploadId']}/complete").status_code == 200
    response = alice.delete(f"/multipart/{upload['uploadId']}")
    assert response.status_code == 409
    assert response.json["error"] == "UPLOAD_COMPLETED"


# -- ownership and input -------------------------------------------------------------


def test_another_owner_gets_404_on_every_route(
    alice: UserClient, mallory: UserClient, s3_server: Any
) -> None:
    content = content_of(100)
    upload = start(alice, len(content))
    uid = upload["uploadId"]
    for response in (
        mallory.post(f"/multipart/{uid}/parts", json={"partNumbers": [1]}),
        mallory.get(f"/multipart/{uid}"),
        mallory.post(f"/multipart/{uid}/complete"),
        mallory.delete(f"/multipart/{uid}"),
        mallory.get(f"/uploads/{uid}"),
    ):
        assert response.status_code == 404
        assert response.json["error"] == "UPLOAD_NOT_FOUND"
    assert len(open_uploads(s3_server)) == 1  # mallory's abort did nothing


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"partNumbers": [0]}, 400, "INVALID_INPUT"),
        ({"partNumbers": [4]}, 400, "INVALID_INPUT"),
        ({"partNumbers": []}, 400, "INVALID_INPUT"),
        ({"partNumbers": list(range(1, 1002))}, 400, "INVALID_INPUT"),
        ({"partNumbers": ["1"]}, 400, "INVALID_INPUT"),
        ({"partNumbers": [True]}, 400, "INVALID_INPUT"),
        ({}, 400, "INVALID_INPUT"),
        ([1, 2], 400, "INVALID_INPUT"),
    ],
)
def test_bad_part_requests(alice: UserClient, body: Any, status: int, code: str) -> None:
    upload = start(alice, 11 * MiB)
    response = alice.post(f"/multipart/{upload['uploadId']}/parts", json=body)
    assert response.status_code == status, response.json
    assert response.json["error"] == code
    assert alice.get(f"/multipart/{upload['uploadId']}").json["status"] == "pending"


def test_bad_bodies_get_clear_errors_and_create_nothing(alice: UserClient, s3_server: Any) -> None:
    cases: list[tuple[Any, dict[str, Any], int, str]] = [
        ("/multipart", {"data": "{", "content_type": "application/json"}, 400, "INVALID_JSON"),
        ("/multipart", {"data": "x", "content_type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("/multipart", {"json": {"filename": "a.png"}}, 400, "INVALID_INPUT"),
        (
            "/multipart",
            {"json": {"filename": "a.png", "contentType": "image/png", "size": -1}},
            400,
            "INVALID_INPUT",
        ),
        (
            "/multipart",
            {
                "json": {
                    "filename": "a.png",
                    "contentType": "image/png",
                    "size": 6 * MiB,
                    "partSize": MiB,
                }
            },
            422,
            "VALIDATION_FAILED",
        ),
        (
            "/multipart",
            {"json": {"filename": "a.exe", "contentType": "image/png", "size": 6 * MiB}},
            422,
            "VALIDATION_FAILED",
        ),
    ]
    for path, kwargs, status, code in cases:
        response = alice.post(path, **kwargs)
        assert response.status_code == status, (kwargs, response.json)
        assert response.json["error"] == code
    assert open_uploads(s3_server) == []


def test_size_above_max_multipart_size_is_413(
    s3_server: Any, moto_server: str, redis_backend: RedisStateBackend
) -> None:
    app, _ = make_app(
        redis_backend, OBITOX_ENDPOINT_URL=moto_server, OBITOX_MAX_MULTIPART_SIZE=100 * MiB
    )
    response = UserClient(app, "alice").post(
        "/multipart", json={"filename": "a.png", "contentType": "image/png", "size": 100 * MiB + 1}
    )
    assert response.status_code == 413
    assert response.json["error"] == "FILE_TOO_LARGE"
    assert "OBITOX_MAX_MULTIPART_SIZE" in response.json["message"]
    assert open_uploads(s3_server) == []


def test_complete_body_must_be_json(alice: UserClient) -> None:
    upload = start(alice, 100)
    response = alice.post(
        f"/multipart/{upload['uploadId']}/complete", data="parts=1", content_type="text/plain"
    )
    assert response.status_code == 415
    bad = alice.post(f"/multipart/{upload['uploadId']}/complete", json={"parts": [{"x": 1}]})
    assert bad.status_code == 400


def test_single_and_multipart_routes_do_not_mix(alice: UserClient) -> None:
    single = alice.post(
        "/uploads", json={"filename": "a.png", "contentType": "image/png", "size": 10}
    ).json
    assert alice.post(f"/multipart/{single['uploadId']}/complete").status_code == 400
    upload = start(alice, 100)
    assert alice.post(f"/uploads/{upload['uploadId']}/complete").status_code == 400


# -- part sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "requested", "expected"),
    [
        (0, None, (8 * MiB, 1)),
        (8 * MiB, None, (8 * MiB, 1)),
        (8 * MiB + 1, None, (8 * MiB, 2)),
        (50 * 1024**3, None, (8 * MiB, 6400)),
        (100 * 1024**3, None, (11 * MiB, 9310)),
        (5 * 1024**4, None, (525 * MiB, 9987)),
        (100 * MiB, 5 * MiB, (5 * MiB, 20)),
        (100 * 1024**3, 5 * MiB, (11 * MiB, 9310)),
    ],
)
def test_part_layout(size: int, requested: int | None, expected: tuple[int, int]) -> None:
    part_size, total = part_layout(size, requested, 8 * MiB)
    assert (part_size, total) == expected
    assert total <= 10_000
    assert (total - 1) * part_size < size <= total * part_size or size == 0


def test_resume_view_follows_every_listparts_page(
    e2e_app: Flask, alice: UserClient, s3_server: Any
) -> None:
    """ListParts answers 1000 parts per page: 2500 stored parts need three pages."""
    upload = start(alice, 2500 * PART)
    record = e2e_app.extensions["obitox"].state.get(upload["uploadId"])
    # Storage's real parts (1 byte each: moto does not enforce part sizes), uploaded
    # directly so the test stays fast; the view must list all of them.
    for number in range(1, 2501):
        s3_server.upload_part(
            Bucket=BUCKET,
            Key=record.key,
            UploadId=record.s3_upload_id,
            PartNumber=number,
            Body=b"x",
        )
    view = alice.get(f"/multipart/{upload['uploadId']}").json
    assert len(view["uploadedParts"]) == 2500
    assert view["remainingParts"] == []
    # Every part has the wrong size for what was signed: complete refuses them.
    response = alice.post(f"/multipart/{upload['uploadId']}/complete")
    assert response.status_code == 422
    assert response.json["error"] == "INVALID_PARTS"


# -- expiry and cleanup --------------------------------------------------------------


def test_expired_upload_is_410_and_cleanup_aborts_it(
    e2e_app: Flask,
    alice: UserClient,
    s3_server: Any,
    events: list[tuple[str, dict[str, Any]]],
) -> None:
    content = content_of(6 * MiB)
    upload = start(alice, len(content))
    put_part(sign(alice, upload["uploadId"], [1])[0], content)
    state = e2e_app.extensions["obitox"].state
    state.update(upload["uploadId"], ("uploading",), expires_at=time.time() - 1)
    for response in (
        alice.post(f"/multipart/{upload['uploadId']}/parts", json={"partNumbers": [2]}),
        alice.post(f"/multipart/{upload['uploadId']}/complete"),
        alice.get(f"/multipart/{upload['uploadId']}"),
    ):
        assert response.status_code == 410
        assert response.json["error"] == "UPLOAD_EXPIRED"
    assert alice.get(f"/uploads/{upload['uploadId']}").json["status"] == "expired"

    result = e2e_app.test_cli_runner().invoke(args=["obitox", "cleanup"])
    assert result.exit_code == 0, result.output
    assert "1 expired" in result.output
    assert upload["uploadId"] in result.output
    assert open_uploads(s3_server) == []
    assert state.get(upload["uploadId"]).status == "expired"
    assert [name for name, _ in events].count("upload_expired") == 1
    # A second run finds nothing to do.
    again = e2e_app.test_cli_runner().invoke(args=["obitox", "cleanup"])
    assert "0 expired, 0 orphans aborted" in again.output


def test_cleanup_aborts_old_orphans_under_the_prefix_only(
    e2e_app: Flask, alice: UserClient, s3_server: Any
) -> None:
    ours = s3_server.create_multipart_upload(Bucket=BUCKET, Key="uploads/lost/file.bin")
    theirs = s3_server.create_multipart_upload(Bucket=BUCKET, Key="other/file.bin")
    live = start(alice, 100)
    service = e2e_app.extensions["obitox"].service
    # moto dates every multipart upload 2010-11-10, so all look older than the TTL: the
    # live one survives because its record claims it.
    report = service.cleanup()
    assert report.orphans == ["uploads/lost/file.bin"]
    remaining = {u["UploadId"] for u in open_uploads(s3_server)}
    assert theirs["UploadId"] in remaining
    assert ours["UploadId"] not in remaining
    assert len(remaining) == 2
    assert alice.get(f"/multipart/{live['uploadId']}").status_code == 200


def test_cleanup_leaves_young_orphans_alone(
    e2e_app: Flask, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = e2e_app.extensions["obitox"].service
    created = s3_server.create_multipart_upload(Bucket=BUCKET, Key="uploads/young/file.bin")
    storage = service.storages.get(service.default_storage)
    real = storage.pending_multiparts

    def dated(prefix: str, initiated: float) -> Iterator[Any]:
        for pending in real(prefix):
            yield dataclasses.replace(pending, initiated=initiated)

    ttl = service.settings.upload_ttl
    monkeypatch.setattr(storage, "pending_multiparts", lambda p: dated(p, time.time() - ttl + 60))
    assert service.cleanup().orphans == []
    monkeypatch.setattr(storage, "pending_multiparts", lambda p: dated(p, time.time() - ttl - 60))
    assert service.cleanup().orphans == ["uploads/young/file.bin"]
    assert created["UploadId"] not in {u["UploadId"] for u in open_uploads(s3_server)}


def test_cleanup_leaves_completed_uploads_alone(e2e_app: Flask, alice: UserClient) -> None:
    content = content_of(100)
    upload = start(alice, len(content))
    upload_all(alice, upload, content)
    assert alice.post(f"/multipart/{upload['uploadId']}/complete").status_code == 200
    service = e2e_app.extensions["obitox"].service
    report = service.cleanup(now=time.time() + service.settings.upload_ttl + 60)
    assert report.expired == []
    assert alice.post(f"/multipart/{upload['uploadId']}/complete").status_code == 200


def test_cleanup_reports_storage_failure_and_retries(
    e2e_app: Flask, alice: UserClient, s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = start(alice, 100)
    service = e2e_app.extensions["obitox"].service
    later = time.time() + service.settings.upload_ttl + 60
    storage = service.storage_for("alice")
    original = storage.abort_multipart

    def down(key: str, upload_id: str) -> bool:
        from flask_obitox.errors import StorageUnavailable

        raise StorageUnavailable("S3 is down (test)")

    monkeypatch.setattr(storage, "abort_multipart", down)
    report = service.cleanup(now=later, orphans=False)
    assert [r.upload_id for r in report.expired] == [upload["uploadId"]]
    assert report.errors
    monkeypatch.setattr(storage, "abort_multipart", original)
    report = service.cleanup(now=later, orphans=False)
    assert report.expired == []  # already expired: only the storage part was retried
    assert report.errors == []
    assert open_uploads(s3_server) == []


def test_cleanup_cli_without_redis_is_a_clear_error() -> None:
    app, _ = make_app(None, OBITOX_STATE_BACKEND="redis://127.0.0.1:1/0")
    result = app.test_cli_runner().invoke(args=["obitox", "cleanup"])
    assert result.exit_code == 1
    assert "Redis" in result.output
    assert "Traceback" not in result.output


def test_cleanup_job_runs_in_an_app_context(
    e2e_app: Flask, alice: UserClient, s3_server: Any
) -> None:
    from flask_obitox import jobs

    upload = start(alice, 100)
    state = e2e_app.extensions["obitox"].state
    state.update(upload["uploadId"], ("pending",), expires_at=time.time() - 1)
    with e2e_app.app_context():
        summary = jobs.cleanup(orphans=False)
    assert summary == {"expired": [upload["uploadId"]], "orphans": [], "errors": []}
    assert open_uploads(s3_server) == []


def test_state_down_at_init_leaves_no_upload_in_storage(s3_server: Any, moto_server: str) -> None:
    app, _ = make_app(
        None, OBITOX_ENDPOINT_URL=moto_server, OBITOX_STATE_BACKEND="redis://127.0.0.1:1/0"
    )
    response = UserClient(app, "alice").post(
        "/multipart", json={"filename": "a.png", "contentType": "image/png", "size": 100}
    )
    assert response.status_code == 503
    assert response.json["error"] == "STATE_UNAVAILABLE"
    assert open_uploads(s3_server) == []


def test_storage_down_is_503(redis_backend: RedisStateBackend) -> None:
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL="http://127.0.0.1:1")
    response = UserClient(app, "alice").post(
        "/multipart", json={"filename": "a.png", "contentType": "image/png", "size": 100}
    )
    assert response.status_code == 503
    assert response.json["error"] == "STORAGE_UNAVAILABLE"
    assert "127.0.0.1:1" not in response.json["message"]


@pytest.mark.parametrize("code", ["InvalidPart", "InvalidPartOrder", "EntityTooSmall"])
def test_parts_storage_refuses_at_completion_are_422(
    e2e_app: Flask, alice: UserClient, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    """Parts changed between ListParts and CompleteMultipartUpload: the client's doing."""
    from botocore.exceptions import ClientError

    content = content_of(100)
    upload = start(alice, len(content))
    upload_all(alice, upload, content)
    storage = e2e_app.extensions["obitox"].service.storage_for("alice")

    def refuse(**kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": code, "Message": "no"}}, "CompleteMultipartUpload")

    monkeypatch.setattr(storage.client, "complete_multipart_upload", refuse)
    response = alice.post(f"/multipart/{upload['uploadId']}/complete")
    assert response.status_code == 422
    assert response.json["error"] == "INVALID_PARTS"
    assert response.json["details"]["storageCode"] == code
    monkeypatch.undo()
    assert alice.post(f"/multipart/{upload['uploadId']}/complete").status_code == 200


# -- per-owner caps on open uploads (OBITOX_MAX_OPEN_MULTIPART, OBITOX_MAX_OPEN_BYTES) --


@pytest.mark.redis
def test_an_owner_holds_at_most_the_open_multipart_uploads_allowed(
    redis_backend: Any, s3: Any
) -> None:
    app, _ = make_app(redis_backend, OBITOX_MAX_OPEN_MULTIPART=3)
    alice, bob = UserClient(app, "alice"), UserClient(app, "bob")
    spec = {"filename": "big.bin", "contentType": "application/octet-stream", "size": 20 * MiB}
    started = [alice.post("/multipart", json=spec) for _ in range(3)]
    assert [r.status_code for r in started] == [201, 201, 201]
    refused = alice.post("/multipart", json=spec)
    assert refused.status_code == 429
    assert refused.json["error"] == "RATE_LIMITED"
    assert refused.json["details"] == {
        "setting": "OBITOX_MAX_OPEN_MULTIPART",
        "limit": 3,
        "open": 3,
    }
    assert len(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == 3
    assert bob.post("/multipart", json=spec).status_code == 201  # per owner
    # Aborting one frees its place.
    assert alice.delete(f"/multipart/{started[0].json['uploadId']}").status_code == 200
    assert alice.post("/multipart", json=spec).status_code == 201


@pytest.mark.redis
def test_an_owner_holds_at_most_the_open_bytes_allowed(redis_backend: Any, s3: Any) -> None:
    app, _ = make_app(redis_backend, OBITOX_MAX_OPEN_BYTES=50 * MiB)
    alice = UserClient(app, "alice")
    spec = {"filename": "big.bin", "contentType": "application/octet-stream", "size": 20 * MiB}
    assert alice.post("/multipart", json=spec).status_code == 201
    assert alice.post("/multipart", json=spec).status_code == 201
    refused = alice.post("/multipart", json=spec)  # 60 MiB > 50 MiB
    assert refused.status_code == 429
    assert refused.json["details"]["setting"] == "OBITOX_MAX_OPEN_BYTES"
    assert alice.post("/multipart", json={**spec, "size": 10 * MiB}).status_code == 201
