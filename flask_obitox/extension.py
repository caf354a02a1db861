"""The :class:`ObitoX` extension object: init_app, per-app state and the hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import Flask

from . import cli, companion, events, ratelimit, views
from .appstate import ANONYMOUS_OWNER, EXTENSION_KEY, Hooks, ObitoXState, get_state
from .config import ConfigError, load_settings, webhook_endpoint
from .domain import UploadService
from .domain.processors import DEFAULT_TIMEOUT, Processor
from .http import install_routing_errors
from .processing_queue import ProcessingQueue
from .processing_queue import connect_signals as connect_processing
from .request_end import send_pending
from .state import EventStream, MemoryStateBackend, StateBackend, backend_from_uri
from .state.capabilities import supports
from .storage import StorageRegistry
from .webhooks.dispatch import Webhooks, connect_signals

__all__ = ["ANONYMOUS_OWNER", "EXTENSION_KEY", "Hooks", "ObitoX", "ObitoXState"]

logger = logging.getLogger("flask_obitox")

F = TypeVar("F", bound=Callable[..., Any])


class ObitoX:
    """Direct-to-S3 uploads for a Flask app.

    ``ObitoX(app)`` or, for app factories, ``obitox = ObitoX()`` then
    ``obitox.init_app(app)``. One instance may serve several apps; each app keeps its
    own state in ``app.extensions["obitox"]``.

    :param state: a :class:`~flask_obitox.state.StateBackend` to use instead of the
        one ``OBITOX_STATE_BACKEND`` names (tests, custom stores).
    """

    def __init__(self, app: Flask | None = None, *, state: StateBackend | None = None) -> None:
        self.hooks = Hooks()
        #: Endpoints from :meth:`add_webhook`, for every app this instance serves.
        self.added_webhooks: list[dict[str, Any]] = []
        self._state = state
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Validate config, choose the state backend and register the routes.

        Never connects to Redis or S3: the app starts while they are down and answers
        503 until they are back.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"ObitoX is already initialised on app {app.name!r}; call init_app once per app."
            )
        settings = load_settings(app.config)
        if self._state is not None:
            state = self._state
        else:
            try:
                state = backend_from_uri(settings.state_backend)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        if supports(state, EventStream):
            state.events_retention = settings.events_retention
        if hasattr(state, "settled_ttl"):  # the built-in backends keep settled uploads so long
            state.settled_ttl = settings.settled_ttl
        if isinstance(state, MemoryStateBackend) and not app.testing:
            logger.warning(
                "OBITOX_STATE_BACKEND is memory://: upload state lives in this process only; "
                "use Redis when running more than one worker."
            )
        if self.hooks.identity_loader is None and not settings.allow_anonymous:
            logger.warning(
                "No @obitox.identity_loader is registered yet: until one is, every upload route answers 401."
            )
        storages = StorageRegistry()
        service = UploadService(settings, state, storages, sender=app, hooks=self.hooks)
        webhooks = Webhooks(settings, self.added_webhooks)
        processing = ProcessingQueue(settings, webhooks, self.hooks.processors)
        service.jobs = processing
        # Checked before anything is registered: a bad combination fails init_app whole.
        limiter_storage = (
            ratelimit.limiter_storage_uri(settings, state) if settings.rate_limits else None
        )
        metrics = None
        if settings.metrics:
            # Imported only when on: no prometheus_client collectors exist otherwise.
            from .metrics import init_metrics

            metrics = init_metrics(app, settings)
        limiter = ratelimit.init_rate_limits(app, settings, limiter_storage, self.hooks, state)
        app.extensions[EXTENSION_KEY] = ObitoXState(
            self.hooks,
            settings,
            state,
            storages,
            service,
            webhooks,
            limiter=limiter,
            metrics=metrics,
            processing=processing,
        )
        prefix = settings.url_prefix
        app.register_blueprint(views.bp, url_prefix=prefix)
        # Named obitox.companion.*, so the JSON error handlers of ``obitox`` apply too.
        app.register_blueprint(companion.bp, url_prefix=f"{prefix}/s3", name_prefix="obitox")
        companion.init_browser_routes(app, settings)
        install_routing_errors(app, prefix)
        app.cli.add_command(cli.obitox_cli)
        app.teardown_request(send_pending)
        connect_signals(app)
        if settings.events:
            events.connect_signals(app)
        connect_processing(app)

    # -- hooks ---------------------------------------------------------------------

    def identity_loader(self, callback: F) -> F:
        """Register the function returning the caller's owner id, or ``None`` (401)."""
        self.hooks.identity_loader = callback
        return callback

    def admin_loader(self, callback: F) -> F:
        """Register the function telling whether the caller may use admin routes."""
        self.hooks.admin_loader = callback
        return callback

    def key_builder(self, callback: F) -> F:
        """Register ``(owner, filename, upload_id, metadata) -> key``; the key must stay
        under ``OBITOX_KEY_PREFIX``."""
        self.hooks.key_builder = callback
        return callback

    def storage_resolver(self, callback: F) -> F:
        """Register ``owner -> StorageSettings | dict | None`` for per-tenant buckets."""
        self.hooks.storage_resolver = callback
        return callback

    def processor(
        self,
        name: str,
        *,
        content_types: Sequence[str] | None = None,
        retries: int | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> Callable[[F], F]:
        """Register ``func(ctx)`` to run in a worker after each completed upload whose
        type matches ``content_types`` (default: every upload); see
        :class:`~flask_obitox.domain.ProcessingContext`. ``retries``: after a failed
        attempt (default: one per delay of ``OBITOX_PROCESSING_RETRY_SCHEDULE``);
        ``timeout``: seconds one attempt may run. Register processors where the app is
        built, so the web processes and ``flask obitox worker`` both know them.

        Raises :class:`~flask_obitox.ConfigError` for a bad argument or a name taken.
        """

        def register(func: F) -> F:
            processor = Processor.define(
                name, func, content_types=content_types, retries=retries, timeout=timeout
            )
            if name in self.hooks.processors:
                raise ConfigError(f"processor {name!r} is already registered")
            self.hooks.processors[name] = processor
            return func

        return register

    def profile_guard(self, callback: F) -> F:
        """Register ``(owner, profile) -> bool``: may this owner upload under the
        ``OBITOX_PROFILES`` entry ``profile``? A false answer is 403 FORBIDDEN. Without
        a guard every caller may use every profile."""
        self.hooks.profile_guard = callback
        return callback

    def add_webhook(self, url: str, secret: str, events: Sequence[str] | None = None) -> None:
        """Deliver ``events`` (default: all) to ``url``, signed with ``secret``
        (``whsec_...``), for every app this instance serves, in addition to their
        ``OBITOX_WEBHOOKS``. Call it where the app is built, so that the web processes
        and ``flask obitox worker`` both see it (the worker looks the secret up).

        Raises :class:`~flask_obitox.ConfigError` for a bad URL, secret or event.
        """
        endpoint: dict[str, Any] = {"url": url, "secret": secret}
        if events is not None:
            endpoint["events"] = events
        checked = webhook_endpoint(endpoint, "add_webhook")
        if any(added["url"] == checked["url"] for added in self.added_webhooks):
            raise ConfigError(f"add_webhook: {url} is already an endpoint")
        self.added_webhooks.append(checked)

    # -- access --------------------------------------------------------------------

    def get_state(self, app: Flask | None = None) -> ObitoXState:
        """The per-app state; raises :class:`RuntimeError` if ``init_app`` was never called."""
        return get_state(app)

    @property
    def service(self) -> UploadService:
        """The current app's :class:`~flask_obitox.domain.UploadService`."""
        return get_state().service
