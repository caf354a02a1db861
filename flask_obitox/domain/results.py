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
    #: The upload profile it was created under (``None``: the ``OBITOX_*`` defaults).
    profile: str | None


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


class Aborted(TypedDict):
    uploadId: str
    status: str
    key: str
    bucket: str
