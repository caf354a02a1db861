"""The processes a benchmark starts: each in a process group of its own, its output in a
log file, watched while the benchmark waits on it, and stopped however the benchmark
ends (normally, on an error, on SIGTERM or SIGINT).

A benchmark whose child died stops at once, non-zero, with that child's last lines of
output, instead of waiting out its timeouts (or a client's retries) on something that
will never answer: a thread watches the children and interrupts the main thread wherever
it waits::

    with Children("bench-client") as children:
        moto = children.start("moto", [sys.executable, "-m", "moto.server", ...])
        children.wait_for_port(moto, port)
        ...
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

#: Lines of a child's output shown when it fails.
TAIL_LINES = 15
#: Seconds a child has to stop after SIGTERM before its whole group gets SIGKILL.
STOP_GRACE = 10.0
#: Seconds between two looks at the children from the watching thread.
WATCH_INTERVAL = 0.5


class ChildFailed(SystemExit):
    """A child ended when it should not have (or never got ready); the message says
    which, how, and its last lines of output. Exits the benchmark with status 1."""


class Child:
    """One child process, the leader of its own process group (so that stopping it also
    stops what it started: a forking RQ worker's work horses, gunicorn's workers)."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None,
        cwd: Path | str | None,
        may_exit: bool,
    ) -> None:
        self.name = name
        self.log_path = log_path
        #: A child that ends on its own when its work is done (``rq worker --burst``).
        self.may_exit = may_exit
        #: Ended by the benchmark itself: however it ends is no failure.
        self.stopped = False
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def failed(self) -> bool:
        """Whether it ended with an error, or at all if it is not allowed to, unless the
        benchmark ended it."""
        code = self.process.poll()
        return code is not None and not self.stopped and (code != 0 or not self.may_exit)

    def tail(self, lines: int = TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no output)"
        kept = [line for line in text.splitlines() if line.strip()][-lines:]
        return "\n".join(f"    {line}" for line in kept) or "    (no output)"

    def report(self, what: str | None = None) -> str:
        """``what`` happened (default: how it ended), and its last lines of output."""
        if what is None:
            code = self.process.poll()
            if code is None:
                what = "is running"
            elif code < 0:
                what = f"was killed by {_signal_name(-code)}"
            else:
                what = f"exited with code {code}"
        return f"{self.name} (pid {self.pid}) {what}; its last lines of output:\n{self.tail()}"

    def kill(self) -> None:
        """SIGKILL its whole group on purpose (a benchmark of recovery): not a failure."""
        self.stopped = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM (a warm shutdown where it has one), then SIGKILL to whatever is left
        of its group."""
        self.stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


class Children:
    """Every child of this benchmark, stopped when the ``with`` block ends, at exit, and
    on SIGTERM or SIGINT (turned into ``SystemExit`` so that ``finally`` blocks run)."""

    def __init__(self, name: str) -> None:
        self._logs = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        self._children: list[Child] = []
        # Set once a failure was raised or the children are being stopped: from then on
        # the watching thread interrupts nothing (not the clean-up, above all).
        self._settled = threading.Event()
        self._failure = ""
        for number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(number, self._exit_now)
        atexit.register(self.stop_all)

    def __enter__(self) -> Children:
        signal.signal(signal.SIGUSR1, self._interrupted)
        threading.Thread(target=self._watch, name="watch-children", daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            # A request that failed because its server died: the server's log says why.
            if isinstance(error, Exception) and not isinstance(error, ChildFailed):
                self.check()
        finally:
            self.stop_all()

    def start(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        may_exit: bool = False,
    ) -> Child:
        log_path = self._logs / f"{len(self._children)}-{name.replace(' ', '-')}.log"
        child = Child(name, command, log_path, env=env, cwd=cwd, may_exit=may_exit)
        self._children.append(child)
        return child

    def check(self) -> None:
        """Raise :class:`ChildFailed` if a child ended when it should not have."""
        for child in self._children:
            if child.failed():
                raise self.failure(child.report())

    def failure(self, message: str) -> ChildFailed:
        """The exception that ends the benchmark with ``message``; raise it."""
        self._settled.set()
        return ChildFailed(message)

    def wait_for_port(self, child: Child, port: int, timeout: float = 30) -> None:
        """Until ``child`` listens on 127.0.0.1:``port``; fails as soon as it ends."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return
            except OSError:
                pass
            if child.process.poll() is not None:
                raise self.failure(child.report())
            if time.monotonic() > deadline:
                raise self.failure(
                    child.report(f"does not listen on port {port} after {timeout} s")
                )
            time.sleep(0.05)

    def stop(self, child: Child) -> None:
        child.stop()
        self._children.remove(child)

    def stop_all(self) -> None:
        self._settled.set()
        while self._children:
            self._children.pop().stop()
        shutil.rmtree(self._logs, ignore_errors=True)

    def _watch(self) -> None:
        main = threading.main_thread().ident
        assert main is not None
        while not self._settled.wait(WATCH_INTERVAL):
            failed = next((child for child in list(self._children) if child.failed()), None)
            if failed is not None:
                self._failure = failed.report()
                # A signal, not a flag: it also ends a blocking call (a socket read).
                signal.pthread_kill(main, signal.SIGUSR1)
                return

    def _interrupted(self, number: int, frame: FrameType | None) -> None:
        if not self._settled.is_set():  # else the main thread saw it first
            raise self.failure(self._failure)

    def _exit_now(self, number: int, frame: FrameType | None) -> None:
        # Once: a second signal must not interrupt the clean-up the first one started.
        for other in (signal.SIGTERM, signal.SIGINT):
            signal.signal(other, signal.SIG_IGN)
        self._settled.set()
        raise SystemExit(128 + number)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
