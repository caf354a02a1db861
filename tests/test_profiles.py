"""Upload profiles (DESIGN §18): OBITOX_PROFILES, @obitox.profile_guard, the rules and
storage settings of a profile on every create call, and their verification at completion.

Unit tests run on in-process moto; the end-to-end ones PUT and POST real bytes to a
ThreadedMotoServer with state in the real Redis, and read back what storage stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
import requests
from conftest import BUCKET, UserClient, file_spec, make_app
from flask import Flask

from flask_obitox import ConfigError, signals
from flask_obitox.config import load_settings
from flask_obitox.state import MemoryStateBackend, RedisStateBackend
from flask_obitox.webhooks.dispatch import webhook_queue

MiB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 56
PDF = b"%PDF-1.7\n" + b"%" * 55

PROFILES: dict[str, Any] = {
    "images": {
        "allowed_content_types": ["image/*"],
        "max_file_size": 1 * MiB,
        "key_prefix": "images/",
        "cache_control": "public, max-age=31536000",
        "metadata": {"source": "profile-images"},
        "expiry_max": 600,
        "batch_max_files": 3,
    },
    "documents": {
        "allowed_content_types": ["application/pdf"],
        "allowed_extensions": ["pdf"],
        "max_multipart_size": 64 * MiB,
        "part_size": 6 * MiB,
        "key_prefix": "documents",
        "server_side_encryption": "aws:kms",
        "sse_kms_key_id": "alias/docs",
        "content_disposition": "attachment",
        "storage_class": "STANDARD_IA",
        "webhooks": ["upload.rejected"],
        "processors": ["thumbnail"],
    },
    "sealed": {"server_side_encryption": "AES256", "acl": "private"},
}
#: The storage headers each profile signs (as the answer's ``headers`` shows them).
SIGNED = {
    "images": {"Cache-Control": "public, max-age=31536000"},
    "documents": {
        "Content-Disposition": "attachment",
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": "alias/docs",
        "x-amz-storage-class": "STANDARD_IA",
    },
    "sealed": {"x-amz-acl": "private", "x-amz-server-side-encryption": "AES256"},
}


@pytest.fixture
def config() -> dict[str, Any]:
    return {"OBITOX_PROFILES": PROFILES}


def signed_headers(url: str) -> list[str]:
    return parse_qs(urlsplit(url).query)["X-Amz-SignedHeaders"][0].split(";")


def records(app: Flask) -> list[Any]:
    state = app.extensions["obitox"].state
    assert isinstance(state, MemoryStateBackend)
    return [state.get(upload_id) for upload_id in state.expired_ids(float("inf"))]


# -- config: one sentence per mistake, naming the profile and the key -------------------


@pytest.mark.parametrize(
    ("profiles", "message"),
    [
        ([], "OBITOX_PROFILES must be a dict"),
        ({"bad name": {}}, "OBITOX_PROFILES names a profile 'bad name'"),
        ({"p": "images"}, "OBITOX_PROFILES['p'] must be a dict"),
        ({"p": {"colour": "red"}}, "OBITOX_PROFILES['p'] has unknown keys ['colour']"),
        ({"p": {"max_file_size": "5MB"}}, "OBITOX_PROFILES['p'].max_file_size must be an integer"),
        ({"p": {"max_file_size": 6 * 2**30}}, "OBITOX_PROFILES['p'].max_file_size must be <="),
        (
            {"p": {"min_file_size": 10, "max_file_size": 5}},
            "OBITOX_PROFILES['p'].min_file_size (10) exceeds OBITOX_PROFILES['p'].max_file_size",
        ),
        (
            {"p": {"expiry_min": 900, "expiry_max": 60}},
            "OBITOX_PROFILES['p'].expiry_min (900) exceeds OBITOX_PROFILES['p'].expiry_max",
        ),
        ({"p": {"part_size": 1024}}, "OBITOX_PROFILES['p'].part_size must be >="),
        (
            {"p": {"allowed_content_types": ["images"]}},
            "OBITOX_PROFILES['p'].allowed_content_types holds ['images']",
        ),
        ({"p": {"block_executables": "no"}}, "OBITOX_PROFILES['p'].block_executables must be"),
        ({"p": {"key_prefix": "../up"}}, "OBITOX_PROFILES['p'].key_prefix must be a relative"),
        ({"p": {"key_prefix": "a//b"}}, "OBITOX_PROFILES['p'].key_prefix must be a relative"),
        ({"p": {"storage_class": "GLACIER"}}, "OBITOX_PROFILES['p'].storage_class must be one"),
        (
            {"p": {"server_side_encryption": "aws:kms:dsse"}},
            "OBITOX_PROFILES['p'].server_side_encryption must be one of AES256, aws:kms",
        ),
        (
            {"p": {"sse_kms_key_id": "alias/docs"}},
            "OBITOX_PROFILES['p'].sse_kms_key_id needs server_side_encryption 'aws:kms'",
        ),
        ({"p": {"acl": "public"}}, "OBITOX_PROFILES['p'].acl must be one of private"),
        ({"p": {"cache_control": "no\nstore"}}, "OBITOX_PROFILES['p'].cache_control must be"),
        ({"p": {"cache_control": 3600}}, "OBITOX_PROFILES['p'].cache_control must be"),
        ({"p": {"metadata": {"a b": "1"}}}, "OBITOX_PROFILES['p'].metadata must be a dict"),
        ({"p": {"metadata": {"a": "é"}}}, "OBITOX_PROFILES['p'].metadata values must be"),
        ({"p": {"metadata": {"a": "x" * 3000}}}, "OBITOX_PROFILES['p'].metadata holds more"),
        ({"p": {"processors": "thumbnail"}}, "OBITOX_PROFILES['p'].processors must be a list"),
        ({"p": {"processors": [""]}}, "OBITOX_PROFILES['p'].processors must hold non-empty"),
        ({"p": {"webhooks": ["upload.done"]}}, "OBITOX_PROFILES['p'].webhooks holds unknown"),
    ],
)
def test_a_bad_profile_fails_init_app_naming_profile_and_key(profiles: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(MemoryStateBackend(), OBITOX_PROFILES=profiles)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_profiles_are_resolved_once_into_settings() -> None:
    settings = load_settings({"OBITOX_BUCKET": "b", "OBITOX_PROFILES": PROFILES})
    images, documents = settings.profiles["images"], settings.profiles["documents"]
    # The rule keys replace the OBITOX_* defaults; the rest are the app's.
    assert images.settings.max_file_size == MiB
    assert images.settings.expiry_max == 600
    assert images.settings.max_multipart_size == settings.max_multipart_size
    assert images.settings.key_prefix == "uploads/images/"
    assert documents.settings.key_prefix == "uploads/documents/"
    assert documents.processors == ("thumbnail",)
    assert images.processors is None
    assert images.webhooks is None
    assert documents.webhooks == ("upload.rejected",)
    assert documents.storage_params == {
        "ContentDisposition": "attachment",
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/docs",
        "StorageClass": "STANDARD_IA",
    }
    assert load_settings({"OBITOX_BUCKET": "b"}).profiles == {}


# -- bad input: a clear JSON error, nothing stored ---------------------------------------


CREATE_CALLS = [
    ("/uploads", lambda profile: {**file_spec(), "profile": profile}),
    ("/uploads/batch", lambda profile: {"files": [file_spec()], "profile": profile}),
    ("/multipart", lambda profile: {**file_spec(size=50 * MiB), "profile": profile}),
    (
        "/s3/multipart",
        lambda profile: {
            "filename": "a.png",
            "type": "image/png",
            "metadata": {"profile": profile},
        },
    ),
]


def companion_params(client: UserClient, profile: str, filename: str = "a.png") -> Any:
    kind = "application/pdf" if filename.endswith(".pdf") else "image/png"
    return client.get(f"/s3/params?filename={filename}&type={kind}&metadata[profile]={profile}")


@pytest.mark.parametrize(("path", "body"), CREATE_CALLS, ids=[c[0] for c in CREATE_CALLS])
def test_unknown_profile_is_400_naming_it_and_stores_nothing(
    app: Flask, client: UserClient, s3: Any, path: str, body: Any
) -> None:
    response = client.post(path, json=body("videos"))
    assert response.status_code == 400
    assert response.json["error"] == "INVALID_INPUT"
    assert "'videos'" in response.json["message"]
    assert response.json["details"]["field"] == "profile"
    assert records(app) == []
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_unknown_profile_on_companion_post_is_400(app: Flask, client: UserClient) -> None:
    response = companion_params(client, "videos")
    assert response.status_code == 400
    assert "'videos'" in response.json["message"]
    assert records(app) == []


def test_malformed_profile_name_is_400(client: UserClient) -> None:
    response = client.post("/uploads", json={**file_spec(), "profile": "../etc"})
    assert response.status_code == 400
    assert response.json["details"]["fields"] == {"profile": ["not a profile name"]} or (
        "profile" in str(response.json["details"])
    )


@pytest.mark.parametrize(("path", "body"), CREATE_CALLS, ids=[c[0] for c in CREATE_CALLS])
def test_profile_guard_refusal_is_403_and_stores_nothing(
    obitox_app: tuple[Flask, Any], s3: Any, path: str, body: Any
) -> None:
    app, obitox = obitox_app
    asked: list[tuple[str, str]] = []

    @obitox.profile_guard
    def may_upload(owner: str, profile: str) -> bool:
        asked.append((owner, profile))
        return profile != "documents"

    client = UserClient(app, "alice")
    response = client.post(path, json=body("documents"))
    assert response.status_code == 403
    assert response.json["error"] == "FORBIDDEN"
    assert "'documents'" in response.json["message"]
    assert asked == [("alice", "documents")]
    assert records(app) == []
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    # The guard allows the other profiles.
    assert client.post(path, json=body("sealed")).status_code in (200, 201)


def test_profile_guard_on_companion_post(obitox_app: tuple[Flask, Any]) -> None:
    app, obitox = obitox_app
    obitox.profile_guard(lambda owner, profile: owner == "admin")
    assert companion_params(UserClient(app, "alice"), "images").status_code == 403
    assert companion_params(UserClient(app, "admin"), "images").status_code == 200


@pytest.mark.parametrize(
    "field",
    [
        {"storageClass": "GLACIER"},
        {"serverSideEncryption": "AES256"},
        {"sseKmsKeyId": "alias/mine"},
        {"cacheControl": "no-store"},
        {"acl": "public-read"},
    ],
)
def test_a_client_cannot_choose_storage_settings(
    app: Flask, client: UserClient, field: dict[str, str]
) -> None:
    """Refused, not ignored: the strict schemas name the field, and a client never
    believes its object is encrypted (or public) when the server decides otherwise."""
    for path, body in CREATE_CALLS[:3]:
        response = client.post(path, json={**body("images"), **field})
        assert response.status_code == 400, path
        assert response.json["error"] == "INVALID_INPUT"
        assert next(iter(field)) in str(response.json["details"])
    # A batch's entries too (they fail alone).
    answer = client.post(
        "/uploads/batch", json={"files": [{**file_spec(), **field}], "profile": "images"}
    ).json
    assert answer["failed"] == 1
    assert answer["errors"][0]["error"] == "INVALID_INPUT"
    assert records(app) == []


def test_a_batch_entry_cannot_name_its_own_profile(client: UserClient) -> None:
    """The profile of a batch is the envelope's: one set of rules for every file."""
    answer = client.post(
        "/uploads/batch", json={"files": [{**file_spec(), "profile": "images"}]}
    ).json
    assert answer["failed"] == 1
    assert "profile" in str(answer["errors"][0]["details"])


