"""The client's event-stream decoder on a replay: one pass over each chunk against the
naive way, which slices off what is left after every line.

A reconnect with ``Last-Event-ID`` may replay up to ``OBITOX_EVENTS_RETENTION`` (1000)
events at once; they arrive in chunks of up to 64 KiB (what the client reads per call),
each holding a hundred or more lines. The naive decoder copies the rest of the chunk
for every line it takes (quadratic in the chunk); :class:`SSEDecoder` walks the chunk
once with a regular expression. Both are checked to decode the same events.

Usage: ``python benchmarks/bench_sse.py [--events 1000] [--rounds 20]``; for
instruction counts, ``valgrind --tool=callgrind python benchmarks/bench_sse.py --only
sse --rounds K`` against ``--rounds 0`` (and the same with ``--only naive``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from timing import median_seconds

from flask_obitox.client.events import ServerSentEvent, SSEDecoder

CHUNK = 65536


class NaiveDecoder(SSEDecoder):
    """The decoder as first written: find the next line end, slice it off, repeat."""

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        self._buffer += self._text.decode(chunk)
        events: list[ServerSentEvent] = []
        while True:
            end = min(
                (i for i in (self._buffer.find("\r"), self._buffer.find("\n")) if i >= 0),
                default=-1,
            )
            if end < 0 or (self._buffer[end] == "\r" and end + 1 == len(self._buffer)):
                return events
            skip = 2 if self._buffer.startswith("\r\n", end) else 1
            line, self._buffer = self._buffer[:end], self._buffer[end + skip :]
            event = self._line(line)
            if event is not None:
                events.append(event)


def replay(count: int) -> list[bytes]:
    """``count`` events as GET /events sends them, cut into the client's 64 KiB reads."""
    body = bytearray()
    for n in range(count):
        data = {
            "type": "upload.progress",
            "timestamp": "2026-12-04T10:00:00.000Z",
            "data": {"uploadId": f"u{n:020d}", "filename": "holiday.mp4", "percentage": n / 10},
        }
        body += f"id: 1733306531000-{n}\nevent: upload.progress\ndata: ".encode()
        body += json.dumps(data).encode() + b"\n\n"
        if n % 50 == 0:
            body += b": heartbeat\n\n"
    return [bytes(body[i : i + CHUNK]) for i in range(0, len(body), CHUNK)]


def decode(decoder: type[SSEDecoder], chunks: list[bytes]) -> list[ServerSentEvent]:
    instance = decoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += instance.feed(chunk)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--only", choices=("sse", "naive"), help="run one way, untimed")
    args = parser.parse_args()
    chunks = replay(args.events)
    ways = {"sse": SSEDecoder, "naive": NaiveDecoder}
    if args.only:
        for _ in range(args.rounds):
            decode(ways[args.only], chunks)
        return
    assert decode(SSEDecoder, chunks) == decode(NaiveDecoder, chunks)
    assert len(decode(SSEDecoder, chunks)) == args.events
    size = sum(map(len, chunks))
    print(f"a replay of {args.events} events, {size} bytes in {len(chunks)} reads")
    times = {
        name: median_seconds(lambda w=way: decode(w, chunks), args.rounds)
        for name, way in ways.items()
    }
    for name, seconds in times.items():
        print(f"{name:6} {seconds * 1e3:8.2f} ms  ({seconds / args.events * 1e6:.2f} us per event)")
    print(f"ratio naive / sse: {times['naive'] / times['sse']:.2f}x")


if __name__ == "__main__":
    main()
