"""``flask obitox lifecycle setup``: an abort rule for the key prefix, merged, against moto."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import BUCKET, make_app
from flask import Flask

from flask_obitox import MemoryStateBackend
from flask_obitox.storage.lifecycle import RULE_ID, abort_days, covering_rule

DAY = 24 * 3600

#: The host's own rules, which setup must keep as they are.
HOST_RULES: list[dict[str, Any]] = [
    {
        "ID": "expire-logs",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    },
    {
        "ID": "archive",
        "Filter": {"Prefix": "archive/"},
        "Status": "Enabled",
        "Transitions": [{"Days": 90, "StorageClass": "GLACIER"}],
    },
]


def put_rules(s3: Any, rules: list[dict[str, Any]]) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": rules})


def bucket_rules(s3: Any) -> list[dict[str, Any]] | None:
    """The bucket's lifecycle rules, ``None`` when it has no configuration at all."""
    try:
        return list(s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"])
    except s3.exceptions.ClientError as error:
        if error.response["Error"]["Code"] == "NoSuchLifecycleConfiguration":
            return None
        raise


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["obitox", "lifecycle", *args])


def ours(prefix: str = "uploads/", days: int = 7) -> dict[str, Any]:
    return {
        "ID": RULE_ID,
        "Filter": {"Prefix": prefix},
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
    }


@pytest.mark.parametrize(
    ("ttl", "days"),
    [(7 * DAY, 7), (7 * DAY + 1, 8), (3600, 1), (DAY, 1), (DAY + 60, 2), (30 * DAY, 30)],
)
def test_days_are_the_upload_ttl_rounded_up(ttl: int, days: int) -> None:
    assert abort_days(ttl) == days


def test_setup_adds_the_abort_rule(app: Flask, s3: Any) -> None:
    result = run(app, "setup")
    assert result.exit_code == 0, result.output
    assert "after 7 day(s)" in result.output
    assert bucket_rules(s3) == [ours()]


def test_setup_keeps_the_hosts_rules(app: Flask, s3: Any) -> None:
    put_rules(s3, HOST_RULES)
    result = run(app, "setup")
    assert result.exit_code == 0, result.output
    assert bucket_rules(s3) == [*HOST_RULES, ours()]
    removed = [
        line
        for line in result.output.splitlines()
        if line.startswith("-") and not line.startswith("---")
    ]
    assert removed == []


def test_setup_twice_changes_nothing_the_second_time(app: Flask, s3: Any) -> None:
    put_rules(s3, HOST_RULES)
    assert run(app, "setup").exit_code == 0
    result = run(app, "setup")
    assert result.exit_code == 0
    assert "Nothing to change" in result.output
    assert bucket_rules(s3) == [*HOST_RULES, ours()]


def test_setup_updates_its_rule_in_place(s3: Any) -> None:
    put_rules(s3, [HOST_RULES[0], ours(days=2), HOST_RULES[1]])
    app, _ = make_app(
        MemoryStateBackend(), OBITOX_UPLOAD_TTL=10 * DAY, OBITOX_KEY_PREFIX="incoming/"
    )
    result = run(app, "setup")
    assert result.exit_code == 0, result.output
    assert '-        "DaysAfterInitiation": 2' in result.output
    assert bucket_rules(s3) == [HOST_RULES[0], ours("incoming/", 10), HOST_RULES[1]]


def test_dry_run_changes_nothing(app: Flask, s3: Any) -> None:
    result = run(app, "setup", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: nothing was written." in result.output
    assert '"AbortIncompleteMultipartUpload"' in result.output
    assert bucket_rules(s3) is None

    put_rules(s3, HOST_RULES)
    assert run(app, "setup", "--dry-run").exit_code == 0
    assert bucket_rules(s3) == HOST_RULES


def test_a_missing_bucket_is_named(s3: Any) -> None:
    app, _ = make_app(MemoryStateBackend(), OBITOX_BUCKET="obitox-gone")
    result = run(app, "setup")
    assert result.exit_code == 1
    assert "The bucket 'obitox-gone' does not exist" in result.output


# -- which rules cover the prefix (what the doctor checks) -----------------------------


def abort(days: int = 3, status: str = "Enabled", **rule: Any) -> dict[str, Any]:
    return {
        "ID": "host",
        "Status": status,
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": days},
        **rule,
    }


@pytest.mark.parametrize(
    ("rule", "covers"),
    [
        (abort(Filter={"Prefix": "uploads/"}), True),
        (abort(Filter={"Prefix": ""}), True),
        (abort(Filter={}), True),
        (abort(Prefix="upl"), True),  # the pre-filter form
        (abort(Filter={"Prefix": "uploads/tenant-a/"}), False),
        (abort(Filter={"Prefix": "other/"}), False),
        (abort(status="Disabled", Filter={"Prefix": ""}), False),
        (abort(Filter={"And": {"Prefix": "uploads/", "ObjectSizeGreaterThan": 10}}), False),
        ({"ID": "x", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 1}}, False),
    ],
)
def test_covering_rule(rule: dict[str, Any], covers: bool) -> None:
    assert (covering_rule([rule], "uploads/") is not None) is covers
