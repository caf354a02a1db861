"""Where a 100-file ``POST /uploads/batch`` spends its work, part by part.

Each part of the route runs alone over the same 100 files (``bench_batch``'s), memory
state, in the route's order; the whole request through Flask's test client comes last,
so what the parts leave out (Flask, the test client, the route's own loop) is the
difference. Prints each part's median time per batch and, with ``--instructions``, its
CPU instructions per batch and per file, counted by callgrind (:mod:`instructions`):
the figures ``docs/performance.rst`` gives for "where a batch's instructions go".

``--route params``: the same for one Companion ``GET /s3/params`` (Redis state, as
``bench_requests``; ``--memory`` for the memory backend), called through WSGI as a
server calls it, beside a Flask route that does nothing called the same way (the floor
every route pays; also in a Flask app without the extension: what the extension adds
to every route of its host) and the parts of the domain's work alone.

Usage: ``python benchmarks/bench_parts.py [--route batch|params] [--rounds N] [--instructions]``
"""

from __future__ import annotations

import argparse
import contextvars
import hashlib
import io
import json
import time
from collections.abc import Callable
from typing import Any

import bench_requests
from bench_batch import FILES, batch_body, make_app
from bench_state import add_state_options, bench_state
from flask import Flask
from instructions import (
    add_instruction_options,
    count_instructions,
    millions,
    run_counted_workloads,
    skipped_line,
)
from timing import median_seconds

from flask_obitox import MemoryStateBackend
from flask_obitox.appstate import get_state
from flask_obitox.domain.base import CheckedFile
from flask_obitox.domain.common import new_upload_ids
from flask_obitox.domain.messages import message_body
from flask_obitox.domain.render import render_upload
from flask_obitox.http import respond
from flask_obitox.validation import sanitize_filename
from flask_obitox.views import dump_batch, load_batch_entry, load_file_spec

OWNER = "bench-user"

#: Each part: its name in the table, and what it runs for the whole batch.
Part = tuple[str, Callable[[], Any]]


def outside(call: Callable[[], Any]) -> Callable[[], Any]:
    """``call`` run as a server runs a request: in a context of its own, without the
    request context the domain's parts run in (pushed once at set-up). A request of the
    same app would otherwise reuse that context's app context, and skip making and
    tearing down its own: ~30k instructions of every real request."""
    return lambda: contextvars.Context().run(call)


def parts() -> list[Part]:
    state = MemoryStateBackend()
    app = make_app(state)
    # The parts call the domain as the route does, inside a request of the app.
    app.test_request_context().push()
    service = get_state(app).service
    body = batch_body()
    raw = json.dumps(body).encode()
    storage = service.storage_for(OWNER)
    rules = service.rules(None)
    now = time.time()
    specs = [load_file_spec(entry) for entry in body["files"]]
    ids = new_upload_ids(FILES)
    planned = [
        service.plan(OWNER, spec, rules, "wifi", storage, upload_id, now)
        for spec, upload_id in zip(specs, ids, strict=True)
    ]
    records = [plan.record for plan in planned]
    checked = [service.checked_file(spec, rules) for spec in specs]
    events = [
        (OWNER, message_body("upload.signed", render_upload(record), now=now)) for record in records
    ]
    answer = service.sign_batch(OWNER, body["files"], load_batch_entry)
    client = app.test_client()
    # A signature's hashing alone, as the signer does it: the canonical request (of a
    # typical length) hashed, then HMAC-SHA256 from precomputed inner and outer states.
    canonical = b"x" * 470
    inner, outer = hashlib.sha256(b"i" * 64), hashlib.sha256(b"o" * 64)

    def hashing() -> None:
        for _ in range(FILES):
            mac = inner.copy()
            mac.update(hashlib.sha256(canonical).hexdigest().encode())
            final = outer.copy()
            final.update(mac.digest())
            final.hexdigest()

    def check_rules() -> None:
        for file, spec in zip(checked, specs, strict=True):
            rules.check(file.filename, file.content_type, spec["size"])

    def write() -> None:
        # Into a new backend each time: the same ids written twice would be overwrites.
        MemoryStateBackend().create_with_events(records, service.record_ttl, events)

    def request() -> None:
        response = client.post("/obitox/uploads/batch", data=raw, content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)

    return [
        ("parse the body (json)", lambda: json.loads(raw)),
        ("load each entry (compiled schema)", lambda: [load_batch_entry(e) for e in body["files"]]),
        ("make the upload ids", lambda: new_upload_ids(FILES)),
        (
            "validate and plan each file",
            lambda: [
                service.plan(OWNER, spec, rules, "wifi", storage, upload_id, now)
                for spec, upload_id in zip(specs, ids, strict=True)
            ],
        ),
        ("  of which the file checks", lambda: [service.checked_file(s, rules) for s in specs]),
        ("    the name alone", lambda: [sanitize_filename(s["filename"]) for s in specs]),
        ("    the rules alone", check_rules),
        ("  the expiry", lambda: [service.expiry(s["size"], "wifi") for s in specs]),
        (
            "  the record",
            lambda: [
                # with the optional fields plan passes
                service.new_record(
                    i,
                    OWNER,
                    storage,
                    "k",
                    f,
                    kind="single",
                    size=1,
                    now=now,
                    checksum_sha256=None,
                    validation=None,
                    group_id=None,
                    profile=None,
                )
                for f, i in zip(checked, ids, strict=True)
            ],
        ),
        (
            "sign the URLs and build the answers",
            lambda: service.sign_planned(storage, planned, now),
        ),
        ("  of which SHA-256 and HMAC alone", hashing),
        (
            "render and encode the events",
            lambda: [message_body("upload.signed", render_upload(r), now=now) for r in records],
        ),
        ("write the records and events", write),
        ("  of which the records' JSON", lambda: [record.to_json() for record in records]),
        ("dump and encode the answer", lambda: respond(dump_batch(answer))),
        ("the whole request (test client)", outside(request)),
    ]


