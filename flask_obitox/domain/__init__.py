"""The upload domain: every operation an upload route, the CLI or a worker runs.

Split by lifecycle, one module each: :mod:`.signing` (single uploads, batches, Uppy's
POST), :mod:`.multipart`, :mod:`.settling` (ownership, verification and the status
race), :mod:`.cleanup`, :mod:`.bucket` (CORS, lifecycle), :mod:`.events` (live events); :mod:`.render` draws an upload the one way every reader sees
it, and :mod:`.results` types every answer. :class:`UploadService` is all of them for
one app (``app.extensions["obitox"].service``).
"""

from __future__ import annotations

from .base import DomainBase, HostHooks, KeyBuilder, StorageResolver
from .bucket import Bucket
from .cleanup import Cleanup, CleanupReport
from .common import isoformat, new_upload_ids, part_layout, part_length
from .events import EVENT_TYPES, EventFeed, LiveEvents
from .multipart import Multipart
from .render import effective_status, render_upload
from .settling import Settling
from .signing import InvalidEntry, Signing

__all__ = [
    "EVENT_TYPES",
    "Bucket",
    "Cleanup",
    "CleanupReport",
    "DomainBase",
    "EventFeed",
    "HostHooks",
    "InvalidEntry",
    "KeyBuilder",
    "LiveEvents",
    "Multipart",
    "Settling",
    "Signing",
    "StorageResolver",
    "UploadService",
    "effective_status",
    "isoformat",
    "new_upload_ids",
    "part_layout",
    "part_length",
    "render_upload",
]


class UploadService(Signing, Multipart, Cleanup, Bucket, LiveEvents):
    """Every upload operation of one app: signing, multipart, settling, cleanup, the
    bucket behind them, and live events."""
