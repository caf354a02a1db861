"""Webhooks delivered by real ``flask obitox worker`` processes.

Each test starts the worker as a subprocess against the real Redis, with RQ's
scheduler, and a receiver on 127.0.0.1 that the ``standardwebhooks`` library checks.
Retry schedules are one second long so the retries happen within the test.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook
from webhook_support import (
    SECRET,
    Receiver,
    WorkerProcess,
    complete_upload,
    create_app,
    read_signal_log,
    wait_for,
    webhook_config,
)
from werkzeug import Response

from flask_obitox.webhooks import webhook_queue

pytestmark = pytest.mark.redis


@pytest.fixture
def signal_log(tmp_path: Path) -> Path:
    return tmp_path / "signals.jsonl"


@pytest.fixture
def make_config(
    redis_url: str, queue_name: str, receiver: Receiver, signal_log: Path
) -> Callable[..., dict[str, Any]]:
    def make(**extra: Any) -> dict[str, Any]:
        return webhook_config(
            redis_url, queue_name, receiver.url, WEBHOOK_TEST_SIGNAL_LOG=str(signal_log), **extra
        )

    return make


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(config: dict[str, Any], *args: str) -> WorkerProcess:
        worker = WorkerProcess(config, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def verified(request: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(SECRET).verify(request["body"], request["headers"])
    return payload


@pytest.mark.parametrize("worker_class", ["simple", "fork"])
def test_a_completed_upload_is_delivered_signed_by_the_worker(
    s3: Any,
    receiver: Receiver,
    make_config: Callable[..., dict[str, Any]],
    workers: Callable[..., WorkerProcess],
    signal_log: Path,
    worker_class: str,
) -> None:
    config = make_config()
    worker = workers(config, "--worker-class", worker_class)
    app = create_app(config)
    answer = complete_upload(app, s3)

    wait_for(lambda: receiver.requests, 30, "the delivery", worker.log)
    [request] = receiver.requests
    payload = verified(request)
    assert payload["type"] == "upload.completed"
    assert payload["data"]["uploadId"] == answer["uploadId"]
    assert payload["data"]["etag"] == answer["etag"]
    assert request["headers"]["User-Agent"] == "flask-obitox-webhooks"

    [line] = wait_for(lambda: read_signal_log(signal_log), 10, "webhook-delivered", worker.log)
    assert line["signal"] == "webhook-delivered"
    assert line["webhookId"] == request["headers"]["Webhook-Id"]
    assert line["appContext"] is True
    assert line["pid"] != os.getpid()  # sent in the worker, not here


def test_a_failing_receiver_gets_retries_with_the_same_webhook_id(
    s3: Any,
    receiver: Receiver,
    make_config: Callable[..., dict[str, Any]],
    workers: Callable[..., WorkerProcess],
    signal_log: Path,
) -> None:
    receiver.answer(
        Response("down", status=500), Response("", status=503), Response("", status=200)
    )
    config = make_config(OBITOX_WEBHOOK_RETRY_SCHEDULE=[1, 1, 1])
    worker = workers(config)
    app = create_app(config)
    complete_upload(app, s3)

    wait_for(
        lambda: [s for s in read_signal_log(signal_log) if s["signal"] == "webhook-delivered"],
        40,
        "a delivery after two failures",
        worker.log,
    )
    assert len(receiver.requests) == 3
    ids = {request["headers"]["Webhook-Id"] for request in receiver.requests}
    assert len(ids) == 1
    bodies = {request["body"] for request in receiver.requests}
    assert len(bodies) == 1
    for request in receiver.requests:
        verified(request)  # each attempt is signed afresh, and verifies
    assert [
        (s["signal"], s["attempt"], s["statusCode"], s["final"])
        for s in read_signal_log(signal_log)
    ] == [
        ("webhook-failed", 1, 500, False),
        ("webhook-failed", 2, 503, False),
        ("webhook-delivered", 3, 200, None),
    ]
    assert webhook_queue(app).failed_job_registry.count == 0


def test_an_always_failing_receiver_lands_in_the_failed_registry_and_replay_delivers(
    s3: Any,
    receiver: Receiver,
    make_config: Callable[..., dict[str, Any]],
    workers: Callable[..., WorkerProcess],
    signal_log: Path,
) -> None:
    receiver.answer(Response("nope", status=500))
    config = make_config(OBITOX_WEBHOOK_RETRY_SCHEDULE=[1])
    worker = workers(config)
    app = create_app(config)
    answer = complete_upload(app, s3)
    queue = webhook_queue(app)

    wait_for(lambda: queue.failed_job_registry.count, 30, "the failed registry", worker.log)
    assert len(receiver.requests) == 2
    assert [(s["attempt"], s["final"]) for s in read_signal_log(signal_log)] == [
        (1, False),
        (2, True),
    ]

    runner = app.test_cli_runner()
    listed = runner.invoke(args=["obitox", "webhooks", "failed"])
    assert listed.exit_code == 0, listed.output
    [job_id] = queue.failed_job_registry.get_job_ids()
    assert job_id in listed.output
    assert f"upload.completed -> {receiver.url}" in listed.output
    assert "attempts: 2" in listed.output
    assert "HTTP 500" in listed.output
    as_json = runner.invoke(args=["obitox", "webhooks", "failed", "--json"])
    [row] = json.loads(as_json.output)
    assert (row["id"], row["attempts"], row["lastError"]) == (job_id, 2, "HTTP 500")

    receiver.answer(Response("", status=204))
    replayed = runner.invoke(args=["obitox", "webhooks", "replay", job_id])
    assert replayed.exit_code == 0, replayed.output
    assert f"replayed {job_id}" in replayed.output
    wait_for(lambda: len(receiver.requests) == 3, 30, "the replayed delivery", worker.log)
    last = verified(receiver.requests[-1])
    assert last["data"]["uploadId"] == answer["uploadId"]
    assert (
        receiver.requests[-1]["headers"]["Webhook-Id"]
        == receiver.requests[0]["headers"]["Webhook-Id"]
    )
    wait_for(lambda: queue.finished_job_registry.count, 10, "the job to finish", worker.log)
    assert queue.failed_job_registry.count == 0


def test_a_worker_killed_mid_delivery_does_not_lose_it(
    s3: Any,
    receiver: Receiver,
    make_config: Callable[..., dict[str, Any]],
    workers: Callable[..., WorkerProcess],
) -> None:
    # A 3 s timeout: the job may run 8 s, so RQ calls it abandoned 18 s after it
    # started (timeout + HEARTBEAT_MARGIN). The first retry is immediate: the killed
    # worker's scheduler lock would hold a delayed retry for up to a minute.
    config = make_config(OBITOX_WEBHOOK_TIMEOUT=3, OBITOX_WEBHOOK_RETRY_SCHEDULE=[0, 1])
    release = receiver.hold_next()
    first = workers(config)
    app = create_app(config)
    complete_upload(app, s3)

    assert receiver.arrived.wait(30), first.log()
    first.kill()  # SIGKILL, in the middle of the delivery
    release.set()
    queue = webhook_queue(app)
    assert queue.started_job_registry.count == 1  # left behind by the dead worker

    second = workers(config)
    wait_for(
        lambda: len(receiver.requests) >= 2, 60, "the delivery to be attempted again", second.log
    )
    wait_for(lambda: queue.finished_job_registry.count, 10, "the job to finish", second.log)
    first_id = receiver.requests[0]["headers"]["Webhook-Id"]
    assert receiver.requests[1]["headers"]["Webhook-Id"] == first_id
    verified(receiver.requests[1])
    assert queue.started_job_registry.count == 0


# -- the worker on every RQ and Redis a fresh install gets ---------------------------


def _run_one_job(rq_redis_url: str) -> Any:
    """Start ``make_worker`` on ``rq_redis_url``, run one job in burst mode, and return
    the job's result: the job asks whether it ran inside the app context."""
    from rq import Queue

    from flask_obitox.webhooks.worker import make_worker

    # Unique, and no prefix of another's: cleanups match queue names by pattern.
    name = f"obitox-t-{uuid.uuid4().hex[:12]}-q"
    app = create_app(
        {
            "OBITOX_RQ_REDIS_URL": rq_redis_url,
            "OBITOX_RQ_QUEUE": name,
            "OBITOX_PROCESSING_QUEUE": f"{name}-processing",
        }
    )
    worker = make_worker(app)
    queue: Queue = worker.queues[0]
    try:
        job = queue.enqueue_call("flask.has_app_context", result_ttl=60)
        import signal

        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            assert worker.work(burst=True, logging_level="WARNING")
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
        # The outcome from RQ's results stream: in CI's parallel run the job's own hash
        # was seen gone by now (not diagnosed); its result is what this test is about.
        result = job.latest_result()
        assert result is not None, "the worker left no result for its job"
        assert result.type == result.Type.SUCCESSFUL, result.exc_string
        return result.return_value
    finally:
        from webhook_support import delete_rq_keys

        delete_rq_keys(queue.connection, queue.name)
        queue.connection.close()


