"""What the webhook tests share: the host app (also run by the worker subprocesses),
a receiver on 127.0.0.1, real ``flask obitox worker`` processes and RQ key cleanup.

The worker subprocess builds the same app as the test from ``WEBHOOK_TEST_CONFIG``
(JSON), so both sides agree on endpoints, secrets and the queue. Its app logs every
``webhook-delivered`` / ``webhook-failed`` signal to ``WEBHOOK_TEST_SIGNAL_LOG``: the
tests read that file to see the signals fire in the worker, inside an app context.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from flask import Flask, has_app_context, request
from werkzeug import Request, Response

from flask_obitox import ObitoX, signals

TESTS = Path(__file__).resolve().parent
#: A Standard Webhooks secret (24 random bytes), as receivers are given it.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The host app; with no ``config``, the one in ``WEBHOOK_TEST_CONFIG``."""
    if config is None:
        config = json.loads(os.environ["WEBHOOK_TEST_CONFIG"])
    app = Flask("obitox_webhook_test")
    app.config.update(
        TESTING=True,
        OBITOX_BUCKET="obitox-test",
        OBITOX_REGION="us-east-1",
        OBITOX_AWS_ACCESS_KEY_ID="testing",
        OBITOX_AWS_SECRET_ACCESS_KEY="testing",
        OBITOX_STATE_BACKEND="memory://",
    )
    app.config.update(config)
    obitox = ObitoX()

    @obitox.identity_loader
    def current_owner() -> str | None:
        return request.headers.get("X-User")

    obitox.init_app(app)

    log_path = app.config.get("WEBHOOK_TEST_SIGNAL_LOG")
    if log_path:

        def record(name: str, delivery: Any, **extra: Any) -> None:
            line = {
                "signal": name,
                "webhookId": delivery.webhook_id,
                "attempt": delivery.attempt,
                "statusCode": delivery.status_code,
                "error": delivery.error,
                "final": extra.get("final"),
                "appContext": has_app_context(),
                "pid": os.getpid(),
            }
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(line) + "\n")

        @signals.webhook_delivered.connect_via(app)
        def delivered(sender: Flask, delivery: Any, **extra: Any) -> None:
            record("webhook-delivered", delivery, **extra)

        @signals.webhook_failed.connect_via(app)
        def failed(sender: Flask, delivery: Any, **extra: Any) -> None:
            record("webhook-failed", delivery, **extra)

    return app


def read_signal_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# -- a receiver ----------------------------------------------------------------------


