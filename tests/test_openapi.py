"""GET /openapi.json: valid OpenAPI 3.1, generated from the schemas, covering every route."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import UserClient, file_spec
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


def _operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] = document["paths"][path][method]
    return operation


def _parameters(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    return {p["name"]: p for p in _operation(document, method, path).get("parameters", [])}


def test_companion_query_parameters_are_documented(client: UserClient) -> None:
    document = client.get("/openapi.json").json
    key_routes = [
        ("post", "/s3/complete"),
        ("get", "/s3/multipart/{uploadId}"),
        ("delete", "/s3/multipart/{uploadId}"),
        ("get", "/s3/multipart/{uploadId}/batch"),
        ("get", "/s3/multipart/{uploadId}/{partNumber}"),
        ("post", "/s3/multipart/{uploadId}/complete"),
    ]
    for method, path in key_routes:
        key = _parameters(document, method, path)["key"]
        assert (key["in"], key["required"], key["schema"]["minLength"]) == ("query", True, 1)
    batch = _parameters(document, "get", "/s3/multipart/{uploadId}/batch")["partNumbers"]
    assert (batch["required"], batch["style"], batch["explode"]) == (True, "form", False)
    assert batch["schema"]["items"] == {"type": "integer", "minimum": 1, "maximum": 10000}
    assert (batch["schema"]["minItems"], batch["schema"]["maxItems"]) == (1, 1000)
    part = _parameters(document, "get", "/s3/multipart/{uploadId}/{partNumber}")["partNumber"]
    assert part["schema"] == {"type": "integer", "minimum": 1, "maximum": 10000}

    params = _parameters(document, "get", "/s3/params")
    file_spec = document["components"]["schemas"]["FileSpec"]["properties"]
    assert params["filename"]["required"] is True
    assert params["filename"]["schema"] == file_spec["filename"]
    assert params["type"]["schema"] == file_spec["contentType"]
    metadata = params["metadata"]
    assert (metadata["style"], metadata["explode"]) == ("deepObject", True)
    [(key_pattern, value)] = metadata["schema"]["patternProperties"].items()
    assert key_pattern.endswith(file_spec["metadata"]["propertyNames"]["pattern"].lstrip("^"))
    assert value["pattern"] == file_spec["metadata"]["additionalProperties"]["pattern"]


def test_rules_the_server_enforces_are_in_the_schemas(client: UserClient) -> None:
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    metadata = schemas["FileSpec"]["properties"]["metadata"]
    assert metadata["propertyNames"] == {"pattern": r"^[A-Za-z0-9_-]{1,128}\Z"}
    max_size = schemas["ValidationRules"]["properties"]["maxSizeMB"]
    assert max_size["exclusiveMinimum"] == 0
    assert "minimum" not in max_size
    part_size = schemas["MultipartRequest"]["properties"]["partSize"]
    assert (part_size["minimum"], part_size["maximum"]) == (5 * 2**20, 5 * 2**30)
    companion = schemas["CompanionMultipartRequest"]["properties"]
    assert companion["filename"] == schemas["FileSpec"]["properties"]["filename"]
    assert (
        companion["type"]["pattern"] == schemas["FileSpec"]["properties"]["contentType"]["pattern"]
    )


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("get", "/multipart/{uploadId}", "INVALID_INPUT"),  # a single upload's id
        ("delete", "/multipart/{uploadId}", "INVALID_INPUT"),
        ("post", "/uploads/{uploadId}/complete", "INVALID_INPUT"),  # a multipart upload's id
        ("post", "/s3/complete", "INVALID_INPUT"),  # no key
        ("post", "/uploads/{uploadId}/complete", "INVALID_JSON"),
        ("post", "/multipart/{uploadId}/complete", "INVALID_JSON"),
        ("post", "/multipart/{uploadId}/parts", "INVALID_JSON"),
        ("post", "/s3/multipart/{uploadId}/complete", "INVALID_JSON"),
        ("get", "/s3/multipart/{uploadId}/{partNumber}", "UPLOAD_ABORTED"),
        ("get", "/s3/multipart/{uploadId}", "UPLOAD_COMPLETED"),
    ],
)
def test_error_answers_the_routes_give_are_documented(
    client: UserClient, method: str, path: str, code: str
) -> None:
    responses = _operation(client.get("/openapi.json").json, method, path)["responses"]
    assert code in responses[str(STATUS_BY_CODE[code])]["description"]


def test_a_single_uploads_id_on_a_multipart_route_answers_the_documented_400(
    client: UserClient,
) -> None:
    signed = client.post("/uploads", json=file_spec())
    upload_id = signed.json["uploadId"]
    for response in (
        client.get(f"/multipart/{upload_id}"),
        client.delete(f"/multipart/{upload_id}"),
    ):
        assert (response.status_code, response.json["error"]) == (400, "INVALID_INPUT")


def test_links_lead_from_created_uploads_to_their_routes(client: UserClient) -> None:
    document = client.get("/openapi.json").json
    links = _operation(document, "post", "/multipart")["responses"]["201"]["links"]
    assert links["abort"] == {
        "operationRef": "#/paths/~1multipart~1{uploadId}/delete",
        "parameters": {"uploadId": "$response.body#/uploadId"},
    }
    companion = _operation(document, "post", "/s3/multipart")["responses"]["200"]["links"]
    assert companion["complete"]["parameters"] == {
        "path.uploadId": "$response.body#/uploadId",
        "query.key": "$response.body#/key",
    }


def test_the_event_stream_is_documented_as_text_event_stream(client: UserClient) -> None:
    operation = client.get("/openapi.json").json["paths"]["/events"]["get"]
    assert list(operation["responses"]["200"]["content"]) == ["text/event-stream"]
    names = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert names == {
        ("query", "groupId"),
        ("query", "uploadId"),
        ("query", "lastEventId"),
        ("header", "Last-Event-ID"),
    }
    assert {"400", "401", "503"} <= set(operation["responses"])
