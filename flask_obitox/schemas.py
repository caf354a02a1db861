"""Marshmallow schemas for every request and response body.

Field names are the JSON names (camelCase), so a loaded body is a dict with the same
keys a client sent. Limits that depend on configuration (max size, allowed types) are
not here: they are applied by :mod:`flask_obitox.validation` per request, so the error
can name the ``OBITOX_*`` key that set them.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from .config import EXTENSION_PATTERN, MEDIA_PATTERN, NETWORK_TYPES

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
    total = sum(len(k) + len(v) for k, v in value.items())
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
    minSizeKB = fields.Float(validate=validate.Range(min=0), **_doc("Smallest size in KiB."))
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


class FileSpecSchema(Schema):
    """One file to upload."""

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
    checksumSha256 = fields.String(
        validate=validate.Regexp(
            _SHA256_BASE64, error="must be the base64 SHA-256 digest (44 characters)"
        ),
        **_doc("Base64 SHA-256 of the content; signed, so storage verifies it."),
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
    expiresIn = fields.Integer(
        strict=True,
        validate=validate.Range(min=1),
        **_doc("Seconds the URL should live; clamped to OBITOX_EXPIRY_MIN..OBITOX_EXPIRY_MAX."),
    )
    validation = fields.Nested(ValidationRulesSchema)


class CompleteRequestSchema(Schema):
    """``POST /uploads/<id>/complete`` takes no fields: send ``{}`` (or nothing) as JSON."""


class BatchRequestSchema(Schema):
    """Up to ``OBITOX_BATCH_MAX_FILES`` files; each is validated on its own."""

    files = fields.List(
        fields.Nested(FileSpecSchema), required=True, validate=validate.Length(min=1)
    )
    validation = fields.Nested(ValidationRulesSchema)
    networkType = fields.String(validate=validate.OneOf(NETWORK_TYPES))


class BatchEnvelopeSchema(Schema):
    """The batch body with each file left raw: one bad file must not fail the others."""

    # allow_none: a null entry fails alone, like any other malformed entry.
    files = fields.List(fields.Raw(allow_none=True), required=True)
    validation = fields.Nested(ValidationRulesSchema)
    networkType = fields.String(validate=validate.OneOf(NETWORK_TYPES))


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


class CompletedUploadSchema(Schema):
    uploadId = fields.String(required=True)
    status = fields.String(required=True)
    key = fields.String(required=True)
    bucket = fields.String(required=True)
    size = fields.Integer(required=True)
    etag = fields.String(required=True)
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


class ErrorSchema(Schema):
    error = fields.String(required=True, **_doc("A stable code, e.g. VALIDATION_FAILED."))
    message = fields.String(required=True, **_doc("A sentence for humans."))
    details = fields.Dict(required=True)
