"""The native routes: thin handlers, schema in -> one domain operation -> schema out.

Every handler finds the caller (401 without one), parses its body with a schema
(415/400/413 for a body that is not acceptable JSON), calls one operation of the upload
domain (:mod:`flask_obitox.domain`) and dumps the answer with a schema. Every failure is
the JSON error shape ``{"error", "message", "details"}`` (:mod:`flask_obitox.http`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, render_template, request, url_for

from . import schemas
from .appstate import get_state
from .domain import EventFeed, InvalidEntry
from .errors import ObitoXError
from .fastschema import compile_dumper, compile_loader
from .http import (
    caller,
    install_error_handlers,
    is_admin,
    json_body,
    load,
    owner_of,
    require_admin,
    respond,
)
from .state import STATUSES
from .storage_events import MAX_BODY_BYTES, check_token, parse_notification

bp = Blueprint(
    "obitox",
    __name__,
    static_folder="static",
    static_url_path="/static",
    template_folder="templates",
)
install_error_handlers(bp)

# Compiled once: marshmallow's own load/dump is the fallback and the oracle.
load_file_spec = compile_loader(schemas.FileSpecSchema())
load_upload_request = compile_loader(schemas.UploadRequestSchema())
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
load_group_request = schemas.GroupRequestSchema().load
dump_group = compile_dumper(schemas.GroupViewSchema())
dump_group_detail = compile_dumper(schemas.GroupDetailSchema())
dump_group_page = compile_dumper(schemas.GroupPageSchema())
dump_upload_page = compile_dumper(schemas.UploadPageSchema())
load_upload_query = schemas.UploadListQuerySchema().load
load_group_query = schemas.GroupListQuerySchema().load
load_admin_upload_query = schemas.AdminUploadListQuerySchema().load
load_download_query = schemas.DownloadQuerySchema().load
dump_download = compile_dumper(schemas.DownloadLinkSchema())
load_progress = compile_loader(schemas.ProgressRequestSchema())
dump_progress = compile_dumper(schemas.ProgressAckSchema())
load_cors_setup = schemas.CorsSetupRequestSchema().load
dump_cors_setup = schemas.CorsSetupSchema().dump
dump_cors_verify = schemas.CorsVerifySchema().dump
#: More ``origin`` query parameters than this is not a verification, it is a flood.
MAX_VERIFY_ORIGINS = 100
#: The longest id a ``GET /events`` parameter or ``Last-Event-ID`` may be.
MAX_EVENT_PARAM = 200


def load_batch_entry(data: Any) -> dict[str, Any] | InvalidEntry:
    """One batch entry, or why it fails alone (with its filename, when it has one)."""
    try:
        return load(load_file_spec, data, subject="Each file")
    except ObitoXError as error:
        filename = data.get("filename") if isinstance(data, dict) else None
        return InvalidEntry(error, filename if isinstance(filename, str) else None)


# -- single uploads ----------------------------------------------------------------------


def query_args(loader: Any) -> dict[str, Any]:
    """The query string through a schema's ``loader`` (400 naming every parameter)."""
    return load(loader, request.args.to_dict(), subject="The query")


@bp.post("/uploads")
def create_upload() -> Response:
    ext, owner = caller()
    spec = load(load_upload_request, json_body(ext))
    return respond(dump_signed(ext.service.sign_upload(owner, spec)), 201)


@bp.post("/uploads/batch")
def create_batch() -> Response:
    ext, owner = caller()
    body = load(load_batch, json_body(ext))
    answer = ext.service.sign_batch(
        owner,
        body["files"],
        load_batch_entry,
        validation=body.get("validation"),
        network_type=body.get("networkType"),
        group_id=body.get("groupId"),
        group=body.get("group"),
        profile=body.get("profile"),
    )
    return respond(dump_batch(answer))


@bp.post("/uploads/<upload_id>/complete")
def complete_upload(upload_id: str) -> Response:
    ext, owner = caller()
    # No fields yet, but the body must still be JSON (empty or an object): a POST that
    # a cross-site HTML form could send must never change state.
    load(load_no_fields, json_body(ext, empty={}))
    return respond(dump_completed(ext.service.complete_upload(owner, upload_id)))


@bp.get("/uploads/<upload_id>")
def get_upload(upload_id: str) -> Response:
    ext, owner = caller()
    return respond(dump_status(ext.service.get_upload(owner, upload_id)))


@bp.get("/uploads")
def list_uploads() -> Response:
    ext, owner = caller()
    args = query_args(load_upload_query)
    answer = ext.service.list_uploads(
        owner,
        status=args.get("status"),
        kind=args.get("kind"),
        group_id=args.get("groupId"),
        profile=args.get("profile"),
        limit=args.get("limit", 50),
        cursor=args.get("cursor"),
    )
    return respond(dump_upload_page(answer))


