"""Presigning 100 PUT URLs: botocore against our SigV4 signer, in one run.

Prints medians and ratios for (a) botocore's ``generate_presigned_url`` loop on a
cached client, (b) ``SigV4Presigner.presign_put_object`` per URL, (c)
``SigV4Presigner.presign_put_objects`` once for all 100 (what a batch request uses).
Byte-identity with botocore is proven by ``tests/test_signer.py``, not here.

Every round signs 100 *new* keys, as a server does: botocore caches endpoint
resolution per key (its S3 ruleset takes ``Key`` as a parameter, LRU of 100), so
re-signing the same keys would make it look ~1.7x faster than it is for real uploads.

Usage: ``python benchmarks/bench_signer.py [--rounds N]``
"""

from __future__ import annotations

import argparse
import secrets

import boto3
from botocore.config import Config
from timing import median_seconds

from flask_obitox.storage.signer import PutObjectSpec, SigV4Presigner

BUCKET = "bench-bucket"


def make_specs() -> list[PutObjectSpec]:
    return [
        PutObjectSpec(
            f"uploads/{secrets.token_urlsafe(16)}/holiday photo {i:03d}.jpg",
            "image/jpeg",
            2_000_000 + i,
            300 + i,
            None,
            {"album": "summer"},
        )
        for i in range(100)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=Config(signature_version="s3v4"),
    )
    presigner = SigV4Presigner(client)

    def botocore_loop(specs: list[PutObjectSpec]) -> None:
        for s in specs:
            client.generate_presigned_url(
                "put_object",
                Params={
                    "Bucket": BUCKET,
                    "Key": s.key,
                    "ContentType": s.content_type,
                    "ContentLength": s.content_length,
                    "Metadata": s.metadata,
                },
                ExpiresIn=s.expires_in,
            )

    def one_by_one(specs: list[PutObjectSpec]) -> None:
        for s in specs:
            presigner.presign_put_object(
                BUCKET,
                s.key,
                content_type=s.content_type,
                content_length=s.content_length,
                expires_in=s.expires_in,
                metadata=s.metadata,
            )

    def batch(specs: list[PutObjectSpec]) -> None:
        presigner.presign_put_objects(BUCKET, specs)

    naive = median_seconds(botocore_loop, max(20, args.rounds // 5), setup=make_specs)
    rows = [
        ("botocore generate_presigned_url loop", naive),
        ("presign_put_object per URL", median_seconds(one_by_one, args.rounds, setup=make_specs)),
        ("presign_put_objects, whole batch", median_seconds(batch, args.rounds, setup=make_specs)),
    ]
    print(f"{'100 presigned PUT URLs':<40}{'median':>12}{'per URL':>12}{'vs botocore':>13}")
    for name, seconds in rows:
        print(
            f"{name:<40}{seconds * 1e3:>10.2f}ms{seconds * 1e4:>10.1f}us{naive / seconds:>12.1f}x"
        )


if __name__ == "__main__":
    main()
