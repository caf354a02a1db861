"""OpenAPI 3.1 for the routes, generated from the marshmallow schemas with apispec.

The route table below is the only hand-written part; ``tests/test_openapi.py`` checks
that it names every route the blueprint serves, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import schemas
from .errors import STATUS_BY_CODE

#: (path, method, summary, request schema, {status: (description, response schema)}, error codes)
ROUTES: list[tuple[str, str, str, str | None, dict[int, tuple[str, str]], list[str]]] = [
    (
        "/uploads",
        "post",
        "Sign one upload: validate the file and return a presigned PUT URL.",
        "FileSpecSchema",
        {201: ("The signed upload.", "SignedUploadSchema")},
        [
            "INVALID_INPUT",
            "INVALID_JSON",
            "FILE_TOO_LARGE",
            "VALIDATION_FAILED",
            "STATE_UNAVAILABLE",
        ],
    ),
    (
        "/uploads/batch",
        "post",
        "Sign up to OBITOX_BATCH_MAX_FILES uploads; each file succeeds or fails on its own.",
        "BatchRequestSchema",
        {200: ("Signed uploads and per-file errors, in request order.", "BatchResponseSchema")},
        [
            "INVALID_INPUT",
            "INVALID_JSON",
            "BATCH_TOO_LARGE",
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
            "UPLOAD_NOT_FOUND",
            "UPLOAD_NOT_COMPLETE",
            "UPLOAD_ABORTED",
            "UPLOAD_EXPIRED",
            "CONTENT_MISMATCH",
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
        "/multipart",
        "post",
        "Start a resumable multipart upload (one CreateMultipartUpload); the uploadId is "
        "the resume token.",
        "MultipartRequestSchema",
        {201: ("The multipart upload.", "MultipartCreatedSchema")},
        [
            "INVALID_INPUT",
            "INVALID_JSON",
            "FILE_TOO_LARGE",
            "VALIDATION_FAILED",
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
            "UPLOAD_ABORTED",
            "UPLOAD_COMPLETED",
            "UPLOAD_EXPIRED",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/multipart/{uploadId}",
        "get",
        "Resume view: the parts storage holds (ListParts, every page) and those remaining.",
        None,
        {200: ("Where the upload stands.", "ResumeViewSchema")},
        ["UPLOAD_NOT_FOUND", "UPLOAD_ABORTED", "UPLOAD_EXPIRED", "STORAGE_UNAVAILABLE"],
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
            "UPLOAD_ABORTED",
            "UPLOAD_EXPIRED",
            "INVALID_PARTS",
            "CONTENT_MISMATCH",
            "STORAGE_UNAVAILABLE",
        ],
    ),
    (
        "/multipart/{uploadId}",
        "delete",
        "Abort: AbortMultipartUpload in storage and status aborted. Idempotent.",
        None,
        {200: ("The aborted upload.", "AbortedSchema")},
        ["UPLOAD_NOT_FOUND", "UPLOAD_COMPLETED", "UPLOAD_EXPIRED", "STORAGE_UNAVAILABLE"],
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
        "its policy bounds the size by the server's limits.",
        None,
        {200: ("The presigned POST.", "CompanionParamsSchema")},
        ["INVALID_INPUT", "VALIDATION_FAILED", "STATE_UNAVAILABLE", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/s3/complete",
        "post",
        "Verify a presigned-POST upload (query: key) and mark it completed; not part of "
        "Companion's protocol (Uppy never reports a POST), called from the page.",
        "CompleteRequestSchema",
        {200: ("The completed upload.", "CompletedUploadSchema")},
        ["UPLOAD_NOT_FOUND", "UPLOAD_NOT_COMPLETE", "CONTENT_MISMATCH", "FILE_TOO_LARGE"],
    ),
    (
        "/s3/multipart",
        "post",
        "Companion: start a multipart upload (one CreateMultipartUpload).",
        "CompanionMultipartRequestSchema",
        {200: ("The upload's key and id.", "CompanionMultipartCreatedSchema")},
        ["INVALID_INPUT", "INVALID_JSON", "VALIDATION_FAILED", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/s3/multipart/{uploadId}",
        "get",
        "Companion: the parts storage holds (query: key), every page, as a bare array.",
        None,
        {200: ("The parts.", "CompanionPartSchema[]")},
        ["UPLOAD_NOT_FOUND", "UPLOAD_ABORTED", "INVALID_INPUT", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/s3/multipart/{uploadId}",
        "delete",
        "Companion: abort the upload (query: key); idempotent.",
        None,
        {200: ("An empty object.", "")},
        ["UPLOAD_NOT_FOUND", "INVALID_INPUT", "UPLOAD_COMPLETED", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/s3/multipart/{uploadId}/batch",
        "get",
        "Companion: presigned part URLs (query: key, partNumbers=1,2,...; 1..10000).",
        None,
        {200: ("URLs by part number.", "CompanionBatchSchema")},
        ["UPLOAD_NOT_FOUND", "INVALID_INPUT", "STATE_UNAVAILABLE", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/s3/multipart/{uploadId}/{partNumber}",
        "get",
        "Companion: one presigned part URL (query: key); no checksum is signed.",
        None,
        {200: ("The part URL.", "CompanionPartUrlSchema")},
        ["UPLOAD_NOT_FOUND", "INVALID_INPUT", "STATE_UNAVAILABLE", "STORAGE_UNAVAILABLE"],
    ),
    (
        "/s3/multipart/{uploadId}/complete",
        "post",
        "Companion: check the parts against ListParts (ETags quoted or not) and the size "
        "against the limits, complete, verify (query: key).",
        "CompanionCompleteRequestSchema",
        {200: ("Where the object is.", "CompanionCompletedSchema")},
        [
            "UPLOAD_NOT_FOUND",
            "INVALID_INPUT",
            "INVALID_PARTS",
            "FILE_TOO_LARGE",
            "CONTENT_MISMATCH",
            "STORAGE_UNAVAILABLE",
        ],
    ),
]

_OPTIONAL_BODIES = {"CompleteRequest", "MultipartCompleteRequest", "CorsSetupRequest"}
#: Query parameters, by path.
_QUERY_PARAMETERS: dict[str, list[dict[str, Any]]] = {
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
}
_AUTH_CODES = ["UNAUTHENTICATED", "UNSUPPORTED_MEDIA_TYPE", "PAYLOAD_TOO_LARGE"]


def _package_version() -> str:
    try:
        return version("flask-obitox")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def _operation(
    path: str,
    summary: str,
    request_schema: str | None,
    responses: dict[int, tuple[str, str]],
    codes: list[str],
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {}}
    if "{uploadId}" in path:
        operation["parameters"] = [
            {"in": "path", "name": "uploadId", "required": True, "schema": {"type": "string"}}
        ]
    if "{partNumber}" in path:
        operation["parameters"].append(
            {"in": "path", "name": "partNumber", "required": True, "schema": {"type": "integer"}}
        )
    if path in _QUERY_PARAMETERS:
        operation.setdefault("parameters", []).extend(_QUERY_PARAMETERS[path])
    if request_schema:
        operation["requestBody"] = {
            # complete takes no fields: its (JSON) body may be left empty
            "required": request_schema not in _OPTIONAL_BODIES,
            "content": {"application/json": {"schema": request_schema}},
        }
    for status, (description, schema) in responses.items():
        body: str | dict[str, str] = schema or {"type": "object"}
        if schema.endswith("[]"):  # a bare array (Companion's list of parts)
            body = {"type": "array", "items": schema[:-2]}
        content = {"application/json": {"schema": body}}
        operation["responses"][str(status)] = {"description": description, "content": content}
    if path != "/openapi.json":
        codes = [*codes, *(_AUTH_CODES if request_schema else ["UNAUTHENTICATED"])]
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
def openapi_spec(url_prefix: str) -> dict[str, Any]:
    """The OpenAPI document for routes mounted at ``url_prefix`` (cached: it is pure)."""
    spec = APISpec(
        title="flask-obitox",
        version=_package_version(),
        openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Direct-to-S3 uploads: presigned single and batch uploads."},
        servers=[{"url": url_prefix}],
    )
    # Every schema a route names, in table order (nested ones register themselves).
    names = ["ErrorSchema"]
    for _path, _method, _summary, request_schema, responses, _codes in ROUTES:
        names += [request_schema] if request_schema else []
        names += [name.removesuffix("[]") for _description, name in responses.values() if name]
    for name in dict.fromkeys(names):
        spec.components.schema(name.removesuffix("Schema"), schema=getattr(schemas, name))
    operations: dict[str, dict[str, Any]] = {}
    for path, method, summary, request_schema, responses, codes in ROUTES:
        req = request_schema.removesuffix("Schema") if request_schema else None
        resp = {s: (d, n.replace("Schema", "")) for s, (d, n) in responses.items()}
        operations.setdefault(path, {})[method] = _operation(path, summary, req, resp, codes)
    for path, ops in operations.items():
        spec.path(path=path, operations=ops)
    document: dict[str, Any] = spec.to_dict()
    return document
