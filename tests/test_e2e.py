"""End to end: real bytes PUT to the signed URLs of a moto S3 server, real Redis state."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
import requests
from conftest import BUCKET, UserClient, file_spec, make_app
from flask import Flask
from test_uploads import EXE, png_bytes

from flask_obitox import RedisStateBackend


@pytest.fixture
def e2e_app(s3_server: Any, moto_server: str, e2e_state: RedisStateBackend) -> Flask:
    app, _ = make_app(e2e_state, OBITOX_ENDPOINT_URL=moto_server)
    return app


def put(signed: dict[str, Any], content: bytes) -> requests.Response:
    return requests.put(signed["url"], data=content, headers=signed["headers"], timeout=10)


def test_single_upload_round_trip(alice: UserClient, s3_server: Any) -> None:
    content = png_bytes(extra=4096)
    digest = base64.b64encode(hashlib.sha256(content).digest()).decode()
    signed = alice.post(
        "/uploads",
        json=file_spec(size=len(content), checksumSha256=digest, metadata={"album": "summer"}),
    ).json
    response = put(signed, content)
    assert response.status_code == 200, response.text
    done = alice.post(f"/uploads/{signed['uploadId']}/complete")
    assert done.status_code == 200, done.json
    assert done.json["status"] == "completed"
    stored = s3_server.get_object(Bucket=BUCKET, Key=signed["key"])
    assert stored["Body"].read() == content
    assert stored["ContentType"] == "image/png"
    assert stored["Metadata"] == {"album": "summer"}
    assert alice.get(f"/uploads/{signed['uploadId']}").json["status"] == "completed"


def test_batch_round_trip(alice: UserClient, s3_server: Any) -> None:
    contents = [png_bytes(extra=i * 10) for i in range(12)]
    files = [file_spec(filename=f"img-{i}.png", size=len(c)) for i, c in enumerate(contents)]
    body = alice.post("/uploads/batch", json={"files": files, "networkType": "wifi"}).json
    assert body["successful"] == 12
    for upload, content in zip(body["uploads"], contents, strict=True):
        assert put(upload, content).status_code == 200
        assert alice.post(f"/uploads/{upload['uploadId']}/complete").json["size"] == len(content)
        assert s3_server.get_object(Bucket=BUCKET, Key=upload["key"])["Body"].read() == content


def test_a_signed_url_cannot_overwrite_the_object_it_wrote(
    alice: UserClient, s3_server: Any
) -> None:
    first, second = png_bytes(extra=64), png_bytes(extra=64).replace(b"\x00", b"\x01")
    signed = alice.post("/uploads", json=file_spec(size=len(first))).json
    assert signed["headers"]["If-None-Match"] == "*"
    assert put(signed, first).status_code == 200
    assert alice.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200
    # The same URL, still valid, replayed with other bytes of the same size: refused.
    replay = put(signed, second)
    assert replay.status_code == 412, replay.text
    assert "PreconditionFailed" in replay.text
    assert s3_server.get_object(Bucket=BUCKET, Key=signed["key"])["Body"].read() == first


def test_without_create_only_a_signed_url_overwrites(
    s3_server: Any, moto_server: str, redis_backend: RedisStateBackend
) -> None:
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL=moto_server, OBITOX_CREATE_ONLY=False)
    alice = UserClient(app, "alice")
    first, second = png_bytes(extra=64), png_bytes(extra=64).replace(b"\x00", b"\x01")
    signed = alice.post("/uploads", json=file_spec(size=len(first))).json
    assert "If-None-Match" not in signed["headers"]
    assert put(signed, first).status_code == 200
    assert put(signed, second).status_code == 200
    assert s3_server.get_object(Bucket=BUCKET, Key=signed["key"])["Body"].read() == second


def test_disguised_executable_is_removed(alice: UserClient, s3_server: Any) -> None:
    signed = alice.post("/uploads", json=file_spec(size=len(EXE))).json
    assert put(signed, EXE).status_code == 200
    response = alice.post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 422
    assert response.json["error"] == "CONTENT_MISMATCH"
    assert s3_server.list_objects_v2(Bucket=BUCKET, Prefix=signed["key"]).get("KeyCount") == 0


def test_verification_reads_only_the_first_bytes(
    alice: UserClient, s3_server: Any, e2e_app: Flask
) -> None:
    content = png_bytes(extra=3 * 1024 * 1024)
    signed = alice.post("/uploads", json=file_spec(size=len(content))).json
    assert put(signed, content).status_code == 200
    storage = e2e_app.extensions["obitox"].service.storage_for("alice")
    ranges: list[str | None] = []
    # What botocore really puts on the wire for GetObject.
    storage.client.meta.events.register(
        "before-send.s3.GetObject", lambda request, **_: ranges.append(request.headers.get("Range"))
    )
    assert alice.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200
    assert [r.decode() if isinstance(r, bytes) else r for r in ranges] == ["bytes=0-4095"]


def test_state_down_answers_503(s3_server: Any, moto_server: str) -> None:
    app, _ = make_app(
        RedisStateBackend.from_url("redis://127.0.0.1:1/0"), OBITOX_ENDPOINT_URL=moto_server
    )
    client = UserClient(app, "alice")
    for response in (
        client.post("/uploads", json=file_spec()),
        client.post("/uploads/batch", json={"files": [file_spec()]}),
        client.get("/uploads/abc"),
        client.post("/uploads/abc/complete"),
    ):
        assert response.status_code == 503
        assert response.json["error"] == "STATE_UNAVAILABLE"


def test_storage_down_answers_503(
    redis_backend: RedisStateBackend,
    moto_server: str,
    s3_server: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL=moto_server)
    client = UserClient(app, "alice")
    signed = client.post("/uploads", json=file_spec()).json
    dead, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL="http://127.0.0.1:1")
    response = UserClient(dead, "alice").post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 503
    assert response.json["error"] == "STORAGE_UNAVAILABLE"
    # The endpoint is named in the server's log, never to the client.
    assert "127.0.0.1:1" not in response.get_data(as_text=True)
    assert any("127.0.0.1:1" in r.getMessage() for r in caplog.records)
    # Nothing changed: once storage is back, the upload completes normally.
    assert client.get(f"/uploads/{signed['uploadId']}").json["status"] == "pending"


def test_concurrent_completes_have_one_winner(alice: UserClient, e2e_app: Flask) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from flask_obitox import signals

    content = png_bytes()
    signed = alice.post("/uploads", json=file_spec(size=len(content))).json
    assert put(signed, content).status_code == 200
    completions: list[str] = []

    def on_completed(sender: Any, upload: Any, **_: Any) -> None:
        completions.append(upload.upload_id)

    with (
        signals.upload_completed.connected_to(on_completed, e2e_app),
        ThreadPoolExecutor(12) as pool,
    ):
        answers = list(
            pool.map(
                lambda _: UserClient(e2e_app, "alice").post(
                    f"/uploads/{signed['uploadId']}/complete"
                ),
                range(12),
            )
        )
    assert {a.status_code for a in answers} == {200}
    assert len({a.get_data() for a in answers}) == 1
    assert completions == [signed["uploadId"]]


def test_missing_bucket_is_503_not_upload_not_complete(
    redis_backend: RedisStateBackend, moto_server: str, s3_server: Any
) -> None:
    app, _ = make_app(
        redis_backend, OBITOX_ENDPOINT_URL=moto_server, OBITOX_BUCKET="no-such-bucket"
    )
    client = UserClient(app, "alice")
    signed = client.post("/uploads", json=file_spec()).json
    response = client.post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 503
    assert response.json["error"] == "STORAGE_UNAVAILABLE"


def test_no_credentials_is_503(
    redis_backend: RedisStateBackend, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    app, _ = make_app(
        redis_backend,
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_AWS_ACCESS_KEY_ID=None,
        OBITOX_AWS_SECRET_ACCESS_KEY=None,
    )
    response = UserClient(app, "alice").post("/uploads", json=file_spec())
    assert response.status_code == 503
    assert response.json["error"] == "STORAGE_UNAVAILABLE"


def test_a_failed_delete_is_retried_by_the_next_complete(
    alice: UserClient, s3_server: Any, e2e_app: Flask
) -> None:
    from flask_obitox import StorageUnavailable, signals

    signed = alice.post("/uploads", json=file_spec(size=len(EXE))).json
    assert put(signed, EXE).status_code == 200
    storage = e2e_app.extensions["obitox"].service.storage_for("alice")
    real_delete = storage.delete

    def broken_delete(key: str) -> None:
        raise StorageUnavailable("storage went away")

    rejections: list[Any] = []
    with signals.upload_rejected.connected_to(lambda sender, **kw: rejections.append(kw), e2e_app):
        storage.delete = broken_delete  # type: ignore[method-assign]
        first = alice.post(f"/uploads/{signed['uploadId']}/complete")
        assert first.status_code == 503
        assert alice.get(f"/uploads/{signed['uploadId']}").json["status"] == "rejected"
        storage.delete = real_delete  # type: ignore[method-assign]
        second = alice.post(f"/uploads/{signed['uploadId']}/complete")
    assert second.status_code == 422
    assert second.json["error"] == "CONTENT_MISMATCH"
    assert s3_server.list_objects_v2(Bucket=BUCKET, Prefix=signed["key"]).get("KeyCount") == 0
    assert len(rejections) == 1


def test_an_object_replaced_during_verification_is_not_judged(
    alice: UserClient, s3_server: Any, e2e_app: Flask
) -> None:
    content = png_bytes()
    signed = alice.post("/uploads", json=file_spec(size=len(content))).json
    assert put(signed, content).status_code == 200
    storage = e2e_app.extensions["obitox"].service.storage_for("alice")
    real_head = storage.head

    def head_then_replace(key: str) -> Any:
        info = real_head(key)
        s3_server.put_object(
            Bucket=BUCKET, Key=key, Body=EXE[: len(content)].ljust(len(content), b"\0")
        )
        return info

    storage.head = head_then_replace  # type: ignore[method-assign]
    response = alice.post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 409
    assert response.json["error"] == "UPLOAD_NOT_COMPLETE"
    storage.head = real_head  # type: ignore[method-assign]
    final = alice.post(f"/uploads/{signed['uploadId']}/complete")
    assert final.status_code == 422  # the replacement is judged on its own bytes
