"""The Python client and the ``obitox upload`` command against real servers.

The app runs over HTTP (werkzeug, in a thread) with real Redis state; storage is the
moto server behind a recording proxy (see ``client_support``), so these tests see
every PUT the client makes.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from client_support import EventLog, LiveServer, StorageProxy, record_resume_views
from conftest import BUCKET, make_app
from test_uploads import EXE, png_bytes

from flask_obitox import RedisStateBackend
from flask_obitox.client import (
    ObitoXClient,
    ObitoXClientError,
    Progress,
    RetryPolicy,
    UploadResult,
    resume_path_for,
)
from flask_obitox.client.cli import main, parse_size
from flask_obitox.client.files import Cancelled
from flask_obitox.client.resume import load

MiB = 1024 * 1024
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def proxy(moto_server: str, events: EventLog) -> Iterator[StorageProxy]:
    storage = StorageProxy(moto_server, events, bucket=BUCKET)
    with LiveServer(storage) as server:
        storage.url = server.url
        yield storage


@pytest.fixture
def app_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def server(
    s3_server: Any,
    proxy: StorageProxy,
    redis_backend: RedisStateBackend,
    events: EventLog,
    app_config: dict[str, Any],
) -> Iterator[str]:
    """The app over HTTP; yields the base URL of its routes."""
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL=proxy.url, **app_config)
    record_resume_views(app, events)
    with LiveServer(app) as live:
        yield live.url + "/obitox"


@pytest.fixture
def alice(server: str) -> Iterator[ObitoXClient]:
    with ObitoXClient(server, auth_headers={"X-User": "alice"}, retry=FAST_RETRY) as client:
        yield client


def stored(s3: Any, key: str) -> bytes:
    body: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def data_file(path: Path, size: int) -> Path:
    """``size`` bytes no sniffer takes for a known format (declared octet-stream)."""
    header = b"OBITOX-TEST-DATA\n"
    return write(path, header + os.urandom(size - len(header)))


class Recorder:
    def __init__(self) -> None:
        self.reports: list[Progress] = []

    def __call__(self, progress: Progress) -> None:
        self.reports.append(progress)


# -- single and batch ------------------------------------------------------------------


def test_upload_file(alice: ObitoXClient, s3_server: Any, tmp_path: Path, events: EventLog) -> None:
    content = png_bytes(extra=300_000)
    path = write(tmp_path / "photo.png", content)
    progress = Recorder()
    result = alice.upload_file(path, metadata={"album": "summer"}, on_progress=progress)
    assert isinstance(result, UploadResult)
    assert result.path == path
    assert result.size == len(content)
    assert result.answer["status"] == "completed"
    obj = s3_server.get_object(Bucket=BUCKET, Key=result.key)
    assert obj["Body"].read() == content
    assert obj["ContentType"] == "image/png"
    assert obj["Metadata"] == {"album": "summer"}
    assert progress.reports[-1] == Progress(len(content), len(content), 1, 1)
    assert [(p.key, p.status) for p in events.puts] == [(result.key, 200)]


def test_upload_files_one_batch_call_parallel_puts(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path, events: EventLog
) -> None:
    contents = [png_bytes(extra=i * 1000) for i in range(10)]
    paths = [write(tmp_path / f"img-{i}.png", c) for i, c in enumerate(contents)]
    disguised = write(tmp_path / "cat.png", EXE)
    missing = tmp_path / "missing.png"
    empty = write(tmp_path / "empty.txt", b"")
    ordered = [paths[0], disguised, *paths[1:5], missing, *paths[5:], empty]
    progress = Recorder()

    outcomes = alice.upload_files(ordered, concurrency=4, on_progress=progress)

    assert [o.path for o in outcomes] == ordered
    by_path = {o.path: o for o in outcomes}
    for path, content in zip(paths, contents, strict=True):
        result = by_path[path].result
        assert result is not None, by_path[path].error
        assert stored(s3_server, result.key) == content
    assert by_path[empty].result is not None
    assert by_path[empty].result.size == 0
    assert by_path[disguised].error is not None
    assert by_path[disguised].error.code == "CONTENT_MISMATCH"
    assert by_path[disguised].error.status == 422
    assert by_path[missing].error is not None
    assert by_path[missing].error.code == "FILE_NOT_FOUND"
    # One signing call for the whole batch, one complete per signed file.
    assert events.api_calls.count(("POST", "/obitox/uploads/batch")) == 1
    assert ("POST", "/obitox/uploads") not in events.api_calls
    completes = [c for c in events.api_calls if c[1].endswith("/complete")]
    assert len(completes) == 12
    assert len(events.puts) == 12
    total = sum(map(len, contents)) + len(EXE)
    assert progress.reports[-1] == Progress(total, total, 12, 12)


def test_upload_files_reports_validation_errors_per_file(
    alice: ObitoXClient, tmp_path: Path, app_config: dict[str, Any]
) -> None:
    good = write(tmp_path / "notes.txt", b"hello")
    script = write(tmp_path / "run.exe", b"MZ" + b"\0" * 64)
    outcomes = alice.upload_files([good, script])
    assert outcomes[0].ok
    assert outcomes[1].error is not None
    assert outcomes[1].error.code == "VALIDATION_FAILED"
    assert "exe" in outcomes[1].error.message.lower()


# -- multipart -------------------------------------------------------------------------


def test_resumable_upload_with_progress(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path, events: EventLog
) -> None:
    path = data_file(tmp_path / "big.bin", 12 * MiB + 123)
    progress = Recorder()
    state = tmp_path / "state" / "big.resume"
    result = alice.resumable_upload(
        path, part_size=5 * MiB, concurrency=3, on_progress=progress, resume_file=state
    )
    assert stored(s3_server, result.key) == path.read_bytes()
    assert result.size == path.stat().st_size
    assert not result.resumed
    assert not state.exists()
    assert sorted(p.part_number for p in events.puts_for(result.key)) == [1, 2, 3]
    sent = [p.bytes_sent for p in progress.reports]
    assert sent == sorted(sent), "progress only grows when nothing fails"
    assert progress.reports[0] == Progress(0, result.size, 0, 3)
    assert progress.reports[-1] == Progress(result.size, result.size, 3, 3)
    # The part body is streamed: progress arrives chunk by chunk, not once per part.
    assert len(progress.reports) > 10


def test_failed_part_is_retried_with_backoff(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path, events: EventLog, proxy: StorageProxy
) -> None:
    path = data_file(tmp_path / "big.bin", 11 * MiB)
    proxy.fail_puts(503, times=2, part_number=2)
    progress = Recorder()
    result = alice.resumable_upload(path, part_size=5 * MiB, on_progress=progress)
    assert stored(s3_server, result.key) == path.read_bytes()
    statuses = [p.status for p in events.puts_for(result.key) if p.part_number == 2]
    assert statuses == [503, 503, 200]
    # The failed attempts' bytes were taken back, so the count ends exact.
    assert progress.reports[-1].bytes_sent == result.size
    assert any(b.bytes_sent < a.bytes_sent for a, b in pairwise(progress.reports))


def test_a_retried_single_put_whose_first_attempt_landed_completes(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path, events: EventLog, proxy: StorageProxy
) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(extra=2048))
    # Storage wrote the object, but the answer was lost: the retry meets create-only.
    proxy.fail_puts(503, times=1, landed=True)
    result = alice.upload_file(path)
    assert [p.status for p in events.puts_for(result.key)] == [503, 412]
    assert stored(s3_server, result.key) == path.read_bytes()
    assert result.size == path.stat().st_size


def test_forbidden_part_is_re_signed_once(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path, events: EventLog, proxy: StorageProxy
) -> None:
    path = data_file(tmp_path / "big.bin", 11 * MiB)
    proxy.fail_puts(403, times=1, part_number=2)  # as storage answers an expired URL
    result = alice.resumable_upload(path, part_size=5 * MiB, concurrency=1)
    assert stored(s3_server, result.key) == path.read_bytes()
    signing = [c for c in events.api_calls if c[1].endswith("/parts")]
    assert len(signing) == 2  # the window, then part 2 again

    proxy.fail_puts(403, times=2, part_number=1)  # a 403 that re-signing does not cure
    with pytest.raises(ObitoXClientError) as caught:
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=1)
    assert (caught.value.code, caught.value.status) == ("STORAGE_ERROR", 403)
    assert caught.value.details["partNumber"] == 1


def test_part_that_keeps_failing_stops_the_upload_and_resume_sends_only_the_rest(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path, events: EventLog, proxy: StorageProxy
) -> None:
    path = data_file(tmp_path / "big.bin", 16 * MiB)
    proxy.fail_puts(400, times=1, part_number=3)  # not retryable: fails at once
    with pytest.raises(ObitoXClientError) as caught:
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=1)
    error = caught.value
    assert error.code == "STORAGE_ERROR"
    assert error.status == 400
    assert error.details["partNumber"] == 3
    assert "InjectedFault" in error.message
    token = error.details["uploadId"]

    view = alice.multipart_status(token)
    assert view.total_parts == 4
    assert view.remaining_parts == (3, 4)
    assert [p.part_number for p in view.uploaded_parts] == [1, 2]
    before = len(events.puts)

    progress = Recorder()
    result = alice.resume(token, path, on_progress=progress)
    assert result.resumed
    assert result.upload_id == token
    assert sorted(p.part_number for p in events.puts[before:]) == [3, 4]
    assert progress.reports[0].bytes_sent == 10 * MiB  # held parts count from the start
    assert stored(s3_server, result.key) == path.read_bytes()


def test_the_failure_that_stopped_the_upload_is_the_one_raised(
    alice: ObitoXClient, tmp_path: Path, proxy: StorageProxy
) -> None:
    path = data_file(tmp_path / "big.bin", 26 * MiB)
    proxy.fail_puts(400, part_number=1)
    with pytest.raises(ObitoXClientError) as caught:
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=3)
    # Parts in flight were cancelled; the error names the part that failed.
    failure = caught.value
    assert (failure.code, failure.details.get("partNumber")) == ("STORAGE_ERROR", 1), repr(failure)
    assert caught.value.details["uploadId"]


def test_a_part_cancelled_before_the_failure_is_heard_does_not_hide_it(
    alice: ObitoXClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind a flaky run: the failing part stops the others (``cancel``)
    before its own future completes, so a cancelled part can be heard of first."""
    path = data_file(tmp_path / "big.bin", 16 * MiB)

    def put(*args: Any, describe: dict[str, Any], **_: Any) -> str:
        cancel = args[4]
        if describe["partNumber"] == 1:
            cancel.set()
            time.sleep(0.3)  # only orders the events: part 2 is heard of first
            raise ObitoXClientError("STORAGE_ERROR", "refused", details=dict(describe))
        cancel.wait(10)
        raise Cancelled()

    monkeypatch.setattr(alice, "_put", put)
    with pytest.raises(ObitoXClientError) as caught:
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=2)
    failure = caught.value
    assert (failure.code, failure.details.get("partNumber")) == ("STORAGE_ERROR", 1), repr(failure)


