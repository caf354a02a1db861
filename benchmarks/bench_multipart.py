"""Signing every part URL of a 10,000-part upload through ``POST /multipart/<id>/parts``,
against boto3's ``generate_presigned_url`` loop for the same 10,000 URLs.

The upload is 10,000 parts of 5 MiB (48.8 GiB: S3's part-count limit at S3's smallest
part). Prints, from one run on one machine (shared and noisy: read the ratios):

- ``/parts requests``: 10 requests of 1000 part numbers each through Flask's test client,
  the whole server work (JSON parse, schema, ownership from Redis, per-part expiry,
  10,000 signatures, JSON answer), Redis state;
- ``boto3 cached loop``: ``generate_presigned_url("upload_part")`` 10,000 times on one
  cached client (what a hand-rolled server would do).

No storage is contacted: creating the multipart upload uses moto in-process, and signing
is pure CPU.

Usage: ``python benchmarks/bench_multipart.py [--rounds N] [--redis-url URL] [--memory]``
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import boto3
from bench_state import add_state_options, bench_state
from botocore.config import Config
from flask import Flask
from moto import mock_aws
from timing import median_seconds

from flask_obitox import ObitoX

BUCKET = "bench-bucket"
REGION = "us-east-1"
MiB = 1024 * 1024
PARTS = 10_000
PART_SIZE = 5 * MiB
PER_CALL = 1000
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def make_app(state: Any) -> Flask:
    app = Flask("bench")
    app.config.update(
        OBITOX_BUCKET=BUCKET,
        # What is measured is signing: no per-request rate-limit counter (docs/production).
        OBITOX_RATE_LIMITS="",
        OBITOX_REGION=REGION,
        OBITOX_AWS_ACCESS_KEY_ID=ACCESS_KEY,
        OBITOX_AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    )
    obitox = ObitoX(state=state)
    obitox.identity_loader(lambda: "bench-user")
    obitox.init_app(app)
    return app


def boto3_loop(client: Any, key: str, upload_id: str) -> list[str]:
    return [
        client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": BUCKET,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number,
                "ContentLength": PART_SIZE,
            },
            ExpiresIn=900,
        )
        for number in range(1, PARTS + 1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    add_state_options(parser)
    args = parser.parse_args()

    with bench_state(args) as (state, label):
        ours, loop = measure(args, state)

    print(f"{PARTS} part URLs ({PARTS // PER_CALL} x POST /parts of {PER_CALL}), state: {label}")
    print(f"{'measurement':<44}{'median':>12}{'per URL':>12}{'ratio':>10}")
    for name, seconds in [
        ("flask-obitox /parts requests (whole)", ours),
        ("boto3 generate_presigned_url, cached client", loop),
    ]:
        print(
            f"{name:<44}{seconds * 1e3:>10.1f}ms{seconds / PARTS * 1e6:>10.1f}us{seconds / ours:>9.1f}x"
        )
    verdict = "met" if loop / ours >= 10 else "NOT met"
    print(f"goal: >= 10x faster than boto3's loop: {verdict} ({loop / ours:.1f}x)")


def measure(args: argparse.Namespace, state: Any) -> tuple[float, float]:
    """Median seconds of the 10 ``/parts`` requests, and of boto3's 10,000-URL loop."""
    with mock_aws():
        boto3.client(
            "s3",
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ).create_bucket(Bucket=BUCKET)
        app = make_app(state)
        client = app.test_client()
        created = client.post(
            "/obitox/multipart",
            json={
                "filename": "disk image.iso",
                "contentType": "application/octet-stream",
                "size": PARTS * PART_SIZE,
                "partSize": PART_SIZE,
                "networkType": "wifi",
            },
        )
        assert created.status_code == 201, created.get_data(as_text=True)
        upload = created.json
        assert upload is not None
        assert upload["totalParts"] == PARTS
        record = state.get(upload["uploadId"])
    # Encoded once: the client's JSON encoding is not server work.
    bodies = [
        json.dumps({"partNumbers": list(range(start, start + PER_CALL))}).encode()
        for start in range(1, PARTS + 1, PER_CALL)
    ]
    path = f"/obitox/multipart/{upload['uploadId']}/parts"

    def sign_all_parts() -> None:
        for body in bodies:
            response = client.post(path, data=body, content_type="application/json")
            assert response.status_code == 200, response.get_data(as_text=True)

    ours = median_seconds(sign_all_parts, args.rounds, warmup=2)
    boto = boto3.client(
        "s3",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4"),
    )
    loop = median_seconds(
        lambda: boto3_loop(boto, record.key, record.s3_upload_id),
        max(3, args.rounds // 3),
        warmup=1,
    )
    return ours, loop


if __name__ == "__main__":
    main()
