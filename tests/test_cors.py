"""Bucket CORS: ``flask obitox cors setup/verify`` and the admin routes, against moto."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from conftest import BUCKET, REGION, UserClient, make_app
from flask import Flask
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from flask_obitox import MemoryStateBackend, ObitoX
from flask_obitox.storage.cors import (
    EXPOSE_HEADERS,
    RULE_ID,
    UPLOAD_HEADERS,
    UPLOAD_METHODS,
    check_origin,
    matching_rule,
    normalize_origin,
    wildcard_match,
)

APP_ORIGIN = "https://app.example.com"

#: A host's own rules, which setup must keep as they are.
HOST_RULES: list[dict[str, Any]] = [
    {
        "ID": "public-downloads",
        "AllowedMethods": ["GET"],
        "AllowedOrigins": ["*"],
        "AllowedHeaders": ["range"],
        "ExposeHeaders": ["Content-Range"],
        "MaxAgeSeconds": 600,
    },
    {
        "ID": "partner",
        "AllowedMethods": ["PUT", "DELETE"],
        "AllowedOrigins": ["https://partner.example.org"],
        "AllowedHeaders": ["*"],
    },
]


@pytest.fixture
def config() -> dict[str, Any]:
    return {"OBITOX_CORS_ORIGINS": [APP_ORIGIN]}


def put_rules(s3: Any, rules: list[dict[str, Any]]) -> None:
    s3.put_bucket_cors(Bucket=BUCKET, CORSConfiguration={"CORSRules": rules})


def bucket_rules(s3: Any, bucket: str = BUCKET) -> list[dict[str, Any]] | None:
    """The bucket's CORS rules, ``None`` when it has no configuration at all."""
    try:
        return list(s3.get_bucket_cors(Bucket=bucket)["CORSRules"])
    except s3.exceptions.ClientError as error:
        if error.response["Error"]["Code"] == "NoSuchCORSConfiguration":
            return None
        raise


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["obitox", *args])


def admin_app(**config: Any) -> tuple[Flask, ObitoX]:
    app, obitox = make_app(MemoryStateBackend(), OBITOX_CORS_ORIGINS=[APP_ORIGIN], **config)
    obitox.admin_loader(lambda: True)
    return app, obitox


# -- matching as S3 does it ------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("https://app.example.com", "https://app.example.com", True),
        ("https://*.example.com", "https://app.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://*.example.com", "https://app.example.com.evil.net", False),
        ("*", "https://anything.test", True),
        ("http://localhost:*", "http://localhost:5173", True),
        ("https://app.example.com", "https://app.example.com:8443", False),
    ],
)
def test_origin_wildcards(pattern: str, value: str, expected: bool) -> None:
    assert wildcard_match(pattern, value) is expected


def test_headers_match_case_insensitively_with_one_wildcard() -> None:
    assert wildcard_match("x-amz-*", "X-Amz-Meta-Album", ignore_case=True)
    assert wildcard_match("Content-Type", "content-type", ignore_case=True)
    assert not wildcard_match("x-amz-meta-*", "x-amz-checksum-sha256", ignore_case=True)


def test_first_matching_rule_wins() -> None:
    first = {"AllowedOrigins": [APP_ORIGIN], "AllowedMethods": ["PUT"], "AllowedHeaders": ["*"]}
    second = {
        "AllowedOrigins": ["*"],
        "AllowedMethods": ["PUT"],
        "AllowedHeaders": ["*"],
        "ExposeHeaders": ["ETag"],
    }
    assert matching_rule([first, second], APP_ORIGIN, "PUT") is first
    assert matching_rule([first, second], "https://other.test", "PUT") is second
    # The second rule exposes ETag, but S3 answers this origin's PUT with the first one.
    report = check_origin([first, second], APP_ORIGIN)
    assert [c.check for c in report.checks if not c.ok] == ["post", "etag"]
    assert report.problems[1].startswith(
        f"rule 1 answers PUT from {APP_ORIGIN} but does not expose ETag"
    )


