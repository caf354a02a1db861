"""The typed answers of the upload domain's operations.

Each is the JSON body of a native route (the schemas in :mod:`flask_obitox.schemas`
dump them), so the domain's shapes are checked by mypy where they are built, not only
when a schema dumps them. The Companion routes reshape them for Uppy.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class SignedUpload(TypedDict):
    uploadId: str
    key: str
    bucket: str
    method: str
    url: str
    headers: dict[str, str]
    expiresIn: int
    expiresAt: str
    index: NotRequired[int]  # in a batch
    filename: NotRequired[str]  # in a batch


class BatchError(TypedDict):
    index: int
    filename: str | None
    error: str
    message: str
    details: dict[str, Any]


class BatchResult(TypedDict):
    total: int
    successful: int
    failed: int
    uploads: list[SignedUpload]
    errors: list[BatchError]
    groupId: NotRequired[str]  # the batch joined or made a group


class SignedPost(TypedDict):
    """A presigned POST (Companion's ``GET /s3/params``)."""

    method: str
    url: str
    fields: dict[str, str]
    expires: int


class CompletedUpload(TypedDict):
    uploadId: str
    status: str
    key: str
    bucket: str
    size: int
    etag: str
    contentType: NotRequired[str]  # single uploads
    location: NotRequired[str]  # multipart uploads


class UploadView(TypedDict):
    """An upload as every reader sees it: the status route, webhooks' ``data``."""

    uploadId: str
    kind: str
    status: str
    key: str
    bucket: str
    filename: str
    contentType: str
    size: int
    metadata: dict[str, str]
    createdAt: str
    updatedAt: str
    expiresAt: str
    etag: str | None
    reason: str | None
    groupId: str | None
    uploadedBytes: int
    percentage: float
    totalParts: int | None  # multipart only
    completedParts: int | None  # multipart only
    #: Each processor: ``{status, attempts, result?, error?, updatedAt}`` (DESIGN §14).
    processing: dict[str, dict[str, Any]]
    #: Completed, and every processor completed.
    ready: bool
    #: The upload profile it was created under (``None``: the ``OBITOX_*`` defaults).
    profile: str | None


class UploadPage(TypedDict):
    uploads: list[UploadView]
    nextCursor: str | None


class GroupView(TypedDict):
    """A group as every reader sees it (``GET /groups/<id>`` adds its ``uploads``)."""

    groupId: str
    name: str
    description: str | None
    metadata: dict[str, str]
    status: str
    sealed: bool
    totalFiles: int
    completedFiles: int
    failedFiles: int
    totalBytes: int
    uploadedBytes: int
    percentage: float
    createdAt: str
    updatedAt: str


class GroupDetail(GroupView):
    uploads: list[UploadView]


class GroupPage(TypedDict):
    groups: list[GroupView]
    nextCursor: str | None


class ProgressAck(TypedDict):
    uploadId: str
    uploadedBytes: int
    percentage: float


class DownloadLink(TypedDict):
    url: str
    expiresAt: str


class PartState(TypedDict):
    partNumber: int
    size: int | None  # None: the client lays out its parts and storage has not got it
    status: str  # pending | uploading | uploaded | failed
    etag: NotRequired[str]


class MultipartCreated(TypedDict):
    uploadId: str
    key: str
    bucket: str
    partSize: int | None  # None: the client chooses its parts
    totalParts: int | None
    expiresAt: str


class SignedPart(TypedDict):
    partNumber: int
    url: str
    size: int | None  # None: not signed, the client chooses its parts
    headers: dict[str, str]
    expiresAt: str
    expiresIn: int  # not in the native answer; Companion's ``expires``


class SignedParts(TypedDict):
    parts: list[SignedPart]


class StoredPart(TypedDict):
    partNumber: int
    etag: str
    size: int


class ResumeView(TypedDict):
    uploadId: str
    key: str
    status: str
    partSize: int | None
    totalParts: int | None
    uploadedParts: list[StoredPart]
    remainingParts: list[int]
    uploadedBytes: int
    totalBytes: int
    percentage: float
    parts: list[PartState]


class Aborted(TypedDict):
    uploadId: str
    status: str
    key: str
    bucket: str
