"""Uppy/Companion routes (``<prefix>/s3``): real bytes to a moto S3 server, real Redis
state, the same identity, ownership, validation and signals as the native routes."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from botocore.config import Config
from botocore_clock import frozen_botocore_clock
from conftest import BUCKET, CREDENTIALS, REGION, UserClient, make_app
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st
from test_multipart import content_of
from test_uploads import EXE, png_bytes

from flask_obitox import RedisStateBackend
from flask_obitox.storage.post import _policy_document, presign_post
from flask_obitox.storage.signer import SigV4Presigner

MiB = 1024 * 1024


@pytest.fixture
def e2e_app(s3_server: Any, moto_server: str, e2e_state: RedisStateBackend) -> Flask:
    app, _ = make_app(
        e2e_state,
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_MAX_FILE_SIZE=2 * MiB,
        OBITOX_MAX_MULTIPART_SIZE=64 * MiB,
        OBITOX_CORS_ORIGINS=["https://app.example"],
    )
    return app


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


def post_form(answer: dict[str, Any], data: bytes) -> requests.Response:
    """What Uppy does with /s3/params: a multipart form, ``file`` last."""
    return requests.post(
        answer["url"],
        data=answer["fields"],
        files={"file": ("blob", data, answer["fields"]["Content-Type"])},
        timeout=10,
    )


def sha256_of(s3: Any, key: str) -> str:
    return hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()


# -- presigned POST ------------------------------------------------------------------


def test_params_answers_a_presigned_post_with_the_server_limits(alice: UserClient) -> None:
    response = alice.get(
        "/s3/params?filename=cat.png&type=image/png&metadata[album]=summer&metadata[name]=cat.png"
    )
    assert response.status_code == 200, response.json
    answer = response.json
    assert answer["method"] == "POST"
    assert answer["url"].endswith(f"/{BUCKET}")
    fields = answer["fields"]
    assert fields["key"].startswith("uploads/")
    assert fields["key"].endswith("/cat.png")
    assert fields["Content-Type"] == "image/png"
    assert fields["x-amz-meta-album"] == "summer"
    assert "x-amz-meta-name" not in fields  # Uppy's own field, not metadata
    import base64
    import json

    policy = json.loads(base64.b64decode(fields["policy"]))
    assert ["content-length-range", 0, 2 * MiB] in policy["conditions"]
    assert {"key": fields["key"]} in policy["conditions"]
    assert not any("checksum" in name for name in fields)


def test_post_upload_then_complete(alice: UserClient, s3_server: Any, events: list[Any]) -> None:
    answer = alice.get("/s3/params?filename=cat.png&type=image/png").json
    data = png_bytes() + b"x" * 1000
    assert post_form(answer, data).status_code in (200, 204)
    key = answer["fields"]["key"]
    assert sha256_of(s3_server, key) == hashlib.sha256(data).hexdigest()
    done = alice.post(f"/s3/complete?key={key}")
    assert done.status_code == 200, done.json
    assert done.json["status"] == "completed"
    assert done.json["size"] == len(data)
    again = alice.post(f"/s3/complete?key={key}")
    assert again.json == done.json
    # No processor is registered: the upload is ready as it completes.
    assert names(events) == ["upload_signed", "upload_completed", "upload_ready"]
    upload_id = key.split("/")[1]
    assert alice.get(f"/uploads/{upload_id}").json["size"] == len(data)


def test_post_complete_rejects_a_body_that_is_not_what_was_declared(
    alice: UserClient, s3_server: Any, events: list[Any]
) -> None:
    answer = alice.get("/s3/params?filename=cat.png&type=image/png").json
    assert post_form(answer, b"MZ" + b"\0" * 500).status_code in (200, 204)
    key = answer["fields"]["key"]
    response = alice.post(f"/s3/complete?key={key}")
    assert response.status_code == 422
    assert response.json["error"] == "CONTENT_MISMATCH"
    assert "Contents" not in s3_server.list_objects_v2(Bucket=BUCKET, Prefix=key)
    assert names(events)[-1] == "upload_rejected"


def test_post_complete_of_another_owner_is_404(alice: UserClient, mallory: UserClient) -> None:
    key = alice.get("/s3/params?filename=cat.png&type=image/png").json["fields"]["key"]
    assert mallory.post(f"/s3/complete?key={key}").status_code == 404
    assert alice.post("/s3/complete?key=uploads/nothing/cat.png").status_code == 404
    assert alice.post("/s3/complete?key=elsewhere/cat.png").status_code == 404


@pytest.mark.parametrize(
    ("query", "code", "status"),
    [
        ("filename=setup.exe&type=application/octet-stream", "VALIDATION_FAILED", 422),
        ("filename=a.png&type=not a type", "INVALID_INPUT", 400),
        ("type=image/png", "INVALID_INPUT", 400),
        ("filename=a.png&type=image/png&metadata[bad key]=x", "INVALID_INPUT", 400),
        ("filename=a.png&type=image/png&metadata[album]=a&metadata[album]=b", "INVALID_INPUT", 400),
        (
            "filename=a.png&type=image/png&metadata[profile]=&metadata[profile]=x",
            "INVALID_INPUT",
            400,
        ),
    ],
)
def test_params_validation(
    alice: UserClient, events: list[Any], query: str, code: str, status: int
) -> None:
    response = alice.get(f"/s3/params?{query}")
    assert response.status_code == status
    assert response.json["error"] == code
    assert "upload_signed" not in names(events)


def test_routes_need_an_identity(e2e_app: Flask) -> None:
    anonymous = UserClient(e2e_app, None)
    assert anonymous.get("/s3/params?filename=a.png&type=image/png").status_code == 401
    assert anonymous.post("/s3/multipart", json={"filename": "a.png"}).status_code == 401


#: An upload profile's storage headers as POST policy fields.
PROFILE_FIELDS = {
    "Cache-Control": "public, max-age=60",
    "Content-Disposition": "attachment",
    "x-amz-server-side-encryption": "aws:kms",
    "x-amz-server-side-encryption-aws-kms-key-id": "alias/docs",
    "x-amz-storage-class": "STANDARD_IA",
    "acl": "private",
}


@pytest.mark.parametrize("extra", [{}, PROFILE_FIELDS], ids=["plain", "profile"])
def test_presign_post_is_botocore_byte_for_byte(extra: dict[str, str]) -> None:
    now = datetime.datetime(2024, 5, 17, 12, 34, 56)
    for endpoint, style in [
        (None, "auto"),
        ("http://127.0.0.1:9000", "path"),
        ("https://acct.r2.example.com", "virtual"),
    ]:
        client = boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=endpoint,
            config=Config(signature_version="s3v4", s3={"addressing_style": style}),  # type: ignore[arg-type]
            **CREDENTIALS,
        )
        key = "uploads/a b/ünï €.png"
        fields = {"Content-Type": "image/png", "x-amz-meta-album": "a  b", **extra}
        conditions: list[Any] = [
            ["content-length-range", 3, 999],
            *({k: v} for k, v in fields.items()),
        ]
        ours = presign_post(
            SigV4Presigner(client),
            "bkt",
            key,
            content_type="image/png",
            metadata={"album": "a  b"},
            min_size=3,
            max_size=999,
            expires_in=600,
            extra_fields=extra,
            now=now,
        )
        with frozen_botocore_clock(now):
            theirs = client.generate_presigned_post(
                "bkt", key, Fields=dict(fields), Conditions=conditions, ExpiresIn=600
            )
        assert ours.url == theirs["url"]
        assert ours.fields == theirs["fields"]


@given(
    st.text(),
    st.integers(0, 2**63),
    st.integers(0, 2**63),
    st.lists(st.tuples(st.text(), st.text()), max_size=8),
)
def test_the_policy_document_is_json_dumps(
    expiration: str, low: int, high: int, conditions: list[tuple[str, str]]
) -> None:
    document = {
        "expiration": expiration,
        "conditions": [["content-length-range", low, high], *({k: v} for k, v in conditions)],
    }
    assert _policy_document(expiration, low, high, conditions) == json.dumps(document)


# -- multipart -----------------------------------------------------------------------


def start(client: UserClient, filename: str = "movie.png", **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/s3/multipart",
        json={"filename": filename, "type": "image/png", "metadata": {"name": filename}, **extra},
    )
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json
    return body


def put_part(client: UserClient, upload: dict[str, Any], number: int, data: bytes) -> str:
    answer = client.get(f"/s3/multipart/{upload['uploadId']}/{number}?key={upload['key']}")
    assert answer.status_code == 200, answer.json
    url = answer.json["url"]
    query = parse_qs(urlsplit(url).query)
    assert "content-length" not in query["X-Amz-SignedHeaders"][0]  # the browser sizes parts
    assert not any("checksum" in name.lower() for name in query)
    response = requests.put(url, data=data, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["ETag"]


def test_multipart_upload_like_uppy(alice: UserClient, s3_server: Any, events: list[Any]) -> None:
    data = content_of(12 * MiB)
    upload = start(alice)
    assert upload["bucket"] == BUCKET
    assert upload["key"].endswith("/movie.png")
    chunks = [data[i : i + 5 * MiB] for i in range(0, len(data), 5 * MiB)]
    etags = [put_part(alice, upload, n, chunk) for n, chunk in enumerate(chunks[:2], 1)]
    listed = alice.get(f"/s3/multipart/{upload['uploadId']}?key={upload['key']}")
    assert listed.status_code == 200
    assert [(p["PartNumber"], p["Size"]) for p in listed.json] == [(1, 5 * MiB), (2, 5 * MiB)]
    batch = alice.get(
        f"/s3/multipart/{upload['uploadId']}/batch?key={upload['key']}&partNumbers=3"
    ).json
    response = requests.put(batch["presignedUrls"]["3"], data=chunks[2], timeout=30)
    etags.append(response.headers["ETag"])
    parts = [
        {"PartNumber": n, "ETag": etag if n % 2 else etag.strip('"')}  # quoted or not
        for n, etag in enumerate(etags, 1)
    ]
    done = alice.post(
        f"/s3/multipart/{upload['uploadId']}/complete?key={upload['key']}", json={"parts": parts}
    )
    assert done.status_code == 200, done.json
    assert done.json["key"] == upload["key"]
    assert done.json["bucket"] == BUCKET
    assert done.json["location"].endswith(upload["key"])
    assert sha256_of(s3_server, upload["key"]) == hashlib.sha256(data).hexdigest()
    assert names(events) == [
        "multipart_initiated",
        "multipart_resumed",
        "upload_completed",
        "upload_ready",
    ]
    completed = events[-2][1]["upload"]
    assert completed.size == len(data)
    status = alice.get(f"/uploads/{upload['uploadId']}").json
    assert status["status"] == "completed"
    assert status["size"] == len(data)


def test_multipart_other_owner_or_wrong_key_is_404(alice: UserClient, mallory: UserClient) -> None:
    upload = start(alice)
    uid, key = upload["uploadId"], upload["key"]
    for path in (f"/s3/multipart/{uid}?key={key}", f"/s3/multipart/{uid}/1?key={key}"):
        assert mallory.get(path).status_code == 404
    assert mallory.delete(f"/s3/multipart/{uid}?key={key}").status_code == 404
    other_key = key.replace("movie", "other")
    assert alice.get(f"/s3/multipart/{uid}/1?key={other_key}").status_code == 404
    assert alice.get(f"/s3/multipart/{uid}/1").status_code == 400  # no key at all
    assert alice.get(f"/s3/multipart/nope/1?key={key}").status_code == 404


@pytest.mark.parametrize("number", ["0", "10001", "-1", "x", "1.5"])
def test_part_numbers_outside_the_range_are_400(alice: UserClient, number: str) -> None:
    upload = start(alice)
    response = alice.get(f"/s3/multipart/{upload['uploadId']}/{number}?key={upload['key']}")
    assert response.status_code == 400
    assert response.json["error"] == "INVALID_INPUT"
    batch = alice.get(
        f"/s3/multipart/{upload['uploadId']}/batch?key={upload['key']}&partNumbers=1,{number}"
    )
    assert batch.status_code == 400


def test_complete_refuses_parts_storage_does_not_hold(alice: UserClient) -> None:
    upload = start(alice)
    etag = put_part(alice, upload, 1, content_of(5 * MiB))
    path = f"/s3/multipart/{upload['uploadId']}/complete?key={upload['key']}"
    wrong = alice.post(path, json={"parts": [{"PartNumber": 1, "ETag": '"00"'}]})
    assert wrong.status_code == 422
    assert wrong.json["error"] == "INVALID_PARTS"
    gap = alice.post(path, json={"parts": [{"PartNumber": 2, "ETag": etag}]})
    assert gap.status_code == 422
    for body in ({}, {"parts": []}, {"parts": [{"PartNumber": 0, "ETag": etag}]}):
        assert alice.post(path, json=body).status_code == 400


def test_complete_verifies_the_content(alice: UserClient, events: list[Any]) -> None:
    upload = start(alice)
    etag = put_part(alice, upload, 1, content_of(1 * MiB))
    path = f"/s3/multipart/{upload['uploadId']}/complete?key={upload['key']}"
    done = alice.post(path, json={"parts": [{"PartNumber": 1, "ETag": etag}]})
    assert done.status_code == 200
    # An executable under a PNG name: the service's verification catches it.
    evil = start(alice, "evil.png")
    etag = put_part(alice, evil, 1, EXE)
    path = f"/s3/multipart/{evil['uploadId']}/complete?key={evil['key']}"
    rejected = alice.post(path, json={"parts": [{"PartNumber": 1, "ETag": etag}]})
    assert rejected.status_code == 422
    assert rejected.json["error"] == "CONTENT_MISMATCH"
    assert names(events)[-1] == "upload_rejected"


def test_complete_enforces_the_size_limit(
    s3_server: Any, moto_server: str, redis_backend: RedisStateBackend
) -> None:
    app, _ = make_app(
        redis_backend, OBITOX_ENDPOINT_URL=moto_server, OBITOX_MAX_MULTIPART_SIZE=6 * MiB
    )
    alice = UserClient(app, "alice")
    upload = start(alice)
    data = content_of(7 * MiB)
    etags = [
        put_part(alice, upload, 1, data[: 5 * MiB]),
        put_part(alice, upload, 2, data[5 * MiB :]),
    ]
    path = f"/s3/multipart/{upload['uploadId']}/complete?key={upload['key']}"
    parts = [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
    response = alice.post(path, json={"parts": parts})
    assert response.status_code == 413
    assert response.json["error"] == "FILE_TOO_LARGE"
    assert "Contents" not in s3_server.list_objects_v2(Bucket=BUCKET)
    # The upload is settled: its parts are freed and a repeat answers the rejection.
    assert s3_server.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    again = alice.post(path, json={"parts": parts})
    assert again.status_code == 422
    assert again.json["error"] == "CONTENT_MISMATCH"
    assert alice.get(f"/uploads/{upload['uploadId']}").json["status"] == "rejected"
    # Part numbers no upload within the limit needs (6 MiB: at most 2 parts) are refused.
    other = start(alice)
    beyond = alice.get(f"/s3/multipart/{other['uploadId']}/3?key={other['key']}")
    assert beyond.status_code == 400
    assert beyond.json["details"]["max"] == 2


@pytest.mark.parametrize("number", ["\u00b2", "9" * 5000, "٣", True, None, 1.0])
def test_odd_part_numbers_at_complete_are_400(alice: UserClient, number: Any) -> None:
    upload = start(alice)
    path = f"/s3/multipart/{upload['uploadId']}/complete?key={upload['key']}"
    response = alice.post(path, json={"parts": [{"PartNumber": number, "ETag": "x"}]})
    assert response.status_code == 400, response.json
    assert response.json["error"] == "INVALID_INPUT"


def test_post_policy_lives_as_long_as_a_post_upload_needs(alice: UserClient) -> None:
    """Not a day: until the policy expires, the same form could replace the object."""
    answer = alice.get("/s3/params?filename=cat.png&type=image/png").json
    assert answer["expires"] < 86400


def test_multipart_validation_and_dangerous_files(alice: UserClient, events: list[Any]) -> None:
    response = alice.post("/s3/multipart", json={"filename": "run.exe", "type": "image/png"})
    assert response.status_code == 422
    assert response.json["error"] == "VALIDATION_FAILED"
    assert alice.post("/s3/multipart", json={"type": "image/png"}).status_code == 400
    assert alice.post("/s3/multipart", json=[1]).status_code == 400
    assert (
        alice.post("/s3/multipart", data="x", headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    assert names(events) == ["upload_rejected"]


def test_abort_then_everything_answers_aborted(
    alice: UserClient, s3_server: Any, events: list[Any]
) -> None:
    upload = start(alice)
    uid, key = upload["uploadId"], upload["key"]
    put_part(alice, upload, 1, content_of(5 * MiB))
    response = alice.delete(f"/s3/multipart/{uid}?key={key}")
    assert response.status_code == 200
    assert response.json == {}
    assert alice.delete(f"/s3/multipart/{uid}?key={key}").status_code == 200  # idempotent
    assert alice.get(f"/s3/multipart/{uid}/2?key={key}").status_code == 409
    assert s3_server.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert names(events).count("upload_aborted") == 1


def test_native_routes_work_on_a_companion_upload(alice: UserClient) -> None:
    """The client-chosen part layout is one domain concept: the native routes sign,
    resume and complete such an upload too (its size checked at completion)."""
    upload = start(alice)
    uid = upload["uploadId"]
    put_part(alice, upload, 1, content_of(5 * MiB))
    signed = alice.post(f"/multipart/{uid}/parts", json={"partNumbers": [1]})
    assert signed.status_code == 200
    assert signed.json["parts"][0]["size"] is None  # the client chose it: nothing signed
    resumed = alice.get(f"/multipart/{uid}")
    assert resumed.status_code == 200
    assert [p["partNumber"] for p in resumed.json["uploadedParts"]] == [1]
    completed = alice.post(f"/multipart/{uid}/complete")
    assert completed.status_code == 200, completed.json
    assert completed.json["size"] == 5 * MiB
    assert alice.get(f"/uploads/{uid}").json["size"] == 5 * MiB


def test_routes_can_be_turned_off(s3: Any) -> None:
    app, _ = make_app(OBITOX_COMPANION_ROUTES=False)
    response = UserClient(app, "alice").get("/s3/params?filename=a.png&type=image/png")
    assert response.status_code == 404
    assert response.json["error"] == "NOT_FOUND"


# -- CORS ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/s3/multipart"), ("DELETE", "/s3/multipart/x")]
)
def test_preflight_for_configured_origins(e2e_app: Flask, method: str, path: str) -> None:
    client = e2e_app.test_client()
    response = client.options(
        f"/obitox{path}",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert method in response.headers["Access-Control-Allow-Methods"]
    assert "content-type" in response.headers["Access-Control-Allow-Headers"].lower()
    other = client.options(
        f"/obitox{path}",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": method},
    )
    assert "Access-Control-Allow-Origin" not in other.headers


def test_errors_carry_cors_headers_too(e2e_app: Flask) -> None:
    response = e2e_app.test_client().get(
        "/obitox/s3/params?filename=a.png&type=image/png", headers={"Origin": "https://app.example"}
    )
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_no_cors_without_configured_origins(s3: Any) -> None:
    app, _ = make_app()
    response = app.test_client().options(
        "/obitox/s3/multipart",
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def test_sign_part_of_a_native_upload_reports_its_real_lifetime(alice: UserClient) -> None:
    native = alice.post(
        "/multipart", json={"filename": "a.png", "contentType": "image/png", "size": 11 * MiB}
    ).json
    answer = alice.get(f"/s3/multipart/{native['uploadId']}/1?key={native['key']}").json
    signed = int(parse_qs(urlsplit(answer["url"]).query)["X-Amz-Expires"][0])
    assert answer["expires"] == signed
    assert "content-length" in parse_qs(urlsplit(answer["url"]).query)["X-Amz-SignedHeaders"][0]
