"""Screenshots of the demo page for the docs: ``python docs/screenshots.py``.

Starts the example app as ``python -m example_app`` does (embedded S3, memory state, its
own webhook worker), drives its page in Debian's Chromium (``/usr/bin/chromium``) with
Playwright, and writes:

- ``docs/_static/demo.png``: small files uploaded and listed with their download links,
  an executable refused on the page, a large upload paused mid-way, and the webhook
  deliveries the app received;
- ``docs/_static/demo-resume.png``: the same page after a reload, offering to resume the
  large upload;
- ``docs/_static/manager-desktop.png`` (1280 px) and ``docs/_static/manager-phone.png``
  (390 px): the upload manager (``/obitox/manager``) of the same demo user, with the
  paused upload's part grid and the processors' outcomes.

Needs the ``dev`` and ``embedded`` extras and ``/usr/bin/chromium`` (never
``playwright install``). Run it again after changing the page, and commit the images.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from example_app import create_app  # noqa: E402
from example_app.services import start_services  # noqa: E402

STATIC = ROOT / "docs" / "_static"
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
MiB = 1024 * 1024
PART_SIZE = 8 * MiB
#: Parts 1 to 3 of the large file reach storage; the later ones are held until the
#: pause, so the picture shows it mid-way whatever the machine's speed.
HELD_PARTS = re.compile(r"[?&]partNumber=(?:[4-9]|\d\d+)(?:&|$)")
WAIT_MS = 60_000

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x04\x00\x00\x00\x03\x00\x08\x06\x00\x00\x00"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
MP4 = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
#: What the demo user drops at once: (name, type, first bytes, size).
DROPPED = [
    ("beach-sunset.jpg", "image/jpeg", JPEG, 2_431_877),
    ("quarterly-report.pdf", "application/pdf", PDF, 1_288_490),
    ("team-photo.png", "image/png", PNG, 3_912_004),
    ("meeting-notes.txt", "text/plain", b"Agenda\n- launch date\n", 18_342),
    ("setup.exe", "application/octet-stream", b"MZ\x90\x00\x03" + bytes(59), 1_204_224),
]
LARGE = ("offsite-keynote.mp4", MP4, 64 * MiB)


def body(head: bytes, size: int, seed: str) -> bytes:
    """``size`` bytes starting with ``head``, the rest varied (not one repeated byte)."""
    block = hashlib.sha256(seed.encode()).digest() * 2048
    filler = block * (size // len(block) + 1)
    return (head + filler)[:size]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def example_app() -> Iterator[str]:
    """The example app with its embedded services on 127.0.0.1; yields its URL."""
    port = free_port()
    # Only what this script sets: a developer's OBITOX_* or REDIS_URL would show in the picture.
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OBITOX_", "AWS_")) and name not in ("REDIS_URL", "SECRET_KEY")
    }
    config: dict[str, Any] = {"OBITOX_PART_SIZE": PART_SIZE}
    services = start_services(config, host="127.0.0.1", port=port, environ=environ)
    try:
        server = make_server("127.0.0.1", port, create_app(config), threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.shutdown()
            thread.join(timeout=5)
    finally:
        services.stop()


def drop(page: Page, files: list[tuple[str, str, bytes]]) -> None:
    """Drop ``files`` on the drop zone, as a drag from the desktop does."""
    page.evaluate(
        """(files) => {
          const transfer = new DataTransfer();
          for (const [name, type, base64] of files) {
            const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], name, { type }));
          }
          const zone = document.querySelector("#drop-zone");
          for (const type of ["dragenter", "dragover", "drop"]) {
            zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true }));
          }
        }""",
        [[name, mime, base64.b64encode(data).decode()] for name, mime, data in files],
    )


def wait_for_rows(page: Page, selector: str, count: int) -> None:
    page.wait_for_function(
        "([selector, count]) => document.querySelectorAll(selector).length >= count",
        arg=[selector, count],
        timeout=WAIT_MS,
    )


def take(page: Page, name: str, *, full_page: bool, viewport_height: int | None = None) -> None:
    """The page's column (``main``, its padding included), the whole page or the viewport."""
    page.mouse.move(0, 0)  # no hover highlight in the picture
    left, width, height = page.evaluate(
        """() => {
          const box = document.querySelector("main").getBoundingClientRect();
          return [box.left, box.width, document.documentElement.scrollHeight];
        }"""
    )
    clip = {
        "x": left,
        "y": 0,
        "width": width,
        "height": height if full_page else viewport_height or VIEWPORT["height"],
    }
    path = STATIC / name
    page.screenshot(path=str(path), full_page=full_page, clip=clip, animations="disabled")
    logging.info("wrote %s (%d KiB)", path.relative_to(ROOT), path.stat().st_size // 1024)


def drive(page: Page, url: str, folder: Path) -> None:
    page.goto(url + "/")
    page.wait_for_selector('#uploader[data-ready="true"]', state="attached")
    page.route(HELD_PARTS, lambda route: None)  # never answered: the pause cuts them off

    small = [(name, mime, body(head, size, name)) for name, mime, head, size in DROPPED]
    drop(page, small)
    name, head, size = LARGE
    large = folder / name
    large.write_bytes(body(head, size, name))
    os.utime(large, (1_700_000_000, 1_700_000_000))  # the same file after the reload
    page.set_input_files("#file-input", str(large))

    accepted = len(DROPPED) - 1
    wait_for_rows(page, '#files li[data-status="completed"]', accepted)
    page.wait_for_selector('#files li[data-name="setup.exe"][data-status="rejected"]')
    row = page.locator(f'#files li[data-name="{name}"]')
    page.wait_for_function(
        "([name, bytes]) => document.querySelector(`#files li[data-name='${name}'] progress`).value >= bytes",
        arg=[name, 3 * PART_SIZE],
        timeout=WAIT_MS,
    )
    row.locator("button.pause").click()
    page.wait_for_selector(f'#files li[data-name="{name}"][data-status="paused"]')
    wait_for_rows(page, "#completed-list li", accepted)
    # The worker delivers each upload.completed to the app; the page polls every 2 s.
    wait_for_rows(page, "#deliveries li", accepted)
    take(page, "demo.png", full_page=True)

    page.unroute(HELD_PARTS)
    page.reload()
    page.wait_for_selector('#uploader[data-ready="true"]', state="attached")
    page.locator(f'#resumable-list li[data-name="{name}"]').wait_for(timeout=WAIT_MS)
    wait_for_rows(page, "#completed-list li", accepted)
    take(page, "demo-resume.png", full_page=False)


def drive_manager(browser: Any, context: Any, url: str) -> None:
    """The upload manager of the demo user (the same session cookie), at desktop and
    phone width."""

    def open_manager(page: Page) -> None:
        page.goto(url + "/obitox/manager")
        page.wait_for_selector('#manager[data-loaded="true"]', state="attached")
        page.wait_for_selector('#live[data-state="live"]', timeout=WAIT_MS)
        wait_for_rows(page, "li.upload", len(DROPPED))
        # Every stored file's sha256 done (the demo's images are not real pictures: their
        # thumbnail fails, and waits for its retry).
        wait_for_rows(page, 'li.job-completed[data-processor="sha256"]', len(DROPPED) - 1)
        page.wait_for_selector("li.upload .part-uploaded")

    page = context.new_page()
    open_manager(page)
    take(page, "manager-desktop.png", full_page=True)
    phone = browser.new_context(
        viewport=PHONE, device_scale_factor=1, storage_state=context.storage_state()
    )
    try:
        small = phone.new_page()
        open_manager(small)
        take(small, "manager-phone.png", full_page=False, viewport_height=PHONE["height"])
    finally:
        phone.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    STATIC.mkdir(exist_ok=True)
    with (
        example_app() as url,
        tempfile.TemporaryDirectory() as folder,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        try:
            drive(context.new_page(), url, Path(folder))
            drive_manager(browser, context, url)
        finally:
            context.close()
            browser.close()


if __name__ == "__main__":
    main()
