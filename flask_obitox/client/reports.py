"""Progress reports to the server (``POST /uploads/<uploadId>/progress``), for display.

The server shows them to the uploader's other screens (the manager page, ``GET
/events``); completion never depends on them. So a report is cheap and optional:
at most one about every second per file, plus one after each part of a multipart
upload (with that part's status and ETag), one attempt each, never retried, and a
report that fails is forgotten (its part statuses ride along with the next one).

Reports leave from a :class:`ReportSender` thread, never from the threads sending
bytes: a part's PUT never waits for a report's round trip (on a link of 100 ms, a
report after each 8 MiB part would otherwise cost every part a tenth of a second).
Reports due while one is queued merge into it.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .errors import ObitoXClientError

#: Seconds between two byte-count reports of the same file.
REPORT_INTERVAL = 1.0
#: Seconds a report may take before it is given up: the upload waits for it.
REPORT_TIMEOUT = 5.0

Send = Callable[[str, dict[str, Any]], None]


class ReportSender:
    """One daemon thread sending reports in the order they were queued; started on the
    first one, ended by :meth:`close`."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="obitox-reports", daemon=True
                )
                self._thread.start()
        self._queue.put(job)

    def drain(self, timeout: float = REPORT_TIMEOUT) -> bool:
        """Wait (at most ``timeout``) until every report queued so far was sent."""
        done = threading.Event()
        self.submit(done.set)
        return done.wait(timeout)

    def close(self) -> None:
        with self._lock:
            if self._thread is not None:
                self._queue.put(None)
                self._thread = None

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            # Display only: nothing a report meets may stop the reports after it.
            with contextlib.suppress(Exception):
                job()


class ProgressReporter:
    """Reports of one upload. Thread-safe: the parts of a file call it from their
    threads; a report in flight makes the others skip theirs rather than wait, unless
    they carry a part's status."""

    def __init__(
        self,
        send: Send,
        upload_id: str,
        total_bytes: int,
        *,
        uploaded_bytes: int = 0,
        interval: float = REPORT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sender: ReportSender | None = None,
    ) -> None:
        self._send = send
        self.upload_id = upload_id
        self.total_bytes = total_bytes
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._bytes = uploaded_bytes
        self._reported = -1
        self._last = clock()
        self._parts: dict[int, dict[str, Any]] = {}
        self._sender = sender
        self._queued = False
        self._closed = False
        #: Reports the server accepted, and reports that failed.
        self.sent = 0
        self.failed = 0

    def add(self, count: int) -> None:
        """``count`` more bytes were sent (fewer, when negative: a retry took them back)."""
        with self._lock:
            self._bytes = min(self.total_bytes, max(0, self._bytes + count))
            due = self._clock() - self._last >= self._interval
        if due:
            self._report(wait=False)

    def part(self, number: int, status: str, etag: str | None = None) -> None:
        """Part ``number`` is ``uploading``, ``uploaded`` or ``failed``. The last two are
        reported at once; ``uploading`` goes with the next report."""
        entry: dict[str, Any] = {"partNumber": number, "status": status}
        if etag is not None:
            entry["etag"] = etag
        with self._lock:
            self._parts[number] = entry
        if status != "uploading":
            self._report(wait=True)

    def close(self) -> None:
        """The upload is done: reports not sent yet never will be (*complete* says more)."""
        with self._lock:
            self._closed = True

    def drain(self) -> None:
        """Wait a moment for the reports already due (a failing upload's last word)."""
        if self._sender is not None:
            self._sender.drain()

    def _report(self, *, wait: bool) -> None:
        if self._sender is None:
            self._flush(wait=wait)
            return
        with self._lock:
            if self._queued or self._closed:
                return  # the queued report will carry this news too
            self._queued = True
        self._sender.submit(self._flush)

    def _flush(self, *, wait: bool = True) -> None:
        if not self._sending.acquire(blocking=wait):
            return
        try:
            with self._lock:
                self._queued = False
                if self._closed:
                    return
                parts = sorted(self._parts.values(), key=lambda p: int(p["partNumber"]))
                self._parts.clear()
                uploaded = self._bytes
                self._last = self._clock()
            # The server keeps the highest count: a retry's take-back is not news to it.
            count = max(uploaded, self._reported, 0)
            if not parts and count == self._reported:
                return
            body: dict[str, Any] = {"uploadedBytes": count}
            if parts:
                body["parts"] = parts
            try:
                self._send(self.upload_id, body)
            except ObitoXClientError:
                self.failed += 1
                with self._lock:
                    for entry in parts:  # newer news of a part wins over the lost one
                        self._parts.setdefault(int(entry["partNumber"]), entry)
            else:
                self.sent += 1
                self._reported = count
        finally:
            self._sending.release()
