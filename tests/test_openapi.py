"""GET /openapi.json: valid OpenAPI 3.1, generated from the schemas, covering every route."""

from __future__ import annotations

import re

from conftest import UserClient
from flask import Flask
from openapi_spec_validator import validate

from flask_obitox.errors import STATUS_BY_CODE


def test_openapi_is_valid_31(client: UserClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_openapi_needs_no_identity(app: Flask) -> None:
    assert UserClient(app, None).get("/openapi.json").status_code == 200


def test_every_blueprint_route_is_documented(app: Flask, client: UserClient) -> None:
    document = client.get("/openapi.json").json
    documented = {
        (path, method.upper())
        for path, operations in document["paths"].items()
        for method in operations
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("obitox.") or rule.endpoint == "obitox.static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + _camel(m.group(1)) + "}", rule.rule)
        path = path.removeprefix("/obitox")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert served == documented


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def test_schemas_come_from_marshmallow(client: UserClient) -> None:
    document = client.get("/openapi.json").json
    schemas = document["components"]["schemas"]
    file_spec = schemas["FileSpec"]
    assert set(file_spec["required"]) == {"filename", "contentType", "size"}
    assert file_spec["properties"]["size"]["type"] == "integer"
    assert file_spec["properties"]["networkType"]["enum"] == [
        "slow-2g",
        "2g",
        "3g",
        "4g",
        "wifi",
        "unknown",
    ]
    batch = document["paths"]["/uploads/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchRequest"
    }


def test_error_responses_are_documented(client: UserClient) -> None:
    document = client.get("/openapi.json").json
    complete = document["paths"]["/uploads/{uploadId}/complete"]["post"]["responses"]
    for code in ("UPLOAD_NOT_FOUND", "CONTENT_MISMATCH", "STORAGE_UNAVAILABLE", "UNAUTHENTICATED"):
        assert code in complete[str(STATUS_BY_CODE[code])]["description"]
        assert complete[str(STATUS_BY_CODE[code])]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }


# -- HTTP details and what the document says about each route (issue 17, bug 6) ---


def test_every_405_under_the_prefix_names_the_allowed_methods(app: Flask) -> None:
    client = app.test_client()
    adapter = app.url_map.bind("localhost")
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/obitox/") or rule.endpoint == "obitox.static":
            continue
        path = re.sub(r"<(?:\w+:)?\w+>", "1", rule.rule)
        response = client.open(path, method="PATCH", headers={"X-User": "alice"})
        assert response.status_code == 405, path
        assert response.json["error"] == "METHOD_NOT_ALLOWED"
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allowed == set(adapter.allowed_methods(path)), path
        assert set(rule.methods or ()) - {"HEAD", "OPTIONS"} <= allowed
        checked += 1
    assert checked >= 17
