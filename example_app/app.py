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

from flask import Flask, render_template, session

from flask_obitox import ObitoX

DEFAULT_BUCKET = "obitox-demo"


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
        EXAMPLE_EMBEDDED_S3=False,
    )
    if config:
        app.config.update(config)

    obitox = ObitoX()
    obitox.identity_loader(demo_user_id)
    obitox.init_app(app)

    @app.get("/")
    def index() -> str:
        settings = obitox.get_state(app).settings
        return render_template(
            "index.html",
            user_id=demo_user_id(),
            settings=settings,
            embedded=app.config["EXAMPLE_EMBEDDED_S3"],
            # The scheme only: a Redis URL may hold a password.
            state=urlsplit(settings.state_backend).scheme or "custom",
        )

    return app
