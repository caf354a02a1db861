"""The compiled loaders and dumpers equal marshmallow's own, input for input.

marshmallow is the oracle: for any JSON-like input, the compiled loader returns what
``schema.load`` returns or raises the same ``ValidationError`` messages.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError, fields, validate

from flask_obitox import schemas
from flask_obitox.fastschema import compile_dumper, compile_loader

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**300, max_value=10**400),  # past float range
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

good_validation = st.fixed_dictionaries(
    {},
    optional={
        "maxSizeMB": st.one_of(st.integers(-5, 10**400), st.floats(min_value=-1)),
        "minSizeKB": st.one_of(st.integers(-5, 10**400), st.floats(min_value=-1)),
        "allowedTypes": st.lists(
            st.sampled_from(["image/*", "image/png", "", "x" * 300]), max_size=3
        ),
        "allowedExtensions": st.lists(st.sampled_from(["png", "jpg", ""]), max_size=3),
        "blockExecutables": st.one_of(st.booleans(), st.sampled_from(["true", 1, 0, None])),
    },
)

file_specs = st.fixed_dictionaries(
    {
        "filename": st.one_of(st.text(max_size=30), st.sampled_from(["a.png", ""]), json_scalars),
        "contentType": st.one_of(
            st.sampled_from(["image/png", "text/plain; charset=utf-8", "bad", "a/b/c", ""]),
            json_scalars,
        ),
        "size": st.one_of(st.integers(-10, 2**50), json_scalars),
    },
    optional={
        "checksumSha256": st.one_of(st.sampled_from(["A" * 43 + "=", "short"]), json_scalars),
        "metadata": st.one_of(
            st.dictionaries(
                st.sampled_from(["a", "Album", "bad key", "x" * 200]),
                st.one_of(st.sampled_from(["v", "caf\u00e9", "v" * 2100]), json_scalars),
                max_size=3,
            ),
            json_values,
        ),
        "networkType": st.one_of(st.sampled_from(["wifi", "5g", "unknown"]), json_scalars),
        "expiresIn": st.one_of(st.integers(-1, 10**6), json_scalars),
        "validation": st.one_of(good_validation, json_values),
        "extra": json_values,
    },
)


def same_as_marshmallow(schema: Schema, data: Any) -> None:
    fast = compile_loader(schema)
    try:
        expected: Any = schema.load(data)
    except ValidationError as error:
        expected = ("error", error.messages)
    try:
        actual: Any = fast(data)
    except ValidationError as error:
        actual = ("error", error.messages)
    assert actual == expected
    assert type(actual) is type(expected)


@settings(max_examples=400, deadline=None)
@given(file_specs)
def test_file_spec_loader_equals_marshmallow(data: dict[str, Any]) -> None:
    same_as_marshmallow(schemas.FileSpecSchema(), data)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {"files": st.one_of(st.lists(file_specs, max_size=3), json_values)},
        optional={
            "validation": st.one_of(good_validation, json_values),
            "networkType": json_scalars,
        },
    )
)
def test_batch_envelope_loader_equals_marshmallow(data: dict[str, Any]) -> None:
    same_as_marshmallow(schemas.BatchEnvelopeSchema(), data)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_equals_marshmallow(data: Any) -> None:
    same_as_marshmallow(schemas.FileSpecSchema(), data)


def test_float_fields_load_ints_as_floats() -> None:
    loaded = compile_loader(schemas.ValidationRulesSchema())({"maxSizeMB": 5})
    assert loaded == {"maxSizeMB": 5.0}
    assert type(loaded["maxSizeMB"]) is float


def test_unsupported_schemas_fall_back_to_marshmallow() -> None:
    class WithDefault(Schema):
        a = fields.String(load_default="x")

    schema = WithDefault()
    assert compile_loader(schema) == schema.load


uploads = st.fixed_dictionaries(
    {
        "uploadId": st.text(max_size=5),
        "key": st.text(max_size=5),
        "bucket": st.text(max_size=5),
        "method": st.just("PUT"),
        "url": st.text(max_size=5),
        "headers": st.one_of(
            st.dictionaries(st.text(max_size=3), st.text(max_size=3)), json_values
        ),
        "expiresIn": st.one_of(st.integers(), json_scalars),
        "expiresAt": st.text(max_size=5),
        "index": st.integers(0, 100),
        "filename": st.text(max_size=5),
    }
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "total": st.integers(),
            "successful": st.integers(),
            "failed": st.one_of(st.integers(), json_scalars),
            "uploads": st.lists(uploads, max_size=3),
            "errors": st.lists(
                st.fixed_dictionaries(
                    {
                        "index": st.integers(),
                        "filename": st.one_of(st.none(), st.text(max_size=4)),
                        "error": st.text(max_size=4),
                        "message": st.text(max_size=4),
                        "details": st.dictionaries(st.text(max_size=3), json_values, max_size=2),
                    }
                ),
                max_size=3,
            ),
        }
    )
)
def test_batch_dumper_equals_marshmallow(data: dict[str, Any]) -> None:
    schema = schemas.BatchResponseSchema()
    assert outcome(compile_dumper(schema), data) == outcome(schema.dump, data)


def outcome(dump: Any, data: Any) -> Any:
    """What dumping gives, or the type of error it raises (marshmallow raises plain
    errors for values it cannot format, and the compiled dumper must too)."""
    try:
        return dump(data)
    except Exception as error:
        return type(error)


@pytest.mark.parametrize(
    "schema",
    [schemas.SignedUploadSchema(), schemas.CompletedUploadSchema(), schemas.UploadStatusSchema()],
)
def test_response_schemas_compile(schema: Schema) -> None:
    # A schema that silently stopped compiling would still be correct, only slow:
    # make that visible.
    assert compile_dumper(schema) != schema.dump


class _Bounds(Schema):
    """Every inlined comparison: Length with one bound or both, Range either way open."""

    name = fields.String(validate=[validate.Length(min=2), validate.Length(max=5)])
    code = fields.String(validate=validate.Length(equal=3))
    count = fields.Integer(
        validate=validate.Range(min=1, max=10, min_inclusive=False, max_inclusive=False)
    )
    level = fields.Integer(validate=[validate.Range(max=3), validate.OneOf([0, 2, 3, -7])])
    ratio = fields.Float(validate=validate.Range(min=0.5, max=1.5))
    tags = fields.List(fields.String(), validate=validate.Length(min=1, max=2))
    kind = fields.String(validate=validate.OneOf(("a", "b")))


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(st.text(max_size=7), json_scalars),
            "code": st.one_of(st.text(max_size=4), json_scalars),
            "count": st.one_of(st.integers(-1, 12), json_scalars),
            "level": st.one_of(st.integers(-8, 5), json_scalars),
            "ratio": st.one_of(st.floats(0, 2), json_scalars),
            "tags": st.one_of(st.lists(st.text(max_size=2), max_size=3), json_values),
            "kind": st.one_of(st.sampled_from(["a", "b", "c"]), json_scalars),
        },
    )
)
def test_inlined_validators_equal_marshmallow(data: dict[str, Any]) -> None:
    same_as_marshmallow(_Bounds(), data)
