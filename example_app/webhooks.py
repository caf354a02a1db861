"""The example receives its own webhooks: a receiver as a host would write one.

``POST /webhooks/obitox`` verifies the Standard Webhooks signature with the reference
``standardwebhooks`` library (any other request is answered 400 and not recorded),
de-duplicates on ``webhook-id`` (deliveries are at-least-once) and keeps the last
deliveries in memory. ``GET /webhooks/deliveries`` lists, for the page, the deliveries
about the caller's own uploads (the app turns on ``OBITOX_WEBHOOK_INCLUDE_OWNER``).

``GET /webhooks/worker`` says whether anything will deliver them (:func:`worker_health`):
the state of the worker subprocess ``python -m example_app`` started, with its last
lines of output, and the workers RQ has registered on the queue. Without a subprocess
of ours (webhooks on a real Redis, workers run elsewhere) RQ's registry alone answers.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from rq import Queue, Worker
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from flask_obitox.webhooks import webhooks_for

if TYPE_CHECKING:
    from .services import WorkerProcess

#: Where the example's own endpoint is, and its secret (``python -m example_app`` sets
#: both, for the app and for its worker).
URL_KEY = "EXAMPLE_WEBHOOK_URL"
SECRET_KEY = "EXAMPLE_WEBHOOK_SECRET"  # noqa: S105 - a config key name
RECEIVER_PATH = "/webhooks/obitox"
#: The :class:`~example_app.services.WorkerProcess` ``python -m example_app`` started;
#: absent when the workers run elsewhere.
WORKER_KEY = "EXAMPLE_WORKER_PROCESS"
#: Deliveries the page shows.
KEPT = 50
#: How times are shown (UTC).
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: Seconds a worker subprocess may take to register with RQ before it is reported missing.
WORKER_START_GRACE = 30
#: Seconds since its last heartbeat after which an idle RQ worker counts as gone.
#: ``flask obitox worker`` beats every 15 s when idle (its default maintenance interval);
#: a busy one beats when a job starts and RQ expires its key if the job overruns.
HEARTBEAT_RECENT = 60


class Inbox:
    """The deliveries received, newest first, each webhook-id once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[dict[str, Any]] = deque(maxlen=KEPT)
        self._seen: deque[str] = deque(maxlen=10 * KEPT)

    def add(self, webhook_id: str, payload: dict[str, Any], attempt_timestamp: str) -> bool:
        """Record a delivery; ``False`` if this webhook-id was already received."""
        with self._lock:
            if webhook_id in self._seen:
                return False
            self._seen.append(webhook_id)
            data = payload.get("data") or {}
            self._items.appendleft(
                {
                    "webhookId": webhook_id,
                    "type": payload.get("type"),
                    "owner": data.get("owner"),
                    "uploadId": data.get("uploadId"),
                    "filename": data.get("filename"),
                    "eventTime": payload.get("timestamp"),
                    "receivedAt": time.strftime(TIMESTAMP_FORMAT, time.gmtime()),
                    "signedAt": attempt_timestamp,
                    "verified": True,
                }
            )
            return True

    def items(self, owner: str) -> list[dict[str, Any]]:
        """The deliveries about ``owner``'s uploads (without the owner field)."""
        with self._lock:
            kept = [item for item in self._items if item["owner"] == owner]
        return [{k: v for k, v in item.items() if k != "owner"} for item in kept]


def register_receiver(app: Flask, secret: str, current_owner: Callable[[], str]) -> Inbox:
    """Add the receiver and the list routes to ``app``; returns its inbox."""
    verifier = Webhook(secret)
    inbox = Inbox()

    @app.post(RECEIVER_PATH)
    def receive_webhook() -> ResponseReturnValue:
        body = request.get_data()
        try:
            payload = verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as error:
            return jsonify(error="INVALID_SIGNATURE", message=str(error)), 400
        new = inbox.add(
            request.headers["webhook-id"], payload, request.headers["webhook-timestamp"]
        )
        # A repeat (a retry whose first answer was lost) is acknowledged, not redone.
        return jsonify(received=True, duplicate=not new), 200

    @app.get("/webhooks/deliveries")
    def list_deliveries() -> ResponseReturnValue:
        deliveries = inbox.items(current_owner())
        return jsonify(enabled=True, endpoint=app.config.get(URL_KEY), deliveries=deliveries)

    @app.get("/webhooks/worker")
    def webhook_worker() -> ResponseReturnValue:
        return jsonify(worker_health(app))

    return inbox


def register_disabled(app: Flask) -> None:
    """The list route when the example was started without its webhook."""

    @app.get("/webhooks/deliveries")
    def list_deliveries() -> ResponseReturnValue:
        return jsonify(enabled=False, endpoint=None, deliveries=[])

    @app.get("/webhooks/worker")
    def webhook_worker() -> ResponseReturnValue:
        return jsonify(enabled=False, status="disabled", healthy=False, message=None)