# -- each rule kind, per profile ----------------------------------------------------------


def test_type_rule_of_a_profile_names_its_key(client: UserClient) -> None:
    response = client.post(
        "/uploads",
        json={**file_spec(filename="a.pdf", contentType="application/pdf"), "profile": "images"},
    )
    assert response.status_code == 422
    assert response.json["details"]["source"] == "OBITOX_PROFILES['images'].allowed_content_types"
    # ... while the default rules (and the documents profile) take a PDF.
    pdf = file_spec(filename="a.pdf", contentType="application/pdf")
    assert client.post("/uploads", json=pdf).status_code == 201
    assert client.post("/uploads", json={**pdf, "profile": "documents"}).status_code == 201


def test_size_rule_of_a_profile(client: UserClient) -> None:
    response = client.post("/uploads", json={**file_spec(size=MiB + 1), "profile": "images"})
    assert response.status_code == 413
    assert response.json["details"]["source"] == "OBITOX_PROFILES['images'].max_file_size"
    assert client.post("/uploads", json=file_spec(size=MiB + 1)).status_code == 201


def test_extension_rule_of_a_profile(client: UserClient) -> None:
    spec = file_spec(filename="a.txt", contentType="application/pdf")
    response = client.post("/uploads", json={**spec, "profile": "documents"})
    assert response.status_code == 422
    assert response.json["details"]["source"] == "OBITOX_PROFILES['documents'].allowed_extensions"


