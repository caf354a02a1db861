"""obitox.js in headless Chromium: batch uploads, a resumable upload interrupted by a
page reload, abort, client-side rejection and re-signing of expired part URLs. Every
object is checked in the bucket by sha256."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from browser.conftest import BUCKET, LiveApp, MiB, content, stored_sha256

pytestmark = [pytest.mark.browser, pytest.mark.redis]


def open_page(page: Any, live: LiveApp) -> None:
    page.goto(f"{live.url}/page/obitox")
    page.wait_for_function("window.ready === true")


def pick(page: Any, files: list[tuple[str, bytes]], mime: str = "image/png") -> None:
    page.set_input_files(
        "#files", [{"name": name, "mimeType": mime, "buffer": data} for name, data in files]
    )


def pick_from_disk(page: Any, folder: Path, name: str, data: bytes) -> None:
    """A file from disk with a fixed mtime: the same ``lastModified`` after a reload,
    as when a user picks the same file again (buffers get a new one each time)."""
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    page.set_input_files("#files", str(path))


def test_batch_upload_of_small_files(page: Any, live_app: LiveApp, bucket: Any) -> None:
    files = [(f"photo-{i}.png", content(1000 + 37 * i, b"%d" % i)) for i in range(6)]
    open_page(page, live_app)
    pick(page, files)
    outcomes = page.evaluate(
        """async () => {
          let last = null;
          const out = await ox.uploadFiles(picked(), {
            concurrency: 3, onProgress: (p) => { last = p; },
          });
          return { last, out: out.map((o) => ({ result: o.result, error: o.error && o.error.code })) };
        }"""
    )
    assert [o["error"] for o in outcomes["out"]] == [None] * 6
    assert outcomes["last"]["loaded"] == outcomes["last"]["total"] == sum(len(d) for _, d in files)
    for (_name, data), outcome in zip(files, outcomes["out"], strict=True):
        result = outcome["result"]
        assert result["status"] == "completed"
        assert stored_sha256(bucket, result["key"]) == hashlib.sha256(data).hexdigest()


def test_rejected_file_shows_the_server_code_before_any_request(
    page: Any, live_app: LiveApp, bucket: Any
) -> None:
    open_page(page, live_app)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    pick(page, [("setup.exe", b"MZ\x90\x00" + b"\x00" * 100), ("fine.png", content(500, b"f"))])
    out = page.evaluate(
        """async () => (await ox.uploadFiles(picked())).map((o) => o.error
             ? { code: o.error.code, message: o.error.message } : { key: o.result.key })"""
    )
    assert out[0]["code"] == "VALIDATION_FAILED"
    assert "executable extension" in out[0]["message"]
    assert "key" in out[1]
    batch = [u for u in requests if u.endswith("/obitox/uploads/batch")]
    assert len(batch) == 1  # the .exe never reached the server


def test_resumable_upload_resumes_after_a_reload(
    page: Any, live_app: LiveApp, bucket: Any, tmp_path: Path
) -> None:
    data = content(12 * MiB, b"big")
    open_page(page, live_app)
    pick_from_disk(page, tmp_path, "movie.png", data)
    # Storage "fails" parts 2 and 3 on the first page: part 1 lands, then the page dies.
    page.route("**/*partNumber=2*", lambda route: route.abort())
    first = page.evaluate(
        """async () => {
          const upload = ox.resumableUpload(picked()[0], { concurrency: 1 });
          try { await upload; return { ok: true }; }
          catch (e) { return { ok: false, code: e.code, id: upload.uploadId,
                               token: localStorage.getItem(resumeKey(picked()[0])) }; }
        }"""
    )
    assert first["ok"] is False
    assert first["token"] == first["id"]
    page.unroute("**/*partNumber=2*")

    page.reload()
    page.wait_for_function("window.ready === true")
    pick_from_disk(page, tmp_path, "movie.png", data)  # same name, size and lastModified
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "PUT" else None)
    second = page.evaluate(
        """async () => {
          const upload = ox.resumableUpload(picked()[0], { concurrency: 2 });
          const result = await upload;
          return { result, resumed: upload.resumed, skipped: upload.skippedParts,
                   sent: upload.sentParts.sort(), id: upload.uploadId,
                   token: localStorage.getItem(resumeKey(picked()[0])) };
        }"""
    )
    assert second["id"] == first["id"]
    assert second["resumed"] is True
    assert second["skipped"] == [1]
    assert second["sent"] == [2, 3]
    assert not any("partNumber=1&" in url or url.endswith("partNumber=1") for url in sent)
    assert second["token"] is None
    assert second["result"]["status"] == "completed"
    assert stored_sha256(bucket, second["result"]["key"]) == hashlib.sha256(data).hexdigest()


def test_abort_stops_and_aborts_on_the_server(page: Any, live_app: LiveApp, bucket: Any) -> None:
    open_page(page, live_app)
    pick(page, [("movie.png", content(12 * MiB, b"abort"))])
    # Hold part 2 so that the abort happens mid-upload.
    page.route("**/*partNumber=2*", lambda route: None)
    out = page.evaluate(
        """async () => {
          const upload = ox.resumableUpload(picked()[0], {
            concurrency: 1,
            onProgress: (p) => { if (p.loaded >= 5 * 1024 * 1024) upload.abort(); },
          });
          try { await upload; return { ok: true }; }
          catch (e) { return { ok: false, code: e.code, id: upload.uploadId,
                               token: localStorage.getItem(resumeKey(picked()[0])) }; }
        }"""
    )
    assert out["ok"] is False
    assert out["code"] == "ABORTED"
    assert out["token"] is None
    page.wait_for_timeout(300)  # the DELETE is sent without waiting for it
    assert live_app.state.get(out["id"]).status == "aborted"
    assert bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []


def test_an_expired_part_url_is_signed_again(page: Any, live_app: LiveApp, bucket: Any) -> None:
    data = content(6 * MiB, b"expired")
    open_page(page, live_app)
    pick(page, [("clip.png", data)])
    refused: list[str] = []

    def expire_once(route: Any) -> None:
        if refused:
            route.continue_()
            return
        refused.append(route.request.url)
        route.fulfill(
            status=403,
            headers={"Access-Control-Allow-Origin": "*", "Content-Type": "application/xml"},
            body="<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>",
        )

    page.route("**/*partNumber=1*", expire_once)
    result = page.evaluate("async () => await ox.resumableUpload(picked()[0])")
    assert len(refused) == 1
    assert result["status"] == "completed"
    assert stored_sha256(bucket, result["key"]) == hashlib.sha256(data).hexdigest()
