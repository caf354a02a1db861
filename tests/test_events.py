"""Live events (DESIGN §13): ``GET /events`` read over real HTTP from a real threaded
server, on the memory backend and on real Redis shared by two apps and an RQ worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import requests
from events_support import (
    EventSource,
    TcpProxy,
    create_app,
    delete_prefix,
    new_prefix,
    serving,
)
from flask import Flask
from state_support import RoundTrips, make_group, make_record
from webhook_support import delete_rq_keys

from flask_obitox import signals
from flask_obitox.domain import EVENT_TYPES, render_upload
from flask_obitox.state import RedisStateBackend

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
    # Each progress report's event with its request: these tests follow every event
    # (the held, once-per-interval publishing has tests of its own, at the end).
    return create_app({"OBITOX_EVENTS_HEARTBEAT": 1, "OBITOX_EVENTS_PROGRESS_INTERVAL_MS": 0})


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


def test_one_teardown_sends_what_a_request_left(memory_app: Flask) -> None:
    """Live events, webhook deliveries and processing runs wait for the request's end,
    and one teardown function sends all three: Flask prepares each teardown function on
    every request of the app, the host's own routes included (docs/performance)."""
    from flask_obitox.request_end import send_pending

    assert memory_app.teardown_request_funcs == {None: [send_pending]}


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


# -- real Redis: every process's events reach every stream ---------------------------


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    name = new_prefix()
    yield name
    delete_prefix(redis_url, name)


def redis_config(redis_url: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"EVENTS_TEST_REDIS_URL": redis_url, "EVENTS_TEST_PREFIX": prefix, **extra}


@pytest.mark.redis
def test_an_event_through_app_a_reaches_a_stream_on_app_b(
    s3: Any, redis_url: str, prefix: str, streams: list[EventSource]
) -> None:
    app_a = create_app(redis_config(redis_url, prefix))
    app_b = create_app(redis_config(redis_url, prefix))
    with serving(app_a) as url_a, serving(app_b) as url_b:
        on_b = open_stream(streams, url_b, "alice")
        other_on_b = open_stream(streams, url_b, "bob")
        on_a = open_stream(streams, url_a, "alice")
        uploads = batch(url_a, "alice", 3)
        expected = [u["uploadId"] for u in uploads]
        got_b = on_b.take(3)
        assert [m["data"]["data"]["uploadId"] for m in got_b] == expected
        assert [m["id"] for m in on_a.take(3)] == [m["id"] for m in got_b]
        # Bob, followed by the same reader on B, gets only his own.
        mine = batch(url_a, "bob", 1)
        assert other_on_b.take(1)[0]["data"]["data"]["uploadId"] == mine[0]["uploadId"]
        # A reconnect on the other app replays from the shared stream.
        again = open_stream(streams, url_a, "alice", last_event_id=got_b[0]["id"])
        assert [m["id"] for m in again.take(2)] == [m["id"] for m in got_b[1:]]


