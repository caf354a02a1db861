"""Before signing: the size, type and extension rules applied to what a client *declares*.

The server's :class:`Rules` come from ``OBITOX_*`` settings; a request's ``validation``
object can only tighten them (:meth:`Rules.tighten`). :meth:`RuleSet.check` runs once per
file of a batch, so its patterns are compiled once (at :meth:`Rules.tighten`), not per call.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ObitoXError
from .names import (
    DANGEROUS_CONTENT_TYPES,
    DANGEROUS_EXTENSIONS,
    extension_of,
    is_dangerous_filename,
)

__all__ = [
    "ExtensionRule",
    "RuleSet",
    "Rules",
    "TypeRule",
    "content_type_allowed",
    "normalize_content_type",
]

_KiB = 1024
_MiB = 1024 * _KiB

# -- content types ----------------------------------------------------------------------

#: Spellings of one type that clients and libraries use interchangeably, mapped to one
#: name, so an allow-list of ``image/jpeg`` accepts ``image/jpg`` and a sniffed
#: ``audio/x-wav`` agrees with a declared ``audio/wav``.
_ALIASES: dict[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/jpe": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/x-bmp": "image/bmp",
    "image/x-icon": "image/vnd.microsoft.icon",
    "application/x-pdf": "application/pdf",
    "application/x-zip-compressed": "application/zip",
    "application/x-zip": "application/zip",
    "application/x-gzip": "application/gzip",
    "application/x-rar-compressed": "application/vnd.rar",
    "application/x-rar": "application/vnd.rar",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/x-flac": "audio/flac",
    "audio/x-m4a": "audio/mp4",
    "audio/m4a": "audio/mp4",
    "application/excel": "application/vnd.ms-excel",
    "application/x-excel": "application/vnd.ms-excel",
    "application/x-msexcel": "application/vnd.ms-excel",
    "application/mspowerpoint": "application/vnd.ms-powerpoint",
    "application/x-mspowerpoint": "application/vnd.ms-powerpoint",
    "application/x-visio": "application/vnd.visio",
    # RFC 9239 made text/javascript the one name.
    "application/javascript": "text/javascript",
    "application/x-javascript": "text/javascript",
    "application/ecmascript": "text/javascript",
    "text/ecmascript": "text/javascript",
}


def normalize_content_type(content_type: str) -> str:
    """``"Image/JPG; q=1"`` -> ``"image/jpeg"``: no parameters, lower case, one alias."""
    base = content_type.partition(";")[0].strip().lower()
    return _ALIASES.get(base, base)


@dataclass(frozen=True, slots=True)
class TypeRule:
    """One allow-list of content types, compiled: a type must match one of its patterns.

    ``*/*`` (or ``*``) matches anything, ``image/*`` any ``image/`` type, anything else
    exactly (after :func:`normalize_content_type`). A pattern that is none of these (no
    ``/``, a ``*`` elsewhere) matches nothing: a typo fails closed.
    """

    source: str
    patterns: tuple[str, ...]
    any: bool
    exact: frozenset[str]
    majors: frozenset[str]

    @classmethod
    def build(cls, patterns: Iterable[str], source: str) -> TypeRule:
        normalized = tuple(dict.fromkeys(normalize_content_type(p) for p in patterns))
        exact: set[str] = set()
        majors: set[str] = set()
        any_type = False
        for pattern in normalized:
            kind, value = _classify_pattern(pattern)
            if kind == "any":
                any_type = True
            elif kind == "major":
                majors.add(value)
            elif kind == "exact":
                exact.add(value)
        return cls(source, normalized, any_type, frozenset(exact), frozenset(majors))

    def matches(self, normalized_type: str) -> bool:
        """Whether an already-normalized type is allowed."""
        return (
            self.any
            or normalized_type in self.exact
            or normalized_type.partition("/")[0] in self.majors
        )


def _classify_pattern(pattern: str) -> tuple[str, str]:
    """("any"|"major"|"exact"|"invalid", value) for a normalized pattern."""
    if pattern in ("*", "*/*"):
        return "any", ""
    major, slash, minor = pattern.partition("/")
    if not slash or not major or not minor or "*" in major or "/" in minor:
        return "invalid", ""
    if minor == "*":
        return "major", major
    if "*" in minor:
        return "invalid", ""
    return "exact", pattern


