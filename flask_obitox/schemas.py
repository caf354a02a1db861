"""Marshmallow schemas for every request and response body.

Field names are the JSON names (camelCase), so a loaded body is a dict with the same
keys a client sent. Limits that depend on configuration (max size, allowed types) are
not here: they are applied by :mod:`flask_obitox.validation` per request, so the error
can name the ``OBITOX_*`` key that set them.
"""

from __future__ import annotations

import sys
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate

from .config import (
    EXTENSION_PATTERN,
    MEDIA_PATTERN,
    NETWORK_TYPES,
    PROFILE_NAME_PATTERN,
    S3_MAX_PARTS,
    S3_MAX_SINGLE_PUT,
    S3_MIN_PART_SIZE,
)
from .state import KINDS, STATUSES
from .state.capabilities import GROUP_STATUSES, MAX_PAGE_SIZE

#: S3 limits user metadata to 2 KB (keys and values together).
METADATA_MAX_BYTES = 2048
#: A printable-ASCII value: HTTP header values outside it are not portable.
_PRINTABLE_ASCII = r"^[\x20-\x7e]*\Z"
#: A type/subtype pair with optional parameters, as in RFC 9110; spaces only (``\s`` would
#: admit newlines and other characters no HTTP client can send in a header).
_MEDIA_TYPE = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}( *;[\x20-\x7e]*)?\Z"
#: Base64 of a 32-byte SHA-256 digest, as S3's ``x-amz-checksum-sha256`` wants it.
_SHA256_BASE64 = r"^[A-Za-z0-9+/]{43}=\Z"


def _metadata_size(value: dict[str, str]) -> None:
    total = sum(map(len, value)) + sum(map(len, value.values()))
    if total > METADATA_MAX_BYTES:
        raise ValidationError(
            f"metadata is {total} bytes; storage allows at most {METADATA_MAX_BYTES}"
        )


def _doc(description: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"description": description, **extra}}


class ValidationRulesSchema(Schema):
    """Client-side rules: can only tighten the server's ``OBITOX_*`` rules."""

    maxSizeMB = fields.Float(
        validate=validate.Range(min=0, min_inclusive=False), **_doc("Largest size in MiB.")
    )
    minSizeKB = fields.Float(
        validate=validate.Range(min=0),
        # Checked by the rules: the size in bytes must be a finite number.
        **_doc("Smallest size in KiB.", maximum=sys.float_info.max / 1024),
    )
    allowedTypes = fields.List(
        fields.String(
            validate=validate.Regexp(MEDIA_PATTERN, error="not a media type pattern like image/*")
        ),
        validate=validate.Length(max=100),
        **_doc("Content types, wildcards like image/* allowed."),
    )
    allowedExtensions = fields.List(
        fields.String(
            validate=validate.Regexp(EXTENSION_PATTERN, error="not a file extension like png")
        ),
        validate=validate.Length(max=100),
        **_doc("File extensions, with or without the dot."),
    )
    blockExecutables = fields.Boolean(
        **_doc("Refuse executables (cannot be turned off by a client).")
    )


class _FileFieldsSchema(Schema):
    """The fields every create call shares (single, batch entry and multipart)."""

    filename = fields.String(required=True, validate=validate.Length(min=1, max=1024))
    contentType = fields.String(
        required=True, validate=validate.Regexp(_MEDIA_TYPE, error="not a media type")
    )
    size = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0),
        **_doc("Exact size in bytes; storage refuses a body of another size."),
    )
    metadata = fields.Dict(
        keys=fields.String(
            validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,128}\Z", error="letters, digits, - and _")
        ),
        values=fields.String(
            validate=validate.Regexp(_PRINTABLE_ASCII, error="printable ASCII only")
        ),
        validate=_metadata_size,
        **_doc("Stored as x-amz-meta-* headers (keys lower-cased)."),
    )
    networkType = fields.String(validate=validate.OneOf(NETWORK_TYPES))
    validation = fields.Nested(ValidationRulesSchema)


def _metadata_field(description: str) -> fields.Dict:
    return fields.Dict(
        keys=fields.String(
            validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,128}\Z", error="letters, digits, - and _")
        ),
        values=fields.String(
            validate=validate.Regexp(_PRINTABLE_ASCII, error="printable ASCII only")
        ),
        validate=_metadata_size,
        **_doc(description),
    )


