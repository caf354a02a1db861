"""What a processor is, what it is handed, and which processors an upload gets.

A processor is a host function registered with ``@obitox.processor(name, ...)``. After
an upload completes, each processor that matches it runs once in an RQ worker, inside
the app context, with a :class:`ProcessingContext`: a streaming read of the object,
``save`` for objects derived from it, the upload view and the storage.

No RQ and no Flask here: :mod:`.processing` records runs in the upload record, and
:mod:`flask_obitox.processing_queue` puts them on the queue.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any

from ..config import MEDIA_PATTERN, ConfigError
from ..state import UploadRecord
from ..storage import Storage
from ..validation.rules import content_type_allowed
from .common import isoformat
from .render import render_upload
from .results import UploadView

if TYPE_CHECKING:
    from .processing import Processing

#: A processor's name: in URLs (``/processing/<name>/retry``), job ids and object keys.
PROCESSOR_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}\Z")
#: The name of an object a processor saves: one key segment, no path.
DERIVED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
#: Seconds a processor may run when it names no ``timeout``.
DEFAULT_TIMEOUT = 300
#: Statuses of one processor's run on one upload.
PROCESSING_STATUSES = ("queued", "running", "completed", "failed")


class UploadGone(Exception):
    """The upload was deleted (or its record expired) while a processor ran for it."""


@dataclasses.dataclass(frozen=True, slots=True)
class Processor:
    """One registered processor."""

    name: str
    func: Callable[[ProcessingContext], Any]
    #: Patterns such as ``image/*``; empty: every upload.
    content_types: tuple[str, ...]
    #: Retries after a failed attempt; ``None``: one per delay of
    #: ``OBITOX_PROCESSING_RETRY_SCHEDULE``.
    retries: int | None
    #: Seconds one attempt may run before RQ stops it (and it counts as failed).
    timeout: int

    @classmethod
    def define(
        cls,
        name: str,
        func: Callable[[ProcessingContext], Any],
        *,
        content_types: Any = None,
        retries: int | None = None,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> Processor:
        """A processor from ``@obitox.processor`` arguments, checked (``ConfigError``)."""
        where = f"processor {name!r}"
        if not isinstance(name, str) or not PROCESSOR_NAME.match(name):
            raise ConfigError(
                f"{where}: a name is 1 to 64 of a-z, 0-9, '-' and '_', starting with a "
                "letter or digit"
            )
        if not callable(func):
            raise ConfigError(f"{where}: {func!r} is not callable")
        patterns = () if content_types is None else content_types
        if isinstance(patterns, str) or not all(
            isinstance(p, str) and re.match(MEDIA_PATTERN, p) for p in patterns
        ):
            raise ConfigError(
                f"{where}: content_types must be a list of types like 'image/png' or "
                f"'image/*', got {content_types!r}"
            )
        if retries is not None and (
            isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100
        ):
            raise ConfigError(f"{where}: retries must be a whole number 0..100, got {retries!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 86400:
            raise ConfigError(f"{where}: timeout must be 1..86400 seconds, got {timeout!r}")
        return cls(name, func, tuple(p.lower() for p in patterns), retries, timeout)

    def matches(self, content_type: str) -> bool:
        return not self.content_types or content_type_allowed(content_type, self.content_types)

    def retry_intervals(self, schedule: tuple[int, ...]) -> list[int]:
        """The delays before each retry: the schedule, cut to ``retries`` or
        lengthened with its last delay."""
        if self.retries is None:
            return list(schedule)
        last = schedule[-1] if schedule else 0
        return [schedule[i] if i < len(schedule) else last for i in range(self.retries)]


def processors_for(
    processors: Mapping[str, Processor], record: UploadRecord, settings: Any
) -> list[Processor]:
    """The processors ``record`` gets: those matching its type, and THE PROFILE FILTER,
    the one place where an upload profile's ``processors`` (DESIGN §18: a tuple of
    names, ``None`` = all) narrows them. Until ``Settings`` has ``profiles``, every
    matching processor runs."""
    matching = [p for p in processors.values() if p.matches(record.content_type)]
    profiles = getattr(settings, "profiles", None)
    profile = profiles.get(record.profile) if profiles and record.profile else None
    wanted = getattr(profile, "processors", None)
    if wanted is None:
        return matching
    return [p for p in matching if p.name in wanted]


def processing_plan(
    processors: Mapping[str, Processor], record: UploadRecord, settings: Any, now: float
) -> dict[str, dict[str, Any]] | None:
    """The ``processing`` an upload starts with when it completes: each of its
    processors ``queued``, for its first run; ``None`` when none applies."""
    chosen = processors_for(processors, record, settings)
    if not chosen:
        return None
    stamp = isoformat(now)
    return {
        p.name: {"status": "queued", "attempts": 0, "updatedAt": stamp, "run": 1} for p in chosen
    }


def derived_key(settings: Any, record: UploadRecord, processor: str, name: str) -> str:
    """Where a derived object lives: under the upload's own prefix,
    ``<OBITOX_KEY_PREFIX><uploadId>/derived/<processor>/<name>``, unique to the upload
    even when a host ``key_builder`` reuses keys."""
    return f"{settings.key_prefix}{record.upload_id}/derived/{processor}/{name}"


def stored_keys(record: UploadRecord) -> list[str]:
    """Every object an upload holds in storage: its own and those derived from it.
    Deleting an upload deletes all of them."""
    return [record.key, *(record.derived or [])]


class ProcessingContext:
    """What a processor is handed: the upload, its object, and where to save."""

    def __init__(
        self,
        domain: Processing,
        record: UploadRecord,
        processor: Processor,
        storage: Storage,
        attempt: int,
    ) -> None:
        self._domain = domain
        self.record = record
        #: The processor's name.
        self.name = processor.name
        #: 1 on the first attempt.
        self.attempt = attempt
        #: The bucket the upload is in (:class:`~flask_obitox.storage.Storage`).
        self.storage = storage
        #: The upload exactly as ``GET /uploads/<id>`` shows it.
        self.upload: UploadView = render_upload(record)
        self.started = time.monotonic()

    def open(self) -> IO[bytes]:
        """A streaming read of the uploaded object (file-like: ``read``, ``close``)."""
        stream: IO[bytes] = self.storage.open(self.record.key)
        return stream

    def save(self, name: str, data: bytes | IO[bytes], content_type: str) -> str:
        """Store ``data`` as an object derived from the upload, beside it under its
        prefix; returns its key. It is recorded in the upload before it is written, so
        deleting the upload deletes it. Raises :class:`UploadGone` once the upload is
        deleted."""
        if not isinstance(name, str) or not DERIVED_NAME.match(name) or ".." in name:
            raise ValueError(
                f"a derived object's name is one key segment of letters, digits, '.', '-' "
                f"and '_' (at most 128), got {name!r}"
            )
        return self._domain.save_derived(
            self.record, self.storage, self.name, name, data, content_type
        )