def test_executables_stay_blocked_under_a_profile(client: UserClient) -> None:
    spec = file_spec(filename="setup.exe", contentType="application/pdf")
    response = client.post("/uploads", json={**spec, "profile": "sealed"})
    assert response.status_code == 422
    assert response.json["details"]["reason"] == "dangerous_extension"


def test_client_validation_only_tightens_a_profile(client: UserClient) -> None:
    tighter = {"maxSizeMB": 0.5}
    response = client.post(
        "/uploads", json={**file_spec(size=MiB - 1), "profile": "images", "validation": tighter}
    )
    assert response.status_code == 413
    assert response.json["details"]["source"] == "validation.maxSizeMB"
    wider = {"maxSizeMB": 100, "allowedTypes": ["application/pdf", "image/png"]}
    response = client.post(
        "/uploads", json={**file_spec(size=MiB + 1), "profile": "images", "validation": wider}
    )
    assert response.status_code == 413
    assert response.json["details"]["source"] == "OBITOX_PROFILES['images'].max_file_size"
    pdf = file_spec(filename="a.pdf", contentType="application/pdf")
    response = client.post("/uploads", json={**pdf, "profile": "images", "validation": wider})
    assert response.status_code == 422


def test_expiry_bounds_of_a_profile(client: UserClient) -> None:
    """A 1 MiB file on the slowest network may ask for more than 600 s; the images
    profile's expiry_max (600) bounds it, the app's (a day) does not."""
    spec = {**file_spec(size=MiB), "expiresIn": 7200, "networkType": "slow-2g"}
    assert client.post("/uploads", json={**spec, "profile": "images"}).json["expiresIn"] == 600
    assert client.post("/uploads", json=spec).json["expiresIn"] > 600


