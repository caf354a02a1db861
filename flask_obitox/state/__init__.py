"""Upload state: the record, the backend protocol, and the two backends.

``OBITOX_STATE_BACKEND`` picks the backend by URI (see :func:`backend_from_uri`):
``redis://``, ``rediss://`` or ``unix://`` for Redis, ``memory://`` for a single process.
"""

from __future__ import annotations

from .base import STATUSES, TERMINAL, StateBackend, UploadRecord
from .memory import MemoryStateBackend
from .redis import RedisStateBackend

__all__ = [
    "STATUSES",
    "TERMINAL",
    "MemoryStateBackend",
    "RedisStateBackend",
    "StateBackend",
    "UploadRecord",
    "backend_from_uri",
]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def backend_from_uri(uri: str) -> StateBackend:
    """The backend ``OBITOX_STATE_BACKEND`` names.

    ``redis://``, ``rediss://``, ``unix://`` -> :class:`RedisStateBackend` (nothing
    connects until first use); ``memory://`` -> :class:`MemoryStateBackend`. Anything
    else raises :class:`ValueError` (which quotes only the scheme: the URI may hold a
    password).
    """
    uri = uri.strip()
    scheme, sep, _ = uri.partition("://")
    scheme = scheme.lower()
    if sep and scheme in _REDIS_SCHEMES:
        # redis-py only knows lower-case schemes.
        return RedisStateBackend.from_url(scheme + uri[len(scheme) :])
    if sep and scheme == "memory":
        return MemoryStateBackend()
    shown = f"{scheme}://..." if sep else "a value without a scheme"
    raise ValueError(
        f"OBITOX_STATE_BACKEND must be a redis://, rediss://, unix:// or memory:// URI, got {shown}"
    )
