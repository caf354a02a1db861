"""The one way the benchmarks time things: the median of many rounds, after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_seconds(
    fn: Callable[..., Any],
    rounds: int,
    *,
    warmup: int = 5,
    setup: Callable[[], Any] | None = None,
) -> float:
    """Median wall time of ``fn()`` over ``rounds``; with ``setup``, of ``fn(setup())``,
    the setup running outside the timing (fresh inputs for every round)."""

    def once() -> float:
        args = () if setup is None else (setup(),)
        start = time.perf_counter()
        fn(*args)
        return time.perf_counter() - start

    for _ in range(warmup):
        once()
    return statistics.median(once() for _ in range(rounds))
