"""Downloads: a presigned GET streamed to a temporary file, renamed over the target
only once every byte arrived, so a reader never sees half a file under the name."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3.exceptions

from .errors import ObitoXClientError

#: Bytes read from the socket and written to disk at a time.
DOWNLOAD_CHUNK = 1024 * 1024


def safe_filename(name: str, fallback: str) -> str:
    """A name to write into a directory: its last path segment, never ``..`` or
    empty or hidden behind a leading dot (the server sanitises it; a client that
    writes to disk checks again)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip().lstrip(".")
    return base if base and "\0" not in base else fallback


def stream_to_file(
    session: requests.Session,
    url: str,
    dest: Path,
    *,
    timeout: float,
    on_bytes: Callable[[int, int | None], None],
) -> int:
    """GET ``url`` into ``dest`` atomically; the number of bytes written.

    ``on_bytes(count, total)`` is called after each chunk with a positive count, and
    with the negative of what was written when an attempt fails (the caller takes it
    back before a retry). The answer's ``Content-Length`` is checked: a body cut short
    is a ``CONNECTION_ERROR``, never a file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 would stay on the file; this one gets the umask's mode.
    temporary = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.part"
    written = 0
    total: int | None = None
    try:
        with open(temporary, "xb") as out:
            try:
                with session.get(url, stream=True, timeout=timeout) as response:
                    if response.status_code >= 300:
                        raise ObitoXClientError.from_storage_response(response)
                    length = response.headers.get("Content-Length")
                    total = int(length) if length is not None and length.isdigit() else None
                    on_bytes(0, total)
                    for chunk in response.iter_content(DOWNLOAD_CHUNK):
                        out.write(chunk)
                        written += len(chunk)
                        on_bytes(len(chunk), total)
            except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
                raise ObitoXClientError(
                    "CONNECTION_ERROR", f"the download was cut: {error}", details={"url": url}
                ) from None
            if total is not None and written != total:
                raise ObitoXClientError(
                    "CONNECTION_ERROR",
                    f"the download ended after {written} of {total} bytes",
                )
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, dest)
    except BaseException:
        if written:
            on_bytes(-written, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return written
