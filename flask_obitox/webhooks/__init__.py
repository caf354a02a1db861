"""Webhook deliveries of upload events, signed per Standard Webhooks, run by RQ workers.

- :mod:`.events`: the messages (``{type, timestamp, data}``) and their ids;
- :mod:`.signing`: the ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``
  headers;
- :mod:`.dispatch`: endpoints, the RQ queue, and the signal receivers that enqueue
  one job per (event, endpoint);
- :mod:`.delivery`: the job that POSTs one message;
- :mod:`.targets`: the SSRF rules;
- :mod:`.worker`: ``flask obitox worker``;
- :mod:`.failures`: ``flask obitox webhooks failed`` and ``replay``.
"""

from .delivery import Delivery, WebhookDeliveryFailed, deliver
from .dispatch import Endpoint, Webhooks, delivery_job_id, webhook_queue, webhooks_for
from .events import Message
from .failures import FailedDelivery, UnknownFailedDelivery, failed_deliveries, replay
from .signing import signature, signed_headers
from .targets import WebhookTargetRefused, check_target
from .worker import run_worker

__all__ = [
    "Delivery",
    "Endpoint",
    "FailedDelivery",
    "Message",
    "UnknownFailedDelivery",
    "WebhookDeliveryFailed",
    "WebhookTargetRefused",
    "Webhooks",
    "check_target",
    "deliver",
    "delivery_job_id",
    "failed_deliveries",
    "replay",
    "run_worker",
    "signature",
    "signed_headers",
    "webhook_queue",
    "webhooks_for",
]
