"""Webhooks in one process: configuration, messages, signatures, enqueueing, targets.

Real parts: Redis (RQ's queues), a real RQ worker run in burst mode for the deliveries
that never wait for a retry, a receiver on 127.0.0.1 (pytest-httpserver) and the
``standardwebhooks`` reference library to verify signatures. The scenarios that need a
worker process (retries, replay, SIGKILL) are in ``test_webhooks_worker.py``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask import Flask
from pytest_httpserver import HTTPServer
from rq import Queue
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from webhook_support import (
    OTHER_SECRET,
    SECRET,
    Receiver,
    complete_upload,
    create_app,
    delete_rq_keys,
    webhook_config,
    work_burst,
)
from werkzeug import Response

from flask_obitox import ConfigError, ObitoX, UploadRecord, signals
from flask_obitox import config as config_module
from flask_obitox.config import load_settings
from flask_obitox.webhooks import (
    WebhookTargetRefused,
    check_target,
    delivery_job_id,
    dispatch,
    signed_headers,
    webhook_queue,
    webhooks_for,
)
from flask_obitox.webhooks.failures import failed_deliveries
from flask_obitox.webhooks.targets import display_url

# -- fixtures ------------------------------------------------------------------------


@pytest.fixture
def config(redis_url: str, queue_name: str, receiver: Receiver) -> dict[str, Any]:
    return webhook_config(redis_url, queue_name, receiver.url)


def record_signals(app: Flask) -> list[tuple[str, dict[str, Any]]]:
    seen: list[tuple[str, dict[str, Any]]] = []

    @signals.webhook_delivered.connect_via(app)
    def delivered(sender: Flask, **kwargs: Any) -> None:
        seen.append(("delivered", kwargs))

    @signals.webhook_failed.connect_via(app)
    def failed(sender: Flask, **kwargs: Any) -> None:
        seen.append(("failed", kwargs))

    return seen


def record(upload_id: str = "up-1", **overrides: Any) -> UploadRecord:
    now = time.time()
    fields: dict[str, Any] = {
        "upload_id": upload_id,
        "owner": "alice",
        "kind": "single",
        "bucket": "obitox-test",
        "key": f"uploads/{upload_id}/cat.png",
        "filename": "cat.png",
        "content_type": "image/png",
        "size": 2056,
        "status": "completed",
        "created_at": now,
        "updated_at": now,
        "expires_at": now + 3600,
        "metadata": {"album": "pets"},
        "result": {"etag": '"abc"', "size": 2056},
    }
    fields.update(overrides)
    return UploadRecord(**fields)


# -- signatures ----------------------------------------------------------------------


def test_signatures_verify_with_the_standardwebhooks_library() -> None:
    app = create_app(
        {"OBITOX_WEBHOOKS": [{"url": "https://hooks.example.com/x", "secret": SECRET}]}
    )
    [endpoint] = webhooks_for(app).endpoints
    body = b'{"type":"upload.completed","data":{"filename":"caf\xc3\xa9.png"}}'
    headers = signed_headers(endpoint.key, "msg_1", body)
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers)["data"]["filename"] == "café.png"
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"caf", b"cat"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(body, headers)
    stale = signed_headers(endpoint.key, "msg_1", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(body, stale)


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"OBITOX_WEBHOOKS": [{"url": "https://h.example/x"}]}, "whsec_"),
        ({"OBITOX_WEBHOOKS": [{"url": "https://h.example/x", "secret": "hunter2"}]}, "whsec_"),
        (
            {"OBITOX_WEBHOOKS": [{"url": "https://h.example/x", "secret": "whsec_c2hvcnQ="}]},
            "24 to 64",
        ),
        ({"OBITOX_WEBHOOKS": [{"url": "https://h.example/x", "secret": "whsec_***"}]}, "base64"),
        (
            {
                "OBITOX_WEBHOOKS": [
                    {"url": "https://h.example/x", "secret": SECRET, "events": ["upload.done"]}
                ]
            },
            "unknown events",
        ),
        (
            {
                "OBITOX_WEBHOOKS": [
                    {"url": "https://h.example/x", "secret": SECRET, "events": "upload.completed"}
                ]
            },
            "non-empty list",
        ),
        (
            {"OBITOX_WEBHOOKS": [{"url": "https://h.example/x", "secret": SECRET, "event": []}]},
            "unknown fields",
        ),
        ({"OBITOX_WEBHOOKS": [{"url": "ftp://h.example/x", "secret": SECRET}]}, "http://"),
        (
            {"OBITOX_WEBHOOKS": [{"url": "https://h.example/x", "secret": SECRET}] * 2},
            "more than once",
        ),
        (
            {
                "OBITOX_WEBHOOKS": [{"url": "https://evil.example/x", "secret": SECRET}],
                "OBITOX_WEBHOOK_ALLOWED_HOSTS": ["*.example.com"],
            },
            "OBITOX_WEBHOOK_ALLOWED_HOSTS",
        ),
        ({"OBITOX_WEBHOOK_ALLOWED_HOSTS": ["https://hooks.example.com"]}, "without scheme"),
        ({"OBITOX_WEBHOOK_TIMEOUT": 0}, "OBITOX_WEBHOOK_TIMEOUT"),
        ({"OBITOX_WEBHOOK_INCLUDE_OWNER": "yes"}, "OBITOX_WEBHOOK_INCLUDE_OWNER"),
        ({"OBITOX_RQ_REDIS_URL": "http://redis:6379"}, "OBITOX_RQ_REDIS_URL"),
    ],
)
def test_bad_webhook_config_fails_at_init_app(config: dict[str, Any], message: str) -> None:
    app = Flask("bad")
    app.config.update(OBITOX_BUCKET="b", OBITOX_STATE_BACKEND="memory://", **config)
    with pytest.raises(ConfigError, match=message) as raised:
        ObitoX(app)
    assert "obitox" not in app.extensions
    assert SECRET not in str(raised.value)


def test_endpoint_defaults_and_allowed_hosts() -> None:
    settings = load_settings(
        {
            "OBITOX_BUCKET": "b",
            "OBITOX_WEBHOOK_ALLOWED_HOSTS": "*.example.com, Hooks.Partner.NET",
            "OBITOX_WEBHOOKS": [
                {"url": "https://a.example.com/hook", "secret": SECRET},
                {
                    "url": "https://hooks.partner.net/x",
                    "secret": SECRET,
                    "events": ["upload.expired"],
                },
            ],
        }
    )
    assert settings.webhook_allowed_hosts == ("*.example.com", "hooks.partner.net")
    first, second = settings.webhooks
    # By default part one's upload events: every newer one is asked for by name, so an
    # endpoint configured before it gets no new kind of message.
    assert first["events"] == (
        "upload.completed",
        "upload.aborted",
        "upload.rejected",
        "upload.expired",
    )
    assert second["events"] == ("upload.expired",)
    assert SECRET not in repr(settings)


def test_rq_uses_the_state_redis_then_redis_url() -> None:
    def rq_url(**config: Any) -> str:
        return load_settings({"OBITOX_BUCKET": "b", **config}).rq_redis_url

    assert rq_url(OBITOX_STATE_BACKEND="redis://state:6379/1") == "redis://state:6379/1"
    assert (
        rq_url(OBITOX_STATE_BACKEND="memory://", REDIS_URL="redis://app:6379/2")
        == "redis://app:6379/2"
    )
    assert (
        rq_url(OBITOX_STATE_BACKEND="redis://state/1", OBITOX_RQ_REDIS_URL="rediss://q/3")
        == "rediss://q/3"
    )
    assert rq_url(OBITOX_STATE_BACKEND="memory://") == "redis://localhost:6379/0"


def test_add_webhook_checks_its_endpoint_and_counts_after_init_app() -> None:
    obitox = ObitoX()
    with pytest.raises(ConfigError, match="whsec_"):
        obitox.add_webhook("https://hooks.example.com/a", "not-a-secret")
    with pytest.raises(ConfigError, match="unknown events"):
        obitox.add_webhook("https://hooks.example.com/a", SECRET, events=["upload.signed"])
    obitox.add_webhook("https://hooks.example.com/a", SECRET, events=["upload.completed"])
    with pytest.raises(ConfigError, match="already an endpoint"):
        obitox.add_webhook("https://hooks.example.com/a", OTHER_SECRET)
    app = Flask("added")
    app.config.update(OBITOX_BUCKET="b", OBITOX_STATE_BACKEND="memory://")
    obitox.init_app(app)
    obitox.add_webhook("https://hooks.example.com/b", OTHER_SECRET)
    webhooks = webhooks_for(app)
    assert [e.url for e in webhooks.subscribers("upload.completed")] == [
        "https://hooks.example.com/a",
        "https://hooks.example.com/b",
    ]
    assert [e.url for e in webhooks.subscribers("upload.expired")] == [
        "https://hooks.example.com/b"
    ]


# -- enqueueing ----------------------------------------------------------------------


def test_init_app_never_connects_and_a_dead_rq_redis_never_fails_a_completion(
    s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        {
            "OBITOX_RQ_REDIS_URL": "redis://127.0.0.1:1/0",
            "OBITOX_WEBHOOKS": [{"url": "https://hooks.example.com/x", "secret": SECRET}],
        }
    )
    queue = webhook_queue(app)  # no connection is made for this either
    assert queue.name == "obitox-webhooks"
    with caplog.at_level(logging.ERROR, logger="flask_obitox.webhooks"):
        answer = complete_upload(app, s3)
    assert answer["status"] == "completed"
    [logged] = [r for r in caplog.records if "could not be enqueued" in r.getMessage()]
    text = logged.getMessage()
    assert answer["uploadId"] in text  # the body is logged, so the event can be resent
    assert "redis://127.0.0.1:1/0" in text


def test_a_completion_enqueues_one_job_per_subscribed_endpoint(
    s3: Any, redis_url: str, queue_name: str, receiver: Receiver
) -> None:
    app = create_app(
        webhook_config(
            redis_url,
            queue_name,
            receiver.url,
            OBITOX_WEBHOOKS=[
                {"url": receiver.url, "secret": SECRET, "events": ["upload.completed"]},
                {
                    "url": "https://rejections.example.com/",
                    "secret": OTHER_SECRET,
                    "events": ["upload.rejected"],
                },
            ],
        )
    )
    answer = complete_upload(app, s3)
    queue = webhook_queue(app)
    [job] = queue.get_jobs()
    message_id, event, url, _body = job.args
    assert (event, url) == ("upload.completed", receiver.url)
    assert job.id == delivery_job_id(message_id, webhooks_for(app).endpoint(receiver.url))  # type: ignore[arg-type]
    assert job.retries_left is None  # OBITOX_WEBHOOK_RETRY_SCHEDULE is [] here
    assert job.timeout == 5 + 5

    work_burst(app)
    [got] = receiver.requests
    payload = Webhook(SECRET).verify(got["body"], got["headers"])
    assert got["headers"]["Webhook-Id"] == message_id
    assert payload["type"] == "upload.completed"
    data = payload["data"]
    assert data["uploadId"] == answer["uploadId"]
    assert (data["key"], data["bucket"], data["etag"]) == (
        answer["key"],
        answer["bucket"],
        answer["etag"],
    )
    assert (data["size"], data["contentType"], data["filename"]) == (
        answer["size"],
        "image/png",
        "cat.png",
    )
    assert data["status"] == "completed"
    assert data["metadata"] == {}
    assert "owner" not in data  # OBITOX_WEBHOOK_INCLUDE_OWNER is off
    assert payload["timestamp"].endswith("Z")


def test_unique_job_ids_stop_duplicates(
    redis_url: str, queue_name: str, receiver: Receiver
) -> None:
    app = create_app(webhook_config(redis_url, queue_name, receiver.url))
    upload = record(f"up-{uuid.uuid4().hex}")
    with app.app_context():
        signals.upload_completed.send(app, upload=upload)
        signals.upload_completed.send(app, upload=upload)  # a second completion of the same upload
    queue = webhook_queue(app)
    assert queue.count == 1
    work_burst(app)
    assert len(receiver.requests) == 1
    # Delivered, and the job id is kept: a late repeat is still refused.
    with app.app_context():
        signals.upload_completed.send(app, upload=upload)
    assert queue.count == 0
    work_burst(app)
    assert len(receiver.requests) == 1
    # The other events of the same upload are other messages.
    with app.app_context():
        signals.upload_expired.send(app, upload=upload)
    assert queue.count == 1


def test_rejected_files_are_events_with_the_owner_only_on_opt_in(
    s3: Any, redis_url: str, queue_name: str, receiver: Receiver
) -> None:
    app = create_app(webhook_config(redis_url, queue_name, receiver.url))
    refused = app.test_client().post(
        "/obitox/uploads",
        json={"filename": "setup.exe", "contentType": "application/octet-stream", "size": 10},
        headers={"X-User": "alice"},
    )
    assert refused.status_code == 422
    [job] = webhook_queue(app).get_jobs()
    payload = json.loads(job.args[3])  # the body every attempt will send
    assert payload["type"] == "upload.rejected"
    assert payload["data"]["uploadId"] is None
    assert payload["data"]["filename"] == "setup.exe"
    assert (payload["data"]["stage"], payload["data"]["code"]) == (
        "validation",
        "VALIDATION_FAILED",
    )
    assert payload["data"]["reason"] == refused.json["message"]
    assert "owner" not in payload["data"]

    opted_in = create_app(
        webhook_config(
            redis_url, queue_name + "-owner", receiver.url, OBITOX_WEBHOOK_INCLUDE_OWNER=True
        )
    )
    try:
        with opted_in.app_context():
            signals.upload_completed.send(opted_in, upload=record(f"up-{uuid.uuid4().hex}"))
        [job] = webhook_queue(opted_in).get_jobs()
        assert json.loads(job.args[3])["data"]["owner"] == "alice"
    finally:
        delete_rq_keys(redis.Redis.from_url(redis_url), queue_name + "-owner")


class SilentRedis:
    """A Redis that hangs: it accepts connections and reads what is sent, and never
    answers (as a paused or overloaded Redis behind a live TCP stack does). It counts
    the connections made to it."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self.connections = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self._listener.accept()
                self.connections += 1
                self._open.append(connection)
                threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    @staticmethod
    def _read(connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while connection.recv(65536):
                pass

    def close(self) -> None:
        self._listener.close()
        for connection in self._open:
            connection.close()


@pytest.fixture
def silent_redis() -> Iterator[SilentRedis]:
    server = SilentRedis()
    yield server
    server.close()


def _refused_batch(app: Flask, count: int) -> dict[str, Any]:
    files = [
        {"filename": f"setup-{index}.exe", "contentType": "application/octet-stream", "size": 10}
        for index in range(count)
    ]
    answer = app.test_client().post(
        "/obitox/uploads/batch", json={"files": files}, headers={"X-User": "alice"}
    )
    assert answer.status_code == 200, answer.json
    assert (answer.json["successful"], answer.json["failed"]) == (0, count)
    body: dict[str, Any] = answer.json
    return body


@pytest.mark.parametrize("count", [1, 20])
def test_a_request_enqueues_its_events_in_one_round_trip_while_redis_hangs(
    count: int, silent_redis: SilentRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 17, bug 5: each refused file was an enqueue of its own, each waiting for
    Redis's 5 s timeout (a batch of 6 .exe files answered after 30 s). Now a request
    waits for one connection whatever the number of its events, and still logs every
    message it could not enqueue."""
    app = create_app(
        {
            "OBITOX_RQ_REDIS_URL": silent_redis.url,
            "OBITOX_WEBHOOKS": [{"url": "https://hooks.example.com/x", "secret": SECRET}],
        }
    )
    with caplog.at_level(logging.ERROR, logger="flask_obitox.webhooks"):
        _refused_batch(app, count)
    assert silent_redis.connections == 1
    logged = [r.getMessage() for r in caplog.records if "could not be enqueued" in r.getMessage()]
    assert len(logged) == count
    for index in range(count):  # every body is in the log, to be resent by hand
        assert sum(f'"filename":"setup-{index}.exe"' in text for text in logged) == 1


def test_a_request_with_many_events_delivers_each_once(
    redis_url: str, queue_name: str, receiver: Receiver
) -> None:
    app = create_app(webhook_config(redis_url, queue_name, receiver.url))
    _refused_batch(app, 20)
    upload = record(f"up-{uuid.uuid4().hex}")
    with app.test_request_context():
        # The same event twice in one request, and one already queued: one job each.
        signals.upload_completed.send(app, upload=upload)
        signals.upload_completed.send(app, upload=upload)
        assert webhook_queue(app).count == 20  # enqueued when the request ends
    with app.app_context():
        signals.upload_completed.send(app, upload=upload)
    assert webhook_queue(app).count == 21
    work_burst(app)
    payloads = [Webhook(SECRET).verify(got["body"], got["headers"]) for got in receiver.requests]
    assert len({got["headers"]["Webhook-Id"] for got in receiver.requests}) == 21
    assert sorted(p["data"]["filename"] for p in payloads if p["type"] == "upload.rejected") == (
        sorted(f"setup-{index}.exe" for index in range(20))
    )
    assert [p["data"]["uploadId"] for p in payloads if p["type"] == "upload.completed"] == [
        upload.upload_id
    ]


# -- delivery outcomes decided in one attempt ----------------------------------------


def _send_one(app: Flask) -> str:
    upload = record(f"up-{uuid.uuid4().hex}")
    with app.app_context():
        signals.upload_completed.send(app, upload=upload)
    [job_id] = webhook_queue(app).get_job_ids()
    return job_id


def test_a_private_address_is_refused_unless_allowed(
    redis_url: str, queue_name: str, receiver: Receiver
) -> None:
    app = create_app(
        webhook_config(
            redis_url,
            queue_name,
            receiver.url,
            OBITOX_WEBHOOK_ALLOW_PRIVATE=False,
            OBITOX_WEBHOOK_RETRY_SCHEDULE=[60, 60],
        )
    )
    seen = record_signals(app)
    job_id = _send_one(app)
    work_burst(app)
    assert receiver.requests == []  # never connected
    [failed] = failed_deliveries(app)  # final at once: no retry is scheduled
    assert failed.job_id == job_id
    assert failed.attempts == 1
    assert failed.last_error.startswith("refused")
    assert "127.0.0.1" in failed.last_error
    assert "OBITOX_WEBHOOK_ALLOW_PRIVATE" in failed.last_error
    [(kind, sent)] = seen
    assert kind == "failed"
    assert sent["final"] is True
    assert sent["delivery"].status_code is None


def test_a_redirect_is_a_failure_and_is_not_followed(
    redis_url: str, queue_name: str, receiver: Receiver, receiver_server: HTTPServer
) -> None:
    elsewhere: list[Any] = []
    receiver_server.expect_request("/elsewhere").respond_with_handler(
        lambda request: elsewhere.append(request) or Response("", status=204)
    )
    receiver.answer(
        Response("", status=302, headers={"Location": receiver_server.url_for("/elsewhere")})
    )
    app = create_app(webhook_config(redis_url, queue_name, receiver.url))
    seen = record_signals(app)
    _send_one(app)
    work_burst(app)
    assert len(receiver.requests) == 1
    assert elsewhere == []
    [failed] = failed_deliveries(app)
    assert failed.last_error.startswith("HTTP 302")
    assert [(kind, sent["delivery"].status_code, sent["final"]) for kind, sent in seen] == [
        ("failed", 302, True)
    ]


def test_410_gone_stops_retrying(redis_url: str, queue_name: str, receiver: Receiver) -> None:
    receiver.answer(Response("", status=410))
    app = create_app(
        webhook_config(redis_url, queue_name, receiver.url, OBITOX_WEBHOOK_RETRY_SCHEDULE=[60])
    )
    _send_one(app)
    work_burst(app)
    queue = webhook_queue(app)
    assert queue.scheduled_job_registry.count == 0
    [failed] = failed_deliveries(app)
    assert failed.last_error.startswith("HTTP 410")


def test_a_2xx_is_delivered_with_signals_in_the_app(
    redis_url: str, queue_name: str, receiver: Receiver
) -> None:
    receiver.answer(Response("accepted", status=202))
    app = create_app(webhook_config(redis_url, queue_name, receiver.url))
    seen = record_signals(app)
    job_id = _send_one(app)
    work_burst(app)
    [(kind, sent)] = seen
    assert kind == "delivered"
    delivery = sent["delivery"]
    assert (delivery.status_code, delivery.attempt, delivery.job_id, delivery.error) == (
        202,
        1,
        job_id,
        None,
    )
    assert delivery.webhook_id == receiver.requests[0]["headers"]["Webhook-Id"]
    assert delivery.payload["type"] == "upload.completed"
    assert webhook_queue(app).finished_job_registry.get_job_ids() == [job_id]


# -- targets -------------------------------------------------------------------------


def test_credentials_in_an_endpoint_url_are_refused_without_showing_them() -> None:
    url = "https://user:hunter2@hooks.example.com/hook"
    assert display_url(url) == "https://***@hooks.example.com/hook"
    with pytest.raises(ConfigError, match="credentials") as raised:
        create_app({"OBITOX_WEBHOOKS": [{"url": url, "secret": SECRET}]})
    assert "hunter2" not in str(raised.value)
    with pytest.raises(ConfigError, match="credentials") as raised:
        ObitoX().add_webhook(url, SECRET)
    assert "hunter2" not in str(raised.value)
    with pytest.raises(WebhookTargetRefused, match="credentials") as refused:
        check_target(url, load_settings({"OBITOX_BUCKET": "b"}))
    assert "hunter2" not in str(refused.value)


#: URLs that one parser could read with another host than the other; ``{local}`` is
#: the receiver (``127.0.0.1:<port>``), ``OBITOX_WEBHOOK_ALLOWED_HOSTS`` names only
#: hooks.example.com. The first is the audit's (issue 17, bug 4): urllib.parse reads
#: hooks.example.com, urllib3 (so requests) connects to 127.0.0.1.
CONFUSABLE_URLS = [
    "http://{local}\\@hooks.example.com/hook",
    "http://{local}\\\\@hooks.example.com/hook",
    "http://hooks.example.com@{local}/hook",
    "http://hooks.example.com:x@{local}/hook",
    "http://{local}#@hooks.example.com/hook",
    "http://{local}/hook#hooks.example.com",
    "http://hooks.example.com\\.evil/hook",
    "http://hooks.exa\tmple.com/hook",
    "http://hooks.example.com/hook\n",
    "http://hooks.example.com\r\n.evil/hook",
    " http://hooks.example.com/hook",
    "http://hooks.example.com/ho ok",
    "http://hooks.example.com\x00.evil/hook",
    "http://hooks.example.com\u3000/hook",
    "http://ho%6fks.example.com/hook",
    "http://hooks.examp\u0131e.com/hook",
]


def _confusable(template: str, receiver: Receiver) -> str:
    return template.replace("{local}", receiver.url.split("/")[2])


@pytest.mark.parametrize("template", CONFUSABLE_URLS)
def test_a_url_read_two_ways_is_refused_at_init_app_and_add_webhook(
    template: str, receiver: Receiver
) -> None:
    url = _confusable(template, receiver)
    config = {
        "OBITOX_WEBHOOK_ALLOWED_HOSTS": ["hooks.example.com"],
        "OBITOX_WEBHOOK_ALLOW_PRIVATE": True,
    }
    with pytest.raises(ConfigError, match=r"OBITOX_WEBHOOKS\[0\]"):
        create_app({**config, "OBITOX_WEBHOOKS": [{"url": url, "secret": SECRET}]})
    with pytest.raises(ConfigError, match="add_webhook"):
        ObitoX().add_webhook(url, SECRET)
    # Refused before the allow-list is consulted: without one, too.
    with pytest.raises(WebhookTargetRefused):
        check_target(url, load_settings({"OBITOX_BUCKET": "b", **config}))
    with pytest.raises(WebhookTargetRefused):
        check_target(
            url, load_settings({"OBITOX_BUCKET": "b", "OBITOX_WEBHOOK_ALLOW_PRIVATE": True})
        )


@pytest.mark.parametrize("template", CONFUSABLE_URLS[:6])
def test_a_url_read_two_ways_is_never_delivered(
    template: str,
    redis_url: str,
    queue_name: str,
    receiver: Receiver,
    receiver_server: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check at delivery stands on its own: a job enqueued while an older release
    accepted the URL still never reaches the address urllib3 reads in it."""
    url = _confusable(template, receiver)
    original = dispatch.webhook_endpoint

    def as_an_older_release(value: Any, where: str, **kwargs: Any) -> dict[str, Any]:
        checked = original({**value, "url": "https://hooks.example.com/hook"}, where, **kwargs)
        return {**checked, "url": value["url"]}

    monkeypatch.setattr(dispatch, "webhook_endpoint", as_an_older_release)
    monkeypatch.setattr(config_module, "webhook_endpoint", as_an_older_release)
    app = create_app(
        webhook_config(
            redis_url,
            queue_name,
            url,
            OBITOX_WEBHOOK_ALLOWED_HOSTS=["hooks.example.com"],
            OBITOX_WEBHOOK_RETRY_SCHEDULE=[60],
        )
    )
    monkeypatch.undo()
    seen = record_signals(app)
    _send_one(app)
    work_burst(app)
    assert receiver_server.log == []  # nothing reached 127.0.0.1, on any path
    [failed] = failed_deliveries(app)  # refused for good, not retried
    assert failed.last_error.startswith("refused")
    [(kind, sent)] = seen
    assert (kind, sent["final"]) == ("failed", True)


def test_check_target() -> None:
    public = load_settings({"OBITOX_BUCKET": "b"})
    private_ok = load_settings({"OBITOX_BUCKET": "b", "OBITOX_WEBHOOK_ALLOW_PRIVATE": True})
    listed = load_settings(
        {"OBITOX_BUCKET": "b", "OBITOX_WEBHOOK_ALLOWED_HOSTS": ["*.example.com"]}
    )
    for url in (
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[::1]/",
        "http://[::ffff:192.168.0.1]/",
        "http://240.0.0.1/",
    ):
        with pytest.raises(WebhookTargetRefused, match="OBITOX_WEBHOOK_ALLOW_PRIVATE"):
            check_target(url, public)
    assert check_target("http://127.0.0.1:8000/hook", private_ok) == ["127.0.0.1"]
    assert check_target("https://8.8.8.8/", public) == ["8.8.8.8"]
    with pytest.raises(WebhookTargetRefused, match="OBITOX_WEBHOOK_ALLOWED_HOSTS"):
        check_target("https://8.8.8.8/", listed)
    with pytest.raises(WebhookTargetRefused, match="OBITOX_WEBHOOK_ALLOWED_HOSTS"):
        check_target("https://example.com/", listed)  # "*." names subdomains only
    with pytest.raises(WebhookTargetRefused, match="http"):
        check_target("file:///etc/passwd", public)
    with pytest.raises(WebhookTargetRefused, match="does not resolve"):
        check_target("https://no-such-host.invalid/", public)


# -- the commands --------------------------------------------------------------------


def test_replay_refuses_unknown_ids_and_needs_ids_or_all(
    redis_url: str, queue_name: str, receiver: Receiver
) -> None:
    app = create_app(webhook_config(redis_url, queue_name, receiver.url))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["obitox", "webhooks", "replay", "obitox-webhook-nope"])
    assert result.exit_code == 1
    assert "no failed webhook delivery with id obitox-webhook-nope" in result.output
    assert runner.invoke(args=["obitox", "webhooks", "replay"]).exit_code == 2
    empty = runner.invoke(args=["obitox", "webhooks", "failed"])
    assert empty.exit_code == 0
    assert "0 failed deliveries." in empty.output


def test_commands_say_which_redis_is_down() -> None:
    app = create_app({"OBITOX_RQ_REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"})
    result = app.test_cli_runner().invoke(args=["obitox", "webhooks", "failed"])
    assert result.exit_code == 1
    assert "redis://:***@127.0.0.1:1/0" in result.output
    assert "hunter2" not in result.output


def test_queue_is_the_configured_one(redis_url: str, queue_name: str) -> None:
    app = create_app({"OBITOX_RQ_REDIS_URL": redis_url, "OBITOX_RQ_QUEUE": queue_name})
    queue = webhook_queue(app)
    assert isinstance(queue, Queue)
    assert queue.name == queue_name
    assert queue.connection.ping()
    with app.app_context():
        assert webhook_queue() is queue
