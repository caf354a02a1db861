"""Bucket CORS: merge the rule browser uploads need, and check what a browser would get.

Browsers PUT the bytes straight to the bucket, another origin than the page, so the
bucket's CORS configuration decides whether an upload works at all. The classic failure
is silent: a configuration that allows the PUT but does not expose ``ETag`` lets single
uploads through and breaks every multipart upload, whose completion needs each part's
ETag.

S3 keeps one CORS configuration per bucket and ``PutBucketCors`` replaces all of it, so
:func:`setup_cors` reads the host's rules, replaces or adds only the rule whose ``ID``
is :data:`RULE_ID`, and writes them back.

How S3 picks a rule (and so what :func:`verify_cors` reproduces): rules are tried in
order and the first one matching the request wins. A rule matches when one of its
``AllowedOrigins`` matches the ``Origin`` header (each may hold one ``*`` wildcard), the
method is one of its ``AllowedMethods`` and, for a preflight, every header named in
``Access-Control-Request-Headers`` matches one of its ``AllowedHeaders`` (one ``*``
wildcard each, case-insensitive). The rule that answers the actual request, chosen by
origin and method, decides which response headers the page may read.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from ..errors import ObitoXError
from .client import Storage
from .explain import explained

#: The ``ID`` of the rule flask-obitox owns in the bucket's CORS configuration.
RULE_ID = "obitox-upload"
#: PUT for single uploads and parts, POST for presigned POST (Uppy), GET/HEAD to read back.
UPLOAD_METHODS = ("PUT", "POST", "GET", "HEAD")
#: The request headers our signed uploads send: the signed Content-Type, Content-MD5
#: from clients that add it, x-amz-checksum-sha256 / x-amz-meta-*, and If-None-Match
#: (``OBITOX_CREATE_ONLY``), which is not CORS-safelisted; an upload profile's signed
#: Cache-Control and Content-Disposition (its encryption and storage class are x-amz-*).
UPLOAD_HEADERS = (
    "content-type",
    "content-md5",
    "x-amz-*",
    "if-none-match",
    "cache-control",
    "content-disposition",
)
#: ETag for multipart completion, Location for presigned POST, the version id and the
#: checksum for clients that check what was stored.
EXPOSE_HEADERS = ("ETag", "Location", "x-amz-version-id", "x-amz-checksum-sha256")
#: Browsers cap the preflight cache anyway (Chrome at 2 hours, Firefox at 24).
MAX_AGE_SECONDS = 3600
#: What a browser upload sends in ``Access-Control-Request-Headers``; ``x-amz-meta-*``
#: headers are represented by one example name.
PREFLIGHT_HEADERS = (
    "content-type",
    "content-md5",
    "x-amz-checksum-sha256",
    "x-amz-meta-name",
    "if-none-match",
)

logger = logging.getLogger("flask_obitox")

ANY_ORIGIN = "*"
_ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+\Z")


class InvalidOrigin(ObitoXError):
    """An origin that a browser never sends, or no origin at all."""

    def __init__(self, message: str, origin: str | None = None) -> None:
        super().__init__("INVALID_INPUT", message, details={"field": "origins", "origin": origin})


@dataclasses.dataclass(frozen=True, slots=True)
class CorsSetup:
    """What :func:`setup_cors` did (or, in a dry run, would do)."""

    bucket: str
    origins: tuple[str, ...]
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    dry_run: bool
    warnings: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def applied(self) -> bool:
        return self.changed and not self.dry_run

    @property
    def diff(self) -> str:
        return diff_rules(self.before, self.after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "origins": list(self.origins),
            "dryRun": self.dry_run,
            "changed": self.changed,
            "applied": self.applied,
            "before": self.before,
            "after": self.after,
            "diff": self.diff,
            "warnings": list(self.warnings),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class CorsCheck:
    """One thing a browser upload from one origin needs."""

    check: str
    ok: bool
    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class OriginReport:
    origin: str
    checks: tuple[CorsCheck, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def problems(self) -> list[str]:
        return [check.message for check in self.checks if not check.ok]

    @property
    def fix(self) -> str | None:
        """The command that makes every check pass (setup merges; it drops nothing)."""
        if self.ok:
            return None
        origin = "'*'" if self.origin == ANY_ORIGIN else self.origin
        return f"flask obitox cors setup --origin {origin}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "ok": self.ok,
            "checks": [dataclasses.asdict(check) for check in self.checks],
            "fix": self.fix,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class CorsReport:
    """Per origin, whether a browser upload from it would work."""

    bucket: str
    rules: list[dict[str, Any]]
    origins: tuple[OriginReport, ...]

    @property
    def ok(self) -> bool:
        return all(report.ok for report in self.origins)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "ok": self.ok,
            "origins": [report.to_dict() for report in self.origins],
        }


# -- origins ---------------------------------------------------------------------------


def normalize_origin(origin: str) -> str:
    """``origin`` as a browser sends it in the ``Origin`` header: lower-case scheme and
    host, no trailing slash. Raises :class:`InvalidOrigin` for a URL with a path, a
    query, or more than one ``*`` (S3 allows one wildcard per origin)."""
    if not isinstance(origin, str):
        raise InvalidOrigin(f"An origin must be a string, got {origin!r}.")
    value = origin.strip()
    if value == ANY_ORIGIN:
        return value
    if value.endswith("/") and value.count("/") == 3:
        value = value[:-1]
    scheme, sep, rest = value.partition("://")
    value = scheme.lower() + sep + rest.lower()
    if not _ORIGIN.match(value) or value.count("*") > 1:
        raise InvalidOrigin(
            f"{origin!r} is not an origin: write scheme://host[:port] with no path, as "
            "browsers send it (e.g. https://app.example.com), with at most one '*'.",
            origin,
        )
    return value


def _normalized(origins: Iterable[str]) -> list[str]:
    chosen: list[str] = []
    for raw in origins:
        origin = normalize_origin(raw)
        if origin not in chosen:
            chosen.append(origin)
    return chosen


def choose_origins(
    requested: Iterable[str] | None, configured: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The origins :func:`setup_cors` allows, and the warnings to show.

    ``requested`` (``--origin``, the route's ``origins``) wins over ``configured``
    (``OBITOX_CORS_ORIGINS``). ``*`` counts only when requested explicitly: from the
    configuration it is left out, so a catch-all meant for the app's own routes does not
    silently open the bucket too.
    """
    requested = list(requested or ())
    warnings: list[str] = []
    if requested:
        origins = _normalized(requested)
    else:
        origins = _normalized(configured)
        if ANY_ORIGIN in origins:
            origins.remove(ANY_ORIGIN)
            warnings.append(
                "OBITOX_CORS_ORIGINS holds '*', which the bucket rule does not copy: pass "
                "--origin '*' to allow every origin on the bucket."
            )
    if not origins:
        raise InvalidOrigin(
            "No origin to allow: name the origins your pages are served from "
            "(--origin on the command line, 'origins' in the request body) or set "
            "OBITOX_CORS_ORIGINS."
        )
    if ANY_ORIGIN in origins:
        warnings.append(
            "AllowedOrigins '*' lets scripts on every website send requests to this bucket "
            "and read the answers. Signed URLs still guard each upload, but list your own "
            "origins instead unless the bucket is meant to be used from anywhere."
        )
    return tuple(origins), tuple(warnings)


