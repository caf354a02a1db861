"""OpenAPI 3.1 for the routes, generated from the marshmallow schemas with apispec.

The route table and the query parameters below are the only hand-written parts;
``tests/test_openapi.py`` checks that the table names every route the blueprint serves,
so the two cannot drift apart, and ``tests/test_schemathesis.py`` sends the routes what
the document allows (and what it forbids) to check it says what the server does.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import RAISE, fields, validate

from . import schemas
from .config import PROFILE_NAME_PATTERN, S3_MAX_PARTS
from .errors import STATUS_BY_CODE
from .state import KINDS, STATUSES
from .state.capabilities import GROUP_STATUSES

#: What an upload that is finished but unusable answers: aborted, expired, or rejected
#: (its content did not match).
_FINISHED = ["UPLOAD_ABORTED", "UPLOAD_EXPIRED", "CONTENT_MISMATCH", "UPLOAD_CLOSED"]
#: A response that is a redirect (no body, a Location).
_REDIRECT = "->Location"
#: The response "schema" of ``GET /manager``: a page, not JSON.
_HTML = "text/html"
#: What joining a group may answer: unknown (or another owner's), or closed.
_JOIN = ["GROUP_NOT_FOUND", "GROUP_CLOSED"]

#: (path, method, summary, request schema, {status: (description, response schema)}, error codes)
ROUTES: list[tuple[str, str, str, str | None, dict[int, tuple[str, str]], list[str]]] = [
    (
        "/uploads",
        "post",
        "Sign one upload: validate the file and return a presigned PUT URL.",
        "UploadRequestSchema",
        {201: ("The signed upload.", "SignedUploadSchema")},
        [
            "INVALID_INPUT",
            "FORBIDDEN",
            "FILE_TOO_LARGE",
            "VALIDATION_FAILED",
            *_JOIN,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/uploads",
        "get",
        "The caller's uploads, newest first, filtered by status, kind and group.",
        None,
        {200: ("One page of uploads.", "UploadPageSchema")},
        ["INVALID_INPUT", "STATE_UNAVAILABLE"],
    ),
    (
        "/uploads/batch",
        "post",
        "Sign up to OBITOX_BATCH_MAX_FILES uploads; each file succeeds or fails on its own.",
        "BatchRequestSchema",
        {200: ("Signed uploads and per-file errors, in request order.", "BatchResponseSchema")},
        [
            "INVALID_INPUT",
            "FORBIDDEN",
            "BATCH_TOO_LARGE",
            *_JOIN,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/uploads/{uploadId}/complete",
        "post",
        "Verify the stored object (size, magic bytes) and mark the upload completed. Idempotent.",
        "CompleteRequestSchema",
        {200: ("The completed upload.", "CompletedUploadSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_NOT_COMPLETE",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/uploads/{uploadId}",
        "get",
        "Where an upload of the caller stands.",
        None,
        {200: ("The upload's status.", "UploadStatusSchema")},
        ["UPLOAD_NOT_FOUND", "UPLOAD_EXPIRED", "STATE_UNAVAILABLE"],
    ),
    (
        "/uploads/{uploadId}",
        "delete",
        "Delete an upload: an open one is aborted in storage, a completed one's object (and "
        "derived objects) deleted; status deleted. Idempotent.",
        None,
        {200: ("The deleted upload.", "UploadStatusSchema")},
        ["UPLOAD_NOT_FOUND", "STATE_UNAVAILABLE", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/uploads/{uploadId}/download",
        "get",
        "Download a completed upload: a redirect to a presigned GET (OBITOX_DOWNLOAD_EXPIRY), "
        "or with Accept: application/json its URL.",
        None,
        {
            200: ("With Accept: application/json, the presigned URL.", "DownloadLinkSchema"),
            302: ("Location is the presigned GET.", _REDIRECT),
        },
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "NOT_FOUND",
            "UPLOAD_NOT_COMPLETE",
            "STATE_UNAVAILABLE",
        ],
    ),
    (
        "/uploads/{uploadId}/progress",
        "post",
        "Report how far an upload got (display only; uploadedBytes never goes down).",
        "ProgressRequestSchema",
        {202: ("The report as merged.", "ProgressAckSchema")},
        ["INVALID_INPUT", "UPLOAD_NOT_FOUND", "UPLOAD_CLOSED", "STATE_UNAVAILABLE"],
    ),
    (
        "/groups",
        "post",
        "Create a group of uploads: pending, not sealed.",
        "GroupRequestSchema",
        {201: ("The group.", "GroupViewSchema")},
        ["INVALID_INPUT", "STATE_UNAVAILABLE"],
    ),
    (
        "/groups",
        "get",
        "The caller's groups, newest first, filtered by status.",
        None,
        {200: ("One page of groups.", "GroupPageSchema")},
        ["INVALID_INPUT", "STATE_UNAVAILABLE"],
    ),
    (
        "/groups/{groupId}",
        "get",
        "A group of the caller's and its uploads, in the order they joined.",
        None,
        {200: ("The group.", "GroupDetailSchema")},
        ["GROUP_NOT_FOUND", "STATE_UNAVAILABLE"],
    ),
    (
        "/groups/{groupId}/seal",
        "post",
        "Seal a group: it takes no more uploads. Idempotent.",
        "CompleteRequestSchema",
        {200: ("The group.", "GroupViewSchema")},
        ["INVALID_INPUT", "GROUP_NOT_FOUND", "STATE_UNAVAILABLE"],
    ),
    (
        "/groups/{groupId}/cancel",
        "post",
        "Cancel a group: every unfinished upload in it is aborted. Idempotent.",
        "CompleteRequestSchema",
        {200: ("The group.", "GroupViewSchema")},
        [
            "INVALID_INPUT",
            "GROUP_NOT_FOUND",
            "GROUP_CLOSED",
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/groups/{groupId}",
        "delete",
        "Delete a group: cancel it, then delete every upload's object. Idempotent.",
        None,
        {200: ("The deleted group.", "GroupViewSchema")},
        ["GROUP_NOT_FOUND", "STATE_UNAVAILABLE", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/events",
        "get",
        "The caller's live events as text/event-stream: replays what a Last-Event-ID "
        "missed (within OBITOX_EVENTS_RETENTION), then follows new ones; a comment line "
        "every OBITOX_EVENTS_HEARTBEAT seconds.",
        None,
        {200: ("An endless stream of events (see docs/events.rst).", "EventStream")},
        ["INVALID_INPUT", "STATE_UNAVAILABLE"],
    ),
    (
        "/multipart",
        "post",
        "Start a resumable multipart upload (one CreateMultipartUpload); the uploadId is "
        "the resume token.",
        "MultipartRequestSchema",
        {201: ("The multipart upload.", "MultipartCreatedSchema")},
        [
            "INVALID_INPUT",
            "FORBIDDEN",
            "FILE_TOO_LARGE",
            "VALIDATION_FAILED",
            *_JOIN,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/multipart/{uploadId}/parts",
        "post",
        "Presigned UploadPart URLs for up to 1000 parts, each with its Content-Length signed.",
        "PartsRequestSchema",
        {200: ("One signed URL per part number, in request order.", "SignedPartsSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_COMPLETED",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/multipart/{uploadId}",
        "get",
        "Resume view: the parts storage holds (ListParts, every page) and those remaining.",
        None,
        {200: ("Where the upload stands.", "ResumeViewSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_NOT_COMPLETE",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/multipart/{uploadId}/complete",
        "post",
        "Check the parts against storage, assemble them and verify the object. Idempotent; "
        "one caller of a concurrent race completes.",
        "MultipartCompleteRequestSchema",
        {200: ("The completed upload.", "MultipartCompletedSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_NOT_COMPLETE",
            "INVALID_PARTS",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/multipart/{uploadId}",
        "delete",
        "Abort: AbortMultipartUpload in storage and status aborted. Idempotent.",
        None,
        {200: ("The aborted upload.", "AbortedSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_COMPLETED",
            "UPLOAD_EXPIRED",
            "CONTENT_MISMATCH",
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/uploads/{uploadId}/processing/{name}/retry",
        "post",
        "Queue a new run of a failed processor of a completed upload (its owner or an admin).",
        "CompleteRequestSchema",
        {202: ("The upload, the processor queued again.", "UploadStatusSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "PROCESSING_NOT_FOUND",
            "PROCESSING_NOT_FAILED",
            "STATE_UNAVAILABLE",
        ],
    ),
    (
        "/storage-events",
        "post",
        "S3 event notifications (MinIO webhook target, S3-compatible stores, EventBridge): "
        "an ObjectCreated for the key of an open upload completes it. Bearer "
        "OBITOX_STORAGE_EVENTS_TOKEN; without one configured the route does not exist (404).",
        "StorageEventsRequestSchema",
        {200: ("What the notification did.", "StorageEventsReportSchema")},
        ["INVALID_INPUT", "NOT_FOUND", "STATE_UNAVAILABLE", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/manager",
        "get",
        "The upload manager page (HTML) for the caller: groups and uploads, live through "
        "/events, with cancel, delete, retry and download. 404 with OBITOX_MANAGER=False.",
        None,
        {200: ("The page (its script and styles are under /static).", _HTML)},
        ["NOT_FOUND"],
    ),
    (
        "/admin/uploads",
        "get",
        "Admin: the uploads of the owner named by the owner parameter, newest first, "
        "filtered as GET /uploads filters.",
        None,
        {200: ("One page of uploads.", "UploadPageSchema")},
        ["INVALID_INPUT", "FORBIDDEN", "STATE_UNAVAILABLE"],
    ),
    (
        "/cors/setup",
        "post",
        "Admin: merge the upload rule into the bucket's CORS configuration; other rules are "
        "kept. With dryRun nothing is written.",
        "CorsSetupRequestSchema",
        {200: ("The configuration before and after, and their diff.", "CorsSetupSchema")},
        ["INVALID_INPUT", "INVALID_JSON", "FORBIDDEN", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/cors/verify",
        "get",
        "Admin: per origin (the origin query parameters, else OBITOX_CORS_ORIGINS), whether "
        "a browser upload to the bucket would work.",
        None,
        {200: ("One report per origin; ok only when every check passes.", "CorsVerifySchema")},
        ["INVALID_INPUT", "FORBIDDEN", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/openapi.json",
        "get",
        "This document.",
        None,
        {200: ("OpenAPI 3.1.", "")},
        [],
    ),
    # -- Uppy/Companion protocol (flask_obitox.companion) ------------------------------
    (
        "/s3/params",
        "get",
        "Companion: a presigned POST for one file (query: filename, type, metadata[k]); "
        "its policy bounds the size by the server's limits (metadata[profile]: an upload "
        "profile, whose storage settings the policy requires).",
        None,
        {200: ("The presigned POST.", "CompanionParamsSchema")},
        [
            "INVALID_INPUT",
            "FORBIDDEN",
            "VALIDATION_FAILED",
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/s3/complete",
        "post",
        "Verify a presigned-POST upload (query: key) and mark it completed; not part of "
        "Companion's protocol (Uppy never reports a POST), called from the page.",
        "CompleteRequestSchema",
        {200: ("The completed upload.", "CompletedUploadSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_NOT_COMPLETE",
            "FILE_TOO_LARGE",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/s3/multipart",
        "post",
        "Companion: start a multipart upload (one CreateMultipartUpload; metadata.profile: "
        "an upload profile).",
        "CompanionMultipartRequestSchema",
        {200: ("The upload's key and id.", "CompanionMultipartCreatedSchema")},
        [
            "INVALID_INPUT",
            "FORBIDDEN",
            "VALIDATION_FAILED",
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/s3/multipart/{uploadId}",
        "get",
        "Companion: the parts storage holds (query: key), every page, as a bare array.",
        None,
        {200: ("The parts.", "CompanionPartSchema[]")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_NOT_COMPLETE",
            "UPLOAD_COMPLETED",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/s3/multipart/{uploadId}",
        "delete",
        "Companion: abort the upload (query: key); idempotent.",
        None,
        {200: ("An empty object.", "")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_COMPLETED",
            "UPLOAD_EXPIRED",
            "CONTENT_MISMATCH",
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/s3/multipart/{uploadId}/batch",
        "get",
        "Companion: presigned part URLs (query: key, partNumbers=1,2,...; 1..10000).",
        None,
        {200: ("URLs by part number.", "CompanionBatchSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_COMPLETED",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/s3/multipart/{uploadId}/{partNumber}",
        "get",
        "Companion: one presigned part URL (query: key); no checksum is signed.",
        None,
        {200: ("The part URL.", "CompanionPartUrlSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_COMPLETED",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/s3/multipart/{uploadId}/complete",
        "post",
        "Companion: check the parts against ListParts (ETags quoted or not) and the size "
        "against the limits, complete, verify (query: key).",
        "CompanionCompleteRequestSchema",
        {200: ("Where the object is.", "CompanionCompletedSchema")},
        [
            "INVALID_INPUT",
            "UPLOAD_NOT_FOUND",
            "UPLOAD_NOT_COMPLETE",
            "INVALID_PARTS",
            "FILE_TOO_LARGE",
            *_FINISHED,
            "STATE_UNAVAILABLE",
            "STORAGE_UNAVAILABLE",
        ],
    ),
]

#: Bodies with no required field: ``{}`` will do (an empty body too, with
#: ``Content-Type: application/json``, which every POST needs).
_EMPTY_BODIES = {"CompleteRequest", "MultipartCompleteRequest", "CorsSetupRequest"}
_GROUP_ID = {"groupId": "$response.body#/groupId"}
_COMPANION_KEY = {
    "in": "query",
    "name": "key",
    "required": True,
    "description": "The object key the upload was given (Companion identifies uploads by it).",
    "schema": {"type": "string", "minLength": 1},
}


#: Query parameters, by path. The Companion routes take the same file rules as the
#: native ones, from the same schema.
def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"in": "query", "name": name, "description": description, "schema": schema}


_LIMIT = _query(
    "limit", "Rows per page (default 50).", {"type": "integer", "minimum": 1, "maximum": 100}
)
_CURSOR = _query(
    "cursor",
    "A nextCursor this listing handed out (any other is a 400).",
    {"type": "string", "minLength": 1, "maxLength": 1000},
)
#: An id or a filter of ``GET /events``.
_EVENT_PARAMETER = {"type": "string", "minLength": 1, "maxLength": 200}

#: The listings' query parameters, by (method, path): POST /uploads takes none.
_LISTING_PARAMETERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("get", "/uploads"): [
        _query("status", "Only uploads with this status.", {"enum": sorted(STATUSES)}),
        _query("kind", "Only uploads of this kind.", {"enum": sorted(KINDS)}),
        _query(
            "groupId",
            "Only uploads in this group.",
            {"type": "string", "minLength": 1, "maxLength": 64},
        ),
        _query(
            "profile",
            "Only uploads created under this upload profile (OBITOX_PROFILES).",
            {"type": "string", "pattern": PROFILE_NAME_PATTERN},
        ),
        _LIMIT,
        _CURSOR,
    ],
    ("get", "/admin/uploads"): [
        {
            **_query(
                "owner",
                "The owner whose uploads are listed.",
                {"type": "string", "minLength": 1, "maxLength": 256},
            ),
            "required": True,
        },
        _query("status", "Only uploads with this status.", {"enum": sorted(STATUSES)}),
        _query("kind", "Only uploads of this kind.", {"enum": sorted(KINDS)}),
        _query(
            "groupId",
            "Only uploads in this group.",
            {"type": "string", "minLength": 1, "maxLength": 64},
        ),
        _LIMIT,
        _CURSOR,
    ],
    ("get", "/groups"): [
        _query("status", "Only groups with this status.", {"enum": sorted(GROUP_STATUSES)}),
        _LIMIT,
        _CURSOR,
    ],
}
_QUERY_PARAMETERS: dict[str, list[dict[str, Any]]] = {
    "/events": [
        {
            "in": "query",
            "name": "groupId",
            "description": "Only the events of this group (and of the uploads in it).",
            "schema": _EVENT_PARAMETER,
        },
        {
            "in": "query",
            "name": "uploadId",
            "description": "Only the events of this upload.",
            "schema": _EVENT_PARAMETER,
        },
        {
            "in": "query",
            "name": "lastEventId",
            "description": "The id of the last event received, for clients that cannot "
            "send the Last-Event-ID header (the header wins).",
            "schema": _EVENT_PARAMETER,
        },
        {
            "in": "header",
            "name": "Last-Event-ID",
            "description": "The id of the last event received (EventSource sends it on "
            "reconnect): every event after it that is still kept is sent first. An id "
            "this stream did not hand out is a 400.",
            "schema": _EVENT_PARAMETER,
        },
    ],
    "/uploads/{uploadId}/download": [
        _query(
            "inline",
            "1 (or true): Content-Disposition inline, to show it rather than save it.",
            {"anyOf": [{"type": "boolean"}, {"enum": ["0", "1", "true", "false"]}]},
        ),
        _query(
            "derived",
            "The key of an object a processor derived from the upload (its result names "
            "it, as the thumbnail processor's thumbnail does): a link to that object instead.",
            {"type": "string", "minLength": 1, "maxLength": 1024},
        ),
    ],
    "/cors/verify": [
        {
            "in": "query",
            "name": "origin",
            "description": "An origin to check; repeat it for several.",
            "schema": {"type": "array", "items": {"type": "string"}},
            "style": "form",
            "explode": True,
        }
    ],
    "/s3/params": [
        {
            "in": "query",
            "name": "filename",
            "required": True,
            "schema": "FileSpec.filename",
        },
        {
            "in": "query",
            "name": "type",
            "description": "The content type (default application/octet-stream).",
            "schema": "FileSpec.contentType",
        },
        {
            "in": "query",
            "name": "metadata",
            "description": "Uppy's file.meta as metadata[name]=value: name, type and empty "
            "values are dropped, profile names the upload profile, the rest is checked as "
            "the native routes check metadata "
            f"(at most {schemas.METADATA_MAX_BYTES} bytes in all).",
            "style": "deepObject",
            "explode": True,
            "schema": "CompanionMetadata",
        },
    ],
    "/s3/complete": [_COMPANION_KEY],
    "/s3/multipart/{uploadId}": [_COMPANION_KEY],
    "/s3/multipart/{uploadId}/batch": [
        _COMPANION_KEY,
        {
            "in": "query",
            "name": "partNumbers",
            "required": True,
            "description": "Part numbers, comma-separated: partNumbers=1,2,3.",
            "style": "form",
            "explode": False,
            "schema": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1000,
                "items": {"type": "integer", "minimum": 1, "maximum": S3_MAX_PARTS},
            },
        },
    ],
    "/s3/multipart/{uploadId}/{partNumber}": [_COMPANION_KEY],
    "/s3/multipart/{uploadId}/complete": [_COMPANION_KEY],
}
_UPLOAD_ID = {"uploadId": "$response.body#/uploadId"}
_COMPANION_UPLOAD = {
    "path.uploadId": "$response.body#/uploadId",
    "query.key": "$response.body#/key",
}
#: Where the ids an operation answers lead (OpenAPI links): (method, path) -> status,
#: and per link its name, the operation it leads to and the parameters it fills.
_LINKS: dict[tuple[str, str], tuple[int, list[tuple[str, str, str, dict[str, str]]]]] = {
    ("post", "/uploads"): (
        201,
        [
            ("status", "get", "/uploads/{uploadId}", _UPLOAD_ID),
            ("complete", "post", "/uploads/{uploadId}/complete", _UPLOAD_ID),
            ("progress", "post", "/uploads/{uploadId}/progress", _UPLOAD_ID),
            ("delete", "delete", "/uploads/{uploadId}", _UPLOAD_ID),
        ],
    ),
    ("post", "/groups"): (
        201,
        [
            ("status", "get", "/groups/{groupId}", _GROUP_ID),
            ("seal", "post", "/groups/{groupId}/seal", _GROUP_ID),
            ("cancel", "post", "/groups/{groupId}/cancel", _GROUP_ID),
            ("delete", "delete", "/groups/{groupId}", _GROUP_ID),
        ],
    ),
    ("post", "/uploads/batch"): (
        200,
        [
            (
                "statusOfTheFirst",
                "get",
                "/uploads/{uploadId}",
                {"uploadId": "$response.body#/uploads/0/uploadId"},
            ),
            (
                "completeTheFirst",
                "post",
                "/uploads/{uploadId}/complete",
                {"uploadId": "$response.body#/uploads/0/uploadId"},
            ),
        ],
    ),
    ("post", "/multipart"): (
        201,
        [
            ("status", "get", "/uploads/{uploadId}", _UPLOAD_ID),
            ("signParts", "post", "/multipart/{uploadId}/parts", _UPLOAD_ID),
            ("resume", "get", "/multipart/{uploadId}", _UPLOAD_ID),
            ("complete", "post", "/multipart/{uploadId}/complete", _UPLOAD_ID),
            ("abort", "delete", "/multipart/{uploadId}", _UPLOAD_ID),
        ],
    ),
    ("get", "/s3/params"): (
        200,
        [("complete", "post", "/s3/complete", {"query.key": "$response.body#/fields/key"})],
    ),
    ("post", "/s3/multipart"): (
        200,
        [
            ("listParts", "get", "/s3/multipart/{uploadId}", _COMPANION_UPLOAD),
            ("signParts", "get", "/s3/multipart/{uploadId}/batch", _COMPANION_UPLOAD),
            ("signPart", "get", "/s3/multipart/{uploadId}/{partNumber}", _COMPANION_UPLOAD),
            ("complete", "post", "/s3/multipart/{uploadId}/complete", _COMPANION_UPLOAD),
            ("abort", "delete", "/s3/multipart/{uploadId}", _COMPANION_UPLOAD),
        ],
    ),
}
#: A part number (1 to 10000) as a string of at most 5 ASCII digits.
_PART_NUMBER_DIGITS = (
    r"^(?:0{0,4}[1-9]|0{0,3}[1-9][0-9]|0{0,2}[1-9][0-9]{2}|0?[1-9][0-9]{3}|10000)\Z"
)
#: The response "schema" of ``GET /events``: not JSON, a stream of SSE messages.
_EVENT_STREAM = "EventStream"
_EVENT_STREAM_BODY = {
    "type": "string",
    "description": "Server-sent events: per event `id: <position>`, `event: <type>`, "
    "`data: {type, timestamp, data}` (the webhook body), then a blank line; "
    "`: heartbeat` comment lines while idle.",
}
#: Every route but the document itself may answer these.
_CALLER_CODES = ["UNAUTHENTICATED"]
#: Every route with a JSON body may also answer these.
_BODY_CODES = ["INVALID_JSON", "UNSUPPORTED_MEDIA_TYPE", "PAYLOAD_TOO_LARGE"]
#: The routes that sign or create: rate limited per owner (OBITOX_RATE_LIMITS; the
#: multipart starts also by the caps on open uploads), so they may answer 429.
_LIMITED = frozenset(
    {
        ("post", "/uploads"),
        ("post", "/uploads/batch"),
        ("post", "/multipart"),
        ("post", "/multipart/{uploadId}/parts"),
        ("get", "/s3/params"),
        ("post", "/s3/multipart"),
        ("get", "/s3/multipart/{uploadId}/batch"),
        ("get", "/s3/multipart/{uploadId}/{partNumber}"),
    }
)


def _marshmallow_rules(
    converter: Any, field: fields.Field[Any], ret: dict[str, Any], **kwargs: Any
) -> dict[str, Any]:
    """What apispec leaves out of a field's rules, in OpenAPI 3.1 (JSON Schema) words:
    an exclusive bound of a ``Range`` (``maxSizeMB > 0``), the pattern a ``Dict``'s keys
    must match (``metadata``), and what a ``Boolean`` reads as true or false besides
    ``true`` and ``false`` (marshmallow's ``truthy`` and ``falsy``: 1, "yes", ...)."""
    extra: dict[str, Any] = {}
    if isinstance(field, fields.Boolean):
        also = sorted(
            (v for v in field.truthy | field.falsy if not isinstance(v, bool)),
            key=lambda v: (isinstance(v, str), str(v)),
        )
        if also:
            ret.pop("type", None)
            extra["anyOf"] = [{"type": "boolean"}, {"enum": also}]
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            if validator.min is not None and not validator.min_inclusive:
                extra["exclusiveMinimum"] = validator.min
                ret.pop("minimum", None)
            if validator.max is not None and not validator.max_inclusive:
                extra["exclusiveMaximum"] = validator.max
                ret.pop("maximum", None)
    if isinstance(field, fields.Dict) and field.key_field is not None:
        patterns = [
            v.regex.pattern for v in field.key_field.validators if isinstance(v, validate.Regexp)
        ]
        if patterns:
            extra["propertyNames"] = {"pattern": patterns[0]}
    return extra


def _package_version() -> str:
    try:
        return version("flask-obitox")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def _operation_ref(method: str, path: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def _operation(
    method: str,
    path: str,
    summary: str,
    request_schema: str | None,
    responses: dict[int, tuple[str, str]],
    codes: list[str],
    shared: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {}}
    if "{uploadId}" in path:
        operation["parameters"] = [
            {"in": "path", "name": "uploadId", "required": True, "schema": {"type": "string"}}
        ]
    if "{groupId}" in path:
        operation["parameters"] = [
            {"in": "path", "name": "groupId", "required": True, "schema": {"type": "string"}}
        ]
    if "{name}" in path:
        operation["parameters"].append(
            {
                "in": "path",
                "name": "name",
                "required": True,
                "schema": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,63}\Z"},
            }
        )
    if "{partNumber}" in path:
        operation["parameters"].append(
            {
                "in": "path",
                "name": "partNumber",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": S3_MAX_PARTS},
            }
        )
    for parameter in [
        *_QUERY_PARAMETERS.get(path, []),
        *_LISTING_PARAMETERS.get((method, path), []),
    ]:
        schema = parameter["schema"]
        parameter = {
            **parameter,
            "schema": dict(shared[schema]) if isinstance(schema, str) else schema,
        }
        operation.setdefault("parameters", []).append(parameter)
    if request_schema:
        operation["requestBody"] = {
            # Required even where {} will do: without a JSON body there is no
            # Content-Type: application/json, and every POST answers 415 without it.
            "required": True,
            "content": {"application/json": {"schema": request_schema}},
        }
        if request_schema in _EMPTY_BODIES:
            operation["requestBody"]["description"] = (
                "{} will do: every field is optional. An empty body is read as {} too, "
                "with Content-Type: application/json."
            )
    for status, (description, schema) in responses.items():
        if schema == _REDIRECT:
            operation["responses"][str(status)] = {
                "description": description,
                "headers": {"Location": {"required": True, "schema": {"type": "string"}}},
            }
            continue
        body: str | dict[str, str] = schema or {"type": "object"}
        if schema.endswith("[]"):  # a bare array (Companion's list of parts)
            body = {"type": "array", "items": schema[:-2]}
        content: dict[str, Any] = {"application/json": {"schema": body}}
        if schema == _EVENT_STREAM:
            content = {"text/event-stream": {"schema": _EVENT_STREAM_BODY}}
        if schema == _HTML:
            content = {"text/html": {"schema": {"type": "string"}}}
        operation["responses"][str(status)] = {"description": description, "content": content}
    if (method, path) in _LINKS:
        status, links = _LINKS[method, path]
        operation["responses"][str(status)]["links"] = {
            name: {"operationRef": _operation_ref(to_method, to_path), "parameters": parameters}
            for name, to_method, to_path, parameters in links
        }
    if path != "/openapi.json":
        codes = [*codes, *_CALLER_CODES, *(_BODY_CODES if request_schema else [])]
    if (method, path) in _LIMITED:
        codes = [*codes, "RATE_LIMITED"]
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(STATUS_BY_CODE[code], []).append(code)
    for status, names in sorted(by_status.items()):
        operation["responses"][str(status)] = {
            "description": " or ".join(sorted(set(names))),
            "content": {"application/json": {"schema": "Error"}},
        }
    return operation


@functools.lru_cache(maxsize=8)
def openapi_spec(url_prefix: str, profiles: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The OpenAPI document for routes mounted at ``url_prefix`` (cached: it is pure).

    ``profiles``: the app's upload profiles (``OBITOX_PROFILES``), which become the only
    values ``profile`` may take (none: no ``profile`` field); ``None`` documents the
    field for any app."""
    marshmallow_plugin = MarshmallowPlugin()
    spec = APISpec(
        title="flask-obitox",
        version=_package_version(),
        openapi_version="3.1.0",
        plugins=[marshmallow_plugin],
        info={"description": "Direct-to-S3 uploads: presigned single and batch uploads."},
        servers=[{"url": url_prefix}],
    )
    converter = marshmallow_plugin.converter
    assert converter is not None
    converter.add_attribute_function(_marshmallow_rules)  # type: ignore[no-untyped-call]
    file_fields = schemas.FileSpecSchema().fields
    shared = {
        f"FileSpec.{name}": converter.field2property(file_fields[name])
        for name in ("filename", "contentType", "metadata")
    }
    shared["CompanionMetadata"] = _companion_metadata(
        shared["FileSpec.metadata"], body=False, profiles=profiles
    )
    # Every schema a route names, in table order (nested ones register themselves).
    names = ["ErrorSchema"]
    for _path, _method, _summary, request_schema, responses, _codes in ROUTES:
        names += [request_schema] if request_schema else []
        names += [
            name.removesuffix("[]")
            for _description, name in responses.values()
            if name and name not in (_EVENT_STREAM, _REDIRECT, _HTML)
        ]
    for name in dict.fromkeys(names):
        component = name.removesuffix("Schema")
        if component not in spec.components.schemas:  # registered as another's nested
            spec.components.schema(component, schema=getattr(schemas, name))
    operations: dict[str, dict[str, Any]] = {}
    for path, method, summary, request_schema, responses, codes in ROUTES:
        req = request_schema.removesuffix("Schema") if request_schema else None
        resp = {s: (d, n.replace("Schema", "")) for s, (d, n) in responses.items()}
        operations.setdefault(path, {})[method] = _operation(
            method, path, summary, req, resp, codes, shared
        )
    for path, ops in operations.items():
        spec.path(path=path, operations=ops)
    document: dict[str, Any] = spec.to_dict()
    # An unknown field is a 400 (marshmallow's RAISE). apispec says so only from 6.4 on;
    # say it on every apispec pyproject allows, so the document is the same everywhere.
    for name, component in document["components"]["schemas"].items():
        schema_class = getattr(schemas, f"{name}Schema", None)
        if (
            schema_class is not None
            and "properties" in component
            and "additionalProperties" not in component
            and schema_class().unknown == RAISE
        ):
            component["additionalProperties"] = False
    # A batch answers 200 whatever its entries are: each one that is not a valid file
    # spec fails alone, in the answer's errors.
    batch_files = document["components"]["schemas"]["BatchRequest"]["properties"]["files"]
    batch_files["items"] = {
        "anyOf": [
            batch_files["items"],
            {"description": "Anything else fails alone: its error is in the answer's errors."},
        ]
    }
    # A batch joins a group or makes one, not both.
    for name in ("BatchRequest", "BatchEnvelope"):
        if name in document["components"]["schemas"]:
            document["components"]["schemas"][name]["not"] = {"required": ["groupId", "group"]}
    # Companion's part numbers may come as strings of digits.
    claimed = document["components"]["schemas"]["CompanionClaimedPart"]["properties"]
    claimed["PartNumber"] = {
        "description": claimed["PartNumber"].pop("description"),
        "anyOf": [claimed["PartNumber"], {"type": "string", "pattern": _PART_NUMBER_DIGITS}],
    }
    # The Companion body is read by hand, then checked by the native file rules.
    companion = document["components"]["schemas"]["CompanionMultipartRequest"]["properties"]
    companion["filename"] = dict(shared["FileSpec.filename"])
    companion["type"] = {**shared["FileSpec.contentType"], **companion["type"]}
    companion["metadata"] = {
        **_companion_metadata(shared["FileSpec.metadata"], body=True, profiles=profiles),
        "description": companion["metadata"]["description"],
    }
    if profiles is not None:
        # This app's profiles are the only ones a create call may name.
        for name in ("UploadRequest", "BatchRequest", "MultipartRequest"):
            fields = document["components"]["schemas"][name]["properties"]
            if profiles:
                fields["profile"] = {**fields["profile"], "enum": list(profiles)}
            else:
                del fields["profile"]
    return document


def _companion_metadata(
    native: dict[str, Any], *, body: bool, profiles: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """Uppy's ``file.meta`` as the Companion routes read it: its own ``name`` and
    ``type`` and empty values (``null`` too) are dropped, ``profile`` names an upload
    profile (one of ``profiles``, when given), the rest must pass the native metadata
    rules. In a JSON body, numbers and booleans become strings."""
    value = {key: v for key, v in native["additionalProperties"].items() if key != "type"}
    value["type"] = ["string", "number", "boolean", "null"] if body else "string"
    dropped = ["", "null", "undefined", None]
    key_pattern = native["propertyNames"]["pattern"].removeprefix("^")
    own: dict[str, Any] = {} if body else {"type": "string"}
    properties = {"name": own, "type": own}
    reserved = "name|type"
    if profiles is not None:
        # Empty values are dropped like any other: then no profile.
        properties["profile"] = {"enum": [*profiles, *dropped]}
        reserved += "|profile"
    return {
        "type": ["object", "null"] if body else "object",
        "properties": properties,
        "patternProperties": {rf"^(?!(?:{reserved})\Z){key_pattern}": value},
        "additionalProperties": {"enum": dropped},
    }
