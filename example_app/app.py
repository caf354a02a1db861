"""The example host app: ``ObitoX(app)``, a demo identity per browser and one page.

``create_app(config)`` builds it; ``python -m example_app`` starts the services it needs
(see :mod:`example_app.services`) and runs it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, render_template, session, url_for

from flask_obitox import ObitoX

from .uploads import DOWNLOAD_EXPIRES, register_downloads
from .webhooks import SECRET_KEY, URL_KEY, register_disabled, register_receiver

DEFAULT_BUCKET = "obitox-demo"
#: The page sends files from this size on as resumable multipart uploads (the
#: extension's default, 100 MiB, would hide pause and resume in a demo).
DEMO_MULTIPART_THRESHOLD = 8 * 1024 * 1024


def demo_user_id() -> str:
    """The browser's demo user, created on its first request and kept in its session."""
    user_id = session.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        user_id = f"demo-{secrets.token_hex(4)}"
        session["user_id"] = user_id
    return user_id


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The example app; ``config`` overrides the defaults (memory state, ``obitox-demo``)."""
    app = Flask(__name__)
    app.config.update(
        # Random per start unless set: restarting signs everyone out (the memory state
        # forgets their uploads anyway).
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        SESSION_COOKIE_SAMESITE="Lax",
        OBITOX_BUCKET=DEFAULT_BUCKET,
        OBITOX_STATE_BACKEND="memory://",
        OBITOX_MULTIPART_THRESHOLD=DEMO_MULTIPART_THRESHOLD,
        # The receiver shows each demo user the deliveries about their own uploads.
        OBITOX_WEBHOOK_INCLUDE_OWNER=True,
        EXAMPLE_EMBEDDED_S3=False,
    )
    if config:
        app.config.update(config)

    obitox = ObitoX()
    obitox.identity_loader(demo_user_id)
    webhook_url, webhook_secret = app.config.get(URL_KEY), app.config.get(SECRET_KEY)
    if webhook_url and webhook_secret:
        # The example is its own webhook receiver (see example_app/webhooks.py).
        obitox.add_webhook(webhook_url, webhook_secret)
        register_receiver(app, webhook_secret, demo_user_id)
    else:
        register_disabled(app)
    obitox.init_app(app)
    register_downloads(app, obitox, demo_user_id)

    @app.get("/")
    def index() -> str:
        settings = obitox.get_state(app).settings
        # What the page's script needs, mirrored from the server's configuration so
        # that its client-side checks refuse what the server would refuse.
        page = {
            "api": settings.url_prefix,
            "client": url_for("obitox.static", filename="obitox.js"),
            "threshold": settings.multipart_threshold,
            "partSize": settings.part_size,
            "batchMax": settings.batch_max_files,
            "maxFileSize": settings.max_file_size,
            "maxMultipartSize": settings.max_multipart_size,
            "rules": {
                "minSize": settings.min_file_size or None,
                "allowedTypes": list(settings.allowed_content_types),
                "allowedExtensions": list(settings.allowed_extensions),
                "blockExecutables": settings.block_executables,
            },
            "completedUrl": url_for("list_completed"),
            "deliveriesUrl": url_for("list_deliveries"),
        }
        return render_template(
            "index.html",
            user_id=demo_user_id(),
            settings=settings,
            page=page,
            embedded=app.config["EXAMPLE_EMBEDDED_S3"],
            # The scheme only: a Redis URL may hold a password.
            state=urlsplit(settings.state_backend).scheme or "custom",
            webhooks=bool(webhook_url and webhook_secret),
            download_expires=DOWNLOAD_EXPIRES,
        )

    return app
