"""The host app of the upload manager's browser tests
(``tests/browser/test_browser_manager.py``), built the same way in the test's server and
in its ``flask obitox worker --burst`` subprocesses (from ``MANAGER_TEST_CONFIG``,
JSON): state in the real Redis under the test's own prefix, storage on the moto server.

Callers name themselves in the ``user`` cookie (the page) or the ``X-User`` header (the
Python client); ``root`` is the admin. Every PNG gets the ``thumbnail`` processor, whose
first attempt on any upload fails and whose later ones save a 1x1 PNG."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from flask import Flask, request

from flask_obitox import ObitoX, RedisStateBackend

BUCKET = "obitox-browser"
PART = 5 * 1024 * 1024
#: A valid 1x1 PNG: what the processor saves as the upload's thumbnail.
THUMBNAIL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    if config is None:
        config = json.loads(os.environ["MANAGER_TEST_CONFIG"])
    app = Flask("obitox_manager_test")
    app.config.update(
        OBITOX_BUCKET=BUCKET,
        OBITOX_REGION="us-east-1",
        OBITOX_AWS_ACCESS_KEY_ID="testing",
        OBITOX_AWS_SECRET_ACCESS_KEY="testing",
        OBITOX_PART_SIZE=PART,
        OBITOX_MAX_FILE_SIZE=32 * 1024 * 1024,
        OBITOX_RATE_LIMITS="",
    )
    app.config.update({k: v for k, v in config.items() if k.startswith("OBITOX_")})
    state = RedisStateBackend.from_url(
        config["OBITOX_RQ_REDIS_URL"], prefix=config["MANAGER_TEST_PREFIX"]
    )
    obitox = ObitoX(state=state)
    markers = Path(config["MANAGER_TEST_DIR"])

    @obitox.identity_loader
    def owner() -> str | None:
        return request.headers.get("X-User") or request.cookies.get("user")

    @obitox.admin_loader
    def admin() -> bool:
        return owner() == "root"

    @obitox.processor("thumbnail", content_types=["image/png"], retries=0)
    def thumbnail(ctx: Any) -> dict[str, Any]:
        attempt = len(list(markers.glob("attempt-*"))) + 1
        (markers / f"attempt-{attempt}").write_text(ctx.upload["uploadId"])
        if attempt == 1:
            raise RuntimeError("the first attempt fails")
        return {"thumbnail": ctx.save("thumb.png", THUMBNAIL, "image/png"), "width": 1}

    obitox.init_app(app)
    return app
