"""The docs name everything the code has, and build without a warning.

Each reference page is checked against the code it describes (config keys, signals,
routes, error codes, schema fields, dangerous files, dependencies), so a name added to
the code without its documentation fails here. The Sphinx build runs when Sphinx and
the Pallets theme are installed (``pip install -e ".[docs]"``) and needs no network.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import boto3
import click
import pytest
import requests
from blinker import NamedSignal
from conftest import CREDENTIALS, REGION
from flask import Flask

from flask_obitox import signals
from flask_obitox.cli import obitox_cli
from flask_obitox.config import DEFAULTS, ConfigVars
from flask_obitox.errors import STATUS_BY_CODE
from flask_obitox.expiry import UPLOAD_BYTES_PER_SECOND
from flask_obitox.openapi import openapi_spec
from flask_obitox.validation import DANGEROUS_CONTENT_TYPES, DANGEROUS_EXTENSIONS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def mentions(text: str, word: str) -> bool:
    """Whether ``word`` occurs as a whole token (``NOT_FOUND`` is not in ``UPLOAD_NOT_FOUND``)."""
    return re.search(rf"(?<![\w/{{}}.-]){re.escape(word)}(?![\w/{{}}.-])", text) is not None


CONFIG_KEYS = sorted(
    value
    for name, value in vars(ConfigVars).items()
    if not name.startswith("_") and isinstance(value, str)
)
SIGNALS = sorted(
    (name, value.name)
    for name, value in vars(signals).items()
    if isinstance(value, NamedSignal) and not name.startswith("_")
)
OPERATIONS = sorted(
    (method.upper(), path)
    for path, operations in openapi_spec("/obitox")["paths"].items()
    for method in operations
)


# -- config.rst ------------------------------------------------------------------------


def test_code_has_keys_to_check() -> None:
    assert len(CONFIG_KEYS) > 20
    assert set(CONFIG_KEYS) <= set(DEFAULTS)


@pytest.mark.parametrize("key", CONFIG_KEYS)
def test_every_config_key_has_an_entry(key: str) -> None:
    assert re.search(rf"^\.\. py:data:: {key}$", page("config.rst"), re.M), (
        f"docs/config.rst has no '.. py:data:: {key}' entry"
    )


def test_config_documents_no_key_that_does_not_exist() -> None:
    documented = re.findall(r"^\.\. py:data:: (OBITOX_\w+)$", page("config.rst"), re.M)
    assert sorted(set(documented) - set(CONFIG_KEYS)) == []
    assert len(documented) == len(set(documented)), "a key is documented twice"


# -- signals.rst -----------------------------------------------------------------------


def test_code_has_signals_to_check() -> None:
    assert len(SIGNALS) >= 9


@pytest.mark.parametrize(("python_name", "kebab_name"), SIGNALS)
def test_every_signal_is_documented(python_name: str, kebab_name: str) -> None:
    text = page("signals.rst")
    assert mentions(text, f"``{kebab_name}``"), f"signals.rst does not name {kebab_name!r}"
    assert mentions(text, f"``{python_name}``"), f"signals.rst does not name {python_name!r}"
    assert f".. py:data:: flask_obitox.signals.{python_name}\n" in text
    assert f".. autodata:: flask_obitox.signals.{python_name}\n" in page("api.rst")


# -- http.rst --------------------------------------------------------------------------


def test_code_has_routes_to_check() -> None:
    assert ("POST", "/uploads") in OPERATIONS
    assert ("GET", "/openapi.json") in OPERATIONS


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_every_route_is_documented(method: str, path: str) -> None:
    """Listed in http.rst, and a section of its own there or on its feature's page."""
    assert mentions(page("http.rst"), path), f"http.rst does not name the path {path}"
    title = re.compile(rf"^{method} {re.escape(path)}\n-+$", re.M)
    assert any(title.search(p.read_text()) for p in DOCS.glob("*.rst")), (
        f"no docs page has a section titled '{method} {path}'"
    )


