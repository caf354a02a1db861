"""The upload manager page (DESIGN §16) in headless Chromium, against a real server:
moto S3 server, real Redis state and event streams, a real RQ worker for processing.

The page is driven as a user would (its buttons, the keyboard) while a Python client
uploads; storage is checked in the bucket afterwards."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from manager_support import PART, create_app
from webhook_support import delete_rq_keys
from werkzeug.serving import make_server

from browser.conftest import BUCKET, content
from flask_obitox.client import ObitoXClient

pytestmark = [pytest.mark.browser, pytest.mark.redis]

WAIT_MS = 15_000
TESTS = Path(__file__).resolve().parent.parent


class ManagerApp:
    """The app of :mod:`manager_support` served on 127.0.0.1."""

    def __init__(self, app: Flask, url: str, config: dict[str, Any], folder: Path) -> None:
        self.app = app
        self.url = url
        self.config = config
        self.folder = folder
        self.workers: list[subprocess.Popen[bytes]] = []

    def client(self, user: str, **options: Any) -> ObitoXClient:
        return ObitoXClient(f"{self.url}/obitox", auth_headers={"X-User": user}, **options)

    def work(self) -> None:
        """Start ``flask obitox worker --burst`` in a subprocess: it works the processing
        queue until it is empty. The test waits for what the page shows, never for the
        worker's exit (RQ's pubsub teardown at exit has been seen to take a minute)."""
        log = (self.folder / "worker.log").open("ab")
        self.workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "flask",
                    "--app",
                    "manager_support:create_app",
                    "obitox",
                    "worker",
                    "--burst",
                ],
                cwd=TESTS,
                env={
                    **os.environ,
                    "MANAGER_TEST_CONFIG": json.dumps(self.config),
                    "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)

    def attempts(self) -> list[str]:
        return sorted(path.name for path in self.folder.glob("attempt-*"))


@pytest.fixture
def manager_app(
    bucket: Any, moto_server: str, redis_url: str, tmp_path: Path
) -> Iterator[ManagerApp]:
    prefix = f"obitox-test-manager-{uuid.uuid4().hex[:12]}"
    config = {
        "OBITOX_ENDPOINT_URL": moto_server,
        "OBITOX_RQ_REDIS_URL": redis_url,
        "OBITOX_RQ_QUEUE": f"{prefix}-hooks",
        "OBITOX_PROCESSING_QUEUE": f"{prefix}-work",
        "MANAGER_TEST_PREFIX": prefix,
        "MANAGER_TEST_DIR": str(tmp_path),
    }
    app = create_app(config)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    live = ManagerApp(app, f"http://127.0.0.1:{server.server_port}", config, tmp_path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield live
    live.stop_workers()
    server.shutdown()
    thread.join(timeout=5)
    client = redis.Redis.from_url(redis_url)
    delete_rq_keys(client, f"{prefix}-hooks")
    delete_rq_keys(client, f"{prefix}-work")
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def open_manager(browser: Any, live: ManagerApp, user: str, width: int = 1280) -> Any:
    """A new page of ``user``'s (by cookie) on the manager, loaded and live."""
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.add_cookies([{"name": "user", "value": user, "url": live.url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: errors.append(message.text) if message.type == "error" else None,
    )
    page.goto(f"{live.url}/obitox/manager")
    page.wait_for_selector('#manager[data-loaded="true"]', state="attached", timeout=WAIT_MS)
    page.wait_for_selector('#live[data-state="live"]', timeout=WAIT_MS)
    page.errors = errors
    return page


def card(page: Any, kind: str, ident: str, status: str | None = None) -> Any:
    selector = f'li.{kind}[data-{kind}-id="{ident}"]'
    if status is not None:
        selector += f'[data-status="{status}"]'
    return page.wait_for_selector(selector, timeout=WAIT_MS)


def cell_states(page: Any, upload_id: str) -> list[str]:
    states: list[str] = page.eval_on_selector_all(
        f'li.upload[data-upload-id="{upload_id}"] .part',
        "cells => cells.map((cell) => cell.dataset.status)",
    )
    return states


def png_file(folder: Path, name: str, size: int) -> Path:
    path = folder / name
    path.write_bytes(content(size, name.encode()))
    return path


# -- (1) live: a multipart upload in a group ---------------------------------------------


def test_the_page_follows_a_multipart_upload_in_a_group_without_reloading(
    browser: Any, manager_app: ManagerApp, tmp_path: Path
) -> None:
    page = open_manager(browser, manager_app, "alice")
    page.evaluate("window.sameDocument = true")
    client = manager_app.client("alice", concurrency=1)
    group = client.create_group("holiday")
    card(page, "group", group["groupId"], "pending")

    # The upload stops at the first bytes of parts 2 and 3 until the page has shown the
    # part before it uploaded: the grid must turn green one cell at a time.
    reached = {2: threading.Event(), 3: threading.Event()}
    proceed = {2: threading.Event(), 3: threading.Event()}

    def gate(progress: Any) -> None:
        started = progress.bytes_sent // PART + (progress.bytes_sent % PART > 0)
        if started in reached and not reached[started].is_set():
            reached[started].set()
            proceed[started].wait(WAIT_MS / 1000)

    outcome: dict[str, Any] = {}

    def upload() -> None:
        try:
            outcome["result"] = client.resumable_upload(
                png_file(tmp_path, "holiday.png", 3 * PART),
                group_id=group["groupId"],
                content_type="image/png",
                on_progress=gate,
            )
        except BaseException as error:  # handed to the test thread
            outcome["error"] = error

    sender = threading.Thread(target=upload)
    sender.start()
    try:
        upload_id = None
        for number in (2, 3):
            assert reached[number].wait(WAIT_MS / 1000), outcome
            if upload_id is None:
                upload_id = page.get_attribute("li.upload", "data-upload-id")
            page.wait_for_function(
                "([id, n]) => document.querySelector("
                "`li.upload[data-upload-id='${id}'] .part[data-part='${n}']`)"
                "?.dataset.status === 'uploaded'",
                arg=[upload_id, number - 1],
                timeout=WAIT_MS,
            )
            states = cell_states(page, upload_id)
            assert len(states) == 3
            assert states[: number - 1] == ["uploaded"] * (number - 1)
            assert "uploaded" not in states[number - 1 :], states
            proceed[number].set()
    finally:
        for event in proceed.values():
            event.set()
        sender.join(60)
    assert "error" not in outcome, outcome
    upload_id = outcome["result"].upload_id
    card(page, "upload", upload_id, "completed")
    client.seal_group(group["groupId"])
    group_card = card(page, "group", group["groupId"], "completed")
    assert "1 of 1 files" in group_card.inner_text()
    assert cell_states(page, upload_id) == ["uploaded"] * 3
    assert page.evaluate("window.sameDocument") is True  # never reloaded
    assert page.errors == []
    page.context.close()


# -- (2) cancel and delete act on storage --------------------------------------------------


def test_cancel_and_delete_act_on_storage(
    browser: Any, manager_app: ManagerApp, bucket: Any, tmp_path: Path
) -> None:
    client = manager_app.client("alice")
    done = client.upload_file(png_file(tmp_path, "kept.png", 2000), content_type="image/png")
    group = client.create_group("abandoned")
    headers = {"X-User": "alice"}
    api = f"{manager_app.url}/obitox"
    started = requests.post(
        f"{api}/multipart",
        json={
            "filename": "half.png",
            "contentType": "image/png",
            "size": 2 * PART,
            "groupId": group["groupId"],
        },
        headers=headers,
        timeout=10,
    ).json()
    [part] = requests.post(
        f"{api}/multipart/{started['uploadId']}/parts",
        json={"partNumbers": [1]},
        headers=headers,
        timeout=10,
    ).json()["parts"]
    assert requests.put(part["url"], data=content(PART, b"half"), timeout=30).status_code == 200
    open_keys = [u["Key"] for u in bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    assert started["key"] in open_keys

    page = open_manager(browser, manager_app, "alice")
    card(page, "upload", started["uploadId"])
    # With the keyboard: Tab reaches the group's first button, its focus shows, Enter
    # presses it.
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => [document.activeElement.textContent, "
        "getComputedStyle(document.activeElement).outlineStyle]"
    )
    assert focused == ["Cancel abandoned", "solid"]
    page.keyboard.press("Enter")
    card(page, "group", group["groupId"], "cancelled")
    card(page, "upload", started["uploadId"], "aborted")
    open_keys = [u["Key"] for u in bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    assert started["key"] not in open_keys

    assert bucket.list_objects_v2(Bucket=BUCKET, Prefix=done.key)["KeyCount"] == 1
    page.get_by_role("button", name="Delete kept.png").click()
    card(page, "upload", done.upload_id, "deleted")
    assert bucket.list_objects_v2(Bucket=BUCKET, Prefix=done.key)["KeyCount"] == 0

    page.get_by_role("button", name="Delete abandoned").click()
    card(page, "group", group["groupId"], "deleted")
    assert client.get_group(group["groupId"])["status"] == "deleted"

    assert page.errors == []
    page.context.close()


# -- (3) retry of a failed processor --------------------------------------------------------


def test_retry_turns_a_failed_processor_completed_with_its_thumbnail(
    browser: Any, manager_app: ManagerApp, tmp_path: Path
) -> None:
    page = open_manager(browser, manager_app, "alice")
    client = manager_app.client("alice")
    done = client.upload_file(png_file(tmp_path, "cat.png", 3000), content_type="image/png")
    upload = f'li.upload[data-upload-id="{done.upload_id}"]'
    page.wait_for_selector(f'{upload} li.job-queued[data-processor="thumbnail"]', timeout=WAIT_MS)

    manager_app.work()  # the first attempt fails, and the processor has no retries
    page.wait_for_selector(f'{upload} li.job-failed[data-processor="thumbnail"]', timeout=WAIT_MS)
    assert "the first attempt fails" in page.inner_text(upload)

    page.get_by_role("button", name="Retry thumbnail").click()
    page.wait_for_selector(f'{upload} li.job-queued[data-processor="thumbnail"]', timeout=WAIT_MS)
    manager_app.work()
    page.wait_for_selector(
        f'{upload} li.job-completed[data-processor="thumbnail"]', timeout=WAIT_MS
    )
    assert manager_app.attempts() == ["attempt-1", "attempt-2"]
    page.wait_for_function(
        "(selector) => document.querySelector(`${selector} img.thumbnail`)?.naturalWidth === 1",
        arg=upload,
        timeout=WAIT_MS,
    )
    assert page.get_by_role("button", name="Retry thumbnail").count() == 0
    assert page.errors == []
    page.context.close()


# -- (4) admin only ----------------------------------------------------------------------


def test_admin_uploads_is_for_admins_only(
    browser: Any, manager_app: ManagerApp, tmp_path: Path
) -> None:
    bob = manager_app.client("bob")
    done = bob.upload_file(png_file(tmp_path, "bob.png", 1500), content_type="image/png")

    page = open_manager(browser, manager_app, "alice")
    assert page.query_selector("#admin") is None
    answer = page.evaluate(
        """async () => {
          const response = await fetch("/obitox/admin/uploads?owner=bob");
          return [response.status, await response.json()];
        }"""
    )
    assert answer[0] == 403
    assert answer[1]["error"] == "FORBIDDEN"
    assert page.query_selector(f'li.upload[data-upload-id="{done.upload_id}"]') is None
    page.context.close()

    admin = open_manager(browser, manager_app, "root")
    admin.fill("#admin-owner", "bob")
    admin.select_option("#admin-status", "completed")
    admin.get_by_role("button", name="Show their uploads").click()
    card(admin, "upload", done.upload_id, "completed")
    assert admin.inner_text("#uploads-title") == "Uploads of bob (completed)"
    admin.get_by_role("button", name="Back to mine").click()
    admin.wait_for_selector(f'li.upload[data-upload-id="{done.upload_id}"]', state="detached")
    assert admin.errors == []
    admin.context.close()


# -- (5) readable on a phone ------------------------------------------------------------


def test_no_horizontal_scroll_at_390_px(
    browser: Any, manager_app: ManagerApp, tmp_path: Path
) -> None:
    client = manager_app.client("alice")
    long_name = "a-very-long-file-name-without-any-space-" * 3 + ".png"
    client.upload_files(
        [png_file(tmp_path, long_name, 2500), png_file(tmp_path, "short.png", 1200)],
        group={"name": "a-group-name-that-goes-on-and-on-and-on-without-a-break"},
    )
    page = open_manager(browser, manager_app, "alice", width=390)
    page.wait_for_selector("li.upload[data-status='completed']", timeout=WAIT_MS)
    page.wait_for_selector("li.group", timeout=WAIT_MS)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.context.close()
