"""Uppy/Companion-compatible routes, mounted at ``<prefix>/s3``.

``@uppy/aws-s3`` with ``companionEndpoint`` speaks Uppy Companion's S3 protocol. Each
route here parses that wire format and calls one operation of the same upload domain
as the native routes (:mod:`flask_obitox.domain`), so identity, ownership, validation,
signals, verification and webhooks are the same. What differs is only on the wire:

* Companion clients send back ``uploadId`` and ``key`` on every call. The ``uploadId``
  is *our* upload id (storage's UploadId stays server-side); the ``key`` is passed to
  the domain, which answers 404 when it is not the upload's key.
* Uppy sends no size and picks its own part sizes: the domain opens such uploads with
  the client deciding the size (``deferred``), and checks it at completion.

Uppy never tells the server a POST upload finished, so ``POST /s3/complete?key=`` (not
part of Companion's protocol) lets the page do it, as the docs' recipe does in its
``upload-success`` handler.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Response, request
from flask_cors import CORS
from werkzeug.datastructures import MultiDict

from .appstate import ObitoXState, get_state
from .config import S3_MAX_PARTS, Settings
from .errors import ObitoXError
from .http import install_error_handlers, json_body, load, owner_of, respond
from .views import load_multipart, load_upload_request

#: Companion's ``partNumbers`` query of ``/batch``: at most this many per call.
MAX_BATCH_PARTS = 1000
#: Metadata Uppy sends for every file that duplicates the upload's own fields (and a
#: ``name`` may be non-ASCII, which S3 metadata cannot hold): not stored as metadata.
_UPPY_OWN_META = frozenset({"name", "type"})

bp = Blueprint("companion", __name__)
install_error_handlers(bp)


def _metadata(raw: Any) -> dict[str, Any]:
    """Uppy's ``file.meta`` as upload metadata: its own fields and empty values dropped,
    scalars as strings; the rest is validated by the native schema."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ObitoXError(
            "INVALID_INPUT", "metadata must be an object.", details={"field": "metadata"}
        )
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _UPPY_OWN_META or value is None or value in ("", "null", "undefined"):
            continue
        out[name] = str(value).lower() if isinstance(value, bool) else value
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = str(value)
    return out


def _query_metadata(args: MultiDict[str, str]) -> dict[str, str]:
    """Uppy's ``metadata[name]=value`` query parameters. A name given twice is refused:
    which value would the upload keep?"""
    metadata = {}
    for name, values in args.lists():
        if name.startswith("metadata[") and name.endswith("]"):
            if len(values) > 1:
                raise ObitoXError(
                    "INVALID_INPUT",
                    f"{name[:140]} is given {len(values)} times; send it once.",
                    details={"field": "metadata"},
                )
            metadata[name[len("metadata[") : -1]] = values[0]
    return metadata


def _part_number(raw: str) -> int:
    """A part number from the URL: 1..10000, else 400."""
    try:
        number = int(raw)
    except ValueError:
        number = 0
    if not raw.isdigit() or not 1 <= number <= S3_MAX_PARTS:
        raise ObitoXError(
            "INVALID_INPUT",
            f"Part numbers must be whole numbers from 1 to {S3_MAX_PARTS}; got {raw[:20]!r}.",
            details={"field": "partNumber", "min": 1, "max": S3_MAX_PARTS},
        )
    return number


def _query_key() -> str:
    key = request.args.get("key")
    if not key:
        raise ObitoXError(
            "INVALID_INPUT", "The key query parameter is required.", details={"field": "key"}
        )
    return key


# -- routes ----------------------------------------------------------------------------


def _caller() -> tuple[ObitoXState, str]:
    ext = get_state()
    if not ext.settings.companion_routes:
        raise ObitoXError("NOT_FOUND", "The Companion routes are off (OBITOX_COMPANION_ROUTES).")
    return ext, owner_of(ext)


def _string(body: Mapping[str, Any], name: str, *, default: str | None = None) -> str:
    value = body.get(name, default)
    if not isinstance(value, str) or not value:
        raise ObitoXError(
            "INVALID_INPUT", f"{name} must be a non-empty string.", details={"field": name}
        )
    return value


def _file_spec(
    ext: ObitoXState, owner: str, loader: Any, filename: str, content_type: str, metadata: Any
) -> dict[str, Any]:
    """Uppy's file as the native routes' file spec (its size decided later), loaded by
    the native schema; a refusal is an ``upload-rejected`` like any other. Uppy's
    ``meta.profile`` is the upload profile, not metadata."""
    spec: dict[str, Any] = {"filename": filename, "contentType": content_type, "size": 0}
    meta = _metadata(metadata)  # not an object: a malformed request, not a refused file
    profile = meta.pop("profile", None)
    if profile is not None:
        spec["profile"] = profile
    if meta:
        spec["metadata"] = meta
    try:
        return load(loader, spec)
    except ObitoXError as error:
        ext.service.reject(owner, filename, error, stage="validation")
        raise


@bp.get("/params")
def params() -> Response:
    ext, owner = _caller()
    args = request.args
    spec = _file_spec(
        ext,
        owner,
        load_upload_request,
        _string(args, "filename"),
        _string(args, "type", default="application/octet-stream"),
        _query_metadata(args),
    )
    return respond(ext.service.sign_post(owner, spec))