class Receiver:
    """Records every request to ``/hook`` and answers with the next planned response
    (the last one repeats). ``hold`` makes the next request wait until released."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.requests: list[dict[str, Any]] = []
        self.plan: list[Response] = [Response("", status=204)]
        self.arrived = threading.Event()
        self._release: threading.Event | None = None
        self._lock = threading.Lock()
        server.expect_request("/hook", method="POST").respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return str(self.server.url_for("/hook"))

    def answer(self, *responses: Response) -> None:
        self.plan = list(responses)

    def hold_next(self) -> threading.Event:
        release = threading.Event()
        self._release = release
        return release

    def _handle(self, req: Request) -> Response:
        with self._lock:
            self.requests.append(
                {
                    "headers": dict(req.headers),
                    "body": req.get_data(as_text=True),
                    "at": time.time(),
                }
            )
            response = self.plan.pop(0) if len(self.plan) > 1 else self.plan[0]
            release, self._release = self._release, None
        self.arrived.set()
        if release is not None:
            release.wait(30)
        return response


# -- worker subprocesses -------------------------------------------------------------


class WorkerProcess:
    """``flask obitox worker`` for the app of ``config``, in its own process group."""

    def __init__(
        self,
        config: dict[str, Any],
        log_path: Path,
        *args: str,
        app: str = "webhook_support:create_app",
    ) -> None:
        self.log_path = log_path
        env = {
            **os.environ,
            "WEBHOOK_TEST_CONFIG": json.dumps(config),
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask",
                "--app",
                app,
                "obitox",
                "worker",
                "--maintenance-interval",
                "1",
                *args,
            ],
            cwd=TESTS,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (its scheduler)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # warm shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a scheduler left behind
        self._log.close()


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, log: Callable[[], str] | None = None
) -> Any:
    """Poll ``condition`` until it is truthy; fail with ``what`` (and a worker log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            details = f"\n--- worker log ---\n{log()}" if log is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{details}")
        time.sleep(0.05)


def delete_rq_keys(client: redis.Redis, queue: str) -> None:
    """Remove everything RQ wrote for ``queue`` (jobs, registries, workers, locks)."""
    from rq import Queue

    rq_queue = Queue(queue, connection=client)
    ids = set(rq_queue.get_job_ids())
    for registry in (
        rq_queue.started_job_registry,
        rq_queue.finished_job_registry,
        rq_queue.failed_job_registry,
        rq_queue.scheduled_job_registry,
        rq_queue.deferred_job_registry,
        rq_queue.canceled_job_registry,
    ):
        ids.update(registry.get_job_ids(cleanup=False))
    workers = {name.decode() for name in client.smembers(f"rq:workers:{queue}")}
    keys = {key.decode() for key in client.scan_iter(match=f"rq:*{queue}*", count=1000)}
    for job_id in ids:
        keys.update(key.decode() for key in client.scan_iter(match=f"rq:*{job_id}*", count=1000))
    for name in workers:
        keys.add(f"rq:worker:{name}")
        client.srem("rq:workers", name)
    if keys:
        client.delete(*keys)
    client.srem("rq:queues", f"rq:queue:{queue}")
    if not queue.endswith("-processing"):
        # The processing queue its workers also worked (OBITOX_PROCESSING_QUEUE).
        delete_rq_keys(client, f"{queue}-processing")


def webhook_config(redis_url: str, queue: str, url: str, **extra: Any) -> dict[str, Any]:
    """Config for an app whose one endpoint is ``url`` (a receiver on 127.0.0.1)."""
    return {
        "OBITOX_RQ_REDIS_URL": redis_url,
        "OBITOX_RQ_QUEUE": queue,
        # Never the shared default: the worker works both queues.
        "OBITOX_PROCESSING_QUEUE": f"{queue}-processing",
        "OBITOX_WEBHOOK_ALLOW_PRIVATE": True,  # the receiver is on loopback
        "OBITOX_WEBHOOK_RETRY_SCHEDULE": [],
        "OBITOX_WEBHOOK_TIMEOUT": 5,
        "OBITOX_WEBHOOKS": [{"url": url, "secret": SECRET}],
        **extra,
    }


def work_burst(app: Flask) -> None:
    """Run a real RQ worker for ``app`` in this process until its queue is empty
    (for the tests whose deliveries never wait for a retry)."""
    from flask_obitox.webhooks.worker import make_worker

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        make_worker(app).work(burst=True, logging_level="WARNING")
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def complete_upload(app: Flask, s3: Any, user: str = "alice") -> dict[str, Any]:
    """Sign, store (through moto) and complete one PNG as ``user``: the real path to
    ``upload-completed``. Returns the complete answer."""
    client = app.test_client()
    headers = {"X-User": user}
    signed = client.post(
        "/obitox/uploads",
        json={"filename": "cat.png", "contentType": "image/png", "size": len(PNG)},
        headers=headers,
    )
    assert signed.status_code == 201, signed.json
    s3.put_object(Bucket="obitox-test", Key=signed.json["key"], Body=PNG, ContentType="image/png")
    done = client.post(
        f"/obitox/uploads/{signed.json['uploadId']}/complete", json={}, headers=headers
    )
    assert done.status_code == 200, done.json
    answer: dict[str, Any] = done.json
    return answer