def test_resume_file_continues_a_failed_upload(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path, events: EventLog, proxy: StorageProxy
) -> None:
    path = data_file(tmp_path / "big.bin", 16 * MiB)
    state = resume_path_for(path, tmp_path / "states")
    proxy.fail_puts(500, times=10, part_number=4)
    with pytest.raises(ObitoXClientError) as caught:
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=2, resume_file=state)
    assert caught.value.details["attempts"] == FAST_RETRY.attempts
    record = load(state)
    assert record is not None
    assert record.upload_id == caught.value.details["uploadId"]
    assert (state.stat().st_mode & 0o777) == 0o600
    held = {p.part_number for p in events.puts if p.status == 200}
    assert held == {1, 2, 3}
    proxy.clear_faults()
    before = len(events.puts)

    result = alice.resumable_upload(path, part_size=5 * MiB, resume_file=state)
    assert result.resumed
    assert result.upload_id == record.upload_id
    assert [p.part_number for p in events.puts[before:]] == [4]
    assert not state.exists()
    assert stored(s3_server, result.key) == path.read_bytes()


def test_changed_file_starts_a_new_upload_and_aborts_the_old(
    alice: ObitoXClient, s3_server: Any, tmp_path: Path, proxy: StorageProxy
) -> None:
    path = data_file(tmp_path / "big.bin", 11 * MiB)
    state = resume_path_for(path)
    assert state == tmp_path / "big.bin.obitox-resume"
    proxy.fail_puts(400, part_number=3)
    with pytest.raises(ObitoXClientError):
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=1, resume_file=state)
    old = load(state)
    assert old is not None

    data_file(path, 11 * MiB)  # rewritten: same size, new bytes and mtime
    os.utime(path, ns=(old.mtime_ns + 1_000_000_000, old.mtime_ns + 1_000_000_000))
    result = alice.resumable_upload(path, part_size=5 * MiB, resume_file=state)
    assert not result.resumed
    assert result.upload_id != old.upload_id
    assert stored(s3_server, result.key) == path.read_bytes()
    with pytest.raises(ObitoXClientError) as caught:
        alice.multipart_status(old.upload_id)
    assert caught.value.code == "UPLOAD_ABORTED"
    assert s3_server.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_abort(alice: ObitoXClient, s3_server: Any, tmp_path: Path, proxy: StorageProxy) -> None:
    path = data_file(tmp_path / "big.bin", 11 * MiB)
    proxy.fail_puts(400, part_number=2)
    with pytest.raises(ObitoXClientError) as caught:
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=1)
    token = caught.value.details["uploadId"]
    assert s3_server.list_multipart_uploads(Bucket=BUCKET).get("Uploads")

    answer = alice.abort(token)
    assert answer["status"] == "aborted"
    assert s3_server.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    with pytest.raises(ObitoXClientError) as after:
        alice.resume(token, path)
    assert (after.value.code, after.value.status) == ("UPLOAD_ABORTED", 409)


