"""The example app's demo page in headless Chromium, served by a real HTTP server.

One visit, as a user makes it: a batch of 20 small files, a 20 MiB file and an ``.exe``
chosen at once. The executable is refused on the page with the server's code before any
request, the small files go in one batch call, and the 20 MiB upload is cut off by a
page reload once its first part is stored. Choosing the same file again resumes it: the
server's resume view says which parts storage holds and only the others are sent. Every
object is then checked by sha256, in the bucket and through the page's download links.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from browser.conftest import BUCKET, MiB, content
from example_app import create_app

pytestmark = [pytest.mark.browser]

PART_SIZE = 5 * MiB
#: Four 5 MiB parts: one is stored before the reload, three are left for the resume.
LARGE_SIZE = 20 * MiB
SMALL_FILES = 20
EXECUTABLE = ("setup.exe", b"MZ\x90\x00" + bytes(200), "application/octet-stream")
#: The PUTs of every part but the first.
LATER_PARTS = re.compile(r"[?&]partNumber=(?!1(?:&|$))\d+")
#: Long enough for a 20 MiB upload on a slow, shared machine; only a bound, never a measure.
UPLOAD_WAIT_MS = 120_000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def demo_url(bucket: Any, moto_server: str) -> Iterator[str]:
    """The example app as ``python -m example_app`` builds it (memory state), on the
    test moto server, served on 127.0.0.1 in a thread."""
    app = create_app(
        {
            "OBITOX_BUCKET": BUCKET,
            "OBITOX_REGION": "us-east-1",
            "OBITOX_ENDPOINT_URL": moto_server,
            "OBITOX_ADDRESSING_STYLE": "path",
            "OBITOX_AWS_ACCESS_KEY_ID": "testing",
            "OBITOX_AWS_SECRET_ACCESS_KEY": "testing",
            "OBITOX_PART_SIZE": PART_SIZE,
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


def open_demo(page: Any, url: str) -> None:
    page.goto(url + "/")
    wait_until_ready(page)


def wait_until_ready(page: Any) -> None:
    page.wait_for_selector('#uploader[data-ready="true"]', state="attached")


def drop(page: Any, files: list[tuple[str, bytes, str]]) -> None:
    """Drop ``files`` on the drop zone, as a drag from the desktop does."""
    page.evaluate(
        """(files) => {
          const transfer = new DataTransfer();
          for (const [name, bytes, type] of files) {
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type }));
          }
          const zone = document.querySelector("#drop-zone");
          for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
          }
        }""",
        [[name, list(data), mime] for name, data, mime in files],
    )


def choose_from_disk(page: Any, path: Path) -> None:
    """Choose ``path`` in the file dialog; its fixed mtime gives the same ``lastModified``
    after a reload, as when a user picks the same file again."""
    os.utime(path, (1_700_000_000, 1_700_000_000))
    page.set_input_files("#file-input", str(path))


def row(page: Any, name: str) -> Any:
    return page.locator(f'#files li.file[data-name="{name}"]')


def wait_until_finished(page: Any, name: str) -> str:
    """The row's final status: completed, failed or rejected."""
    finished = ("completed", "failed", "rejected")
    selector = ", ".join(f'#files li.file[data-name="{name}"][data-status="{s}"]' for s in finished)
    page.wait_for_selector(selector, timeout=UPLOAD_WAIT_MS)
    status: str = row(page, name).get_attribute("data-status")
    return status


def resume_view_once_stored(page: Any, url: str, token: str) -> dict[str, Any]:
    """``GET /obitox/multipart/<token>`` as the page's user, once storage holds a part."""
    deadline = time.monotonic() + UPLOAD_WAIT_MS / 1000
    while True:
        view: dict[str, Any] = page.request.get(f"{url}/obitox/multipart/{token}").json()
        if view["uploadedParts"] or time.monotonic() > deadline:
            return view
        page.wait_for_timeout(100)


def part_number(url: str) -> int:
    match = re.search(r"[?&]partNumber=(\d+)", url)
    assert match is not None, url
    return int(match.group(1))