def test_batch_size_and_rules_of_a_profile(app: Flask, client: UserClient) -> None:
    four = [file_spec(filename=f"{i}.png") for i in range(4)]
    response = client.post("/uploads/batch", json={"files": four, "profile": "images"})
    assert response.status_code == 413
    assert response.json["error"] == "BATCH_TOO_LARGE"
    assert records(app) == []
    files = [file_spec(), file_spec(filename="a.pdf", contentType="application/pdf")]
    answer = client.post("/uploads/batch", json={"files": files, "profile": "images"}).json
    assert answer["successful"] == 1
    assert answer["failed"] == 1
    [upload] = answer["uploads"]
    assert upload["key"].startswith("uploads/images/")
    assert upload["headers"]["Cache-Control"] == "public, max-age=31536000"
    assert upload["headers"]["x-amz-meta-source"] == "profile-images"
    assert "cache-control" in signed_headers(upload["url"])
    assert client.get(f"/uploads/{upload['uploadId']}").json["profile"] == "images"


def test_part_size_and_limit_of_a_profile(client: UserClient) -> None:
    pdf = {"filename": "big.pdf", "contentType": "application/pdf", "profile": "documents"}
    answer = client.post("/multipart", json={**pdf, "size": 30 * MiB}).json
    assert answer["partSize"] == 6 * MiB
    assert answer["totalParts"] == 5
    assert answer["key"].startswith("uploads/documents/")
    response = client.post("/multipart", json={**pdf, "size": 64 * MiB + 1})
    assert response.status_code == 413
    assert response.json["details"]["source"] == "OBITOX_PROFILES['documents'].max_multipart_size"


@pytest.mark.parametrize(
    "filename", ["../../../etc/passwd.png", "/abs/x.png", "..", "a/../../b.png"]
)
def test_a_filename_never_shapes_a_key_outside_the_profile_prefix(
    client: UserClient, filename: str
) -> None:
    response = client.post("/uploads", json={**file_spec(filename=filename), "profile": "images"})
    if response.status_code != 201:  # ".": no extension, which image/* types need
        assert response.json["error"] == "VALIDATION_FAILED"
        return
    prefix, _, rest = response.json["key"].partition("uploads/images/")
    assert prefix == ""
    assert rest.count("/") == 1
    assert ".." not in rest.split("/")


