"""What one app holds in ``app.extensions["obitox"]``, and the one way to look it up.

A leaf of the import graph: routes, the CLI, the doctor, jobs and the webhook modules
read the per-app state from here, so none of them imports :mod:`.extension` (which
imports them to register them) back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

if TYPE_CHECKING:
    from .config import Settings
    from .domain import UploadService
    from .metrics import Metrics
    from .processing_queue import ProcessingQueue
    from .state import StateBackend
    from .storage import StorageRegistry
    from .webhooks.dispatch import Webhooks

EXTENSION_KEY = "obitox"
#: The owner id every caller shares when ``OBITOX_ALLOW_ANONYMOUS`` is on.
ANONYMOUS_OWNER = "anonymous"


@dataclasses.dataclass(slots=True)
class Hooks:
    """The host's callbacks, set with the :class:`~flask_obitox.ObitoX` decorators."""

    identity_loader: Callable[[], Any] | None = None
    admin_loader: Callable[[], Any] | None = None
    key_builder: Callable[..., str] | None = None
    storage_resolver: Callable[[str], Any] | None = None
    #: ``@obitox.processor`` functions by name (:class:`~flask_obitox.domain.processors.Processor`).
    processors: dict[str, Any] = dataclasses.field(default_factory=dict)
    profile_guard: Callable[[str, str], Any] | None = None


@dataclasses.dataclass(slots=True)
class ObitoXState:
    """What one app holds in ``app.extensions["obitox"]``."""

    hooks: Hooks
    settings: Settings
    state: StateBackend
    storages: StorageRegistry
    service: UploadService
    webhooks: Webhooks
    warned_no_identity: bool = False
    #: The Flask-Limiter ``Limiter`` of ``OBITOX_RATE_LIMITS`` (``None``: off).
    limiter: Any = None
    #: The :class:`~flask_obitox.metrics.Metrics` of ``OBITOX_METRICS`` (``None``: off).
    metrics: Metrics | None = None
    #: The processing queue (``OBITOX_PROCESSING_QUEUE``).
    processing: ProcessingQueue = dataclasses.field(default=None)  # type: ignore[assignment]


def get_state(app: Flask | None = None) -> ObitoXState:
    """``app``'s (default: the current app's) state; :class:`RuntimeError` if
    ``init_app`` was never called on it."""
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        state: ObitoXState = app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError(
            f"ObitoX is not initialised on app {app.name!r}: call ObitoX(app) or obitox.init_app(app)."
        ) from None
    return state
