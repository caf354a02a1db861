"""``obitox upload`` killed at random points, then run again, finishes the same upload.

A real subprocess uploads a 64 MiB file in 5 MiB parts through the app (HTTP, real
Redis) to the moto server behind the recording proxy of ``client_support``. The proxy
reads part bodies slowly, so a kill can land before the upload exists, between the
server creating it and the resume file, in the middle of a part's body, between parts,
or during *complete*. After the last run the object in the bucket must be the file,
byte for byte, and no part may have been sent again after a resume view said storage
held it.

The kill points come from a seeded random generator; a failure prints the seed, and
``OBITOX_RESUME_SEED=<seed>`` replays the same choices.

A resume file whose upload the server no longer continues (another identity's, expired,
aborted) never starts the file over unasked: the command names the file and the reason,
and only ``--restart`` (``restart=True`` in Python) uploads it from the start.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_support import EventLog, LiveServer, StorageProxy, record_resume_views
from conftest import BUCKET, make_app

from flask_obitox import RedisStateBackend
from flask_obitox.client import ObitoXClient, ObitoXClientError, StaleResumeFile, resume
from flask_obitox.client.cli import main

MiB = 1024 * 1024
FILE_SIZE = 64 * MiB
PART_SIZE = 5 * MiB
TOTAL_PARTS = -(-FILE_SIZE // PART_SIZE)  # 13
KILLS = 6
#: Of which at least this many after the upload's parts began to flow.
MID_UPLOAD_KILLS = 2
#: Seconds the proxy sleeps per 256 KiB of a part body: ~0.4 s per part, so a kill
#: often lands mid-part and a full run takes a few seconds.
READ_DELAY = 0.02


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
def proxy(moto_server: str, events: EventLog) -> Iterator[StorageProxy]:
    storage = StorageProxy(moto_server, events, bucket=BUCKET)
    with LiveServer(storage, receive_buffer=64 * 1024) as server:
        storage.url = server.url
        yield storage


@pytest.fixture
def server(
    s3_server: Any, proxy: StorageProxy, redis_backend: RedisStateBackend, events: EventLog
) -> Iterator[str]:
    app, _ = make_app(redis_backend, OBITOX_ENDPOINT_URL=proxy.url)
    record_resume_views(app, events)
    with LiveServer(app) as live:
        yield live.url + "/obitox"


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "video.bin"
    with path.open("wb") as file:
        file.write(b"OBITOX-TEST-DATA\n")
        for _ in range(FILE_SIZE // MiB):
            file.write(os.urandom(MiB))
        file.truncate(FILE_SIZE)
    return path


def command(path: Path, server: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flask_obitox.client",
        "upload",
        str(path),
        "--server",
        server,
        "--header",
        "X-User: alice",
        "--part-size",
        "5MiB",
        "--multipart-threshold",
        "16MiB",
        "--concurrency",
        "2",
        "--no-progress",
    ]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(condition: Any, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def stored_parts(events: EventLog) -> set[int]:
    """Parts storage accepted for the most recent upload the proxy saw."""
    if not events.puts:
        return set()
    key = events.puts[-1].key
    return {p.part_number for p in events.puts_for(key) if p.status == 200 and p.part_number}


def test_killed_upload_resumes_to_an_identical_object(
    video: Path, server: str, proxy: StorageProxy, events: EventLog, s3_server: Any, tmp_path: Path
) -> None:
    seed = int(os.environ.get("OBITOX_RESUME_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    proxy.read_delay = READ_DELAY
    argv = command(video, server)
    kills: list[str] = []
    mid_upload = 0
    logs = tmp_path / "logs"
    logs.mkdir()

    while len(kills) < KILLS:
        events.run += 1
        with (logs / f"run{events.run}.err").open("wb") as stderr:
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        started = time.monotonic()
        needed = KILLS - len(kills)
        remaining = TOTAL_PARTS - len(stored_parts(events))
        # A run killed after the proxy took its PUT #k may store up to k + 3 parts (the
        # parts in flight, and what the kernel still delivers for the dead process); one
        # killed at start-up stores none (a part body takes ~0.4 s through the proxy).
        # Keep 2 parts for the kills to come, and kill at least 2 runs mid-upload.
        budget = remaining - 5
        must = MID_UPLOAD_KILLS - mid_upload >= needed
        if budget < 1 or not (must or rng.random() < 0.5):
            delay = rng.uniform(0.05, 0.55)
            wait_until(lambda: time.monotonic() - started >= delay, process, 10)  # noqa: B023
            point = f"{delay:.2f}s after start"
        else:
            mid_upload += 1
            # A PUT is logged once the proxy has read (or lost) its body.
            new_puts = rng.randint(1, min(4, budget))
            wait_until(lambda: events.put_count(events.run) >= new_puts, process, 20)  # noqa: B023
            pause = rng.uniform(0, 0.5)
            time.sleep(pause)
            point = f"{pause:.2f}s after the proxy took PUT #{new_puts} of the run"
        if process.poll() is not None:
            pytest.fail(
                f"run {events.run} ended ({process.returncode}) before its kill at {point}; "
                f"seed {seed}: {(logs / f'run{events.run}.err').read_text()}"
            )
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills.append(f"run {events.run}: {point}, storage held {sorted(stored_parts(events))}")

    events.run += 1
    final = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    history = f"seed {seed}; kills: {kills}"
    assert final.returncode == 0, f"{final.stderr.decode()}\n{history}"
    assert b"resumed" in final.stdout, history

    # The one object in the bucket is the file, byte for byte.
    objects = s3_server.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert len(objects) == 1, history
    key = objects[0]["Key"]
    body = s3_server.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert sha256(body) == sha256(video.read_bytes()), history
    assert f"-> {BUCKET}/{key} " in final.stdout.decode()
    assert not (tmp_path / "video.bin.obitox-resume").exists()

    # No part was sent after a resume view said storage held it.
    resent = [
        (view.run, put.run, put.part_number)
        for view in events.views
        if view.key == key
        for put in events.puts_for(key)
        if put.seq > view.seq and put.part_number in view.uploaded
    ]
    assert resent == [], history
    # And resuming did something: the object's parts were stored by several runs.
    runs = {p.run for p in events.puts_for(key) if p.status == 200}
    assert len(runs) >= 2, history
    assert any(v.uploaded for v in events.views if v.key == key), history


def test_ctrl_c_keeps_the_resume_file_and_a_rerun_finishes(
    video: Path, server: str, proxy: StorageProxy, events: EventLog, s3_server: Any, tmp_path: Path
) -> None:
    proxy.read_delay = READ_DELAY
    state_dir = tmp_path / "state"
    argv = [*command(video, server), "--state-dir", str(state_dir)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Interrupt once two parts are stored and more are in flight.
    wait_until(lambda: len(stored_parts(events)) >= 2, process, 30)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    assert b"interrupted" in err
    assert b"run the same command again" in err
    assert out == b""
    (state,) = state_dir.glob("video.bin.*.obitox-resume")
    held = stored_parts(events)

    before = len(events.puts)
    proxy.read_delay = 0
    again = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr.decode()
    assert b"resumed" in again.stdout
    assert not state.exists()
    resent = {p.part_number for p in events.puts[before:]}
    assert resent.isdisjoint(held)
    assert resent | held == set(range(1, TOTAL_PARTS + 1))
    (obj,) = s3_server.list_objects_v2(Bucket=BUCKET)["Contents"]
    body = s3_server.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
    assert sha256(body) == sha256(video.read_bytes())


# -- a resume file whose upload can no longer be continued ---------------------------

SMALL_SIZE = 11 * MiB  # three 5 MiB parts


def cli(path: Path, server: str, user: str, *extra: str) -> list[str]:
    return [
        "upload",
        str(path),
        "--server",
        server,
        "--header",
        f"X-User: {user}",
        "--part-size",
        "5MiB",
        "--multipart-threshold",
        "5MiB",
        "--concurrency",
        "1",
        "--retries",
        "0",
        "--no-progress",
        *extra,
    ]


@pytest.fixture
def half_done(
    server: str, proxy: StorageProxy, tmp_path: Path
) -> tuple[Path, Path, resume.ResumeRecord]:
    """alice's upload of an 11 MiB file, stopped after its first part: (file, resume
    file, the resume file's record)."""
    path = tmp_path / "report.bin"
    path.write_bytes(b"OBITOX-TEST-DATA\n" + os.urandom(SMALL_SIZE - 17))
    proxy.fail_puts(400, part_number=2)
    assert main(cli(path, server, "alice")) == 1
    proxy.clear_faults()
    state = resume.resume_path_for(path)
    record = resume.load(state)
    assert record is not None
    return path, state, record


