"""Bucket lifecycle: let storage itself reap abandoned multipart uploads.

A multipart upload that is never completed or aborted keeps its parts, billed, forever
and invisible in object listings. An ``AbortIncompleteMultipartUpload`` rule for
``OBITOX_KEY_PREFIX`` makes S3 delete them after a number of days, even when no cleanup
job runs. The days come from ``OBITOX_UPLOAD_TTL`` (rounded up to whole days): an
upload the app still accepts is never reaped under it.

S3 keeps one lifecycle configuration per bucket and ``PutBucketLifecycleConfiguration``
replaces all of it, so :func:`setup_lifecycle` reads the host's rules, replaces or adds
only the rule whose ``ID`` is :data:`RULE_ID`, and writes them back.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from .client import Storage
from .explain import explained

logger = logging.getLogger("flask_obitox")

#: The ``ID`` of the rule flask-obitox owns in the bucket's lifecycle configuration.
RULE_ID = "obitox-abort-incomplete-multipart"
DAY = 24 * 3600


@dataclasses.dataclass(frozen=True, slots=True)
class LifecycleConfiguration:
    """A bucket's lifecycle rules, plus the settings outside the rules that a write must
    carry back (``TransitionDefaultMinimumObjectSize``)."""

    rules: list[dict[str, Any]]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class LifecycleSetup:
    """What :func:`setup_lifecycle` did (or, in a dry run, would do)."""

    bucket: str
    prefix: str
    days: int
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    dry_run: bool

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def applied(self) -> bool:
        return self.changed and not self.dry_run

    @property
    def diff(self) -> str:
        def lines(rules: list[dict[str, Any]]) -> list[str]:
            text = json.dumps({"Rules": rules}, indent=2, default=str) + "\n"
            return text.splitlines(keepends=True)

        return "".join(
            difflib.unified_diff(
                lines(self.before), lines(self.after), "lifecycle (before)", "lifecycle (after)"
            )
        )


def abort_days(upload_ttl: int) -> int:
    """``OBITOX_UPLOAD_TTL`` in whole days, rounded up (S3 counts days, at least 1)."""
    return max(1, math.ceil(upload_ttl / DAY))


def abort_rule(prefix: str, days: int) -> dict[str, Any]:
    return {
        "ID": RULE_ID,
        "Filter": {"Prefix": prefix},
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    }


def read_configuration(storage: Storage) -> LifecycleConfiguration:
    """The bucket's lifecycle configuration (no rules when it has none)."""
    with explained(storage, "GetBucketLifecycleConfiguration"):
        try:
            answer = storage.client.get_bucket_lifecycle_configuration(Bucket=storage.bucket)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                return LifecycleConfiguration([])
            raise
    extra = {}
    if answer.get("TransitionDefaultMinimumObjectSize"):
        extra["TransitionDefaultMinimumObjectSize"] = answer["TransitionDefaultMinimumObjectSize"]
    return LifecycleConfiguration([dict(rule) for rule in answer.get("Rules", [])], extra)


def merge_abort_rule(
    rules: Sequence[Mapping[str, Any]], prefix: str, days: int
) -> list[dict[str, Any]]:
    """``rules`` with our rule replaced in place (or appended); every other rule kept."""
    ours = abort_rule(prefix, days)
    merged = [ours if rule.get("ID") == RULE_ID else dict(rule) for rule in rules]
    if not any(rule.get("ID") == RULE_ID for rule in rules):
        merged.append(ours)
    return merged


def _rule_prefix(rule: Mapping[str, Any]) -> str | None:
    """The key prefix a rule applies to, or ``None`` when it also filters on tags or
    sizes (such a rule does not cover every upload under a prefix)."""
    if "Filter" not in rule:
        prefix = rule.get("Prefix", "")  # the form S3 used before filters
        return prefix if isinstance(prefix, str) else None
    conditions = {k: v for k, v in dict(rule["Filter"]).items() if v not in (None, "")}
    if set(conditions) - {"Prefix"}:
        return None
    return str(conditions.get("Prefix", ""))


def covering_rule(rules: Sequence[Mapping[str, Any]], key_prefix: str) -> dict[str, Any] | None:
    """An enabled rule that aborts incomplete multipart uploads for every key under
    ``key_prefix`` (ours or one of the host's), or ``None``."""
    for rule in rules:
        prefix = _rule_prefix(rule)
        if (
            rule.get("Status") == "Enabled"
            and rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
            and prefix is not None
            and key_prefix.startswith(prefix)
        ):
            return dict(rule)
    return None


def setup_lifecycle(
    storage: Storage, key_prefix: str, upload_ttl: int, *, dry_run: bool = False
) -> LifecycleSetup:
    """Merge the abort rule for ``key_prefix`` into the bucket's lifecycle rules; with
    ``dry_run``, only say what would change."""
    days = abort_days(upload_ttl)
    current = read_configuration(storage)
    after = merge_abort_rule(current.rules, key_prefix, days)
    result = LifecycleSetup(storage.bucket, key_prefix, days, current.rules, after, dry_run)
    if result.applied:
        with explained(storage, "PutBucketLifecycleConfiguration"):
            storage.client.put_bucket_lifecycle_configuration(
                Bucket=storage.bucket,
                LifecycleConfiguration={"Rules": after},  # type: ignore[typeddict-item]
                **current.extra,
            )
        logger.info(
            "Bucket %r lifecycle: rule %s aborts incomplete multipart uploads under %r after %d days",
            storage.bucket,
            RULE_ID,
            key_prefix,
            days,
        )
    return result
