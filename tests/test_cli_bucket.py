"""``flask obitox bucket create``: the bucket the configuration names, made on storage."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from conftest import BUCKET, CREDENTIALS, REGION, make_app
from flask import Flask
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from flask_obitox import MemoryStateBackend
from flask_obitox.doctor import run_checks
from flask_obitox.storage.cors import RULE_ID as CORS_RULE_ID

APP_ORIGIN = "https://app.example.com"


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["obitox", "bucket", "create", *args])


def app_with(**config: Any) -> Flask:
    return make_app(MemoryStateBackend(), **config)[0]


@pytest.fixture
def aws() -> Iterator[Any]:
    """In-process moto with no bucket yet; yields a boto3 client on it."""
    with mock_aws():
        yield boto3.client("s3", region_name=REGION, **CREDENTIALS)


def test_creates_the_bucket(aws: Any) -> None:
    result = run(app_with())
    assert result.exit_code == 0, result.output
    assert result.output == f"Created bucket {BUCKET!r} at AWS S3 ({REGION}).\n"
    assert BUCKET in [bucket["Name"] for bucket in aws.list_buckets()["Buckets"]]


def test_outside_us_east_1_the_bucket_is_made_in_the_configured_region(aws: Any) -> None:
    result = run(app_with(OBITOX_REGION="eu-west-1"))
    assert result.exit_code == 0, result.output
    assert "AWS S3 (eu-west-1)" in result.output
    assert aws.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == "eu-west-1"


@pytest.mark.parametrize("region", [REGION, "eu-west-1"])
def test_a_second_run_says_the_bucket_exists_and_changes_nothing(aws: Any, region: str) -> None:
    app = app_with(OBITOX_REGION=region)
    assert run(app).exit_code == 0
    aws.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "team", "Value": "a"}]})
    again = run(app)
    assert again.exit_code == 0, again.output
    assert f"Bucket {BUCKET!r} already exists" in again.output
    assert "nothing to create" in again.output
    assert aws.get_bucket_tagging(Bucket=BUCKET)["TagSet"] == [{"Key": "team", "Value": "a"}]


def test_a_bucket_in_another_region_is_named_with_the_fix(aws: Any) -> None:
    aws_eu = boto3.client("s3", region_name="eu-west-1", **CREDENTIALS)
    aws_eu.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    result = run(app_with(OBITOX_REGION="us-east-1"))
    assert result.exit_code == 1
    assert "already exists in region eu-west-1" in result.output
    assert "set OBITOX_REGION = 'eu-west-1'" in result.output


def test_unreachable_storage_is_one_line_and_exit_1() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    result = run(app_with(OBITOX_ENDPOINT_URL="http://127.0.0.1:9"))
    assert result.exit_code == 1
    assert result.output.startswith("Error: The storage endpoint http://127.0.0.1:9")
    assert "cannot be reached" in result.output
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output


def _as_limited_user(
    actions: list[str], scenario: Callable[[dict[str, str]], None], *, taken: bool = False
) -> None:
    """Run ``scenario(app config)`` as an IAM user allowed only ``actions``; with
    ``taken``, another account owns :data:`BUCKET` already. moto enforces IAM after the
    first unauthenticated calls (three make the user, one the other account's bucket)."""

    @set_initial_no_auth_action_count(4 if taken else 3)
    def run_it() -> None:
        with mock_aws():
            iam = boto3.client("iam", region_name=REGION)
            iam.create_user(UserName="obitox-app")
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
            iam.put_user_policy(
                UserName="obitox-app", PolicyName="obitox", PolicyDocument=json.dumps(policy)
            )
            key = iam.create_access_key(UserName="obitox-app")["AccessKey"]
            if taken:
                os.environ["MOTO_ACCOUNT_ID"] = "111111111111"
                try:
                    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
                finally:
                    del os.environ["MOTO_ACCOUNT_ID"]
            scenario(
                {
                    "OBITOX_AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                    "OBITOX_AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                }
            )

    run_it()


def test_access_denied_names_the_permission() -> None:
    outcome: dict[str, Any] = {}
    _as_limited_user(
        ["s3:PutObject"], lambda credentials: outcome.update(result=run(app_with(**credentials)))
    )
    result = outcome["result"]
    assert result.exit_code == 1
    assert "Access denied" in result.output
    assert "s3:CreateBucket" in result.output
    assert result.output.count("\n") == 1


def test_a_name_taken_by_another_account_says_so() -> None:
    outcome: dict[str, Any] = {}
    _as_limited_user(
        ["s3:CreateBucket"],
        lambda credentials: outcome.update(result=run(app_with(**credentials))),
        taken=True,
    )
    result = outcome["result"]
    assert result.exit_code == 1
    assert f"The bucket name {BUCKET!r} is taken by another account" in result.output
    assert "set OBITOX_BUCKET to another name" in result.output
    assert result.output.count("\n") == 1


def test_an_invalid_name_says_what_a_name_may_hold(aws: Any) -> None:
    result = run(app_with(OBITOX_BUCKET="ab"))
    assert result.exit_code == 1
    assert "'ab' is not a valid bucket name" in result.output


# -- --cors ----------------------------------------------------------------------------


def _cors_rules(s3: Any) -> list[dict[str, Any]]:
    return list(s3.get_bucket_cors(Bucket=BUCKET)["CORSRules"])


def test_cors_also_writes_the_upload_rule(aws: Any) -> None:
    result = run(app_with(OBITOX_CORS_ORIGINS=[APP_ORIGIN]), "--cors")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Created bucket {BUCKET!r}")
    assert f"rule {CORS_RULE_ID} for {APP_ORIGIN}" in result.output
    (rule,) = _cors_rules(aws)
    assert rule["ID"] == CORS_RULE_ID
    assert rule["AllowedOrigins"] == [APP_ORIGIN]


def test_cors_with_explicit_origins_on_an_existing_bucket(aws: Any) -> None:
    aws.create_bucket(Bucket=BUCKET)
    result = run(app_with(), "--cors", "--origin", "http://127.0.0.1:5000")
    assert result.exit_code == 0, result.output
    assert "already exists" in result.output
    assert _cors_rules(aws)[0]["AllowedOrigins"] == ["http://127.0.0.1:5000"]


def test_cors_without_any_origin_is_refused_before_anything_is_created(aws: Any) -> None:
    result = run(app_with(), "--cors")
    assert result.exit_code == 2
    assert "No origin to allow" in result.output
    assert aws.list_buckets()["Buckets"] == []


def test_origin_without_cors_is_a_usage_error(aws: Any) -> None:
    result = run(app_with(), "--origin", APP_ORIGIN)
    assert result.exit_code == 2
    assert "--origin only applies with --cors" in result.output
    assert aws.list_buckets()["Buckets"] == []


# -- doctor ----------------------------------------------------------------------------


def test_doctor_names_the_command_and_passes_after_it(moto_server: str) -> None:
    bucket = f"obitox-cli-bucket-{uuid.uuid4().hex[:8]}"
    app = app_with(OBITOX_BUCKET=bucket, OBITOX_ENDPOINT_URL=moto_server)
    before = {check.check: check for check in run_checks(app)}
    assert before["bucket"].failed
    assert before["bucket"].fix is not None
    assert "flask obitox bucket create" in before["bucket"].fix
    try:
        assert run(app).exit_code == 0
        after = {check.check: check for check in run_checks(app)}
        assert after["bucket"].status == "ok", after["bucket"].detail
        assert after["presign"].status == "ok", after["presign"].detail
    finally:
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_server, **CREDENTIALS)
        s3.delete_bucket(Bucket=bucket)
