"""Live events: ``GET /events`` read as a ``text/event-stream``, reconnecting on its own.

:class:`SSEDecoder` follows the event-stream format of the HTML standard
(§9.2.6, "interpreting an event stream"): lines end in CRLF, LF or CR; a line starting
with ``:`` is a comment (the server's heartbeat); ``field: value`` loses one space after
the colon; ``data`` lines join with ``\\n``; a blank line dispatches the event; an ``id``
holding NUL is ignored; ``retry`` sets the reconnection delay. It is fed bytes as they
arrive, in pieces of any size, so a line or a UTF-8 character split across two reads
is never misread.

:class:`EventStream` is what :meth:`ObitoXClient.events` returns: an iterator of the
caller's events that reconnects after a dropped connection with ``Last-Event-ID`` (the
server then sends every event missed within its retention, none twice), with
exponential backoff between failed attempts.
"""

from __future__ import annotations

import codecs
import contextlib
import inspect
import re
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

import orjson
import requests
import urllib3.exceptions

from .errors import ObitoXClientError

#: A line ends at CRLF, LF or CR (CRLF first: it is one ending, not two).
_LINE_END = re.compile(r"\r\n|\r|\n")
#: Statuses worth reconnecting after: the server is restarting, overloaded or behind a
#: gateway that lost it. Anything else (401, 404, 400...) will not pass by waiting.
RECONNECT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class Backoff(Protocol):
    """How long to wait before attempt ``failures + 1`` (:class:`RetryPolicy` is one)."""

    def delay(self, attempt: int) -> float: ...


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event of a ``text/event-stream``, before any JSON is read."""

    id: str
    event: str
    data: str


class SSEDecoder:
    """Bytes in, :class:`ServerSentEvent` out (see the module doc).

    :attr:`last_event_id` is the stream's last event ID buffer: it survives events that
    name no ``id``, as the standard says, and is what a reconnect sends. :attr:`retry`
    is the last valid ``retry`` field, in milliseconds, or ``None``.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._after_cr = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = last_event_id
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events that ``chunk`` completes (often none, sometimes several)."""
        text = self._text.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr:
            # The CR that ended the last chunk ended its line; an LF now is its pair.
            self._after_cr = False
            text = text.removeprefix("\n")
        buffer = self._buffer + text
        events: list[ServerSentEvent] = []
        start = 0
        # One pass over the text: slicing what is left after every line would copy a
        # replay of a thousand events a thousand times.
        for match in _LINE_END.finditer(buffer):
            line = buffer[start : match.start()]
            start = match.end()
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._after_cr = buffer.endswith("\r") and start == len(buffer)
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent(self.last_event_id, event or "message", "\n".join(data))


class ObitoXEvent(TypedDict):
    """One event of ``GET /events``: the stream position and the webhook-shaped body."""

    id: str
    type: str
    timestamp: str | None
    data: dict[str, Any]


def parse_event(message: ServerSentEvent) -> ObitoXEvent:
    """The ``{type, timestamp, data}`` body of ``message`` with its stream ``id``."""
    try:
        body = orjson.loads(message.data)
    except orjson.JSONDecodeError as error:
        raise ObitoXClientError(
            "BAD_RESPONSE", f"event {message.id!r} does not carry JSON: {error}"
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("data", {}), dict):
        raise ObitoXClientError(
            "BAD_RESPONSE", f"event {message.id!r} is not a {{type, timestamp, data}} object"
        )
    timestamp = body.get("timestamp")
    return ObitoXEvent(
        id=message.id,
        type=str(body.get("type") or message.event),
        timestamp=None if timestamp is None else str(timestamp),
        data=body.get("data") or {},
    )


class EventStream:
    """An endless iterator of :class:`ObitoXEvent`; see :meth:`ObitoXClient.events`.

    It stops only when closed (:meth:`close`, leaving a ``with`` block, or breaking out
    of a ``for`` loop over it and dropping it) or on an answer that waiting cannot
    change (401, 404...), which raises :class:`ObitoXClientError`.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        params: Mapping[str, str],
        *,
        last_event_id: str | None,
        read_timeout: float,
        backoff: Backoff,
        max_attempts: int | None,
    ) -> None:
        self._session = session
        self._url = url
        self._params = dict(params)
        self._read_timeout = read_timeout
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._response: requests.Response | None = None
        self._opened: requests.Response | None = None
        self._first_failure: ObitoXClientError | None = None
        self._closed = False
        #: The ID of the last event received: where a reconnect continues from.
        self.last_event_id = last_event_id or ""
        #: Connections made so far (the first one included).
        self.connections = 0
        self._iterator = self._events()

    def __iter__(self) -> EventStream:
        return self

    def open(self) -> EventStream:
        """Make the first connection now rather than at the first ``next()``: once it
        returns, every event that happens reaches this stream. A refusal (401, 404...)
        raises here; a failure worth retrying is retried by the iteration."""
        if self._opened is None and self.connections == 0:
            try:
                self._opened = self._connect()
            except ObitoXClientError as error:
                if error.status is not None and error.status not in RECONNECT_STATUSES:
                    raise
                self._first_failure = error
        return self

    def __next__(self) -> ObitoXEvent:
        return next(self._iterator)

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop: the open connection is closed and iteration ends, also when another
        thread is waiting in it for the next event."""
        self._closed = True
        response = self._response
        if inspect.getgeneratorstate(self._iterator) == inspect.GEN_RUNNING:
            # Another thread is reading: shutting the socket down wakes it (closing it
            # is not enough), and it closes the response itself. urllib3 < 2.3 cannot;
            # that thread then stops at the next heartbeat.
            if response is not None:
                with contextlib.suppress(AttributeError, ValueError, RuntimeError, OSError):
                    response.raw.shutdown()
            return
        self._iterator.close()
        for unread in (response, self._opened):
            if unread is not None:
                unread.close()

    def _events(self) -> Generator[ObitoXEvent]:
        failures = 0
        retry_ms: int | None = None
        if self._first_failure is not None:
            failures = 1
            self._wait(failures, retry_ms, self._first_failure)
        while not self._closed:
            try:
                response, self._opened = self._opened or self._connect(), None
            except ObitoXClientError as error:
                if error.status is not None and error.status not in RECONNECT_STATUSES:
                    raise
                failures += 1
                self._wait(failures, retry_ms, error)
                continue
            if self._closed:  # closed by another thread while connecting
                response.close()
                return
            decoder = SSEDecoder(self.last_event_id)
            received = False
            try:
                for chunk in _chunks(response):
                    for message in decoder.feed(chunk):
                        received = True
                        self.last_event_id = decoder.last_event_id
                        yield parse_event(message)
                    retry_ms = decoder.retry if decoder.retry is not None else retry_ms
            except (
                requests.RequestException,
                urllib3.exceptions.HTTPError,
                OSError,
            ) as error:
                dropped = ObitoXClientError(
                    "CONNECTION_ERROR", f"the event stream dropped: {error}"
                )
            except Exception:
                if self._closed:  # the socket was shut down under the read
                    return
                raise
            else:
                dropped = ObitoXClientError("CONNECTION_ERROR", "the server ended the stream")
            finally:
                response.close()
                self._response = None
            if self._closed:
                return
            # An ID seen without an event (a lone "id:" line) still moves the position.
            self.last_event_id = decoder.last_event_id
            # A connection that delivered events starts the count of failures over.
            failures = 0 if received else failures + 1
            self._wait(failures, retry_ms, dropped)

    def _connect(self) -> requests.Response:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        self.connections += 1
        try:
            response = self._session.get(
                self._url,
                params=self._params,
                headers=headers,
                stream=True,
                timeout=(10.0, self._read_timeout),
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ObitoXClientError(
                "CONNECTION_ERROR", f"GET {self._url} failed: {error}"
            ) from None
        if response.status_code >= 400:
            refused = ObitoXClientError.from_api_response(response)
            response.close()
            raise refused
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type != "text/event-stream":
            response.close()
            raise ObitoXClientError(
                "BAD_RESPONSE",
                f"GET {self._url} answered {media_type or 'no content type'}, "
                "not text/event-stream",
                status=response.status_code,
            )
        self._response = response
        return response

    def _wait(self, failures: int, retry_ms: int | None, error: ObitoXClientError) -> None:
        if self._max_attempts is not None and failures >= self._max_attempts:
            error.details["lastEventId"] = self.last_event_id
            raise error
        # The server's "retry:" is the least delay; backoff grows from there.
        floor = (retry_ms or 0) / 1000
        time.sleep(max(floor, self._backoff.delay(max(failures, 1))))


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: each read returns what the socket has, so an event is
    seen the moment its blank line lands rather than when a buffer fills."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 1.x: chunked streams still arrive chunk by chunk
        yield from response.iter_content(chunk_size=None)
        return
    while True:
        data: bytes = read1(65536)
        if not data:
            return
        yield data