#: A group id (or an upload id): what ``new_upload_ids`` makes, and a bound on the rest.
_ID = validate.Length(min=1, max=64)


def _group_id(description: str) -> fields.String:
    return fields.String(validate=_ID, **_doc(description))


def _profile_field() -> fields.String:
    return fields.String(
        validate=validate.Regexp(PROFILE_NAME_PATTERN, error="not a profile name"),
        **_doc(
            "An upload profile of OBITOX_PROFILES: its rules, key prefix and storage "
            "settings (encryption, storage class, cache headers) apply. Storage settings "
            "come from the server only."
        ),
    )


class FileSpecSchema(_FileFieldsSchema):
    """One file to upload (alone, or as an entry of a batch)."""

    checksumSha256 = fields.String(
        validate=validate.Regexp(
            _SHA256_BASE64, error="must be the base64 SHA-256 digest (44 characters)"
        ),
        **_doc("Base64 SHA-256 of the content; signed, so storage verifies it."),
    )
    expiresIn = fields.Integer(
        strict=True,
        validate=validate.Range(min=1),
        **_doc("Seconds the URL should live; clamped to OBITOX_EXPIRY_MIN..OBITOX_EXPIRY_MAX."),
    )


class UploadRequestSchema(FileSpecSchema):
    """``POST /uploads``: one file, under a profile or the ``OBITOX_*`` defaults,
    optionally joining a group."""

    groupId = _group_id("Join this group of the caller's (open and not sealed).")
    profile = _profile_field()


class CompleteRequestSchema(Schema):
    """``POST /uploads/<id>/complete`` takes no fields: send ``{}`` (or nothing) as JSON."""


