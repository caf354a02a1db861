"""The example app's demo page in headless Chromium, served by a real HTTP server: small
files dropped and a large one chosen upload, the completed list links to downloads that
give back the same bytes, a refused file shows its code and message, and a large upload
cut short continues after a reload with only the missing parts."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from browser.conftest import BUCKET
from example_app import create_app

pytestmark = [pytest.mark.browser]

MiB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 16
#: Long enough for a 12 MiB upload on a slow, shared machine; only a bound, never a measure.
UPLOAD_WAIT_MS = 120_000


def content(size: int, seed: bytes) -> bytes:
    """A PNG-looking body of ``size`` bytes (verification sniffs the first bytes)."""
    block = hashlib.sha256(seed).digest() * (size // 32 + 1)
    return (PNG + block)[:size]


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
            # 12 MiB in three parts: one can land while the others are cut off.
            "OBITOX_PART_SIZE": 5 * MiB,
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


def choose_from_disk(page: Any, folder: Path, name: str, data: bytes) -> None:
    """Choose a file from disk with a fixed mtime: the same ``lastModified`` after a
    reload, as when a user picks the same file again."""
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    page.set_input_files("#file-input", str(path))


def row(page: Any, name: str) -> Any:
    return page.locator(f'#files li.file[data-name="{name}"]')


def wait_for_status(page: Any, name: str, *statuses: str) -> str:
    selector = ", ".join(f'#files li.file[data-name="{name}"][data-status="{s}"]' for s in statuses)
    page.wait_for_selector(selector, timeout=UPLOAD_WAIT_MS)
    status: str = row(page, name).get_attribute("data-status")
    return status


def test_demo_uploads_small_and_large_files_and_lists_downloads(
    page: Any, demo_url: str, bucket: Any, tmp_path: Path
) -> None:
    small = [
        (f"photo-{i}.png", content(2000 + 311 * i, b"small%d" % i), "image/png") for i in range(3)
    ]
    large = content(12 * MiB, b"large")
    open_demo(page, demo_url)
    batch_calls: list[str] = []
    page.on("request", lambda r: batch_calls.append(r.url) if "/uploads/batch" in r.url else None)

    drop(page, [*small, ("evil.exe", b"MZ\x90\x00" + bytes(200), "application/octet-stream")])
    choose_from_disk(page, tmp_path, "movie.png", large)

    for name, _, _ in small:
        assert wait_for_status(page, name, "completed", "failed", "rejected") == "completed"
        assert row(page, name).get_attribute("data-mode") == "batch"
    assert wait_for_status(page, "movie.png", "completed", "failed", "rejected") == "completed"
    assert row(page, "movie.png").get_attribute("data-mode") == "resumable"
    assert "3 part(s)" in row(page, "movie.png").locator(".detail").inner_text()

    # The executable was refused on the page, with the server's code, before any request.
    assert row(page, "evil.exe").get_attribute("data-status") == "rejected"
    refusal = row(page, "evil.exe").locator(".detail").inner_text()
    assert "VALIDATION_FAILED" in refusal
    assert "executable extension" in refusal
    assert len(batch_calls) == 1  # the three small files, signed in one call

    total = sum(len(data) for _, data, _ in small) + len(large)
    page.wait_for_function(
        "(total) => document.querySelector('#total-progress').value === total", arg=total
    )
    assert "4 of 5 files done" in page.locator("#total-numbers").inner_text()

    # The completed list (from the upload-completed signal) links to presigned GETs.
    page.wait_for_function("document.querySelectorAll('#completed-list li').length === 4")
    listed = page.locator("#completed-list li").evaluate_all(
        "(items) => items.map((li) => [li.dataset.name, li.querySelector('a.download').href])"
    )
    assert sorted(name for name, _ in listed) == sorted(["movie.png", *(n for n, _, _ in small)])
    expected = {name: data for name, data, _ in small} | {"movie.png": large}
    for name, href in listed:
        if name not in ("movie.png", "photo-1.png"):
            continue
        downloaded = page.request.get(href)  # the page's cookies; follows the redirect
        assert downloaded.status == 200
        assert sha256(downloaded.body()) == sha256(expected[name])


def test_demo_resumes_a_large_upload_after_a_reload(
    page: Any, demo_url: str, bucket: Any, tmp_path: Path
) -> None:
    data = content(12 * MiB, b"resume")
    open_demo(page, demo_url)
    # The first page sends part 1; parts 2 and 3 never reach storage, then it reloads.
    page.route("**/*partNumber=2*", lambda route: route.abort())
    page.route("**/*partNumber=3*", lambda route: route.abort())
    choose_from_disk(page, tmp_path, "movie.png", data)
    assert wait_for_status(page, "movie.png", "completed", "failed", "rejected") == "failed"
    token = page.evaluate(
        "() => Object.entries(localStorage).find(([k]) => k.startsWith('obitox:resume:movie.png:'))[1]"
    )
    deadline = time.monotonic() + 60
    while True:  # part 1 may still be on its way when the others fail
        view = page.request.get(f"{demo_url}/obitox/multipart/{token}").json()
        if view["uploadedParts"] or time.monotonic() > deadline:
            break
        page.wait_for_timeout(100)
    assert [p["partNumber"] for p in view["uploadedParts"]] == [1]
    page.unroute("**/*partNumber=2*")
    page.unroute("**/*partNumber=3*")

    page.reload()
    page.wait_for_selector('#uploader[data-ready="true"]', state="attached")
    unfinished = page.locator('#resumable-list li[data-name="movie.png"]')
    unfinished.wait_for()
    assert "1 of 3 parts in storage" in unfinished.inner_text()

    puts: list[str] = []
    page.on("request", lambda r: puts.append(r.url) if r.method == "PUT" else None)
    choose_from_disk(page, tmp_path, "movie.png", data)  # same name, size and lastModified
    assert wait_for_status(page, "movie.png", "completed", "failed", "rejected") == "completed"
    detail = row(page, "movie.png").locator(".detail").inner_text()
    assert "resumed: 1 part(s) already in storage skipped, 2 sent" in detail
    assert sorted(url.split("partNumber=")[1].split("&")[0] for url in puts) == ["2", "3"]
    page.wait_for_selector("#resumable", state="hidden")

    listed = page.locator('#completed-list li[data-name="movie.png"] a.download')
    listed.wait_for()
    downloaded = page.request.get(demo_url + listed.get_attribute("href"))
    assert sha256(downloaded.body()) == sha256(data)
    [stored] = bucket.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert stored["Size"] == len(data)
