"""``python -m example_app [--port N] [--host H]``: the demo, with no services to set up.

The embedded S3 and Redis live inside this process, on ports chosen at start. So that
``flask obitox ...`` can run in another terminal against them, the environment that
builds the same app (``FLASK_APP`` included) is written to an env file, removed again
when the demo stops.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from flask_obitox import ConfigError
from flask_obitox.extension import EXTENSION_KEY, ObitoXState
from flask_obitox.storage.cors import setup_cors
from flask_obitox.storage.lifecycle import setup_lifecycle

from .app import create_app
from .services import _env_value, _origins, config_from_env, start_services
from .webhooks import SECRET_KEY, URL_KEY

logger = logging.getLogger("example_app")

#: Where the environment for ``flask obitox ...`` goes unless ``--env-file`` says.
DEFAULT_ENV_FILE = "example_app.env"
#: The app factory of every ``flask obitox ...`` command against the demo.
FLASK_APP = "example_app.worker:create_worker_app"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m example_app",
        description=(
            "The flask-obitox demo: a page that uploads files straight to S3. With no "
            "configuration it embeds an S3 (moto) and keeps state in memory; set "
            "OBITOX_ENDPOINT_URL (with OBITOX_BUCKET and credentials) to use a real S3, "
            "REDIS_URL to use Redis, and any OBITOX_* variable to set that config key."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port to listen on (5000)")
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(DEFAULT_ENV_FILE),
        metavar="PATH",
        help="where to write the environment for `flask obitox ...` in another terminal "
        f"(default: ./{DEFAULT_ENV_FILE}); it holds the demo's webhook secret, so it is "
        "readable by you only, and it is removed when the demo stops",
    )
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # so the finally below stops the embedded services


def operator_environment(config: Mapping[str, Any]) -> dict[str, str]:
    """What ``flask obitox ...`` needs to build this very app in another process: the
    configuration the worker subprocess gets, with ``FLASK_APP``."""
    environment = {"FLASK_APP": FLASK_APP}
    environment.update(
        (name, _env_value(value))
        for name, value in sorted(config.items())
        if (name.startswith("OBITOX_") or name in (URL_KEY, SECRET_KEY)) and value is not None
    )
    return environment


def write_env_file(path: Path, environment: Mapping[str, str], url: str) -> str:
    """Write ``environment`` as ``export`` lines a POSIX shell sources; its text."""
    path = path.absolute()
    text = "".join(
        [
            f"# The environment of `python -m example_app` (pid {os.getpid()}), serving {url}\n",
            f"# In another terminal: . {shlex.quote(str(path))} && flask obitox doctor\n",
            "# Removed when the demo stops. It holds the demo's webhook secret.\n",
            *(f"export {name}={shlex.quote(value)}\n" for name, value in environment.items()),
        ]
    )
    # mkstemp creates it 0600; the rename makes it appear whole or not at all.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return text


def remove_env_file(path: Path, text: str) -> None:
    """Remove the env file, unless another demo has written its own over it since."""
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            path.unlink()


def configure_embedded_bucket(app: Flask) -> None:
    """Give the embedded bucket the CORS and lifecycle rules an operator sets with
    ``flask obitox cors setup`` and ``flask obitox lifecycle setup``, so that
    ``flask obitox doctor`` finds what it asks of a real deployment."""
    ext: ObitoXState = app.extensions[EXTENSION_KEY]
    storage = ext.storages.get(ext.service.default_storage)
    settings = ext.settings
    # Each logs what it set.
    if settings.cors_origins:
        setup_cors(storage, None, configured=settings.cors_origins)
    setup_lifecycle(storage, settings.key_prefix, settings.upload_ttl)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        config = config_from_env(os.environ)
        # The page's own origins: the routes answer them, and the doctor and
        # `flask obitox cors verify` check that the bucket lets them PUT.
        config.setdefault("OBITOX_CORS_ORIGINS", _origins(args.host, args.port))
        services = start_services(config, host=args.host, port=args.port, environ=os.environ)
    except (ConfigError, RuntimeError) as error:
        sys.exit(f"example_app: {error}")
    env_text: str | None = None
    try:
        try:
            app = create_app(config)
        except ConfigError as error:
            sys.exit(f"example_app: {error}")
        if app.config["EXAMPLE_EMBEDDED_S3"]:
            configure_embedded_bucket(app)
        shown = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host  # noqa: S104
        shown = f"[{shown}]" if ":" in shown else shown
        url = f"http://{shown}:{args.port}/"
        print(f"\n  flask-obitox example app: {url}\n", flush=True)
        try:
            env_text = write_env_file(args.env_file, operator_environment(config), url)
        except OSError as error:
            logger.warning(
                "Could not write %s (%s): no env file for flask obitox", args.env_file, error
            )
        else:
            print(
                "  In another terminal, against this app and its embedded services:\n"
                f"    . {shlex.quote(str(args.env_file.absolute()))}\n"
                "    flask obitox doctor      # also: cors verify, worker, webhooks failed\n"
                "  Uploads from a script: the page shows the command, with your token (valid\n"
                "  until the demo restarts, unless SECRET_KEY is set).\n",
                flush=True,
            )
        app.run(host=args.host, port=args.port, threaded=True)
    finally:
        if env_text is not None:
            remove_env_file(args.env_file.absolute(), env_text)
        services.stop()


if __name__ == "__main__":
    main()
