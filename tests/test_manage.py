"""Managing uploads (DESIGN §11): listing, deletion, download; and cancelling and
deleting groups. End to end where an object must exist: real bytes PUT to a moto S3
server, real Redis state, storage checked afterwards."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import BUCKET, UserClient, file_spec, make_app
from flask import Flask

from flask_obitox import ConfigError, MemoryStateBackend, RedisStateBackend
from flask_obitox.domain.removal import content_disposition

BIN = {"contentType": "application/octet-stream"}
MiB = 2**20


@pytest.fixture
def e2e_app(s3_server: Any, moto_server: str, redis_backend: RedisStateBackend) -> Flask:
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL=moto_server)
    return app


def sign(client: UserClient, name: str = "f.bin", body: bytes = b"abc", **extra: Any) -> Any:
    response = client.post(
        "/uploads", json=file_spec(filename=name, size=len(body), **BIN, **extra)
    )
    assert response.status_code == 201, response.json
    return response.json


def put(signed: dict[str, Any], body: bytes = b"abc") -> None:
    response = requests.put(signed["url"], data=body, headers=signed["headers"], timeout=10)
    assert response.status_code == 200, response.text


def uploaded(client: UserClient, name: str = "f.bin", body: bytes = b"abc", **extra: Any) -> Any:
    signed = sign(client, name, body, **extra)
    put(signed, body)
    assert client.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200
    return signed


def exists(s3: Any, key: str) -> bool:
    return bool(s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount"))


def open_multipart(client: UserClient, s3: Any, **extra: Any) -> dict[str, Any]:
    """A multipart upload of 12 MiB with its first part really uploaded."""
    started = client.post(
        "/multipart", json=file_spec(filename="big.bin", size=12 * MiB, **BIN, **extra)
    ).json
    [part] = client.post(f"/multipart/{started['uploadId']}/parts", json={"partNumbers": [1]}).json[
        "parts"
    ]
    response = requests.put(part["url"], data=b"x" * part["size"], timeout=30)
    assert response.status_code == 200, response.text
    return dict(started)


def pending_multiparts(s3: Any) -> list[str]:
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]


def names(events: list[tuple[str, dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    return [kwargs for signal, kwargs in events if signal == name]


# -- deletion ------------------------------------------------------------------------------


def test_deleting_a_completed_upload_deletes_its_object_and_derivatives(
    e2e_app: Flask, alice: UserClient, mallory: UserClient, s3_server: Any, events: list[Any]
) -> None:
    signed = uploaded(alice)
    uid = signed["uploadId"]
    derived = f"uploads/{uid}/thumb.jpg"
    s3_server.put_object(Bucket=BUCKET, Key=derived, Body=b"thumb")
    # The processing engineer's field: written here as a processor would.
    e2e_app.extensions["obitox"].state.update(uid, ("completed",), derived=[derived])
    assert mallory.delete(f"/uploads/{uid}").status_code == 404
    assert exists(s3_server, signed["key"])
    response = alice.delete(f"/uploads/{uid}")
    assert response.status_code == 200, response.json
    assert response.json["status"] == "deleted"
    assert not exists(s3_server, signed["key"])
    assert not exists(s3_server, derived)
    again = alice.delete(f"/uploads/{uid}")
    assert (again.status_code, again.json["status"]) == (200, "deleted")
    assert len(names(events, "upload_deleted")) == 1
    assert alice.get(f"/uploads/{uid}").json["status"] == "deleted"
    assert [u["uploadId"] for u in alice.get("/uploads?status=deleted").json["uploads"]] == [uid]
    for path in (f"/uploads/{uid}/complete", f"/uploads/{uid}/progress"):
        refused = alice.post(path, json={"uploadedBytes": 1} if "progress" in path else {})
        assert (refused.status_code, refused.json["error"]) == (409, "UPLOAD_CLOSED")
    download = alice.get(f"/uploads/{uid}/download")
    assert (download.status_code, download.json["error"]) == (409, "UPLOAD_NOT_COMPLETE")


def test_deleting_an_open_upload_frees_storage(
    alice: UserClient, s3_server: Any, events: list[Any]
) -> None:
    single = sign(alice)
    put(single)  # bytes in storage, never completed
    multipart = open_multipart(alice, s3_server)
    assert pending_multiparts(s3_server) == [multipart["key"]]
    for upload in (single, multipart):
        response = alice.delete(f"/uploads/{upload['uploadId']}")
        assert (response.status_code, response.json["status"]) == (200, "deleted")
    assert not exists(s3_server, single["key"])
    assert pending_multiparts(s3_server) == []
    assert len(names(events, "upload_deleted")) == 2
    refused = alice.post(f"/multipart/{multipart['uploadId']}/parts", json={"partNumbers": [2]})
    assert (refused.status_code, refused.json["error"]) == (409, "UPLOAD_CLOSED")


# -- download ----------------------------------------------------------------------------


def test_download_redirects_to_the_object_as_an_attachment(
    alice: UserClient, mallory: UserClient, s3_server: Any
) -> None:
    signed = uploaded(alice, "résumé final.bin", b"hello bytes")
    uid = signed["uploadId"]
    response = alice.get(f"/uploads/{uid}/download")
    assert response.status_code == 302
    assert response.headers["Cache-Control"] == "no-store"
    location = response.headers["Location"]
    query = parse_qs(urlsplit(location).query)
    assert int(query["X-Amz-Expires"][0]) == 300
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == b"hello bytes"
    disposition = 'attachment; filename="r_sum_ final.bin"; ' + (
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20final.bin"
    )
    # moto ignores response-* overrides; S3 answers with this header (the signature
    # covering it is proven against botocore in tests/test_signer.py).
    assert query["response-content-disposition"] == [disposition]
    inline = alice.get(f"/uploads/{uid}/download?inline=1", headers={"Accept": "application/json"})
    assert inline.status_code == 200
    assert set(inline.json) == {"url", "expiresAt"}
    inline_query = parse_qs(urlsplit(inline.json["url"]).query)
    assert inline_query["response-content-disposition"][0].startswith("inline; ")
    assert requests.get(inline.json["url"], timeout=10).content == b"hello bytes"
    assert mallory.get(f"/uploads/{uid}/download").status_code == 404
    open_one = sign(alice)
    refused = alice.get(f"/uploads/{open_one['uploadId']}/download")
    assert (refused.status_code, refused.json["error"]) == (409, "UPLOAD_NOT_COMPLETE")
    assert alice.get(f"/uploads/{uid}/download?inline=maybe").status_code == 400


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("a.pdf", 'attachment; filename="a.pdf"'),
        (
            'say "hi".txt',
            "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt",
        ),
        ("日本.png", "attachment; filename=\"__.png\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.png"),
        ("a\\b;c.txt", "attachment; filename=\"a_b;c.txt\"; filename*=UTF-8''a%5Cb%3Bc.txt"),
    ],
)
def test_content_disposition(filename: str, expected: str) -> None:
    assert content_disposition(filename) == expected


def test_download_expiry_is_at_most_an_hour() -> None:
    with pytest.raises(ConfigError, match="OBITOX_DOWNLOAD_EXPIRY"):
        make_app(MemoryStateBackend(), OBITOX_DOWNLOAD_EXPIRY=3601)


# -- listing -------------------------------------------------------------------------------


def test_listing_filters_pages_and_shows_only_the_callers(
    client: UserClient, other_client: UserClient
) -> None:
    ids = [sign(client, f"f{i}.bin")["uploadId"] for i in range(5)]
    other_client.post("/uploads", json=file_spec(filename="m.bin", size=3, **BIN))
    multipart = client.post("/multipart", json=file_spec(filename="b.bin", size=6 * MiB, **BIN))
    seen: list[str] = []
    cursor = None
    while True:
        query = "/uploads?kind=single&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query).json
        assert len(page["uploads"]) <= 2
        seen += [u["uploadId"] for u in page["uploads"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, each once
    everything = client.get("/uploads").json["uploads"]
    assert [u["uploadId"] for u in everything] == [multipart.json["uploadId"], *ids[::-1]]
    assert everything[0]["totalParts"] == 1
    assert client.get("/uploads?status=completed").json == {"uploads": [], "nextCursor": None}
    assert [u["filename"] for u in other_client.get("/uploads").json["uploads"]] == ["m.bin"]


def test_cursor_tampering_is_400_and_never_shows_another_owners_rows(
    client: UserClient, other_client: UserClient
) -> None:
    for i in range(3):
        sign(client, f"a{i}.bin")
        sign(other_client, f"m{i}.bin")
    cursor = client.get("/uploads?limit=1").json["nextCursor"]
    mallory_cursor = other_client.get("/uploads?limit=1").json["nextCursor"]
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for who, query in [
        (other_client, f"cursor={cursor}"),  # alice's cursor, mallory's listing
        (client, f"cursor={mallory_cursor}"),
        (client, f"cursor={cursor}&kind=multipart"),  # other filters
        (client, f"cursor={tampered}"),
        (client, "cursor=not-a-cursor"),
        (client, "limit=0"),
        (client, "limit=101"),
        (client, "status=done"),
        (client, "kind=huge"),
        (client, "sort=size"),
    ]:
        response = who.get(f"/uploads?{query}")
        assert response.status_code == 400, (query, response.json)
        assert response.json["error"] == "INVALID_INPUT"
    rest = client.get(f"/uploads?cursor={cursor}").json["uploads"]
    assert [u["filename"] for u in rest] == ["a1.bin", "a0.bin"]


# -- cancelling and deleting groups --------------------------------------------------------


def test_cancel_then_delete_a_group_cleans_storage(
    alice: UserClient, mallory: UserClient, s3_server: Any, events: list[Any]
) -> None:
    gid = alice.post("/groups", json={"name": "trip"}).json["groupId"]
    done = uploaded(alice, "done.bin", groupId=gid)
    half = sign(alice, "half.bin", groupId=gid)
    put(half)  # bytes stored, never completed
    multipart = open_multipart(alice, s3_server, groupId=gid)
    assert mallory.post(f"/groups/{gid}/cancel").status_code == 404
    cancelled = alice.post(f"/groups/{gid}/cancel")
    assert cancelled.status_code == 200, cancelled.json
    view = cancelled.json
    assert (view["status"], view["completedFiles"], view["failedFiles"]) == ("cancelled", 1, 2)
    assert pending_multiparts(s3_server) == []
    assert not exists(s3_server, half["key"])
    assert exists(s3_server, done["key"])  # finished members are left alone
    statuses = {u["uploadId"]: u["status"] for u in alice.get(f"/groups/{gid}").json["uploads"]}
    assert statuses == {
        done["uploadId"]: "completed",
        half["uploadId"]: "aborted",
        multipart["uploadId"]: "aborted",
    }
    assert alice.post(f"/groups/{gid}/cancel").json["status"] == "cancelled"  # idempotent
    assert len(names(events, "group_cancelled")) == 1
    assert names(events, "group_cancelled")[0]["view"] == view
    assert len(names(events, "upload_aborted")) == 2
    joined = alice.post("/uploads", json=file_spec(size=3, **BIN, groupId=gid))
    assert (joined.status_code, joined.json["error"]) == (409, "GROUP_CLOSED")

    deleted = alice.delete(f"/groups/{gid}")
    assert (deleted.status_code, deleted.json["status"]) == (200, "deleted")
    assert not exists(s3_server, done["key"])
    detail = alice.get(f"/groups/{gid}").json
    assert {u["status"] for u in detail["uploads"]} == {"deleted"}
    assert alice.delete(f"/groups/{gid}").json["status"] == "deleted"
    assert len(names(events, "upload_deleted")) == 3
    refused = alice.post(f"/groups/{gid}/cancel")
    assert (refused.status_code, refused.json["error"]) == (409, "GROUP_CLOSED")


def test_deleting_an_open_group_cancels_it_first(
    alice: UserClient, s3_server: Any, events: list[Any]
) -> None:
    gid = alice.post("/groups", json={"name": "trip"}).json["groupId"]
    multipart = open_multipart(alice, s3_server, groupId=gid)
    assert alice.delete(f"/groups/{gid}").json["status"] == "deleted"
    assert pending_multiparts(s3_server) == []
    assert alice.get(f"/uploads/{multipart['uploadId']}").json["status"] == "deleted"
    assert len(names(events, "group_cancelled")) == 1
