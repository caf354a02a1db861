"""Rules, file names and content sniffing (flask_obitox.validation)."""

from __future__ import annotations

import gzip
import io
import struct
import unicodedata
import zipfile
import zlib
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from flask_obitox.errors import ObitoXError
from flask_obitox.validation import (
    DANGEROUS_CONTENT_TYPES,
    DANGEROUS_EXTENSIONS,
    HEAD_BYTES,
    Rules,
    RuleSet,
    content_type_allowed,
    extension_of,
    is_dangerous_filename,
    normalize_content_type,
    sanitize_filename,
    sniff,
    verify_content,
)

GiB = 1024**3
MiB = 1024**2

# -- sample heads ------------------------------------------------------------------------


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )


def _zip(names: list[str], *, first_stored: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, name in enumerate(names):
            # A fixed date: the same bytes (and test ids) in every xdist process.
            entry = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            if first_stored and index == 0:
                entry.compress_type = zipfile.ZIP_STORED
                archive.writestr(entry, "application/vnd.oasis.opendocument.text")
            else:
                entry.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(entry, "<x/>" * 20)
    return buffer.getvalue()


PNG = _png()
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xdb\x00\x43\x00"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x000\x01\x00\x9d\x01\x2a\x01\x00\x01\x00"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
ZIP = _zip(["notes.txt", "data/values.csv"])
DOCX = _zip(["[Content_Types].xml", "_rels/.rels", "word/document.xml"])
XLSX = _zip(["[Content_Types].xml", "_rels/.rels", "xl/workbook.xml"])
ODT = _zip(["mimetype", "content.xml"], first_stored=True)
JAR = _zip(["META-INF/MANIFEST.MF", "com/example/Main.class"])
GZIP = gzip.compress(
    b"hello world\n" * 10, mtime=0
)  # the same bytes (and test ids) in every process
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom\x00\x00\x00\x08free"
PE = (
    b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00"
    + b"\xb8" + b"\x00" * 43
    + struct.pack("<I", 0x80)
    + b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21This program cannot be run in DOS mode.\r\r\n$"
).ljust(0x80, b"\x00") + b"PE\x00\x00\x4c\x01\x03\x00"  # fmt: skip
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00\x01\x00\x00\x00"
MACHO = b"\xcf\xfa\xed\xfe\x0c\x00\x00\x01\x00\x00\x00\x00\x02\x00\x00\x00"
SHELL = b"#!/bin/sh\necho hello\n"
TEXT = b"Dear diary,\nToday I uploaded a file.\n"


# -- sanitize_filename -------------------------------------------------------------------

#: Pieces that exercise every rule, mixed with arbitrary text below.
_NASTY = st.sampled_from(
    [".", "..", "/", "\\", ":", "::$DATA", " ", "  ", "\t", "\n", "\x00", "\x7f", "\u202e",
     "\u200b", "\u2066", "\ufeff", "\u00a0", "\u3000", "CON", "com1", "LPT\u00b9", "aux", "nul",
     "exe", "pdf", "é", "e\u0301", "\u0301", "日本", "😀", "<", ">", "|", "?", "*", '"', "$",
     "\ud800", "x" * 40]
)  # fmt: skip
_ANY_CHAR = st.characters(exclude_categories=())  # surrogates and controls included
NAMES = st.one_of(
    st.text(_ANY_CHAR, max_size=80),
    st.lists(st.one_of(_NASTY, st.text(_ANY_CHAR, max_size=5)), max_size=20).map("".join),
)


def _safe_or_none(name: str, max_length: int = 255) -> str | None:
    failure: ObitoXError | None = None
    try:
        return sanitize_filename(name, max_length=max_length)
    except ObitoXError as error:
        failure = error
    assert failure.code == "VALIDATION_FAILED"
    assert failure.details["field"] == "filename"
    return None


@settings(max_examples=600)
@given(NAMES, st.integers(min_value=1, max_value=300))
@example("../../etc/passwd", 255)
@example("a" * 300 + ".pdf", 255)
@example("\u00e9" * 200 + ".txt", 50)
def test_sanitize_properties(name: str, max_length: int) -> None:
    safe = _safe_or_none(name, max_length)
    if safe is None:
        return
    assert safe not in ("", ".", "..")
    assert not safe.startswith(".")
    assert not safe.endswith((".", " "))
    assert safe == safe.strip()
    assert "  " not in safe
    assert not any(c in safe for c in '/\\<>:"|?*')
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs") for c in safe)
    assert len(safe.encode("utf-8")) <= max_length
    assert unicodedata.is_normalized("NFC", safe)
    stem = safe.split(".", 1)[0].rstrip(" ").upper()
    assert stem not in {"CON", "PRN", "AUX", "NUL"}
    assert not (stem[:3] in ("COM", "LPT") and len(stem) == 4)
    # Idempotent: a safe name is its own safe name.
    assert sanitize_filename(safe, max_length=max_length) == safe


@settings(max_examples=600)
@given(NAMES, st.integers(min_value=1, max_value=300))
@example("A" * 251 + ".exe" + "B" * 200, 255)
@example("report.exe." + "x" * 300, 255)
@example("a.txt:.exe", 255)
@example("a.exe\u200b", 255)
@example("a.exe\x00.png", 255)
def test_sanitize_never_creates_a_dangerous_extension(name: str, max_length: int) -> None:
    """The service checks the sanitized name; raw-name tricks must not survive into it."""
    safe = _safe_or_none(name, max_length)
    assume(safe is not None)
    assert safe is not None
    if not is_dangerous_filename(name):
        assert not is_dangerous_filename(safe)
        assert extension_of(safe) not in DANGEROUS_EXTENSIONS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.dll", "evil.dll"),
        ("C:\\Users\\bob\\Desktop\\report.pdf", "report.pdf"),
        ("/var/www/../upload.png/", "upload.png"),
        ("résumé 2024.pdf", "résumé 2024.pdf"),
        ("re\u0301sume\u0301.pdf", "résumé.pdf"),  # decomposed -> NFC
        ("日本語のファイル.txt", "日本語のファイル.txt"),
        ("😀 party 🎉.png", "😀 party 🎉.png"),
        ("Отчёт.docx", "Отчёт.docx"),
        ("photo\u202egnp.exe", "photognp.exe"),  # RLO removed: the real name shows
        ("zero\u200bwidth\u2066.txt", "zerowidth.txt"),
        ("tab\tnew\nline.txt", "tab new line.txt"),
        ("  many    spaces  .txt  ", "many spaces .txt"),
        ("nbsp\u00a0and\u3000ideographic.txt", "nbsp and ideographic.txt"),
        ('a:b*c?d<e>f|g"h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("a.exe::$DATA", "a.exe"),
        ("a.exe. . .", "a.exe"),
        (".htaccess", "htaccess"),
        ("...hidden", "hidden"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("NUL .tar.gz", "_NUL .tar.gz"),
        ("COM1.log", "_COM1.log"),
        ("lpt9", "_lpt9"),
        ("LPT\u00b9.txt", "_LPT\u00b9.txt"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("file\x00name.txt", "filename.txt"),
    ],
)
def test_sanitize_examples(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


@pytest.mark.parametrize(
    "raw", ["", ".", "..", "../..", "/", "\\\\", "   ", "\u202e\u200b", "\x00", "::$DATA"]
)
def test_sanitize_empty_results_fail(raw: str) -> None:
    with pytest.raises(ObitoXError) as info:
        sanitize_filename(raw)
    assert info.value.code == "VALIDATION_FAILED"
    assert info.value.status == 422
    assert info.value.details["field"] == "filename"


def test_sanitize_long_names_keep_their_extension() -> None:
    safe = sanitize_filename("a" * 300 + ".pdf")
    assert safe.endswith(".pdf")
    assert len(safe.encode()) == 255
    # Multi-byte characters are never cut in half.
    safe = sanitize_filename("日" * 100 + ".jpeg", max_length=64)
    assert safe == "日" * 19 + ".jpeg"
    assert len(safe.encode()) <= 64
    # An extension too long to keep is not cut into another one.
    cut = sanitize_filename("A" * 251 + ".exe" + "B" * 200)
    assert extension_of(cut) == ""
    assert len(cut.encode()) <= 255


def test_sanitize_rejects_bad_max_length() -> None:
    with pytest.raises(ValueError, match="max_length"):
        sanitize_filename("a.txt", max_length=0)


# -- extension_of / dangerous names -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("archive.tar.gz", "gz"),
        ("README", ""),
        ("Photo.JPG", "jpg"),
        ("dir.d/file", ""),
        ("C:\\x\\a.PDF", "pdf"),
        ("a.exe.", "exe"),
        ("a.exe ", "exe"),
        ("a.exe::$DATA", "exe"),
        ("photo\u202egnp.exe", "exe"),
        (".exe", "exe"),
        ("trailing.", ""),
    ],
)
def test_extension_of(name: str, ext: str) -> None:
    assert extension_of(name) == ext


@pytest.mark.parametrize(
    "name",
    [
        "setup.exe",
        "invoice.pdf.exe",
        "EVIL.EXE",
        "a.exe.",
        "a.exe ",
        "a.exe. . ",
        "a.exe::$DATA",
        "a.exe:Zone.Identifier",
        "a.exe\x00.png",
        "photo\u202egnp.exe",
        "photo\u202egpj.scr",
        "a.e\u200bxe",
        "C:\\temp\\run.BAT",
        "../../bin/install.sh",
        "script.ps1",
        "App.app",
        "Installer.dmg",
        "shortcut.lnk",
        "tool.jar",
        "page.hta",
    ],
)
def test_dangerous_names(name: str) -> None:
    assert is_dangerous_filename(name)
    with pytest.raises(ObitoXError) as info:
        Rules(max_size=GiB).check(name, "application/octet-stream", 10)
    assert info.value.code == "VALIDATION_FAILED"
    assert info.value.details == {"field": "filename", "reason": "dangerous_extension"}


@pytest.mark.parametrize(
    "name",
    ["report.pdf", "exe.pdf", "my.exe.notes.txt", "archive.tar.gz", "setup.exe.zip", "README"],
)
def test_harmless_names(name: str) -> None:
    assert not is_dangerous_filename(name)
    Rules(max_size=GiB).check(name, "application/octet-stream", 10)


def test_required_dangerous_extensions_are_listed() -> None:
    required = {
        "exe", "dll", "bat", "cmd", "com", "scr", "pif", "msi", "msp", "jar", "js", "jse", "vbs",
        "vbe", "wsf", "wsh", "ps1", "psm1", "sh", "bash", "csh", "ksh", "app", "deb", "rpm", "dmg",
        "pkg", "apk", "hta", "cpl", "lnk", "reg", "gadget", "msc", "vb", "vba", "ws",
    }  # fmt: skip
    assert required <= DANGEROUS_EXTENSIONS
    assert all(ext == ext.lower() and "." not in ext for ext in DANGEROUS_EXTENSIONS)


def test_dangerous_names_pass_when_executables_are_allowed() -> None:
    Rules(max_size=GiB, block_executables=False).check("setup.exe", "application/x-msdownload", 10)


# -- content types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "patterns", "allowed"),
    [
        ("image/png", [], True),
        ("image/png", ["image/png"], True),
        ("IMAGE/PNG", ["image/png"], True),
        ("image/png", ["Image/PNG"], True),
        ("text/plain; charset=utf-8", ["text/plain"], True),
        ("text/plain", ["text/plain; charset=utf-8"], True),
        ("image/webp", ["image/*"], True),
        ("video/mp4", ["image/*"], False),
        ("application/pdf", ["*/*"], True),
        ("application/pdf", ["*"], True),
        ("image/jpg", ["image/jpeg"], True),
        ("image/jpeg", ["image/jpg"], True),
        ("image/png", ["image/jpeg", "application/pdf"], False),
        ("image/png", ["imagepng"], False),  # a typo matches nothing
        ("image/png", ["image/p*"], False),
        ("imagefoo", ["image/*"], False),
    ],
)
def test_content_type_allowed(content_type: str, patterns: list[str], allowed: bool) -> None:
    assert content_type_allowed(content_type, patterns) is allowed


