"""Prometheus metrics (``OBITOX_METRICS``), served at ``<prefix>/metrics``.

Only imported when ``OBITOX_METRICS`` is on: with it off there is no route, and no
collector is created anywhere. Each app gets a registry of its own (never
``prometheus_client.REGISTRY``), filled from two sources:

* the upload signals (:mod:`flask_obitox.signals`), connected for the app's sender as
  the webhook dispatcher connects its own: uploads signed, completed, rejected,
  aborted and expired by kind (and rejected by code and stage), bytes completed, and
  webhook deliveries by event and outcome (those are counted where they happen, in
  the RQ worker);
* a ``before_request``/``after_request`` pair on the app, timing every route of the
  extension by endpoint, method and status (the limiter's ``429`` included).

Under gunicorn (or any pre-fork server) set ``PROMETHEUS_MULTIPROC_DIR`` before the
server starts: each process then writes its values to files there, and the route
answers the sum over all of them through ``MultiProcessCollector``. Without it, a
scrape sees only the process that answered it.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from . import signals
from .appstate import get_state
from .config import Settings
from .errors import ObitoXError
from .http import error_response, install_error_handlers

__all__ = ["Metrics", "bp", "init_metrics"]

logger = logging.getLogger("flask_obitox")

#: Seconds: signing is sub-millisecond, completion waits on storage (HEAD, ranged GET).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STARTED = "_obitox_metrics_started"

bp = Blueprint("metrics", __name__)
install_error_handlers(bp)


class Metrics:
    """Every collector of one app, in a registry of that app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.signed = Counter(
            "obitox_uploads_signed",
            "Uploads signed or created (single: a PUT URL or presigned POST; multipart: "
            "an initiated upload).",
            ["kind"],
            registry=registry,
        )
        self.completed = Counter(
            "obitox_uploads_completed",
            "Uploads verified and completed.",
            ["kind"],
            registry=registry,
        )
        self.completed_bytes = Counter(
            "obitox_upload_completed_bytes",
            "Bytes of the uploads completed.",
            ["kind"],
            registry=registry,
        )
        self.rejected = Counter(
            "obitox_uploads_rejected",
            "Files refused, before signing (stage validation) or after upload "
            "(stage verification), by error code.",
            ["kind", "code", "stage"],
            registry=registry,
        )
        self.aborted = Counter(
            "obitox_uploads_aborted", "Uploads aborted.", ["kind"], registry=registry
        )
        self.expired = Counter(
            "obitox_uploads_expired",
            "Uploads cleaned up after their TTL.",
            ["kind"],
            registry=registry,
        )
        self.webhooks = Counter(
            "obitox_webhook_deliveries",
            "Webhook delivery attempts by event and outcome (delivered; failed, retrying; "
            "failed_final: no attempt left).",
            ["event", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "obitox_request_duration_seconds",
            "Time spent in the extension's routes, by endpoint, method and status.",
            ["endpoint", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

        self.open_streams = Gauge(
            "obitox_event_streams_open",
            "Event streams (GET /events) open now.",
            registry=registry,
            multiprocess_mode="livesum",
        )

    def exposition(self) -> bytes:
        """The text format: this registry, or every process's values when
        ``PROMETHEUS_MULTIPROC_DIR`` is set (a pre-fork server)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def _metrics(sender: Any) -> Metrics | None:
    metrics: Metrics | None = get_state(sender).metrics
    return metrics


def _kind(upload: Any) -> str:
    return str(getattr(upload, "kind", None) or "unknown")


# Module functions, connected per app sender: blinker holds neither the app nor them
# strongly, as for the webhook dispatcher's receivers.


def _on_signed(sender: Any, upload: Any = None, **_: Any) -> None:
    if (metrics := _metrics(sender)) is not None:
        metrics.signed.labels(_kind(upload)).inc()


def _on_completed(sender: Any, upload: Any = None, **_: Any) -> None:
    if (metrics := _metrics(sender)) is not None:
        kind = _kind(upload)
        metrics.completed.labels(kind).inc()
        metrics.completed_bytes.labels(kind).inc(max(int(getattr(upload, "size", 0) or 0), 0))


def _on_rejected(
    sender: Any, upload: Any = None, code: Any = None, stage: Any = None, **_: Any
) -> None:
    if (metrics := _metrics(sender)) is not None:
        metrics.rejected.labels(
            _kind(upload), str(code or "unknown"), str(stage or "unknown")
        ).inc()


def _on_aborted(sender: Any, upload: Any = None, **_: Any) -> None:
    if (metrics := _metrics(sender)) is not None:
        metrics.aborted.labels(_kind(upload)).inc()


def _on_expired(sender: Any, upload: Any = None, **_: Any) -> None:
    if (metrics := _metrics(sender)) is not None:
        metrics.expired.labels(_kind(upload)).inc()


def _on_delivered(sender: Any, delivery: Any = None, **_: Any) -> None:
    if (metrics := _metrics(sender)) is not None:
        metrics.webhooks.labels(str(getattr(delivery, "event", "unknown")), "delivered").inc()


def _on_failed(sender: Any, delivery: Any = None, final: bool = False, **_: Any) -> None:
    if (metrics := _metrics(sender)) is not None:
        outcome = "failed_final" if final else "failed"
        metrics.webhooks.labels(str(getattr(delivery, "event", "unknown")), outcome).inc()


_RECEIVERS = (
    (signals.upload_signed, _on_signed),
    (signals.multipart_initiated, _on_signed),
    (signals.upload_completed, _on_completed),
    (signals.upload_rejected, _on_rejected),
    (signals.upload_aborted, _on_aborted),
    (signals.upload_expired, _on_expired),
    (signals.webhook_delivered, _on_delivered),
    (signals.webhook_failed, _on_failed),
)


def _ours() -> bool:
    endpoint = request.endpoint
    return endpoint is not None and endpoint.startswith("obitox.")


def _start_timer() -> None:
    if _ours():
        setattr(g, _STARTED, time.perf_counter())


def _observe(response: Response) -> Response:
    started = g.pop(_STARTED, None)
    if started is not None:
        metrics = _metrics(current_app._get_current_object())  # type: ignore[attr-defined]
        if metrics is not None:
            metrics.latency.labels(
                request.endpoint, request.method, str(response.status_code)
            ).observe(time.perf_counter() - started)
    return response


@bp.get("/metrics")
def serve() -> Response:
    ext = get_state()
    token = ext.settings.metrics_token
    if token is not None:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            response = error_response(
                ObitoXError(
                    "UNAUTHENTICATED",
                    "Send the metrics token as Authorization: Bearer <OBITOX_METRICS_TOKEN>.",
                )
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    assert ext.metrics is not None  # the route exists only with metrics on
    return current_app.response_class(
        ext.metrics.exposition(), mimetype=None, headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def init_metrics(app: Flask, settings: Settings) -> Metrics:
    """The collectors, the signal receivers, the route timer and ``<prefix>/metrics``."""
    metrics = Metrics()
    for signal, receiver in _RECEIVERS:
        signal.connect(receiver, sender=app)
    # Registered before the rate limiter's hook, so a 429 is timed too.
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp, url_prefix=settings.url_prefix, name_prefix="obitox")
    if settings.metrics_token is None and not app.testing:
        logger.warning(
            "OBITOX_METRICS is on without OBITOX_METRICS_TOKEN: anyone who reaches "
            "%s/metrics can read it; set a token or keep the route off the public network.",
            settings.url_prefix,
        )
    return metrics
