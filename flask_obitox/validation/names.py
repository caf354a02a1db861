"""Naming: a client's file name made into one safe path segment, and the files that are
dangerous to store.

:func:`sanitize_filename` turns a client's file name into one safe path segment;
:func:`extension_of` and :func:`is_dangerous_filename` find the extensions an OS would act
on, checked against :data:`DANGEROUS_EXTENSIONS`. Pure functions, no Flask.
"""

from __future__ import annotations

import re
import unicodedata

from ..errors import ObitoXError

__all__ = [
    "DANGEROUS_CONTENT_TYPES",
    "DANGEROUS_EXTENSIONS",
    "extension_of",
    "is_dangerous_filename",
    "sanitize_filename",
]

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

# -- file names -------------------------------------------------------------------------

_SEPARATORS = re.compile(r"[/\\]")
#: Characters Windows reserves in names, each replaced by "_" (a regex: ``str.translate``
#: with a table costs a dict lookup per character, ten times this for a usual name).
_RESERVED_CHARS = re.compile(r'[<>:"|?*]')
_SPACE_RUNS = re.compile(r" {2,}")
#: "name::$DATA" is the NTFS default data stream of "name": the same file.
_DEFAULT_STREAM = re.compile(r"(?:::\$data[ .]*)+\Z", re.IGNORECASE)
#: Device names Windows reserves in every directory, with any extension ("CON.txt").
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{device}{n}" for device in ("COM", "LPT") for n in "0123456789\u00b9\u00b2\u00b3"]
)
_DEVICE_HEADS = frozenset(name[:3] for name in _WINDOWS_RESERVED)
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
    plain = name.isascii() and name.isprintable()  # nothing to clean
    if plain and "/" not in name and "\\" not in name and ":" not in name:
        return name  # the common case: one segment already, and no stream
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
    # Every device name starts with one of a few heads: most names stop at that test.
    # (Upper-casing maps each character on its own: a stem long enough to be a device
    # name upper-cases to the same first three characters as the name does.)
    if name[:3].upper()[:3] not in _DEVICE_HEADS:
        return False
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
    cleaned = _RESERVED_CHARS.sub("_", _base_name(name))
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
