"""The one place a Redis client is made, for the state backend and for RQ alike.

A leaf module: it imports redis-py and nothing of the package, so the state backends,
the webhook dispatcher and the doctor can all use it without an import cycle.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.retry import Retry

__all__ = [
    "DEFAULT_CLIENT_OPTIONS",
    "ClusterNodeError",
    "describe_client",
    "redact_url",
    "redis_from_url",
]

#: Client settings every client starts from (``socket_timeout`` is a parameter).
DEFAULT_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 1.0,
    "health_check_interval": 30,
}


class ClusterNodeError(RedisConnectionError):
    """A plain Redis URL that leads to a Redis Cluster node."""


def refuse_cluster_nodes(connection: Any) -> None:
    """Run on every new connection of a plain client: its handshake, then ``INFO
    cluster``. A cluster node would answer only for the keys of its own slots (``MOVED``
    for the rest), so it is refused at first use, with a sentence that says what to use.
    A server that refuses ``INFO`` (an ACL) is taken for a standalone one."""
    connection.on_connect()
    connection.send_command("INFO", "cluster")
    try:
        reply = connection.read_response()
    except ResponseError:
        return
    if isinstance(reply, dict):
        enabled = str(reply.get("cluster_enabled", "0"))
    else:
        raw = reply.decode() if isinstance(reply, bytes) else str(reply)
        enabled = "1" if "cluster_enabled:1" in raw else "0"
    if enabled == "1":
        where = f"{connection.host}:{connection.port}" if hasattr(connection, "host") else "it"
        raise ClusterNodeError(
            f"the Redis at {where} is a Redis Cluster node: a redis:// URL only reaches its "
            "own slots; use redis+cluster://host:port for OBITOX_STATE_BACKEND, and a "
            "standalone or Sentinel-managed Redis for OBITOX_RQ_REDIS_URL"
        )


def redis_from_url(url: str, *, socket_timeout: float = 2.0, **overrides: Any) -> redis.Redis:
    """A client for ``url`` that fails fast when Redis is down.

    Nothing connects here: connections are made on first use, so an app can start while
    Redis is down. Connecting times out after 1 s, replies after ``socket_timeout``,
    idle connections are health-checked every 30 s, TCP keepalive is on (TCP only: unix
    sockets reject it), and a command that failed on a dropped connection is retried
    once, immediately, so a dead Redis is reported in about a connect timeout rather
    than after backoffs. A Redis Cluster node is refused on the first connection
    (:func:`refuse_cluster_nodes`). ``overrides`` win over all of these (``retry``,
    ``max_connections``, ...).
    """
    options: dict[str, Any] = dict(DEFAULT_CLIENT_OPTIONS)
    options["redis_connect_func"] = refuse_cluster_nodes
    options["socket_timeout"] = socket_timeout
    options["retry"] = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    if not url.lower().startswith("unix:"):
        options["socket_keepalive"] = True
    options.update(overrides)
    return redis.Redis.from_url(url, **options)


def redact_url(url: str) -> str:
    """``url`` without its password and query string (which may also carry one)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable redis url>"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc}"
    elif parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def describe_client(client: redis.Redis) -> str:
    """Where ``client`` connects, as a URL without credentials (for messages)."""
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", None) or {}
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    connection_class = getattr(pool, "connection_class", None)
    scheme = "rediss" if "SSL" in getattr(connection_class, "__name__", "") else "redis"
    host = kwargs.get("host", "localhost")
    return f"{scheme}://{host}:{kwargs.get('port', 6379)}/{db}"