@functools.lru_cache(maxsize=256)
def _type_rule(patterns: tuple[str, ...]) -> TypeRule:
    return TypeRule.build(patterns, "patterns")


def content_type_allowed(content_type: str, patterns: Sequence[str]) -> bool:
    """Whether ``content_type`` matches one of ``patterns`` (an empty list allows anything).

    Case-insensitive, parameters (``; charset=utf-8``) ignored on both sides, ``image/*`` and
    ``*/*`` wildcards, common aliases (``image/jpg`` is ``image/jpeg``) folded.
    """
    if not patterns:
        return True
    return _type_rule(tuple(patterns)).matches(normalize_content_type(content_type))


def _intersect_patterns(first: Sequence[str], second: Sequence[str]) -> list[str]:
    """Patterns matching exactly the types both lists match (both non-empty)."""
    result: dict[str, None] = {}
    for a in first:
        kind_a, value_a = _classify_pattern(normalize_content_type(a))
        for b in second:
            kind_b, value_b = _classify_pattern(normalize_content_type(b))
            if "invalid" in (kind_a, kind_b):
                continue
            if kind_a == "any":
                common = normalize_content_type(b)
            elif kind_b == "any":
                common = normalize_content_type(a)
            elif kind_a == "major" and kind_b == "major":
                common = f"{value_a}/*" if value_a == value_b else ""
            elif kind_a == "major":
                common = value_b if value_b.partition("/")[0] == value_a else ""
            elif kind_b == "major":
                common = value_a if value_a.partition("/")[0] == value_b else ""
            else:
                common = value_a if value_a == value_b else ""
            if common:
                result[common] = None
    # An empty intersection must still allow nothing: "!" is a pattern that matches no type.
    return list(result) or ["!"]


# -- rules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExtensionRule:
    """One allow-list of extensions: a file's extension must be in it."""

    source: str
    extensions: frozenset[str]
    listed: tuple[str, ...]


def _normalize_extension(ext: str) -> str:
    return ext.strip().lower().lstrip(".")


