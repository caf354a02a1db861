"""Marshmallow schemas, compiled to plain functions for the hot path.

Marshmallow costs 15-30 µs per object, which alone would eat the budget of a
100-file batch. :func:`compile_loader` turns a schema into a function that handles
well-formed input with a few type checks and the schema's own validators (marshmallow's
Length, Range, Regexp and OneOf as the comparisons they make), and hands anything else
to ``schema.load`` itself. So the result, and every error message,
is exactly marshmallow's: ``tests/test_fastschema.py`` checks that with hypothesis.

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


def _accepts(validator: Callable[[Any], Any]) -> Callable[[Any], bool]:
    """Whether ``validator`` accepts a value (of the field's type, already checked).

    marshmallow's own Length, Range, Regexp and OneOf become the comparison they make,
    without the call, the exception and the message they prepare on a refusal (their
    exact classes only: a subclass may accept otherwise); any other validator is
    called. A refusal is never decided here: the caller hands it to marshmallow, whose
    answer and message stand."""
    kind = type(validator)
    if kind is validate.Length:
        equal, low, high = validator.equal, validator.min, validator.max  # type: ignore[attr-defined]
        if equal is not None:
            return lambda value: len(value) == equal
        if low is not None and high is not None:
            return lambda value: low <= len(value) <= high
    elif kind is validate.Range:
        low, high = validator.min, validator.max  # type: ignore[attr-defined]
        low_in = validator.min_inclusive  # type: ignore[attr-defined]
        if high is None and low is not None:
            return (lambda value: value >= low) if low_in else (lambda value: value > low)
    elif kind is validate.Regexp:
        match = validator.regex.match  # type: ignore[attr-defined]
        return lambda value: match(value) is not None
    elif kind is validate.OneOf:
        choices = validator.choices  # type: ignore[attr-defined]
        if isinstance(choices, tuple | list | frozenset | set):

            def one_of(value: Any) -> bool:
                try:
                    return value in choices
                except TypeError:
                    return False

            return one_of

    def called(value: Any) -> bool:
        try:
            return validator(value) is not False
        except ValidationError:
            return False

    return called


def _finisher(field: fields.Field[Any]) -> Checker | None:
    """The field's validators as one function returning the value or raising
    :class:`_Fallback`; ``None`` for a field without validators."""
    tests = tuple(_accepts(validator) for validator in field.validators)
    if not tests:
        return None
    if len(tests) == 1:
        [test] = tests

        def finish_one(value: Any) -> Any:
            if test(value):
                return value
            raise _FALLBACK

        return finish_one

    def finish_all(value: Any) -> Any:
        for test in tests:
            if not test(value):
                raise _FALLBACK
        return value

    return finish_all


def _value_checker(field: fields.Field[Any]) -> Checker:
    """A function returning the loaded value, or raising :class:`_Fallback`."""
    if field.load_default is not missing:
        raise _NotCompilable(f"{field!r} has a default")
    if field.allow_none and type(field) is not fields.Raw:
        raise _NotCompilable(f"{field!r} allows None")
    validated = _finisher(field)

    def finish(value: Any) -> Any:
        return validated(value) if validated else value

    kind = type(field)
    if kind is fields.String:
        if validated is None:

            def check_plain_str(value: Any) -> Any:
                if type(value) is not str:
                    raise _FALLBACK
                return value

            return check_plain_str
        str_finish = validated

        def check_str(value: Any) -> Any:
            if type(value) is not str:
                raise _FALLBACK
            return str_finish(value)

        return check_str
    if kind is fields.Integer:

        def check_int(value: Any) -> Any:
            if type(value) is not int:
                raise _FALLBACK
            return finish(value)

        return check_int
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
    if kind is fields.Boolean:

        def check_bool(value: Any) -> Any:
            if value is not True and value is not False:
                raise _FALLBACK
            return finish(value)

        return check_bool
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
        check_key = _value_checker(key_field) if key_field is not None else None
        check_value = _value_checker(value_field) if value_field is not None else None

        def check_dict(value: Any) -> Any:
            if type(value) is not dict:
                raise _FALLBACK
            if check_key is None and check_value is None:
                return finish(dict(value))
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
    plan: list[tuple[str, str, bool, Checker]] = []
    for name, field in schema.load_fields.items():
        plan.append(
            (field.data_key or name, field.attribute or name, field.required, _value_checker(field))
        )
    known = frozenset(entry[0] for entry in plan)

    def check_object(value: Any) -> Any:
        if type(value) is not dict or not known.issuperset(value):
            raise _FALLBACK
        loaded = {}
        for data_key, attribute, required, check in plan:
            if data_key in value:
                loaded[attribute] = check(value[data_key])
            elif required:
                raise _FALLBACK
        return finish(loaded) if finish else loaded

    return check_object


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
    # Per field: its attribute, its key, and either the exact types a scalar may have
    # (checked inline: no call per field) or the checker of anything else.
    plan: list[tuple[str, str, tuple[type, ...] | None, Callable[[Any], Any]]] = []
    try:
        if any(schema._hooks.values()) or schema.many:
            raise _NotCompilable("hooks")
        for name, field in schema.dump_fields.items():
            check = _dump_checker(field)
            scalar = _SCALAR_TYPES.get(type(field))
            plan.append((field.attribute or name, field.data_key or name, scalar, check))
    except _NotCompilable:
        return schema.dump

    def dump(obj: Mapping[str, Any]) -> dict[str, Any]:
        try:
            out = {}
            for attribute, data_key, scalar, check in plan:
                if attribute in obj:
                    value = obj[attribute]
                    if scalar is None:
                        out[data_key] = check(value)
                    elif value is None or type(value) in scalar:
                        out[data_key] = value
                    else:
                        raise _FALLBACK
            return out
        except _Fallback:
            return schema.dump(obj)  # type: ignore[no-any-return]

    return dump


#: The exact types a scalar field dumps unchanged (anything else: marshmallow decides).
_SCALAR_TYPES: dict[type, tuple[type, ...]] = {
    fields.String: (str,),
    fields.Integer: (int,),
    fields.Float: (float,),
    fields.Boolean: (bool,),
}


def _dump_checker(field: fields.Field[Any]) -> Callable[[Any], Any]:
    if field.dump_default is not missing:
        raise _NotCompilable("dump_default")
    kind = type(field)
    if kind in _SCALAR_TYPES:
        wanted = _SCALAR_TYPES[kind]

        def check_scalar(value: Any) -> Any:
            if value is None or type(value) in wanted:
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
            if strings and not all(type(k) is str and type(v) is str for k, v in value.items()):
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
        nested = compile_dumper(field.schema)  # type: ignore[attr-defined]

        def check_nested(value: Any) -> Any:
            if value is None:
                return None
            if type(value) is not dict:
                raise _FALLBACK
            return nested(value)

        return check_nested
    raise _NotCompilable(f"field type {kind.__name__}")
