"""Marshmallow schemas, compiled to plain functions for the hot path.

Marshmallow costs 15-30 µs per object, which alone would eat the budget of a
100-file batch. :func:`compile_loader` turns a schema into a function that handles
well-formed input with a few type checks and the schema's own validators (marshmallow's
Length, Range, Regexp and OneOf as the comparisons they make), and hands anything else
to ``schema.load`` itself. So the result, and every error message,
is exactly marshmallow's: ``tests/test_fastschema.py`` checks that with hypothesis.
:func:`compile_dumper` does the same for ``schema.dump`` of dicts our services build.

The functions are generated Python source (as :mod:`dataclasses` generates
``__init__``): a string, integer or boolean field is a few inline comparisons, not a
chain of calls, which took a third of a batch entry's load and a fifth of its answer's
dump off (instructions, ``docs/performance.rst``).

Only the field kinds our schemas use are compiled (String, Integer, Float, Boolean,
Raw, Dict, List, Nested); a schema with hooks, defaults or other fields is not
compiled and simply uses marshmallow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, missing, validate

Checker = Callable[[Any], Any]


class _Fallback(Exception):
    """The fast path cannot vouch for this input: let marshmallow decide."""


_FALLBACK = _Fallback()


class _NotCompilable(Exception):
    pass


def _called(validator: Callable[[Any], Any]) -> Callable[[Any], bool]:
    """Whether ``validator`` accepts a value, by calling it. A refusal is never decided
    here: the caller hands it to marshmallow, whose answer and message stand."""

    def called(value: Any) -> bool:
        try:
            return validator(value) is not False
        except ValidationError:
            return False

    return called


def _finisher(field: fields.Field[Any]) -> Checker | None:
    """The field's validators as one function returning the value or raising
    :class:`_Fallback`; ``None`` for a field without validators."""
    if not field.validators:
        return None
    source = _Source()
    accepted = " and ".join(_accepted(v, "value", source) for v in field.validators)
    return source.function(
        "finish", "value", [f"if not ({accepted}):", "    raise _FALLBACK", "return value"]
    )


class _Source:
    """A function's Python source and the constants it names: the compiled checks are
    generated code (as :mod:`dataclasses` generates ``__init__``), so each field is a
    few inline comparisons rather than a chain of calls."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {"_FALLBACK": _FALLBACK}

    def constant(self, value: Any) -> str:
        name = f"_c{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def function(self, name: str, argument: str, body: list[str]) -> Checker:
        lines = "\n".join("    " + line for line in body)
        exec(f"def {name}({argument}):\n{lines}\n", self.namespace)  # noqa: S102
        function: Checker = self.namespace[name]
        return function


#: The exact test of a scalar field's type, as an expression refusing ``{v}``.
_TYPE_REFUSED = {
    fields.String: "type({v}) is not str",
    fields.Integer: "type({v}) is not int",
    fields.Boolean: "({v} is not True and {v} is not False)",
}


def _refused(field: fields.Field[Any], v: str, source: _Source) -> str | None:
    """An expression true when ``v`` must go to marshmallow (wrong type, or a validator
    would refuse it), for a String, Integer or Boolean field; ``None`` for any other
    field (its checker is called instead)."""
    kind = type(field)
    if kind not in _TYPE_REFUSED:
        return None
    if field.load_default is not missing:
        raise _NotCompilable(f"{field!r} has a default")
    if field.allow_none:
        raise _NotCompilable(f"{field!r} allows None")
    refused = [_TYPE_REFUSED[kind].format(v=v)]
    for validator in field.validators:
        refused.append(f"not ({_accepted(validator, v, source, scalar=True)})")
    return " or ".join(refused)


def _accepted(
    validator: Callable[[Any], Any], v: str, source: _Source, *, scalar: bool = False
) -> str:
    """An expression true when ``validator`` accepts ``v`` (of its field's type, already
    checked): marshmallow's Length, Range, Regexp and OneOf as the comparisons they make
    (their exact classes: a subclass may decide otherwise), any other validator called.
    ``scalar``: ``v`` is a str, int or bool, so OneOf's ``in`` cannot raise."""
    kind = type(validator)
    tests: list[str] = []
    if kind is validate.Length:
        equal, low, high = validator.equal, validator.min, validator.max  # type: ignore[attr-defined]
        if equal is not None:
            return f"len({v}) == {equal!r}"
        if low is not None:
            tests.append(f"len({v}) >= {low!r}")
        if high is not None:
            tests.append(f"len({v}) <= {high!r}")
    elif kind is validate.Range:
        low, high = validator.min, validator.max  # type: ignore[attr-defined]
        if low is not None:
            op = ">=" if validator.min_inclusive else ">"  # type: ignore[attr-defined]
            tests.append(f"{v} {op} {source.constant(low)}")
        if high is not None:
            op = "<=" if validator.max_inclusive else "<"  # type: ignore[attr-defined]
            tests.append(f"{v} {op} {source.constant(high)}")
    elif kind is validate.Regexp:
        return f"{source.constant(validator.regex.match)}({v}) is not None"  # type: ignore[attr-defined]
    elif kind is validate.OneOf and scalar:
        return f"{v} in {source.constant(validator.choices)}"  # type: ignore[attr-defined]
    else:
        return f"{source.constant(_called(validator))}({v})"
    return f"({' and '.join(tests)})" if tests else "True"