@dataclass(frozen=True, slots=True, eq=False)
class RuleSet:
    """The effective rules for one file: the server's, tightened by any client rules.

    ``max_size``/``min_size`` are the binding limits in bytes (for presigned POST
    policies too); ``client_rules`` is one ``validation`` object equivalent to every client
    object applied so far -- store it and ``Rules.tighten(client_rules)`` rebuilds this set.
    """

    max_size: int
    min_size: int
    block_executables: bool
    max_size_source: str
    min_size_source: str
    type_rules: tuple[TypeRule, ...] = ()
    extension_rules: tuple[ExtensionRule, ...] = ()
    client_rules: dict[str, Any] = field(default_factory=dict)

    def check(self, filename: str, content_type: str, size: int) -> None:
        """Raise :class:`ObitoXError` unless the declared file satisfies every rule."""
        if size > self.max_size:
            raise ObitoXError(
                "FILE_TOO_LARGE",
                f"size {size} exceeds {self.max_size_source} ({self.max_size})",
                details={
                    "field": "size",
                    "limit": self.max_size,
                    "actual": size,
                    "source": self.max_size_source,
                },
            )
        if size < self.min_size or size < 0:
            if size < 0:
                message, reason = f"size {size} is negative", "negative"
            else:
                message = f"size {size} is below {self.min_size_source} ({self.min_size})"
                reason = "too_small"
            raise ObitoXError(
                "VALIDATION_FAILED",
                message,
                details={
                    "field": "size",
                    "reason": reason,
                    "limit": max(self.min_size, 0),
                    "actual": size,
                    "source": self.min_size_source,
                },
            )
        normalized = normalize_content_type(content_type)
        if self.block_executables and normalized in DANGEROUS_CONTENT_TYPES:
            raise ObitoXError(
                "VALIDATION_FAILED",
                f"content type {normalized!r} is an executable type, which is not accepted",
                details={"field": "contentType", "reason": "dangerous_content_type"},
            )
        for rule in self.type_rules:
            if not rule.matches(normalized):
                raise ObitoXError(
                    "VALIDATION_FAILED",
                    f"content type {normalized!r} is not allowed by {rule.source}",
                    details={
                        "field": "contentType",
                        "reason": "type_not_allowed",
                        "allowed": list(rule.patterns),
                        "source": rule.source,
                    },
                )
        ext = extension_of(filename)
        if self.block_executables and (
            ext in DANGEROUS_EXTENSIONS
            # NUL and ":" (NTFS streams) give a name more than one extension to check.
            or (("\x00" in filename or ":" in filename) and is_dangerous_filename(filename))
        ):
            raise ObitoXError(
                "VALIDATION_FAILED",
                f"filename {filename[:100]!r} has an executable extension, which is not accepted",
                details={"field": "filename", "reason": "dangerous_extension"},
            )
        if self.extension_rules:
            for ext_rule in self.extension_rules:
                if ext not in ext_rule.extensions:
                    raise ObitoXError(
                        "VALIDATION_FAILED",
                        f"extension {ext!r} is not allowed by {ext_rule.source}",
                        details={
                            "field": "filename",
                            "reason": "extension_not_allowed",
                            "allowed": list(ext_rule.listed),
                            "source": ext_rule.source,
                        },
                    )

    def tighten(self, client: Mapping[str, Any] | None) -> RuleSet:
        """These rules made stricter by a client ``validation`` object (never looser).

        ``maxSizeMB`` (MiB) and ``minSizeKB`` (KiB) can only narrow the size range; a client
        type or extension list is added to the lists a file must satisfy, so it can only
        remove types; ``blockExecutables: false`` changes nothing.
        """
        if not client:
            return self
        max_size, max_source = self.max_size, self.max_size_source
        min_size, min_source = self.min_size, self.min_size_source
        block = self.block_executables
        type_rules, extension_rules = self.type_rules, self.extension_rules
        merged = dict(self.client_rules)

        max_mb = _client_number(client, "maxSizeMB")
        if max_mb is not None and not math.isinf(max_mb):
            limit = max_mb * _MiB  # may overflow to inf: then it binds nothing
            if limit < max_size:
                max_size, max_source = math.floor(limit), "validation.maxSizeMB"
            merged["maxSizeMB"] = min(max_mb, merged.get("maxSizeMB", math.inf))
        min_kb = _client_number(client, "minSizeKB")
        if min_kb is not None:
            floor = min_kb * _KiB
            if not math.isfinite(floor):
                raise _invalid("minSizeKB", "must be a finite number")
            if floor > min_size:
                min_size, min_source = math.ceil(floor), "validation.minSizeKB"
            merged["minSizeKB"] = max(min_kb, merged.get("minSizeKB", 0))

        types = _client_strings(client, "allowedTypes")
        if types:
            type_rules = (*type_rules, TypeRule.build(types, "validation.allowedTypes"))
            earlier = merged.get("allowedTypes")
            merged["allowedTypes"] = _intersect_patterns(earlier, types) if earlier else types
        extensions = _client_strings(client, "allowedExtensions")
        if extensions:
            listed = tuple(dict.fromkeys(_normalize_extension(e) for e in extensions))
            extension_rules = (
                *extension_rules,
                ExtensionRule("validation.allowedExtensions", frozenset(listed), listed),
            )
            earlier = merged.get("allowedExtensions")
            kept = [e for e in listed if e in frozenset(earlier)] if earlier else list(listed)
            # "/" is never an extension: an empty intersection must still allow nothing.
            merged["allowedExtensions"] = kept or ["/"]

        block_value = client.get("blockExecutables")
        if block_value is not None and not isinstance(block_value, bool):
            raise _invalid("blockExecutables", "must be true or false")
        if block_value:
            block = True
            merged["blockExecutables"] = True

        return RuleSet(
            max_size=max_size,
            min_size=min_size,
            block_executables=block,
            max_size_source=max_source,
            min_size_source=min_source,
            type_rules=type_rules,
            extension_rules=extension_rules,
            client_rules=merged,
        )


