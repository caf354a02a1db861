"""Upload rules, file names and content sniffing: pure functions, no Flask.

Three jobs, in the order an upload meets them:

1. **Before signing** -- :meth:`RuleSet.check` applies the size, type and extension rules to
   what the client *declares*. The server's :class:`Rules` come from ``OBITOX_*`` settings; a
   request's ``validation`` object can only tighten them (:meth:`Rules.tighten`).
2. **Naming** -- :func:`sanitize_filename` turns a client's file name into one safe path segment.
3. **After the upload** -- :func:`verify_content` compares the first :data:`HEAD_BYTES` of the
   stored object (identified by :func:`sniff`) with the declared type.

Everything here is cheap to call per file: :meth:`RuleSet.check` runs once per file of a batch,
so its patterns are compiled once (at :meth:`Rules.tighten`), not per call.
"""

from __future__ import annotations

import functools
import math
import re
import struct
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import puremagic

from .errors import ObitoXError

__all__ = [
    "DANGEROUS_CONTENT_TYPES",
    "DANGEROUS_EXTENSIONS",
    "HEAD_BYTES",
    "ExtensionRule",
    "RuleSet",
    "Rules",
    "TypeRule",
    "content_type_allowed",
    "extension_of",
    "is_dangerous_filename",
    "normalize_content_type",
    "sanitize_filename",
    "sniff",
    "verify_content",
]

_KiB = 1024
_MiB = 1024 * _KiB

# -- what counts as dangerous ----------------------------------------------------------

#: Extensions a desktop OS runs, installs or interprets on a double click.
#:
#: Source: Microsoft's list of file types Outlook blocks as attachments ("Blocked
#: attachments in Outlook", Level 1), keeping the ones that execute code -- programs,
#: installers, scripts for Windows Script Host / PowerShell / cmd, shortcuts, control-panel
#: and management-console snap-ins, ClickOnce and MSIX packages -- plus the Unix, macOS,
#: Android and iOS equivalents (shell scripts, ``.command``, app bundles, disk images,
#: packages). Left out on purpose: formats that only run inside a tool a user opens
#: deliberately and that are common upload payloads (``.py``, ``.pl``, ``.mdb``, ``.iso``,
#: ``.cer``...); a deployment that wants them blocked lists ``OBITOX_ALLOWED_EXTENSIONS``.
DANGEROUS_EXTENSIONS: frozenset[str] = frozenset(
    {
        # Windows programs, libraries, drivers, screen savers, installers
        "exe", "dll", "com", "scr", "pif", "cpl", "sys", "drv", "ocx",
        "msi", "msp", "mst", "msu", "msc", "gadget",
        "appx", "appxbundle", "msix", "msixbundle", "application", "appref-ms", "xbap",
        # Windows scripts: cmd, Windows Script Host, PowerShell, HTML applications
        "bat", "cmd", "vb", "vba", "vbs", "vbe", "js", "jse", "ws", "wsf", "wsh", "wsc", "sct",
        "hta", "chm", "ps1", "psm1", "psd1", "ps1xml", "ps2", "ps2xml", "psc1", "psc2",
        "msh", "msh1", "msh2", "mshxml", "msh1xml", "msh2xml",
        # Windows shortcuts and things that change the system when opened
        "lnk", "url", "scf", "shb", "shs", "inf", "reg", "settingcontent-ms",
        # Java
        "jar", "jnlp",
        # Unix shells and macOS double-clickable scripts
        "sh", "bash", "csh", "tcsh", "ksh", "zsh", "fish", "command", "run",
        # macOS / Linux / mobile applications and packages
        "app", "dmg", "pkg", "mpkg", "deb", "rpm", "apk", "xapk", "ipa", "appimage",
    }
)  # fmt: skip