# -- the worker's health -------------------------------------------------------------


def worker_health(app: Flask) -> dict[str, Any]:
    """Whether anything delivers ``app``'s webhooks. ``status``: ``running`` (RQ lists a
    live worker on the queue), ``starting``, ``exited`` (the subprocess of ours ended),
    ``missing`` (no live worker) or ``unreachable`` (RQ's Redis does not answer);
    ``message`` says it in a sentence for the page."""
    webhooks = webhooks_for(app)
    queue = webhooks.queue
    process: WorkerProcess | None = app.config.get(WORKER_KEY)
    health: dict[str, Any] = {
        "enabled": True,
        "queue": queue.name,
        "redis": webhooks.redis_url,
        "queued": None,
        "error": None,
        "workers": [],
        "process": None if process is None else _process_view(process),
    }
    try:
        health["workers"] = _registered_workers(queue)
        health["queued"] = queue.count
    except redis.RedisError as error:
        health["error"] = str(error)
    starting = process is not None and time.time() - process.started_at < WORKER_START_GRACE
    health["status"], health["message"] = _verdict(health, starting=starting)
    health["healthy"] = health["status"] == "running"
    return health


def _process_view(process: WorkerProcess) -> dict[str, Any]:
    code = process.exit_code
    return {
        "pid": process.pid,
        "running": code is None,
        "exitCode": code,
        "startedAt": time.strftime(TIMESTAMP_FORMAT, time.gmtime(process.started_at)),
        "log": process.log_tail(),
    }


def _registered_workers(queue: Queue) -> list[dict[str, Any]]:
    """The workers RQ lists on ``queue``, each with how long ago it last beat."""
    now = datetime.now(UTC)
    listed = []
    for worker in Worker.all(queue=queue):
        beat = worker.last_heartbeat
        if beat is not None and beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)  # naive UTC, from an older RQ
        age = None if beat is None else max(0.0, (now - beat).total_seconds())
        state = worker.get_state()
        listed.append(
            {
                "name": worker.name,
                "pid": worker.pid,
                "hostname": worker.hostname,
                "state": state,
                "lastHeartbeat": None if beat is None else beat.strftime(TIMESTAMP_FORMAT),
                "heartbeatAge": None if age is None else round(age, 1),
                # RQ drops a worker whose key expired; an idle one that stopped beating
                # stays listed until then.
                "live": state == "busy" or (age is not None and age <= HEARTBEAT_RECENT),
            }
        )
    return sorted(listed, key=lambda worker: worker["name"])


def _verdict(health: dict[str, Any], *, starting: bool) -> tuple[str, str]:
    """``health``'s status and its sentence; ``starting``: our worker was just started."""
    queue, queued, process = health["queue"], health["queued"], health["process"]
    waiting = (
        f"{queued} deliver{'y waits' if queued == 1 else 'ies wait'}"
        if queued
        else "Deliveries wait"
    )
    last_line = f": {process['log'][-1].rstrip('. ')}" if process and process["log"] else ""
    if process is not None and not process["running"]:
        ended = _how_it_ended(process["exitCode"])
        return (
            "exited",
            f"The webhook worker is not running ({ended}){last_line}. "
            f"{waiting} in the queue until it runs.",
        )
    if health["error"] is not None:
        return (
            "unreachable",
            f"RQ's Redis at {health['redis']} does not answer ({health['error']}): "
            "no webhook can be queued or delivered.",
        )
    live = [worker for worker in health["workers"] if worker["live"]]
    if live:
        who = f"{len(live)} webhook workers" if len(live) > 1 else "The webhook worker"
        ages = [worker["heartbeatAge"] for worker in live if worker["heartbeatAge"] is not None]
        beat = f": last heartbeat {min(ages):.0f} s ago" if ages else ""
        return "running", f"{who} on queue {queue!r} {'run' if len(live) > 1 else 'runs'}{beat}."
    if process is not None:
        if starting:
            return "starting", f"The webhook worker (pid {process['pid']}) is starting."
        return (
            "missing",
            f"The webhook worker (pid {process['pid']}) runs but RQ lists no live worker on "
            f"queue {queue!r}{last_line}. {waiting} in the queue until it registers.",
        )
    ages = [w["heartbeatAge"] for w in health["workers"] if w["heartbeatAge"] is not None]
    stale = f" (the last one beat {min(ages):.0f} s ago)" if ages else ""
    return (
        "missing",
        f"No webhook worker is running on queue {queue!r} at {health['redis']}{stale}: start "
        f"one with `flask obitox worker`. {waiting} in the queue until one runs.",
    )


def _how_it_ended(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"
