"""``python -m example_app [--port N] [--host H]``: the demo, with no services to set up."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from flask_obitox import ConfigError

from .app import create_app
from .services import config_from_env, start_services

logger = logging.getLogger("example_app")


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
    return parser.parse_args(argv)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)  # so the finally below stops the embedded services


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        config = config_from_env(os.environ)
        services = start_services(config, host=args.host, port=args.port, environ=os.environ)
    except (ConfigError, RuntimeError) as error:
        sys.exit(f"example_app: {error}")
    try:
        try:
            app = create_app(config)
        except ConfigError as error:
            sys.exit(f"example_app: {error}")
        shown = "127.0.0.1" if args.host in ("", "0.0.0.0", "::") else args.host  # noqa: S104
        shown = f"[{shown}]" if ":" in shown else shown
        print(f"\n  flask-obitox example app: http://{shown}:{args.port}/\n", flush=True)
        app.run(host=args.host, port=args.port, threaded=True)
    finally:
        services.stop()


if __name__ == "__main__":
    main()