def test_normalize_content_type() -> None:
    assert normalize_content_type(" Image/JPG ; q=0.9") == "image/jpeg"
    assert normalize_content_type("application/x-zip-compressed") == "application/zip"


# -- Rules.check ------------------------------------------------------------------------


def test_too_large_names_the_setting() -> None:
    rules = Rules(max_size=5 * GiB)
    with pytest.raises(ObitoXError) as info:
        rules.check("big.bin", "application/octet-stream", 6 * GiB)
    error = info.value
    assert error.code == "FILE_TOO_LARGE"
    assert error.status == 413
    assert error.message == "size 6442450944 exceeds OBITOX_MAX_FILE_SIZE (5368709120)"
    assert error.details["field"] == "size"
    assert error.details["limit"] == 5 * GiB
    assert error.details["actual"] == 6 * GiB
    rules.check("big.bin", "application/octet-stream", 5 * GiB)  # the limit itself is fine


def test_too_large_names_the_client_limit_when_it_binds() -> None:
    rules = Rules(max_size=5 * GiB).tighten({"maxSizeMB": 1})
    assert rules.max_size == MiB
    with pytest.raises(ObitoXError) as info:
        rules.check("a.bin", "application/octet-stream", MiB + 1)
    assert info.value.code == "FILE_TOO_LARGE"
    assert "validation.maxSizeMB" in info.value.message
    assert info.value.details["limit"] == MiB