def test_a_preflight_needs_every_header_allowed() -> None:
    rule = {
        "AllowedOrigins": [APP_ORIGIN],
        "AllowedMethods": ["PUT"],
        "AllowedHeaders": ["content-type"],
    }
    assert matching_rule([rule], APP_ORIGIN, "PUT", ["Content-Type"]) is rule
    assert matching_rule([rule], APP_ORIGIN, "PUT", ["content-type", "x-amz-meta-a"]) is None


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("https://App.Example.com/", "https://app.example.com"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("https://*.example.com", "https://*.example.com"),
        (" * ", "*"),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(given: str, normal: str) -> None:
    assert normalize_origin(given) == normal


@pytest.mark.parametrize(
    "bad",
    [
        "app.example.com",
        "https://app.example.com/upload",
        "https://*.*.example.com",
        "",
        "https://a?b",
    ],
)
def test_what_is_not_an_origin_is_refused(bad: str) -> None:
    from flask_obitox.errors import ObitoXError

    with pytest.raises(ObitoXError) as caught:
        normalize_origin(bad)
    assert caught.value.code == "INVALID_INPUT"


# -- cors setup ------------------------------------------------------------------------


def test_setup_adds_the_upload_rule(app: Flask, s3: Any) -> None:
    result = run(app, "cors", "setup")
    assert result.exit_code == 0, result.output
    assert bucket_rules(s3) == [
        {
            "ID": RULE_ID,
            "AllowedHeaders": list(UPLOAD_HEADERS),
            "AllowedMethods": list(UPLOAD_METHODS),
            "AllowedOrigins": [APP_ORIGIN],
            "ExposeHeaders": list(EXPOSE_HEADERS),
            "MaxAgeSeconds": 3600,
        }
    ]
    assert '+      "ID": "obitox-upload"' in result.output
    assert "Applied" in result.output


def test_setup_merges_with_the_hosts_rules(app: Flask, s3: Any) -> None:
    put_rules(s3, HOST_RULES)
    result = run(app, "cors", "setup")
    assert result.exit_code == 0, result.output
    rules = bucket_rules(s3)
    assert rules is not None
    assert [r.get("ID") for r in rules] == [RULE_ID, "public-downloads", "partner"]
    assert rules[1:] == HOST_RULES
    # The diff shows only our rule arriving: no host line is removed.
    removed = [
        line
        for line in result.output.splitlines()
        if line.startswith("-") and not line.startswith("---")
    ]
    assert removed == []


def test_setup_twice_changes_nothing_the_second_time(app: Flask, s3: Any) -> None:
    put_rules(s3, HOST_RULES)
    assert run(app, "cors", "setup").exit_code == 0
    first = bucket_rules(s3)
    result = run(app, "cors", "setup")
    assert result.exit_code == 0
    assert "Nothing to change" in result.output
    assert bucket_rules(s3) == first


def test_setup_adds_origins_and_keeps_the_ones_it_had(app: Flask, s3: Any) -> None:
    assert run(app, "cors", "setup").exit_code == 0
    result = run(app, "cors", "setup", "--origin", "https://admin.example.com")
    assert result.exit_code == 0, result.output
    rules = bucket_rules(s3)
    assert rules is not None
    assert rules[0]["AllowedOrigins"] == [APP_ORIGIN, "https://admin.example.com"]


def test_setup_moves_our_rule_ahead_of_a_host_rule_that_would_shadow_it(
    app: Flask, s3: Any
) -> None:
    shadow = {"ID": "old", "AllowedMethods": ["PUT"], "AllowedOrigins": ["https://*.example.com"]}
    put_rules(s3, [shadow])
    result = run(app, "cors", "setup")
    assert result.exit_code == 0
    assert [r.get("ID") for r in bucket_rules(s3) or []] == [RULE_ID, "old"]
    assert "rule 2 (old) also allows PUT from https://app.example.com" in result.output


def test_dry_run_changes_nothing(app: Flask, s3: Any) -> None:
    result = run(app, "cors", "setup", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: nothing was written." in result.output
    assert '+      "ID": "obitox-upload"' in result.output
    assert bucket_rules(s3) is None

    put_rules(s3, HOST_RULES)
    assert (
        run(app, "cors", "setup", "--dry-run", "--origin", "https://x.example.com").exit_code == 0
    )
    assert bucket_rules(s3) == HOST_RULES


def test_star_from_the_config_is_not_copied_to_the_bucket(s3: Any) -> None:
    app, _ = make_app(MemoryStateBackend(), OBITOX_CORS_ORIGINS=[APP_ORIGIN, "*"])
    result = run(app, "cors", "setup")
    assert result.exit_code == 0
    assert "pass --origin '*'" in result.output
    assert (bucket_rules(s3) or [])[0]["AllowedOrigins"] == [APP_ORIGIN]


def test_star_when_asked_explicitly_comes_with_a_warning(app: Flask, s3: Any) -> None:
    result = run(app, "cors", "setup", "--origin", "*")
    assert result.exit_code == 0
    assert "warning: AllowedOrigins '*' lets scripts on every website" in result.output
    assert (bucket_rules(s3) or [])[0]["AllowedOrigins"] == ["*"]


def test_setup_refuses_a_bad_origin_and_writes_nothing(app: Flask, s3: Any) -> None:
    result = run(app, "cors", "setup", "--origin", "https://app.example.com/uploads")
    assert result.exit_code == 2
    assert "is not an origin" in result.output
    assert bucket_rules(s3) is None


def test_setup_without_any_origin_says_where_to_give_one(s3: Any) -> None:
    app, _ = make_app(MemoryStateBackend())
    result = run(app, "cors", "setup")
    assert result.exit_code == 2
    assert "OBITOX_CORS_ORIGINS" in result.output


# -- cors verify -----------------------------------------------------------------------


def failing_checks(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.startswith("    ✗")]


def test_verify_without_configuration_fails_every_check(app: Flask, s3: Any) -> None:
    result = run(app, "cors", "verify")
    assert result.exit_code == 1
    assert "the bucket has no CORS configuration" in result.output
    assert f"fix: flask obitox cors setup --origin {APP_ORIGIN}" in result.output


def test_verify_finds_a_missing_put(app: Flask, s3: Any) -> None:
    put_rules(
        s3,
        [
            {
                "AllowedMethods": ["GET", "POST"],
                "AllowedOrigins": [APP_ORIGIN],
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["ETag"],
            }
        ],
    )
    result = run(app, "cors", "verify")
    assert result.exit_code == 1
    problems = failing_checks(result.output)
    assert (
        f"✗ No CORS rule allows PUT from {APP_ORIGIN}: uploads and multipart parts fail" in problems
    )
    assert not any("POST" in p for p in problems)


def test_verify_finds_etag_not_exposed(app: Flask, s3: Any) -> None:
    put_rules(
        s3,
        [
            {
                "AllowedMethods": ["PUT", "POST"],
                "AllowedOrigins": [APP_ORIGIN],
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["x-amz-version-id"],
            }
        ],
    )
    result = run(app, "cors", "verify")
    assert result.exit_code == 1
    assert failing_checks(result.output) == [
        f"✗ rule 1 answers PUT from {APP_ORIGIN} but does not expose ETag: pages cannot "
        "read part ETags, so every multipart upload fails"
    ]


def test_verify_finds_an_origin_not_listed(app: Flask, s3: Any) -> None:
    put_rules(
        s3,
        [
            {
                "AllowedMethods": ["PUT", "POST"],
                "AllowedOrigins": ["https://*.example.org"],
                "AllowedHeaders": ["*"],
                "ExposeHeaders": ["ETag"],
            }
        ],
    )
    result = run(app, "cors", "verify")
    assert result.exit_code == 1
    assert f"✗ No CORS rule allows the origin {APP_ORIGIN}" in failing_checks(result.output)
    # The same rule is fine for an origin its wildcard covers.
    assert run(app, "cors", "verify", "--origin", "https://shop.example.org").exit_code == 0


def test_verify_finds_headers_the_preflight_would_refuse(app: Flask, s3: Any) -> None:
    put_rules(
        s3,
        [
            {
                "AllowedMethods": ["PUT", "POST"],
                "AllowedOrigins": [APP_ORIGIN],
                "AllowedHeaders": ["content-type"],
                "ExposeHeaders": ["ETag"],
            }
        ],
    )
    result = run(app, "cors", "verify")
    assert result.exit_code == 1
    [problem] = failing_checks(result.output)
    assert "does not allow the request headers content-md5, x-amz-checksum-sha256" in problem


def test_verify_passes_after_setup_and_keeps_passing_the_host_rules(app: Flask, s3: Any) -> None:
    put_rules(
        s3,
        [
            {
                "AllowedMethods": ["PUT"],
                "AllowedOrigins": [APP_ORIGIN],
                "AllowedHeaders": ["*"],
            },
            *HOST_RULES,
        ],
    )
    assert run(app, "cors", "verify").exit_code == 1
    assert run(app, "cors", "setup").exit_code == 0
    result = run(app, "cors", "verify")
    assert result.exit_code == 0, result.output
    assert f"✓ {APP_ORIGIN}" in result.output


def test_verify_checks_several_origins(app: Flask, s3: Any) -> None:
    assert run(app, "cors", "setup").exit_code == 0
    result = run(
        app, "cors", "verify", "--origin", APP_ORIGIN, "--origin", "https://new.example.com"
    )
    assert result.exit_code == 1
    assert f"✓ {APP_ORIGIN}" in result.output
    assert "✗ https://new.example.com" in result.output
    assert "fix: flask obitox cors setup --origin https://new.example.com" in result.output


# -- storage failures as sentences -----------------------------------------------------


def test_a_missing_bucket_is_named(s3: Any) -> None:
    app, _ = make_app(
        MemoryStateBackend(), OBITOX_BUCKET="obitox-gone", OBITOX_CORS_ORIGINS=[APP_ORIGIN]
    )
    for command in (("cors", "verify"), ("cors", "setup")):
        result = run(app, *command)
        assert result.exit_code == 1
        assert "The bucket 'obitox-gone' does not exist" in result.output


def test_an_unreachable_endpoint_is_named() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    app, _ = make_app(
        MemoryStateBackend(),
        OBITOX_ENDPOINT_URL="http://127.0.0.1:9",
        OBITOX_CORS_ORIGINS=[APP_ORIGIN],
    )
    result = run(app, "cors", "verify")
    assert result.exit_code == 1
    assert "The storage endpoint http://127.0.0.1:9" in result.output
    assert "cannot be reached" in result.output


def _limited_user(actions: list[str]) -> dict[str, str]:
    """Credentials of an IAM user allowed only ``actions`` (moto enforces IAM after the
    first few unauthenticated calls, see ``set_initial_no_auth_action_count``)."""
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="obitox-app")
    iam.put_user_policy(
        UserName="obitox-app",
        PolicyName="obitox",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="obitox-app")["AccessKey"]
    return {
        "OBITOX_AWS_ACCESS_KEY_ID": key["AccessKeyId"],
        "OBITOX_AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
    }


def _with_iam(actions: list[str], scenario: Callable[[dict[str, str]], None]) -> None:
    """Run ``scenario(app config)`` as a user allowed only ``actions``."""

    # Four calls without authentication: three to make the user, one to make the bucket.
    @set_initial_no_auth_action_count(4)
    def run_it() -> None:
        with mock_aws():
            credentials = _limited_user(actions)
            boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
            scenario(credentials)

    run_it()


def test_access_denied_on_put_bucket_cors_names_the_permission() -> None:
    outcome: dict[str, Any] = {}

    def scenario(credentials: dict[str, str]) -> None:
        app, _ = admin_app(**credentials)
        outcome["cli"] = run(app, "cors", "setup")
        outcome["verify"] = run(app, "cors", "verify")  # GetBucketCors is allowed
        outcome["route"] = UserClient(app, "root").post("/cors/setup", json={})

    # The IAM names, and (moto 5.2.6 checks operation names: s3:GetBucketCors,
    # s3:ListObjectsV2) the same rights as moto now spells them. AWS matches action
    # names without regard to case, so both spellings of GetBucketCORS are one right.
    _with_iam(
        ["s3:GetBucketCORS", "s3:ListBucket", "s3:GetBucketCors", "s3:ListObjectsV2"], scenario
    )
    cli = outcome["cli"]
    assert cli.exit_code == 1
    assert "s3:PutBucketCORS" in cli.output
    assert f"arn:aws:s3:::{BUCKET}" in cli.output
    assert outcome["verify"].exit_code == 1  # ran, and found no configuration
    route = outcome["route"]
    assert route.status_code == 503
    assert route.json["error"] == "STORAGE_UNAVAILABLE"
    assert "s3:PutBucketCORS" in route.json["message"]
    assert route.json["details"]["permission"] == "s3:PutBucketCORS"


# -- admin routes ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("post", "/cors/setup"), ("get", "/cors/verify")])
def test_admin_routes_answer_403_without_an_admin_loader(
    client: UserClient, s3: Any, method: str, path: str
) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 403
    assert response.json["error"] == "FORBIDDEN"
    assert bucket_rules(s3) is None


@pytest.mark.parametrize("answer", [False, None, "yes", 1])
def test_admin_routes_answer_403_unless_the_loader_says_true(
    app: Flask, obitox: ObitoX, client: UserClient, s3: Any, answer: Any
) -> None:
    obitox.admin_loader(lambda: answer)
    assert client.post("/cors/setup").status_code == 403
    assert client.get("/cors/verify").status_code == 403
    assert bucket_rules(s3) is None


def test_admin_routes_still_need_an_identity(app: Flask, obitox: ObitoX) -> None:
    obitox.admin_loader(lambda: True)
    anonymous = UserClient(app, None)
    assert anonymous.post("/cors/setup").status_code == 401
    assert anonymous.get("/cors/verify").status_code == 401


def test_admin_setup_and_verify(app: Flask, obitox: ObitoX, client: UserClient, s3: Any) -> None:
    obitox.admin_loader(lambda: True)
    put_rules(s3, HOST_RULES)

    before = client.get("/cors/verify")
    assert before.status_code == 200
    assert before.json["ok"] is False
    [report] = before.json["origins"]
    assert report["origin"] == APP_ORIGIN
    assert report["fix"] == f"flask obitox cors setup --origin {APP_ORIGIN}"
    # The host's GET-for-everyone rule lists the origin, but nothing lets it upload.
    assert {c["check"] for c in report["checks"] if not c["ok"]} == {
        "put",
        "post",
        "headers",
        "etag",
    }

    dry = client.post("/cors/setup", json={"dryRun": True})
    assert dry.status_code == 200
    assert dry.json["changed"] is True
    assert dry.json["applied"] is False
    assert dry.json["before"] == HOST_RULES
    assert bucket_rules(s3) == HOST_RULES

    done = client.post("/cors/setup")
    assert done.status_code == 200
    assert done.json["applied"] is True
    assert done.json["after"][0]["ID"] == RULE_ID
    assert done.json["after"][1:] == HOST_RULES
    assert '+      "ID": "obitox-upload",' in done.json["diff"]
    assert bucket_rules(s3) == done.json["after"]

    after = client.get("/cors/verify")
    assert after.json["ok"] is True
    assert after.json["origins"][0]["fix"] is None


def test_admin_setup_with_explicit_origins(
    app: Flask, obitox: ObitoX, client: UserClient, s3: Any
) -> None:
    obitox.admin_loader(lambda: True)
    response = client.post("/cors/setup", json={"origins": ["*", "https://b.example.com/"]})
    assert response.status_code == 200
    assert response.json["origins"] == ["*", "https://b.example.com"]
    assert any("'*'" in warning for warning in response.json["warnings"])
    verify = client.get("/cors/verify", query_string=[("origin", "https://b.example.com")])
    assert verify.json["ok"] is True
    assert [o["origin"] for o in verify.json["origins"]] == ["https://b.example.com"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"origins": "https://a.example.com"}, "origins"),
        ({"origins": []}, "origins"),
        ({"dryRun": "sometimes"}, "dryRun"),
        ({"bucket": "elsewhere"}, "bucket"),
    ],
)
def test_admin_setup_refuses_bad_bodies(
    obitox: ObitoX, client: UserClient, s3: Any, body: dict[str, Any], field: str
) -> None:
    obitox.admin_loader(lambda: True)
    response = client.post("/cors/setup", json=body)
    assert response.status_code == 400
    assert response.json["error"] == "INVALID_INPUT"
    assert field in response.json["details"]["fields"]
    assert bucket_rules(s3) is None


