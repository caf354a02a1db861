"""Which backend a ``OBITOX_STATE_BACKEND`` URI names: a registry keyed by URL scheme.

Built in: ``memory://``, the plain Redis schemes ``redis://``, ``rediss://`` and
``unix://``, and ``redis+cluster://`` (:mod:`~flask_obitox.state.redis_cluster`). Another backend registers its schemes once, at import of its module::

    register_backend("redis+cluster", RedisClusterStateBackend.from_url)

(a built-in backend is registered at the bottom of this module, as memory and Redis are).
``plain_redis=True`` says that a ``redis.Redis`` client, and so RQ, can use the same
URL: configuration only lets RQ share the state's Redis for those schemes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .base import StateBackend
from .memory import MemoryStateBackend
from .redis import RedisStateBackend
from .redis_cluster import RedisClusterStateBackend

__all__ = [
    "backend_from_uri",
    "plain_redis_schemes",
    "register_backend",
    "registered_schemes",
    "scheme_list",
]

#: Builds a backend from its URI (the scheme already lower-case).
BackendFactory = Callable[[str], StateBackend]


@dataclass(frozen=True, slots=True)
class _Scheme:
    factory: BackendFactory
    plain_redis: bool


_SCHEMES: dict[str, _Scheme] = {}


def register_backend(scheme: str, factory: BackendFactory, *, plain_redis: bool = False) -> None:
    """Let ``OBITOX_STATE_BACKEND`` URIs of ``scheme`` (``"redis+cluster"``, no ``://``)
    build their backend with ``factory(uri)``. Registering a scheme again replaces it."""
    scheme = scheme.lower()
    if not scheme or "://" in scheme:
        raise ValueError(f"a scheme is a name without '://', got {scheme!r}")
    _SCHEMES[scheme] = _Scheme(factory, plain_redis)


def registered_schemes() -> tuple[str, ...]:
    """Every scheme a backend is registered for, in registration order."""
    return tuple(_SCHEMES)


def plain_redis_schemes() -> frozenset[str]:
    """Schemes whose URL a plain ``redis.Redis`` client (and so RQ) accepts."""
    return frozenset(name for name, entry in _SCHEMES.items() if entry.plain_redis)


def scheme_list(schemes: Iterable[str]) -> str:
    """``"a://, b:// or c://"``, for messages."""
    names = [f"{name}://" for name in schemes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def backend_from_uri(uri: str) -> StateBackend:
    """The backend ``OBITOX_STATE_BACKEND`` names (nothing connects yet).

    Anything without a registered scheme raises :class:`ValueError`, which quotes only
    the scheme: the URI may hold a password.
    """
    uri = uri.strip()
    scheme, sep, _ = uri.partition("://")
    scheme = scheme.lower()
    entry = _SCHEMES.get(scheme) if sep else None
    if entry is not None:
        # redis-py only knows lower-case schemes.
        return entry.factory(scheme + uri[len(scheme) :])
    shown = f"{scheme}://..." if sep else "a value without a scheme"
    raise ValueError(
        f"OBITOX_STATE_BACKEND must be a {scheme_list(registered_schemes())} URI, got {shown}"
    )


def _memory(uri: str) -> StateBackend:
    return MemoryStateBackend()


register_backend("memory", _memory)
for _name in ("redis", "rediss", "unix"):
    register_backend(_name, RedisStateBackend.from_url, plain_redis=True)
register_backend("redis+cluster", RedisClusterStateBackend.from_url)
