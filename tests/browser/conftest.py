"""Browser fixtures (``tests/browser`` is a package so that this module is
``browser.conftest``, apart from ``tests/conftest.py``): Debian's Chromium through Playwright, the app as a real HTTP server
on 127.0.0.1 (moto S3 server, real Redis state), and an Uppy bundle built at test time.

Without ``/usr/bin/chromium`` (or ``npm`` for the Uppy page) these tests skip, and fail
under ``CI=true``, where ``.ci/run`` installs Chromium first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from flask import Flask, Response, request, send_file
from werkzeug.serving import make_server

from flask_obitox import ObitoX, RedisStateBackend

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BUCKET = "obitox-browser"
MiB = 1024 * 1024
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 16
#: Exact versions of the current 6.x line (`npm view @uppy/aws-s3 versions`).
UPPY_PACKAGES = ["@uppy/core@6.3.1", "@uppy/aws-s3@6.3.1", "esbuild@0.28.2"]
PAGES = Path(__file__).parent / "pages"


def content(size: int, seed: bytes) -> bytes:
    """A PNG-looking body of ``size`` bytes (verification sniffs the first bytes)."""
    block = hashlib.sha256(seed).digest() * (size // 32 + 1)
    return (PNG + block)[:size]


def stored_sha256(s3: Any, key: str) -> str:
    """The sha256 of the object ``key`` as the bucket holds it."""
    return hashlib.sha256(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()).hexdigest()


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; CI must provide it (.ci/run installs chromium)")
    pytest.skip(f"{what} is missing")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing(CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def bucket(moto_server: str) -> Iterator[Any]:
    """A bucket on the moto server that browsers on any origin may PUT and POST to."""
    s3 = boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_cors(
        Bucket=BUCKET,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": ["*"],
                    "AllowedMethods": ["GET", "PUT", "POST"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                }
            ]
        },
    )
    yield s3
    for page_ in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page_.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    for upload in s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
    s3.delete_bucket(Bucket=BUCKET)


@pytest.fixture(scope="session")
def uppy_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``@uppy/core`` + ``@uppy/aws-s3`` from npm, bundled by esbuild into one file."""
    npm = shutil.which("npm")
    if npm is None:
        _missing("npm")
    assert npm is not None
    work = tmp_path_factory.mktemp("uppy")
    (work / "package.json").write_text('{"name": "obitox-uppy-test", "private": true}')
    shutil.copy(PAGES / "uppy-entry.js", work / "entry.js")
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *UPPY_PACKAGES],
        cwd=work,
        check=True,
        timeout=300,
    )
    subprocess.run(
        [
            str(work / "node_modules" / ".bin" / "esbuild"),
            "entry.js",
            "--bundle",
            "--format=iife",
            "--outfile=uppy-bundle.js",
        ],
        cwd=work,
        check=True,
        timeout=120,
    )
    return work / "uppy-bundle.js"


class LiveApp:
    """The app served on 127.0.0.1; callers are named by the ``user`` cookie or the
    ``X-User`` header."""

    def __init__(self, app: Flask, url: str, state: RedisStateBackend) -> None:
        self.app = app
        self.url = url
        self.state = state
        self.uppy_bundle: Path | None = None


@pytest.fixture
def live_app(bucket: Any, moto_server: str, redis_url: str) -> Iterator[LiveApp]:
    prefix = f"obitox-browser-{uuid.uuid4().hex[:12]}"
    state = RedisStateBackend.from_url(redis_url, prefix=prefix)
    app = Flask("obitox_browser_app")
    app.config.update(
        OBITOX_BUCKET=BUCKET,
        OBITOX_REGION="us-east-1",
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_AWS_ACCESS_KEY_ID="testing",
        OBITOX_AWS_SECRET_ACCESS_KEY="testing",
        OBITOX_PART_SIZE=5 * 1024 * 1024,
        OBITOX_MAX_FILE_SIZE=8 * 1024 * 1024,
    )
    obitox = ObitoX(state=state)

    @obitox.identity_loader
    def owner() -> str | None:
        return request.headers.get("X-User") or request.cookies.get("user")

    obitox.init_app(app)
    live = LiveApp(app, "", state)

    @app.get("/page/<name>")
    def html_page(name: str) -> Response:
        return send_file(PAGES / f"{name}.html")

    @app.get("/uppy-bundle.js")
    def uppy_js() -> Response:
        assert live.uppy_bundle is not None
        return send_file(live.uppy_bundle, mimetype="text/javascript")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    live.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield live
    server.shutdown()
    thread.join(timeout=5)
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
