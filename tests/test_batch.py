"""Batch signing: partial success, order, limits, one state round trip."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import UserClient, file_spec
from flask import Flask

from flask_obitox import signals


def test_batch_of_100_keeps_order_and_unique_keys(client: UserClient) -> None:
    files = [file_spec(filename="same-name.png", size=100 + i) for i in range(100)]
    response = client.post("/uploads/batch", json={"files": files})
    assert response.status_code == 200, response.json
    body = response.json
    assert (body["total"], body["successful"], body["failed"]) == (100, 100, 0)
    assert [u["index"] for u in body["uploads"]] == list(range(100))
    assert len({u["key"] for u in body["uploads"]}) == 100
    assert len({u["uploadId"] for u in body["uploads"]}) == 100
    assert body["errors"] == []
    for upload in body["uploads"]:
        assert upload["method"] == "PUT"
        assert "X-Amz-Signature=" in upload["url"]
        assert upload["filename"] == "same-name.png"


def test_one_bad_file_never_fails_the_others(app: Flask, client: UserClient) -> None:
    files = [
        file_spec(filename="ok-0.png"),
        file_spec(filename="virus.exe"),
        "not an object",
        file_spec(filename="ok-3.png", size=-5),
        file_spec(filename="huge.png", size=6 * 1024**3),
        file_spec(filename="ok-5.png"),
        None,
    ]
    body = client.post("/uploads/batch", json={"files": files}).json
    assert (body["total"], body["successful"], body["failed"]) == (7, 2, 5)
    assert [u["index"] for u in body["uploads"]] == [0, 5]
    errors = {e["index"]: e for e in body["errors"]}
    assert errors[1]["error"] == "VALIDATION_FAILED"
    assert errors[1]["filename"] == "virus.exe"
    assert errors[2]["error"] == "INVALID_INPUT"
    assert errors[2]["filename"] is None
    assert errors[3]["error"] == "INVALID_INPUT"
    assert errors[3]["filename"] == "ok-3.png"  # kept, though the entry did not load
    assert errors[4]["error"] == "FILE_TOO_LARGE"
    assert errors[6]["error"] == "INVALID_INPUT"
    for error in body["errors"]:
        assert error["message"]
        assert isinstance(error["details"], dict)
    state = app.extensions["obitox"].state
    assert len(state) == 2
    for upload in body["uploads"]:
        assert client.get(f"/uploads/{upload['uploadId']}").json["status"] == "pending"


@pytest.mark.parametrize(
    ("files", "status", "code"),
    [
        ([], 400, "INVALID_INPUT"),
        ([file_spec()] * 101, 413, "BATCH_TOO_LARGE"),
        ("nope", 400, "INVALID_INPUT"),
        (None, 400, "INVALID_INPUT"),
    ],
)
def test_batch_limits(app: Flask, client: UserClient, files: Any, status: int, code: str) -> None:
    response = client.post("/uploads/batch", json={"files": files})
    assert response.status_code == status, response.json
    assert response.json["error"] == code
    assert len(app.extensions["obitox"].state) == 0


def test_missing_files_field(client: UserClient) -> None:
    response = client.post("/uploads/batch", json={"validation": {"maxSizeMB": 1}})
    assert response.status_code == 400
    assert "files" in response.json["details"]["fields"]


def test_batch_validation_tightens_every_file(client: UserClient) -> None:
    files = [file_spec(size=2 * 1024**2), file_spec(size=100)]
    body = client.post("/uploads/batch", json={"files": files, "validation": {"maxSizeMB": 1}}).json
    assert [u["index"] for u in body["uploads"]] == [1]
    assert body["errors"][0]["error"] == "FILE_TOO_LARGE"


def test_per_file_validation_cannot_loosen_the_batch(client: UserClient) -> None:
    files = [file_spec(size=2 * 1024**2, validation={"maxSizeMB": 100})]
    body = client.post("/uploads/batch", json={"files": files, "validation": {"maxSizeMB": 1}}).json
    assert body["failed"] == 1


def test_batch_signals(app: Flask, client: UserClient) -> None:
    seen: dict[str, list[Any]] = {"signed": [], "rejected": []}

    def on_signed(sender: Any, upload: Any, **_: Any) -> None:
        seen["signed"].append(upload.upload_id)

    def on_rejected(sender: Any, **kwargs: Any) -> None:
        seen["rejected"].append(kwargs["filename"])

    with (
        signals.upload_signed.connected_to(on_signed, app),
        signals.upload_rejected.connected_to(on_rejected, app),
    ):
        body = client.post(
            "/uploads/batch", json={"files": [file_spec(), file_spec(filename="x.exe")]}
        ).json
    assert seen["signed"] == [body["uploads"][0]["uploadId"]]
    assert seen["rejected"] == ["x.exe"]


@pytest.mark.parametrize("config", [{"OBITOX_BATCH_MAX_FILES": 3}])
def test_batch_limit_is_configurable(client: UserClient) -> None:
    response = client.post("/uploads/batch", json={"files": [file_spec()] * 4})
    assert response.status_code == 413
    assert "OBITOX_BATCH_MAX_FILES" in response.json["message"]


def test_lone_surrogates_are_answered_not_crashed_on(client: UserClient) -> None:
    body = '{"files": [{"filename": "bad\\ud800.exe", "contentType": "image/png", "size": 1},'
    body += ' {"filename": "ok\\ud800.png", "contentType": "image/png", "size": 1}],'
    body += ' "validation": {"allowedTypes": ["image/*"]}}'
    response = client.post(
        "/uploads/batch", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json["errors"][0]["error"] == "VALIDATION_FAILED"
    assert response.json["uploads"][0]["filename"] == "ok.png"
    bad_rules = client.post(
        "/uploads",
        data='{"filename": "a.png", "contentType": "image/png", "size": 1, "validation": {"allowedTypes": ["\\ud800"]}}',
        headers={"Content-Type": "application/json"},
    )
    assert bad_rules.status_code == 400
    assert bad_rules.json["error"] == "INVALID_INPUT"