@bp.delete("/uploads/<upload_id>")
def delete_upload(upload_id: str) -> Response:
    ext, owner = caller()
    return respond(dump_status(ext.service.delete_upload(owner, upload_id)))


@bp.get("/uploads/<upload_id>/download")
def download_upload(upload_id: str) -> Response:
    ext, owner = caller()
    args = query_args(load_download_query)
    link = ext.service.download_link(
        owner, upload_id, inline=args.get("inline", False), derived=args.get("derived")
    )
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        response = respond(dump_download(link))
    else:
        response = current_app.response_class(status=302, headers={"Location": link["url"]})
    # The URL is a bearer credential for the object: no cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    response.vary.add("Accept")
    return response


@bp.post("/uploads/<upload_id>/progress")
def report_progress(upload_id: str) -> Response:
    ext, owner = caller()
    body = load(load_progress, json_body(ext))
    parts = {part["partNumber"]: part["status"] for part in body.get("parts", ())}
    answer = ext.service.report_progress(owner, upload_id, body["uploadedBytes"], parts)
    return respond(dump_progress(answer), 202)


# -- groups ------------------------------------------------------------------------------


@bp.post("/groups")
def create_group() -> Response:
    ext, owner = caller()
    spec = load(load_group_request, json_body(ext))
    return respond(dump_group(ext.service.create_group(owner, spec)), 201)


@bp.get("/groups")
def list_groups() -> Response:
    ext, owner = caller()
    args = query_args(load_group_query)
    answer = ext.service.list_groups(
        owner, status=args.get("status"), limit=args.get("limit", 50), cursor=args.get("cursor")
    )
    return respond(dump_group_page(answer))


@bp.get("/groups/<group_id>")
def get_group(group_id: str) -> Response:
    ext, owner = caller()
    return respond(dump_group_detail(ext.service.get_group(owner, group_id)))


@bp.post("/groups/<group_id>/seal")
def seal_group(group_id: str) -> Response:
    ext, owner = caller()
    load(load_no_fields, json_body(ext, empty={}))
    return respond(dump_group(ext.service.seal_group(owner, group_id)))


@bp.post("/groups/<group_id>/cancel")
def cancel_group(group_id: str) -> Response:
    ext, owner = caller()
    load(load_no_fields, json_body(ext, empty={}))
    return respond(dump_group(ext.service.cancel_group(owner, group_id)))


@bp.delete("/groups/<group_id>")
def delete_group(group_id: str) -> Response:
    ext, owner = caller()
    return respond(dump_group(ext.service.delete_group(owner, group_id)))


# -- processing and storage events (DESIGN §14, §15) --------------------------------------


@bp.post("/uploads/<upload_id>/processing/<name>/retry")
def retry_processing(upload_id: str, name: str) -> Response:
    ext, owner = caller()
    load(load_no_fields, json_body(ext, empty={}))
    admin = ext.hooks.admin_loader
    # An admin may retry any owner's; anyone else only their own (another's is 404).
    as_owner = None if admin is not None and admin() is True else owner
    return respond(dump_status(ext.service.retry_processing(as_owner, upload_id, name)), 202)


@bp.post("/storage-events")
def storage_events() -> Response:
    ext = get_state()
    check_token(ext, request.headers.get("Authorization"))
    objects = parse_notification(json_body(ext, limit=MAX_BODY_BYTES))
    return respond(ext.service.complete_stored(objects).to_dict())


# -- multipart uploads -------------------------------------------------------------------


@bp.post("/multipart")
def create_multipart() -> Response:
    ext, owner = caller()
    spec = load(load_multipart, json_body(ext))
    return respond(dump_multipart_created(ext.service.initiate_multipart(owner, spec)), 201)


@bp.post("/multipart/<upload_id>/parts")
def sign_parts(upload_id: str) -> Response:
    ext, owner = caller()
    body = load(load_parts_request, json_body(ext))
    answer = ext.service.sign_parts(owner, upload_id, body["partNumbers"], body.get("networkType"))
    return respond(dump_signed_parts(answer))


@bp.get("/multipart/<upload_id>")
def resume_multipart(upload_id: str) -> Response:
    ext, owner = caller()
    return respond(dump_resume_view(ext.service.resume_multipart(owner, upload_id)))


@bp.post("/multipart/<upload_id>/complete")
def complete_multipart(upload_id: str) -> Response:
    ext, owner = caller()
    body = load(load_multipart_complete, json_body(ext, empty={}))
    answer = ext.service.complete_multipart(owner, upload_id, body.get("parts"))
    return respond(dump_multipart_completed(answer))