def _invalid(key: str, problem: str) -> ObitoXError:
    return ObitoXError(
        "INVALID_INPUT",
        f"validation.{key} {problem}",
        details={"field": f"validation.{key}"},
    )


def _client_number(client: Mapping[str, Any], key: str) -> float | None:
    value = client.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(key, "must be a number")
    number = float(value)
    if math.isnan(number) or number < 0:
        raise _invalid(key, "must be a non-negative number")
    return number


def _client_strings(client: Mapping[str, Any], key: str) -> list[str]:
    value = client.get(key)
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise _invalid(key, "must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise _invalid(key, "must be a list of strings")
    return list(value)


@dataclass(frozen=True, slots=True)
class Rules:
    """The server's rules, from ``OBITOX_*`` settings.

    ``allowed_types``/``allowed_extensions`` empty means any. Extensions are stored lower
    case without the dot; types lower case without parameters.
    """

    max_size: int
    min_size: int = 0
    allowed_types: tuple[str, ...] = ()
    allowed_extensions: tuple[str, ...] = ()
    block_executables: bool = True
    #: The setting named in errors (``OBITOX_MAX_MULTIPART_SIZE`` for multipart rules).
    max_size_setting: str = "OBITOX_MAX_FILE_SIZE"
    min_size_setting: str = "OBITOX_MIN_FILE_SIZE"
    #: Named in errors too (an upload profile names its own keys).
    types_setting: str = "OBITOX_ALLOWED_CONTENT_TYPES"
    extensions_setting: str = "OBITOX_ALLOWED_EXTENSIONS"

    def __post_init__(self) -> None:
        if self.max_size < 0 or self.min_size < 0:
            raise ValueError("max_size and min_size must not be negative")
        types = tuple(dict.fromkeys(normalize_content_type(t) for t in self.allowed_types))
        exts = tuple(dict.fromkeys(_normalize_extension(e) for e in self.allowed_extensions))
        object.__setattr__(self, "allowed_types", types)
        object.__setattr__(self, "allowed_extensions", exts)

    def ruleset(self) -> RuleSet:
        """These rules compiled (cached: the same rules give the same object)."""
        return _compile(self)

    def tighten(self, client: Mapping[str, Any] | None) -> RuleSet:
        """These rules, made stricter by a request's ``validation`` object (or ``None``)."""
        return _compile(self).tighten(client)

    def check(self, filename: str, content_type: str, size: int) -> None:
        """:meth:`RuleSet.check` with the server rules alone."""
        _compile(self).check(filename, content_type, size)


@functools.lru_cache(maxsize=64)
def _compile(rules: Rules) -> RuleSet:
    type_rules: tuple[TypeRule, ...] = ()
    if rules.allowed_types:
        type_rules = (TypeRule.build(rules.allowed_types, rules.types_setting),)
    extension_rules: tuple[ExtensionRule, ...] = ()
    if rules.allowed_extensions:
        extension_rules = (
            ExtensionRule(
                rules.extensions_setting,
                frozenset(rules.allowed_extensions),
                rules.allowed_extensions,
            ),
        )
    return RuleSet(
        max_size=rules.max_size,
        min_size=rules.min_size,
        block_executables=rules.block_executables,
        max_size_source=rules.max_size_setting,
        min_size_source=rules.min_size_setting,
        type_rules=type_rules,
        extension_rules=extension_rules,
    )