def test_multipart_rules_name_their_setting() -> None:
    rules = Rules(max_size=100, max_size_setting="OBITOX_MAX_MULTIPART_SIZE")
    with pytest.raises(ObitoXError, match="OBITOX_MAX_MULTIPART_SIZE"):
        rules.check("a.bin", "application/octet-stream", 101)


def test_too_small() -> None:
    rules = Rules(max_size=GiB, min_size=1024)
    with pytest.raises(ObitoXError) as info:
        rules.check("a.txt", "text/plain", 1023)
    assert info.value.code == "VALIDATION_FAILED"
    assert info.value.details["field"] == "size"
    assert info.value.details["limit"] == 1024
    assert "OBITOX_MIN_FILE_SIZE" in info.value.message
    rules.check("a.txt", "text/plain", 1024)
    with pytest.raises(ObitoXError) as info:
        Rules(max_size=GiB).check("a.txt", "text/plain", -1)
    assert info.value.details["field"] == "size"


def test_type_not_allowed() -> None:
    rules = Rules(max_size=GiB, allowed_types=("image/*", "application/pdf"))
    rules.check("a.png", "image/png", 1)
    rules.check("a.pdf", "application/pdf; version=1.7", 1)
    with pytest.raises(ObitoXError) as info:
        rules.check("a.txt", "text/plain", 1)
    assert info.value.code == "VALIDATION_FAILED"
    assert info.value.details["field"] == "contentType"
    assert info.value.details["allowed"] == ["image/*", "application/pdf"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-msdownload",
        "application/x-sh",
        "application/x-executable",
        "application/java-archive",
        "application/javascript",
        "text/javascript; charset=utf-8",
        "application/x-msi",
        "Application/X-MSDownload",
    ],
)
def test_dangerous_content_types(content_type: str) -> None:
    with pytest.raises(ObitoXError) as info:
        Rules(max_size=GiB).check("file.bin", content_type, 1)
    assert info.value.details["field"] == "contentType"
    assert info.value.details["reason"] == "dangerous_content_type"
    Rules(max_size=GiB, block_executables=False).check("file.bin", content_type, 1)


