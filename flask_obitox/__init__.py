"""flask-obitox: direct-to-S3 uploads for Flask.

The names below are imported on first use (PEP 562), so that ``flask_obitox.client`` and
the ``obitox`` command, which need none of Flask, boto3 or redis, start in a fraction
of the time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import signals
    from .config import ConfigError, Settings
    from .errors import ObitoXError, StateUnavailable, StorageUnavailable
    from .extension import ObitoX
    from .state import MemoryStateBackend, RedisStateBackend, StateBackend, UploadRecord
    from .storage import StorageSettings

#: Public name -> the module that defines it.
_EXPORTS = {
    "ConfigError": ".config",
    "MemoryStateBackend": ".state",
    "ObitoX": ".extension",
    "ObitoXError": ".errors",
    "RedisStateBackend": ".state",
    "Settings": ".config",
    "StateBackend": ".state",
    "StateUnavailable": ".errors",
    "StorageSettings": ".storage",
    "StorageUnavailable": ".errors",
    "UploadRecord": ".state",
    "signals": ".signals",
}

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


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(module_name, __name__)
    value = module if name == "signals" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
