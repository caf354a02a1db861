"""Races found by the reliability audit: whoever loses a race still leaves storage clean,
and every caller answers the settled result.

Each test puts the other party's move at the exact point of the race (a wrapped storage
call runs the concurrent request there), so the interleaving is not left to chance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import BUCKET, UserClient
from flask import Flask
from test_companion import e2e_app, names, put_part, start  # noqa: F401 - fixtures
from test_multipart import content_of
from test_uploads import EXE

from flask_obitox import RedisStateBackend
from flask_obitox.state import UploadRecord
from flask_obitox.storage import Storage

MiB = 1024 * 1024

pytestmark = pytest.mark.redis


@contextmanager
def meanwhile(method: str, concurrent: Callable[[], Any]) -> Iterator[list[Any]]:
    """Run ``concurrent`` once, the first time ``Storage.<method>`` is called, just
    before (``head``/``read_head``) or after (others) the real call."""
    real = getattr(Storage, method)
    ran: list[Any] = []
    before = method in ("head", "read_head")

    def wrapped(self: Storage, *args: Any, **kwargs: Any) -> Any:
        first = not ran
        if first:
            ran.append(None)  # the concurrent request may call this method too
            if before:
                ran[0] = concurrent()
        result = real(self, *args, **kwargs)
        if first and not before:
            ran[0] = concurrent()
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Storage, method, wrapped)
        yield ran
    assert ran, f"Storage.{method} was never called"


def test_an_abort_landing_after_storage_assembled_the_object_deletes_it(
    alice: UserClient, s3_server: Any, events: list[Any]
) -> None:
    """Bug 1: DELETE /s3/multipart/<id> between CompleteMultipartUpload and the status
    compare-and-set. The abort wins; the assembled object must not stay in the bucket."""
    upload = start(alice)
    uid, key = upload["uploadId"], upload["key"]
    etag = put_part(alice, upload, 1, content_of(1 * MiB))
    path = f"/s3/multipart/{uid}/complete?key={key}"
    with meanwhile(
        "complete_multipart", lambda: alice.delete(f"/s3/multipart/{uid}?key={key}")
    ) as aborts:
        done = alice.post(path, json={"parts": [{"PartNumber": 1, "ETag": etag}]})
    assert aborts[0].status_code == 200
    assert done.status_code == 409, done.json
    assert done.json["error"] == "UPLOAD_ABORTED"
    assert s3_server.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0
    assert names(events).count("upload_aborted") == 1
    assert "upload_completed" not in names(events)


@pytest.mark.parametrize("method", ["head", "read_head"])
def test_concurrent_completes_of_a_refused_object_all_answer_422(
    alice: UserClient, s3_server: Any, events: list[Any], method: str
) -> None:
    """Bug 2: another complete refuses the object and deletes it while this one is
    between its checks (before its HEAD, or between HEAD and ranged GET). This caller
    must answer the settled 422, not 409 UPLOAD_NOT_COMPLETE or 503."""
    signed = alice.post(
        "/uploads", json={"filename": "evil.png", "contentType": "image/png", "size": len(EXE)}
    ).json
    s3_server.put_object(Bucket=BUCKET, Key=signed["key"], Body=EXE, ContentType="image/png")
    path = f"/uploads/{signed['uploadId']}/complete"
    with meanwhile(method, lambda: alice.post(path, json={})) as other:
        mine = alice.post(path, json={})
    assert other[0].status_code == 422
    assert (mine.status_code, mine.json["error"]) == (422, "CONTENT_MISMATCH"), mine.json
    assert names(events).count("upload_rejected") == 1


def test_a_lost_reply_to_the_winning_compare_still_sends_upload_completed(
    e2e_app: Flask,  # noqa: F811 - the fixture
    alice: UserClient,
    s3_server: Any,
    events: list[Any],
    redis_backend: RedisStateBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bug 3: Redis ran the status compare-and-set but the reply was lost and the
    command retried. The caller won and must know it: upload-completed fires once."""
    signed = alice.post(
        "/uploads", json={"filename": "a.txt", "contentType": "text/plain", "size": 5}
    ).json
    s3_server.put_object(Bucket=BUCKET, Key=signed["key"], Body=b"hello", ContentType="text/plain")
    real_swap = redis_backend._swap

    def reply_lost(key: str, old: Any, current: UploadRecord, new: UploadRecord) -> bool:
        real_swap(key, old, current, new)
        return real_swap(key, old, current, new)

    monkeypatch.setattr(redis_backend, "_swap", reply_lost)
    done = alice.post(f"/uploads/{signed['uploadId']}/complete", json={})
    assert done.status_code == 200, done.json
    assert names(events).count("upload_completed") == 1


def test_complete_by_key_never_says_whose_key_it_is(
    alice: UserClient, mallory: UserClient, s3_server: Any
) -> None:
    """POST /s3/complete?key=: another owner's key answers exactly as an unknown one."""
    answer = alice.get("/s3/params?filename=a.png&type=image/png").json
    key = answer["fields"]["key"]
    theirs = mallory.post(f"/s3/complete?key={key}", json={})
    unknown = mallory.post("/s3/complete?key=uploads/nope/a.png", json={})
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json["details"] == {"uploadId": key}
    assert key.split("/")[1] not in theirs.json["message"].replace(key, "")