def test_extension_not_allowed() -> None:
    rules = Rules(max_size=GiB, allowed_extensions=(".PNG", "jpg"))
    assert rules.allowed_extensions == ("png", "jpg")
    rules.check("a.png", "image/png", 1)
    rules.check("A.JPG", "image/jpeg", 1)
    with pytest.raises(ObitoXError) as info:
        rules.check("a.gif", "image/gif", 1)
    assert info.value.details["field"] == "filename"
    assert info.value.details["reason"] == "extension_not_allowed"
    assert info.value.details["allowed"] == ["png", "jpg"]


def test_rules_normalize_and_compile_once() -> None:
    rules = Rules(max_size=10, allowed_types=("Image/PNG; x=y",))
    assert rules.allowed_types == ("image/png",)
    assert rules.tighten(None) is rules.tighten(None) is rules.ruleset()
    assert rules.tighten({}) is rules.ruleset()
    with pytest.raises(ValueError, match="negative"):
        Rules(max_size=-1)


# -- tighten ----------------------------------------------------------------------------


def test_tighten_sizes() -> None:
    server = Rules(max_size=5 * GiB, min_size=10)
    assert server.tighten({"maxSizeMB": 100000}).max_size == 5 * GiB  # client cannot raise
    assert server.tighten({"maxSizeMB": 1.5}).max_size == 3 * MiB // 2
    assert server.tighten({"minSizeKB": 2}).min_size == 2048
    assert server.tighten({"minSizeKB": 0}).min_size == 10  # client cannot lower
    tightened = server.tighten({"maxSizeMB": 100000})
    assert tightened.max_size_source == "OBITOX_MAX_FILE_SIZE"


