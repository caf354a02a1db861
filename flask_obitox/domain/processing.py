"""Processing after upload: each processor's run, recorded in the upload record.

When an upload completes, :func:`.processors.processing_plan` marks each of its
processors ``queued`` in the same compare-and-set that completes it (:mod:`.settling`),
and the queue (:mod:`flask_obitox.processing_queue`) gets one job per processor. A job
calls :meth:`Processing.run_processor`, which claims the run (``running``, one more
attempt), calls the processor, and records ``completed`` with its result or the error:
``queued`` again while retries are left, ``failed`` after the last. Every change is a
read-modify-write of ``processing`` (:class:`~flask_obitox.state.RecordChanges`), so
processors of one upload finishing together lose nothing, and the one that completes
the last of them is the one that sends ``upload-ready``.

A run is numbered: ``POST .../processing/<name>/retry`` (or ``flask obitox processing
retry``) starts run 2, 3, … of a failed processor, and a job of an older run (a late
retry of a killed worker) finds itself superseded and does nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Protocol

import orjson

from .. import signals
from ..errors import ObitoXError
from ..state import UploadRecord
from ..state.capabilities import RecordChanges, supports
from ..storage import Storage
from .base import DomainBase
from .common import isoformat, not_found
from .processors import (
    ProcessingContext,
    Processor,
    UploadGone,
    derived_key,
)
from .render import is_ready, render_processing, render_upload
from .results import UploadView

logger = logging.getLogger("flask_obitox.processing")

#: Bytes of a processor's JSON result kept in the record (it is shown in every view).
MAX_RESULT_BYTES = 16 * 1024
#: What a run records while it runs: if its worker dies, this is the error it keeps.
KILLED = "the worker running it stopped or was killed"

Change = Callable[[UploadRecord], "dict[str, Any] | None"]


class ProcessingJobs(Protocol):
    """Where runs are queued (:class:`flask_obitox.processing_queue.ProcessingQueue`)."""

    def enqueue(self, record: UploadRecord, names: Sequence[str]) -> None: ...


class ProcessorFailed(Exception):
    """An attempt failed; the queue retries it unless ``final``."""

    def __init__(self, upload_id: str, name: str, error: str, *, final: bool) -> None:
        super().__init__(f"processor {name!r} on upload {upload_id}: {error}")
        self.upload_id = upload_id
        self.name = name
        self.error = error
        self.final = final


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _entry(record: UploadRecord, name: str) -> dict[str, Any] | None:
    return (record.processing or {}).get(name)


def _with(record: UploadRecord, name: str, **changes: Any) -> dict[str, Any]:
    """``record.processing`` with ``name``'s entry changed (and stamped)."""
    processing = dict(record.processing or {})
    entry = {**processing[name], **changes, "updatedAt": isoformat(time.time())}
    processing[name] = {key: value for key, value in entry.items() if value is not None}
    return {"processing": processing}


