"""Groups (DESIGN §11): create, join, seal, read, list, cancel, delete; the status rules,
and exactly one ``group-completed`` however many members settle at the same moment."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import BUCKET, UserClient, file_spec, make_app
from flask import Flask

from flask_obitox import MemoryStateBackend, RedisStateBackend, signals

BIN = {"contentType": "application/octet-stream"}


def spec(name: str = "f.bin", size: int = 3, **extra: Any) -> dict[str, Any]:
    return file_spec(filename=name, size=size, **BIN, **extra)


@pytest.fixture
def seen(app: Flask) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every signal ``app`` sends, as (python name, keyword arguments)."""
    log: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()
    receivers = []
    for name in signals.__all__:

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            with lock:
                log.append((_name, kwargs))

        getattr(signals, name).connect(receiver, sender=app)
        receivers.append((getattr(signals, name), receiver))
    yield log
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def named(log: list[tuple[str, dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    return [kwargs for signal, kwargs in log if signal == name]


def new_group(client: UserClient, **extra: Any) -> dict[str, Any]:
    response = client.post("/groups", json={"name": "holiday", **extra})
    assert response.status_code == 201, response.json
    return dict(response.json)


def upload_into(client: UserClient, group_id: str, name: str = "f.bin") -> dict[str, Any]:
    response = client.post("/uploads", json=spec(name, groupId=group_id))
    assert response.status_code == 201, response.json
    return dict(response.json)


def store(s3: Any, signed: dict[str, Any], body: bytes = b"abc") -> None:
    s3.put_object(Bucket=BUCKET, Key=signed["key"], Body=body)


# -- create, read, list ------------------------------------------------------------------


def test_create_read_and_list(client: UserClient, seen: list[Any]) -> None:
    group = new_group(client, description="two weeks", metadata={"Trip": "Rome"})
    assert group["status"] == "pending"
    assert group["sealed"] is False
    assert group["metadata"] == {"trip": "Rome"}
    assert (group["totalFiles"], group["totalBytes"], group["percentage"]) == (0, 0, 0.0)
    [created] = named(seen, "group_created")
    assert created["view"] == group
    assert created["group"].group_id == group["groupId"]
    first = upload_into(client, group["groupId"], "a.bin")
    second = upload_into(client, group["groupId"], "b.bin")
    detail = client.get(f"/groups/{group['groupId']}").json
    assert [u["uploadId"] for u in detail["uploads"]] == [first["uploadId"], second["uploadId"]]
    assert all(u["groupId"] == group["groupId"] for u in detail["uploads"])
    assert (detail["totalFiles"], detail["totalBytes"]) == (2, 6)
    other = new_group(client, name="other")
    listing = client.get("/groups").json
    assert [g["groupId"] for g in listing["groups"]] == [other["groupId"], group["groupId"]]
    assert listing["groups"][1]["totalFiles"] == 2
    assert client.get("/groups?status=pending&limit=1").json["nextCursor"] is not None
    assert client.get("/groups?status=cancelled").json == {"groups": [], "nextCursor": None}


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "x", "extra": 1}, {"name": "x", "metadata": {"bad key": "v"}}],
)
def test_bad_group_bodies_are_400_and_store_nothing(client: UserClient, body: Any) -> None:
    response = client.post("/groups", json=body)
    assert response.status_code == 400
    assert response.json["error"] == "INVALID_INPUT"
    assert client.get("/groups").json["groups"] == []


def test_bad_group_queries_are_400(client: UserClient) -> None:
    for query in ("status=open", "limit=0", "limit=101", "cursor=garbage", "colour=red"):
        response = client.get(f"/groups?{query}")
        assert response.status_code == 400, query
        assert response.json["error"] == "INVALID_INPUT"