@pytest.mark.parametrize("code", sorted(STATUS_BY_CODE))
def test_every_error_code_is_documented(code: str) -> None:
    text = page("http.rst")
    status = STATUS_BY_CODE[code]
    assert mentions(text, code), f"http.rst does not name the error code {code}"
    assert re.search(rf"^{status}\s+``{code}``", text, re.M), (
        f"http.rst's error table has no row '{status}  ``{code}``'"
    )


def test_every_schema_field_is_documented() -> None:
    """Each field is named as ``literal`` in http.rst or on its feature's page."""
    text = "".join(p.read_text() for p in DOCS.glob("*.rst"))
    missing = [
        f"{schema}.{field}"
        for schema, body in openapi_spec("/obitox")["components"]["schemas"].items()
        for field in body.get("properties", {})
        if f"``{field}``" not in text
    ]
    assert missing == []


# -- validation.rst --------------------------------------------------------------------


def test_dangerous_files_are_listed() -> None:
    text = page("validation.rst")
    missing = [
        item
        for item in sorted(DANGEROUS_EXTENSIONS | DANGEROUS_CONTENT_TYPES)
        if f"``{item}``" not in text
    ]
    assert missing == []


def test_expiry_bandwidth_table_matches_the_code() -> None:
    text = page("validation.rst")
    for network_type, rate in UPLOAD_BYTES_PER_SECOND.items():
        assert re.search(rf"^``{re.escape(network_type)}``\s+{rate}\b", text, re.M), (
            f"validation.rst's bandwidth table has no row for {network_type} ({rate})"
        )


# -- dependencies.rst ------------------------------------------------------------------


def _requirement_names() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    names = {re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0].lower() for r in requirements}
    return sorted(names - {project["name"]})


@pytest.mark.parametrize("name", _requirement_names())
def test_every_dependency_is_explained(name: str) -> None:
    pattern = rf"``{re.escape(name)}(\[[\w,-]+\])?[<>=!~]"
    assert re.search(pattern, page("dependencies.rst")), (
        f"docs/dependencies.rst does not explain {name}"
    )


# -- operations.rst --------------------------------------------------------------------


def _commands(group: click.Group, path: str = "flask obitox") -> list[str]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, f"{path} {name}")
        else:
            found.append(f"{path} {name}")
    return found


COMMANDS = _commands(obitox_cli)


def test_code_has_commands_to_check() -> None:
    assert "flask obitox bucket create" in COMMANDS
    assert "flask obitox webhooks replay" in COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_in_the_operations_table(command: str) -> None:
    assert re.search(rf"^``{re.escape(command)}``\s+\S", page("operations.rst"), re.M), (
        f"the command table of docs/operations.rst has no row for {command}"
    )


# -- quickstart.rst: the page's own app, run as it is written ----------------------------

#: Where the page's moto server listens; the test points the app at its own instead.
QUICKSTART_S3 = "http://127.0.0.1:9000"


def _section(text: str, title: str) -> str:
    start = text.index(f"\n{title}\n{'-' * len(title)}\n")
    end = re.compile(r"\n\n[^\n]+\n-{3,}\n").search(text, start + len(title) * 2 + 2)
    return text[start : end.start() if end else len(text)]


def _unindent(block: str) -> str:
    return "\n".join(line[4:] for line in block.splitlines()).strip("\n") + "\n"


def quickstart_files() -> dict[str, str]:
    """The files the quickstart has the reader write: its code blocks with a caption."""
    pattern = re.compile(r"^\.\. code-block:: \w+\n    :caption: (\S+)\n\n((?:    .*\n|\n)+)", re.M)
    return {name: _unindent(body) for name, body in pattern.findall(page("quickstart.rst"))}


