"""The example host app: ``ObitoX(app)``, a demo identity per browser and one page.

``create_app(config)`` builds it; ``python -m example_app`` starts the services it needs
(see :mod:`example_app.services`) and runs it.

Identity: each browser gets a demo user in its session cookie. A script has no cookie,
so the page shows a token for its user (signed with ``SECRET_KEY``), which a script sends
as ``Authorization: Bearer <token>`` to be that same user, run after run: that is how
``obitox upload`` resumes what it began, or what the browser began.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app, render_template, request, session, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from werkzeug.exceptions import Unauthorized

from flask_obitox import ObitoX

from .processors import register_processors
from .uploads import DOWNLOAD_EXPIRES, register_downloads
from .webhooks import SECRET_KEY, URL_KEY, register_disabled, register_receiver

DEFAULT_BUCKET = "obitox-demo"
#: The page sends files from this size on as resumable multipart uploads (the
#: extension's default, 100 MiB, would hide pause and resume in a demo).
DEMO_MULTIPART_THRESHOLD = 8 * 1024 * 1024
#: Two upload profiles (docs/profiles.rst): the page lets each upload pick one. No
#: encryption here, so the embedded S3 and any bucket take them as they are.
EXAMPLE_PROFILES = {
    "images": {
        "allowed_content_types": ["image/*"],
        "max_file_size": 20 * 1024 * 1024,
        "key_prefix": "images/",
        "cache_control": "public, max-age=31536000, immutable",
    },
    "documents": {
        "allowed_content_types": ["application/pdf"],
        "allowed_extensions": ["pdf"],
        "key_prefix": "documents/",
        "content_disposition": "attachment",
    },
}


#: Demo user ids start with this; a token names one of them.
USER_PREFIX = "demo-"
#: Keeps the demo tokens apart from anything else signed with the same SECRET_KEY.
TOKEN_SALT = "example_app.demo-token"  # noqa: S105 - a salt, not a secret


def _tokens() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt=TOKEN_SALT)


def demo_token(user_id: str) -> str:
    """The token a script sends as ``Authorization: Bearer <token>`` to be ``user_id``.

    It never expires, and is valid while ``SECRET_KEY`` stays the same: random per start
    unless set, so by default a restart of the example voids every token.
    """
    return _tokens().dumps(user_id)


def _user_from_bearer(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("The example app takes 'Authorization: Bearer <token>' only.")
    try:
        user_id = _tokens().loads(token.strip())
    except BadSignature:
        # A new demo user would silently start the script's uploads over: refuse instead.
        raise Unauthorized(
            "This token was not signed by this app: copy the one its page shows now (the "
            "app's SECRET_KEY is random per start unless set, and a restart voids tokens)."
        ) from None
    if not isinstance(user_id, str) or not user_id.startswith(USER_PREFIX):
        raise Unauthorized("This token names no demo user.")
    return user_id


def demo_user_id() -> str:
    """The caller's demo user: the one a bearer token names (a script), else the
    browser's, created on its first request and kept in its session.

    A bearer token that does not verify is answered 401 with the reason, never with a
    new user.
    """
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        return _user_from_bearer(authorization)
    user_id = session.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        user_id = f"{USER_PREFIX}{secrets.token_hex(4)}"
        session["user_id"] = user_id
    return user_id


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The example app; ``config`` overrides the defaults (memory state, ``obitox-demo``)."""
    app = Flask(__name__)
    app.config.update(
        # Random per start unless set: restarting signs everyone out and voids the
        # scripts' tokens (the memory state forgets their uploads anyway).
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_hex(32),
        SESSION_COOKIE_SAMESITE="Lax",
        OBITOX_BUCKET=DEFAULT_BUCKET,
        OBITOX_STATE_BACKEND="memory://",
        OBITOX_MULTIPART_THRESHOLD=DEMO_MULTIPART_THRESHOLD,
        OBITOX_PROFILES=EXAMPLE_PROFILES,
        # The receiver shows each demo user the deliveries about their own uploads.
        OBITOX_WEBHOOK_INCLUDE_OWNER=True,
        EXAMPLE_EMBEDDED_S3=False,
    )
    if config:
        app.config.update(config)

    obitox = ObitoX()
    obitox.identity_loader(demo_user_id)
    register_processors(obitox)
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
        user_id = demo_user_id()
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
            user_id=user_id,
            token=demo_token(user_id),
            server=request.host_url.rstrip("/") + settings.url_prefix,
            settings=settings,
            page=page,
            embedded=app.config["EXAMPLE_EMBEDDED_S3"],
            # The scheme only: a Redis URL may hold a password.
            state=urlsplit(settings.state_backend).scheme or "custom",
            webhooks=bool(webhook_url and webhook_secret),
            download_expires=DOWNLOAD_EXPIRES,
        )

    return app