def origins_to_verify(
    requested: Iterable[str] | None, configured: Iterable[str]
) -> tuple[str, ...]:
    """The origins :func:`verify_cors` checks: ``requested``, else ``configured``."""
    origins = _normalized(list(requested or ()) or configured)
    if not origins:
        raise InvalidOrigin(
            "No origin to verify: name the origins your pages are served from "
            "(--origin on the command line, 'origin' in the query string) or set "
            "OBITOX_CORS_ORIGINS."
        )
    return tuple(origins)


# -- matching, as S3 does it -----------------------------------------------------------


def wildcard_match(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """Whether ``value`` matches ``pattern``, where one ``*`` matches any run of
    characters (S3's rule for ``AllowedOrigin`` and ``AllowedHeader``)."""
    if ignore_case:
        pattern, value = pattern.lower(), value.lower()
    if "*" not in pattern:
        return pattern == value
    head, _, tail = pattern.partition("*")
    return len(value) >= len(head) + len(tail) and value.startswith(head) and value.endswith(tail)


def _origin_allowed(rule: Mapping[str, Any], origin: str) -> bool:
    return any(wildcard_match(p, origin) for p in rule.get("AllowedOrigins", ()))


def _method_allowed(rule: Mapping[str, Any], method: str) -> bool:
    return method in (m.upper() for m in rule.get("AllowedMethods", ()))


def _header_allowed(rule: Mapping[str, Any], header: str) -> bool:
    return any(wildcard_match(p, header, ignore_case=True) for p in rule.get("AllowedHeaders", ()))


def _exposes(rule: Mapping[str, Any], header: str) -> bool:
    # "*" is honoured by browsers for requests without credentials, which presigned
    # uploads are.
    return any(h == "*" or h.lower() == header.lower() for h in rule.get("ExposeHeaders", ()))


def matching_rule(
    rules: Sequence[Mapping[str, Any]],
    origin: str,
    method: str,
    request_headers: Sequence[str] = (),
) -> Mapping[str, Any] | None:
    """The rule S3 would apply to a request (a preflight when ``request_headers`` are
    given), or ``None`` if the browser would refuse it."""
    for rule in rules:
        if (
            _origin_allowed(rule, origin)
            and _method_allowed(rule, method)
            and all(_header_allowed(rule, h) for h in request_headers)
        ):
            return rule
    return None


def _name(rules: Sequence[Mapping[str, Any]], rule: Mapping[str, Any]) -> str:
    index = next(i for i, r in enumerate(rules) if r is rule)
    return f"rule {index + 1}" + (f" ({rule['ID']})" if rule.get("ID") else "")


def check_origin(rules: Sequence[Mapping[str, Any]], origin: str) -> OriginReport:
    """Whether a browser page on ``origin`` can upload to a bucket with ``rules``."""
    checks: list[CorsCheck] = []
    listed = any(_origin_allowed(rule, origin) for rule in rules)
    checks.append(
        CorsCheck(
            "origin",
            listed,
            f"{origin} is allowed by the bucket's CORS rules"
            if listed
            else f"No CORS rule allows the origin {origin}"
            + ("" if rules else " (the bucket has no CORS configuration)"),
        )
    )
    for method, purpose in (
        ("PUT", "uploads and multipart parts fail"),
        ("POST", "presigned POST uploads (Uppy) fail"),
    ):
        rule = matching_rule(rules, origin, method)
        checks.append(
            CorsCheck(
                method.lower(),
                rule is not None,
                f"{method} from {origin} is allowed by {_name(rules, rule)}"
                if rule is not None
                else f"No CORS rule allows {method} from {origin}: {purpose}",
            )
        )
    put_rule = matching_rule(rules, origin, "PUT")
    preflight = matching_rule(rules, origin, "PUT", PREFLIGHT_HEADERS)
    if preflight is not None:
        message = f"The headers uploads send are allowed by {_name(rules, preflight)}"
    elif put_rule is not None:
        refused = [h for h in PREFLIGHT_HEADERS if not _header_allowed(put_rule, h)]
        message = (
            f"{_name(rules, put_rule)} does not allow the request headers "
            f"{', '.join(refused)} (x-amz-meta-name stands for x-amz-meta-*): the browser's "
            "preflight fails"
        )
    else:
        message = f"No CORS rule allows the headers uploads send from {origin}"
    checks.append(CorsCheck("headers", preflight is not None, message))
    # The answer to the PUT itself comes from the first rule matching origin and method.
    if put_rule is None:
        checks.append(
            CorsCheck("etag", False, f"ETag is not exposed to {origin}: no rule answers its PUT")
        )
    elif _exposes(put_rule, "ETag"):
        checks.append(CorsCheck("etag", True, f"ETag is exposed by {_name(rules, put_rule)}"))
    else:
        checks.append(
            CorsCheck(
                "etag",
                False,
                f"{_name(rules, put_rule)} answers PUT from {origin} but does not expose "
                "ETag: pages cannot read part ETags, so every multipart upload fails",
            )
        )
    return OriginReport(origin, tuple(checks))


# -- storage ---------------------------------------------------------------------------


def read_rules(storage: Storage) -> list[dict[str, Any]]:
    """The bucket's CORS rules, ``[]`` when it has no configuration."""
    with explained(storage, "GetBucketCors"):
        try:
            answer = storage.client.get_bucket_cors(Bucket=storage.bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NoSuchCORSConfiguration":
                return []
            raise
    return [dict(rule) for rule in answer.get("CORSRules", [])]


def upload_rule(origins: Sequence[str]) -> dict[str, Any]:
    """The rule browser uploads from ``origins`` need."""
    return {
        "ID": RULE_ID,
        "AllowedHeaders": list(UPLOAD_HEADERS),
        "AllowedMethods": list(UPLOAD_METHODS),
        "AllowedOrigins": list(origins),
        "ExposeHeaders": list(EXPOSE_HEADERS),
        "MaxAgeSeconds": MAX_AGE_SECONDS,
    }


def merge_upload_rule(
    rules: Sequence[Mapping[str, Any]], origins: Sequence[str]
) -> list[dict[str, Any]]:
    """``rules`` with our rule first, allowing ``origins`` and the origins it already had.

    Every other rule is kept as it was. Ours goes first because S3 applies the first
    matching rule: a host rule for the same origin placed earlier would otherwise answer
    the PUT without exposing ``ETag``. Origins are added, never removed: to drop one,
    edit the rule with ``ID`` :data:`RULE_ID`.
    """
    ours = [rule for rule in rules if rule.get("ID") == RULE_ID]
    allowed: list[str] = []
    for origin in [o for rule in ours for o in rule.get("AllowedOrigins", [])] + list(origins):
        if origin not in allowed:
            allowed.append(origin)
    return [upload_rule(allowed)] + [dict(rule) for rule in rules if rule.get("ID") != RULE_ID]


def _overlap(a: str, b: str) -> str | None:
    """An origin both patterns allow (the narrower of the two), or ``None``."""
    if wildcard_match(a, b):
        return b
    if wildcard_match(b, a):
        return a
    return None


def shadowed_rules(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings for host rules that our rule, placed first, now answers instead of them
    (for an origin both allow, on a method both allow)."""
    if not rules or rules[0].get("ID") != RULE_ID:
        return []
    ours = rules[0]
    warnings = []
    for index, rule in enumerate(rules[1:], start=2):
        shared = {
            origin
            for theirs in rule.get("AllowedOrigins", [])
            for mine in ours.get("AllowedOrigins", [])
            if (origin := _overlap(mine, theirs)) is not None
        }
        methods = [m for m in rule.get("AllowedMethods", []) if _method_allowed(ours, m.upper())]
        if shared and methods:
            name = f"rule {index}" + (f" ({rule['ID']})" if rule.get("ID") else "")
            warnings.append(
                f"{name} also allows {', '.join(methods)} from {', '.join(sorted(shared))}; "
                f"S3 answers those requests with the {RULE_ID} rule now, which comes first."
            )
    return warnings


def diff_rules(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> str:
    """A unified diff of two CORS configurations, as JSON; ``""`` when they are equal."""

    def lines(rules: Sequence[Mapping[str, Any]]) -> list[str]:
        text = json.dumps({"CORSRules": list(rules)}, indent=2) + "\n"
        return text.splitlines(keepends=True)

    return "".join(
        difflib.unified_diff(lines(before), lines(after), "CORS (before)", "CORS (after)")
    )


def setup_cors(
    storage: Storage,
    origins: Iterable[str] | None,
    *,
    configured: Iterable[str] = (),
    dry_run: bool = False,
) -> CorsSetup:
    """Merge the upload rule for ``origins`` (default: ``configured``) into the bucket's
    CORS configuration; with ``dry_run``, only say what would change."""
    chosen, warnings = choose_origins(origins, configured)
    before = read_rules(storage)
    after = merge_upload_rule(before, chosen)
    if after != before:
        warnings += tuple(shadowed_rules(after))
    result = CorsSetup(storage.bucket, chosen, before, after, dry_run, warnings)
    if result.applied:
        with explained(storage, "PutBucketCors"):
            storage.client.put_bucket_cors(
                Bucket=storage.bucket,
                CORSConfiguration={"CORSRules": after},  # type: ignore[typeddict-item]
            )
        # Who changed a bucket's configuration, and to what, belongs in the log.
        logger.info(
            "Bucket %r CORS: rule %s now allows %s (%d rules in all)",
            storage.bucket,
            RULE_ID,
            ", ".join(after[0]["AllowedOrigins"]),
            len(after),
        )
    return result


def verify_cors(
    storage: Storage, origins: Iterable[str] | None, *, configured: Iterable[str] = ()
) -> CorsReport:
    """For each origin (default: ``configured``), whether a browser upload would work."""
    chosen = origins_to_verify(origins, configured)
    rules = read_rules(storage)
    return CorsReport(storage.bucket, rules, tuple(check_origin(rules, o) for o in chosen))