class GroupRequestSchema(Schema):
    """``POST /groups``, and a batch's ``group``."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(validate=validate.Length(max=2000))
    metadata = _metadata_field("The group's own metadata (keys lower-cased).")


class BatchRequestSchema(Schema):
    """Up to ``OBITOX_BATCH_MAX_FILES`` files; each is validated on its own."""

    files = fields.List(
        fields.Nested(FileSpecSchema), required=True, validate=validate.Length(min=1)
    )
    validation = fields.Nested(ValidationRulesSchema)
    networkType = fields.String(validate=validate.OneOf(NETWORK_TYPES))
    groupId = _group_id("Every signed file joins this group of the caller's.")
    group = fields.Nested(
        GroupRequestSchema,
        **_doc("A new group holding exactly this batch's signed files, sealed."),
    )
    profile = _profile_field()


class BatchEnvelopeSchema(Schema):
    """The batch body with each file left raw: one bad file must not fail the others."""

    # allow_none: a null entry fails alone, like any other malformed entry.
    files = fields.List(fields.Raw(allow_none=True), required=True)
    validation = fields.Nested(ValidationRulesSchema)
    profile = _profile_field()
    networkType = fields.String(validate=validate.OneOf(NETWORK_TYPES))
    groupId = _group_id("Every signed file joins this group of the caller's.")
    group = fields.Nested(
        GroupRequestSchema,
        **_doc("A new group holding exactly this batch's signed files, sealed."),
    )


class SignedUploadSchema(Schema):
    uploadId = fields.String(required=True)
    key = fields.String(required=True)
    bucket = fields.String(required=True)
    method = fields.String(required=True, **_doc("Always PUT."))
    url = fields.String(required=True)
    headers = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        required=True,
        **_doc("Headers the PUT must send exactly (they are signed)."),
    )
    expiresIn = fields.Integer(required=True)
    expiresAt = fields.String(required=True, **_doc("ISO 8601 UTC time the URL stops working."))


class BatchUploadSchema(SignedUploadSchema):
    index = fields.Integer(required=True)
    filename = fields.String(required=True)


class BatchErrorSchema(Schema):
    index = fields.Integer(required=True)
    filename = fields.String(allow_none=True)
    error = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class BatchResponseSchema(Schema):
    total = fields.Integer(required=True)
    successful = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    uploads = fields.List(fields.Nested(BatchUploadSchema), required=True)
    errors = fields.List(fields.Nested(BatchErrorSchema), required=True)
    groupId = fields.String(**_doc("The group the signed files joined (or that was made)."))


class AbortedSchema(Schema):
    uploadId = fields.String(required=True)
    status = fields.String(required=True)
    key = fields.String(required=True)
    bucket = fields.String(required=True)


class _StoredSchema(AbortedSchema):
    """What every completion answers: the upload and the object storage holds."""

    size = fields.Integer(required=True)
    etag = fields.String(required=True)


class CompletedUploadSchema(_StoredSchema):
    contentType = fields.String(required=True)


class UploadStatusSchema(Schema):
    uploadId = fields.String(required=True)
    kind = fields.String(required=True, **_doc("single or multipart"))
    status = fields.String(
        required=True, **_doc("pending, uploading, completed, aborted, rejected or expired")
    )
    key = fields.String(required=True)
    bucket = fields.String(required=True)
    filename = fields.String(required=True)
    contentType = fields.String(required=True)
    size = fields.Integer(required=True)
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    createdAt = fields.String(required=True)
    updatedAt = fields.String(required=True)
    expiresAt = fields.String(
        required=True, **_doc("When the upload record expires (OBITOX_UPLOAD_TTL).")
    )
    etag = fields.String(allow_none=True)
    reason = fields.String(allow_none=True, **_doc("Why a rejected upload was rejected."))
    groupId = fields.String(required=True, allow_none=True, **_doc("Its group, or null."))
    uploadedBytes = fields.Integer(
        required=True, **_doc("All of them once completed, else the owner's last report.")
    )
    percentage = fields.Float(required=True)
    totalParts = fields.Integer(required=True, allow_none=True, **_doc("Multipart only."))
    completedParts = fields.Integer(
        required=True, allow_none=True, **_doc("Multipart only: parts reported uploaded.")
    )
    processing = fields.Dict(
        required=True,
        **_doc(
            "Each processor that runs after this upload, by name: {status: queued, running, "
            "completed or failed; attempts; result (completed); error (the last failure); "
            "updatedAt}."
        ),
    )
    ready = fields.Boolean(required=True, **_doc("Completed, and every processor of it completed."))
    profile = fields.String(
        allow_none=True, **_doc("The upload profile (OBITOX_PROFILES) it was created under.")
    )


class UploadPageSchema(Schema):
    uploads = fields.List(fields.Nested(UploadStatusSchema), required=True)
    nextCursor = fields.String(
        required=True, allow_none=True, **_doc("Pass as cursor for the next page; null at the end.")
    )


class GroupViewSchema(Schema):
    groupId = fields.String(required=True)
    name = fields.String(required=True)
    description = fields.String(required=True, allow_none=True)
    metadata = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    status = fields.String(
        required=True,
        **_doc("pending, in_progress, completed, failed, cancelled or deleted"),
    )
    sealed = fields.Boolean(required=True)
    totalFiles = fields.Integer(required=True)
    completedFiles = fields.Integer(required=True)
    failedFiles = fields.Integer(required=True)
    totalBytes = fields.Integer(required=True)
    uploadedBytes = fields.Integer(required=True)
    percentage = fields.Float(required=True)
    createdAt = fields.String(required=True)
    updatedAt = fields.String(required=True)


class GroupDetailSchema(GroupViewSchema):
    uploads = fields.List(
        fields.Nested(UploadStatusSchema), required=True, **_doc("In the order they joined.")
    )


class GroupPageSchema(Schema):
    groups = fields.List(fields.Nested(GroupViewSchema), required=True)
    nextCursor = fields.String(required=True, allow_none=True)


class UploadListQuerySchema(Schema):
    """``GET /uploads``'s query."""

    status = fields.String(validate=validate.OneOf(sorted(STATUSES)))
    kind = fields.String(validate=validate.OneOf(sorted(KINDS)))
    groupId = fields.String(validate=_ID)
    profile = fields.String(validate=validate.Regexp(PROFILE_NAME_PATTERN))
    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_PAGE_SIZE))
    cursor = fields.String(validate=validate.Length(min=1, max=1000))


class AdminUploadListQuerySchema(UploadListQuerySchema):
    """``GET /admin/uploads``'s query: ``GET /uploads``'s filters for the owner named."""

    owner = fields.String(
        required=True,
        validate=validate.Length(min=1, max=256),
        **_doc("The owner whose uploads are listed (as the identity loader names them)."),
    )


