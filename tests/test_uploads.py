"""Signed single uploads, completion, status and ownership (in-process moto)."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import BUCKET, UserClient, file_spec, make_app
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_obitox import MemoryStateBackend, signals


def png_bytes(extra: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return body + b"\x00" * extra


EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200


def signed_query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


class Recorder:
    """Collects what a signal sends, for one app."""

    def __init__(self, signal: Any, app: Flask) -> None:
        self.calls: list[dict[str, Any]] = []
        self.app = app
        signal.connect(self.receive, sender=app, weak=False)
        self.signal = signal

    def receive(self, sender: Any, **kwargs: Any) -> None:
        assert sender is self.app
        self.calls.append(kwargs)

    def close(self) -> None:
        self.signal.disconnect(self.receive)


@pytest.fixture
def recorder(app: Flask) -> Any:
    made: list[Recorder] = []

    def make(signal: Any) -> Recorder:
        made.append(Recorder(signal, app))
        return made[-1]

    yield make
    for rec in made:
        rec.close()


# -- signing --------------------------------------------------------------------------


def test_sign_single_upload_returns_the_contract_fields(client: UserClient, recorder: Any) -> None:
    signed = recorder(signals.upload_signed)
    digest = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
    response = client.post(
        "/uploads",
        json=file_spec(checksumSha256=digest, metadata={"Album": "Summer 2024"}),
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert set(body) == {
        "uploadId",
        "key",
        "bucket",
        "method",
        "url",
        "headers",
        "expiresIn",
        "expiresAt",
    }
    assert body["method"] == "PUT"
    assert body["bucket"] == BUCKET
    assert body["key"] == f"uploads/{body['uploadId']}/photo.png"
    assert len(body["uploadId"]) >= 22  # 128 random bits, url-safe
    assert body["headers"] == {
        "Content-Type": "image/png",
        "If-None-Match": "*",  # OBITOX_CREATE_ONLY: the URL cannot overwrite
        "x-amz-checksum-sha256": digest,
        "x-amz-meta-album": "Summer 2024",
    }
    query = signed_query(body["url"])
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-SignedHeaders"] == [
        "content-length;content-type;host;if-none-match;x-amz-checksum-sha256;x-amz-meta-album"
    ]
    assert query["X-Amz-Expires"] == [str(body["expiresIn"])]
    assert body["expiresAt"].endswith("Z")
    assert [c["upload"].upload_id for c in signed.calls] == [body["uploadId"]]


def test_expiry_grows_with_size_and_slow_networks(client: UserClient) -> None:
    small = client.post("/uploads", json=file_spec(size=1000, networkType="wifi")).json
    large = client.post("/uploads", json=file_spec(size=2 * 1024**3, networkType="wifi")).json
    slow = client.post("/uploads", json=file_spec(size=50 * 1024**2, networkType="2g")).json
    assert small["expiresIn"] < large["expiresIn"]
    assert slow["expiresIn"] > small["expiresIn"]
    asked = client.post("/uploads", json=file_spec(size=2 * 1024**3, expiresIn=30 * 24 * 3600))
    assert asked.json["expiresIn"] == 24 * 3600  # clamped to OBITOX_EXPIRY_MAX
    assert client.post("/uploads", json=file_spec(expiresIn=5)).json["expiresIn"] == 60


def test_a_client_cannot_ask_a_small_file_a_long_lived_url(client: UserClient) -> None:
    """expiresIn may lengthen a URL only as far as the slowest network needs for the
    size: asking a day for 1 KB gets minutes (a leaked URL is replayable until then)."""
    asked = client.post("/uploads", json=file_spec(size=1000, expiresIn=10**9)).json
    estimate = client.post("/uploads", json=file_spec(size=1000, networkType="slow-2g")).json
    assert asked["expiresIn"] == estimate["expiresIn"] < 3600
    shorter = client.post("/uploads", json=file_spec(size=1000, expiresIn=120)).json
    assert shorter["expiresIn"] == 120


def test_filenames_cannot_leave_the_key_prefix(client: UserClient) -> None:
    for name in ("../../etc/passwd.png", "..\\..\\boot.png", "/abs/path.png", "a/../../b.png"):
        body = client.post("/uploads", json=file_spec(filename=name)).json
        assert body["key"].startswith(f"uploads/{body['uploadId']}/")
        assert "/" not in body["key"].removeprefix(f"uploads/{body['uploadId']}/")
        assert ".." not in body["key"].split("/")


def test_unicode_filenames_are_kept(client: UserClient) -> None:
    body = client.post("/uploads", json=file_spec(filename="résumé 日本.png")).json
    assert body["key"].endswith("/résumé 日本.png")


@pytest.mark.parametrize(
    ("spec", "status", "code"),
    [
        (file_spec(size=6 * 1024**3), 413, "FILE_TOO_LARGE"),
        (file_spec(size=10**40), 413, "FILE_TOO_LARGE"),
        (file_spec(size=-1), 400, "INVALID_INPUT"),
        (file_spec(size="12"), 400, "INVALID_INPUT"),
        (file_spec(size=1.5), 400, "INVALID_INPUT"),
        (file_spec(size=True), 400, "INVALID_INPUT"),
        (
            file_spec(filename="setup.exe", contentType="application/octet-stream"),
            422,
            "VALIDATION_FAILED",
        ),
        (file_spec(filename="invoice.pdf.exe"), 422, "VALIDATION_FAILED"),
        (file_spec(contentType="not a type"), 400, "INVALID_INPUT"),
        (file_spec(filename=""), 400, "INVALID_INPUT"),
        (file_spec(filename=".."), 422, "VALIDATION_FAILED"),
        (file_spec(metadata={"bad key": "v"}), 400, "INVALID_INPUT"),
        (file_spec(metadata={"k": "caf\u00e9"}), 400, "INVALID_INPUT"),
        (file_spec(metadata={"k": "v" * 3000}), 400, "INVALID_INPUT"),
        (file_spec(checksumSha256="not-base64"), 400, "INVALID_INPUT"),
        (file_spec(networkType="5g"), 400, "INVALID_INPUT"),
        (file_spec(unexpected=1), 400, "INVALID_INPUT"),
        ({"contentType": "image/png", "size": 1}, 400, "INVALID_INPUT"),
        ([file_spec()], 400, "INVALID_INPUT"),
        ("a string", 400, "INVALID_INPUT"),
    ],
)
def test_bad_single_requests_get_clear_errors_and_leave_no_state(
    app: Flask, client: UserClient, spec: Any, status: int, code: str
) -> None:
    response = client.post("/uploads", json=spec)
    assert response.status_code == status, response.json
    assert response.json["error"] == code
    assert response.json["message"]
    assert isinstance(response.json["details"], dict)
    state = app.extensions["obitox"].state
    assert isinstance(state, MemoryStateBackend)
    assert len(state) == 0


def test_rejection_fires_upload_rejected(client: UserClient, recorder: Any) -> None:
    rejected = recorder(signals.upload_rejected)
    client.post("/uploads", json=file_spec(filename="run.exe"))
    assert len(rejected.calls) == 1
    call = rejected.calls[0]
    assert call["stage"] == "validation"
    assert call["code"] == "VALIDATION_FAILED"
    assert call["filename"] == "run.exe"
    assert call["upload"] is None


def test_body_must_be_json(client: UserClient) -> None:
    form = client.post("/uploads", data={"filename": "a.png"})
    assert form.status_code == 415
    assert form.json["error"] == "UNSUPPORTED_MEDIA_TYPE"
    broken = client.post("/uploads", data="{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400
    assert broken.json["error"] == "INVALID_JSON"
    huge = client.post(
        "/uploads", data="[" + "1," * 600_000 + "1]", headers={"Content-Type": "application/json"}
    )
    assert huge.status_code == 413
    assert huge.json["error"] == "PAYLOAD_TOO_LARGE"


def test_client_validation_only_tightens(client: UserClient) -> None:
    wide = client.post(
        "/uploads", json=file_spec(size=6 * 1024**3, validation={"maxSizeMB": 100000})
    )
    assert wide.status_code == 413
    assert "OBITOX_MAX_FILE_SIZE" in wide.json["message"]
    narrow = client.post("/uploads", json=file_spec(size=2 * 1024**2, validation={"maxSizeMB": 1}))
    assert narrow.status_code == 413
    unblock = client.post(
        "/uploads", json=file_spec(filename="x.exe", validation={"blockExecutables": False})
    )
    assert unblock.status_code == 422
    types = client.post(
        "/uploads", json=file_spec(validation={"allowedTypes": ["application/pdf"]})
    )
    assert types.status_code == 422
    assert types.json["details"]["field"] == "contentType"


@pytest.mark.parametrize("config", [{"OBITOX_ALLOWED_CONTENT_TYPES": ["image/*"]}])
def test_server_allow_list_with_wildcards(client: UserClient) -> None:
    assert client.post("/uploads", json=file_spec(contentType="image/webp")).status_code == 201
    denied = client.post(
        "/uploads", json=file_spec(filename="a.pdf", contentType="application/pdf")
    )
    assert denied.status_code == 422
    widened = client.post(
        "/uploads",
        json=file_spec(
            filename="a.pdf", contentType="application/pdf", validation={"allowedTypes": ["*/*"]}
        ),
    )
    assert widened.status_code == 422


# -- identity -------------------------------------------------------------------------


def test_no_identity_means_401(app: Flask) -> None:
    anonymous = UserClient(app, None)
    response = anonymous.post("/uploads", json=file_spec())
    assert response.status_code == 401
    assert response.json["error"] == "UNAUTHENTICATED"
    assert anonymous.get("/uploads/whatever").status_code == 401


def test_no_identity_loader_means_401_and_a_warning(
    s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_obitox import ObitoX

    app = Flask("no_loader")
    app.config.update(OBITOX_BUCKET=BUCKET, OBITOX_STATE_BACKEND="memory://", TESTING=True)
    with caplog.at_level("WARNING", logger="flask_obitox"):
        ObitoX(app)
    assert any("identity_loader" in r.message for r in caplog.records)
    response = app.test_client().post("/obitox/uploads", json=file_spec())
    assert response.status_code == 401


def test_allow_anonymous_lets_everyone_in_as_one_owner(s3: Any) -> None:
    from flask_obitox import ObitoX

    app = Flask("anon")
    app.config.update(
        OBITOX_BUCKET=BUCKET,
        OBITOX_STATE_BACKEND="memory://",
        OBITOX_ALLOW_ANONYMOUS=True,
        TESTING=True,
    )
    ObitoX(app)
    client = app.test_client()
    upload_id = client.post("/obitox/uploads", json=file_spec()).json["uploadId"]
    assert client.get(f"/obitox/uploads/{upload_id}").json["status"] == "pending"


# -- completion -----------------------------------------------------------------------


def sign_and_put(client: UserClient, s3: Any, content: bytes, **spec: Any) -> dict[str, Any]:
    spec.setdefault("size", len(content))
    signed: dict[str, Any] = client.post("/uploads", json=file_spec(**spec)).json
    s3.put_object(
        Bucket=BUCKET,
        Key=signed["key"],
        Body=content,
        ContentType=spec.get("contentType", "image/png"),
    )
    return signed


def test_complete_verifies_and_is_idempotent(client: UserClient, s3: Any, recorder: Any) -> None:
    completed = recorder(signals.upload_completed)
    content = png_bytes(extra=100)
    signed = sign_and_put(client, s3, content)
    first = client.post(f"/uploads/{signed['uploadId']}/complete")
    assert first.status_code == 200, first.json
    assert first.json == {
        "uploadId": signed["uploadId"],
        "status": "completed",
        "key": signed["key"],
        "bucket": BUCKET,
        "size": len(content),
        "etag": hashlib.md5(content).hexdigest(),
        "contentType": "image/png",
    }
    second = client.post(f"/uploads/{signed['uploadId']}/complete")
    assert second.status_code == 200
    assert second.json == first.json
    assert len(completed.calls) == 1
    status = client.get(f"/uploads/{signed['uploadId']}").json
    assert status["status"] == "completed"
    assert status["etag"] == first.json["etag"]


def test_complete_before_upload_is_409(client: UserClient) -> None:
    upload_id = client.post("/uploads", json=file_spec()).json["uploadId"]
    response = client.post(f"/uploads/{upload_id}/complete")
    assert response.status_code == 409
    assert response.json["error"] == "UPLOAD_NOT_COMPLETE"
    assert client.get(f"/uploads/{upload_id}").json["status"] == "pending"


def test_executable_disguised_as_png_is_deleted_and_rejected(
    client: UserClient, s3: Any, recorder: Any
) -> None:
    rejected = recorder(signals.upload_rejected)
    completed = recorder(signals.upload_completed)
    signed = sign_and_put(client, s3, EXE)
    response = client.post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 422
    assert response.json["error"] == "CONTENT_MISMATCH"
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert client.get(f"/uploads/{signed['uploadId']}").json["status"] == "rejected"
    again = client.post(f"/uploads/{signed['uploadId']}/complete")
    assert again.status_code == 422
    assert again.json == response.json
    assert len(rejected.calls) == 1
    assert rejected.calls[0]["stage"] == "verification"
    assert rejected.calls[0]["upload"].upload_id == signed["uploadId"]
    assert completed.calls == []


def test_size_mismatch_is_rejected(client: UserClient, s3: Any) -> None:
    signed = client.post("/uploads", json=file_spec(size=5000)).json
    s3.put_object(Bucket=BUCKET, Key=signed["key"], Body=png_bytes())
    response = client.post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 422
    assert "size" in response.json["message"]


@pytest.mark.parametrize("config", [{"OBITOX_VERIFY_CONTENT": False}])
def test_verification_can_be_turned_off(client: UserClient, s3: Any) -> None:
    signed = sign_and_put(client, s3, EXE)
    assert client.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200


def test_text_without_magic_bytes_completes(client: UserClient, s3: Any) -> None:
    signed = sign_and_put(
        client, s3, b"hello, world\n", filename="notes.txt", contentType="text/plain"
    )
    assert client.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200


# -- ownership and unknown ids -----------------------------------------------------------


def test_another_owners_upload_is_404_everywhere(
    client: UserClient, other_client: UserClient, s3: Any
) -> None:
    signed = sign_and_put(client, s3, png_bytes())
    for response in (
        other_client.get(f"/uploads/{signed['uploadId']}"),
        other_client.post(f"/uploads/{signed['uploadId']}/complete"),
    ):
        assert response.status_code == 404
        assert response.json["error"] == "UPLOAD_NOT_FOUND"
    assert client.get(f"/uploads/{signed['uploadId']}").json["status"] == "pending"


def test_unknown_upload_is_404(client: UserClient) -> None:
    assert client.get("/uploads/nope").json["error"] == "UPLOAD_NOT_FOUND"
    assert client.post("/uploads/nope/complete").status_code == 404


def test_unknown_routes_and_methods_answer_json(client: UserClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json["error"] == "NOT_FOUND"
    wrong = client.get("/multipart")
    assert wrong.status_code == 405
    assert wrong.json["error"] == "METHOD_NOT_ALLOWED"


def test_expired_upload_answers_410(app: Flask, client: UserClient) -> None:
    upload_id = client.post("/uploads", json=file_spec()).json["uploadId"]
    state = app.extensions["obitox"].state
    state.update(upload_id, {"pending"}, expires_at=0.0)
    assert client.post(f"/uploads/{upload_id}/complete").status_code == 410
    assert client.post(f"/uploads/{upload_id}/complete").json["error"] == "UPLOAD_EXPIRED"
    status = client.get(f"/uploads/{upload_id}")
    assert status.status_code == 200
    assert status.json["status"] == "expired"


# -- extension wiring ---------------------------------------------------------------------


def test_init_app_twice_raises(app: Flask, obitox: Any) -> None:
    with pytest.raises(RuntimeError, match="already initialised"):
        obitox.init_app(app)


def test_one_instance_serves_several_apps(s3: Any) -> None:
    from flask_obitox import ObitoX

    shared = ObitoX()
    shared.identity_loader(lambda: "alice")
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config.update(OBITOX_BUCKET=BUCKET, OBITOX_STATE_BACKEND="memory://", TESTING=True)
        shared.init_app(app)
        apps.append(app)
    ids = [a.test_client().post("/obitox/uploads", json=file_spec()).json["uploadId"] for a in apps]
    assert apps[0].test_client().get(f"/obitox/uploads/{ids[0]}").status_code == 200
    assert apps[0].test_client().get(f"/obitox/uploads/{ids[1]}").status_code == 404


def test_key_builder_is_used_and_kept_under_prefix(s3: Any) -> None:
    app, obitox = make_app(MemoryStateBackend())

    @obitox.key_builder
    def build(owner: str, filename: str, upload_id: str, metadata: dict[str, str]) -> str:
        return f"uploads/{owner}/{upload_id}-{filename}"

    body = UserClient(app, "alice").post("/uploads", json=file_spec()).json
    assert body["key"] == f"uploads/alice/{body['uploadId']}-photo.png"

    @obitox.key_builder
    def escape(owner: str, filename: str, upload_id: str, metadata: dict[str, str]) -> str:
        return f"uploads/../secrets/{filename}"

    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = UserClient(app, "alice").post("/uploads", json=file_spec())
    assert response.status_code == 500
    assert response.json["error"] == "INTERNAL_ERROR"
    assert "Traceback" not in response.get_data(as_text=True)


def test_complete_requires_a_json_request(client: UserClient, s3: Any) -> None:
    signed = sign_and_put(client, s3, png_bytes())
    path = f"/uploads/{signed['uploadId']}/complete"
    form = client.post(path, data={"x": "1"})
    assert form.status_code == 415
    assert client.get(f"/uploads/{signed['uploadId']}").json["status"] == "pending"
    assert (
        client.post(path, data="[]", headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    assert client.post(path, json={"unexpected": 1}).status_code == 400
    empty = client.post(path, data="", headers={"Content-Type": "application/json"})
    assert empty.status_code == 200


def test_non_ascii_owner_ids_work(s3: Any, app: Flask) -> None:
    owner = UserClient(app, "jos\u00e9")
    owner.user = "jos\u00e9".encode().decode("latin-1")  # headers carry latin-1
    signed = owner.post("/uploads", json=file_spec())
    assert signed.status_code == 201
    assert owner.get(f"/uploads/{signed.json['uploadId']}").status_code == 200
    assert UserClient(app, "jose").get(f"/uploads/{signed.json['uploadId']}").status_code == 404


def test_storage_resolver_sends_each_tenant_to_its_bucket(s3: Any) -> None:
    s3.create_bucket(Bucket="tenant-acme")
    app, obitox = make_app(MemoryStateBackend())

    @obitox.storage_resolver
    def tenant_storage(owner: str) -> dict[str, str] | None:
        return {"bucket": "tenant-acme"} if owner == "acme" else None

    acme, other = UserClient(app, "acme"), UserClient(app, "alice")
    signed = acme.post("/uploads", json=file_spec(size=len(png_bytes()))).json
    assert signed["bucket"] == "tenant-acme"
    assert "/tenant-acme/" in signed["url"] or "tenant-acme." in signed["url"]
    assert other.post("/uploads", json=file_spec()).json["bucket"] == BUCKET
    s3.put_object(Bucket="tenant-acme", Key=signed["key"], Body=png_bytes())
    done = acme.post(f"/uploads/{signed['uploadId']}/complete")
    assert done.status_code == 200, done.json
    assert done.json["bucket"] == "tenant-acme"


ascii_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content_type=st.one_of(
        st.sampled_from(
            [
                "image/png",
                "text/plain; charset=utf-8",
                "application/x-www-form-urlencoded; charset=utf-8",
                "image/png ;a=b",
            ]
        ),
        st.from_regex(r"\Aimage/[a-z]{1,8}( ?;[ -~]{0,12})?\Z"),
    ),
    metadata=st.dictionaries(st.from_regex(r"\A[A-Za-z0-9_-]{1,12}\Z"), ascii_text, max_size=3),
    checksum=st.none() | st.just(base64.b64encode(b"x" * 32).decode()),
)
def test_returned_headers_are_exactly_the_signed_headers(
    client: UserClient, content_type: str, metadata: dict[str, str], checksum: str | None
) -> None:
    spec = file_spec(filename="a.bin", contentType=content_type, metadata=metadata)
    if checksum:
        spec["checksumSha256"] = checksum
    response = client.post("/uploads", json=spec)
    if response.status_code != 201:
        assert response.status_code in (400, 422), response.json
        return
    body = response.json
    signed = signed_query(body["url"])["X-Amz-SignedHeaders"][0].split(";")
    told = {name.lower() for name in body["headers"]}
    assert sorted(told | {"content-length", "host"}) == signed
    for value in body["headers"].values():
        # What fetch() and requests can send: visible Latin-1, no control characters.
        assert all(0x20 <= ord(c) <= 0x7E for c in value), value


@pytest.mark.parametrize("identity", [False, True, ""])
def test_a_falsy_or_boolean_identity_is_unauthenticated(s3: Any, identity: Any) -> None:
    app, obitox = make_app(MemoryStateBackend())
    obitox.identity_loader(lambda: identity)
    response = app.test_client().post("/obitox/uploads", json=file_spec())
    assert response.status_code == 401


def test_empty_upload_of_a_signature_type_is_rejected(client: UserClient, s3: Any) -> None:
    signed = client.post("/uploads", json=file_spec(size=0)).json
    s3.put_object(Bucket=BUCKET, Key=signed["key"], Body=b"")
    response = client.post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 422
    assert response.json["error"] == "CONTENT_MISMATCH"


def test_empty_text_upload_completes(client: UserClient, s3: Any) -> None:
    signed = client.post(
        "/uploads", json=file_spec(filename="empty.txt", contentType="text/plain", size=0)
    ).json
    s3.put_object(Bucket=BUCKET, Key=signed["key"], Body=b"")
    assert client.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        '{"filename": "a.png", "contentType": "image/png", "size": 1, "validation": {"maxSizeMB": 1e308}}',
        '{"filename": "a.png", "contentType": "image/png", "size": 1, "validation": {"minSizeKB": 1e308}}',
        '{"filename": "a.png", "contentType": "image/png", "size": 1, "validation": {"maxSizeMB": 1'
        + "0" * 400
        + "}}",
        "[" * 200_000,
        '{"filename": "a.png", "contentType": "image/png\n; a=b", "size": 1}',
    ],
)
def test_extreme_input_is_never_a_500(client: UserClient, body: str) -> None:
    response = client.post("/uploads", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.get_data(as_text=True)[:300]
    if response.status_code >= 400:
        assert set(response.json) == {"error", "message", "details"}
    else:  # a limit past any real size binds nothing: the server's limit applies
        assert response.status_code == 201


def test_unsignable_form_content_type_is_signed_spaceless(client: UserClient) -> None:
    body = client.post(
        "/uploads",
        json=file_spec(
            filename="f.bin", contentType="application/x-www-form-urlencoded; charset=utf-8"
        ),
    ).json
    assert body["headers"]["Content-Type"] == "application/x-www-form-urlencoded;charset=utf-8"
    assert "content-type" in signed_query(body["url"])["X-Amz-SignedHeaders"][0].split(";")


def test_a_host_that_reads_the_body_first_does_not_break_uploads(
    app: Flask, client: UserClient
) -> None:
    @app.before_request
    def audit_log() -> None:
        from flask import request

        request.get_data()

    assert client.post("/uploads", json=file_spec()).status_code == 201


def test_a_chunked_body_past_the_limit_is_413(app: Flask) -> None:
    import io

    # No Content-Length (as with Transfer-Encoding: chunked): the limit still applies.
    response = app.test_client().post(
        "/obitox/uploads",
        input_stream=io.BytesIO(b" " * (2 * 1024 * 1024)),
        headers={
            "X-User": "alice",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
        # what a WSGI server sets for a chunked body (werkzeug's and gunicorn's do)
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert response.json["error"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize("config", [{"OBITOX_ALLOWED_CONTENT_TYPES": ["image/*"]}])
@pytest.mark.parametrize("declared", ["image/x-foo", "image/svg+xml"])
def test_a_pdf_declared_as_an_allowed_image_type_is_rejected(
    client: UserClient, s3: Any, declared: str
) -> None:
    pdf = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + b"x" * 200
    signed = sign_and_put(client, s3, pdf, filename="picture.img", contentType=declared)
    response = client.post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 422
    assert response.json["error"] == "CONTENT_MISMATCH"


@pytest.mark.redis
def test_complete_takes_three_state_round_trips(
    redis_backend: Any, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read the record (ownership), then one compare-and-set pipelined with its index
    move (the second read of the record the compare once needed is gone), then the
    settled upload leaves the expiry index (OBITOX_SETTLED_TTL). Live events add one
    round trip at the request's end (tests/test_events.py): off here."""
    from state_support import RoundTrips

    app, _ = make_app(redis_backend, OBITOX_EVENTS=False)
    alice = UserClient(app, "alice")
    upload = sign_and_put(alice, s3, png_bytes())
    redis_backend.ping()  # the connection is open and its scripts are not the point
    assert alice.post(f"/uploads/{upload['uploadId']}/complete", json={}).status_code == 200
    second = sign_and_put(alice, s3, png_bytes(1))
    with RoundTrips().counting(monkeypatch) as trips:
        done = alice.post(f"/uploads/{second['uploadId']}/complete", json={})
    assert done.status_code == 200, done.json
    assert trips.count == 3
    assert alice.get(f"/uploads/{second['uploadId']}").json["status"] == "completed"
    listed = redis_backend.list_uploads("alice", status="completed").items
    assert {r.upload_id for r in listed} == {upload["uploadId"], second["uploadId"]}
