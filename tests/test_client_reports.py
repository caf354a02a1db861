"""Progress reports: at most one a second per file, one after each part, and a report
that fails never fails the upload. The clock is the reporter's own, so no test waits."""

from __future__ import annotations

import threading
from typing import Any

from flask_obitox.client import ObitoXClientError
from flask_obitox.client.reports import ProgressReporter, ReportSender


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Server:
    def __init__(self) -> None:
        self.reports: list[dict[str, Any]] = []
        self.down = False

    def __call__(self, upload_id: str, body: dict[str, Any]) -> None:
        if self.down:
            raise ObitoXClientError("STATE_UNAVAILABLE", "Redis is down", status=503)
        self.reports.append({"uploadId": upload_id, **body})


def test_bytes_are_reported_at_most_once_an_interval() -> None:
    clock, server = Clock(), Server()
    reporter = ProgressReporter(server, "u1", 10_000, clock=clock)
    for _ in range(5):
        reporter.add(100)  # all within the first second: nothing sent
    assert server.reports == []
    clock.now += 1.0
    reporter.add(100)
    reporter.add(100)
    clock.now += 0.5
    reporter.add(100)
    assert server.reports == [{"uploadId": "u1", "uploadedBytes": 600}]
    clock.now += 0.5
    reporter.add(1)
    assert server.reports[-1] == {"uploadId": "u1", "uploadedBytes": 801}
    assert reporter.sent == 2


def test_parts_are_reported_when_they_settle_with_their_etag() -> None:
    clock, server = Clock(), Server()
    reporter = ProgressReporter(server, "m1", 20, uploaded_bytes=5, clock=clock)
    reporter.part(2, "uploading")
    reporter.part(3, "uploading")
    assert server.reports == []
    reporter.add(5)
    reporter.part(2, "uploaded", '"etag-2"')
    reporter.part(3, "failed")
    assert server.reports == [
        {
            "uploadId": "m1",
            "uploadedBytes": 10,
            "parts": [
                {"partNumber": 2, "status": "uploaded", "etag": '"etag-2"'},
                {"partNumber": 3, "status": "uploading"},
            ],
        },
        {"uploadId": "m1", "uploadedBytes": 10, "parts": [{"partNumber": 3, "status": "failed"}]},
    ]


def test_a_failed_report_is_forgotten_but_its_parts_ride_along_with_the_next() -> None:
    clock, server = Clock(), Server()
    reporter = ProgressReporter(server, "m1", 100, clock=clock)
    server.down = True
    reporter.add(10)
    reporter.part(1, "uploaded", "e1")  # raises nothing
    assert (reporter.sent, reporter.failed) == (0, 1)
    server.down = False
    reporter.part(2, "uploaded", "e2")
    assert server.reports == [
        {
            "uploadId": "m1",
            "uploadedBytes": 10,
            "parts": [
                {"partNumber": 1, "status": "uploaded", "etag": "e1"},
                {"partNumber": 2, "status": "uploaded", "etag": "e2"},
            ],
        }
    ]


def test_the_count_never_goes_down_nor_past_the_size() -> None:
    clock, server = Clock(), Server()
    reporter = ProgressReporter(server, "u1", 1000, clock=clock)
    clock.now += 1
    reporter.add(800)
    clock.now += 1
    reporter.add(-500)  # a retry took back a failed attempt's bytes
    reporter.add(0)
    clock.now += 1
    reporter.add(5000)
    assert [r["uploadedBytes"] for r in server.reports] == [800, 1000]


def test_reports_leave_from_the_sender_thread_never_blocking_the_upload() -> None:
    clock = Clock()
    arrived: list[dict[str, Any]] = []
    release = threading.Event()
    threads: set[str] = set()

    def slow(upload_id: str, body: dict[str, Any]) -> None:
        threads.add(threading.current_thread().name)
        assert release.wait(30)
        arrived.append(body)

    sender = ReportSender()
    reporter = ProgressReporter(slow, "m1", 100, clock=clock, sender=sender)
    reporter.add(10)
    reporter.part(1, "uploaded", "e1")  # returns while the server sits on it
    reporter.add(10)
    reporter.part(2, "uploaded", "e2")
    assert arrived == []
    release.set()
    assert sender.drain()
    assert threads == {"obitox-reports"}
    # The first report was on its way; the news after it went together in one more.
    parts = [[p["partNumber"] for p in body.get("parts", [])] for body in arrived]
    assert parts in ([[1], [2]], [[1, 2]])
    assert arrived[-1]["uploadedBytes"] == 20

    reporter.close()
    reporter.part(3, "uploaded", "e3")
    assert sender.drain()
    assert len(arrived) == len(parts)  # nothing after close
    sender.close()