def test_another_owners_group_is_not_found(client: UserClient, other_client: UserClient) -> None:
    group = new_group(client)
    gid = group["groupId"]
    answers = [
        other_client.get(f"/groups/{gid}"),
        other_client.post(f"/groups/{gid}/seal"),
        other_client.post(f"/groups/{gid}/cancel"),
        other_client.delete(f"/groups/{gid}"),
        other_client.post("/uploads", json=spec(groupId=gid)),
        other_client.post("/uploads/batch", json={"files": [spec()], "groupId": gid}),
        other_client.post("/multipart", json=spec(size=6 * 2**20, groupId=gid)),
        client.get("/groups/no-such-group"),
    ]
    for response in answers:
        assert response.status_code == 404, response.json
        assert response.json["error"] == "GROUP_NOT_FOUND"
    assert other_client.get("/groups").json["groups"] == []
    assert other_client.get("/uploads").json["uploads"] == []
    assert client.get(f"/groups/{gid}").json["status"] == "pending"


@pytest.mark.parametrize("close", ["seal", "cancel"])
def test_a_closed_group_takes_no_members(client: UserClient, close: str) -> None:
    gid = new_group(client)["groupId"]
    assert client.post(f"/groups/{gid}/{close}").status_code == 200
    answers = [
        client.post("/uploads", json=spec(groupId=gid)),
        client.post("/uploads/batch", json={"files": [spec()], "groupId": gid}),
        client.post("/multipart", json=spec(size=6 * 2**20, groupId=gid)),
    ]
    for response in answers:
        assert response.status_code == 409, response.json
        assert response.json["error"] == "GROUP_CLOSED"
    assert client.get("/uploads").json["uploads"] == []
    assert client.get(f"/groups/{gid}").json["totalFiles"] == 0


def test_a_batch_makes_a_sealed_group_of_exactly_its_signed_files(
    client: UserClient, seen: list[Any]
) -> None:
    files = [spec("a.bin"), spec("evil.exe"), spec("b.bin")]
    body = client.post("/uploads/batch", json={"files": files, "group": {"name": "pics"}}).json
    assert (body["successful"], body["failed"]) == (2, 1)
    detail = client.get(f"/groups/{body['groupId']}").json
    assert detail["sealed"] is True
    assert [u["uploadId"] for u in detail["uploads"]] == [u["uploadId"] for u in body["uploads"]]
    [created] = named(seen, "group_created")
    assert created["view"]["totalFiles"] == 2
    assert created["view"]["sealed"] is True
    both = client.post(
        "/uploads/batch", json={"files": files, "group": {"name": "x"}, "groupId": "g"}
    )
    assert (both.status_code, both.json["error"]) == (400, "INVALID_INPUT")


def test_a_batch_joins_a_group(client: UserClient) -> None:
    gid = new_group(client)["groupId"]
    body = client.post("/uploads/batch", json={"files": [spec(), spec()], "groupId": gid}).json
    assert body["groupId"] == gid
    assert client.get(f"/groups/{gid}").json["totalFiles"] == 2
    assert client.get(f"/uploads?groupId={gid}").json["uploads"][0]["groupId"] == gid


# -- the status rules --------------------------------------------------------------------


def test_pending_in_progress_then_completed_once_sealed(
    client: UserClient, s3: Any, seen: list[Any]
) -> None:
    gid = new_group(client)["groupId"]
    first, second = upload_into(client, gid), upload_into(client, gid)
    assert client.post(f"/uploads/{first['uploadId']}/progress", json={"uploadedBytes": 1})
    view = client.get(f"/groups/{gid}").json
    assert (view["status"], view["uploadedBytes"]) == ("in_progress", 1)
    assert named(seen, "group_progress")[-1]["view"]["status"] == "in_progress"
    for signed in (first, second):
        store(s3, signed)
        assert client.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200
    view = client.get(f"/groups/{gid}").json
    # Not sealed: more members may come, so it is not completed yet.
    assert (view["status"], view["completedFiles"]) == ("in_progress", 2)
    assert named(seen, "group_completed") == []
    sealed = client.post(f"/groups/{gid}/seal").json
    assert (sealed["status"], sealed["percentage"], sealed["uploadedBytes"]) == (
        "completed",
        100.0,
        6,
    )
    assert client.post(f"/groups/{gid}/seal").json["status"] == "completed"
    [completed] = named(seen, "group_completed")
    assert completed["view"] == sealed
    assert client.get("/groups?status=completed").json["groups"][0]["groupId"] == gid