class GroupListQuerySchema(Schema):
    """``GET /groups``'s query."""

    status = fields.String(validate=validate.OneOf(sorted(GROUP_STATUSES)))
    limit = fields.Integer(validate=validate.Range(min=1, max=MAX_PAGE_SIZE))
    cursor = fields.String(validate=validate.Length(min=1, max=1000))


class DownloadQuerySchema(Schema):
    """``GET /uploads/<id>/download``'s query."""

    inline = fields.Boolean(**_doc("Show it in the browser instead of saving it."))
    derived = fields.String(
        validate=validate.Length(min=1, max=1024),
        **_doc("The key of an object a processor derived from the upload (a thumbnail)."),
    )


class DownloadLinkSchema(Schema):
    url = fields.String(required=True, **_doc("A presigned GET (OBITOX_DOWNLOAD_EXPIRY)."))
    expiresAt = fields.String(required=True)


class PartReportSchema(Schema):
    partNumber = fields.Integer(
        strict=True, required=True, validate=validate.Range(min=1, max=S3_MAX_PARTS)
    )
    status = fields.String(
        required=True, validate=validate.OneOf(["uploading", "uploaded", "failed"])
    )
    etag = fields.String(validate=validate.Length(min=1, max=200))


class ProgressRequestSchema(Schema):
    """``POST /uploads/<id>/progress``: the owner's own report, for display only."""

    uploadedBytes = fields.Integer(strict=True, required=True, validate=validate.Range(min=0))
    parts = fields.List(fields.Nested(PartReportSchema), validate=validate.Length(max=S3_MAX_PARTS))


class ProgressAckSchema(Schema):
    uploadId = fields.String(required=True)
    uploadedBytes = fields.Integer(required=True, **_doc("The highest report (never goes down)."))
    percentage = fields.Float(required=True)


class PartStateSchema(Schema):
    partNumber = fields.Integer(required=True)
    size = fields.Integer(required=True, allow_none=True)
    status = fields.String(required=True, **_doc("pending, uploading, uploaded or failed"))
    etag = fields.String(**_doc("Storage's, once it holds the part."))


class MultipartRequestSchema(_FileFieldsSchema):
    """``POST /multipart``: a file of up to ``OBITOX_MAX_MULTIPART_SIZE`` bytes."""

    groupId = _group_id("Join this group of the caller's (open and not sealed).")
    profile = _profile_field()
    partSize = fields.Integer(
        strict=True,
        validate=validate.Range(min=1),
        # S3's bounds, checked by the service (422 VALIDATION_FAILED).
        **_doc(
            "Bytes per part (default OBITOX_PART_SIZE); at least 5 MiB, raised so that "
            "there are at most 10,000 parts.",
            minimum=S3_MIN_PART_SIZE,
            maximum=S3_MAX_SINGLE_PUT,
        ),
    )


class MultipartCreatedSchema(Schema):
    uploadId = fields.String(
        required=True, **_doc("The resume token: random, bound to the caller.")
    )
    key = fields.String(required=True)
    bucket = fields.String(required=True)
    partSize = fields.Integer(required=True)
    totalParts = fields.Integer(required=True)
    expiresAt = fields.String(required=True, **_doc("When the upload expires (OBITOX_UPLOAD_TTL)."))


class PartsRequestSchema(Schema):
    """``POST /multipart/<id>/parts``: the parts to sign, up to 1000 per call."""

    partNumbers = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=10_000)),
        required=True,
        validate=validate.Length(min=1, max=1000),
    )
    networkType = fields.String(validate=validate.OneOf(NETWORK_TYPES))


class SignedPartSchema(Schema):
    partNumber = fields.Integer(required=True)
    url = fields.String(required=True, **_doc("Presigned UploadPart URL (PUT)."))
    size = fields.Integer(required=True, **_doc("The part's exact size (signed)."))
    headers = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    expiresAt = fields.String(required=True)


class SignedPartsSchema(Schema):
    parts = fields.List(fields.Nested(SignedPartSchema), required=True)


class StoredPartSchema(Schema):
    partNumber = fields.Integer(required=True)
    etag = fields.String(required=True)
    size = fields.Integer(required=True)


