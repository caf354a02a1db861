"""What every lifecycle of the upload domain shares: ids, time, part layouts, errors.

Pure functions and constants, no state and no Flask.
"""

from __future__ import annotations

import math
import os
import time
from base64 import urlsafe_b64encode
from typing import Any

from ..config import S3_MAX_PARTS, S3_MAX_SINGLE_PUT, S3_MIN_PART_SIZE
from ..errors import ObitoXError
from ..state import UploadRecord

#: Records outlive ``OBITOX_UPLOAD_TTL`` by this long, so a late client learns its
#: upload expired (410) instead of that it never existed (404).
EXPIRED_GRACE = 24 * 3600
#: S3 object keys are at most 1024 bytes of UTF-8.
MAX_KEY_BYTES = 1024
MiB = 1024 * 1024
#: Statuses of an upload that may still change.
OPEN = ("pending", "uploading")
#: The one Content-Type botocore leaves out of a signature.
UNSIGNABLE_CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"


def isoformat(timestamp: float) -> str:
    """The one timestamp format of every answer, event and webhook: ISO 8601 UTC to the
    millisecond, e.g. ``2026-11-21T05:30:00.125Z`` (what JavaScript's ``toISOString``
    writes and Python's ``fromisoformat`` reads)."""
    text = _RECENT.get(timestamp)
    if text is not None:  # a batch's records share their few timestamps
        return text
    whole = math.floor(timestamp)
    millis = min(999, round((timestamp - whole) * 1000))
    second = _SECONDS.get(whole)
    if second is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        second = _SECONDS[whole] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if len(_RECENT) >= _RECENT_KEPT:
        _RECENT.clear()
    text = _RECENT[timestamp] = f"{second}.{millis:03d}Z"
    return text


#: Each whole second :func:`isoformat` formatted lately: an upload's view carries three
#: timestamps and its event a fourth, mostly of a few seconds (a batch's records share
#: two), and ``strftime`` of one costs ten times the lookup. Bounded, and emptied when
#: full (dict operations are atomic, so threads share it safely).
_SECONDS: dict[int, str] = {}
_SECONDS_KEPT = 4096
#: The exact timestamps :func:`isoformat` wrote last, and what it wrote: a batch's
#: records and events share a few (its clock, its expiries).
_RECENT: dict[float, str] = {}
_RECENT_KEPT = 64


def new_upload_ids(count: int) -> list[str]:
    """``count`` upload ids of 128 random bits each, URL-safe (unguessable, so an id can
    serve as a resume token), from one read of the OS's randomness."""
    raw = os.urandom(16 * count)
    return [
        urlsafe_b64encode(raw[i : i + 16]).rstrip(b"=").decode() for i in range(0, 16 * count, 16)
    ]


def part_layout(size: int, requested: int | None, default: int) -> tuple[int, int]:
    """``(part size, number of parts)`` for a multipart upload of ``size`` bytes.

    The client's ``partSize`` (else ``OBITOX_PART_SIZE``) is raised, to a whole MiB, as
    far as needed to keep within S3's 10,000 parts. A requested size below S3's 5 MiB
    minimum or above its 5 GiB maximum is refused (422).
    """
    part_size = default if requested is None else requested
    if requested is not None and not S3_MIN_PART_SIZE <= requested <= S3_MAX_SINGLE_PUT:
        raise ObitoXError(
            "VALIDATION_FAILED",
            f"partSize must be between {S3_MIN_PART_SIZE} (5 MiB) and {S3_MAX_SINGLE_PUT} "
            f"(5 GiB) bytes; got {requested}. Only the last part may be smaller.",
            details={"field": "partSize", "min": S3_MIN_PART_SIZE, "max": S3_MAX_SINGLE_PUT},
        )
    smallest = math.ceil(size / S3_MAX_PARTS)
    if part_size < smallest:
        part_size = math.ceil(smallest / MiB) * MiB
    return part_size, max(1, math.ceil(size / part_size))


def part_length(record: UploadRecord, part_number: int) -> int:
    """The exact size of part ``part_number`` of a server-laid-out upload (every part is
    full but the last)."""
    assert record.part_size is not None
    assert record.total_parts is not None
    if part_number < record.total_parts:
        return record.part_size
    return record.size - (record.total_parts - 1) * record.part_size


def not_found(upload_id: str) -> ObitoXError:
    return ObitoXError(
        "UPLOAD_NOT_FOUND",
        f"No upload {upload_id!r} exists for this caller.",
        details={"uploadId": upload_id},
    )


def aborted(upload_id: str) -> ObitoXError:
    return ObitoXError("UPLOAD_ABORTED", "The upload was aborted.", details={"uploadId": upload_id})


def mismatch(upload_id: str, reason: str) -> ObitoXError:
    return ObitoXError(
        "CONTENT_MISMATCH",
        f"The upload was rejected: {reason}.",
        details={"uploadId": upload_id, "reason": reason},
    )


def invalid_parts(upload_id: str, message: str, **details: Any) -> ObitoXError:
    return ObitoXError("INVALID_PARTS", message, details={"uploadId": upload_id, **details})


def not_complete(upload_id: str, message: str, **details: Any) -> ObitoXError:
    return ObitoXError("UPLOAD_NOT_COMPLETE", message, details={"uploadId": upload_id, **details})


def upload_closed(upload_id: str, status: str) -> ObitoXError:
    """The upload is finished (``status``) and this operation needs an open one."""
    return ObitoXError(
        "UPLOAD_CLOSED",
        f"The upload is {status}: it takes no more changes.",
        details={"uploadId": upload_id, "status": status},
    )
