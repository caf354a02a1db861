"""A runnable host app for flask-obitox: ``python -m example_app [--port N] [--host H]``."""

from .app import create_app

__all__ = ["create_app"]