#: Content types of programs and scripts, refused when executables are blocked.
#: IANA names and the de-facto ``x-`` names browsers and shared-mime-info use.
DANGEROUS_CONTENT_TYPES: frozenset[str] = frozenset(
    {
        "application/vnd.microsoft.portable-executable", "application/x-msdownload",
        "application/x-msdos-program", "application/x-dosexec", "application/x-ms-dos-executable",
        "application/x-msi", "application/x-ms-installer", "application/x-ms-shortcut",
        "application/x-ms-application", "application/hta", "application/x-bat",
        "application/x-executable", "application/x-elf", "application/x-sharedlib",
        "application/x-mach-binary", "application/x-pie-executable",
        "application/x-sh", "application/x-shellscript", "text/x-shellscript", "text/x-sh",
        "application/x-csh", "text/x-csh", "application/x-powershell",
        "application/java-archive", "application/x-java-archive", "application/java-vm",
        "application/x-java-jnlp-file",
        "text/javascript", "application/javascript", "application/x-javascript",
        "application/ecmascript", "text/ecmascript", "text/jscript",
        "text/vbscript", "application/x-vbscript",
        "application/vnd.android.package-archive", "application/x-debian-package",
        "application/vnd.debian.binary-package", "application/x-rpm",
        "application/x-redhat-package-manager", "application/x-apple-diskimage",
        "application/vnd.apple.installer+xml",
    }
)  # fmt: skip

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


# -- file names -------------------------------------------------------------------------

_SEPARATORS = re.compile(r"[/\\]")
_RESERVED_CHARS = str.maketrans(dict.fromkeys('<>:"|?*', "_"))
_SPACE_RUNS = re.compile(r" {2,}")
#: "name::$DATA" is the NTFS default data stream of "name": the same file.
_DEFAULT_STREAM = re.compile(r"(?:::\$data[ .]*)+\Z", re.IGNORECASE)
#: Device names Windows reserves in every directory, with any extension ("CON.txt").
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{device}{n}" for device in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"]
)
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})


def _clean_chars(name: str) -> str:
    """Every whitespace character -> space; controls, format characters (bidi overrides,
    zero-width), lone surrogates removed; then NFC (after the removals, so the result is
    stable: removing a zero-width space can bring a letter and its accent together)."""
    if name.isprintable():  # the common case: only " " as whitespace, nothing to drop
        return name if name.isascii() else unicodedata.normalize("NFC", name)
    kept = []
    for char in name:
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char) not in _INVISIBLE_CATEGORIES:
            kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept))


def _last_segment(name: str) -> str:
    """The base name under both separators: the last segment that is not empty or dots."""
    if "/" not in name and "\\" not in name:
        return name
    for segment in reversed(_SEPARATORS.split(name)):
        if segment.strip(". "):
            return segment
    return ""


def _base_name(name: str) -> str:
    """The cleaned base name, without a trailing NTFS default-stream suffix."""
    base = _last_segment(_clean_chars(name))
    return _DEFAULT_STREAM.sub("", base) if ":" in base else base


def _ext(name: str) -> str:
    name = name.rstrip(". ")
    dot = name.rfind(".")
    return name[dot + 1 :].lower() if dot >= 0 else ""


def extension_of(filename: str) -> str:
    """The extension an OS would act on: lower case, no dot, ``""`` if none.

    ``"archive.tar.gz"`` -> ``"gz"``. ``"EVIL.EXE."``, ``"evil.exe "`` (Windows drops
    trailing dots and spaces), ``"evil.exe::$DATA"`` (the NTFS default stream) and
    ``"photo\\u202egnp.exe"`` (format characters are invisible, so ignored) -> ``"exe"``.
    Only the base name counts (``"C:\\\\x\\\\a.pdf"`` -> ``"pdf"``); a name that is all
    extension (``".exe"``) counts as that extension, as on Windows.
    """
    return _ext(_base_name(filename))


def _candidate_extensions(filename: str) -> set[str]:
    """Every extension a filesystem could end up acting on, for the dangerous check."""
    name = _base_name(filename.split("\x00", 1)[0])
    found = {_ext(name)}
    if ":" in name:
        # NTFS alternate data streams: "a.exe::$DATA" and "a.exe:x" are streams of a.exe.
        found.add(_ext(name.split(":", 1)[0]))
    if "\x00" in filename:
        # What follows a NUL is cut off by anything using C strings; check the whole too.
        found.add(extension_of(filename))
    return found