# -- server errors ---------------------------------------------------------------------


@pytest.mark.parametrize("app_config", [{"OBITOX_MAX_FILE_SIZE": 1000}])
def test_server_refusal_becomes_a_client_error(alice: ObitoXClient, tmp_path: Path) -> None:
    path = write(tmp_path / "notes.txt", b"x" * 5000)
    with pytest.raises(ObitoXClientError) as caught:
        alice.upload_file(path)
    error = caught.value
    assert (error.code, error.status) == ("FILE_TOO_LARGE", 413)
    assert "OBITOX_MAX_FILE_SIZE" in error.message
    assert str(error).startswith("FILE_TOO_LARGE: ")


def test_unauthenticated_and_other_owner(alice: ObitoXClient, server: str, tmp_path: Path) -> None:
    path = write(tmp_path / "notes.txt", b"hello")
    with ObitoXClient(server) as anonymous, pytest.raises(ObitoXClientError) as caught:
        anonymous.upload_file(path)
    assert (caught.value.code, caught.value.status) == ("UNAUTHENTICATED", 401)

    big = data_file(tmp_path / "big.bin", 6 * MiB)
    with ObitoXClient(server, auth_headers={"X-User": "alice"}) as owner:
        token = owner.resumable_upload(big, part_size=5 * MiB).upload_id
    with ObitoXClient(server, auth_headers={"X-User": "mallory"}) as mallory:
        for call in (lambda: mallory.abort(token), lambda: mallory.multipart_status(token)):
            with pytest.raises(ObitoXClientError) as refused:
                call()
            assert (refused.value.code, refused.value.status) == ("UPLOAD_NOT_FOUND", 404)


