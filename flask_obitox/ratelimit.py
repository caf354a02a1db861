"""Rate limits on the routes that sign or create, per owner (Flask-Limiter).

One budget per owner, ``OBITOX_RATE_LIMITS`` (default ``"600 per minute"``), shared by
every route that signs a URL or creates an upload: whichever of them a caller uses, it
counts against the same limit. Other routes (status, complete, abort, admin) are never
limited. The owner is the identity loader's id; a caller without one is counted by its
remote address (the routes then answer 401 anyway, but a flood of them is still bounded).

Counters live where the upload state does: the ``OBITOX_STATE_BACKEND`` Redis, or
Flask-Limiter's memory storage for ``memory://``; with a Redis Cluster state, on the
standalone ``OBITOX_RQ_REDIS_URL`` (limits' cluster storage connects at start-up). If that storage cannot be reached the
limiter **fails open** (Flask-Limiter's ``swallow_errors``: the request goes through,
and the error is logged by the ``flask-limiter`` logger): every limited route needs
the same Redis for its state, so it answers 503 ``STATE_UNAVAILABLE`` by itself while
Redis is down, and a limiter that failed closed would only turn a limiter hiccup into an
upload outage.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from flask_limiter import Limiter, RequestLimit

from .config import ConfigError, ConfigVars, Settings
from .errors import ObitoXError
from .http import error_response
from .redis_client import DEFAULT_CLIENT_OPTIONS

if TYPE_CHECKING:
    from .appstate import Hooks
    from .state import StateBackend

__all__ = ["LIMITED_ENDPOINTS", "init_rate_limits", "limiter_storage_uri"]

#: The routes that sign or create: native, then Companion (``obitox.companion.*``).
LIMITED_ENDPOINTS = frozenset(
    {
        "obitox.create_upload",
        "obitox.create_batch",
        "obitox.create_multipart",
        "obitox.sign_parts",
        "obitox.companion.params",
        "obitox.companion.create_multipart",
        "obitox.companion.sign_batch",
        "obitox.companion.sign_part",
    }
)
#: Prefix of every counter key: ``LIMITS:LIMITER/obitox/owner:<id>/global/600/1/minute``
#: (``address:<ip>`` for a caller without an id; ``global``: one budget for all routes).
KEY_PREFIX = "obitox"
#: State schemes whose Redis limits reaches under another scheme name.
_LIMITS_SCHEMES = {"unix": "redis+unix"}
_REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "redis+cluster", "redis+sentinel")


def limiter_storage_uri(settings: Settings, state: StateBackend) -> str:
    """Where the counters go: the state's Redis, or memory with ``memory://`` state (or a
    memory backend given to :class:`~flask_obitox.ObitoX` directly)."""
    from .state import MemoryStateBackend, RedisClusterStateBackend, RedisStateBackend

    if isinstance(state, MemoryStateBackend):
        return "memory://"
    if isinstance(state, RedisClusterStateBackend):
        # limits' cluster storage asks the cluster for its slot map when it is made, and
        # an app must start while Redis is down: the counters go to RQ's standalone
        # Redis (required with a cluster state), whose client connects on first use.
        return settings.rq_redis_url
    if isinstance(state, RedisStateBackend):
        # A backend given to ObitoX directly: its own server (its client's pool is
        # handed to the limiter, see init_rate_limits), not OBITOX_STATE_BACKEND's.
        return "redis://"
    scheme, _, rest = settings.state_backend.strip().partition("://")
    scheme = scheme.lower()
    scheme = _LIMITS_SCHEMES.get(scheme, scheme)
    if scheme != "memory" and scheme not in _REDIS_SCHEMES:
        raise ConfigError(
            f"{ConfigVars.RATE_LIMITS} keeps its counters in the state backend, and "
            f"Flask-Limiter has no storage for {scheme}:// ({ConfigVars.STATE_BACKEND}); "
            f"set {ConfigVars.RATE_LIMITS}='' to turn rate limits off"
        )
    return f"{scheme}://{rest}"


def _rate_key(hooks: Hooks) -> str:
    """The owner id, or the remote address of a caller without one. The same rules as
    :func:`~flask_obitox.http.owner_of` (a bool or an empty id is no identity); anonymous
    callers (``OBITOX_ALLOW_ANONYMOUS``) share one owner id, so they count by address."""
    loader = hooks.identity_loader
    owner = loader() if loader is not None else None
    if owner is None or owner == "" or isinstance(owner, bool):
        return f"address:{request.remote_addr or 'unknown'}"
    return f"owner:{owner}"


def _too_many(limit: RequestLimit) -> Response:
    retry_after = max(1, math.ceil(limit.window[0] - time.time()))
    error = ObitoXError(
        "RATE_LIMITED",
        f"Too many upload requests: at most {limit.limit} (OBITOX_RATE_LIMITS); "
        f"retry in {retry_after} s.",
        details={"limit": str(limit.limit), "retryAfter": retry_after},
    )
    response = error_response(error)
    response.headers["Retry-After"] = str(retry_after)
    return response


def init_rate_limits(
    app: Flask, settings: Settings, uri: str | None, hooks: Hooks, state: StateBackend | None = None
) -> Any:
    """A :class:`~flask_limiter.Limiter` on ``app`` for :data:`LIMITED_ENDPOINTS`, its
    counters at ``uri`` (:func:`limiter_storage_uri`), or ``None`` when
    ``OBITOX_RATE_LIMITS`` is empty. Nothing connects here."""
    if not settings.rate_limits or uri is None:
        return None
    options: dict[str, Any] = {}
    from .state import RedisClusterStateBackend, RedisStateBackend

    if isinstance(state, RedisStateBackend) and not isinstance(state, RedisClusterStateBackend):
        # The counters live where the state lives, on the state client's connections.
        options = {"connection_pool": state.client.connection_pool}
    elif uri.startswith("redis"):
        # Fail as fast as the state's own client does when Redis is down.
        options = {
            "socket_connect_timeout": DEFAULT_CLIENT_OPTIONS["socket_connect_timeout"],
            "socket_timeout": 2.0,
        }
    limiter = Limiter(
        lambda: _rate_key(hooks),
        application_limits=[settings.rate_limits],
        # A host's own RATELIMIT_DEFAULT is for its limiter, not for this one.
        default_limits_exempt_when=lambda: True,
        storage_uri=uri,
        storage_options=options,
        strategy="fixed-window",
        key_prefix=KEY_PREFIX,
        headers_enabled=False,
        swallow_errors=True,
        on_breach=_too_many,
    )
    limiter.request_filter(lambda: request.endpoint not in LIMITED_ENDPOINTS)
    limiter.init_app(app)
    return limiter
