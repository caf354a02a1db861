"""The client's event stream: the event-stream format, and reconnecting with
``Last-Event-ID``, against a real HTTP server that streams bytes and drops
connections (werkzeug in a thread, see ``client_support``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from client_support import LiveServer
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.wrappers import Request, Response

from flask_obitox.client import ObitoXClient, ObitoXClientError, RetryPolicy
from flask_obitox.client.events import ServerSentEvent, SSEDecoder, parse_event

FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def decode_all(data: bytes, pieces: list[int] | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    if pieces is None:
        return decoder.feed(data)
    events: list[ServerSentEvent] = []
    start = 0
    for end in [*sorted(pieces), len(data)]:
        events += decoder.feed(data[start:end])
        start = end
    return events


STREAM = (
    ": heartbeat\n"
    "\n"
    "id: 1-0\n"
    "event: upload.completed\n"
    'data: {"type": "upload.completed",\n'
    'data:  "data": {"uploadId": "u1", "filename": "caf\u00e9.png"}}\n'
    "\n"
    "data:first\r\n"
    "data\r\n"
    "data: third\r\n"
    "\r\n"
    "id: 2-0\r"
    "retry: 2500\r"
    "event: group.completed\r"
    "data: {}\r"
    "\r"
    "event: ignored-no-data\n"
    "\n"
    "id: bad\0id\n"
    "data: x\n"
    "\n"
    "data: incomplete at the end"
).encode()


def test_decoder_reads_the_event_stream_format() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(STREAM)
    assert events == [
        ServerSentEvent(
            "1-0",
            "upload.completed",
            '{"type": "upload.completed",\n "data": {"uploadId": "u1", "filename": "caf\u00e9.png"}}',
        ),
        # No id field: the last id carries on; no event field: "message".
        ServerSentEvent("1-0", "message", "first\n\nthird"),
        ServerSentEvent("2-0", "group.completed", "{}"),
        # An id with NUL is ignored.
        ServerSentEvent("2-0", "message", "x"),
    ]
    assert decoder.retry == 2500
    assert decoder.last_event_id == "2-0"
    # The event without its blank line is not dispatched until it arrives.
    assert decoder.feed(b"\n\n") == [ServerSentEvent("2-0", "message", "incomplete at the end")]


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_decoder_is_indifferent_to_how_the_bytes_are_split(pieces: list[int]) -> None:
    # Splits fall inside CRLF pairs and inside the two bytes of "é" too.
    assert decode_all(STREAM, pieces) == decode_all(STREAM)


def test_decoder_drops_a_leading_byte_order_mark() -> None:
    assert SSEDecoder().feed(b"\xef\xbb\xbfdata: a\n\n") == [ServerSentEvent("", "message", "a")]


def test_parse_event_gives_the_webhook_shaped_body_with_its_id() -> None:
    body = {"type": "upload.completed", "timestamp": "2026-12-04T10:00:00Z", "data": {"a": 1}}
    event = parse_event(ServerSentEvent("7-0", "upload.completed", json.dumps(body)))
    assert event == {
        "id": "7-0",
        "type": "upload.completed",
        "timestamp": "2026-12-04T10:00:00Z",
        "data": {"a": 1},
    }
    with pytest.raises(ObitoXClientError) as caught:
        parse_event(ServerSentEvent("8-0", "x", "not json"))
    assert caught.value.code == "BAD_RESPONSE"


# -- against a real HTTP server ---------------------------------------------------------


def message(number: int, kind: str = "upload.progress") -> bytes:
    body = {"type": kind, "timestamp": f"2026-12-04T10:00:0{number % 10}Z", "data": {"n": number}}
    return f"id: {number}\nevent: {kind}\ndata: {json.dumps(body)}\n\n".encode()


class Drop(Exception):
    """Raised inside a streaming body: werkzeug cuts the connection mid-response."""


class ScriptedStream:
    """A WSGI app serving ``/obitox/events``: each connection runs the next script,
    which yields the bytes to send (and may raise :class:`Drop`)."""

    def __init__(self, scripts: list[Callable[[Request], Iterator[bytes]]]) -> None:
        self.scripts = scripts
        self.requests: list[Request] = []
        self._lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        with self._lock:
            self.requests.append(request)
            index = len(self.requests) - 1
        if index >= len(self.scripts):
            response = Response(
                json.dumps({"error": "FORBIDDEN", "message": "no more scripts", "details": {}}),
                status=403,
                mimetype="application/json",
            )
        else:
            script = self.scripts[index]
            response = Response(script(request), mimetype="text/event-stream")
        return response(environ, start_response)


@pytest.fixture
def serve() -> Iterator[Callable[[ScriptedStream], ObitoXClient]]:
    servers: list[LiveServer] = []
    clients: list[ObitoXClient] = []

    def start(app: ScriptedStream) -> ObitoXClient:
        live = LiveServer(app).__enter__()
        servers.append(live)
        client = ObitoXClient(
            live.url + "/obitox", auth_headers={"X-User": "ann"}, retry=FAST_RETRY
        )
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()
    for live in servers:
        live.__exit__(None, None, None)


def test_events_arrive_as_they_are_sent(serve: Callable[[ScriptedStream], ObitoXClient]) -> None:
    received_first = threading.Event()

    def script(_request: Request) -> Iterator[bytes]:
        yield b": connected\n\n"
        yield message(1)
        # The second event waits until the client has the first: a client that
        # buffered the body would wait here forever (and the test time out).
        assert received_first.wait(30)
        yield message(2, "upload.completed")

    app = ScriptedStream([script])
    client = serve(app)
    with client.events(upload_id="u1", reconnect_attempts=1) as stream:
        first = next(stream)
        received_first.set()
        second = next(stream)
    assert first == {
        "id": "1",
        "type": "upload.progress",
        "timestamp": "2026-12-04T10:00:01Z",
        "data": {"n": 1},
    }
    assert (second["id"], second["type"]) == ("2", "upload.completed")
    request = app.requests[0]
    assert request.args.to_dict() == {"uploadId": "u1"}
    assert request.headers["Accept"] == "text/event-stream"
    assert request.headers["X-User"] == "ann"
    assert "Last-Event-ID" not in request.headers


def test_a_dropped_connection_reconnects_with_last_event_id(
    serve: Callable[[ScriptedStream], ObitoXClient],
) -> None:
    def drops_after_two(_request: Request) -> Iterator[bytes]:
        yield message(1)
        yield message(2)
        yield b"data: half an event that never ends"
        raise Drop

    def ends_after_one(request: Request) -> Iterator[bytes]:
        after = int(request.headers["Last-Event-ID"])
        yield message(after + 1)

    def the_rest(request: Request) -> Iterator[bytes]:
        after = int(request.headers["Last-Event-ID"])
        yield message(after + 1, "group.completed")
        yield message(after + 2)

    app = ScriptedStream([drops_after_two, ends_after_one, the_rest])
    client = serve(app)
    stream = client.events(group_id="g1", reconnect_attempts=2)
    got = [next(stream) for _ in range(5)]
    stream.close()
    assert [e["id"] for e in got] == ["1", "2", "3", "4", "5"]
    assert got[3]["type"] == "group.completed"
    assert [r.headers.get("Last-Event-ID") for r in app.requests] == [None, "2", "3"]
    assert all(r.args.to_dict() == {"groupId": "g1"} for r in app.requests)
    assert stream.connections == 3
    with pytest.raises(StopIteration):
        next(stream)


def test_reconnects_through_unavailable_answers_and_stops_at_a_refusal(
    serve: Callable[[ScriptedStream], ObitoXClient],
) -> None:
    def unavailable(_request: Request) -> Iterator[bytes]:
        raise Drop  # before the first byte: werkzeug answers 500

    def one(request: Request) -> Iterator[bytes]:
        yield message(1)

    app = ScriptedStream([unavailable, one])  # then 403: no more scripts
    client = serve(app)
    stream = client.events(last_event_id="0")
    assert next(stream)["id"] == "1"
    with pytest.raises(ObitoXClientError) as caught:
        next(stream)
    assert (caught.value.code, caught.value.status) == ("FORBIDDEN", 403)
    assert [r.headers.get("Last-Event-ID") for r in app.requests] == ["0", "0", "1"]


def test_reconnect_attempts_bound_the_failures_in_a_row() -> None:
    with ObitoXClient("http://127.0.0.1:1/obitox", retry=FAST_RETRY) as client:
        stream = client.events(reconnect_attempts=3, last_event_id="41")
        with pytest.raises(ObitoXClientError) as caught:
            next(stream)
    assert caught.value.code == "CONNECTION_ERROR"
    assert caught.value.details["lastEventId"] == "41"
    assert stream.connections == 3


def test_an_answer_that_is_not_an_event_stream_is_refused(
    serve: Callable[[ScriptedStream], ObitoXClient],
) -> None:
    class Html(ScriptedStream):
        def __call__(self, environ: Any, start_response: Any) -> Any:
            return Response("<html>login</html>", mimetype="text/html")(environ, start_response)

    client = serve(Html([]))
    with pytest.raises(ObitoXClientError) as caught:
        next(client.events())
    assert caught.value.code == "BAD_RESPONSE"
    assert "text/html" in caught.value.message


def test_close_from_another_thread_ends_a_waiting_iteration(
    serve: Callable[[ScriptedStream], ObitoXClient],
) -> None:
    release = threading.Event()

    def quiet(_request: Request) -> Iterator[bytes]:
        yield message(1)
        release.wait(30)
        yield b""

    client = serve(ScriptedStream([quiet]))
    stream = client.events()
    assert next(stream)["id"] == "1"
    outcome: list[Any] = []

    def consume() -> None:
        outcome.append(list(stream))

    reader = threading.Thread(target=consume)
    reader.start()
    stream.close()
    reader.join(30)
    release.set()
    assert outcome == [[]]


def test_a_cr_at_the_end_of_a_chunk_ends_its_line_at_once() -> None:
    decoder = SSEDecoder()
    # Dispatched now, not when the next chunk (a heartbeat 15 s later) arrives.
    assert decoder.feed(b"data: x\r\r") == [ServerSentEvent("", "message", "x")]
    # The LF that follows is the CR's pair, not a blank line of its own.
    assert decoder.feed(b"\ndata: y\n\n") == [ServerSentEvent("", "message", "y")]