class ResumeViewSchema(Schema):
    """Where a multipart upload stands, from storage's ListParts."""

    uploadId = fields.String(required=True)
    key = fields.String(required=True)
    status = fields.String(required=True)
    partSize = fields.Integer(required=True)
    totalParts = fields.Integer(required=True)
    uploadedParts = fields.List(fields.Nested(StoredPartSchema), required=True)
    remainingParts = fields.List(fields.Integer(), required=True)
    uploadedBytes = fields.Integer(required=True)
    totalBytes = fields.Integer(required=True)
    percentage = fields.Float(required=True)
    parts = fields.List(
        fields.Nested(PartStateSchema),
        required=True,
        **_doc("Every part; what storage holds (ListParts) wins over the owner's reports."),
    )


class ClaimedPartSchema(Schema):
    partNumber = fields.Integer(
        strict=True, required=True, validate=validate.Range(min=1, max=10_000)
    )
    etag = fields.String(required=True, validate=validate.Length(min=1, max=200))


class MultipartCompleteRequestSchema(Schema):
    """``parts`` omitted: the parts storage holds (ListParts) are used."""

    parts = fields.List(
        fields.Nested(ClaimedPartSchema), validate=validate.Length(min=1, max=10_000)
    )


class MultipartCompletedSchema(_StoredSchema):
    location = fields.String(required=True, **_doc("The object's URL (unsigned)."))


class ErrorSchema(Schema):
    error = fields.String(required=True, **_doc("A stable code, e.g. VALIDATION_FAILED."))
    message = fields.String(required=True, **_doc("A sentence for humans."))
    details = fields.Dict(required=True)


# -- admin: bucket CORS (flask_obitox.storage.cors) ------------------------------------


class CorsSetupRequestSchema(Schema):
    """``POST /cors/setup``; every field is optional (``{}`` allows OBITOX_CORS_ORIGINS)."""

    origins = fields.List(
        fields.String(validate=validate.Length(min=1, max=2048)),
        validate=validate.Length(min=1, max=100),
        **_doc("Origins to allow instead of OBITOX_CORS_ORIGINS; '*' only when listed here."),
    )
    dryRun = fields.Boolean(**_doc("Answer what would change without writing it."))


class CorsRuleSchema(Schema):
    """One rule of a bucket's CORS configuration, with S3's own field names."""

    ID = fields.String(**_doc("obitox-upload for the rule flask-obitox owns."))
    AllowedOrigins = fields.List(fields.String(), required=True)
    AllowedMethods = fields.List(fields.String(), required=True)
    AllowedHeaders = fields.List(fields.String())
    ExposeHeaders = fields.List(fields.String())
    MaxAgeSeconds = fields.Integer()


class CorsSetupSchema(Schema):
    bucket = fields.String(required=True)
    origins = fields.List(fields.String(), required=True, **_doc("The origins requested."))
    dryRun = fields.Boolean(required=True)
    changed = fields.Boolean(required=True, **_doc("Whether the configuration differs."))
    applied = fields.Boolean(required=True, **_doc("Whether it was written (not a dry run)."))
    before = fields.List(fields.Nested(CorsRuleSchema), required=True)
    after = fields.List(fields.Nested(CorsRuleSchema), required=True)
    diff = fields.String(required=True, **_doc("Unified diff of before and after, as JSON."))
    warnings = fields.List(fields.String(), required=True)


class CorsCheckSchema(Schema):
    check = fields.String(required=True, **_doc("origin, put, post, headers or etag"))
    ok = fields.Boolean(required=True)
    message = fields.String(required=True)


class CorsOriginReportSchema(Schema):
    origin = fields.String(required=True)
    ok = fields.Boolean(required=True)
    checks = fields.List(fields.Nested(CorsCheckSchema), required=True)
    fix = fields.String(allow_none=True, **_doc("The command that fixes it; null when ok."))


class CorsVerifySchema(Schema):
    bucket = fields.String(required=True)
    ok = fields.Boolean(required=True, **_doc("True only when every origin passes."))
    origins = fields.List(fields.Nested(CorsOriginReportSchema), required=True)


# -- Uppy/Companion protocol (flask_obitox.companion): Companion's own field names -----


