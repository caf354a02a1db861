"""Nothing a client can send produces a 500: arbitrary JSON against every route."""

from __future__ import annotations

import json
from typing import Any

from conftest import UserClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(["image/png", "a.png", "run.exe", "wifi", "\ud800", "..", "../x.png"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=15,
)
field_names = st.sampled_from(
    [
        "filename",
        "contentType",
        "size",
        "checksumSha256",
        "metadata",
        "networkType",
        "expiresIn",
        "validation",
    ]
)
validation_like = st.dictionaries(
    st.sampled_from(
        ["maxSizeMB", "minSizeKB", "allowedTypes", "allowedExtensions", "blockExecutables"]
    ),
    st.one_of(
        values,
        st.floats(allow_nan=False),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.lists(st.sampled_from(["image/*", "*/*", "png", ".exe", "\ud800", "a/b/c"]), max_size=3),
    ),
    max_size=5,
)
file_like = st.dictionaries(field_names, values, max_size=8) | st.fixed_dictionaries(
    {
        "filename": st.sampled_from(["a.png", "x.exe", "../../a.pdf", "\ud800.txt", ""])
        | st.text(max_size=20),
        "contentType": st.sampled_from(["image/png", "text/plain; a=b", "image/png\n", "x"])
        | st.text(max_size=20),
        "size": st.integers(min_value=-(10**30), max_value=10**30) | st.floats(allow_nan=False),
    },
    optional={
        "validation": validation_like,
        "metadata": st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
        "expiresIn": st.integers(min_value=-(10**20), max_value=10**20),
        "networkType": st.sampled_from(["wifi", "5g", ""]),
        "checksumSha256": st.text(max_size=50),
    },
)
bodies = st.one_of(
    values,
    file_like,
    st.fixed_dictionaries(
        {"files": st.lists(st.one_of(file_like, values), max_size=5)},
        optional={"validation": values},
    ),
)

fuzz = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def encode(body: Any) -> str:
    # json.dumps, not the test client's encoder: it writes lone surrogates as escapes.
    return json.dumps(body)


@fuzz
@given(body=bodies, path=st.sampled_from(["/uploads", "/uploads/batch"]))
def test_create_routes_never_fail_with_500(client: UserClient, body: Any, path: str) -> None:
    response = client.post(path, data=encode(body), headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.get_data(as_text=True)
    payload = response.json
    if response.status_code >= 400:
        assert set(payload) == {"error", "message", "details"}


@fuzz
@given(
    upload_id=st.text(min_size=1, max_size=40).filter(
        lambda s: "/" not in s and s not in (".", "..")
    )
)
def test_id_routes_never_fail_with_500(client: UserClient, upload_id: str) -> None:
    for response in (
        client.get(f"/uploads/{upload_id}"),
        client.post(f"/uploads/{upload_id}/complete"),
    ):
        assert response.status_code in (404, 405), response.get_data(as_text=True)


@fuzz
@given(raw=st.binary(max_size=200))
def test_raw_bytes_never_fail_with_500(client: UserClient, raw: bytes) -> None:
    for path in ("/uploads", "/uploads/batch"):
        response = client.post(path, data=raw, headers={"Content-Type": "application/json"})
        assert response.status_code in (400, 413), response.get_data(as_text=True)
