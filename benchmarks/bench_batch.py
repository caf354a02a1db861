"""POST /uploads/batch with 100 files, against boto3's presign loop for the same URLs.

Prints, from one run on one machine (shared and noisy: read the ratios):

- ``batch request``: the whole ``POST /obitox/uploads/batch`` through Flask's test
  client (JSON parse, schema load, validation, 100 signatures, one Redis pipeline,
  JSON response), Redis state;
- ``boto3 cached loop``: ``generate_presigned_url`` 100 times on one cached client;
- ``boto3 naive``: a new boto3 client per request, then the same loop.

With ``--instructions``, also the CPU instructions of one batch request and of one
boto3 loop, counted by callgrind (:mod:`instructions`): the figure that decides, since
it does not move with the machine's load.

Usage: ``python benchmarks/bench_batch.py [--rounds N] [--redis-url URL] [--instructions]``
(Redis defaults to ``redis://127.0.0.1:6379/15``; ``--memory`` uses the memory backend).
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import botocore
from bench_state import add_state_options, bench_state
from botocore.config import Config
from flask import Flask
from instructions import (
    add_instruction_options,
    count_instructions,
    millions,
    run_counted_workloads,
    skipped_line,
)
from timing import median_seconds

from flask_obitox import ObitoX

FILES = 100
BUCKET = "bench-bucket"
REGION = "us-east-1"
SUCCESSFUL = f'"successful":{FILES},'.encode()


def batch_body() -> dict[str, Any]:
    return {
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


def make_app(state: Any, **config: Any) -> Flask:
    app = Flask("bench")
    app.config.update(
        OBITOX_BUCKET=BUCKET,
        # What is measured is signing: no per-request rate-limit counter (docs/production).
        OBITOX_RATE_LIMITS="",
        OBITOX_REGION=REGION,
        OBITOX_AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        OBITOX_AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    )
    app.config.update(config)
    obitox = ObitoX(state=state)
    obitox.identity_loader(lambda: "bench-user")
    obitox.init_app(app)
    return app


def boto3_client(*, fresh_session: bool = False) -> Any:
    """A boto3 client; ``fresh_session`` is the naive per-request way (a new
    ``boto3.session.Session()`` each time, so nothing is cached)."""
    session = boto3.session.Session() if fresh_session else boto3
    return session.client(
        "s3",
        region_name=REGION,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        config=Config(signature_version="s3v4"),
    )


def boto3_loop(client: Any) -> list[str]:
    return [
        client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": BUCKET,
                "Key": f"uploads/{uuid.uuid4().hex}/holiday photo {i:03d}.jpg",
                "ContentType": "image/jpeg",
                "ContentLength": 2_000_000 + i,
                "Metadata": {"album": "summer"},
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
    parser.add_argument("--naive-rounds", type=int, default=10)
    add_state_options(parser)
    add_instruction_options(parser)
    args = parser.parse_args()

    with bench_state(args) as (state, label):
        run(args, state, label)


def batch_request(state: Any) -> Callable[[], None]:
    """One ``POST /uploads/batch`` of :data:`FILES` files, the answer checked."""
    client = make_app(state).test_client()
    # Encoded once: the client's JSON encoding is not server work.
    body = json.dumps(batch_body()).encode()

    def request_batch() -> None:
        response = client.post("/obitox/uploads/batch", data=body, content_type="application/json")
        # The answer is compact JSON: a byte search checks it without parsing 60 kB of
        # it, which is the client's work, not the server's (the first answer is parsed).
        assert response.status_code == 200, response.get_data(as_text=True)
        assert SUCCESSFUL in response.data, response.get_data(as_text=True)

    first = client.post("/obitox/uploads/batch", data=body, content_type="application/json")
    assert first.json is not None, first.get_data(as_text=True)
    assert first.json["successful"] == FILES, first.json
    assert len({upload["url"] for upload in first.json["uploads"]}) == FILES
    return request_batch


def cached_loop() -> Callable[[], list[str]]:
    cached = boto3_client()
    return lambda: boto3_loop(cached)


def run(args: argparse.Namespace, state: Any, label: str) -> None:
    workloads = {"batch": lambda: batch_request(state), "boto3": cached_loop}
    if run_counted_workloads(args, workloads):
        return
    ours = median_seconds(workloads["batch"](), args.rounds)
    loop = median_seconds(cached_loop(), max(20, args.rounds // 5))
    naive = median_seconds(
        lambda: boto3_loop(boto3_client(fresh_session=True)), args.naive_rounds, warmup=1
    )

    print(f"POST /uploads/batch with {FILES} files, state: {label}")
    # The baseline's cost is botocore's: 1.43.14 made a URL 1.8x cheaper (it resolves
    # an S3 endpoint once per bucket, where it did once per key). See performance.rst.
    print(f"against boto3 {boto3.__version__}, botocore {botocore.__version__}")
    if not args.memory:
        # The batch waits for one Redis round trip: on a contended host that, not the
        # CPU work, sets the ratio. Printed so a figure can be judged.
        ping = median_seconds(state.ping, 200)
        print(f"Redis PING round trip: median {ping * 1e6:.0f} us")
    print(f"{'measurement':<40}{'median':>12}{'per URL':>12}{'ratio':>10}")
    rows = [
        ("flask-obitox batch request (whole)", ours),
        ("boto3 generate_presigned_url, cached", loop),
        ("boto3, new session+client per request", naive),
    ]
    for name, seconds in rows:
        print(
            f"{name:<40}{seconds * 1e3:>10.2f}ms{seconds / FILES * 1e6:>10.1f}us{seconds / ours:>9.1f}x"
        )
    print(
        f"goal: batch request >= 10x faster than boto3's cached loop: {'met' if loop / ours >= 10 else 'NOT met'}"
    )
    if args.instructions:
        print_instructions(args)


def print_instructions(args: argparse.Namespace) -> None:
    counts = count_instructions(args, ["batch", "boto3"])
    if counts is None:
        print(skipped_line())
        return
    k = args.instruction_iterations
    print(f"CPU instructions (callgrind, {k} iterations counted, per iteration):")
    for name, count in [
        ("flask-obitox batch request (whole)", counts["batch"]),
        ("boto3 generate_presigned_url, cached", counts["boto3"]),
    ]:
        print(
            f"{name:<40}{millions(count):>12}{count / FILES / 1e3:>10.0f}k{count / counts['batch']:>9.1f}x"
        )
    ratio = counts["boto3"] / counts["batch"]
    print(
        f"goal by instructions: >= 10x fewer than boto3's cached loop: {'met' if ratio >= 10 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
