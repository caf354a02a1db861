"""What publishing live events adds to ``POST /uploads/batch`` (100 files, Redis state).

Three ways, in the same run:

- ``off``: ``OBITOX_EVENTS = False``, no events;
- ``batched``: the default: the request's 100 ``upload.signed`` events appended when it
  ends, in one pipeline (one round trip);
- ``naive``: the same events, each appended on its own (100 round trips).

Prints the median request time of each and the ratios. For instruction counts, run one
mode with ``--only MODE --rounds K`` and ``--rounds 0`` under
``valgrind --tool=callgrind`` and subtract (see docs/performance.rst).

Usage: ``python benchmarks/bench_publish.py [--rounds 200] [--only off|batched|naive]``
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench_batch import batch_body, make_app
from bench_state import add_state_options, bench_state
from timing import median_seconds

MODES = ("off", "batched", "naive")


def request_loop(state: Any, mode: str) -> Any:
    app = make_app(state, OBITOX_EVENTS=mode != "off")
    if mode == "naive":
        service = app.extensions["obitox"].service

        def one_by_one(events: Any) -> None:
            for owner, event in events:
                state.append_event(owner, json.loads(event))

        service.publish_events = one_by_one
    client = app.test_client()
    body = json.dumps(batch_body()).encode()

    def request_batch() -> None:
        response = client.post("/obitox/uploads/batch", data=body, content_type="application/json")
        assert response.status_code == 200, response.get_data(as_text=True)

    return request_batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--only", choices=MODES)
    add_state_options(parser, memory=False)
    args = parser.parse_args()
    with bench_state(args) as (state, label):
        if args.only:
            request_batch = request_loop(state, args.only)
            request_batch()  # warm: imports, compiled schemas, the Redis connection
            for _ in range(args.rounds):
                request_batch()
            return
        medians = {mode: median_seconds(request_loop(state, mode), args.rounds) for mode in MODES}
    print(f"POST /uploads/batch with 100 files, state: {label}")
    for mode in MODES:
        print(
            f"{mode:<10}{medians[mode] * 1e3:>9.2f} ms"
            f"{medians[mode] / medians['off']:>8.2f}x of off"
        )
    print(f"naive / batched: {medians['naive'] / medians['batched']:.2f}x")


if __name__ == "__main__":
    main()