def test_tighten_block_executables() -> None:
    open_server = Rules(max_size=GiB, block_executables=False)
    assert not open_server.tighten(None).block_executables
    assert open_server.tighten({"blockExecutables": True}).block_executables
    closed = Rules(max_size=GiB)
    assert closed.tighten({"blockExecutables": False}).block_executables
    with pytest.raises(ObitoXError) as info:
        closed.tighten({"blockExecutables": False}).check("a.exe", "application/octet-stream", 1)
    assert info.value.details["reason"] == "dangerous_extension"


def test_client_type_list_cannot_widen_the_server_list() -> None:
    server = Rules(max_size=GiB, allowed_types=("image/png",))
    tightened = server.tighten({"allowedTypes": ["*/*", "application/pdf"]})
    tightened.check("a.png", "image/png", 1)
    with pytest.raises(ObitoXError) as info:
        tightened.check("a.pdf", "application/pdf", 1)
    assert info.value.details["field"] == "contentType"
    narrowed = Rules(max_size=GiB, allowed_types=("image/*",)).tighten(
        {"allowedTypes": ["image/png"]}
    )
    narrowed.check("a.png", "image/png", 1)
    with pytest.raises(ObitoXError):
        narrowed.check("a.gif", "image/gif", 1)


def test_client_extension_list_cannot_widen_the_server_list() -> None:
    server = Rules(max_size=GiB, allowed_extensions=("png",))
    tightened = server.tighten({"allowedExtensions": [".PNG", "exe", "pdf"]})
    tightened.check("a.png", "image/png", 1)
    with pytest.raises(ObitoXError) as info:
        tightened.check("a.pdf", "application/pdf", 1)
    assert info.value.details["reason"] == "extension_not_allowed"


@pytest.mark.parametrize(
    "client",
    [
        {"maxSizeMB": "10"},
        {"maxSizeMB": True},
        {"maxSizeMB": float("nan")},
        {"minSizeKB": -1},
        {"minSizeKB": float("inf")},
        {"allowedTypes": "image/png"},
        {"allowedExtensions": [1]},
        {"blockExecutables": "yes"},
    ],
)
def test_tighten_rejects_malformed_client_rules(client: dict[str, Any]) -> None:
    with pytest.raises(ObitoXError) as info:
        Rules(max_size=GiB).tighten(client)
    assert info.value.code == "INVALID_INPUT"


_TYPE_POOL = [
    "image/png",
    "image/jpeg",
    "image/jpg",
    "image/*",
    "*/*",
    "text/plain",
    "application/pdf",
    "video/*",
]
_EXT_POOL = ["png", "jpg", "jpeg", "pdf", "txt", "exe", "gz", ""]
_FILES = st.tuples(
    st.sampled_from(
        ["a.png", "b.JPG", "c.jpeg", "d.pdf", "e.txt", "f.exe", "g.tar.gz", "noext", "h.exe."]
    ),
    st.sampled_from(
        [
            *_TYPE_POOL[:3],
            "text/plain; charset=utf-8",
            "application/pdf",
            "video/mp4",
            "application/x-sh",
        ]
    ),
    st.integers(min_value=0, max_value=4 * MiB),
)
_SERVER_RULES = st.builds(
    lambda max_size, min_size, types, exts, block: Rules(
        max_size=max_size,
        min_size=min(min_size, max_size),
        allowed_types=tuple(types),
        allowed_extensions=tuple(exts),
        block_executables=block,
    ),
    st.integers(min_value=1, max_value=4 * MiB),
    st.integers(min_value=0, max_value=MiB),
    st.lists(st.sampled_from(_TYPE_POOL), max_size=3),
    st.lists(st.sampled_from(_EXT_POOL), max_size=3),
    st.booleans(),
)
_CLIENT_RULES = st.fixed_dictionaries(
    {},
    optional={
        "maxSizeMB": st.floats(min_value=0.001, max_value=100000),
        "minSizeKB": st.floats(min_value=0, max_value=4096),
        "allowedTypes": st.lists(st.sampled_from(_TYPE_POOL), max_size=3),
        "allowedExtensions": st.lists(st.sampled_from(_EXT_POOL), max_size=3),
        "blockExecutables": st.booleans(),
    },
)


