"""``static/obitox.js`` as served, and kept in step with the server's rules."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import puremagic
import pytest
from conftest import make_app

from flask_obitox.config import NETWORK_TYPES
from flask_obitox.validation import DANGEROUS_EXTENSIONS, verify_content
from flask_obitox.validation.content import _STRICT_FAMILIES, _family
from flask_obitox.validation.rules import Rules, normalize_content_type

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


# -- the module's pure functions, run by Node against the server's own checks -----------

NODE_RUNNER = """
import * as obitox from %s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const { fn, calls } = JSON.parse(input);
const decode = (arg) => (arg && arg.hex !== undefined ? Uint8Array.from(Buffer.from(arg.hex, "hex")) : arg);
console.log(JSON.stringify(calls.map((args) => obitox[fn](...args.map(decode)))));
"""


def node_calls(fn: str, calls: list[list[Any]]) -> list[Any]:
    """``fn(*args)`` of obitox.js for each ``args`` in Node (bytes as ``{"hex": ...}``)."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is missing; CI must provide it")
        pytest.skip("node is missing")
    script = NODE_RUNNER % json.dumps(SOURCE.as_uri())
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        input=json.dumps({"fn": fn, "calls": calls}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answers: list[Any] = json.loads(done.stdout)
    return answers


def client_refusals(cases: list[tuple[str, bytes]], block_executables: bool = True) -> list[Any]:
    return node_calls(
        "contentRefusal",
        [[{"hex": head.hex()}, declared, block_executables] for declared, head in cases],
    )


OPEN = Rules(max_size=10 * 2**30).ruleset()
OPEN_EXECUTABLES = Rules(max_size=10 * 2**30, block_executables=False).ruleset()


def puremagic_signature_cases() -> list[tuple[str, bytes]]:
    """A head for every puremagic header signature of a type that always carries one,
    declared as that type: the server counts each as the type."""
    table = json.loads((Path(puremagic.__file__).parent / "magic_data.json").read_text())
    cases = []
    for signature, offset, _ext, mime, _name in table["headers"]:
        declared = normalize_content_type(mime) if mime else ""
        if _family(declared) in _STRICT_FAMILIES and offset >= 0:
            head = b"\x01" * offset + bytes.fromhex(signature) + b"\x01" * 64
            cases.append((declared, head))
    return cases


def test_the_client_never_refuses_a_signature_the_server_accepts() -> None:
    cases = puremagic_signature_cases()
    assert len(cases) > 100
    refused = client_refusals(cases)
    wrongly = [
        (declared, head[:40].hex(), reason)
        for (declared, head), reason in zip(cases, refused, strict=True)
        if reason is not None and verify_content(declared, head, OPEN) is None
    ]
    # A new puremagic signature: add it to SIGNATURES in obitox.js.
    assert wrongly == []


PE = (
    b"MZ\x90\x00\x03\x00\x00\x00"
    + b"\x00" * 52
    + b"\x40\x00\x00\x00"
    + b"PE\x00\x00"
    + b"\x00" * 60
)
REFUSED_BY_BOTH = [
    ("image/png", PE),  # a .exe renamed .png
    ("text/plain", PE),
    ("application/pdf", b"\x7fELF\x02\x01\x01" + b"\x00" * 60),
    ("application/octet-stream", b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + b"\x00" * 40),
    ("text/plain", b"#! /bin/sh\necho hi\n"),
    ("image/png", b"%PDF-1.7\n" + b"x" * 100),
    ("image/png", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 50),
    ("image/jpg", b"just some text, not a picture"),
    ("video/mp4", b"plain words here, no boxes at all"),
    ("application/x-zip-compressed", b"hello"),
    ("image/png", b""),
]
ACCEPTED_BY_BOTH = [
    ("image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 16),
    ("image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 50),
    ("image/gif", b"GIF89a" + b"\x00" * 30),
    ("image/webp", b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 30),
    ("audio/x-wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 30),
    ("application/pdf", b"\xef\xbb\xbf junk first\n%PDF-1.4\n" + b"x" * 40),
    ("video/mp4", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"),
    ("video/webm", b"\x1a\x45\xdf\xa3" + b"\x00" * 40),
    ("audio/ogg", b"OggS\x00\x02" + b"\x00" * 40),
    (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        b"PK\x03\x04" + b"\x00" * 60,
    ),
    ("text/plain", b"#![allow(dead_code)]\nfn main() {}\n"),
    ("text/csv", b"a,b,c\n1,2,3\n"),
    ("application/octet-stream", bytes(range(256))),
]


def test_the_client_refuses_what_the_server_refuses() -> None:
    assert [verify_content(t, h, OPEN) is not None for t, h in REFUSED_BY_BOTH] == [True] * len(
        REFUSED_BY_BOTH
    )
    assert [verify_content(t, h, OPEN) for t, h in ACCEPTED_BY_BOTH] == [None] * len(
        ACCEPTED_BY_BOTH
    )
    refused = client_refusals(REFUSED_BY_BOTH + ACCEPTED_BY_BOTH)
    assert [r is not None for r in refused] == [True] * len(REFUSED_BY_BOTH) + [False] * len(
        ACCEPTED_BY_BOTH
    )
    assert "not accepted" in refused[0]
    assert refused[-len(ACCEPTED_BY_BOTH) - 1] == "content is empty, not image/png"


def test_executables_pass_when_allowed_unless_the_type_needs_a_signature() -> None:
    cases = [("application/octet-stream", PE), ("image/png", PE)]
    refused = client_refusals(cases, block_executables=False)
    server = [verify_content(t, h, OPEN_EXECUTABLES) for t, h in cases]
    assert [r is not None for r in refused] == [s is not None for s in server] == [False, True]


def test_random_heads_are_refused_by_the_client_only_when_the_server_refuses_them() -> None:
    rng = random.Random(15)
    prefixes = [
        b"",
        b"\x89PNG",
        b"RIFF",
        b"PK\x03\x04",
        b"MZ",
        b"#!",
        b"\x00\x00\x00\x1cftyp",
        b"%PDF",
    ]
    types = ["image/png", "image/jpeg", "image/webp", "application/pdf", "application/zip",
             "video/mp4", "audio/wav", "text/plain", "application/octet-stream"]  # fmt: skip
    cases = [
        (rng.choice(types), rng.choice(prefixes) + rng.randbytes(rng.randrange(0, 80)))
        for _ in range(400)
    ]
    refused = client_refusals(cases)
    wrongly = [
        (declared, head.hex())
        for (declared, head), reason in zip(cases, refused, strict=True)
        if reason is not None and verify_content(declared, head, OPEN) is None
    ]
    assert wrongly == []
    assert sum(r is not None for r in refused) > 100  # the check does refuse


def test_network_type_maps_the_network_information_api_to_the_server_values() -> None:
    connections = [
        None,
        {},
        {"effectiveType": "slow-2g"},
        {"effectiveType": "2g", "type": "wifi"},  # a slow Wi-Fi is slow
        {"effectiveType": "3g", "type": "cellular"},
        {"effectiveType": "4g"},  # desktop Chrome: no type
        {"effectiveType": "4g", "type": "wifi"},
        {"effectiveType": "4g", "type": "ethernet"},
        {"effectiveType": "4g", "type": "cellular"},
        {"type": "bluetooth"},
    ]
    answers = node_calls("networkType", [[c] if c is not None else [] for c in connections])
    assert answers == [
        "unknown", "unknown", "slow-2g", "2g", "3g", "4g", "wifi", "wifi", "4g", "unknown"
    ]  # fmt: skip
    block = re.search(r"NETWORK_TYPES = (\[.*?\]);", SOURCE.read_text(), re.S)
    assert block is not None
    assert json.loads(block.group(1)) == list(NETWORK_TYPES)