def wsgi_get(app: Any, path: str, query: str) -> Callable[[], None]:
    """A GET of ``app`` called through WSGI, as a server calls it (no test client)."""
    base = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }

    def get() -> None:
        statuses: list[str] = []
        environ = {**base, "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO()}
        body = b"".join(app(environ, lambda status, headers, exc=None: statuses.append(status)))
        assert statuses[0].startswith("200"), (statuses, body)

    return get


def params_parts(state: Any) -> list[Part]:
    app = bench_requests.make_app(state)
    app.add_url_rule("/bench/noop", "noop", lambda: {"ok": True})
    app.test_request_context().push()  # the domain's parts run inside a request
    service = get_state(app).service
    path, _, query = bench_requests.PARAMS.partition("?")
    spec = {"filename": "cat.png", "contentType": "image/png", "metadata": {"album": "summer"}}
    storage = service.storage_for(OWNER)
    file = CheckedFile("cat.png", "image/png", {"album": "summer"})

    def record() -> Any:
        upload_id = new_upload_ids(1)[0]
        key = service.build_key(OWNER, file.filename, upload_id, file.metadata)
        return service.new_record(
            upload_id, OWNER, storage, key, file, kind="single", size=0, now=time.time()
        )

    def write() -> None:
        made = record()
        service.create_signed([made], made.created_at)

    client = app.test_client()
    # The same route in a Flask app without the extension: what ours adds to every
    # route of its host (its request hooks).
    bare = Flask("bench_bare")
    bare.add_url_rule("/bench/noop", "noop", lambda: {"ok": True})
    return [
        (
            "a route doing nothing, bare Flask (WSGI)",
            outside(wsgi_get(bare, "/bench/noop", query)),
        ),
        ("a Flask route doing nothing (WSGI)", outside(wsgi_get(app, "/bench/noop", query))),
        ("the whole request (WSGI)", outside(wsgi_get(app, path, query))),
        ("the domain alone (sign_post)", lambda: service.sign_post(OWNER, spec)),
        (
            "  of which the POST policy",
            lambda: storage.presign_post(
                "uploads/x/cat.png",
                content_type="image/png",
                metadata={"album": "summer"},
                min_size=0,
                max_size=5 * 1024**3,
                expires_in=3600,
            ),
        ),
        ("  a new record", record),
        ("  a new record, written with its event", write),
        ("the whole request (test client)", outside(lambda: client.get(bench_requests.PARAMS))),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--route", choices=("batch", "params"), default="batch")
    add_state_options(parser)
    add_instruction_options(parser)
    args = parser.parse_args()
    if args.route == "batch":
        report(
            args,
            parts(),
            f"POST /uploads/batch with {FILES} files, each part alone (memory state)",
            FILES,
        )
        return
    with bench_state(args) as (state, label):
        report(args, params_parts(state), f"GET /s3/params, each part alone (state: {label})", 1)


def report(args: argparse.Namespace, table: list[Part], title: str, files: int) -> None:
    """Time each part (and count its instructions); print the table, per file when a
    part handles ``files`` files."""
    names = [f"part{index}" for index in range(len(table))]
    factories = {name: (lambda fn=fn: fn) for name, (_, fn) in zip(names, table, strict=True)}
    if run_counted_workloads(args, factories):
        return
    times = [median_seconds(fn, args.rounds) for _, fn in table]
    counts = count_instructions(args, names) if args.instructions else None

    print(title)
    header = f"{'part':<40}{'median':>10}"
    if counts is not None:
        header += f"{'instructions':>14}" + (f"{'per file':>10}" if files > 1 else "")
    print(header)
    for (label, _), name, seconds in zip(table, names, times, strict=True):
        line = f"{label:<40}{seconds * 1e3:>8.3f}ms"
        if counts is not None:
            count = counts[name]
            line += f"{millions(count) if files > 1 else f'{count / 1e3:,.1f}k':>14}"
            if files > 1:
                line += f"{count / files / 1e3:>9.1f}k"
        print(line)
    if args.instructions and counts is None:
        print(skipped_line())


if __name__ == "__main__":
    main()
