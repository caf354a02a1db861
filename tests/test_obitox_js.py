"""``static/obitox.js`` as served, and kept in step with the server's rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from conftest import make_app

from flask_obitox.validation import DANGEROUS_EXTENSIONS

SOURCE = Path(__file__).parent.parent / "flask_obitox" / "static" / "obitox.js"


def test_dangerous_extensions_match_the_server() -> None:
    block = re.search(r"DANGEROUS_EXTENSIONS = new Set\(\[(.*?)\]\);", SOURCE.read_text(), re.S)
    assert block is not None
    assert set(json.loads(f"[{block.group(1).strip().rstrip(',')}]")) == set(DANGEROUS_EXTENSIONS)


def test_served_by_the_blueprint_as_javascript(s3: Any) -> None:
    app, _ = make_app()
    response = app.test_client().get("/obitox/static/obitox.js")
    assert response.status_code == 200
    assert response.mimetype in ("text/javascript", "application/javascript")
    assert b"export function ObitoX" in response.data
