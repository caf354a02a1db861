"""The example receives its own webhooks: a receiver as a host would write one.

``POST /webhooks/obitox`` verifies the Standard Webhooks signature with the reference
``standardwebhooks`` library (any other request is answered 400 and not recorded),
de-duplicates on ``webhook-id`` (deliveries are at-least-once) and keeps the last
deliveries in memory. ``GET /webhooks/deliveries`` lists, for the page, the deliveries
about the caller's own uploads (the app turns on ``OBITOX_WEBHOOK_INCLUDE_OWNER``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

#: Where the example's own endpoint is, and its secret (``python -m example_app`` sets
#: both, for the app and for its worker).
URL_KEY = "EXAMPLE_WEBHOOK_URL"
SECRET_KEY = "EXAMPLE_WEBHOOK_SECRET"  # noqa: S105 - a config key name
RECEIVER_PATH = "/webhooks/obitox"
#: Deliveries the page shows.
KEPT = 50


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
                    "receivedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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

    return inbox


def register_disabled(app: Flask) -> None:
    """The list route when the example was started without its webhook."""

    @app.get("/webhooks/deliveries")
    def list_deliveries() -> ResponseReturnValue:
        return jsonify(enabled=False, endpoint=None, deliveries=[])