@pytest.mark.redis
def test_signed_events_go_with_their_records_write(
    s3: Any, redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [{"filename": f"p{n}.png", "contentType": "image/png", "size": 100} for n in range(100)]
    requests_ = {
        "batch": ("/obitox/uploads/batch", {"files": files}),
        "single": ("/obitox/uploads", files[0]),
        "grouped": ("/obitox/uploads/batch", {"files": files[:3], "group": {"name": "g"}}),
    }
    counts: dict[tuple[str, bool], int] = {}
    for events_on in (False, True):
        client = create_app(redis_config(redis_url, prefix, OBITOX_EVENTS=events_on)).test_client()
        for name, (path, body) in requests_.items():
            client.post(path, json=body, headers={"X-User": "alice"})  # warm
            with RoundTrips().counting(monkeypatch) as trips:
                response = client.post(path, json=body, headers={"X-User": "alice"})
            assert response.status_code in (200, 201), response.json
            counts[name, events_on] = trips.count
    # With the records' write: no round trip more for the events...
    assert counts["batch", True] == counts["batch", False]
    assert counts["single", True] == counts["single", False]
    # ... unless the records join a group (a refused join deletes them: no event first).
    assert counts["grouped", True] == counts["grouped", False] + 1
    state = RedisStateBackend.from_url(redis_url, prefix=prefix)
    events = [event for _, event in state.read_events("alice", count=1000)]
    signed = [event["data"] for event in events if event["type"] == "upload.signed"]
    assert len(signed) == 2 * (100 + 1 + 3)  # each request's, twice, each once
    assert len({view["uploadId"] for view in signed}) == len(signed)
    assert [e["type"] for e in events[-4:]] == ["upload.signed"] * 3 + ["group.created"]


@pytest.mark.redis
def test_an_event_from_an_rq_worker_process_reaches_the_stream(
    redis_url: str,
    prefix: str,
    moto_server: str,
    s3_server: Any,
    tmp_path: Path,
    streams: list[EventSource],
) -> None:
    queue = f"{prefix}-jobs"
    config = redis_config(redis_url, prefix, OBITOX_ENDPOINT_URL=moto_server, OBITOX_RQ_QUEUE=queue)
    app = create_app(config)
    state = RedisStateBackend.from_url(redis_url, prefix=prefix)
    past = time.time() - 3600
    record = make_record(owner="alice", created_at=past - 60, updated_at=past, expires_at=past)
    state.create(record, ttl=3600)
    log = (tmp_path / "worker.log").open("wb")
    worker: subprocess.Popen[bytes] | None = None
    try:
        with serving(app) as url:
            source = open_stream(streams, url, "alice")
            with app.app_context():
                from flask_obitox.webhooks import webhook_queue

                webhook_queue().enqueue("flask_obitox.jobs.cleanup", False)
            # Started after the job is queued: a burst worker leaves once the queue is empty.
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flask",
                    "--app",
                    "events_support:create_app",
                    "obitox",
                    "worker",
                    "--burst",
                ],
                cwd=TESTS,
                env={
                    **os.environ,
                    "EVENTS_TEST_CONFIG": json.dumps(config),
                    "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            message = source.take(1)[0]
            assert message["event"] == "upload.expired"
            assert message["data"]["data"]["uploadId"] == record.upload_id
            assert message["data"]["data"]["status"] == "expired"
    finally:
        try:
            if worker is not None:
                worker.wait(60)
        finally:
            if worker is not None and worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(10)
            log.close()
            delete_rq_keys(redis.Redis.from_url(redis_url), queue)
    assert worker is not None
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()


@pytest.mark.redis
def test_redis_down_ends_the_stream_and_a_reconnect_loses_nothing(
    s3: Any, redis_url: str, prefix: str, streams: list[EventSource]
) -> None:
    where = urlsplit(redis_url)
    proxy = TcpProxy(where.hostname or "127.0.0.1", where.port or 6379)
    proxied = f"redis://127.0.0.1:{proxy.port}{where.path}"
    app = create_app(redis_config(proxied, prefix, OBITOX_EVENTS_HEARTBEAT=1))
    direct = RedisStateBackend.from_url(redis_url, prefix=prefix)
    try:
        with serving(app) as url:
            source = open_stream(streams, url, "alice")
            batch(url, "alice", 1)
            seen = source.take(1)
            proxy.cut()
            # The stream ends: no hang, no traceback in the body.
            assert source.next() is None
            # Written meanwhile by another process that still reaches Redis.
            written = [
                direct.append_event(
                    "alice",
                    {"type": "upload.progress", "timestamp": "t", "data": {"uploadId": str(n)}},
                )
                for n in range(3)
            ]
            down = EventSource(url, "alice", last_event_id=seen[0]["id"])
            streams.append(down)
            assert down.status == 503
            assert down.json()["error"] == "STATE_UNAVAILABLE"
            proxy.restore()
            again = open_stream(streams, url, "alice", last_event_id=seen[0]["id"])
            assert [m["id"] for m in again.take(3)] == written
    finally:
        proxy.close()


def test_a_refused_file_name_with_a_lone_surrogate_is_an_event_too(
    served: str, streams: list[EventSource]
) -> None:
    source = open_stream(streams, served, "alice")
    name = "bad\ud800.exe"
    response = requests.post(
        f"{served}/obitox/uploads/batch",
        data=json.dumps({"files": [{"filename": name, "contentType": "image/png", "size": 1}]}),
        headers={"X-User": "alice", "Content-Type": "application/json"},
        timeout=20,
    )
    assert response.status_code == 200
    message = source.take(1)[0]
    assert message["event"] == "upload.rejected"
    assert response.json()["errors"][0]["filename"] == name
    assert message["data"]["data"]["filename"] == "bad\ufffd.exe"


# -- upload.progress at most once per interval per upload ---------------------------------


def _progress_app(interval_ms: int) -> tuple[Flask, Any]:
    app = create_app({"OBITOX_EVENTS_PROGRESS_INTERVAL_MS": interval_ms})
    return app, app.extensions["obitox"].state


def _reports(app: Flask, counts: list[int]) -> str:
    client = app.test_client()
    headers = {"X-User": "alice"}
    spec = {"filename": "a.bin", "contentType": "application/octet-stream", "size": 1000}
    upload_id = client.post("/obitox/uploads", json=spec, headers=headers).json["uploadId"]
    for count in counts:
        answer = client.post(
            f"/obitox/uploads/{upload_id}/progress", json={"uploadedBytes": count}, headers=headers
        )
        assert answer.status_code == 202, answer.json
    return str(upload_id)


def _progress_seen(state: Any) -> list[int]:
    return [
        event["data"]["uploadedBytes"]
        for _, event in state.read_events("alice", count=100)
        if event["type"] == "upload.progress"
    ]


def test_reports_are_published_together_once_per_interval_the_latest_of_each(s3: Any) -> None:
    app, state = _progress_app(300)
    _reports(app, [100, 200, 300])
    assert _progress_seen(state) == []  # held: no round trip for the requests
    deadline = time.monotonic() + 5
    while not _progress_seen(state) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _progress_seen(state) == [300]
    _reports(app, [400])
    time.sleep(0.5)
    assert _progress_seen(state) == [300, 400]  # one per upload per interval


def test_a_later_event_of_the_upload_drops_its_held_report(s3: Any) -> None:
    app, state = _progress_app(300)
    upload_id = _reports(app, [100, 200])
    deleted = app.test_client().delete(f"/obitox/uploads/{upload_id}", headers={"X-User": "alice"})
    assert deleted.status_code in (200, 204), deleted.data
    time.sleep(0.5)
    types = [event["type"] for _, event in state.read_events("alice", count=100)]
    assert types[-1] == "upload.deleted"
    assert _progress_seen(state) == []


def test_an_interval_of_zero_publishes_every_report(s3: Any) -> None:
    app, state = _progress_app(0)
    _reports(app, [100, 200, 300])
    assert _progress_seen(state) == [100, 200, 300]