def test_a_key_builder_must_stay_under_the_profile_prefix(
    obitox_app: tuple[Flask, Any],
) -> None:
    app, obitox = obitox_app
    obitox.key_builder(lambda owner, filename, upload_id, metadata: f"uploads/{upload_id}")
    client = UserClient(app, "alice")
    assert client.post("/uploads", json=file_spec()).status_code == 201
    # A host bug, not a client's: a 500 in the JSON shape, nothing written.
    response = client.post("/uploads", json={**file_spec(), "profile": "images"})
    assert response.status_code == 500
    assert len(records(app)) == 1


# -- signed headers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_storage_headers_are_signed_into_the_put_url(client: UserClient, name: str) -> None:
    spec = file_spec(filename="a.pdf", contentType="application/pdf")
    if name == "images":
        spec = file_spec()
    answer = client.post("/uploads", json={**spec, "profile": name}).json
    for header, value in SIGNED[name].items():
        assert answer["headers"][header] == value
        assert header.lower() in signed_headers(answer["url"])
    view = client.get(f"/uploads/{answer['uploadId']}").json
    assert view["profile"] == name


def test_no_profile_signs_no_storage_header(client: UserClient) -> None:
    answer = client.post("/uploads", json=file_spec()).json
    assert set(signed_headers(answer["url"])) == {
        "content-length",
        "content-type",
        "host",
        "if-none-match",
    }
    assert client.get(f"/uploads/{answer['uploadId']}").json["profile"] is None


def test_companion_post_policy_requires_the_storage_fields(client: UserClient) -> None:
    answer = companion_params(client, "documents", "a.pdf").json
    fields = answer["fields"]
    for header, value in SIGNED["documents"].items():
        assert fields[header] == value
    assert fields["key"].startswith("uploads/documents/")


# -- webhooks: a profile's event subset -----------------------------------------------------


@pytest.fixture
def rq_queue(redis_url: str) -> Iterator[str]:
    from webhook_support import delete_rq_keys

    name = f"obitox-test-profiles-rq-{uuid.uuid4().hex[:10]}"
    yield name
    delete_rq_keys(redis.Redis.from_url(redis_url), name)


def test_a_profile_sends_only_its_webhook_events(s3: Any, redis_url: str, rq_queue: str) -> None:
    from webhook_support import webhook_config

    app, _ = make_app(
        MemoryStateBackend(),
        OBITOX_PROFILES=PROFILES,
        **webhook_config(redis_url, rq_queue, "http://127.0.0.1:9/hook"),
    )
    client = UserClient(app, "alice")
    plain = client.post("/uploads", json=file_spec()).json
    documents = client.post(
        "/uploads",
        json={**file_spec(filename="a.pdf", contentType="application/pdf"), "profile": "documents"},
    ).json
    state = app.extensions["obitox"].state
    with app.app_context():
        signals.upload_completed.send(app, upload=state.get(plain["uploadId"]))
        assert webhook_queue(app).count == 1
        # documents send upload.rejected only
        signals.upload_completed.send(app, upload=state.get(documents["uploadId"]))
        assert webhook_queue(app).count == 1
        signals.upload_rejected.send(
            app, filename="a.pdf", reason="r", stage="verification", code="CONTENT_MISMATCH",
            owner="alice", upload=state.get(documents["uploadId"]),
        )  # fmt: skip
        assert webhook_queue(app).count == 2


# -- end to end: real bytes to a real S3 server, real Redis --------------------------------


@pytest.fixture
def profiles_redis(redis_url: str) -> Iterator[RedisStateBackend]:
    prefix = f"obitox-test-profiles-{uuid.uuid4().hex[:12]}"
    backend = RedisStateBackend.from_url(redis_url, prefix=prefix)
    yield backend
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def e2e_app(s3_server: Any, moto_server: str, profiles_redis: RedisStateBackend) -> Flask:
    app, _ = make_app(
        profiles_redis,
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_PROFILES=PROFILES,
        OBITOX_MAX_MULTIPART_SIZE=64 * MiB,
    )
    return app


def stored(s3: Any, key: str) -> dict[str, Any]:
    head = s3.head_object(Bucket=BUCKET, Key=key)
    return {
        name: head.get(name)
        for name in (
            "ServerSideEncryption",
            "SSEKMSKeyId",
            "StorageClass",
            "CacheControl",
            "ContentDisposition",
            "Metadata",
        )
    }