def quickstart_commands() -> list[list[str]]:
    """The ``flask --app app obitox ...`` commands the reader runs before ``flask run``."""
    text = _section(page("quickstart.rst"), "Storage, and running it")
    lines = re.findall(r"^    \$ flask --app app (.+)$", text, re.M)
    assert lines[-1] == "run", "the quickstart should end its commands with flask run"
    return [shlex.split(line) for line in lines[:-1]]


@pytest.fixture
def quickstart_app(
    tmp_path: Path, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    """The quickstart's ``app.py`` and template, written out and imported, on a moto
    server of this test's own (the only change to the page's code)."""
    files = quickstart_files()
    assert sorted(files) == ["app.py", "templates/index.html"]
    assert files["app.py"].count(f'"{QUICKSTART_S3}"') == 1
    files["app.py"] = files["app.py"].replace(QUICKSTART_S3, moto_server)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("quickstart_app", tmp_path / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quickstart_app", module)
    spec.loader.exec_module(module)
    app: Flask = module.app
    yield app
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server, **CREDENTIALS)
    bucket = app.config["OBITOX_BUCKET"]
    with suppress(s3.exceptions.NoSuchBucket):
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)


def test_quickstart_app_uploads_a_file_as_the_page_says(
    quickstart_app: Flask, moto_server: str
) -> None:
    app = quickstart_app
    runner = app.test_cli_runner()
    commands = quickstart_commands()
    assert [args[:2] for args in commands] == [["obitox", "bucket"], ["obitox", "cors"]]
    for args in commands:
        result = runner.invoke(args=args)
        assert result.exit_code == 0, f"flask --app app {shlex.join(args)}: {result.output}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server, **CREDENTIALS)
    bucket = app.config["OBITOX_BUCKET"]
    (rule,) = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert rule["AllowedOrigins"] == ["http://127.0.0.1:5000"]

    browser = app.test_client()
    assert browser.get("/").headers["Location"] == "/login"
    refused = browser.post("/obitox/uploads/batch", json={"files": []})
    assert refused.status_code == 401
    assert browser.post("/login", data={"name": "alice"}).status_code == 302
    html = browser.get("/").get_data(as_text=True)
    assert "Logged in as alice." in html

    # What the page's script does: import obitox.js, then uploadFiles = sign, PUT, complete.
    script = re.search(r'import \{ ObitoX \} from "([^"]+)";', html)
    endpoint = re.search(r'ObitoX\(\{ endpoint: "([^"]+)" \}\)', html)
    assert script is not None
    assert endpoint is not None
    module = browser.get(script.group(1))
    assert module.status_code == 200
    assert "export function ObitoX" in module.get_data(as_text=True)
    body = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    signed = browser.post(
        f"{endpoint.group(1)}/uploads/batch",
        json={"files": [{"filename": "cat.png", "contentType": "image/png", "size": len(body)}]},
    )
    assert signed.status_code == 200, signed.json
    (upload,) = signed.json["uploads"]
    put = requests.put(upload["url"], data=body, headers=upload["headers"], timeout=10)
    assert put.status_code == 200, put.text
    done = browser.post(f"{endpoint.group(1)}/uploads/{upload['uploadId']}/complete", json={})
    assert done.status_code == 200, done.json
    assert done.json["status"] == "completed"
    assert done.json["size"] == len(body)
    assert s3.get_object(Bucket=bucket, Key=done.json["key"])["Body"].read() == body


def test_quickstart_page_script_parses() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    html = quickstart_files()["templates/index.html"]
    script = re.search(r'<script type="module">\n(.*?)</script>', html, re.S)
    assert script is not None
    # Syntax only: the import is replaced, nothing runs.
    source = script.group(1).replace('import { ObitoX } from "/obitox/static/obitox.js";', "")
    checked = subprocess.run(
        [node, "--input-type=module", "--check"], input=source, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


# -- the build -------------------------------------------------------------------------


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    pytest.importorskip("pallets_sphinx_themes")
    from sphinx.cmd.build import build_main

    status = build_main(["-W", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")])
    assert status == 0
    assert (tmp_path / "html" / "index.html").is_file()
