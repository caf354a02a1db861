"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A delivery carries three headers: ``webhook-id`` (the message id, the same on every
attempt so receivers can de-duplicate), ``webhook-timestamp`` (Unix seconds of this
attempt) and ``webhook-signature``: ``v1,`` and the base64 HMAC-SHA256, keyed with the
bytes inside the ``whsec_`` secret, of ``"{id}.{timestamp}.{body}"``. The reference
``standardwebhooks`` library verifies exactly this (the test suite proves it).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from base64 import b64encode

from ..config import webhook_secret_key

__all__ = ["signature", "signed_headers", "webhook_secret_key"]


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one attempt: ``v1,<base64 HMAC-SHA256>``."""
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + b64encode(digest).decode()


def signed_headers(
    key: bytes, message_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """The headers of one delivery attempt, signed with ``key`` at ``timestamp`` (now)."""
    when = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(when),
        "webhook-signature": signature(key, message_id, when, body),
    }
