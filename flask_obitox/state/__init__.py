"""Upload state: the record, the backend protocol, its capabilities and the backends.

``OBITOX_STATE_BACKEND`` picks the backend by URI scheme from a registry (see
:func:`backend_from_uri` and :func:`register_backend`): ``redis://``, ``rediss://`` or
``unix://`` for Redis, ``memory://`` for a single process.
"""

from __future__ import annotations

from .base import KINDS, STATUSES, TERMINAL, StateBackend, UploadRecord
from .capabilities import (
    GROUP_STATUSES,
    GROUP_TERMINAL,
    BulkRead,
    EventFanIn,
    EventStream,
    GroupClosed,
    GroupNotFound,
    GroupRecord,
    Groups,
    InvalidCursor,
    KeyIndex,
    OwnerIndex,
    Page,
)
from .memory import MemoryStateBackend
from .redis import RedisStateBackend
from .registry import backend_from_uri, plain_redis_schemes, register_backend, registered_schemes

__all__ = [
    "GROUP_STATUSES",
    "GROUP_TERMINAL",
    "KINDS",
    "STATUSES",
    "TERMINAL",
    "BulkRead",
    "EventFanIn",
    "EventStream",
    "GroupClosed",
    "GroupNotFound",
    "GroupRecord",
    "Groups",
    "InvalidCursor",
    "KeyIndex",
    "MemoryStateBackend",
    "OwnerIndex",
    "Page",
    "RedisStateBackend",
    "StateBackend",
    "UploadRecord",
    "backend_from_uri",
    "plain_redis_schemes",
    "register_backend",
    "registered_schemes",
]