def test_a_member_that_fails_fails_the_sealed_group_once(
    client: UserClient, s3: Any, seen: list[Any]
) -> None:
    gid = new_group(client)["groupId"]
    good, bad = upload_into(client, gid), upload_into(client, gid)
    client.post(f"/groups/{gid}/seal")
    store(s3, good)
    store(s3, bad, b"four")  # not the size that was signed: rejected
    assert client.post(f"/uploads/{good['uploadId']}/complete").status_code == 200
    assert client.get(f"/groups/{gid}").json["status"] == "in_progress"
    assert client.post(f"/uploads/{bad['uploadId']}/complete").status_code == 422
    view = client.get(f"/groups/{gid}").json
    assert (view["status"], view["completedFiles"], view["failedFiles"]) == ("failed", 1, 1)
    [failed] = named(seen, "group_failed")
    assert failed["view"]["status"] == "failed"
    assert named(seen, "group_completed") == []


# -- exactly one group-completed ---------------------------------------------------------


def _race_rounds(app: Flask, s3: Any, rounds: int = 4, members: int = 8) -> None:
    """Groups whose members all complete at the same moment, from as many threads."""
    alice = UserClient(app, "alice")
    done: list[str] = []
    lock = threading.Lock()

    def on_completed(sender: Any, group: Any, view: Any, **extra: Any) -> None:
        with lock:
            done.append(group.group_id)

    signals.group_completed.connect(on_completed, sender=app)
    try:
        for _ in range(rounds):
            files = [spec(f"f{i}.bin") for i in range(members)]
            body = alice.post("/uploads/batch", json={"files": files, "group": {"name": "r"}})
            gid = body.json["groupId"]
            for signed in body.json["uploads"]:
                store(s3, signed)
            barrier = threading.Barrier(members)
            answers: list[int] = []

            def complete(
                upload_id: str, barrier: threading.Barrier = barrier, answers: list[int] = answers
            ) -> None:
                client = UserClient(app, "alice")
                barrier.wait()
                response = client.post(f"/uploads/{upload_id}/complete")
                with lock:
                    answers.append(response.status_code)

            threads = [
                threading.Thread(target=complete, args=(u["uploadId"],))
                for u in body.json["uploads"]
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert answers == [200] * members
            assert done.count(gid) == 1
            view = alice.get(f"/groups/{gid}").json
            assert (view["status"], view["completedFiles"]) == ("completed", members)
    finally:
        signals.group_completed.disconnect(on_completed, sender=app)


def test_members_completing_together_complete_the_group_once_memory(s3: Any) -> None:
    app, _ = make_app(MemoryStateBackend())
    _race_rounds(app, s3)


def test_members_completing_together_complete_the_group_once_redis(s3: Any, redis_url: str) -> None:
    prefix = f"obitox-test-groups-{uuid.uuid4().hex[:12]}"
    app, _ = make_app(RedisStateBackend.from_url(redis_url, prefix=prefix))
    try:
        _race_rounds(app, s3)
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)


# -- state down ---------------------------------------------------------------------------


def test_redis_down_is_503_on_every_group_route(s3: Any) -> None:
    app, _ = make_app(
        RedisStateBackend.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    )
    alice = UserClient(app, "alice")
    for response in (
        alice.post("/groups", json={"name": "x"}),
        alice.get("/groups"),
        alice.get("/groups/g"),
        alice.post("/groups/g/seal"),
        alice.post("/groups/g/cancel"),
        alice.delete("/groups/g"),
        alice.get("/uploads"),
        alice.delete("/uploads/u"),
        alice.post("/uploads/u/progress", json={"uploadedBytes": 1}),
        alice.get("/uploads/u/download"),
    ):
        assert response.status_code == 503, response.json
        assert response.json["error"] == "STATE_UNAVAILABLE"
