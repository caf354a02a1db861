"""After the upload: the first bytes of a stored object compared with the declared type.

:func:`verify_content` compares the first :data:`HEAD_BYTES` of the stored object
(identified by :func:`sniff`) with the declared type and the upload's rules.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import puremagic

from .names import DANGEROUS_CONTENT_TYPES
from .rules import Rules, RuleSet, normalize_content_type

__all__ = ["HEAD_BYTES", "sniff", "verify_content"]


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
