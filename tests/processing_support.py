"""The host app of the processing worker tests, built the same way in the test and in
its ``flask obitox worker`` subprocesses (from ``WEBHOOK_TEST_CONFIG``, JSON): state in
the real Redis under a prefix of the test's own, storage on the moto server."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from flask import Flask, request

from flask_obitox import ObitoX
from flask_obitox.state import RedisStateBackend


def create_app(config: dict[str, Any] | None = None) -> Flask:
    if config is None:
        config = json.loads(os.environ["WEBHOOK_TEST_CONFIG"])
    app = Flask("obitox_processing_test")
    app.config.update(
        TESTING=True,
        OBITOX_BUCKET="obitox-test",
        OBITOX_REGION="us-east-1",
        OBITOX_AWS_ACCESS_KEY_ID="testing",
        OBITOX_AWS_SECRET_ACCESS_KEY="testing",
        OBITOX_RATE_LIMITS="",
        OBITOX_VERIFY_CONTENT=False,
    )
    app.config.update(config)
    state = RedisStateBackend.from_url(
        config["OBITOX_RQ_REDIS_URL"], prefix=config["PROCESSING_TEST_PREFIX"]
    )
    obitox = ObitoX(state=state)
    markers = Path(config["PROCESSING_TEST_DIR"])

    @obitox.identity_loader
    def current_owner() -> str | None:
        return request.headers.get("X-User")

    @obitox.processor("sha256", content_types=["text/*"])
    def sha256(ctx: Any) -> dict[str, str]:
        digest = hashlib.sha256()
        stream = ctx.open()
        for chunk in iter(lambda: stream.read(1 << 16), b""):
            digest.update(chunk)
        return {"sha256": digest.hexdigest()}

    @obitox.processor("slow", content_types=["application/x-slow"], retries=1, timeout=8)
    def slow(ctx: Any) -> dict[str, Any]:
        # The first attempt announces itself, then waits to be killed with its worker.
        if ctx.attempt == 1:
            (markers / f"slow-{ctx.upload['uploadId']}").write_text(str(os.getpid()))
            time.sleep(60)
        return {"attempt": ctx.attempt}

    @obitox.processor("doomed", content_types=["application/x-doomed"], retries=0, timeout=3)
    def doomed(ctx: Any) -> dict[str, Any]:
        if ctx.attempt == 1:
            (markers / f"doomed-{ctx.upload['uploadId']}").write_text(str(os.getpid()))
            time.sleep(60)
        return {"attempt": ctx.attempt}

    @obitox.processor("hang", content_types=["application/x-hang"], retries=1, timeout=2)
    def hang(ctx: Any) -> None:
        time.sleep(60)

    obitox.init_app(app)
    return app