def _value_checker(field: fields.Field[Any]) -> Checker:
    """A function returning the loaded value, or raising :class:`_Fallback`."""
    if field.load_default is not missing:
        raise _NotCompilable(f"{field!r} has a default")
    if field.allow_none and type(field) is not fields.Raw:
        raise _NotCompilable(f"{field!r} allows None")
    source = _Source()
    refused = _refused(field, "value", source)
    if refused is not None:  # a string, integer or boolean: as an object's field is checked
        return source.function(
            "check", "value", [f"if {refused}:", "    raise _FALLBACK", "return value"]
        )
    validated = _finisher(field)

    def finish(value: Any) -> Any:
        return validated(value) if validated else value

    kind = type(field)
    if kind is fields.Float:
        if getattr(field, "as_string", False):
            raise _NotCompilable("Float(as_string=True)")

        def check_float(value: Any) -> Any:
            if type(value) is not float and type(value) is not int:
                raise _FALLBACK
            try:
                number = float(value)
            except OverflowError:  # an int past float range: marshmallow says why
                raise _FALLBACK from None
            if not math.isfinite(number):
                raise _FALLBACK
            return finish(number)

        return check_float
    if kind is fields.Raw:
        allow_none = field.allow_none

        def check_raw(value: Any) -> Any:
            if value is None:
                # marshmallow refuses None unless allow_none, and then skips validators
                if allow_none:
                    return None
                raise _FALLBACK
            return finish(value)

        return check_raw
    if kind is fields.List:
        inner = _value_checker(field.inner)  # type: ignore[attr-defined]

        def check_list(value: Any) -> Any:
            if type(value) is not list:
                raise _FALLBACK
            return finish([inner(item) for item in value])

        return check_list
    if kind is fields.Dict:
        key_field = field.key_field  # type: ignore[attr-defined]
        value_field = field.value_field  # type: ignore[attr-defined]

        source = _Source()
        key_refused = _refused(key_field, "k", source) if key_field is not None else None
        value_refused = _refused(value_field, "v", source) if value_field is not None else None
        if (key_field is None or key_refused) and (value_field is None or value_refused):
            # Scalar keys and values (metadata): loaded unchanged once each one passes.
            refused = " or ".join(filter(None, [key_refused, value_refused]))
            body = ["if type(value) is not dict:", "    raise _FALLBACK"]
            if refused:
                body += [
                    "for k, v in value.items():",
                    f"    if {refused}:",
                    "        raise _FALLBACK",
                ]
            body.append(f"return {source.constant(finish)}(dict(value))")
            return source.function("check_dict", "value", body)
        check_key = _value_checker(key_field) if key_field is not None else None
        check_value = _value_checker(value_field) if value_field is not None else None

        def check_dict(value: Any) -> Any:
            if type(value) is not dict:
                raise _FALLBACK
            loaded = {}
            for k, v in value.items():
                loaded[check_key(k) if check_key else k] = check_value(v) if check_value else v
            return finish(loaded)

        return check_dict
    if kind is fields.Nested:
        nested = field.schema  # type: ignore[attr-defined]
        if getattr(field, "many", False):
            raise _NotCompilable("Nested(many=True)")
        return _object_checker(nested, finish)
    raise _NotCompilable(f"field type {kind.__name__}")


