"""Local files: what they are, whether they changed, and their bytes as a streamed body.

Parts are never read whole into memory: :class:`FileSlice` hands the HTTP library one
chunk at a time, so a part of 64 MiB costs one chunk of memory per concurrent upload.
"""

from __future__ import annotations

import mimetypes
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ObitoXClientError

#: Bytes handed to the socket per write. Large enough that Python's per-chunk overhead
#: is invisible next to the copy; small enough to report progress and notice a
#: cancellation promptly.
CHUNK_SIZE = 1024 * 1024

#: What ``mimetypes`` reports as an *encoding* is what the bytes really are: a
#: ``.tar.gz`` holds gzip, and declaring it ``application/x-tar`` would fail the
#: server's magic-byte check.
_ENCODING_TYPES = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "compress": "application/x-compress",
}


def guess_content_type(path: Path) -> str:
    """The media type to declare for ``path``, from its name (the server checks the bytes)."""
    media_type, encoding = mimetypes.guess_type(path.name, strict=False)
    if encoding is not None:
        return _ENCODING_TYPES.get(encoding, "application/octet-stream")
    return media_type or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Size and modification time (ns): enough to tell that a file was rewritten or
    appended to between two runs without reading it again."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        try:
            info = path.stat()
        except FileNotFoundError:
            raise ObitoXClientError(
                "FILE_NOT_FOUND", f"{path}: no such file", details={"path": str(path)}
            ) from None
        except OSError as error:
            raise ObitoXClientError(
                "FILE_NOT_FOUND", f"{path}: {error.strerror}", details={"path": str(path)}
            ) from None
        if not path.is_file():
            raise ObitoXClientError(
                "FILE_NOT_FOUND", f"{path}: not a regular file", details={"path": str(path)}
            )
        return cls(info.st_size, info.st_mtime_ns)

    def check(self, path: Path) -> None:
        """Raise ``FILE_CHANGED`` unless ``path`` still has this identity."""
        now = FileIdentity.of(path)
        if now != self:
            raise ObitoXClientError(
                "FILE_CHANGED",
                f"{path} changed during the upload (size {self.size} -> {now.size}, "
                f"mtime {self.mtime_ns} -> {now.mtime_ns})",
                details={"path": str(path)},
            )


class Cancelled(ObitoXClientError):
    """The upload was told to stop while a body was being sent."""

    def __init__(self) -> None:
        super().__init__("CANCELLED", "the upload was cancelled")


class FileSlice:
    """Bytes ``[offset, offset + length)`` of a file as a request body of known length.

    ``requests`` sends an object with ``__len__`` and ``__iter__`` with that
    Content-Length (no chunked encoding, which presigned PUTs refuse) and writes each
    chunk as the iterator yields it. ``on_sent`` is called with each chunk's size once
    the socket took it; ``sent`` is the running total, so a failed attempt can take
    exactly its bytes back from the progress count.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        length: int,
        *,
        on_sent: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        self.path = path
        self.offset = offset
        self.length = length
        self.on_sent = on_sent
        self.cancel = cancel
        self.chunk_size = chunk_size
        self.sent = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        self.sent = 0
        with open(self.path, "rb", buffering=0) as file:
            file.seek(self.offset)
            remaining = self.length
            while remaining:
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled()
                chunk = file.read(min(self.chunk_size, remaining))
                if not chunk:
                    raise ObitoXClientError(
                        "FILE_CHANGED",
                        f"{self.path} is shorter than when its upload began",
                        details={"path": str(self.path)},
                    )
                remaining -= len(chunk)
                yield chunk
                # Resumed only after the socket accepted the chunk.
                self.sent += len(chunk)
                if self.on_sent is not None:
                    self.on_sent(len(chunk))


def resolve(path: str | os.PathLike[str]) -> Path:
    """An absolute path (symlinks kept: the resume file sits beside the name given)."""
    return Path(os.path.abspath(os.fspath(path)))
