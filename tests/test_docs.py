"""The docs name everything the code has, and build without a warning.

Each reference page is checked against the code it describes (config keys, signals,
routes, error codes, schema fields, dangerous files, dependencies), so a name added to
the code without its documentation fails here. The Sphinx build runs when Sphinx and
the Pallets theme are installed (``pip install -e ".[docs]"``) and needs no network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from blinker import NamedSignal

from flask_obitox import signals
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


# -- the build -------------------------------------------------------------------------


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    pytest.importorskip("pallets_sphinx_themes")
    from sphinx.cmd.build import build_main

    status = build_main(["-W", "-q", "-b", "html", str(DOCS), str(tmp_path / "html")])
    assert status == 0
    assert (tmp_path / "html" / "index.html").is_file()