def _object_checker(schema: Schema, finish: Checker | None = None) -> Checker:
    if any(schema._hooks.values()) or schema.many or schema.unknown != RAISE:
        raise _NotCompilable("schema with hooks, many=True or unknown != RAISE")
    source = _Source()
    known = source.constant(frozenset(f.data_key or n for n, f in schema.load_fields.items()))
    body = [
        f"if type(value) is not dict or not {known}.issuperset(value):",
        "    raise _FALLBACK",
        "loaded = {}",
    ]
    for name, field in schema.load_fields.items():
        data_key, attribute = repr(field.data_key or name), repr(field.attribute or name)
        body.append(f"if {data_key} in value:")
        body.append(f"    v = value[{data_key}]")
        refused = _refused(field, "v", source)
        if refused is None:
            body.append(f"    loaded[{attribute}] = {source.constant(_value_checker(field))}(v)")
        else:
            body.append(f"    if {refused}:")
            body.append("        raise _FALLBACK")
            body.append(f"    loaded[{attribute}] = v")
        if field.required:
            body += ["else:", "    raise _FALLBACK"]
    body.append(f"return {source.constant(finish)}(loaded)" if finish else "return loaded")
    return source.function(f"load_{type(schema).__name__}", "value", body)


def compile_loader(schema: Schema) -> Callable[[Any], dict[str, Any]]:
    """Return a function equal to ``schema.load`` for every input, fast for good input."""
    try:
        fast = _object_checker(schema)
    except _NotCompilable:
        return schema.load

    def load(data: Any) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = fast(data)
            return loaded
        except _Fallback:
            return schema.load(data)  # type: ignore[no-any-return]

    return load


def compile_dumper(schema: Schema) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """Return a function equal to ``schema.dump`` for dicts whose values already have
    the declared JSON types (what our services build), falling back to marshmallow
    for anything else."""
    try:
        fast = _dumper(schema)
    except _NotCompilable:
        return schema.dump

    def dump(obj: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return fast(obj)
        except _Fallback:
            return schema.dump(obj)  # type: ignore[no-any-return]

    return dump


def _dumper(schema: Schema) -> Callable[[Mapping[str, Any]], dict[str, Any]]:
    """``schema.dump`` for well-typed dicts, raising :class:`_Fallback` for any other:
    generated, each scalar field's type checked inline."""
    if any(schema._hooks.values()) or schema.many:
        raise _NotCompilable("hooks")
    source = _Source()
    body = ["out = {}"]
    for name, field in schema.dump_fields.items():
        attribute, data_key = repr(field.attribute or name), repr(field.data_key or name)
        check = _dump_checker(field)
        body.append(f"if {attribute} in obj:")
        scalar = _SCALAR_TYPES.get(type(field))
        if scalar is None:
            body.append(f"    out[{data_key}] = {source.constant(check)}(obj[{attribute}])")
            continue
        body.append(f"    v = obj[{attribute}]")
        body.append(f"    if v is not None and type(v) is not {source.constant(scalar)}:")
        body.append("        raise _FALLBACK")
        body.append(f"    out[{data_key}] = v")
    body.append("return out")
    return source.function(f"dump_{type(schema).__name__}", "obj", body)


#: The exact types a scalar field dumps unchanged (anything else: marshmallow decides).
_SCALAR_TYPES: dict[type, type] = {
    fields.String: str,
    fields.Integer: int,
    fields.Float: float,
    fields.Boolean: bool,
}


def _dump_checker(field: fields.Field[Any]) -> Callable[[Any], Any]:
    if field.dump_default is not missing:
        raise _NotCompilable("dump_default")
    kind = type(field)
    if kind in _SCALAR_TYPES:
        wanted = _SCALAR_TYPES[kind]

        def check_scalar(value: Any) -> Any:
            if value is None or type(value) is wanted:
                return value
            raise _FALLBACK

        return check_scalar
    if kind is fields.Raw:
        return lambda value: value
    if kind is fields.Dict and all(
        part is None or type(part) is fields.String
        for part in (field.key_field, field.value_field)  # type: ignore[attr-defined]
    ):
        strings = field.key_field is not None or field.value_field is not None  # type: ignore[attr-defined]

        def check_dict(value: Any) -> Any:
            if value is None:
                return None
            if type(value) is not dict:
                raise _FALLBACK
            if strings:
                for k, v in value.items():
                    if type(k) is not str or type(v) is not str:
                        raise _FALLBACK
            return dict(value)

        return check_dict
    if kind is fields.List:
        inner = _dump_checker(field.inner)  # type: ignore[attr-defined]

        def check_list(value: Any) -> Any:
            if value is None:
                return None
            if type(value) is not list:
                raise _FALLBACK
            return [inner(item) for item in value]

        return check_list
    if kind is fields.Nested and not getattr(field, "many", False):
        nested = _dumper(field.schema)  # type: ignore[attr-defined]

        def check_nested(value: Any) -> Any:
            if value is None:
                return None
            if type(value) is not dict:
                raise _FALLBACK
            return nested(value)

        return check_nested
    raise _NotCompilable(f"field type {kind.__name__}")