@bp.post("/complete")
def complete_post() -> Response:
    ext, owner = _caller()
    json_body(ext, empty={})
    return respond(ext.service.complete_by_key(owner, _query_key()))


@bp.post("/multipart")
def create_multipart() -> Response:
    ext, owner = _caller()
    body = json_body(ext)
    if not isinstance(body, dict):
        raise ObitoXError("INVALID_INPUT", "The body must be a JSON object.")
    spec = _file_spec(
        ext,
        owner,
        load_multipart,
        _string(body, "filename"),
        _string(body, "type", default="application/octet-stream"),
        body.get("metadata"),
    )
    created = ext.service.initiate_multipart(owner, spec, deferred=True)
    return respond(
        {"key": created["key"], "uploadId": created["uploadId"], "bucket": created["bucket"]}
    )


@bp.get("/multipart/<upload_id>")
def list_parts(upload_id: str) -> Response:
    ext, owner = _caller()
    # Uppy lists parts only to resume: a completed upload has none to resume (409, as
    # Companion answers), where the native resume view reports it complete.
    view = ext.service.resume_multipart(owner, upload_id, key=_query_key(), open_only=True)
    return respond(
        [
            {"PartNumber": p["partNumber"], "ETag": f'"{p["etag"]}"', "Size": p["size"]}
            for p in view["uploadedParts"]
        ]
    )


def _sign(
    ext: ObitoXState, owner: str, upload_id: str, numbers: list[int]
) -> tuple[dict[int, str], int]:
    parts = ext.service.sign_parts(owner, upload_id, numbers, key=_query_key())["parts"]
    return {p["partNumber"]: p["url"] for p in parts}, min(p["expiresIn"] for p in parts)


@bp.get("/multipart/<upload_id>/batch")
def sign_batch(upload_id: str) -> Response:
    ext, owner = _caller()
    raw = request.args.get("partNumbers", "")
    numbers = [_part_number(n.strip()) for n in raw.split(",") if n.strip()]
    if not 1 <= len(numbers) <= MAX_BATCH_PARTS:
        raise ObitoXError(
            "INVALID_INPUT",
            f"partNumbers must list 1 to {MAX_BATCH_PARTS} part numbers, comma-separated.",
            details={"field": "partNumbers", "max": MAX_BATCH_PARTS},
        )
    urls, _expires = _sign(ext, owner, upload_id, numbers)
    return respond({"presignedUrls": {str(n): url for n, url in urls.items()}})


@bp.get("/multipart/<upload_id>/<part_number>")
def sign_part(upload_id: str, part_number: str) -> Response:
    ext, owner = _caller()
    number = _part_number(part_number)
    urls, expires = _sign(ext, owner, upload_id, [number])
    return respond({"url": urls[number], "expires": expires})


@bp.post("/multipart/<upload_id>/complete")
def complete_multipart(upload_id: str) -> Response:
    ext, owner = _caller()
    key = _query_key()
    body = json_body(ext)
    parts = body.get("parts") if isinstance(body, dict) else None
    if not isinstance(parts, list) or not 1 <= len(parts) <= S3_MAX_PARTS:
        raise ObitoXError(
            "INVALID_INPUT",
            f"parts must be a list of 1 to {S3_MAX_PARTS} {{PartNumber, ETag}} objects.",
            details={"field": "parts"},
        )
    claimed = []
    for part in parts:
        number = part.get("PartNumber") if isinstance(part, dict) else None
        etag = part.get("ETag") if isinstance(part, dict) else None
        if isinstance(number, str) and number.isascii() and number.isdigit() and len(number) <= 5:
            number = int(number)
        if (
            isinstance(number, bool)
            or not isinstance(number, int)
            or not 1 <= number <= S3_MAX_PARTS
            or not isinstance(etag, str)
            or not 1 <= len(etag) <= 200
        ):
            raise ObitoXError(
                "INVALID_INPUT",
                f"Each part needs a PartNumber from 1 to {S3_MAX_PARTS} and an ETag.",
                details={"field": "parts"},
            )
        claimed.append({"partNumber": number, "etag": etag})
    result = ext.service.complete_multipart(owner, upload_id, claimed, key=key)
    return respond(
        {"location": result["location"], "key": result["key"], "bucket": result["bucket"]}
    )


@bp.delete("/multipart/<upload_id>")
def abort_multipart(upload_id: str) -> Response:
    ext, owner = _caller()
    ext.service.abort_multipart(owner, upload_id, key=_query_key())
    return respond({})


def init_browser_routes(app: Flask, settings: Settings) -> None:
    """Answer CORS for ``OBITOX_CORS_ORIGINS`` on every route under the prefix
    (flask-cors: preflights included); nothing is added when the list is empty."""
    if not settings.cors_origins:
        return
    CORS(
        app,
        resources={f"{settings.url_prefix}/*": {"origins": list(settings.cors_origins)}},
        methods=["GET", "POST", "DELETE", "OPTIONS"],
        max_age=600,
        vary_header=True,
    )


__all__ = ["bp", "init_browser_routes"]
