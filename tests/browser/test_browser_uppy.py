"""Uppy (``@uppy/core`` + ``@uppy/aws-s3`` 6.x from npm, bundled with esbuild at test
time) uploads through the Companion routes with ``companionEndpoint``, unmodified."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from browser.conftest import BUCKET, LiveApp, MiB, content, stored_sha256

pytestmark = [pytest.mark.browser, pytest.mark.redis]


@pytest.fixture
def uppy_page(page: Any, live_app: LiveApp, uppy_bundle: Path) -> Any:
    live_app.uppy_bundle = uppy_bundle
    # Uppy sends no custom headers: the caller is known by a cookie, as in a real app.
    page.context.add_cookies([{"name": "user", "value": "alice", "url": live_app.url}])
    page.goto(f"{live_app.url}/page/uppy")
    page.wait_for_function("window.ready === true && typeof window.makeUppy === 'function'")
    return page


def pick(page: Any, files: list[tuple[str, bytes]]) -> None:
    page.set_input_files(
        "#files", [{"name": n, "mimeType": "image/png", "buffer": d} for n, d in files]
    )


def test_small_file_by_presigned_post(uppy_page: Any, live_app: LiveApp, bucket: Any) -> None:
    data = content(40_000, b"small")
    pick(uppy_page, [("small.png", data)])
    out = uppy_page.evaluate(
        """async () => {
          const uppy = makeUppy("/obitox");
          for (const file of picked()) uppy.addFile({ name: file.name, type: file.type, data: file });
          const result = await uppy.upload();
          for (let i = 0; i < 50 && completions.length < 1; i++) await new Promise(r => setTimeout(r, 100));
          return { ok: result.successful.map(f => f.response.body.key),
                   failed: result.failed.map(f => String(f.error)), completions };
        }"""
    )
    assert out["failed"] == []
    [key] = out["ok"]
    assert stored_sha256(bucket, key) == hashlib.sha256(data).hexdigest()
    assert out["completions"][0]["status"] == "completed"
    assert out["completions"][0]["key"] == key


def test_multipart_with_pause_and_resume(uppy_page: Any, live_app: LiveApp, bucket: Any) -> None:
    data = content(12 * MiB, b"large")
    pick(uppy_page, [("large.png", data)])
    listed: list[str] = []
    uppy_page.on(
        "request",
        lambda r: (
            listed.append(r.url)
            if r.method == "GET"
            and "/obitox/s3/multipart/" in r.url
            and "?key=" in r.url
            and r.url.split("?")[0].count("/") == 6
            else None
        ),
    )
    out = uppy_page.evaluate(
        """async () => {
          const uppy = makeUppy("/obitox");
          const [file] = picked();
          const id = uppy.addFile({ name: file.name, type: file.type, data: file });
          let paused = false;
          uppy.on("s3-multipart:part-uploaded", (f, part) => {
            if (!paused && part.PartNumber === 1) {
              paused = true;
              uppy.pauseResume(id);                         // pause after part 1
              setTimeout(() => uppy.pauseResume(id), 300);  // and resume
            }
          });
          const done = new Promise((resolve) => uppy.on("upload-success", (f, r) => resolve(r)));
          uppy.upload();
          const response = await done;
          return { key: response.body.key, location: response.uploadURL, paused };
        }"""
    )
    assert out["paused"] is True
    assert listed, "resuming did not ask the server which parts storage holds"
    assert out["location"].endswith(out["key"])
    assert stored_sha256(bucket, out["key"]) == hashlib.sha256(data).hexdigest()
    upload_id = out["key"].split("/")[1]
    record = live_app.state.get(upload_id)
    assert record.status == "completed"
    assert record.size == len(data)


def test_abort_one_upload(uppy_page: Any, live_app: LiveApp, bucket: Any) -> None:
    pick(
        uppy_page,
        [("keep.png", content(11 * MiB, b"keep")), ("drop.png", content(11 * MiB, b"drop"))],
    )
    deleted: list[str] = []
    uppy_page.on("request", lambda r: deleted.append(r.url) if r.method == "DELETE" else None)
    out = uppy_page.evaluate(
        """async () => {
          const uppy = makeUppy("/obitox");
          const ids = picked().map((file) => uppy.addFile({ name: file.name, type: file.type, data: file }));
          uppy.on("s3-multipart:part-uploaded", (f) => {
            if (f.id === ids[1] && uppy.getFile(ids[1])) uppy.removeFile(ids[1]);
          });
          const result = await uppy.upload();
          return { ok: result.successful.map(f => f.response.body.key) };
        }"""
    )
    [kept] = out["ok"]
    assert kept.endswith("/keep.png")
    assert stored_sha256(bucket, kept) == hashlib.sha256(content(11 * MiB, b"keep")).hexdigest()
    uppy_page.wait_for_timeout(500)
    assert len(deleted) == 1
    dropped_id = deleted[0].split("/obitox/s3/multipart/")[1].split("?")[0]
    assert live_app.state.get(dropped_id).status == "aborted"
    assert bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
