"""flask-obitox: direct-to-S3 uploads for Flask."""

from . import signals
from .config import ConfigError, Settings
from .errors import ObitoXError, StateUnavailable, StorageUnavailable
from .extension import ObitoX
from .state import MemoryStateBackend, RedisStateBackend, StateBackend, UploadRecord
from .storage import StorageSettings

__all__ = [
    "ConfigError",
    "MemoryStateBackend",
    "ObitoX",
    "ObitoXError",
    "RedisStateBackend",
    "Settings",
    "StateBackend",
    "StateUnavailable",
    "StorageSettings",
    "StorageUnavailable",
    "UploadRecord",
    "signals",
]