def open_uploads(s3: Any) -> list[str]:
    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    return sorted(upload["Key"] for upload in uploads)


def test_another_identity_gets_the_reason_and_no_new_upload(
    half_done: tuple[Path, Path, resume.ResumeRecord],
    server: str,
    events: EventLog,
    s3_server: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, state, record = half_done
    capsys.readouterr()
    puts, calls, held = len(events.puts), len(events.api_calls), open_uploads(s3_server)

    assert main(cli(path, server, "bob")) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"obitox: cannot resume {path} (resume file {state}): the server does not know "
        f"upload {record.upload_id} (it was begun with other credentials, or its record "
        "expired); if nobody continues it, storage cleanup aborts its parts after "
        "OBITOX_UPLOAD_TTL",
        "obitox: re-run with --restart to upload report.bin from the start",
    ]
    # Nothing started over: no new upload, no byte sent, the resume file as it was.
    assert len(events.puts) == puts
    assert ("POST", "/obitox/multipart") not in events.api_calls[calls:]
    assert open_uploads(s3_server) == held
    assert resume.load(state) == record

    # alice's upload is intact: her next run continues it.
    assert main(cli(path, server, "alice")) == 0
    out, _ = capsys.readouterr()
    assert f"upload {record.upload_id}, resumed)" in out