class Processing(DomainBase):
    """Runs of processors, their outcomes, retries and derived objects."""

    #: Set by ``init_app``: where runs go (``None``: nothing is queued, e.g. a bare domain).
    jobs: ProcessingJobs | None = None

    @property
    def processors(self) -> Mapping[str, Processor]:
        found: Mapping[str, Processor] = getattr(self.hooks, "processors", None) or {}
        return found

    # -- the one way processing state changes -------------------------------------------

    def change_processing(self, upload_id: str, change: Change) -> UploadRecord | None:
        """Apply ``change`` to a completed upload's record, computed from the record it
        is compared against; ``None`` when nothing was written."""
        state = self.state
        if supports(state, RecordChanges):
            return state.update_with(upload_id, ("completed",), change)
        # A backend without read-modify-write: one read, then a CAS on the status only
        # (a concurrent writer of another processor's entry may be lost).
        record = state.get(upload_id)
        if record is None or record.status != "completed":
            return None
        changes = change(record)
        if changes is None:
            return None
        return state.update(upload_id, ("completed",), current=record, **changes)

    # -- a run --------------------------------------------------------------------------

    def run_processor(
        self, upload_id: str, name: str, run: int, *, retries_left: int
    ) -> dict[str, Any]:
        """One attempt of run ``run`` of processor ``name`` on ``upload_id`` (the job).

        Returns what happened (the job's result). Raises :class:`ProcessorFailed` when
        the attempt failed, ``final`` when ``retries_left`` is 0.
        """
        attempt = 0

        def claim(record: UploadRecord) -> dict[str, Any] | None:
            nonlocal attempt
            entry = _entry(record, name)
            # "running" too: the same run again after its worker was killed.
            if (
                entry is None
                or entry.get("run") != run
                or entry["status"] not in ("queued", "running")
            ):
                return None
            attempt = int(entry["attempts"]) + 1
            return _with(record, name, status="running", attempts=attempt, error=None)

        record = self.change_processing(upload_id, claim)
        if record is None:
            return self._not_claimed(upload_id, name, run)
        processor = self.processors.get(name)
        if processor is None:
            error = f"no processor named {name!r} is registered in this app"
            self.record_failure(upload_id, name, run, error, final=True)
            raise ProcessorFailed(upload_id, name, error, final=True)
        storage = self.storage_for(record.owner, record.bucket)
        try:
            result = processor.func(ProcessingContext(self, record, processor, storage, attempt))
            encoded = orjson.dumps(result)
            if len(encoded) > MAX_RESULT_BYTES:
                raise ValueError(
                    f"its result is {len(encoded)} bytes of JSON; at most {MAX_RESULT_BYTES} "
                    "are kept (save larger output as a derived object)"
                )
        except UploadGone:
            return self._gone(upload_id, name)
        except Exception as error:
            message = _describe(error)
            final = retries_left <= 0
            logger.warning(
                "Processor %s on upload %s, attempt %d%s: %s",
                name,
                upload_id,
                attempt,
                " (final)" if final else "",
                message,
            )
            self.record_failure(upload_id, name, run, message, final=final)
            raise ProcessorFailed(upload_id, name, message, final=final) from error
        return self._record_success(upload_id, name, run, result)

    def _record_success(self, upload_id: str, name: str, run: int, result: Any) -> dict[str, Any]:
        became_ready = False

        def complete(record: UploadRecord) -> dict[str, Any] | None:
            nonlocal became_ready
            entry = _entry(record, name)
            if entry is None or entry.get("run") != run or entry["status"] != "running":
                return None
            changes = _with(record, name, status="completed", result=result, error=None)
            became_ready = all(
                other["status"] == "completed"
                for other_name, other in changes["processing"].items()
                if other_name != name
            )
            return changes

        updated = self.change_processing(upload_id, complete)
        if updated is None:
            return self._not_claimed(upload_id, name, run)
        self.send(signals.processing_completed, upload=updated, name=name, result=result)
        if became_ready:
            self.send(signals.upload_ready, upload=updated)
        return {"status": "completed", "result": result}

    def record_failure(
        self, upload_id: str, name: str, run: int, error: str, *, final: bool
    ) -> UploadRecord | None:
        """Record a failed attempt of run ``run``: ``queued`` again for its retry, or
        ``failed`` after the last; sends ``processing-failed``. Also what the queue
        calls when a worker died in the middle of an attempt."""

        def fail(record: UploadRecord) -> dict[str, Any] | None:
            entry = _entry(record, name)
            if (
                entry is None
                or entry.get("run") != run
                or entry["status"] not in ("queued", "running")
            ):
                return None
            return _with(record, name, status="failed" if final else "queued", error=error)

        updated = self.change_processing(upload_id, fail)
        if updated is not None:
            self.send(
                signals.processing_failed, upload=updated, name=name, error=error, final=final
            )
        return updated

    def _not_claimed(self, upload_id: str, name: str, run: int) -> dict[str, Any]:
        current = self.state.get(upload_id)
        if current is None or current.status != "completed":
            return self._gone(upload_id, name)
        entry = _entry(current, name)
        if entry is not None and entry.get("run") == run and entry["status"] == "completed":
            return {"status": "completed", "result": entry.get("result")}
        logger.info(
            "Processor %s on upload %s: run %d is not the current one (%s); nothing to do.",
            name,
            upload_id,
            run,
            "none planned" if entry is None else f"run {entry.get('run')} is {entry['status']}",
        )
        return {"status": "skipped", "reason": f"run {run} of {name!r} is superseded"}

    def _gone(self, upload_id: str, name: str) -> dict[str, Any]:
        logger.info(
            "Processor %s on upload %s: the upload was deleted or expired; nothing to do.",
            name,
            upload_id,
        )
        return {"status": "skipped", "reason": "the upload was deleted or expired"}

    # -- derived objects ----------------------------------------------------------------

    def save_derived(
        self,
        record: UploadRecord,
        storage: Storage,
        processor: str,
        name: str,
        data: bytes | IO[bytes],
        content_type: str,
    ) -> str:
        """``ProcessingContext.save``: record the key in the upload, then write it (so
        a delete of the upload never misses it); an upload deleted meanwhile gets no
        derived object (:class:`UploadGone`)."""
        key = derived_key(self.settings, record, processor, name)

        def add(current: UploadRecord) -> dict[str, Any] | None:
            derived = list(current.derived or [])
            return None if key in derived else {"derived": [*derived, key]}

        if self.change_processing(record.upload_id, add) is None:
            current = self.state.get(record.upload_id)
            if current is None or current.status != "completed":
                raise UploadGone(record.upload_id)
        storage.put(key, data, content_type)
        current = self.state.get(record.upload_id)
        if current is None or current.status != "completed":
            # Deleted between the record and the write: the delete could not see it yet.
            storage.delete(key)
            raise UploadGone(record.upload_id)
        return key

    # -- retries ------------------------------------------------------------------------

    def retry_processing(self, owner: str | None, upload_id: str, name: str) -> UploadView:
        """``POST /uploads/<id>/processing/<name>/retry``: a new run of a failed
        processor, queued once however many callers ask at the same time. ``owner``
        ``None``: an admin (any owner's upload)."""
        if owner is None:
            record = self.state.get(upload_id)
            if record is None:
                raise not_found(upload_id)
        else:
            record = self.owned(owner, upload_id)
        if _entry(record, name) is None:
            raise ObitoXError(
                "PROCESSING_NOT_FOUND",
                f"Processor {name!r} never ran on upload {upload_id!r}.",
                details={"uploadId": upload_id, "name": name},
            )

        def retry(current: UploadRecord) -> dict[str, Any] | None:
            entry = _entry(current, name)
            if entry is None or entry["status"] != "failed":
                return None
            return _with(current, name, status="queued", run=int(entry.get("run", 1)) + 1)

        updated = self.change_processing(upload_id, retry)
        if updated is None:
            current = self.state.get(upload_id) or record
            entry = _entry(current, name) or {"status": "unknown"}
            raise ObitoXError(
                "PROCESSING_NOT_FAILED",
                f"Processor {name!r} on upload {upload_id!r} is {entry['status']}"
                + ("" if current.status == "completed" else f" and the upload is {current.status}")
                + "; only a failed processor of a completed upload is retried.",
                details={"uploadId": upload_id, "name": name, "status": entry["status"]},
            )
        if self.jobs is not None:
            self.jobs.enqueue(updated, [name])
        return render_upload(updated)

    def failed_processing(self, upload_ids: Sequence[str]) -> list[tuple[UploadRecord, str]]:
        """``(record, processor name)`` of each failed processor of these uploads."""
        found: list[tuple[UploadRecord, str]] = []
        for upload_id in dict.fromkeys(upload_ids):
            record = self.state.get(upload_id)
            if record is None:
                continue
            found.extend(
                (record, name)
                for name, entry in (record.processing or {}).items()
                if entry["status"] == "failed"
            )
        return found


__all__ = [
    "KILLED",
    "Processing",
    "ProcessingJobs",
    "ProcessorFailed",
    "is_ready",
    "render_processing",
]
