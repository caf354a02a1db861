"""Resume files: what a later run needs to continue a multipart upload.

A resume file is written right after the server created the upload and before any
part is sent, so a run killed at any later point leaves one behind. It holds the
resume token (the server's ``uploadId``), the server it belongs to and the file's
identity (size and mtime); it never holds which parts were sent, because storage is
the truth and the server's resume view reads it.

The token lets its owner's credentials continue or abort the upload, so the file is
created readable by its owner only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .files import FileIdentity

#: Appended to the uploaded file's name: ``video.mp4`` -> ``video.mp4.obitox-resume``.
RESUME_SUFFIX = ".obitox-resume"
#: Bumped when the format changes; a file of another version is ignored, not misread.
FORMAT_VERSION = 1


def resume_path_for(path: Path, state_dir: Path | None = None) -> Path:
    """Where the resume file of ``path`` lives: beside it, or in ``state_dir``.

    In a state dir, a hash of the absolute path keeps two ``data.csv`` from different
    directories apart while the name stays readable.
    """
    if state_dir is None:
        return path.with_name(path.name + RESUME_SUFFIX)
    digest = hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return state_dir / f"{path.name}.{digest}{RESUME_SUFFIX}"


@dataclass(frozen=True, slots=True)
class ResumeRecord:
    """The contents of a resume file."""

    server: str
    upload_id: str
    path: str
    size: int
    mtime_ns: int
    part_size: int
    total_parts: int
    key: str
    bucket: str
    content_type: str
    created_at: float

    @property
    def identity(self) -> FileIdentity:
        return FileIdentity(self.size, self.mtime_ns)

    def mismatch(self, server: str, path: Path, identity: FileIdentity) -> str | None:
        """Why this record cannot continue an upload of ``path`` to ``server`` (or ``None``)."""
        if self.server != server:
            return f"it belongs to another server ({self.server})"
        if self.path != str(path):
            return f"it belongs to another file ({self.path})"
        if self.identity != identity:
            return (
                f"the file changed since the upload began (size {self.size} -> {identity.size}, "
                f"mtime {self.mtime_ns} -> {identity.mtime_ns})"
            )
        return None


_FIELDS = {f.name for f in fields(ResumeRecord)}
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,)}


class InvalidResumeFile(ValueError):
    """A resume file that cannot be read (truncated, edited, another version)."""


def load(resume_path: Path) -> ResumeRecord | None:
    """The record in ``resume_path``; ``None`` when there is no such file."""
    try:
        raw = resume_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data: Any = json.loads(raw)
    except ValueError as error:
        raise InvalidResumeFile(f"{resume_path} is not JSON: {error}") from None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise InvalidResumeFile(f"{resume_path} is not a version {FORMAT_VERSION} resume file")
    values = {k: v for k, v in data.items() if k in _FIELDS}
    try:
        record = ResumeRecord(**values)
    except TypeError as error:
        raise InvalidResumeFile(f"{resume_path} is incomplete: {error}") from None
    for field in fields(ResumeRecord):
        expected: tuple[type, ...] = _TYPES[str(field.type)]
        value = getattr(record, field.name)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise InvalidResumeFile(f"{resume_path}: {field.name} has the wrong type")
    return record


def save(resume_path: Path, record: ResumeRecord) -> None:
    """Write ``record`` atomically: a run killed mid-write leaves the old file or the new
    one, never half of one."""
    resume_path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"version": FORMAT_VERSION, **asdict(record)}, indent=2) + "\n"
    fd, temporary = tempfile.mkstemp(
        prefix=f".{resume_path.name}.", suffix=".tmp", dir=resume_path.parent
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:  # mkstemp: mode 0600
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, resume_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def remove(resume_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        resume_path.unlink()


def new_record(
    server: str, path: Path, identity: FileIdentity, answer: dict[str, Any], content_type: str
) -> ResumeRecord:
    """The record for a multipart upload the server just created (``answer``)."""
    return ResumeRecord(
        server=server,
        upload_id=str(answer["uploadId"]),
        path=str(path),
        size=identity.size,
        mtime_ns=identity.mtime_ns,
        part_size=int(answer["partSize"]),
        total_parts=int(answer["totalParts"]),
        key=str(answer["key"]),
        bucket=str(answer["bucket"]),
        content_type=content_type,
        created_at=time.time(),
    )