def test_demo_uploads_a_batch_and_resumes_a_large_file_after_a_reload(
    page: Any, demo_url: str, bucket: Any, tmp_path: Path
) -> None:
    small = [
        (f"photo-{i:02}.png", content(2000 + 311 * i, b"small%d" % i), "image/png")
        for i in range(SMALL_FILES)
    ]
    large = tmp_path / "movie.png"
    large.write_bytes(content(LARGE_SIZE, b"large"))
    expected = {name: sha256(data) for name, data, _ in small} | {
        "movie.png": sha256(large.read_bytes())
    }
    open_demo(page, demo_url)
    batch_calls: list[Any] = []
    page.on("request", lambda r: batch_calls.append(r) if "/uploads/batch" in r.url else None)
    # Parts 2 to 4 never get an answer: the reload below cuts them off mid-way.
    held: list[Any] = []
    page.route(LATER_PARTS, lambda route: held.append(route))

    drop(page, [*small, EXECUTABLE])
    choose_from_disk(page, large)

    for name, _, _ in small:
        assert wait_until_finished(page, name) == "completed"
        assert row(page, name).get_attribute("data-mode") == "batch"
    # The executable was refused on the page, with the server's code, before any request.
    assert row(page, "setup.exe").get_attribute("data-status") == "rejected"
    refusal = row(page, "setup.exe").locator(".detail").inner_text()
    assert "VALIDATION_FAILED" in refusal
    assert "executable extension" in refusal
    [batch_call] = batch_calls
    assert [f["filename"] for f in batch_call.post_data_json["files"]] == [n for n, _, _ in small]

    # The 20 MiB upload, mid-way: part 1 in storage, the others on their way.
    token = page.evaluate(
        "() => Object.entries(localStorage).find(([k]) => k.startsWith('obitox:resume:movie.png:'))[1]"
    )
    before = resume_view_once_stored(page, demo_url, token)
    assert (before["status"], before["totalParts"]) == ("uploading", 4)
    assert [p["partNumber"] for p in before["uploadedParts"]] == [1]
    assert before["remainingParts"] == [2, 3, 4]
    assert row(page, "movie.png").get_attribute("data-status") == "uploading"
    assert row(page, "movie.png").get_attribute("data-mode") == "resumable"
    assert held, "no later part was on its way when the page reloaded"
    page.wait_for_function(
        "document.querySelector('#total-numbers').textContent.endsWith('20 of 22 files done')"
    )

    page.reload()
    page.unroute(LATER_PARTS)
    wait_until_ready(page)
    unfinished = page.locator('#resumable-list li[data-name="movie.png"]')
    unfinished.wait_for()
    assert "1 of 4 parts in storage" in unfinished.inner_text()

    views: list[Any] = []
    puts: list[str] = []
    view_path = f"/obitox/multipart/{token}"
    page.on("response", lambda r: views.append(r) if r.url.endswith(view_path) else None)
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    choose_from_disk(page, large)  # the same name, size and lastModified
    assert wait_until_finished(page, "movie.png") == "completed"
    # The resumed upload asked the server first, which named the part it already held.
    [resume_view] = views
    assert [p["partNumber"] for p in resume_view.json()["uploadedParts"]] == [1]
    assert sorted(part_number(url) for url in puts) == [2, 3, 4]
    detail = row(page, "movie.png").locator(".detail").inner_text()
    assert "resumed: 1 part(s) already in storage skipped, 3 sent" in detail
    page.wait_for_selector("#resumable", state="hidden")

    # Each object in the bucket holds the bytes of its file; the executable is not there.
    stored = {
        item["Key"].rsplit("/", 1)[1]: sha256(
            bucket.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        )
        for item in bucket.list_objects_v2(Bucket=BUCKET)["Contents"]
    }
    assert stored == expected
    assert bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []

    # The completed list (from the upload-completed signal) links to presigned GETs.
    page.wait_for_function(
        "(count) => document.querySelectorAll('#completed-list li').length === count",
        arg=SMALL_FILES + 1,
    )
    for name in ("movie.png", "photo-07.png"):
        link = page.locator(f'#completed-list li[data-name="{name}"] a.download')
        downloaded = page.request.get(demo_url + link.get_attribute("href"))  # its cookies
        assert downloaded.status == 200
        assert sha256(downloaded.body()) == expected[name]
