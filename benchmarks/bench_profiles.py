"""Upload profiles on the batch hot path: what choosing a profile costs a 100-file batch.

Prints, from one run on one machine (shared and noisy: read the ratios), the median of
``POST /obitox/uploads/batch`` with 100 files (memory state) for:

- ``plain``: the app of ``bench_batch.py``, no profile configured;
- ``plain, profiles configured``: ``OBITOX_PROFILES`` holds two profiles, the request
  names none (the default rules, as before profiles existed);
- ``profiled``: the request names a profile with its own rules, a key prefix and four
  storage headers (cache, disposition, SSE-KMS and its key), all signed into every URL;

against boto3's ``generate_presigned_url`` loop signing the same 100 URLs with the same
four headers (the naive way).

``--callgrind N --variant V`` runs one warm-up request, then N requests of one variant,
calling ``os.getppid()`` just before and just after the N: under
``valgrind --tool=callgrind --dump-before=getppid`` the second dump holds exactly the N
requests, so its instruction count / N is one request's, steady whatever the machine's
load (``benchmarks/callgrind_profiles.sh`` runs it and prints the counts). ``plain`` runs
on a checkout from before profiles too (``PYTHONPATH=<checkout>``): before/after counts.

Usage: ``python benchmarks/bench_profiles.py [--rounds N]``
or ``python benchmarks/bench_profiles.py --callgrind N --variant plain|configured|profiled``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import uuid
from typing import Any

import boto3
from botocore.config import Config
from flask import Flask
from timing import median_seconds

from flask_obitox import MemoryStateBackend, ObitoX

FILES = 100
BUCKET = "bench-bucket"
REGION = "us-east-1"
KEY = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
PROFILES = {
    "photos": {
        "allowed_content_types": ["image/*"],
        "max_file_size": 50 * 2**20,
        "key_prefix": "photos/",
        "cache_control": "public, max-age=31536000",
        "content_disposition": "inline",
        "server_side_encryption": "aws:kms",
        "sse_kms_key_id": "alias/photos",
    },
    "documents": {"allowed_content_types": ["application/pdf"], "storage_class": "STANDARD_IA"},
}
#: The same storage settings as botocore put_object parameters.
PHOTO_PARAMS = {
    "CacheControl": "public, max-age=31536000",
    "ContentDisposition": "inline",
    "ServerSideEncryption": "aws:kms",
    "SSEKMSKeyId": "alias/photos",
}


def batch_body(profile: str | None) -> bytes:
    body: dict[str, Any] = {
        "files": [
            {
                "filename": f"holiday photo {i:03d}.jpg",
                "contentType": "image/jpeg",
                "size": 2_000_000 + i,
                "metadata": {"album": "summer"},
            }
            for i in range(FILES)
        ],
        "networkType": "wifi",
    }
    if profile is not None:
        body["profile"] = profile
    return json.dumps(body).encode()


def make_app(*, profiles: bool) -> Flask:
    app = Flask("bench")
    app.config.update(
        TESTING=True,  # no warning about the memory backend
        OBITOX_BUCKET=BUCKET,
        OBITOX_RATE_LIMITS="",
        OBITOX_REGION=REGION,
        OBITOX_AWS_ACCESS_KEY_ID=KEY,
        OBITOX_AWS_SECRET_ACCESS_KEY=SECRET,
    )
    if profiles:
        app.config["OBITOX_PROFILES"] = PROFILES
    obitox = ObitoX(state=MemoryStateBackend())
    obitox.identity_loader(lambda: "bench-user")
    obitox.init_app(app)
    return app


def requester(variant: str) -> Any:
    app = make_app(profiles=variant != "plain")
    client = app.test_client()
    body = batch_body("photos" if variant == "profiled" else None)

    def request_batch() -> None:
        response = client.post("/obitox/uploads/batch", data=body, content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.json["successful"] == FILES  # type: ignore[index]

    return request_batch


def boto3_loop(client: Any) -> list[str]:
    return [
        client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": BUCKET,
                "Key": f"uploads/photos/{uuid.uuid4().hex}/holiday photo {i:03d}.jpg",
                "ContentType": "image/jpeg",
                "ContentLength": 2_000_000 + i,
                "Metadata": {"album": "summer"},
                **PHOTO_PARAMS,
            },
            ExpiresIn=900,
        )
        for i in range(FILES)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--callgrind", type=int, metavar="N", help="run N requests, print nothing")
    parser.add_argument("--variant", choices=["plain", "configured", "profiled"], default="plain")
    args = parser.parse_args()
    if args.callgrind is not None:
        request_batch = requester(args.variant)
        request_batch()  # warm: the bucket's endpoint, the signing key, the caches
        os.getppid()  # callgrind dumps here (--dump-before=getppid) ...
        for _ in range(args.callgrind):
            request_batch()
        os.getppid()  # ... and here: the second dump is the N requests alone
        return

    rows: list[tuple[str, float]] = []
    for name, variant in [
        ("plain (no profiles configured)", "plain"),
        ("plain, profiles configured", "configured"),
        ("profiled (4 storage headers)", "profiled"),
    ]:
        rows.append((name, median_seconds(requester(variant), args.rounds)))
        # The app and its records go before the next variant: a heap full of the last
        # one's records would make every later collection slower.
        gc.collect()
    client = boto3.client(
        "s3",
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3v4"),
    )
    rows.append(
        (
            "boto3 loop, same headers, cached",
            median_seconds(lambda: boto3_loop(client), max(20, args.rounds // 5)),
        )
    )
    base = rows[0][1]
    print(f"POST /uploads/batch with {FILES} files, memory state")
    print(f"{'measurement':<36}{'median':>12}{'per URL':>12}{'vs plain':>10}")
    for name, seconds in rows:
        print(
            f"{name:<36}{seconds * 1e3:>10.2f}ms{seconds / FILES * 1e6:>10.1f}us"
            f"{seconds / base:>9.2f}x"
        )
    profiled, loop = rows[2][1], rows[3][1]
    print(f"profiled batch vs boto3 loop with the same headers: {loop / profiled:.1f}x faster")


if __name__ == "__main__":
    main()
