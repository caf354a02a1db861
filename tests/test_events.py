"""Live events (DESIGN §13): ``GET /events`` read over real HTTP from a real threaded
server, on the memory backend and on real Redis shared by two apps and an RQ worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from events_support import (
    EventSource,
    create_app,
    serving,
)
from flask import Flask
from state_support import make_group, make_record

from flask_obitox import signals
from flask_obitox.domain import EVENT_TYPES, render_upload

TESTS = Path(__file__).resolve().parent


def batch(base_url: str, user: str, count: int = 3, **extra: Any) -> list[dict[str, Any]]:
    response = requests.post(
        f"{base_url}/obitox/uploads/batch",
        json={
            "files": [
                {"filename": f"photo-{n}.png", "contentType": "image/png", "size": 100 + n}
                for n in range(count)
            ],
            **extra,
        },
        headers={"X-User": user},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    uploads: list[dict[str, Any]] = response.json()["uploads"]
    return uploads


@pytest.fixture
def memory_app(s3: Any) -> Flask:
    return create_app({"OBITOX_EVENTS_HEARTBEAT": 1})


@pytest.fixture
def served(memory_app: Flask) -> Iterator[str]:
    with serving(memory_app) as url:
        yield url


@pytest.fixture
def streams() -> Iterator[list[EventSource]]:
    opened: list[EventSource] = []
    yield opened
    for source in opened:
        source.close()


def open_stream(opened: list[EventSource], *args: Any, **kwargs: Any) -> EventSource:
    source = EventSource(*args, **kwargs)
    opened.append(source)
    assert source.status == 200, source.response.read()
    source.wait_open()
    return source


# -- the memory backend, in process ----------------------------------------------------


def test_signed_uploads_reach_the_stream_as_the_status_route_shows_them(
    served: str, streams: list[EventSource]
) -> None:
    source = open_stream(streams, served, "alice")
    assert source.response.getheader("Content-Type").startswith("text/event-stream")
    uploads = batch(served, "alice")
    messages = source.take(3)
    assert [m["event"] for m in messages] == ["upload.signed"] * 3
    assert [m["data"]["data"]["uploadId"] for m in messages] == [u["uploadId"] for u in uploads]
    ids = [m["id"] for m in messages]
    assert len(set(ids)) == 3
    for message in messages:
        body = message["data"]
        assert set(body) == {"type", "timestamp", "data"}
        assert body["type"] == message["event"]
        status = requests.get(
            f"{served}/obitox/uploads/{body['data']['uploadId']}",
            headers={"X-User": "alice"},
            timeout=20,
        ).json()
        assert body["data"] == status


def test_a_reconnect_with_last_event_id_gets_what_it_missed_once(
    served: str, streams: list[EventSource]
) -> None:
    source = open_stream(streams, served, "alice")
    batch(served, "alice", 2)
    seen = source.take(2)
    source.close()
    missed = batch(served, "alice", 3)
    again = open_stream(streams, served, "alice", last_event_id=seen[-1]["id"])
    replayed = again.take(3)
    assert [m["data"]["data"]["uploadId"] for m in replayed] == [u["uploadId"] for u in missed]
    # Then live ones, and none of the replayed twice.
    later = batch(served, "alice", 1)
    live = again.next()
    assert live is not None
    assert live["data"]["data"]["uploadId"] == later[0]["uploadId"]
    # The query parameter does the same for clients that cannot set headers.
    by_query = open_stream(streams, served, "alice", f"?lastEventId={replayed[0]['id']}")
    expected = [m["id"] for m in replayed[1:]] + [live["id"]]
    assert [m["id"] for m in by_query.take(3)] == expected


@pytest.mark.parametrize("bad", ["nonsense", "1-2-3", "99999999999999-0", "x" * 201])
def test_an_unknown_or_tampered_id_is_400_before_the_stream(served: str, bad: str) -> None:
    batch(served, "alice", 1)
    source = EventSource(served, "alice", last_event_id=bad)
    assert source.status == 400
    assert source.response.getheader("Content-Type") == "application/json"
    assert source.json()["error"] == "INVALID_INPUT"
    source.close()


def test_anonymous_callers_get_401(served: str) -> None:
    response = requests.get(f"{served}/obitox/events", timeout=20)
    assert response.status_code == 401
    assert response.json()["error"] == "UNAUTHENTICATED"


def test_another_owner_never_sees_my_events(served: str, streams: list[EventSource]) -> None:
    bob = open_stream(streams, served, "bob")
    alice = open_stream(streams, served, "alice")
    batch(served, "alice", 2)
    first = batch(served, "bob", 1)
    assert len(alice.take(2)) == 2
    batch(served, "alice", 2)
    second = batch(served, "bob", 1)
    got = bob.take(2)
    assert [m["data"]["data"]["uploadId"] for m in got] == [
        first[0]["uploadId"],
        second[0]["uploadId"],
    ]
    # Alice's newest id is no way into Bob's events: his stream has none after it.
    alice_last = [m["id"] for m in alice.take(2)][-1]
    replay = open_stream(streams, served, "bob", last_event_id=got[0]["id"])
    assert replay.take(1)[0]["id"] == got[1]["id"]
    assert alice_last  # read, so Alice's stream was live throughout


def test_upload_filter(served: str, s3: Any, streams: list[EventSource]) -> None:
    first, second = batch(served, "alice", 2)
    only = open_stream(streams, served, "alice", f"?uploadId={second['uploadId']}")
    everything = open_stream(streams, served, "alice")
    for upload in (first, second):
        # Not a PNG: the content check refuses it after upload, an upload.rejected.
        s3.put_object(Bucket=upload["bucket"], Key=upload["key"], Body=b"x" * (100 + 0))
        response = requests.post(
            f"{served}/obitox/uploads/{upload['uploadId']}/complete",
            json={},
            headers={"X-User": "alice"},
            timeout=20,
        )
        assert response.status_code == 422, response.text
    assert [m["data"]["data"]["uploadId"] for m in everything.take(2)] == [
        first["uploadId"],
        second["uploadId"],
    ]
    got = only.next()
    assert got is not None
    assert got["event"] == "upload.rejected"
    assert got["data"]["data"]["uploadId"] == second["uploadId"]


def test_heartbeat_comments_keep_an_idle_stream_open(
    served: str, streams: list[EventSource]
) -> None:
    source = open_stream(streams, served, "alice")
    assert source.next_comment() == "heartbeat"  # OBITOX_EVENTS_HEARTBEAT is 1 s here


def test_every_signal_maps_to_its_event_type(
    memory_app: Flask, served: str, streams: list[EventSource]
) -> None:
    source = open_stream(streams, served, "alice")
    upload = make_record(owner="alice")
    group = make_group(owner="alice")
    view = {"groupId": group.group_id, "name": group.name, "status": "pending"}
    sent = [
        (signals.upload_signed, {"upload": upload}),
        (signals.upload_progress, {"upload": upload}),
        (signals.multipart_initiated, {"upload": upload}),
        (signals.upload_completed, {"upload": upload}),
        (
            signals.upload_rejected,
            {
                "filename": "x.exe",
                "reason": "no",
                "stage": "validation",
                "code": "VALIDATION_FAILED",
                "owner": "alice",
                "upload": None,
            },
        ),
        (signals.upload_aborted, {"upload": upload}),
        (signals.upload_expired, {"upload": upload}),
        (signals.upload_deleted, {"upload": upload}),
        (signals.group_created, {"group": group, "view": view}),
        (signals.group_progress, {"group": group, "view": view}),
        (signals.group_completed, {"group": group, "view": view}),
        (signals.group_failed, {"group": group, "view": view}),
        (signals.group_cancelled, {"group": group, "view": view}),
        (signals.processing_completed, {"upload": upload, "name": "thumb", "result": {"w": 1}}),
        (
            signals.processing_failed,
            {"upload": upload, "name": "thumb", "error": "boom", "final": True},
        ),
        (signals.upload_ready, {"upload": upload}),
    ]
    with memory_app.app_context():  # outside a request: each is appended at once
        for signal, kwargs in sent:
            signal.send(memory_app, **kwargs)
    messages = source.take(len(sent))
    assert tuple(m["event"] for m in messages) == EVENT_TYPES
    rendered = json.loads(json.dumps(render_upload(upload)))
    assert messages[0]["data"]["data"] == rendered
    assert messages[4]["data"]["data"]["uploadId"] is None
    assert messages[4]["data"]["data"]["code"] == "VALIDATION_FAILED"
    assert messages[8]["data"]["data"] == view
    assert messages[13]["data"]["data"] == {**rendered, "processor": "thumb", "result": {"w": 1}}
    assert messages[14]["data"]["data"]["error"] == "boom"


def test_group_filter(memory_app: Flask, served: str, streams: list[EventSource]) -> None:
    group, other = make_group(owner="alice"), make_group(owner="alice")
    only = open_stream(streams, served, "alice", f"?groupId={group.group_id}")
    with memory_app.app_context():
        for each in (other, group):
            view = {"groupId": each.group_id, "status": "completed"}
            signals.group_completed.send(memory_app, group=each, view=view)
    got = only.next()
    assert got is not None
    assert got["data"]["data"]["groupId"] == group.group_id


def test_events_off_publishes_nothing(s3: Any, streams: list[EventSource]) -> None:
    app = create_app({"OBITOX_EVENTS": False, "OBITOX_EVENTS_HEARTBEAT": 1})
    with serving(app) as url:
        source = open_stream(streams, url, "alice")
        batch(url, "alice", 1)
        assert source.next_comment() == "heartbeat"


def test_open_streams_gauge(s3: Any, streams: list[EventSource]) -> None:
    app = create_app({"OBITOX_METRICS": True})
    with serving(app) as url:
        open_stream(streams, url, "alice")
        open_stream(streams, url, "bob")
        text = requests.get(f"{url}/obitox/metrics", timeout=20).text
        assert "obitox_event_streams_open 2.0" in text
