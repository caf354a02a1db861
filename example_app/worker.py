"""The example's webhook worker: ``flask --app example_app.worker obitox worker``.

``python -m example_app`` starts it as a subprocess with the same ``OBITOX_*`` and
``EXAMPLE_*`` environment as the app, which is how a real deployment runs workers:
the same app factory, the same configuration, ``flask obitox worker`` next to the web
processes.
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
    """The example app, configured from the environment, for ``flask obitox worker``."""
    config = config_from_env(os.environ)
    config.update({key: os.environ[key] for key in (URL_KEY, SECRET_KEY) if key in os.environ})
    app = create_app(config)
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent and parent.isdigit():
        threading.Thread(
            target=_exit_with_parent, args=(int(parent),), name="exit-with-parent", daemon=True
        ).start()
    return app