class CompanionMultipartRequestSchema(Schema):
    """``POST /s3/multipart``, as ``@uppy/aws-s3`` sends it (no size: checked at completion).

    For the document only: the route reads the body by hand, ignoring other fields, and
    checks ``filename``, ``type`` and ``metadata`` with the native file rules
    (:mod:`flask_obitox.openapi` copies them in).
    """

    class Meta:
        unknown = INCLUDE

    filename = fields.String(required=True)
    type = fields.String(**_doc("The file's content type (default application/octet-stream)."))
    metadata = fields.Dict(
        **_doc(
            "Uppy's file.meta: name, type and empty values are dropped, numbers and booleans "
            f"become strings, the rest is checked as the native routes check metadata (at "
            f"most {METADATA_MAX_BYTES} bytes in all)."
        )
    )


class CompanionParamsSchema(Schema):
    """A presigned POST: send ``fields`` then ``file`` as a multipart form to ``url``."""

    method = fields.String(required=True, **_doc("Always POST."))
    url = fields.String(required=True, **_doc("The bucket's root URL."))
    expires = fields.Integer(required=True, **_doc("Seconds the policy stays valid."))
    # ``fields`` in JSON; the attribute cannot shadow marshmallow's module in the class body.
    form_fields = fields.Dict(
        data_key="fields",
        keys=fields.String(),
        values=fields.String(),
        required=True,
        **_doc("Form fields: key, Content-Type, x-amz-meta-*, policy and signature."),
    )


class CompanionMultipartCreatedSchema(Schema):
    key = fields.String(required=True)
    uploadId = fields.String(required=True, **_doc("Our upload id (the S3 one stays server-side)."))
    bucket = fields.String(required=True)


class CompanionPartSchema(Schema):
    PartNumber = fields.Integer(required=True)
    ETag = fields.String(required=True)
    Size = fields.Integer(required=True)


class CompanionPartUrlSchema(Schema):
    url = fields.String(required=True, **_doc("Presigned UploadPart URL (PUT)."))
    expires = fields.Integer(required=True)


class CompanionBatchSchema(Schema):
    presignedUrls = fields.Dict(
        keys=fields.String(), values=fields.String(), required=True, **_doc("By part number.")
    )


class CompanionClaimedPartSchema(Schema):
    """For the document only, like :class:`CompanionCompleteRequestSchema`."""

    class Meta:
        unknown = INCLUDE

    PartNumber = fields.Integer(
        required=True,
        validate=validate.Range(min=1, max=S3_MAX_PARTS),
        **_doc("A whole number, or a string of up to 5 digits."),
    )
    ETag = fields.String(
        required=True, validate=validate.Length(min=1, max=200), **_doc("Quoted or not.")
    )


class CompanionCompleteRequestSchema(Schema):
    """``POST /s3/multipart/<id>/complete``, as ``@uppy/aws-s3`` sends it. For the
    document only: the route reads the body by hand, ignoring other fields."""

    class Meta:
        unknown = INCLUDE

    parts = fields.List(
        fields.Nested(CompanionClaimedPartSchema),
        required=True,
        validate=validate.Length(min=1, max=S3_MAX_PARTS),
    )


class CompanionCompletedSchema(Schema):
    location = fields.String(required=True)
    key = fields.String(required=True)
    bucket = fields.String(required=True)


class StorageEventsRequestSchema(Schema):
    """``POST /storage-events``: an S3 event notification (read by
    :mod:`flask_obitox.storage_events`; this schema documents it)."""

    class Meta:
        unknown = INCLUDE

    Records = fields.List(
        fields.Dict(),
        **_doc(
            "S3 event records: {eventName: 's3:ObjectCreated:Put' (or 'ObjectCreated:Put'), "
            "s3: {bucket: {name}, object: {key (URL-encoded), size, eTag}}}."
        ),
    )
    EventName = fields.String(**_doc("MinIO: the event name, beside or instead of Records."))
    Key = fields.String(**_doc("MinIO: <bucket>/<object key>."))


class StorageEventsReportSchema(Schema):
    received = fields.Integer(required=True, **_doc("ObjectCreated records in the body."))
    completed = fields.List(
        fields.String(), required=True, **_doc("Uploads now completed (by this event or before).")
    )
    rejected = fields.List(
        fields.String(), required=True, **_doc("Uploads refused: their object did not match.")
    )
    ignored = fields.Integer(
        required=True, **_doc("Records that changed nothing: unknown keys, other buckets, replays.")
    )
