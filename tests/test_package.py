"""The package's public names, and what importing the client costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flask_obitox


def test_every_public_name_resolves() -> None:
    assert sorted(flask_obitox.__all__) == sorted(flask_obitox._EXPORTS)
    for name in flask_obitox.__all__:
        assert getattr(flask_obitox, name) is not None
    assert set(flask_obitox.__all__) <= set(dir(flask_obitox))


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        flask_obitox.NoSuchThing  # noqa: B018


def test_the_client_does_not_import_the_server_stack() -> None:
    """``obitox upload`` starts without Flask, boto3 or redis (hundreds of ms)."""
    code = (
        "import sys, flask_obitox.client.cli\n"
        "heavy = sorted({'flask', 'boto3', 'botocore', 'redis', 'marshmallow'} & set(sys.modules))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == ""