DOCUMENTS_STORED = {
    "ServerSideEncryption": "aws:kms",
    "SSEKMSKeyId": "alias/docs",
    "StorageClass": "STANDARD_IA",
    "CacheControl": None,
    "ContentDisposition": "attachment",
    "Metadata": {},
}


def test_single_put_stores_the_profile_settings(alice: UserClient, s3_server: Any) -> None:
    signed = alice.post(
        "/uploads",
        json={
            **file_spec(filename="a.pdf", contentType="application/pdf", size=len(PDF)),
            "profile": "documents",
        },
    ).json
    assert requests.put(signed["url"], data=PDF, headers=signed["headers"], timeout=10).ok
    done = alice.post(f"/uploads/{signed['uploadId']}/complete")
    assert done.status_code == 200, done.json
    assert stored(s3_server, signed["key"]) == DOCUMENTS_STORED
    images = alice.post("/uploads", json={**file_spec(size=len(PNG)), "profile": "images"}).json
    assert requests.put(images["url"], data=PNG, headers=images["headers"], timeout=10).ok
    assert alice.post(f"/uploads/{images['uploadId']}/complete").status_code == 200
    assert stored(s3_server, images["key"]) == {
        "ServerSideEncryption": None,
        "SSEKMSKeyId": None,
        "StorageClass": None,
        "CacheControl": "public, max-age=31536000",
        "ContentDisposition": None,
        "Metadata": {"source": "profile-images"},
    }


@pytest.mark.parametrize("dropped", ["x-amz-server-side-encryption", "x-amz-storage-class"])
def test_a_put_that_drops_a_signed_header_is_rejected_at_complete(
    alice: UserClient, s3_server: Any, events: list[Any], dropped: str
) -> None:
    """Real S3 refuses such a PUT (the header is signed); moto stores it, and complete
    refuses the object like a content mismatch: 422, object deleted, status rejected."""
    spec = file_spec(filename="a.pdf", contentType="application/pdf", size=len(PDF))
    signed = alice.post("/uploads", json={**spec, "profile": "documents"}).json
    headers = {k: v for k, v in signed["headers"].items() if k != dropped}
    assert requests.put(signed["url"], data=PDF, headers=headers, timeout=10).ok
    response = alice.post(f"/uploads/{signed['uploadId']}/complete")
    assert response.status_code == 422
    assert response.json["error"] == "CONTENT_MISMATCH"
    assert "'documents'" in response.json["message"]
    assert s3_server.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert alice.get(f"/uploads/{signed['uploadId']}").json["status"] == "rejected"
    assert [n for n, _ in events if n == "upload_rejected"] == ["upload_rejected"]
    # Idempotent: the same answer again.
    assert alice.post(f"/uploads/{signed['uploadId']}/complete").status_code == 422


def test_multipart_stores_the_profile_settings(alice: UserClient, s3_server: Any) -> None:
    size = 7 * MiB
    data = PDF + b"x" * (size - len(PDF))
    created = alice.post(
        "/multipart",
        json={
            "filename": "big.pdf",
            "contentType": "application/pdf",
            "size": size,
            "profile": "documents",
        },
    ).json
    parts = alice.post(
        f"/multipart/{created['uploadId']}/parts", json={"partNumbers": [1, 2]}
    ).json["parts"]
    offset = 0
    for part in parts:
        chunk = data[offset : offset + part["size"]]
        offset += part["size"]
        assert requests.put(part["url"], data=chunk, headers=part["headers"], timeout=30).ok
    done = alice.post(f"/multipart/{created['uploadId']}/complete")
    assert done.status_code == 200, done.json
    assert stored(s3_server, created["key"]) == DOCUMENTS_STORED
    assert alice.get(f"/uploads/{created['uploadId']}").json["profile"] == "documents"


def post_form(answer: dict[str, Any], data: bytes) -> requests.Response:
    return requests.post(
        answer["url"],
        data=answer["fields"],
        files={"file": ("blob", data, answer["fields"]["Content-Type"])},
        timeout=10,
    )


def test_companion_post_stores_the_profile_settings(alice: UserClient, s3_server: Any) -> None:
    answer = companion_params(alice, "images").json
    assert post_form(answer, PNG).status_code == 204
    key = answer["fields"]["key"]
    done = alice.post(f"/s3/complete?key={key}")
    assert done.status_code == 200, done.json
    assert stored(s3_server, key)["CacheControl"] == "public, max-age=31536000"
    assert stored(s3_server, key)["Metadata"] == {"source": "profile-images"}


