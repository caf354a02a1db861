"""The blueprint: thin handlers, schema in -> service -> schema out.

Every handler finds the caller (401 without one), parses its body with a schema
(415/400/413 for a body that is not acceptable JSON), calls one
:class:`~flask_obitox.service.UploadService` method and dumps the answer with a schema.
Every failure is the JSON error shape ``{"error", "message", "details"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import schemas
from .config import Settings
from .errors import ObitoXError, ServiceUnavailable
from .extension import ANONYMOUS_OWNER, EXTENSION_KEY, ObitoXState
from .fastschema import compile_dumper, compile_loader
from .service import InvalidEntry
from .storage.cors import setup_cors, verify_cors

logger = logging.getLogger("flask_obitox")

bp = Blueprint("obitox", __name__, static_folder="static", static_url_path="/static")

# Compiled once: marshmallow's own load/dump is the fallback and the oracle.
load_file_spec = compile_loader(schemas.FileSpecSchema())
load_batch = compile_loader(schemas.BatchEnvelopeSchema())
load_no_fields = compile_loader(schemas.CompleteRequestSchema())
dump_signed = compile_dumper(schemas.SignedUploadSchema())
dump_batch = compile_dumper(schemas.BatchResponseSchema())
dump_completed = compile_dumper(schemas.CompletedUploadSchema())
dump_status = compile_dumper(schemas.UploadStatusSchema())
load_multipart = compile_loader(schemas.MultipartRequestSchema())
load_parts_request = compile_loader(schemas.PartsRequestSchema())
load_multipart_complete = compile_loader(schemas.MultipartCompleteRequestSchema())
dump_multipart_created = compile_dumper(schemas.MultipartCreatedSchema())
dump_signed_parts = compile_dumper(schemas.SignedPartsSchema())
dump_resume_view = compile_dumper(schemas.ResumeViewSchema())
dump_multipart_completed = compile_dumper(schemas.MultipartCompletedSchema())
dump_aborted = compile_dumper(schemas.AbortedSchema())

_HTTP_CODES = {
    400: "INVALID_INPUT",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


# -- request plumbing ----------------------------------------------------------------


def _ext() -> ObitoXState:
    state: ObitoXState = current_app.extensions[EXTENSION_KEY]
    return state


def _owner(ext: ObitoXState) -> str:
    """The caller's owner id from the host's identity loader, or 401."""
    loader = ext.hooks.identity_loader
    owner = loader() if loader is not None else None
    # ``current_user.is_authenticated and current_user.id`` gives False for a visitor:
    # a bool is never an owner id (it would make every visitor the owner "False").
    if owner is None or owner == "" or isinstance(owner, bool):
        if ext.settings.allow_anonymous:
            return ANONYMOUS_OWNER
        if loader is None and not ext.warned_no_identity:
            ext.warned_no_identity = True
            logger.warning(
                "A request reached ObitoX with no @obitox.identity_loader registered: answering 401."
            )
        raise ObitoXError("UNAUTHENTICATED", "Sign in to upload files.")
    return str(owner)


def _json_body(ext: ObitoXState, *, empty: Any = None) -> Any:
    """The request's JSON, refusing other media types, oversize and malformed bodies.

    ``empty``: what an empty body means for a route whose body is optional (``None``:
    an empty body is malformed JSON).
    """
    if request.mimetype != "application/json":
        # Also what stops cross-site HTML forms: they cannot send application/json.
        raise ObitoXError(
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the body as JSON with Content-Type: application/json.",
            details={"contentType": request.content_type},
        )
    limit = ext.settings.max_request_size
    too_large = ObitoXError(
        "PAYLOAD_TOO_LARGE",
        f"The request body exceeds OBITOX_MAX_REQUEST_SIZE ({limit} bytes).",
        details={"limit": limit},
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    # get_data, not the raw stream: the host (a logging middleware, a before_request)
    # may have read the body already. The per-request limit bounds a chunked body too;
    # werkzeug cuts such a body at the limit rather than failing, hence limit + 1.
    request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large from None
    if len(raw) > limit:
        raise too_large
    if empty is not None and not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ObitoXError(
            "INVALID_JSON",
            f"The body is not valid JSON: {error}.",
            details={"position": getattr(error, "pos", None)},
        ) from None


def _sentence(messages: Any, path: str = "") -> list[str]:
    if isinstance(messages, Mapping):
        out: list[str] = []
        for field, inner in messages.items():
            out += _sentence(inner, f"{path}.{field}" if path else str(field))
        return out
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [f"{path or 'body'}: {' '.join(messages)}"]
    if isinstance(messages, list):
        return [s for m in messages for s in _sentence(m, path)]
    return [f"{path or 'body'}: {messages}"]


def invalid_input(error: ValidationError) -> ObitoXError:
    problems = _sentence(error.messages)
    shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
    return ObitoXError(
        "INVALID_INPUT",
        f"Invalid request: {shown.rstrip('.')}.",
        details={"fields": error.messages},
    )


def _load(
    loader: Callable[[Any], dict[str, Any]], data: Any, *, subject: str = "The body"
) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ObitoXError(
            "INVALID_INPUT",
            f"{subject} must be a JSON object.",
            details={"received": type(data).__name__},
        )
    try:
        return loader(data)
    except ValidationError as error:
        raise invalid_input(error) from None


def _load_file_or_error(data: Any) -> dict[str, Any] | InvalidEntry:
    """One batch entry, or why it fails alone (with its filename, when it has one)."""
    try:
        return _load(load_file_spec, data, subject="Each file")
    except ObitoXError as error:
        filename = data.get("filename") if isinstance(data, dict) else None
        return InvalidEntry(error, filename if isinstance(filename, str) else None)


def _respond(body: Mapping[str, Any], status: int = 200) -> Response:
    # orjson: ~7x faster than json.dumps on a 100-upload answer. Bodies are parsed with
    # the json module instead, because orjson turns integers past 64 bits into floats.
    try:
        data = orjson.dumps(body)
    except TypeError:
        # A client's own text echoed back (a batch error's filename) may hold a lone
        # surrogate, which is valid in JSON but not in UTF-8: json escapes it.
        data = json.dumps(body, separators=(",", ":")).encode()
    return current_app.response_class(data, status=status, mimetype="application/json")


def _error_response(error: ObitoXError) -> Response:
    return _respond(error.to_dict(), error.status)


# -- routes --------------------------------------------------------------------------


@bp.post("/uploads")
def create_upload() -> Response:
    ext = _ext()
    owner = _owner(ext)
    spec = _load(load_file_spec, _json_body(ext))
    return _respond(dump_signed(ext.service.sign_upload(owner, spec)), 201)


@bp.post("/uploads/batch")
def create_batch() -> Response:
    ext = _ext()
    owner = _owner(ext)
    body = _load(load_batch, _json_body(ext))
    entries = body["files"]
    # Refuse an oversize batch before spending time loading its files.
    ext.service.check_batch_size(len(entries))
    files = [_load_file_or_error(entry) for entry in entries]
    answer = ext.service.sign_batch(
        owner, files, validation=body.get("validation"), network_type=body.get("networkType")
    )
    return _respond(dump_batch(answer))


@bp.post("/uploads/<upload_id>/complete")
def complete_upload(upload_id: str) -> Response:
    ext = _ext()
    owner = _owner(ext)
    # No fields yet, but the body must still be JSON (empty or an object): a POST that
    # a cross-site HTML form could send must never change state.
    _load(load_no_fields, _json_body(ext, empty={}))
    return _respond(dump_completed(ext.service.complete_upload(owner, upload_id)))


@bp.get("/uploads/<upload_id>")
def get_upload(upload_id: str) -> Response:
    ext = _ext()
    owner = _owner(ext)
    return _respond(dump_status(ext.service.get_upload(owner, upload_id)))


@bp.post("/multipart")
def create_multipart() -> Response:
    ext = _ext()
    owner = _owner(ext)
    spec = _load(load_multipart, _json_body(ext))
    return _respond(dump_multipart_created(ext.service.initiate_multipart(owner, spec)), 201)


@bp.post("/multipart/<upload_id>/parts")
def sign_parts(upload_id: str) -> Response:
    ext = _ext()
    owner = _owner(ext)
    body = _load(load_parts_request, _json_body(ext))
    answer = ext.service.sign_parts(owner, upload_id, body["partNumbers"], body.get("networkType"))
    return _respond(dump_signed_parts(answer))


@bp.get("/multipart/<upload_id>")
def resume_multipart(upload_id: str) -> Response:
    ext = _ext()
    owner = _owner(ext)
    return _respond(dump_resume_view(ext.service.resume_multipart(owner, upload_id)))


@bp.post("/multipart/<upload_id>/complete")
def complete_multipart(upload_id: str) -> Response:
    ext = _ext()
    owner = _owner(ext)
    body = _load(load_multipart_complete, _json_body(ext, empty={}))
    answer = ext.service.complete_multipart(owner, upload_id, body.get("parts"))
    return _respond(dump_multipart_completed(answer))


@bp.delete("/multipart/<upload_id>")
def abort_multipart(upload_id: str) -> Response:
    ext = _ext()
    owner = _owner(ext)
    return _respond(dump_aborted(ext.service.abort_multipart(owner, upload_id)))


# -- admin: bucket CORS (logic in storage/cors.py, shared with `flask obitox cors`) ---

load_cors_setup = schemas.CorsSetupRequestSchema().load
dump_cors_setup = schemas.CorsSetupSchema().dump
dump_cors_verify = schemas.CorsVerifySchema().dump
#: More ``origin`` query parameters than this is not a verification, it is a flood.
MAX_VERIFY_ORIGINS = 100


def _admin(ext: ObitoXState) -> None:
    """401 without an identity; 403 unless the host's ``admin_loader`` answers ``True``
    (no loader, or any other answer, is a refusal: admin routes are closed by default)."""
    _owner(ext)
    loader = ext.hooks.admin_loader
    if loader is None or loader() is not True:
        raise ObitoXError(
            "FORBIDDEN", "Only administrators may use this route (see @obitox.admin_loader)."
        )


@bp.post("/cors/setup")
def cors_setup() -> Response:
    ext = _ext()
    _admin(ext)
    body = _load(load_cors_setup, _json_body(ext, empty={}))
    result = setup_cors(
        ext.storages.get(ext.service.default_storage),
        body.get("origins"),
        configured=ext.settings.cors_origins,
        dry_run=body.get("dryRun", False),
    )
    return _respond(dump_cors_setup(result.to_dict()))


@bp.get("/cors/verify")
def cors_verify() -> Response:
    ext = _ext()
    _admin(ext)
    origins = request.args.getlist("origin")
    if len(origins) > MAX_VERIFY_ORIGINS:
        raise ObitoXError(
            "INVALID_INPUT",
            f"At most {MAX_VERIFY_ORIGINS} origin parameters are checked at once.",
            details={"field": "origin", "limit": MAX_VERIFY_ORIGINS},
        )
    report = verify_cors(
        ext.storages.get(ext.service.default_storage),
        origins,
        configured=ext.settings.cors_origins,
    )
    return _respond(dump_cors_verify(report.to_dict()))


@bp.get("/openapi.json")
def openapi() -> Response:
    from .openapi import openapi_spec

    return _respond(openapi_spec(_ext().settings.url_prefix))


# -- errors --------------------------------------------------------------------------


@bp.errorhandler(ObitoXError)
def _handle_obitox_error(error: ObitoXError) -> Response:
    if isinstance(error, ServiceUnavailable):
        logger.warning("%s: %s", error.code, error.detail)
    return _error_response(error)


@bp.errorhandler(HTTPException)
def _handle_http_error(error: HTTPException) -> Response:
    status = error.code or 500
    code = _HTTP_CODES.get(status, "INVALID_INPUT" if status < 500 else "INTERNAL_ERROR")
    response = _error_response(ObitoXError(code, error.description or error.name, status=status))
    # The exception's own headers are part of the answer: Allow on a 405 (RFC 9110),
    # WWW-Authenticate on a 401, Retry-After on a 429 or 503. Only its HTML body goes.
    for name, value in error.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers.add(name, value)
    return response


@bp.errorhandler(Exception)
def _handle_unexpected(error: Exception) -> Response:
    logger.exception("Unexpected error in an ObitoX route")
    return _error_response(
        ObitoXError("INTERNAL_ERROR", "An unexpected error occurred; it has been logged.")
    )


def _routing_error_handler(prefix: str) -> Callable[[HTTPException], Response | HTTPException]:
    """JSON for 404/405 under our prefix (routing errors never reach blueprint
    handlers); everything else keeps Flask's default."""

    def handle(error: HTTPException) -> Response | HTTPException:
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return _handle_http_error(error)
        return error

    return handle


def register_blueprint(app: Flask, settings: Settings) -> None:
    # Importing it nests the Companion routes (<prefix>/s3) under ``bp``.
    from .companion import init_browser_routes

    app.register_blueprint(bp, url_prefix=settings.url_prefix)
    init_browser_routes(app, settings)
    handler = _routing_error_handler(settings.url_prefix)
    for status in (404, 405):
        # Only when the host has none: its own handler, registered earlier or later, wins.
        if status not in app.error_handler_spec[None]:
            app.register_error_handler(status, handler)