@bp.delete("/multipart/<upload_id>")
def abort_multipart(upload_id: str) -> Response:
    ext, owner = caller()
    return respond(dump_aborted(ext.service.abort_multipart(owner, upload_id)))


# -- live events --------------------------------------------------------------------------


def _event_param(name: str, value: str | None) -> str | None:
    if value is not None and (not value or len(value) > MAX_EVENT_PARAM):
        raise ObitoXError(
            "INVALID_INPUT",
            f"{name} must be 1 to {MAX_EVENT_PARAM} characters.",
            details={"field": name, "limit": MAX_EVENT_PARAM},
        )
    return value


def _server_sent(
    feed: EventFeed, opened: Callable[[], object], closed: Callable[[], object]
) -> Iterator[bytes]:
    """``feed`` as text/event-stream: one message per event, a comment per heartbeat."""
    opened()
    try:
        # Sent at once: the client (and any proxy) sees the stream is open.
        yield b"retry: 3000\n: connected\n\n"
        for events in feed:
            if not events:
                yield b": heartbeat\n\n"
                continue
            yield b"".join(
                b"id: %s\nevent: %s\ndata: %s\n\n"
                % (event_id.encode(), str(event["type"]).encode(), orjson.dumps(event))
                for event_id, event in events
            )
    finally:
        closed()


@bp.get("/events")
def events() -> Response:
    ext, owner = caller()
    last_event_id = _event_param(
        "Last-Event-ID",
        request.headers.get("Last-Event-ID") or request.args.get("lastEventId") or None,
    )
    feed = ext.service.open_event_feed(
        owner,
        last_event_id,
        group_id=_event_param("groupId", request.args.get("groupId")),
        upload_id=_event_param("uploadId", request.args.get("uploadId")),
    )
    gauge = ext.metrics.open_streams if ext.metrics is not None else None
    response = current_app.response_class(
        _server_sent(
            feed,
            gauge.inc if gauge is not None else lambda: None,
            gauge.dec if gauge is not None else lambda: None,
        ),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    # A client gone before the first chunk never starts the generator: close the feed
    # (and leave the reader) all the same.
    response.call_on_close(feed.close)
    return response


# -- the upload manager page (DESIGN §16) ---------------------------------------------


@bp.get("/manager")
def manager() -> Response:
    ext = get_state()
    if not ext.settings.manager:
        raise ObitoXError(
            "NOT_FOUND", "The upload manager is off (OBITOX_MANAGER=False).", details={}
        )
    owner = owner_of(ext)
    html = render_template(
        "obitox/manager.html",
        owner=owner,
        admin=is_admin(ext),
        statuses=sorted(STATUSES),
        endpoint=url_for("obitox.manager").removesuffix("/manager"),
    )
    response = current_app.response_class(html, mimetype="text/html")
    # The page runs only its own files: no inline script or style, nothing from elsewhere.
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' https: http: data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/admin/uploads")
def admin_uploads() -> Response:
    ext = get_state()
    require_admin(ext)
    args = query_args(load_admin_upload_query)
    # Listing spans one owner at a time: the owner index is per owner, and a listing
    # of every owner would have to scan every record (see docs/manager.rst).
    answer = ext.service.list_uploads(
        args["owner"],
        status=args.get("status"),
        kind=args.get("kind"),
        group_id=args.get("groupId"),
        limit=args.get("limit", 50),
        cursor=args.get("cursor"),
    )
    return respond(dump_upload_page(answer))


# -- admin: bucket CORS (the same operations as `flask obitox cors`) ----------------------


@bp.post("/cors/setup")
def cors_setup() -> Response:
    ext = get_state()
    require_admin(ext)
    body = load(load_cors_setup, json_body(ext, empty={}))
    result = ext.service.setup_cors(body.get("origins"), dry_run=body.get("dryRun", False))
    return respond(dump_cors_setup(result.to_dict()))


@bp.get("/cors/verify")
def cors_verify() -> Response:
    ext = get_state()
    require_admin(ext)
    origins = request.args.getlist("origin")
    if len(origins) > MAX_VERIFY_ORIGINS:
        raise ObitoXError(
            "INVALID_INPUT",
            f"At most {MAX_VERIFY_ORIGINS} origin parameters are checked at once.",
            details={"field": "origin", "limit": MAX_VERIFY_ORIGINS},
        )
    return respond(dump_cors_verify(ext.service.verify_cors(origins).to_dict()))


@bp.get("/openapi.json")
def openapi() -> Response:
    from .openapi import openapi_spec

    settings = get_state().settings
    return respond(openapi_spec(settings.url_prefix, tuple(settings.profiles)))