def test_companion_post_whose_object_lacks_the_encryption_is_rejected(
    alice: UserClient, s3_server: Any
) -> None:
    """moto ignores a POST form's x-amz-server-side-encryption (real S3 stores it, and
    the policy makes it required): complete finds the object unencrypted and refuses it."""
    answer = companion_params(alice, "sealed").json
    assert answer["fields"]["x-amz-server-side-encryption"] == "AES256"
    assert post_form(answer, PNG).status_code == 204
    key = answer["fields"]["key"]
    head = s3_server.head_object(Bucket=BUCKET, Key=key)
    response = alice.post(f"/s3/complete?key={key}")
    if head.get("ServerSideEncryption") == "AES256":  # a moto that honours the field
        assert response.status_code == 200
    else:
        assert response.status_code == 422
        assert response.json["error"] == "CONTENT_MISMATCH"
        assert s3_server.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_companion_multipart_stores_the_profile_settings(alice: UserClient, s3_server: Any) -> None:
    created = alice.post(
        "/s3/multipart",
        json={
            "filename": "a.pdf",
            "type": "application/pdf",
            "metadata": {"profile": "documents", "name": "a.pdf"},
        },
    ).json
    query = f"key={created['key']}"
    url = alice.get(f"/s3/multipart/{created['uploadId']}/1?{query}").json["url"]
    put = requests.put(url, data=PDF, timeout=10)
    assert put.ok
    done = alice.post(
        f"/s3/multipart/{created['uploadId']}/complete?{query}",
        json={"parts": [{"PartNumber": 1, "ETag": put.headers["ETag"]}]},
    )
    assert done.status_code == 200, done.json
    assert created["key"].startswith("uploads/documents/")
    assert stored(s3_server, created["key"]) == DOCUMENTS_STORED
    view = alice.get(f"/uploads/{created['uploadId']}").json
    assert view["profile"] == "documents"
    assert "profile" not in view["metadata"]


def test_the_python_client_uploads_under_a_profile(
    e2e_app: Flask, s3_server: Any, tmp_path: Any
) -> None:
    from client_support import LiveServer

    from flask_obitox.client import ObitoXClient

    small = tmp_path / "report.pdf"
    small.write_bytes(PDF)
    big = tmp_path / "big.pdf"
    big.write_bytes(PDF + b"x" * (7 * MiB))
    with (
        LiveServer(e2e_app) as live,
        ObitoXClient(live.url + "/obitox", auth_headers={"X-User": "alice"}) as client,
    ):
        one = client.upload_file(small, profile="documents")
        [many] = client.upload_files([small], profile="documents")
        resumed = client.resumable_upload(big, profile="documents")
    assert many.result is not None
    for key in (one.key, many.result.key, resumed.key):
        assert key.startswith("uploads/documents/")
        assert stored(s3_server, key) == DOCUMENTS_STORED


def test_the_served_document_names_the_apps_profiles(client: UserClient) -> None:
    document = client.get("/openapi.json").json
    schemas = document["components"]["schemas"]
    for name in ("UploadRequest", "BatchRequest", "MultipartRequest"):
        assert schemas[name]["properties"]["profile"]["enum"] == list(PROFILES)
    companion = schemas["CompanionMultipartRequest"]["properties"]["metadata"]
    assert companion["properties"]["profile"]["enum"][:3] == list(PROFILES)


def test_listing_filters_by_profile(client: UserClient) -> None:
    image = client.post("/uploads", json={**file_spec(), "profile": "images"}).json
    plain = client.post("/uploads", json=file_spec()).json
    listed = client.get("/uploads?profile=images").json["uploads"]
    assert [u["uploadId"] for u in listed] == [image["uploadId"]]
    assert listed[0]["profile"] == "images"
    everything = {u["uploadId"] for u in client.get("/uploads").json["uploads"]}
    assert everything == {image["uploadId"], plain["uploadId"]}
    assert client.get("/uploads?profile=documents").json["uploads"] == []
    bad = client.get("/uploads?profile=../x")
    assert bad.status_code == 400
    assert bad.json["error"] == "INVALID_INPUT"