def is_dangerous_filename(filename: str) -> bool:
    """Whether any extension a filesystem could act on is in :data:`DANGEROUS_EXTENSIONS`."""
    return not DANGEROUS_EXTENSIONS.isdisjoint(_candidate_extensions(filename))


def _is_reserved_device(name: str) -> bool:
    return name.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_RESERVED


def _truncate_utf8(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that is at most ``limit`` UTF-8 bytes."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _fit(name: str, max_length: int) -> str:
    """``name`` cut to ``max_length`` UTF-8 bytes, keeping its extension when it can."""
    if len(name.encode("utf-8")) <= max_length:
        return name
    dot = name.rfind(".")
    if dot > 0:
        stem, ext = name[:dot], name[dot:]
        ext_bytes = len(ext.encode("utf-8"))
        if ext_bytes <= max_length // 2:
            stem = _truncate_utf8(stem, max_length - ext_bytes).rstrip(". ")
            if stem:
                return stem + ext
    # The extension cannot be kept whole. Cutting through it could leave a different one
    # ("x.exeXXXX" -> "x.exe"), so the result gets none: its dots become underscores.
    return _truncate_utf8(name, max_length).rstrip(". ").replace(".", "_")


def sanitize_filename(name: str, *, max_length: int = 255) -> str:
    """One safe path segment for ``name``, keeping what a person would recognise.

    NFC; base name only (``/`` and ``\\`` both separate); whitespace becomes single spaces;
    control and format characters (bidi overrides, zero-width) removed; ``<>:"|?*`` become
    ``_``; a trailing NTFS ``::$DATA`` removed; no leading dots (never hidden, never ``.``
    or ``..``) and no trailing dots or spaces; Windows device names (``CON``, ``com1.txt``)
    get a ``_`` prefix; at most ``max_length`` UTF-8 bytes, keeping the extension. Letters
    in any script and emoji are kept: ``"résumé 2024.pdf"`` stays as it is.

    Raises ``VALIDATION_FAILED`` when nothing is left (``"../.."``, ``"\\u202e"``).
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    cleaned = _base_name(name).translate(_RESERVED_CHARS)
    if "  " in cleaned:
        cleaned = _SPACE_RUNS.sub(" ", cleaned)
    cleaned = _fit(cleaned.strip(". "), max_length)
    if cleaned and _is_reserved_device(cleaned):
        cleaned = _fit("_" + cleaned, max_length)
    if not cleaned:
        raise ObitoXError(
            "VALIDATION_FAILED",
            f"filename {name[:100]!r} has no usable characters left once made safe",
            details={"field": "filename", "reason": "empty"},
        )
    return cleaned


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
        type_rules = (TypeRule.build(rules.allowed_types, "OBITOX_ALLOWED_CONTENT_TYPES"),)
    extension_rules: tuple[ExtensionRule, ...] = ()
    if rules.allowed_extensions:
        extension_rules = (
            ExtensionRule(
                "OBITOX_ALLOWED_EXTENSIONS",
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


# -- sniffing ---------------------------------------------------------------------------

#: Bytes to read from a stored object for :func:`sniff`. puremagic's own maximum is
#: ~36 KiB, but only for the ISO-9660 descriptor at 32 KiB; every other header signature
#: it knows (1434 of 1437) ends within 2.2 KiB, and the ZIP refinement below reads entry
#: names that sit in the first few hundred bytes. 4 KiB is one small ranged GET.
HEAD_BYTES = 4096

#: puremagic's confidence is (signature length) / 10: below 0.3 are 1-2 byte signatures
#: ("BM", "MZ", "{") that ordinary text starts with too often to count as evidence.
_MIN_CONFIDENCE = 0.3

#: Types whose files always start with their signature: declaring one of these for
#: content without it is a mismatch. Formats whose signature is optional or that
#: puremagic misses in valid files (MP3 without ID3, BigTIFF, BMP's two bytes, FLAC with
#: an ID3 tag, CSV sent as application/vnd.ms-excel by Windows browsers) are not here.
_STRICT_FAMILIES = frozenset(
    {"png", "jpeg", "gif", "webp", "pdf", "zip", "gzip", "bzip2", "xz", "7z", "rar",
     "isobmff", "ebml", "ogg", "wav"}
)  # fmt: skip

#: Families of types that share one signature, by normalized type.
_FAMILY_OF: dict[str, str] = {
    "image/png": "png",
    "image/apng": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/tiff": "tiff",
    "image/bmp": "bmp",
    "image/vnd.microsoft.icon": "ico",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "application/epub+zip": "zip",
    "application/java-archive": "zip",
    "application/vnd.android.package-archive": "zip",
    "application/gzip": "gzip",
    "application/x-bzip2": "bzip2",
    "application/x-xz": "xz",
    "application/x-7z-compressed": "7z",
    "application/vnd.rar": "rar",
    "application/zstd": "zstd",
    "video/mp4": "isobmff",
    "audio/mp4": "isobmff",
    "video/x-m4v": "isobmff",
    "video/quicktime": "isobmff",
    "video/3gpp": "isobmff",
    "video/3gpp2": "isobmff",
    "audio/3gpp": "isobmff",
    "image/heic": "isobmff",
    "image/heif": "isobmff",
    "image/heic-sequence": "isobmff",
    "image/heif-sequence": "isobmff",
    "image/avif": "isobmff",
    "video/webm": "ebml",
    "audio/webm": "ebml",
    "video/x-matroska": "ebml",
    "audio/x-matroska": "ebml",
    "application/ogg": "ogg",
    "audio/ogg": "ogg",
    "video/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/flac": "flac",
    "audio/wav": "wav",
    "audio/mpeg": "mpeg-audio",
    "application/x-ole-storage": "cfb",
    "application/msword": "cfb",
    "application/vnd.ms-excel": "cfb",
    "application/vnd.ms-powerpoint": "cfb",
    "application/vnd.ms-outlook": "cfb",
    "application/vnd.visio": "cfb",
    "application/vnd.ms-works": "cfb",
    "application/x-msi": "cfb",
}
_ZIP_PREFIXES = (
    "application/vnd.openxmlformats-officedocument.",
    "application/vnd.oasis.opendocument.",
    "application/vnd.ms-word.",
    "application/vnd.ms-excel.",
    "application/vnd.ms-powerpoint.",
)


def _family(normalized_type: str) -> str | None:
    family = _FAMILY_OF.get(normalized_type)
    if family is None and (
        normalized_type.startswith(_ZIP_PREFIXES) or normalized_type.endswith("+zip")
    ):
        return "zip"
    return family


def _is_textual(normalized_type: str) -> bool:
    """Text formats: found by content heuristics, not signatures, and served as whatever
    was declared, so an allow-list is not enforced on them."""
    return (
        normalized_type.startswith("text/")
        or normalized_type.endswith(("+xml", "/xml", "+json", "/json"))
        or normalized_type in ("application/rtf", "application/postscript")
    )


@dataclass(frozen=True, slots=True)
class _Detection:
    mime: str | None
    #: Every plausible type (puremagic often lists several for one signature).
    mimes: frozenset[str] = frozenset()
    families: frozenset[str] = frozenset()
    executable: bool = False


_UNKNOWN = _Detection(None)

# Executables are recognised here, not by puremagic, because its answers for them are not
# usable: ELF and Mach-O come back with no MIME type, a real PE as "ZoneAlarm data file"
# with none, a bare "MZ" at confidence 0.2, CAFEBABE as Java only, and "#!/bin/sh" not at
# all. The magic numbers are the formats' own (PE/COFF spec, ELF gABI, <mach-o/loader.h>).
_MACHO_MAGICS = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_SHEBANG = re.compile(rb"#![ \t]*(/[^\s]*)[ \t]*([^\s]*)")
_INTERPRETERS = (
    (b"python", "text/x-python"),
    (b"perl", "text/x-perl"),
    (b"ruby", "text/x-ruby"),
    (b"node", "text/javascript"),
    (b"deno", "text/javascript"),
    (b"bun", "text/javascript"),
    (b"php", "application/x-php"),
)


def _sniff_executable(head: bytes) -> str | None:
    if head.startswith(b"MZ"):
        # DOS header: e_lfanew at 0x3C points at "PE\0\0" for Windows programs. A text
        # file can start with "MZ" too; a real header always has NUL bytes.
        if len(head) >= 0x40:
            (pe_offset,) = struct.unpack_from("<I", head, 0x3C)
            if head[pe_offset : pe_offset + 4] == b"PE\x00\x00":
                return "application/vnd.microsoft.portable-executable"
        if b"\x00" in head[2:64]:
            return "application/x-dosexec"
        return None
    if head.startswith(b"\x7fELF"):
        return "application/x-executable"
    if head.startswith(_MACHO_MAGICS):
        return "application/x-mach-binary"
    if head.startswith(b"\xca\xfe\xba\xbe") and len(head) >= 8:
        # Shared by Mach-O universal binaries (next: a small architecture count) and Java
        # class files (next: minor and major version, major >= 45) -- file(1)'s rule.
        (count,) = struct.unpack_from(">I", head, 4)
        return "application/x-mach-binary" if count < 45 else "application/java-vm"
    if head.startswith(b"#!"):
        match = _SHEBANG.match(head)
        if match is None:  # "#![allow(...)]" (Rust) is not a shebang
            return None
        program = match.group(1).rsplit(b"/", 1)[-1]
        if program == b"env" and match.group(2) and not match.group(2).startswith(b"-"):
            program = match.group(2)
        for prefix, mime in _INTERPRETERS:
            if program.startswith(prefix):
                return mime
        return "text/x-shellscript"
    return None


_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_MIMETYPE_VALUE = re.compile(rb"[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*\Z")
_OOXML_PARTS = (
    (b"word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (b"xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    (b"ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
)


def _zip_kind(head: bytes) -> str:
    """Which ZIP-based format ``head`` starts, from its entry names.

    puremagic cannot tell ZIP-based formats apart (it lists .docx first for every ZIP and
    calls any ZIP with a data descriptor a .jar), so this reads what the formats define:
    ODF and EPUB store their type as the first entry, ``mimetype``, uncompressed; JARs
    start with ``META-INF/``; APKs often with ``AndroidManifest.xml``; Office Open XML
    has a ``[Content_Types].xml`` part and ``word/``, ``xl/`` or ``ppt/`` parts.
    """
    if head.startswith(b"PK\x03\x04") and len(head) >= 30:
        method, csize, name_len, extra_len = struct.unpack_from("<8xH8xI4xHH", head, 0)
        name = head[30 : 30 + name_len]
        if name == b"mimetype" and method == 0:
            start = 30 + name_len + extra_len
            value = head[start : start + csize].strip()
            if csize <= 100 and _MIMETYPE_VALUE.match(value):
                return value.decode("ascii")
        if name.startswith(b"META-INF/"):
            return "application/java-archive"
        if name == b"AndroidManifest.xml":
            return "application/vnd.android.package-archive"
        if b"[Content_Types].xml" in head:
            for part, mime in _OOXML_PARTS:
                if part in head:
                    return mime
    return "application/zip"


_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_GENERIC_ANSWERS = frozenset({"video/mp4", "application/octet-stream"})


def _detect(head: bytes) -> _Detection:
    if not head:
        return _UNKNOWN
    executable = _sniff_executable(head)
    if executable is not None:
        return _Detection(executable, frozenset({executable}), frozenset({"executable"}), True)
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        matches = []
    candidates = [
        (m.confidence, normalize_content_type(m.mime_type))
        for m in matches
        if m.confidence >= _MIN_CONFIDENCE and m.mime_type
    ]
    candidates = [(c, mime) for c, mime in candidates if mime != "application/octet-stream"]
    if b"%PDF-" in head[:1024] and not any(mime == "application/pdf" for _, mime in candidates):
        # PDF readers accept "%PDF-" anywhere in the first 1024 bytes (PDF 1.7, annex H:
        # a BOM or junk first); puremagic only looks at offset 0.
        candidates.insert(0, (1.0, "application/pdf"))
    if not candidates:
        return _UNKNOWN
    mimes = [mime for _, mime in candidates]
    if head.startswith(_ZIP_MAGICS) and any(_family(m) == "zip" for m in mimes):
        kind = _zip_kind(head)
        executable_zip = kind in DANGEROUS_CONTENT_TYPES
        return _Detection(kind, frozenset({kind}), frozenset({"zip"}), executable_zip)
    if head.startswith(_CFB_MAGIC):
        # OLE2 compound files (.doc, .xls, .ppt, .msi, .msg...) share one header;
        # puremagic guesses the application, so report the container.
        kind = "application/x-ole-storage"
        return _Detection(kind, frozenset({kind}), frozenset({"cfb"}))
    best_confidence = candidates[0][0]
    tied = [mime for c, mime in candidates if c == best_confidence]
    best = next((m for m in tied if m not in _GENERIC_ANSWERS), tied[0])
    families = frozenset(f for f in map(_family, mimes) if f is not None)
    return _Detection(best, frozenset(mimes), families)


def sniff(head: bytes) -> str | None:
    """The content type the first bytes of a file show, or ``None`` when unrecognised.

    puremagic does the identification; executables (PE, ELF, Mach-O, ``#!`` scripts) and
    ZIP- and OLE2-based formats are refined here because its answers for them are missing
    or ambiguous. Aliases are folded (``image/x-ms-bmp`` -> ``image/bmp``).
    """
    return _detect(bytes(head)).mime


def _allowed_by(mime: str, rules: RuleSet) -> bool:
    return all(rule.matches(mime) for rule in rules.type_rules)


def verify_content(declared_type: str, head: bytes, rules: RuleSet | Rules) -> str | None:
    """``None`` when the stored bytes agree with the declared type, else a short reason.

    Mismatches, in order: (1) the bytes are a program or script (PE, ELF, Mach-O, Java,
    ``#!``) and executables are blocked; (2) the declared type always carries a signature
    (PNG, JPEG, GIF, WebP, PDF, ZIP and its formats, gzip, MP4...) and the bytes do not
    start with one of its family -- a JPEG declared as ``image/png``, or no signature at
    all; (3) the bytes are a binary format the allow-lists do not accept (a file of the
    declared type's family counts as the declared type: a .docx declared as
    ``application/zip``). A type without a signature (``text/plain``, ``text/csv``,
    ``application/json``, ``application/octet-stream``) with unrecognised bytes is fine.
    """
    ruleset = rules.ruleset() if isinstance(rules, Rules) else rules
    declared = normalize_content_type(declared_type)
    declared_family = _family(declared)
    detection = _detect(bytes(head))

    if detection.executable and ruleset.block_executables:
        return f"content is an executable ({detection.mime}), which is not accepted"

    if declared_family in _STRICT_FAMILIES and declared_family not in detection.families:
        if not head:
            return f"content is empty, not {declared}"
        if detection.mime is None:
            return f"content does not start with the signature of {declared}"
        return f"declared {declared} but content is {detection.mime}"

    if (
        detection.mime is not None
        and ruleset.type_rules
        and not _is_textual(detection.mime)
        # A head without NUL bytes is text-like: weak signature matches on text (a CSV
        # line starting "FWS," is "Flash" to puremagic) are not evidence enough to delete
        # it. A strong one (%PDF-, PNG, ZIP... at offset 0) always is.
        and (b"\x00" in head or not detection.families.isdisjoint(_STRICT_FAMILIES))
    ):
        accepted = any(_allowed_by(mime, ruleset) for mime in detection.mimes) or (
            declared_family is not None
            and declared_family in detection.families
            and _allowed_by(declared, ruleset)
        )
        if not accepted:
            return f"content is {detection.mime}, which is not an allowed type"
    return None
