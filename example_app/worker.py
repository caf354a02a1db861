"""The example app for ``flask obitox ...`` in another process:
``flask --app example_app.worker:create_worker_app obitox worker`` (or ``doctor``, ...).

``python -m example_app`` starts its webhook worker this way, as a subprocess with the
same ``OBITOX_*`` and ``EXAMPLE_*`` environment as the app, which is how a real
deployment runs workers: the same app factory, the same configuration, ``flask obitox
worker`` next to the web processes. It also writes that environment (``FLASK_APP``
included) to an env file, so that an operator's ``flask obitox doctor``, ``cors
verify``, ``worker`` or ``webhooks failed`` in another terminal builds the same app
against the same embedded S3 and Redis.

With ``memory://`` state (the default) such a process has a state of its own, empty:
``flask obitox cleanup`` there sees none of the demo's uploads (it still aborts
multipart uploads older than ``OBITOX_UPLOAD_TTL`` that storage holds, as orphans).
"""

from __future__ import annotations

import os
import threading
import time

from flask import Flask

from .app import create_app
from .services import config_from_env
from .webhooks import SECRET_KEY, URL_KEY

#: Set by ``python -m example_app`` to its own pid: the worker exits when it is gone.
PARENT_PID_VARIABLE = "EXAMPLE_PARENT_PID"


def _exit_with_parent(parent: int) -> None:
    # A demo worker must not outlive the demo (its embedded Redis dies with it), even
    # when the demo was killed without the chance to stop it.
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os._exit(0)


def create_worker_app() -> Flask:
    """The example app, configured from the environment, for ``flask obitox ...``."""
    config = config_from_env(os.environ)
    config.update({key: os.environ[key] for key in (URL_KEY, SECRET_KEY) if key in os.environ})
    app = create_app(config)
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent and parent.isdigit():
        threading.Thread(
            target=_exit_with_parent, args=(int(parent),), name="exit-with-parent", daemon=True
        ).start()
    return app
