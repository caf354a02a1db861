"""The state backend the benchmarks run against, the same way in every script.

``--redis-url`` (default ``OBITOX_TEST_REDIS_URL`` or ``redis://127.0.0.1:6379/15``) or
``--memory``; keys live under a prefix of the run's own and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from flask_obitox import MemoryStateBackend, RedisStateBackend


def add_state_options(parser: argparse.ArgumentParser, *, memory: bool = True) -> None:
    parser.add_argument(
        "--redis-url", default=os.environ.get("OBITOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    if memory:
        parser.add_argument(
            "--memory", action="store_true", help="use the memory backend instead of Redis"
        )


def new_prefix() -> str:
    return f"obitox-bench-{uuid.uuid4().hex[:8]}"


def delete_prefixed(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (1000 per command)."""
    client = redis.Redis.from_url(redis_url)
    found = list(client.scan_iter(match=f"{prefix}*", count=10_000))
    for start in range(0, len(found), 1000):
        client.delete(*found[start : start + 1000])


@contextmanager
def bench_state(args: argparse.Namespace) -> Iterator[tuple[Any, str]]:
    """``(state backend, label)`` for the options; Redis is pinged first and its keys
    are deleted on the way out."""
    if getattr(args, "memory", False):
        yield MemoryStateBackend(), "memory"
        return
    prefix = new_prefix()
    state = RedisStateBackend.from_url(args.redis_url, prefix=prefix)
    state.ping()
    try:
        yield state, f"redis {args.redis_url}"
    finally:
        delete_prefixed(args.redis_url, prefix)
