"""Request plumbing every route module shares: who the caller is, the JSON body, the
JSON answer, and the JSON error shape ``{"error", "message", "details"}``.

The native routes (:mod:`.views`) and the Companion routes (:mod:`.companion`) are
adapters over one upload domain; this module is what they have in common, and the
only Flask request code they need.
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

from .appstate import ANONYMOUS_OWNER, ObitoXState, get_state
from .errors import ObitoXError, ServiceUnavailable

logger = logging.getLogger("flask_obitox")

_HTTP_CODES = {
    400: "INVALID_INPUT",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
}


def caller() -> tuple[ObitoXState, str]:
    """This app's state and the caller's owner id (401 without one)."""
    ext = get_state()
    return ext, owner_of(ext)


def owner_of(ext: ObitoXState) -> str:
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


def is_admin(ext: ObitoXState) -> bool:
    """Whether the host's ``admin_loader`` answers ``True`` for this request."""
    loader = ext.hooks.admin_loader
    return loader is not None and loader() is True


def require_admin(ext: ObitoXState) -> None:
    """401 without an identity; 403 unless the host's ``admin_loader`` answers ``True``
    (no loader, or any other answer, is a refusal: admin routes are closed by default)."""
    owner_of(ext)
    if not is_admin(ext):
        raise ObitoXError(
            "FORBIDDEN", "Only administrators may use this route (see @obitox.admin_loader)."
        )


def json_body(ext: ObitoXState, *, empty: Any = None, limit: int | None = None) -> Any:
    """The request's JSON, refusing other media types, oversize and malformed bodies.

    ``empty``: what an empty body means for a route whose body is optional (``None``:
    an empty body is malformed JSON). ``limit``: bytes allowed, when a route takes more
    than ``OBITOX_MAX_REQUEST_SIZE`` (storage events come in bulk).
    """
    if request.mimetype != "application/json":
        # Also what stops cross-site HTML forms: they cannot send application/json.
        raise ObitoXError(
            "UNSUPPORTED_MEDIA_TYPE",
            "Send the body as JSON with Content-Type: application/json.",
            details={"contentType": request.content_type},
        )
    limit = max(limit or 0, ext.settings.max_request_size)

    def too_large() -> ObitoXError:
        named = " (OBITOX_MAX_REQUEST_SIZE)" if limit == ext.settings.max_request_size else ""
        return ObitoXError(
            "PAYLOAD_TOO_LARGE",
            f"The request body exceeds {limit} bytes{named}.",
            details={"limit": limit},
        )

    if request.content_length is not None and request.content_length > limit:
        raise too_large()
    # get_data, not the raw stream: the host (a logging middleware, a before_request)
    # may have read the body already. The per-request limit bounds a chunked body too;
    # werkzeug cuts such a body at the limit rather than failing, hence limit + 1.
    request.max_content_length = limit + 1
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large() from None
    if len(raw) > limit:
        raise too_large()
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


def load(
    loader: Callable[[Any], dict[str, Any]], data: Any, *, subject: str = "The body"
) -> dict[str, Any]:
    """``data`` through a schema's ``loader``; 400 naming every field otherwise."""
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


def respond(body: Any, status: int = 200) -> Response:
    # orjson: ~7x faster than json.dumps on a 100-upload answer. Bodies are parsed with
    # the json module instead, because orjson turns integers past 64 bits into floats.
    try:
        data = orjson.dumps(body)
    except TypeError:
        # A client's own text echoed back (a batch error's filename) may hold a lone
        # surrogate, which is valid in JSON but not in UTF-8: json escapes it.
        data = json.dumps(body, separators=(",", ":")).encode()
    return current_app.response_class(data, status=status, mimetype="application/json")


# -- errors ----------------------------------------------------------------------------


def error_response(error: ObitoXError) -> Response:
    return respond(error.to_dict(), error.status)


def _handle_obitox_error(error: ObitoXError) -> Response:
    if isinstance(error, ServiceUnavailable):
        logger.warning("%s: %s", error.code, error.detail)
    return error_response(error)


def _handle_http_error(error: HTTPException) -> Response | Any:
    if error.response is not None:
        # Built for this error already: Flask-Limiter's 429 carries the JSON error and
        # Retry-After (see :mod:`.ratelimit`).
        return error.response
    status = error.code or 500
    code = _HTTP_CODES.get(status, "INVALID_INPUT" if status < 500 else "INTERNAL_ERROR")
    response = error_response(ObitoXError(code, error.description or error.name, status=status))
    # The exception's own headers are part of the answer: Allow on a 405 (RFC 9110),
    # WWW-Authenticate on a 401, Retry-After on a 429 or 503. Only its HTML body goes.
    for name, value in error.get_headers():
        if name.lower() not in ("content-type", "content-length"):
            response.headers.add(name, value)
    return response


def _handle_unexpected(error: Exception) -> Response:
    logger.exception("Unexpected error in an ObitoX route")
    return error_response(
        ObitoXError("INTERNAL_ERROR", "An unexpected error occurred; it has been logged.")
    )


def install_error_handlers(bp: Blueprint) -> None:
    """Every failure under ``bp`` (and the blueprints nested in it) answers the JSON
    error shape; nothing a client sends gets a 500 with a stack trace."""
    bp.register_error_handler(ObitoXError, _handle_obitox_error)
    bp.register_error_handler(HTTPException, _handle_http_error)
    bp.register_error_handler(Exception, _handle_unexpected)


def install_routing_errors(app: Flask, prefix: str) -> None:
    """JSON for 404/405 under ``prefix`` (routing errors never reach blueprint
    handlers); everything else keeps the host's or Flask's default. Only when the host
    has no handler of its own: its handler, registered earlier or later, wins."""

    def handle(error: HTTPException) -> Response | HTTPException:
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return _handle_http_error(error)
        return error

    for status in (404, 405):
        if status not in app.error_handler_spec[None]:
            app.register_error_handler(status, handle)
