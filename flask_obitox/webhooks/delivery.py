"""The delivery job: one signed POST of one message to one endpoint.

RQ runs :func:`deliver` in a worker started by ``flask obitox worker``, inside an app
context (the endpoint's secret and the SSRF rules are read from the app's config, so
secrets are never stored in Redis). An attempt succeeds on a 2xx answer only. Any
other outcome raises :class:`WebhookDeliveryFailed`, and RQ schedules the next attempt
from the job's ``Retry`` (``OBITOX_WEBHOOK_RETRY_SCHEDULE``) or, after the last one,
leaves the job in its failed registry. Some failures are final at once: ``410 Gone``
(the receiver asks for no more), a refused target (SSRF rules) and a URL that is no
longer configured.

Every attempt sends the same ``webhook-id`` and body, with a fresh timestamp and
signature, so a receiver can de-duplicate on the id.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import requests
from flask import Flask, current_app, has_app_context
from requests_hardened.ip_filter import InvalidIPAddress
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from .. import signals
from ..config import ConfigVars
from .dispatch import Webhooks, webhooks_for
from .signing import signed_headers
from .targets import WebhookTargetRefused, check_url, display_url

logger = logging.getLogger("flask_obitox.webhooks")

#: Bytes of a receiver's answer that are read (so the connection can be reused);
#: a longer answer is cut off and its connection closed.
MAX_RESPONSE_BYTES = 64 * 1024
#: What ``last_error`` says while an attempt runs: if the worker dies, it stays true.
INTERRUPTED = "the attempt was interrupted (the worker stopped or was killed)"


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery attempt, as the ``webhook-delivered`` and ``webhook-failed``
    signals report it."""

    #: The ``webhook-id``: the same on every attempt of this message.
    webhook_id: str
    #: The event type, e.g. ``"upload.completed"``.
    event: str
    #: The endpoint URL.
    url: str
    #: 1 for the first attempt, counting attempts a killed worker never finished.
    attempt: int
    #: The RQ job id (``None`` when called outside RQ).
    job_id: str | None
    #: The HTTP status answered, ``None`` when there was no answer.
    status_code: int | None
    #: Why the attempt failed, ``None`` when it succeeded.
    error: str | None
    #: Seconds the attempt took.
    duration: float
    #: The exact body sent (JSON text).
    body: str

    @property
    def payload(self) -> Any:
        import orjson

        return orjson.loads(self.body)


class WebhookDeliveryFailed(Exception):
    """An attempt did not get a 2xx answer; RQ retries it unless ``final``."""

    def __init__(self, delivery: Delivery, *, final: bool) -> None:
        super().__init__(
            f"{delivery.event} {delivery.webhook_id} -> {display_url(delivery.url)}: "
            f"{delivery.error}"
        )
        self.delivery = delivery
        self.final = final


class _Failure(Exception):
    """Internal: an attempt failed; ``permanent`` ones are not retried."""

    def __init__(self, error: str, *, status_code: int | None = None, permanent: bool = False):
        super().__init__(error)
        self.error = error
        self.status_code = status_code
        self.permanent = permanent


def _post(webhooks: Webhooks, url: str, key: bytes, message_id: str, body: bytes) -> int:
    """POST once; the status code, or :class:`_Failure` for anything but an answer."""
    settings = webhooks.settings
    try:
        check_url(url, settings)
        response = webhooks.session.post(
            url,
            data=body,
            headers=signed_headers(key, message_id, body),
            allow_redirects=False,
            stream=True,
        )
    except WebhookTargetRefused as error:
        raise _Failure(f"refused: {error}", permanent=True) from None
    except InvalidIPAddress as error:
        raise _Failure(
            f"refused: the host of {display_url(url)} resolves to {error}, a private, "
            f"loopback, link-local, shared or reserved address (set "
            f"{ConfigVars.WEBHOOK_ALLOW_PRIVATE} = True to deliver there)",
            permanent=True,
        ) from None
    except requests.Timeout:
        raise _Failure(f"no answer within {settings.webhook_timeout} s") from None
    except requests.RequestException as error:
        raise _Failure(f"could not reach the endpoint: {type(error).__name__}: {error}") from None
    except JobTimeoutException:
        raise _Failure(f"the attempt took longer than {webhooks.job_timeout} s") from None
    status = response.status_code
    location = response.headers.get("Location")
    try:
        read = 0
        for chunk in response.iter_content(chunk_size=16 * 1024):
            read += len(chunk)
            if read > MAX_RESPONSE_BYTES:
                break
    except (requests.RequestException, JobTimeoutException):
        pass  # the status line is what counts; the body is only drained for reuse
    finally:
        response.close()
    if 200 <= status < 300:
        return status
    if 300 <= status < 400:
        raise _Failure(
            f"HTTP {status}: a redirect (to {location!r}) is not followed", status_code=status
        )
    if status == 410:
        raise _Failure(
            "HTTP 410 Gone: the endpoint refuses this message; not retried",
            status_code=status,
            permanent=True,
        )
    raise _Failure(f"HTTP {status}", status_code=status)


def _send_signal(signal: Any, app: Flask, **kwargs: Any) -> None:
    # A receiver's bug must not turn a delivered webhook into a retried (duplicate) one.
    try:
        signal.send(app, **kwargs)
    except Exception:
        logger.exception("A %s receiver raised", signal.name)


def deliver(message_id: str, event: str, url: str, body: str) -> int:
    """The RQ job: deliver ``body`` as message ``message_id`` to ``url``; returns the
    HTTP status of a successful attempt, raises :class:`WebhookDeliveryFailed`
    otherwise. Needs the app context that ``flask obitox worker`` provides."""
    if not has_app_context():
        raise RuntimeError(
            "Webhook deliveries need the Flask app: run workers with `flask obitox worker`."
        )
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    webhooks = webhooks_for(app)
    job = get_current_job()
    attempt = 1
    if job is not None:
        attempt = int(job.meta.get("attempts", 0)) + 1
        job.meta.update(attempts=attempt, last_error=INTERRUPTED)
        job.save_meta()  # type: ignore[no-untyped-call]

    started = time.monotonic()

    def delivery(status_code: int | None, error: str | None) -> Delivery:
        job_id = job.id if job is not None else None
        elapsed = time.monotonic() - started
        return Delivery(message_id, event, url, attempt, job_id, status_code, error, elapsed, body)

    try:
        endpoint = webhooks.endpoint(url)
        if endpoint is None:
            raise _Failure(
                f"{display_url(url)} is no longer a configured webhook endpoint", permanent=True
            )
        status = _post(webhooks, url, endpoint.key, message_id, body.encode())
    except _Failure as failure:
        failed = delivery(failure.status_code, failure.error)
        final = failure.permanent or job is None or not job.retries_left
        if job is not None:
            if failure.permanent:
                job.retries_left = 0  # RQ then moves the job to its failed registry
            job.meta["last_error"] = failure.error
            job.save_meta()  # type: ignore[no-untyped-call]
        _send_signal(signals.webhook_failed, app, delivery=failed, final=final)
        raise WebhookDeliveryFailed(failed, final=final) from None

    _send_signal(signals.webhook_delivered, app, delivery=delivery(status, None))
    return status
