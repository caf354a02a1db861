"""What the live-event tests share: apps on a Redis prefix of their own, a real
threaded HTTP server, and a reader of ``text/event-stream`` over a real socket."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
from flask import Flask, request
from werkzeug.serving import make_server

from flask_obitox import ObitoX
from flask_obitox.state import MemoryStateBackend, RedisStateBackend

BUCKET = "obitox-test"


def new_prefix() -> str:
    return f"obitox-test-events-{uuid.uuid4().hex[:12]}"


def delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """A host app whose callers name themselves in ``X-User``; state: Redis under
    ``EVENTS_TEST_PREFIX`` when ``EVENTS_TEST_REDIS_URL`` is set, else memory. With no
    ``config``, the one in the ``EVENTS_TEST_CONFIG`` environment variable (a worker)."""
    if config is None:
        config = json.loads(os.environ["EVENTS_TEST_CONFIG"])
    app = Flask("obitox_events_test")
    app.config.update(
        TESTING=True,
        OBITOX_BUCKET=BUCKET,
        OBITOX_REGION="us-east-1",
        OBITOX_AWS_ACCESS_KEY_ID="testing",
        OBITOX_AWS_SECRET_ACCESS_KEY="testing",
        OBITOX_RATE_LIMITS="",
    )
    app.config.update(config)
    redis_url = app.config.get("EVENTS_TEST_REDIS_URL")
    if redis_url:
        state: Any = RedisStateBackend.from_url(redis_url, prefix=app.config["EVENTS_TEST_PREFIX"])
        app.config.setdefault("OBITOX_RQ_REDIS_URL", redis_url)
    else:
        state = MemoryStateBackend()
    obitox = ObitoX(state=state)

    @obitox.identity_loader
    def current_owner() -> str | None:
        return request.headers.get("X-User")

    obitox.init_app(app)
    return app


@contextlib.contextmanager
def serving(app: Flask) -> Iterator[str]:
    """``app`` on a threaded werkzeug server on 127.0.0.1; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


class EventSource:
    """One ``GET /events`` over a real socket, read message by message."""

    def __init__(
        self,
        base_url: str,
        user: str,
        query: str = "",
        *,
        last_event_id: str | None = None,
        timeout: float = 20.0,
    ) -> None:
        where = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(where.hostname, where.port, timeout=timeout)
        headers = {"X-User": user, "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.connection.request("GET", f"/obitox/events{query}", headers=headers)
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.comments: list[str] = []

    def json(self) -> Any:
        return json.loads(self.response.read())

    def next(self, deadline: float | None = None) -> dict[str, Any] | None:
        """The next message (``{"id", "event", "data"}``, data parsed), skipping
        comments (kept in :attr:`comments`); ``None`` when the stream ended. Fails once
        ``deadline`` (``time.monotonic()``) passed: heartbeats keep the socket busy."""
        fields: dict[str, Any] = {}
        while True:
            assert deadline is None or time.monotonic() < deadline, "no message in time"
            line = self.response.readline()
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if text == "":
                if "data" in fields:
                    fields["data"] = json.loads(fields["data"])
                    return fields
                continue
            name, _, value = text.partition(":")
            if name == "":
                self.comments.append(value.strip())
            else:
                fields[name] = value[1:] if value.startswith(" ") else value

    def next_comment(self) -> str:
        """The next comment line's text (blank lines skipped); fails on anything else."""
        while True:
            line = self.response.readline()
            assert line, "the stream ended"
            if line.strip():
                text = line.decode().strip()
                assert text.startswith(":"), f"a message came instead: {text}"
                return text[1:].strip()

    def take(self, count: int, within: float = 30) -> list[dict[str, Any]]:
        found = []
        deadline = time.monotonic() + within
        for _ in range(count):
            message = self.next(deadline)
            assert message is not None, f"the stream ended after {found}"
            found.append(message)
        return found

    def wait_open(self) -> None:
        """Until the server's first comment: the stream is subscribed."""
        deadline = time.monotonic() + 20
        while "connected" not in self.comments:
            assert time.monotonic() < deadline
            line = self.response.readline()
            assert line, "the stream ended before it opened"
            text = line.decode().strip()
            if text.startswith(":"):
                self.comments.append(text[1:].strip())

    def close(self) -> None:
        self.connection.close()


class TcpProxy:
    """A TCP proxy on 127.0.0.1 to ``target``: :meth:`cut` drops every connection and
    refuses new ones (the server seems down), :meth:`restore` lets them through again.
    The server behind keeps its data: only the path to it goes."""

    def __init__(self, host: str, port: int) -> None:
        import socket

        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._up = True
        self._lock = threading.Lock()
        self._sockets: list[Any] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if not self._up:
                    client.close()
                    continue
                server = socket.create_connection(self.target)
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for each in (source, sink):
                with contextlib.suppress(OSError):
                    each.close()

    def cut(self) -> None:
        import socket

        with self._lock:
            self._up = False
            sockets, self._sockets = self._sockets, []
        for each in sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
                each.close()

    def restore(self) -> None:
        with self._lock:
            self._up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()
