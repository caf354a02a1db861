"""The upload domain: every operation an upload route, the CLI or a worker runs.

Split by lifecycle, one module each: :mod:`.signing` (single uploads, batches, Uppy's
POST), :mod:`.multipart`, :mod:`.settling` (ownership, verification and the status
race), :mod:`.groups`, :mod:`.removal` (listing, deletion, download), :mod:`.progress`,
:mod:`.processing` (runs of processors, :mod:`.processors` defines them),
:mod:`.storage_events` (completion from storage's notifications), :mod:`.cleanup`,
:mod:`.bucket` (CORS, lifecycle), :mod:`.events` (live events); :mod:`.render` draws an
upload the one way every reader sees
it, and :mod:`.results` types every answer. :class:`UploadService` is all of them for
one app (``app.extensions["obitox"].service``).
"""

from __future__ import annotations

from .base import DomainBase, HostHooks, KeyBuilder, StorageResolver
from .bucket import Bucket
from .cleanup import Cleanup, CleanupReport
from .common import isoformat, new_upload_ids, part_layout, part_length
from .events import EVENT_TYPES, EventFeed, LiveEvents
from .groups import Grouping
from .multipart import Multipart
from .processing import Processing, ProcessingJobs, ProcessorFailed
from .processors import ProcessingContext, Processor, UploadGone, stored_keys
from .progress import Progress
from .removal import Removal
from .render import effective_status, render_group, render_upload
from .settling import Settling
from .signing import InvalidEntry, Signing
from .storage_events import StorageEvents, StorageEventsReport, StoredObject

__all__ = [
    "EVENT_TYPES",
    "Bucket",
    "Cleanup",
    "CleanupReport",
    "DomainBase",
    "EventFeed",
    "Grouping",
    "HostHooks",
    "InvalidEntry",
    "KeyBuilder",
    "LiveEvents",
    "Multipart",
    "Processing",
    "ProcessingContext",
    "ProcessingJobs",
    "Processor",
    "ProcessorFailed",
    "Progress",
    "Removal",
    "Settling",
    "Signing",
    "StorageEvents",
    "StorageEventsReport",
    "StorageResolver",
    "StoredObject",
    "UploadGone",
    "UploadService",
    "effective_status",
    "isoformat",
    "new_upload_ids",
    "part_layout",
    "part_length",
    "render_group",
    "render_upload",
    "stored_keys",
]


class UploadService(
    Signing,
    Multipart,
    Removal,
    Progress,
    Processing,
    StorageEvents,
    Cleanup,
    Bucket,
    LiveEvents,
):
    """Every upload operation of one app: signing, multipart, settling, groups,
    listing and removal, progress, processing, completion from storage events, cleanup,
    the bucket behind them, and live events."""