def _accepts(rules: Rules | RuleSet, file: tuple[str, str, int]) -> bool:
    try:
        rules.check(*file)
    except ObitoXError:
        return False
    return True


@settings(max_examples=400)
@given(_SERVER_RULES, _CLIENT_RULES, st.lists(_FILES, min_size=1, max_size=10))
def test_tighten_only_tightens(server: Rules, client: dict[str, Any], files: list[Any]) -> None:
    tightened = server.tighten(client)
    assert tightened.max_size <= server.max_size
    assert tightened.min_size >= server.min_size
    assert tightened.block_executables >= server.block_executables
    for file in files:
        if _accepts(tightened, file):
            assert _accepts(server, file), file


@settings(max_examples=300)
@given(_SERVER_RULES, _CLIENT_RULES, _CLIENT_RULES, st.lists(_FILES, min_size=1, max_size=10))
def test_client_rules_round_trip(
    server: Rules, first: dict[str, Any], second: dict[str, Any], files: list[Any]
) -> None:
    """``client_rules`` (stored with an upload) rebuilds the chained rules exactly."""
    chained = server.tighten(first).tighten(second)
    rebuilt = server.tighten(chained.client_rules)
    assert (rebuilt.max_size, rebuilt.min_size) == (chained.max_size, chained.min_size)
    assert rebuilt.block_executables == chained.block_executables
    for file in files:
        assert _accepts(rebuilt, file) == _accepts(chained, file), file


def test_client_rules_empty_when_no_client_rules() -> None:
    assert Rules(max_size=10).tighten(None).client_rules == {}
    assert Rules(max_size=10).tighten({"maxSizeMB": 1}).client_rules == {"maxSizeMB": 1.0}


def test_disjoint_client_lists_allow_nothing_after_a_round_trip() -> None:
    server = Rules(max_size=GiB)
    chained = server.tighten({"allowedTypes": ["image/png"]}).tighten(
        {"allowedTypes": ["text/plain"]}
    )
    rebuilt = server.tighten(chained.client_rules)
    for content_type in ("image/png", "text/plain", "!"):
        assert not _accepts(rebuilt, ("a.txt", content_type, 1))


# -- sniff ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (PDF, "application/pdf"),
        (b"\xef\xbb\xbf%PDF-1.4\n", "application/pdf"),
        (ZIP, "application/zip"),
        (DOCX, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        (XLSX, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        (ODT, "application/vnd.oasis.opendocument.text"),
        (JAR, "application/java-archive"),
        (GZIP, "application/gzip"),
        (MP4, "video/mp4"),
        (PE, "application/vnd.microsoft.portable-executable"),
        (ELF, "application/x-executable"),
        (MACHO, "application/x-mach-binary"),
        (SHELL, "text/x-shellscript"),
        (b"#!/usr/bin/env python3\nprint(1)\n", "text/x-python"),
        (TEXT, None),
        (b"a,b,c\n1,2,3\n", None),
        (b"", None),
        (b"\x00", None),
        (b"MZ", None),
        (b"MZ is a nice abbreviation\n", None),
        (b"#![allow(dead_code)]\nfn main() {}\n", None),
    ],
)
def test_sniff(head: bytes, expected: str | None) -> None:
    assert sniff(head) == expected


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_sniff_never_raises(head: bytes) -> None:
    result = sniff(head)
    assert result is None or "/" in result


def test_head_bytes_covers_the_signatures() -> None:
    assert 512 <= HEAD_BYTES <= 64 * 1024
    assert sniff(DOCX[:HEAD_BYTES]) == sniff(DOCX)


