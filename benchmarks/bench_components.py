"""The pieces of a batch request, each against the naive way, in one run.

- load 100 file specs: marshmallow ``Schema.load`` vs the compiled loader;
- dump a 100-upload answer to JSON: marshmallow ``dump`` + ``json.dumps`` vs the
  compiled dumper + orjson;
- write 100 upload records to Redis: a redis-py ``Pipeline`` (json.dumps per record)
  vs ``RedisStateBackend.create_many``.

Usage: ``python benchmarks/bench_components.py [--rounds N] [--redis-url URL]``
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import orjson
import redis
from bench_state import add_state_options, delete_prefixed, new_prefix
from timing import median_seconds

from flask_obitox import RedisStateBackend, UploadRecord, schemas
from flask_obitox.fastschema import compile_dumper, compile_loader


def row(name: str, naive: float, ours: float) -> None:
    print(f"{name:<34}{naive * 1e3:>10.2f}ms{ours * 1e3:>10.2f}ms{naive / ours:>9.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    add_state_options(parser, memory=False)
    args = parser.parse_args()

    files = [
        {
            "filename": f"holiday photo {i:03d}.jpg",
            "contentType": "image/jpeg",
            "size": 2_000_000 + i,
            "metadata": {"album": "summer"},
        }
        for i in range(100)
    ]
    spec_schema = schemas.FileSpecSchema()
    fast_load = compile_loader(spec_schema)

    answer = {
        "total": 100,
        "successful": 100,
        "failed": 0,
        "errors": [],
        "uploads": [
            {
                "index": i,
                "filename": f"holiday photo {i:03d}.jpg",
                "uploadId": uuid.uuid4().hex[:22],
                "key": f"uploads/{uuid.uuid4().hex[:22]}/holiday photo {i:03d}.jpg",
                "bucket": "bench-bucket",
                "method": "PUT",
                "url": "https://bench-bucket.s3.amazonaws.com/" + "x" * 480,
                "headers": {"Content-Type": "image/jpeg", "x-amz-meta-album": "summer"},
                "expiresIn": 900,
                "expiresAt": "2026-11-21T06:00:00Z",
            }
            for i in range(100)
        ],
    }
    batch_schema = schemas.BatchResponseSchema()
    fast_dump = compile_dumper(batch_schema)

    now = time.time()
    records = [
        UploadRecord(
            upload_id=uuid.uuid4().hex[:22],
            owner="bench-user",
            kind="single",
            bucket="bench-bucket",
            key=f"uploads/x/holiday photo {i:03d}.jpg",
            filename=f"holiday photo {i:03d}.jpg",
            content_type="image/jpeg",
            size=2_000_000 + i,
            status="pending",
            created_at=now,
            updated_at=now,
            expires_at=now + 604800,
            metadata={"album": "summer"},
        )
        for i in range(100)
    ]
    prefix = new_prefix()
    backend = RedisStateBackend.from_url(args.redis_url, prefix=prefix)
    client = redis.Redis.from_url(args.redis_url)

    def pipeline() -> None:
        pipe = client.pipeline(transaction=False)
        for r in records:
            pipe.set(f"{prefix}:{{{r.upload_id}}}:upload", json.dumps(r.to_dict()), ex=60)
        pipe.zadd(f"{prefix}:expiry", {r.upload_id: r.expires_at for r in records})
        pipe.execute()

    print(f"{'100 files':<34}{'naive':>12}{'ours':>12}{'ratio':>10}")
    try:
        row(
            "load specs (schema)",
            median_seconds(lambda: [spec_schema.load(f) for f in files], args.rounds),
            median_seconds(lambda: [fast_load(f) for f in files], args.rounds),
        )
        row(
            "dump answer to JSON",
            median_seconds(lambda: json.dumps(batch_schema.dump(answer)), args.rounds),
            median_seconds(lambda: orjson.dumps(fast_dump(answer)), args.rounds),
        )
        row(
            "write records to Redis",
            median_seconds(pipeline, args.rounds),
            median_seconds(lambda: backend.create_many(records, ttl=60), args.rounds),
        )
    finally:
        delete_prefixed(args.redis_url, prefix)


if __name__ == "__main__":
    main()