def test_restart_uploads_the_file_from_the_start(
    half_done: tuple[Path, Path, resume.ResumeRecord],
    server: str,
    s3_server: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, state, record = half_done
    capsys.readouterr()

    assert main(cli(path, server, "bob", "--restart")) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"obitox: cannot resume {path} (resume file {state}): the server does not know "
        f"upload {record.upload_id} (it was begun with other credentials, or its record "
        "expired); if nobody continues it, storage cleanup aborts its parts after "
        "OBITOX_UPLOAD_TTL; starting over"
    ]
    assert out.startswith(f"uploaded {path} -> {BUCKET}/")
    assert "resumed" not in out
    assert record.upload_id not in out
    key = out.split(f" -> {BUCKET}/", 1)[1].split(" (", 1)[0]
    body = s3_server.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert sha256(body) == sha256(path.read_bytes())
    assert not state.exists()
    # bob could not abort alice's upload (to him it does not exist): it is still open.
    assert open_uploads(s3_server) == [record.key]


@pytest.mark.parametrize(
    ("settle", "reason", "cleanup"),
    [
        ("abort", "was aborted", "its parts were aborted in storage"),
        (
            "expire",
            "expired (OBITOX_UPLOAD_TTL)",
            "the server's cleanup aborts its parts in storage",
        ),
    ],
)
def test_an_aborted_or_expired_upload_is_reported_then_restarted_on_request(
    half_done: tuple[Path, Path, resume.ResumeRecord],
    server: str,
    redis_backend: RedisStateBackend,
    s3_server: Any,
    capsys: pytest.CaptureFixture[str],
    settle: str,
    reason: str,
    cleanup: str,
) -> None:
    path, state, record = half_done
    if settle == "abort":
        with ObitoXClient(server, auth_headers={"X-User": "alice"}) as alice:
            alice.abort(record.upload_id)
    else:
        assert redis_backend.update(record.upload_id, {"pending", "uploading"}, status="expired")
    capsys.readouterr()

    assert main(cli(path, server, "alice")) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"obitox: cannot resume {path} (resume file {state}): upload {record.upload_id} "
        f"{reason}; {cleanup}",
        "obitox: re-run with --restart to upload report.bin from the start",
    ]
    assert resume.load(state) == record

    assert main(cli(path, server, "alice", "--restart")) == 0
    out, err = capsys.readouterr()
    assert err.endswith("; starting over\n")
    assert out.startswith(f"uploaded {path} -> {BUCKET}/")
    assert "resumed" not in out
    assert not state.exists()


def test_the_client_raises_stale_resume_file_unless_told_to_restart(
    half_done: tuple[Path, Path, resume.ResumeRecord], server: str, s3_server: Any
) -> None:
    path, state, record = half_done
    with ObitoXClient(server, auth_headers={"X-User": "bob"}) as bob:
        with pytest.raises(StaleResumeFile) as caught:
            bob.resumable_upload(path, resume_file=state)
        stale = caught.value
        assert isinstance(stale, ObitoXClientError)
        assert (stale.code, stale.status) == ("UPLOAD_NOT_FOUND", 404)
        assert (stale.upload_id, stale.resume_file, stale.path) == (record.upload_id, state, path)
        assert stale.details["uploadId"] == record.upload_id
        assert resume.load(state) == record

        told: list[StaleResumeFile] = []
        result = bob.resumable_upload(path, resume_file=state, restart=True, on_restart=told.append)
    assert [t.upload_id for t in told] == [record.upload_id]
    assert not result.resumed
    assert result.upload_id != record.upload_id
    body = s3_server.get_object(Bucket=BUCKET, Key=result.key)["Body"].read()
    assert sha256(body) == sha256(path.read_bytes())