def test_admin_setup_refuses_a_bad_origin(obitox: ObitoX, client: UserClient, s3: Any) -> None:
    obitox.admin_loader(lambda: True)
    response = client.post("/cors/setup", json={"origins": ["https://app.example.com/x"]})
    assert response.status_code == 400
    assert response.json["details"]["origin"] == "https://app.example.com/x"
    assert bucket_rules(s3) is None


def test_admin_setup_needs_json(obitox: ObitoX, client: UserClient, s3: Any) -> None:
    obitox.admin_loader(lambda: True)
    response = client.post(
        "/cors/setup", data="origins=*", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 415
    assert bucket_rules(s3) is None


def test_admin_verify_limits_the_origins(obitox: ObitoX, client: UserClient, s3: Any) -> None:
    obitox.admin_loader(lambda: True)
    many = [("origin", f"https://{i}.example.com") for i in range(101)]
    response = client.get("/cors/verify", query_string=many)
    assert response.status_code == 400
    assert response.json["details"]["limit"] == 100


def test_admin_routes_report_a_missing_bucket(s3: Any) -> None:
    app, _ = admin_app(OBITOX_BUCKET="obitox-gone")
    response = UserClient(app, "root").get("/cors/verify")
    assert response.status_code == 503
    assert response.json["error"] == "STORAGE_UNAVAILABLE"
    assert "'obitox-gone' does not exist" in response.json["message"]


@pytest.mark.parametrize(
    ("operation", "code", "extra", "expected"),
    [
        ("PutBucketLifecycleConfiguration", "AccessDenied", {}, "s3:PutLifecycleConfiguration"),
        ("PutObject", "AccessDenied", {}, f"s3:PutObject on arn:aws:s3:::{BUCKET}/*"),
        ("GetBucketCors", "InvalidAccessKeyId", {}, "OBITOX_AWS_ACCESS_KEY_ID"),
        ("GetBucketCors", "SignatureDoesNotMatch", {}, "OBITOX_AWS_SECRET_ACCESS_KEY"),
        ("HeadBucket", "RequestTimeTooSkewed", {}, "synchronise the clock"),
        ("GetBucketCors", "PermanentRedirect", {"Region": "eu-west-3"}, "'eu-west-3'"),
        ("GetBucketCors", "SlowDown", {"Message": "Reduce your rate."}, "SlowDown"),
    ],
)
def test_storage_errors_become_sentences(
    operation: str, code: str, extra: dict[str, str], expected: str
) -> None:
    from botocore.exceptions import ClientError

    from flask_obitox.storage import StorageSettings
    from flask_obitox.storage.explain import explain

    error = ClientError({"Error": {"Code": code, **extra}}, operation)
    message, details = explain(StorageSettings(bucket=BUCKET, region=REGION), error)
    assert expected in message
    assert details["operation"] == operation
    assert details["code"] == code