def test_part_size_below_the_minimum_is_refused(alice: ObitoXClient, tmp_path: Path) -> None:
    path = data_file(tmp_path / "big.bin", 11 * MiB)
    with pytest.raises(ObitoXClientError) as caught:
        alice.resumable_upload(path, part_size=1 * MiB)
    assert caught.value.status == 422
    assert "5242880" in caught.value.message or "5 MiB" in caught.value.message


def test_unreachable_server_is_a_connection_error(tmp_path: Path) -> None:
    path = write(tmp_path / "notes.txt", b"hello")
    retry = RetryPolicy(attempts=2, base_delay=0.01)
    with ObitoXClient("http://127.0.0.1:1/obitox", retry=retry) as client:
        with pytest.raises(ObitoXClientError) as caught:
            client.upload_file(path)
        assert caught.value.code == "CONNECTION_ERROR"
        assert caught.value.status is None
        with pytest.raises(ObitoXClientError) as status:
            client.multipart_status("abc")  # idempotent: retried, then the same error
        assert status.value.code == "CONNECTION_ERROR"


def test_non_obitox_answer_is_a_bad_response(alice: ObitoXClient, server: str) -> None:
    lost = ObitoXClient(server.removesuffix("/obitox") + "/elsewhere")
    with lost, pytest.raises(ObitoXClientError) as caught:
        lost.multipart_status("abc")
    assert caught.value.code == "BAD_RESPONSE"
    assert caught.value.status == 404