#: The one-job worker tests, skipped in a parallel run and run alone by ``.ci/run``
#: (``OBITOX_TEST_ALONE=1``): in CI's parallel runs their job now and then left no result,
#: on the shared Redis and on a private fakeredis alike (not diagnosed; they pass alone
#: every time; the worker is RQ's SimpleWorker, which does not fork).
alone = pytest.mark.skipif(
    int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1
    and not os.environ.get("OBITOX_TEST_ALONE"),
    reason="run alone (.ci/run does, OBITOX_TEST_ALONE=1): in CI's parallel runs its job "
    "now and then left no result (not diagnosed yet)",
)


@alone
def test_the_worker_runs_jobs_in_the_app_context_on_this_rq(redis_url: str) -> None:
    """RQ 3 passes perform_job an Execution; a worker written for RQ 2 died on its
    first job with a TypeError (every webhook lost)."""
    assert _run_one_job(redis_url) is True


@alone
def test_the_worker_starts_on_the_example_apps_embedded_fakeredis() -> None:
    """The example app's RQ is a fakeredis TcpFakeServer, whose CLIENT INFO answer RQ 3
    cannot parse: the worker must still start and run jobs."""
    import threading

    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    # The worker's connections may still be open at the end: never wait for them.
    server.daemon_threads = True
    server.block_on_close = False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert _run_one_job(f"redis://{host}:{port}/0") is True
    finally:
        server.shutdown()
        server.server_close()
