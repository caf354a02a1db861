"""Real servers for the Python client's tests: the app over HTTP, and storage behind a
recording proxy.

- :class:`LiveServer` runs a WSGI app (the Flask app from ``make_app``) on 127.0.0.1
  in a thread, so the client speaks real HTTP to it.
- :class:`StorageProxy` forwards every request to the moto server and records each
  PUT (key, part number, whether its whole body arrived) in an :class:`EventLog`. Made
  the app's ``OBITOX_ENDPOINT_URL``, it is the host of every signed URL (moto does not
  check signatures), so it sees every byte the client sends to storage. It can also
  answer chosen PUTs with an error (to test retries) and read bodies slowly (so that a
  killed client dies mid-part).
- :func:`record_resume_views` adds the app's resume views to the same log, in one
  order with the PUTs, so a test can tell whether a part was sent after the server said
  storage held it.
"""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import requests
from flask import Flask, Response, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response as WerkzeugResponse


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:
        pass


class LiveServer:
    """A WSGI app served over HTTP on 127.0.0.1 from a thread."""

    def __init__(self, app: Any, *, receive_buffer: int | None = None) -> None:
        self.server: BaseWSGIServer = make_server(
            "127.0.0.1", 0, app, threaded=True, request_handler=_QuietHandler
        )
        if receive_buffer is not None:
            # Connections accepted later inherit it. A small buffer keeps a client's
            # body from landing in the kernel all at once, so reading slowly really
            # slows the sender (loopback buffers otherwise take a whole part).
            self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        # A killed client leaves broken pipes behind; they are expected here.
        self.server.log = lambda *args, **kwargs: None  # type: ignore[method-assign]
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


@dataclass(frozen=True)
class PutEvent:
    seq: int
    run: int
    key: str
    part_number: int | None
    s3_upload_id: str | None
    complete: bool  # the whole body arrived and was forwarded to storage
    status: int


@dataclass(frozen=True)
class ViewEvent:
    seq: int
    run: int
    key: str
    uploaded: frozenset[int]


class EventLog:
    """PUTs and resume views in the one order they happened, numbered by ``seq``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self.run = 0  # set by a test that runs the client several times
        self.puts: list[PutEvent] = []
        self.views: list[ViewEvent] = []
        self.api_calls: list[tuple[str, str]] = []

    def next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def add_put(self, event: PutEvent) -> None:
        with self._lock:
            self.puts.append(event)

    def add_view(self, key: str, uploaded: Iterable[int]) -> None:
        with self._lock:
            self.views.append(ViewEvent(next(self._seq), self.run, key, frozenset(uploaded)))

    def put_count(self, run: int | None = None) -> int:
        """PUTs logged so far (those that began during ``run``, if given)."""
        with self._lock:
            return sum(1 for p in self.puts if run is None or p.run == run)

    def puts_for(self, key: str) -> list[PutEvent]:
        with self._lock:
            return [p for p in self.puts if p.key == key]


_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


@dataclass
class _Fault:
    status: int
    times: int
    part_number: int | None
    landed: bool = False


class StorageProxy:
    """A reverse proxy in front of moto that records every PUT (see the module doc)."""

    def __init__(self, upstream: str, events: EventLog, *, bucket: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.events = events
        self.bucket = bucket
        self.url = ""  # where the proxy itself is served, once it is
        self.read_delay = 0.0  # seconds slept per 256 KiB of a PUT body read
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.mount(
            "http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        )

    def fail_puts(
        self,
        status: int,
        *,
        times: int = 1,
        part_number: int | None = None,
        landed: bool = False,
    ) -> None:
        """Answer the next ``times`` PUTs (of ``part_number``, or any) with ``status``;
        with ``landed``, after storage stored them (an answer lost on the way back)."""
        with self._lock:
            self._faults.append(_Fault(status, times, part_number, landed))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _fault_for(self, part_number: int | None) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times and fault.part_number in (None, part_number):
                    fault.times -= 1
                    return fault
        return None

    def _read_body(self, req: Request) -> bytes | None:
        """The whole body, or ``None`` if the client went away before sending it."""
        length = req.content_length or 0
        if not self.read_delay:
            try:
                body = req.get_data()
            except ClientDisconnected:
                return None
            return body if len(body) == length else None
        chunks: list[bytes] = []
        received = 0
        while received < length:
            try:
                chunk = req.stream.read(min(256 * 1024, length - received))
            except ClientDisconnected:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            received += len(chunk)
            time.sleep(self.read_delay)
        return b"".join(chunks)

    def _key(self, path: str) -> str:
        prefix = f"/{self.bucket}/"
        return path[len(prefix) :] if path.startswith(prefix) else path

    def __call__(self, environ: Any, start_response: Any) -> Any:
        req = Request(environ)
        query = parse_qs(environ.get("QUERY_STRING", ""))
        is_put = req.method == "PUT"
        part = query.get("partNumber", [None])[0]
        part_number = int(part) if part is not None else None
        seq = self.events.next_seq() if is_put else -1
        run = self.events.run
        body = self._read_body(req) if req.method in ("PUT", "POST") else b""
        if body is None:
            status = 400
            answer: Any = WerkzeugResponse("client went away", status=400)
        elif is_put and (fault := self._fault_for(part_number)) is not None:
            if fault.landed:
                self._forward(req, body)
            status = fault.status
            answer = WerkzeugResponse(
                f"<Error><Code>InjectedFault</Code><Message>fault {status}</Message></Error>",
                status=status,
                mimetype="application/xml",
            )
        else:
            answer = self._forward(req, body)
            status = answer.status_code
        if is_put:
            self.events.add_put(
                PutEvent(
                    seq,
                    run,
                    self._key(req.path),
                    part_number,
                    query.get("uploadId", [None])[0],
                    body is not None,
                    status,
                )
            )
        return answer(environ, start_response)

    def _forward(self, req: Request, body: bytes) -> WerkzeugResponse:
        headers = {k: v for k, v in req.headers.items() if k.lower() not in _HOP_BY_HOP}
        url = self.upstream + req.full_path.rstrip("?")
        upstream = self._session.request(
            req.method,
            url,
            data=body,
            headers=headers,
            stream=True,
            allow_redirects=False,
            timeout=60,
        )
        content = upstream.raw.read(decode_content=False)
        answer = WerkzeugResponse(content, status=upstream.status_code)
        for name, value in upstream.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                answer.headers[name] = value
        # HEAD answers carry the object's length without its bytes.
        answer.headers["Content-Length"] = upstream.headers.get("Content-Length", str(len(content)))
        return answer


_RESUME_VIEW = re.compile(r"^/obitox/multipart/[^/]+$")


def record_resume_views(app: Flask, events: EventLog) -> None:
    """Log every resume view the app answers, with the parts it said storage held."""

    @app.after_request
    def _record(response: Response) -> Response:
        events.api_calls.append((request.method, request.path))
        if (
            request.method == "GET"
            and _RESUME_VIEW.match(request.path)
            and response.status_code == 200
        ):
            view = response.get_json()
            events.add_view(view["key"], (p["partNumber"] for p in view["uploadedParts"]))
        return response