# -- verify_content ---------------------------------------------------------------------

OPEN = Rules(max_size=GiB)


@pytest.mark.parametrize(
    ("declared", "head"),
    [
        ("image/png", PNG),
        ("image/jpeg", JPEG),
        ("image/jpg", JPEG),
        ("IMAGE/JPEG; foo=bar", JPEG),
        ("image/gif", GIF),
        ("image/webp", WEBP),
        ("application/pdf", PDF),
        ("application/zip", ZIP),
        ("application/zip", DOCX),  # a docx is a zip
        ("application/x-zip-compressed", ZIP),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", DOCX),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ZIP),
        ("application/gzip", GZIP),
        ("application/x-gzip", GZIP),
        ("video/mp4", MP4),
        ("video/quicktime", MP4),
        ("text/plain", TEXT),
        ("text/csv", b"a,b\n1,2\n"),
        ("application/json", b'{"a": 1}'),
        ("application/octet-stream", bytes(range(256))),
        ("application/octet-stream", PNG),  # no allow-list: anything goes
        ("text/plain", b""),
    ],
)
def test_verify_agrees(declared: str, head: bytes) -> None:
    assert verify_content(declared, head, OPEN) is None


@pytest.mark.parametrize(
    ("declared", "head"),
    [
        ("image/png", PE),  # an executable, whatever was declared
        ("text/plain", ELF),
        ("application/octet-stream", MACHO),
        ("text/plain", SHELL),
        ("application/zip", JAR),
        ("image/png", JPEG),  # the wrong signature
        ("image/jpeg", PNG),
        ("application/pdf", ZIP),
        ("application/zip", PDF),
        ("image/png", TEXT),  # no signature at all
        ("image/gif", b"GIF"),
        ("video/mp4", GZIP),
        ("image/png", b""),
    ],
)
def test_verify_mismatch(declared: str, head: bytes) -> None:
    reason = verify_content(declared, head, OPEN)
    assert isinstance(reason, str)
    assert reason


def test_verify_executables_pass_when_not_blocked() -> None:
    rules = Rules(max_size=GiB, block_executables=False)
    assert verify_content("application/x-msdownload", PE, rules) is None
    assert verify_content("application/octet-stream", ELF, rules) is None
    assert verify_content("application/zip", JAR, rules) is None
    # ...but a PNG that is a program is still not a PNG.
    assert verify_content("image/png", PE, rules) is not None
    # A client cannot unblock; a client can block.
    assert verify_content(
        "application/octet-stream", ELF, OPEN.tighten({"blockExecutables": False})
    )
    assert verify_content(
        "application/octet-stream", ELF, rules.tighten({"blockExecutables": True})
    )


def test_verify_allow_list() -> None:
    text_only = Rules(max_size=GiB, allowed_types=("text/plain",))
    assert verify_content("text/plain", PNG, text_only) is not None
    assert verify_content("text/plain", TEXT, text_only) is None
    # Text that happens to start like a signature ("FWS" is Flash) is not judged.
    assert verify_content("text/plain", b"FWS,2024,done\n", text_only) is None
    images = Rules(max_size=GiB, allowed_types=("image/*",))
    assert verify_content("image/png", PNG, images) is None
    assert verify_content("image/svg+xml", b"<?xml version='1.0'?><svg/>", images) is None
    docs = Rules(max_size=GiB, allowed_types=("application/zip",))
    assert verify_content("application/zip", DOCX, docs) is None
    client = Rules(max_size=GiB).tighten({"allowedTypes": ["application/octet-stream"]})
    assert verify_content("application/octet-stream", ZIP, client) is not None
    assert verify_content("application/octet-stream", bytes(range(256)), client) is None


def test_verify_accepts_a_ruleset_or_rules() -> None:
    assert verify_content("image/png", PNG, OPEN.tighten(None)) is None
    assert (
        verify_content("image/png", JPEG, OPEN.tighten(None))
        == "declared image/png but content is image/jpeg"
    )


def test_dangerous_content_types_are_normalized() -> None:
    assert all(t == t.lower() and ";" not in t for t in DANGEROUS_CONTENT_TYPES)
