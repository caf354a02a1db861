"""The Python client and the ``obitox`` command managing uploads over time: groups,
listing, deletion, download, progress reports and live events, against the real app
over HTTP with real Redis state and moto's server as storage (see ``client_support``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from botocore.exceptions import ClientError
from client_support import EventLog, LiveServer, StorageProxy, record_resume_views
from conftest import BUCKET, make_app

from flask_obitox import RedisStateBackend
from flask_obitox.client import ObitoXClient, ObitoXClientError, ObitoXEvent, RetryPolicy
from flask_obitox.client.cli import main

MiB = 1024 * 1024
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def redis_backend(redis_url: str) -> Iterator[RedisStateBackend]:
    """conftest's, under this file's own key prefix (``obitox-test-pyclient-*``)."""
    prefix = f"obitox-test-pyclient-{uuid.uuid4().hex[:12]}"
    backend = RedisStateBackend.from_url(redis_url, prefix=prefix)
    yield backend
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def log() -> EventLog:
    return EventLog()


@pytest.fixture
def proxy(moto_server: str, log: EventLog) -> Iterator[StorageProxy]:
    storage = StorageProxy(moto_server, log, bucket=BUCKET)
    with LiveServer(storage) as server:
        storage.url = server.url
        yield storage


@pytest.fixture
def server(
    s3_server: Any, proxy: StorageProxy, redis_backend: RedisStateBackend, log: EventLog
) -> Iterator[str]:
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL=proxy.url)
    record_resume_views(app, log)
    with LiveServer(app) as live:
        yield live.url + "/obitox"


@pytest.fixture
def alice(server: str) -> Iterator[ObitoXClient]:
    with ObitoXClient(server, auth_headers={"X-User": "alice"}, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
def mallory(server: str) -> Iterator[ObitoXClient]:
    with ObitoXClient(server, auth_headers={"X-User": "mallory"}, retry=FAST_RETRY) as client:
        yield client


def text_files(directory: Path, count: int, prefix: str = "note") -> list[Path]:
    paths = []
    for i in range(count):
        path = directory / f"{prefix}-{i}.txt"
        path.write_bytes(f"{prefix} number {i}\n".encode() * (i + 1))
        paths.append(path)
    return paths


def data_file(path: Path, size: int) -> Path:
    header = b"OBITOX-TEST-DATA\n"
    path.write_bytes(header + uuid.uuid4().bytes * ((size - len(header)) // 16 + 1))
    with path.open("r+b") as file:
        file.truncate(size)
    return path


def cli(*args: str, server: str, user: str = "alice") -> list[str]:
    """The command line; an id goes after ``--`` (or as ``--group=ID``): ids may begin
    with ``-``."""
    return [*args, "--server", server, "-H", f"X-User: {user}"]


# -- groups ------------------------------------------------------------------------------


def test_upload_files_as_a_group_completes_it(
    alice: ObitoXClient, mallory: ObitoXClient, tmp_path: Path, log: EventLog
) -> None:
    paths = text_files(tmp_path, 3)
    outcomes = alice.upload_files(
        paths, group={"name": "album", "description": "summer", "metadata": {"trip": "x"}}
    )
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert outcomes.group_id
    # The batch's own "group" field made the group: no separate create or seal call.
    assert ("POST", "/obitox/groups") not in log.api_calls
    view = alice.get_group(outcomes.group_id)
    assert view["status"] == "completed"
    assert view["sealed"] is True
    assert (view["name"], view["description"], view["metadata"]) == (
        "album",
        "summer",
        {"trip": "x"},
    )
    assert (view["totalFiles"], view["completedFiles"], view["failedFiles"]) == (3, 3, 0)
    assert [u["filename"] for u in view["uploads"]] == [p.name for p in paths]
    assert [g["groupId"] for g in alice.list_groups()] == [outcomes.group_id]
    with pytest.raises(ObitoXClientError) as caught:
        mallory.get_group(outcomes.group_id)
    assert (caught.value.code, caught.value.status) == ("GROUP_NOT_FOUND", 404)


def test_a_group_larger_than_a_batch_is_created_first_and_sealed_after(
    server: str, tmp_path: Path, log: EventLog
) -> None:
    paths = text_files(tmp_path, 5)
    with ObitoXClient(server, auth_headers={"X-User": "alice"}, batch_size=2) as client:
        outcomes = client.upload_files(paths, group="many")
        assert all(o.ok for o in outcomes)
        view = client.get_group(str(outcomes.group_id))
    assert (view["status"], view["totalFiles"], view["completedFiles"]) == ("completed", 5, 5)
    assert log.api_calls.count(("POST", "/obitox/uploads/batch")) == 3
    assert ("POST", "/obitox/groups") in log.api_calls
    assert ("POST", f"/obitox/groups/{outcomes.group_id}/seal") in log.api_calls


def test_a_group_by_hand_mixes_single_and_multipart_uploads(
    alice: ObitoXClient, tmp_path: Path, s3_server: Any
) -> None:
    group = alice.create_group("release", metadata={"build": "7"})
    gid = group["groupId"]
    assert (group["status"], group["sealed"]) == ("pending", False)
    small = alice.upload_files(text_files(tmp_path, 2), group_id=gid)
    assert small.group_id == gid
    big = alice.resumable_upload(data_file(tmp_path / "big.bin", 6 * MiB), group_id=gid)
    assert alice.get_group(gid)["status"] == "in_progress"  # not sealed: more may come
    sealed = alice.seal_group(gid)
    assert sealed["sealed"] is True
    assert alice.get_group(gid)["status"] == "completed"
    with pytest.raises(ObitoXClientError) as closed:
        alice.upload_file(tmp_path / "note-0.txt", group_id=gid)
    assert (closed.value.code, closed.value.status) == ("GROUP_CLOSED", 409)

    deleted = alice.delete_group(gid)
    assert deleted["status"] == "deleted"
    with pytest.raises(ClientError):
        s3_server.head_object(Bucket=BUCKET, Key=big.key)


def test_cancel_group_aborts_the_open_members(alice: ObitoXClient) -> None:
    gid = alice.create_group("to cancel")["groupId"]
    assert alice.cancel_group(gid)["status"] == "cancelled"
    assert alice.cancel_group(gid)["status"] == "cancelled"  # idempotent
    assert [g["groupId"] for g in alice.list_groups(status="cancelled")] == [gid]


# -- listing, deletion, download --------------------------------------------------------


def test_list_uploads_newest_first_across_pages(
    alice: ObitoXClient, mallory: ObitoXClient, tmp_path: Path, log: EventLog
) -> None:
    paths = text_files(tmp_path, 5)
    ids = [alice.upload_file(path).upload_id for path in paths]
    mallory.upload_file(paths[0])
    before = log.api_calls.count(("GET", "/obitox/uploads"))

    listed = list(alice.list_uploads(page_size=2))
    assert [u["uploadId"] for u in listed] == ids[::-1]
    assert log.api_calls.count(("GET", "/obitox/uploads")) - before == 3
    assert [u["uploadId"] for u in alice.list_uploads(limit=3, page_size=2)] == ids[:1:-1]
    assert list(alice.list_uploads(kind="multipart")) == []
    assert len(list(alice.list_uploads(status="completed", kind="single"))) == 5


def test_delete_removes_the_object_and_keeps_the_view(
    alice: ObitoXClient, mallory: ObitoXClient, tmp_path: Path, s3_server: Any
) -> None:
    (path,) = text_files(tmp_path, 1)
    result = alice.upload_file(path)
    with pytest.raises(ObitoXClientError) as refused:
        mallory.delete(result.upload_id)
    assert (refused.value.code, refused.value.status) == ("UPLOAD_NOT_FOUND", 404)
    assert s3_server.head_object(Bucket=BUCKET, Key=result.key)

    assert alice.delete(result.upload_id)["status"] == "deleted"
    with pytest.raises(ClientError):
        s3_server.head_object(Bucket=BUCKET, Key=result.key)
    assert alice.delete(result.upload_id)["status"] == "deleted"  # idempotent
    assert alice.get_upload(result.upload_id)["status"] == "deleted"
    assert [u["status"] for u in alice.list_uploads()] == ["deleted"]


def test_download_writes_identical_bytes(alice: ObitoXClient, tmp_path: Path) -> None:
    source = data_file(tmp_path / "video.bin", 3 * MiB + 17)
    result = alice.upload_file(source)
    reports: list[Any] = []
    out = tmp_path / "out"
    out.mkdir()

    written = alice.download(result.upload_id, out, on_progress=reports.append)
    assert written == out / "video.bin"
    assert written.read_bytes() == source.read_bytes()
    assert reports[-1].bytes_sent == reports[-1].total_bytes == source.stat().st_size
    assert (reports[-1].parts_done, reports[-1].total_parts) == (1, 1)

    named = alice.download(result.upload_id, tmp_path / "copy" / "renamed.bin")
    assert named.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["video.bin"]  # no temporary left
    answer = alice.download_url(result.upload_id)
    assert answer["url"].startswith("http")
    assert answer["expiresAt"]


def test_download_of_an_upload_not_completed_writes_nothing(
    alice: ObitoXClient, tmp_path: Path, proxy: StorageProxy
) -> None:
    path = data_file(tmp_path / "big.bin", 6 * MiB)
    proxy.fail_puts(400, part_number=2)
    with pytest.raises(ObitoXClientError) as failed:
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=1)
    token = failed.value.details["uploadId"]
    target = tmp_path / "dest"
    target.mkdir()
    with pytest.raises(ObitoXClientError) as caught:
        alice.download(token, target / "big.bin")
    assert caught.value.status == 409
    assert list(target.iterdir()) == []


# -- progress reports ------------------------------------------------------------------


def test_progress_reports_reach_the_server(
    alice: ObitoXClient, tmp_path: Path, proxy: StorageProxy, log: EventLog
) -> None:
    path = data_file(tmp_path / "big.bin", 15 * MiB)
    proxy.fail_puts(400, part_number=3)  # parts 1 and 2 land, 3 fails for good
    with pytest.raises(ObitoXClientError) as failed:
        alice.resumable_upload(path, part_size=5 * MiB, concurrency=1)
    token = failed.value.details["uploadId"]
    reports = [c for c in log.api_calls if c == ("POST", f"/obitox/uploads/{token}/progress")]
    assert len(reports) >= 3  # one per settled part at least

    view = alice.get_upload(token)
    assert 10 * MiB <= view["uploadedBytes"] <= 15 * MiB
    parts = {p["partNumber"]: p["status"] for p in alice.multipart_status(token).parts}
    assert parts == {1: "uploaded", 2: "uploaded", 3: "failed"}


def test_a_failed_report_never_fails_the_upload(
    s3_server: Any, proxy: StorageProxy, redis_backend: RedisStateBackend, tmp_path: Path
) -> None:
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL=proxy.url)
    inner = app.wsgi_app
    refused: list[str] = []

    def overloaded_reports(environ: Any, start_response: Any) -> Any:
        # A server too busy for reports (a real 503 over HTTP), fine for the rest.
        if environ["PATH_INFO"].endswith("/progress"):
            refused.append(environ["PATH_INFO"])
            body = b'{"error": "STATE_UNAVAILABLE", "message": "busy", "details": {}}'
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [body]
        return inner(environ, start_response)

    app.wsgi_app = overloaded_reports  # type: ignore[method-assign]
    path = data_file(tmp_path / "big.bin", 11 * MiB)
    with (
        LiveServer(app) as live,
        ObitoXClient(live.url + "/obitox", auth_headers={"X-User": "alice"}) as client,
    ):
        result = client.resumable_upload(path, part_size=5 * MiB)
        assert client.report_progress  # a 503 is no reason to stop reporting
    # Reports leave from a background thread and a newer one replaces one still waiting,
    # so how many reach the server depends on timing: at least one did, and was refused.
    assert refused
    assert s3_server.get_object(Bucket=BUCKET, Key=result.key)["Body"].read() == (path.read_bytes())


# -- live events -----------------------------------------------------------------------


def until(stream: Iterator[ObitoXEvent], kind: str) -> list[ObitoXEvent]:
    seen: list[ObitoXEvent] = []
    for event in stream:
        seen.append(event)
        if event["type"] == kind:
            return seen
    raise AssertionError(f"the stream ended before {kind}: {seen}")


def test_events_receive_upload_completed_for_an_upload_made_meanwhile(
    alice: ObitoXClient, mallory: ObitoXClient, tmp_path: Path
) -> None:
    first, second = text_files(tmp_path, 2)
    theirs = mallory.events(reconnect_attempts=1)
    with alice.events(reconnect_attempts=1) as stream:  # open once events() returns
        result = alice.upload_file(first)
        # No processor is registered: upload.ready follows upload.completed at once.
        seen = until(stream, "upload.ready")
    assert [e["type"] for e in seen] == ["upload.signed", "upload.completed", "upload.ready"]
    assert {e["data"]["uploadId"] for e in seen} == {result.upload_id}
    view = alice.get_upload(result.upload_id)
    for name in ("uploadId", "status", "filename", "size", "key"):
        assert seen[1]["data"][name] == view[name]
    position = stream.last_event_id
    assert position == seen[-1]["id"]

    # Missed while disconnected, then replayed from Last-Event-ID: once, in order.
    later = alice.upload_file(second)
    with alice.events(last_event_id=position, reconnect_attempts=1) as again:
        replayed = until(again, "upload.ready")
    assert [e["type"] for e in replayed] == ["upload.signed", "upload.completed", "upload.ready"]
    assert {e["data"]["uploadId"] for e in replayed} == {later.upload_id}

    # Another owner's stream saw none of it.
    mallory.upload_file(first)
    assert {e["data"]["uploadId"] for e in until(theirs, "upload.completed")} != {result.upload_id}
    theirs.close()


def test_cli_events_prints_events_until_ctrl_c(
    server: str, alice: ObitoXClient, tmp_path: Path
) -> None:
    (path,) = text_files(tmp_path, 1)
    with alice.events(reconnect_attempts=1) as stream:
        result = alice.upload_file(path)
        signed = until(stream, "upload.signed")[-1]
    command = [sys.executable, "-m", "flask_obitox.client", "events", "--json"]
    command += [f"--last-event-id={signed['id']}", f"--upload={result.upload_id}"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    with subprocess.Popen(
        cli(*command, server=server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as process:
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        assert (line["type"], line["data"]["uploadId"]) == ("upload.completed", result.upload_id)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 130


# -- the command -------------------------------------------------------------------------


def test_cli_upload_group_ls_get_rm(
    server: str, tmp_path: Path, s3_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = text_files(tmp_path, 3)
    assert main(cli("upload", *map(str, paths), "--group", "cli album", server=server)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("group ")
    assert out[-1].endswith(" (cli album)")
    group_id = out[-1].split()[1]
    ids = [line.split("upload ", 1)[1].rstrip(")") for line in out[:-1]]

    assert main(cli("ls", f"--group={group_id}", "--json", server=server)) == 0
    listed = json.loads(capsys.readouterr().out)
    # One batch: signed in the same instant, so newest first says nothing among them.
    assert sorted(u["uploadId"] for u in listed) == sorted(ids)
    created = [u["createdAt"] for u in listed]
    assert created == sorted(created, reverse=True)
    assert {u["groupId"] for u in listed} == {group_id}

    assert main(cli("ls", f"--group={group_id}", server=server)) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "UPLOAD",
        "ID",
        "STATUS",
        "KIND",
        "SIZE",
        "DONE",
        "CREATED",
        "FILENAME",
    ]
    assert [row.split()[0] for row in table[1:]] == [u["uploadId"] for u in listed]
    assert all(row.split()[-1].startswith("note-") for row in table[1:])

    target = tmp_path / "got"
    assert main([*cli("get", "-o", str(target), "--no-progress", server=server), "--", ids[2]]) == 0
    assert target.read_bytes() == paths[2].read_bytes()
    assert capsys.readouterr().out.startswith(f"downloaded {ids[2]} -> {target} (")

    assert main([*cli("rm", server=server), "--", ids[0], "no-such-upload"]) == 1
    captured = capsys.readouterr()
    assert captured.out == f"deleted {ids[0]} note-0.txt\n"
    assert "obitox: failed no-such-upload: UPLOAD_NOT_FOUND: " in captured.err
    assert main([*cli("get", "-o", str(tmp_path / "gone"), server=server), "--", ids[0]]) == 1
    assert not (tmp_path / "gone").exists()


def test_cli_commands_need_a_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OBITOX_SERVER", raising=False)
    for command in (["ls"], ["rm", "x"], ["get", "x"], ["events"]):
        assert main(command) == 2
        assert "--server is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["ls", "--kind", "other", "--server", "http://h"])
    assert exited.value.code == 2


def test_cli_ls_of_an_unreachable_server_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "--server", "http://127.0.0.1:1", "--retries", "0"]) == 1
    assert "CONNECTION_ERROR" in capsys.readouterr().err


def test_cli_group_of_small_and_multipart_files(
    server: str,
    alice: ObitoXClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    log: EventLog,
) -> None:
    (small,) = text_files(tmp_path, 1)
    big = data_file(tmp_path / "big.bin", 6 * MiB)
    command = cli("upload", str(small), str(big), "--group", "mixed", server=server)
    command += ["--multipart-threshold", "6MiB", "--part-size", "5MiB", "--no-progress"]
    assert main(command) == 0
    group_id = capsys.readouterr().out.splitlines()[-1].split()[1]
    # Created first, joined by both kinds, sealed after the last file.
    assert ("POST", "/obitox/groups") in log.api_calls
    assert log.api_calls[-1] == ("POST", f"/obitox/groups/{group_id}/seal")
    view = alice.get_group(group_id)
    assert (view["status"], view["totalFiles"]) == ("completed", 2)
    assert sorted(u["kind"] for u in view["uploads"]) == ["multipart", "single"]

    # get without -o: the upload's filename, in the current directory.
    download_dir = tmp_path / "here"
    download_dir.mkdir()
    monkeypatch.chdir(download_dir)
    multipart = next(u for u in view["uploads"] if u["kind"] == "multipart")
    assert main(cli("get", multipart["uploadId"], server=server)) == 0
    assert (download_dir / "big.bin").read_bytes() == big.read_bytes()


def test_cli_ls_table_of_nothing_and_rm_of_nothing_found(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(cli("ls", "--status", "completed", server=server)) == 0
    assert capsys.readouterr().out.split() == [
        "UPLOAD",
        "ID",
        "STATUS",
        "KIND",
        "SIZE",
        "DONE",
        "CREATED",
        "FILENAME",
    ]
    assert main(cli("rm", "nope", server=server)) == 1
    assert "UPLOAD_NOT_FOUND" in capsys.readouterr().err
