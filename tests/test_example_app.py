"""The example app: the page's flow against a real moto S3 server, and
``python -m example_app`` started as a user would, with no services configured."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from client_support import LiveServer
from conftest import BUCKET, REGION
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, Worker
from rq.scheduler import RQScheduler

from example_app import create_app
from example_app.services import (
    config_from_env,
    ensure_browser_cors,
    parse_env_value,
    preflight_ok,
)
from flask_obitox import ConfigError
from flask_obitox.client import resume
from flask_obitox.client.cli import main as cli_main
from flask_obitox.webhooks import signed_headers, webhooks_for

ROOT = Path(__file__).resolve().parent.parent

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
FILES = [
    ("notes.txt", b"remember the milk\n" * 50, "text/plain"),
    ("pixel.png", PNG, "image/png"),
    ("data.bin", bytes(range(7, 250)) * 12, "application/octet-stream"),
]


@pytest.fixture
def example_app(s3_server: Any, moto_server: str) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "OBITOX_BUCKET": BUCKET,
            "OBITOX_REGION": REGION,
            "OBITOX_ENDPOINT_URL": moto_server,
            "OBITOX_AWS_ACCESS_KEY_ID": "testing",
            "OBITOX_AWS_SECRET_ACCESS_KEY": "testing",
            "OBITOX_STATE_BACKEND": "memory://",
        }
    )


def sign(client: FlaskClient, files: list[tuple[str, bytes, str]]) -> dict[str, Any]:
    specs = [{"filename": n, "contentType": t, "size": len(b)} for n, b, t in files]
    response = client.post("/obitox/uploads/batch", json={"files": specs})
    assert response.status_code == 200, response.json
    body: dict[str, Any] = response.json
    return body


def test_the_pages_flow_stores_every_file(example_app: Flask, s3_server: Any) -> None:
    client = example_app.test_client()
    batch = sign(client, FILES)
    assert (batch["successful"], batch["failed"]) == (3, 0)
    for signed in batch["uploads"]:
        _, content, _ = FILES[signed["index"]]
        put = requests.put(signed["url"], data=content, headers=signed["headers"], timeout=10)
        assert put.status_code == 200, put.text
        done = client.post(f"/obitox/uploads/{signed['uploadId']}/complete", json={})
        assert done.status_code == 200, done.json
        assert done.json["status"] == "completed"
        assert done.json["etag"]
        stored = s3_server.get_object(Bucket=BUCKET, Key=done.json["key"])["Body"].read()
        assert hashlib.sha256(stored).digest() == hashlib.sha256(content).digest()


def test_the_pages_two_profiles_store_their_headers(example_app: Flask, s3_server: Any) -> None:
    """The page offers the images and documents profiles; each stores its headers."""
    client = example_app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert 'id="profile"' in page
    assert '<option value="images">' in page
    assert '<option value="documents">' in page
    pdf = b"%PDF-1.7\n" + b"%" * 100
    cases = [
        (
            "images",
            "pixel.png",
            PNG,
            "image/png",
            "CacheControl",
            "public, max-age=31536000, immutable",
        ),
        ("documents", "report.pdf", pdf, "application/pdf", "ContentDisposition", "attachment"),
    ]
    for profile, name, content, kind, field, value in cases:
        spec = {"filename": name, "contentType": kind, "size": len(content)}
        answer = client.post(
            "/obitox/uploads/batch", json={"files": [spec], "profile": profile}
        ).json
        [signed] = answer["uploads"]
        assert signed["key"].startswith(f"uploads/{profile}/")
        assert requests.put(signed["url"], data=content, headers=signed["headers"], timeout=10).ok
        done = client.post(f"/obitox/uploads/{signed['uploadId']}/complete", json={})
        assert done.status_code == 200, done.json
        assert s3_server.head_object(Bucket=BUCKET, Key=signed["key"])[field] == value
    # Each profile's rules: a PDF is no image.
    spec = {"filename": "report.pdf", "contentType": "application/pdf", "size": len(pdf)}
    answer = client.post("/obitox/uploads/batch", json={"files": [spec], "profile": "images"}).json
    assert answer["errors"][0]["error"] == "VALIDATION_FAILED"


def test_an_executable_is_refused_in_the_batch(example_app: Flask) -> None:
    batch = sign(
        example_app.test_client(),
        [FILES[0], ("setup.exe", b"MZ" + bytes(62), "application/octet-stream")],
    )
    assert batch["successful"] == 1
    [refused] = batch["errors"]
    assert refused["index"] == 1
    assert refused["filename"] == "setup.exe"
    assert refused["error"] == "VALIDATION_FAILED"
    assert refused["message"]


def test_each_browser_session_is_its_own_user(example_app: Flask) -> None:
    alice, bob = example_app.test_client(), example_app.test_client()
    upload_id = sign(alice, FILES[:1])["uploads"][0]["uploadId"]
    assert alice.get(f"/obitox/uploads/{upload_id}").status_code == 200
    for response in (
        bob.get(f"/obitox/uploads/{upload_id}"),
        bob.post(f"/obitox/uploads/{upload_id}/complete", json={}),
    ):
        assert response.status_code == 404
        assert response.json["error"] == "UPLOAD_NOT_FOUND"


def test_index_page_renders(example_app: Flask, moto_server: str) -> None:
    client = example_app.test_client()
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<script type="module" src="/static/app.js">' in html
    assert BUCKET in html
    assert 'data-api="/obitox"' in html
    # The page imports the extension's obitox.js through an import map, and gets the
    # server's rules and threshold to mirror on the client.
    assert '{"imports": {"obitox": "/obitox/static/obitox.js"}}' in html
    config = json.loads(html.split('id="page-config">')[1].split("</script>")[0])
    assert config["threshold"] == 8 * 1024 * 1024
    assert config["rules"]["blockExecutables"] is True
    assert config["completedUrl"] == "/uploads/completed"
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/obitox/static/obitox.js").status_code == 200
    # The upload manager, for the same demo user (the session cookie).
    assert '<a id="manager-link" href="/obitox/manager">' in html
    manager = client.get("/obitox/manager")
    assert manager.status_code == 200
    assert "/obitox/static/manager.js" in manager.get_data(as_text=True)


def put_and_complete(client: FlaskClient, files: list[tuple[str, bytes, str]]) -> list[str]:
    """Upload ``files`` as the page does; returns their upload ids."""
    ids = []
    for signed in sign(client, files)["uploads"]:
        _, body, _ = files[signed["index"]]
        put = requests.put(signed["url"], data=body, headers=signed["headers"], timeout=10)
        assert put.status_code == 200, put.text
        done = client.post(f"/obitox/uploads/{signed['uploadId']}/complete", json={})
        assert done.status_code == 200, done.json
        ids.append(signed["uploadId"])
    return ids


def test_completed_uploads_are_listed_with_a_download_link(example_app: Flask) -> None:
    alice = example_app.test_client()
    first, second = put_and_complete(alice, FILES[:2])
    listed = alice.get("/uploads/completed").json["uploads"]
    assert [(u["uploadId"], u["filename"], u["size"], u["kind"]) for u in listed] == [
        (second, "pixel.png", len(PNG), "single"),  # newest first
        (first, "notes.txt", len(FILES[0][1]), "single"),
    ]
    download = alice.get(listed[0]["downloadUrl"])
    assert download.status_code == 302
    assert download.headers["Cache-Control"] == "private, no-store"
    url = download.headers["Location"]
    assert "X-Amz-Signature=" in url
    assert "X-Amz-Expires=300" in url
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(PNG).digest()


def test_a_multipart_upload_is_listed_when_it_completes(example_app: Flask) -> None:
    client = example_app.test_client()
    body = PNG + bytes(6 * 1024 * 1024)
    created = client.post(
        "/obitox/multipart",
        json={"filename": "big.png", "contentType": "image/png", "size": len(body)},
    ).json
    signed = client.post(
        f"/obitox/multipart/{created['uploadId']}/parts",
        json={"partNumbers": list(range(1, created["totalParts"] + 1))},
    ).json["parts"]
    for part in signed:
        start = (part["partNumber"] - 1) * created["partSize"]
        chunk = body[start : start + part["size"]]
        assert requests.put(part["url"], data=chunk, headers=part["headers"], timeout=10).ok
    assert client.get("/uploads/completed").json["uploads"] == []  # not completed yet
    done = client.post(f"/obitox/multipart/{created['uploadId']}/complete", json={})
    assert done.status_code == 200, done.json
    [listed] = client.get("/uploads/completed").json["uploads"]
    assert (listed["uploadId"], listed["kind"], listed["size"]) == (
        created["uploadId"],
        "multipart",
        len(body),
    )
    fetched = requests.get(client.get(listed["downloadUrl"]).headers["Location"], timeout=10)
    assert hashlib.sha256(fetched.content).digest() == hashlib.sha256(body).digest()


def test_downloads_are_for_the_owner_only(example_app: Flask) -> None:
    alice, bob = example_app.test_client(), example_app.test_client()
    [upload_id] = put_and_complete(alice, FILES[:1])
    pending = sign(alice, FILES[1:2])["uploads"][0]["uploadId"]  # signed, never completed
    assert bob.get("/uploads/completed").json == {"uploads": []}
    for client, wanted in ((bob, upload_id), (alice, pending), (alice, "no-such-upload")):
        response = client.get(f"/uploads/{wanted}/download")
        assert response.status_code == 404
        assert response.json["error"] == "UPLOAD_NOT_FOUND"
        assert response.json["details"] == {"uploadId": wanted}
        assert "Location" not in response.headers
    assert alice.get(f"/uploads/{upload_id}/download").status_code == 302


def test_env_values_are_parsed_by_the_type_of_their_default() -> None:
    env = {
        "OBITOX_MAX_FILE_SIZE": "1048576",
        "OBITOX_VERIFY_CONTENT": "false",
        "OBITOX_ALLOWED_CONTENT_TYPES": "image/*, application/pdf",
        "OBITOX_WEBHOOK_RETRY_SCHEDULE": "5,60",
        "OBITOX_WEBHOOKS": '[{"url": "https://example.com/hook"}]',
        "OBITOX_BUCKET": "12345",
        "OBITOX_TEST_REDIS_URL": "redis://ignored",
        "HOME": "/root",
    }
    assert config_from_env(env) == {
        "OBITOX_MAX_FILE_SIZE": 1048576,
        "OBITOX_VERIFY_CONTENT": False,
        "OBITOX_ALLOWED_CONTENT_TYPES": ["image/*", "application/pdf"],
        "OBITOX_WEBHOOK_RETRY_SCHEDULE": [5, 60],
        "OBITOX_WEBHOOKS": [{"url": "https://example.com/hook"}],
        "OBITOX_BUCKET": "12345",
    }
    with pytest.raises(ConfigError, match="OBITOX_BATCH_MAX_FILES"):
        parse_env_value("OBITOX_BATCH_MAX_FILES", "many")


def test_bucket_cors_is_set_when_storage_refuses_the_preflight(
    s3_server: Any, moto_server: str
) -> None:
    origin = "http://127.0.0.1:5999"
    # A rule for another origin: moto now refuses preflights from ours.
    s3_server.put_bucket_cors(
        Bucket=BUCKET,
        CORSConfiguration={
            "CORSRules": [
                {"AllowedOrigins": ["https://elsewhere.example"], "AllowedMethods": ["GET"]}
            ]
        },
    )
    assert not preflight_ok(moto_server, BUCKET, origin)
    done = ensure_browser_cors(s3_server, moto_server, BUCKET, [origin])
    assert origin in done
    assert preflight_ok(moto_server, BUCKET, origin)
    [rule] = s3_server.get_bucket_cors(Bucket=BUCKET)["CORSRules"]
    assert "PUT" in rule["AllowedMethods"]
    assert rule["ExposeHeaders"] == ["ETag"]


# -- python -m example_app ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def running_example(tmp_path: Path) -> Iterator[str]:
    """``python -m example_app`` in a clean environment; yields its base URL."""
    port = free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OBITOX_", "AWS_")) and name not in ("REDIS_URL", "SECRET_KEY")
    }
    log = (tmp_path / "example_app.log").open("w+b")
    process = subprocess.Popen(
        [sys.executable, "-m", "example_app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"example_app exited with {process.returncode}:\n{log.read().decode()}")
            try:
                requests.get(base + "/obitox/openapi.json", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"example_app did not start in 20 s:\n{log.read().decode()}")
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def test_python_m_example_app_runs_with_no_services(running_example: str) -> None:
    browser = requests.Session()
    page = browser.get(running_example + "/", timeout=5)
    assert page.status_code == 200
    assert "embedded S3 (moto)" in page.text
    spec = browser.get(running_example + "/obitox/openapi.json", timeout=5)
    assert spec.status_code == 200
    assert spec.json()["openapi"].startswith("3.1")

    # One upload through the embedded S3, as the page does it, preflight included.
    content = PNG
    answer = browser.post(
        running_example + "/obitox/uploads/batch",
        json={"files": [{"filename": "p.png", "contentType": "image/png", "size": len(content)}]},
        timeout=5,
    ).json()
    [signed] = answer["uploads"]
    preflight = requests.options(
        signed["url"],
        headers={
            "Origin": running_example,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=5,
    )
    assert preflight.headers.get("Access-Control-Allow-Origin") in (running_example, "*")
    put = requests.put(signed["url"], data=content, headers=signed["headers"], timeout=5)
    assert put.status_code == 200, put.text
    done = browser.post(
        running_example + f"/obitox/uploads/{signed['uploadId']}/complete", json={}, timeout=5
    )
    assert done.status_code == 200, done.text
    assert done.json()["size"] == len(content)

    # Listed for its owner, with a download link to the embedded S3.
    [listed] = browser.get(running_example + "/uploads/completed", timeout=5).json()["uploads"]
    assert listed["uploadId"] == signed["uploadId"]
    downloaded = browser.get(running_example + listed["downloadUrl"], timeout=5)
    assert downloaded.status_code == 200
    assert downloaded.content == content

    # The embedded worker delivers upload.completed back to the app, which verifies it.
    deadline = time.monotonic() + 30
    while True:
        listed = browser.get(running_example + "/webhooks/deliveries", timeout=5).json()
        mine = [d for d in listed["deliveries"] if d["uploadId"] == signed["uploadId"]]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert listed["enabled"] is True
    assert [(d["type"], d["verified"]) for d in mine] == [("upload.completed", True)]


def test_the_example_verifies_the_webhooks_it_receives(s3_server: Any, moto_server: str) -> None:
    url = "http://127.0.0.1:5000/webhooks/obitox"
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
    app = create_app(
        {
            "TESTING": True,
            "OBITOX_BUCKET": BUCKET,
            "OBITOX_ENDPOINT_URL": moto_server,
            "OBITOX_STATE_BACKEND": "memory://",
            "OBITOX_WEBHOOK_ALLOW_PRIVATE": True,
            "EXAMPLE_WEBHOOK_URL": url,
            "EXAMPLE_WEBHOOK_SECRET": secret,
        }
    )
    [endpoint] = webhooks_for(app).endpoints  # registered with add_webhook
    assert endpoint.url == url
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = "demo-alice"
    body = b'{"type":"upload.aborted","timestamp":"2026-11-21T05:30:00.000000Z","data":{"uploadId":"u1","owner":"demo-alice"}}'
    headers = signed_headers(endpoint.key, "msg_abc", body)
    first = client.post("/webhooks/obitox", data=body, headers=headers)
    assert first.status_code == 200
    assert first.json == {"received": True, "duplicate": False}
    again = client.post("/webhooks/obitox", data=body, headers=headers)  # a retry
    assert again.json == {"received": True, "duplicate": True}
    forged = client.post("/webhooks/obitox", data=body.replace(b"u1", b"u2"), headers=headers)
    assert forged.status_code == 400
    assert forged.json["error"] == "INVALID_SIGNATURE"
    listed = client.get("/webhooks/deliveries").json
    assert [(d["webhookId"], d["type"], d["uploadId"]) for d in listed["deliveries"]] == [
        ("msg_abc", "upload.aborted", "u1")
    ]
    assert "owner" not in listed["deliveries"][0]
    # Another demo user sees none of alice's deliveries.
    assert app.test_client().get("/webhooks/deliveries").json["deliveries"] == []
    assert 'id="webhooks"' in client.get("/").get_data(as_text=True)


# -- a script as the page's user, and `flask obitox ...` against the running example ---
# (identity by the page's token, example_app/app.py; the env file, example_app/__main__.py)

TOKEN_IN_PAGE = re.compile(r"--token (\S+)</code>")
SPEC = {"filename": "notes.txt", "contentType": "text/plain", "size": 5}


def page_token(page: str) -> str:
    """The token the page shows its visitor."""
    match = TOKEN_IN_PAGE.search(page)
    assert match is not None, "the page shows no `obitox upload ... --token` command"
    return match.group(1)


def test_a_script_with_the_pages_token_is_the_browsers_user(
    example_app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    browser = example_app.test_client()
    token = page_token(browser.get("/").get_data(as_text=True))
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"uploaded from a terminal\n")
    monkeypatch.delenv("OBITOX_TOKEN", raising=False)
    monkeypatch.delenv("OBITOX_HEADERS", raising=False)
    with LiveServer(example_app) as live:
        server = live.url + "/obitox"
        assert cli_main(["upload", str(notes), "--server", server, "--token", token]) == 0
        # $OBITOX_TOKEN is the same; an Authorization --header wins over it.
        monkeypatch.setenv("OBITOX_TOKEN", token)
        assert cli_main(["upload", str(notes), "--server", server]) == 0
        bad = ["upload", str(notes), "--server", server, "-H", "Authorization: Bearer x.y"]
        assert cli_main(bad) == 1

    listed = browser.get("/uploads/completed").json["uploads"]
    assert [u["filename"] for u in listed] == ["notes.txt", "notes.txt"]
    # Another browser is another user, who sees none of it.
    assert example_app.test_client().get("/uploads/completed").json["uploads"] == []


def test_a_token_that_does_not_verify_is_refused_with_the_reason(example_app: Flask) -> None:
    token = page_token(example_app.test_client().get("/").get_data(as_text=True))
    other = create_app({**example_app.config, "SECRET_KEY": "another start of the app"})
    for app, authorization in [
        (other, f"Bearer {token}"),  # signed with another SECRET_KEY: a restart
        (example_app, f"Bearer {token[:-2]}xx"),
        (example_app, f"Basic {token}"),
    ]:
        answer = app.test_client().post(
            "/obitox/uploads", json=SPEC, headers={"Authorization": authorization}
        )
        assert answer.status_code == 401, authorization
        assert answer.json["error"] == "UNAUTHENTICATED"
    refused = other.test_client().post(
        "/obitox/uploads", json=SPEC, headers={"Authorization": f"Bearer {token}"}
    )
    assert "SECRET_KEY" in refused.json["message"]
    # The same token, where it was issued, signs the upload.
    accepted = example_app.test_client().post(
        "/obitox/uploads", json=SPEC, headers={"Authorization": f"Bearer {token}"}
    )
    assert accepted.status_code == 201, accepted.json


def read_env_file(path: Path) -> dict[str, str]:
    environment: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            (environment[name],) = shlex.split(value)
    return environment


def answers(base: str) -> bool:
    try:
        return requests.get(base + "/obitox/openapi.json", timeout=1).ok
    except requests.ConnectionError:
        return False


def worker_listens(env_file: Path) -> bool:
    """Whether the demo's worker (and its scheduler) are up on the demo's RQ Redis."""
    connection = redis.Redis.from_url(read_env_file(env_file)["OBITOX_RQ_REDIS_URL"])
    try:
        queue = Queue("obitox-webhooks", connection=connection)
        scheduled = connection.get(RQScheduler.get_locking_key(queue.name))
        return bool(Worker.all(queue=queue)) and scheduled is not None
    finally:
        connection.close()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """End ``process`` and every process of its group (its session leader's)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)


def test_flask_obitox_and_a_resumed_obitox_upload_against_python_m_example_app(
    tmp_path: Path,
) -> None:
    port = free_port()
    env_file = tmp_path / "example.env"
    clean = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OBITOX_", "AWS_", "FLASK_"))
        and name not in ("REDIS_URL", "SECRET_KEY")
    }
    log = (tmp_path / "example_app.log").open("w+b")
    demo = subprocess.Popen(
        [sys.executable, "-m", "example_app", "--port", str(port), "--env-file", str(env_file)],
        cwd=ROOT,
        env=clean,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    upload: subprocess.Popen[bytes] | None = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not (env_file.exists() and answers(base) and worker_listens(env_file)):
            if demo.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"example_app is not up with its worker:\n{log.read().decode()}")
            time.sleep(0.1)
        assert env_file.stat().st_mode & 0o777 == 0o600
        operator = {**clean, **read_env_file(env_file)}
        assert operator["FLASK_APP"] == "example_app.worker:create_worker_app"

        # Another terminal: the doctor builds the same app against the same services.
        doctor = subprocess.run(
            [sys.executable, "-m", "flask", "obitox", "doctor"],
            cwd=tmp_path,
            env=operator,
            capture_output=True,
            timeout=120,
            check=False,
        )
        report = doctor.stdout.decode()
        assert doctor.returncode == 0, report + doctor.stderr.decode()
        assert ", 0 failed" in report
        assert "1 worker(s) on 'obitox-webhooks'" in report  # the demo's own worker

        browser = requests.Session()
        token = page_token(browser.get(base + "/", timeout=5).text)
        video = tmp_path / "video.bin"
        video.write_bytes(b"OBITOX-TEST-DATA\n" + os.urandom(64 * 1024 * 1024 - 17))
        state = video.with_name("video.bin.obitox-resume")
        command = [
            sys.executable,
            "-m",
            "flask_obitox.client",
            "upload",
            str(video),
            "--server",
            base + "/obitox",
            "--multipart-threshold",
            "8MiB",
            "--part-size",
            "5MiB",
            "--concurrency",
            "1",
            "--no-progress",
        ]
        script = {**clean, "OBITOX_TOKEN": token}

        # Interrupted (Ctrl-C) once storage holds a part...
        upload = subprocess.Popen(
            command, env=script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        as_user = {"Authorization": f"Bearer {token}"}
        held: list[Any] = []
        deadline = time.monotonic() + 60
        while not held and upload.poll() is None and time.monotonic() < deadline:
            record = resume.load(state) if state.exists() else None
            if record is not None:
                view = requests.get(
                    f"{base}/obitox/multipart/{record.upload_id}", headers=as_user, timeout=5
                )
                held = view.json().get("uploadedParts", []) if view.ok else []
            time.sleep(0.02)
        if upload.poll() is not None:
            pytest.fail(f"the upload ended before its interruption: {upload.communicate()}")
        upload.send_signal(signal.SIGINT)
        _, err = upload.communicate(timeout=30)
        assert upload.returncode == 130, err.decode()
        record = resume.load(state)
        assert record is not None

        # ...then the same command, a new process with the same token, continues it.
        again = subprocess.run(command, env=script, capture_output=True, timeout=120, check=False)
        assert again.returncode == 0, again.stderr.decode()
        assert f"(64.0 MiB, upload {record.upload_id}, resumed)" in again.stdout.decode()
        assert not state.exists()

        # The browser whose page gave the token sees the upload, byte for byte.
        [listed] = browser.get(base + "/uploads/completed", timeout=5).json()["uploads"]
        assert listed["uploadId"] == record.upload_id
        stored = browser.get(base + listed["downloadUrl"], timeout=30).content
        assert hashlib.sha256(stored).digest() == hashlib.sha256(video.read_bytes()).digest()
    finally:
        if upload is not None and upload.poll() is None:
            upload.kill()
            upload.communicate(timeout=10)
        stop_group(demo)
        log.close()
    assert not env_file.exists()  # removed when the demo stopped


# -- the webhook worker's health: GET /webhooks/worker ---------------------------------


def poll_worker_health(
    get: Callable[[], dict[str, Any]], until: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The example's worker health, polled until ``until`` holds (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        health = get()
        if until(health):
            return health
        if time.monotonic() > deadline:
            pytest.fail(f"waited 30 s for {what}; the route last said {health}")
        time.sleep(0.2)


def test_the_example_reports_its_worker_running_then_killed(running_example: str) -> None:
    def get() -> dict[str, Any]:
        answer: dict[str, Any] = requests.get(
            running_example + "/webhooks/worker", timeout=5
        ).json()
        return answer

    # Running, and its start-up lines read from its output (the verdict after its death
    # quotes the last one; RQ can list the worker before the example has read them).
    health = poll_worker_health(
        get, lambda h: h["status"] == "running" and bool(h["process"]["log"]), "a running worker"
    )
    assert health["healthy"] is True
    process = health["process"]
    assert (process["running"], process["exitCode"]) == (True, None)
    # RQ lists the very process the example started, with a recent heartbeat.
    assert [w["pid"] for w in health["workers"] if w["live"]] == [process["pid"]]
    assert 'data-worker-url="/webhooks/worker"' in requests.get(running_example, timeout=5).text

    os.kill(process["pid"], signal.SIGKILL)
    dead = poll_worker_health(get, lambda h: h["status"] == "exited", "the worker's death")
    assert dead["healthy"] is False
    assert (dead["process"]["running"], dead["process"]["exitCode"]) == (False, -signal.SIGKILL)
    assert dead["message"].startswith("The webhook worker is not running (killed by SIGKILL): ")
    assert dead["message"].endswith(". Deliveries wait in the queue until it runs.")


@pytest.fixture
def example_whose_worker_cannot_start(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> str:
    # Flask's CLI reads options from FLASK_<GROUP>_<COMMAND>_<OPTION>: the worker refuses
    # this one and exits with code 2 at start-up; the app does not read it.
    monkeypatch.setenv("FLASK_OBITOX_WORKER_WORKER_CLASS", "no-such-class")
    base: str = request.getfixturevalue("running_example")
    return base


def test_the_example_says_why_its_worker_did_not_start(
    example_whose_worker_cannot_start: str,
) -> None:
    def get() -> dict[str, Any]:
        url = example_whose_worker_cannot_start + "/webhooks/worker"
        answer: dict[str, Any] = requests.get(url, timeout=5).json()
        return answer

    dead = poll_worker_health(
        get,
        lambda h: h["status"] == "exited" and "no-such-class" in h["message"],
        "the worker's exit, with its error",
    )
    assert (dead["healthy"], dead["process"]["exitCode"]) == (False, 2)
    last_line = dead["process"]["log"][-1]
    assert "Invalid value for '--worker-class'" in last_line
    assert dead["message"] == (
        f"The webhook worker is not running (exited with code 2): {last_line.rstrip('.')}. "
        "Deliveries wait in the queue until it runs."
    )


def test_without_a_worker_of_its_own_the_example_reads_rqs_registry(
    redis_url: str, queue_name: str, tmp_path: Path
) -> None:
    from webhook_support import WorkerProcess, wait_for, webhook_config

    from flask_obitox.state.redis import redact_url

    receiver = "http://127.0.0.1:9/webhooks/obitox"  # nothing is delivered in this test
    app = create_app(
        {
            "TESTING": True,
            "OBITOX_STATE_BACKEND": "memory://",
            "OBITOX_RQ_REDIS_URL": redis_url,
            "OBITOX_RQ_QUEUE": queue_name,
            "OBITOX_PROCESSING_QUEUE": f"{queue_name}-processing",
            "OBITOX_WEBHOOK_ALLOW_PRIVATE": True,
            "EXAMPLE_WEBHOOK_URL": receiver,
            "EXAMPLE_WEBHOOK_SECRET": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",
        }
    )
    client = app.test_client()

    def get() -> dict[str, Any]:
        answer: dict[str, Any] = client.get("/webhooks/worker").json
        return answer

    missing = get()
    assert (missing["status"], missing["healthy"], missing["process"]) == ("missing", False, None)
    assert missing["workers"] == []
    assert missing["message"] == (
        f"No webhook worker is running on queue {queue_name!r} at {redact_url(redis_url)}: "
        "start one with `flask obitox worker`. Deliveries wait in the queue until one runs."
    )

    # A worker started elsewhere, as a deployment runs them, on the same queue.
    worker = WorkerProcess(webhook_config(redis_url, queue_name, receiver), tmp_path / "worker.log")
    try:
        running = wait_for(
            lambda: (health := get())["status"] == "running" and health,
            30,
            "the route to see the worker RQ lists",
            worker.log,
        )
        [listed] = running["workers"]
        assert (listed["pid"], listed["live"]) == (worker.process.pid, True)
        assert running["healthy"] is True
        # A warm shutdown: RQ takes the worker off the queue's list. Given a minute, as
        # a loaded machine may need (stop() would SIGKILL after 10 s, and a killed
        # worker stays listed until its heartbeat runs out).
        # A warm shutdown takes the worker off RQ's list. (RQ 2.8 sometimes dies of the
        # SIGTERM itself, seen under load; then RQ lists it until its heartbeat runs
        # out, which the route rightly reports, so only a warm exit is checked here.)
        wait_for(lambda: "Listening on" in worker.log(), 30, "the worker to listen")
        worker.process.terminate()
        try:
            code = worker.process.wait(60)
        except subprocess.TimeoutExpired:
            code = None  # no warm exit within a minute on a loaded machine: nothing to check
        if code == 0:
            wait_for(lambda: get()["status"] == "missing", 30, "the worker to leave RQ's list")
    finally:
        worker.stop()


def test_python_m_example_app_serves_live_events(running_example: str) -> None:
    """Its threaded server holds an event stream while other requests go on."""
    browser = requests.Session()
    assert browser.get(running_example + "/", timeout=5).status_code == 200
    with browser.get(running_example + "/obitox/events", stream=True, timeout=20) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(chunk_size=1, decode_unicode=True)
        assert next(lines).startswith("retry:")
        answer = browser.post(
            running_example + "/obitox/uploads/batch",
            json={"files": [{"filename": "p.png", "contentType": "image/png", "size": 10}]},
            timeout=5,
        ).json()
        fields = {}
        for line in lines:
            if line.startswith(("event:", "data:")):
                name, _, value = line.partition(": ")
                fields[name] = value
            if "data" in fields:
                break
    assert fields["event"] == "upload.signed"
    assert json.loads(fields["data"])["data"]["uploadId"] == answer["uploads"][0]["uploadId"]


def test_the_examples_processors_show_a_thumbnail_and_a_sha256(running_example: str) -> None:
    import io

    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 90)).save(image, "PNG")
    content = image.getvalue()
    browser = requests.Session()
    browser.get(running_example + "/", timeout=5)
    signed = browser.post(
        running_example + "/obitox/uploads",
        json={"filename": "red.png", "contentType": "image/png", "size": len(content)},
        timeout=5,
    ).json()
    put = requests.put(signed["url"], data=content, headers=signed["headers"], timeout=5)
    assert put.status_code == 200, put.text
    done = browser.post(
        running_example + f"/obitox/uploads/{signed['uploadId']}/complete", json={}, timeout=5
    )
    assert done.status_code == 200, done.text

    # The embedded worker (no services configured) runs both processors.
    deadline = time.monotonic() + 60
    while True:
        [listed] = browser.get(running_example + "/uploads/completed", timeout=5).json()["uploads"]
        if listed["ready"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert listed["ready"] is True, listed["processing"]
    assert listed["processing"]["sha256"]["result"] == {
        "sha256": hashlib.sha256(content).hexdigest()
    }
    assert listed["processing"]["thumbnail"]["result"]["width"] == 256
    thumbnail = browser.get(running_example + listed["thumbnailUrl"], timeout=5)
    assert thumbnail.status_code == 200
    assert thumbnail.content[:3] == b"\xff\xd8\xff"  # a JPEG
    with Image.open(io.BytesIO(thumbnail.content)) as shown:
        assert shown.size == (256, 192)