def test_base_url_without_a_path_gets_the_default_prefix() -> None:
    assert ObitoXClient("http://example.com").base_url == "http://example.com/obitox"
    assert ObitoXClient("http://example.com/api/up/").base_url == "http://example.com/api/up"
    with pytest.raises(ValueError, match="not an http"):
        ObitoXClient("example.com")


def test_retry_policy_backs_off_exponentially() -> None:
    policy = RetryPolicy(attempts=6, base_delay=1.0, max_delay=8.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered


# -- the command -----------------------------------------------------------------------


def test_cli_uploads_small_and_large_files(
    server: str, s3_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    small = [write(tmp_path / f"n{i}.txt", f"note {i}".encode()) for i in range(3)]
    big = data_file(tmp_path / "big.bin", 11 * MiB)
    code = main(
        [
            "upload",
            *map(str, small),
            str(big),
            "--server",
            server,
            "--header",
            "X-User: alice",
            "--part-size",
            "5MiB",
            "--multipart-threshold",
            "6M",
            "--concurrency",
            "2",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    for path, line in zip([*small, big], lines, strict=True):
        assert line.startswith(f"uploaded {path} -> {BUCKET}/")
        key = line.split(f" -> {BUCKET}/", 1)[1].split(" (", 1)[0]
        assert hashlib.sha256(stored(s3_server, key)).digest() == (
            hashlib.sha256(path.read_bytes()).digest()
        )
    assert not list(tmp_path.glob("*.obitox-resume"))


def test_cli_exit_code_and_message_per_failed_file(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path / "good.txt", b"fine")
    bad = write(tmp_path / "bad.png", b"not a png at all")
    missing = tmp_path / "missing.txt"
    code = main(
        ["upload", str(good), str(bad), str(missing), "--server", server, "-H", "X-User: alice"]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith(f"uploaded {good} -> ")
    assert f"obitox: failed {bad}: CONTENT_MISMATCH: " in err
    assert f"obitox: failed {missing}: FILE_NOT_FOUND: " in err
    assert "1 of 3 files uploaded" in err


def test_cli_headers_from_the_environment(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBITOX_SERVER", server)
    monkeypatch.setenv("OBITOX_HEADERS", "X-User: alice\n")
    path = write(tmp_path / "a.txt", b"a")
    assert main(["upload", str(path)]) == 0
    monkeypatch.delenv("OBITOX_HEADERS")
    assert main(["upload", str(path)]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_cli_usage_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OBITOX_SERVER", raising=False)
    assert main(["upload", "x.txt"]) == 2
    assert "--server is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["upload", "x.txt", "--server", "http://h", "--header", "no colon"])
    assert exited.value.code == 2
    with pytest.raises(SystemExit):
        main(["upload", "x.txt", "--server", "http://h", "--part-size", "lots"])


@pytest.mark.parametrize(
    ("text", "size"),
    [("123", 123), ("5M", 5 * MiB), ("5MiB", 5 * MiB), ("5MB", 5_000_000), ("1g", 1024**3)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_console_script_entry_point() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "obitox"]
    assert script.value == "flask_obitox.client.cli:main"
    assert script.load() is main


def test_cli_token_is_one_word(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OBITOX_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["upload", "x.txt", "--server", "http://h", "--token", "eyJh bGc"])
    assert exited.value.code == 2
    assert "argument --token: a token is one word" in capsys.readouterr().err
