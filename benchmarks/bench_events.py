"""Open event streams held by one gunicorn worker, and how fast an event reaches them.

Each run starts a real gunicorn (one worker, ``--worker`` gevent or gthread) serving
``events_app.py`` on real Redis, opens ``--streams`` ``GET /obitox/events`` over real
HTTP (non-blocking sockets, one client thread), spread over ``--owners`` owners, then
``--rounds`` times appends one event per owner (one pipeline, as another process or a
worker would) and times until each stream has it. Prints, per run and as a range over
the runs:

- latency from the append to each stream's receipt: p50 and p99;
- the worker's RSS growth per open stream (``/proc/<pid>/status`` before and after);
- what the open streams cost Redis while idle: the worker's connections blocked in a
  read;
- the worker's CPU time (user + system) per round of events, which the load of the
  machine does not inflate as it inflates the latencies.

``--fan-in 0`` measures the naive way: every stream blocks in its own ``XREAD`` on a
connection of its own. The machine is shared and loaded: read ranges, not one figure.

Usage: ``python benchmarks/bench_events.py [--streams 1000] [--owners 100]
[--worker gevent|gthread] [--fan-in 1|0] [--runs 3] [--rounds 20]``
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis
from children import Child, Children

from flask_obitox import RedisStateBackend

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def blocked_clients(client: redis.Redis, name: str) -> int:
    """Connections named ``name`` blocked in a command (``XREAD BLOCK``) right now."""
    return sum(
        1 for entry in client.client_list() if entry.get("name") == name and "b" in entry["flags"]
    )


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if not children:
        raise RuntimeError("gunicorn has no worker yet")
    return int(children[0])


def start_gunicorn(children: Children, args: argparse.Namespace, port: int, prefix: str) -> Child:
    worker = ["-k", "gevent", "--worker-connections", str(args.streams + 100)]
    if args.worker == "gthread":
        worker = ["-k", "gthread", "--threads", str(args.streams + 20)]
    env = {
        **os.environ,
        # Every stream opening at once borrows a connection at once (and with --fan-in 0
        # keeps it): redis-py's pool holds 100 by default, then refuses.
        "BENCH_REDIS": f"{args.redis_url}?max_connections={args.streams + 100}"
        f"&client_name={prefix}",
        "BENCH_PREFIX": prefix,
        "BENCH_FAN_IN": str(args.fan_in),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    gunicorn = children.start(
        f"gunicorn {args.worker}",
        [
            sys.executable,
            "-m",
            "gunicorn",
            *worker,
            "-w",
            "1",
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            "--log-level",
            "warning",
            "events_app:app",
        ],
        cwd=HERE,
        env=env,
    )
    children.wait_for_port(gunicorn, port, timeout=60)
    return gunicorn


class Streams:
    """``count`` event streams over non-blocking sockets, read by one selector."""

    def __init__(self, port: int, count: int, owners: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.buffers: dict[socket.socket, bytearray] = {}
        self.owner_of: dict[socket.socket, str] = {}
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            owner = f"owner-{n % owners}"
            sock.sendall(
                f"GET /obitox/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User: {owner}\r\n\r\n".encode()
            )
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.buffers[sock] = bytearray()
            self.owner_of[sock] = owner

    def pump(self, until: Any, timeout: float) -> None:
        """Read whatever arrives until ``until()`` is true (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("streams did not get everything in time")
            for key, _ in self.selector.select(min(left, 0.5)):
                sock: Any = key.fileobj
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise RuntimeError("a stream was closed by the server")
                self.buffers[sock] += data
                self.received(sock)

    def received(self, sock: socket.socket) -> None:
        """Hook: called after data arrives on ``sock``."""

    def close(self) -> None:
        for sock in self.buffers:
            sock.close()


class Timed(Streams):
    def __init__(self, port: int, count: int, owners: int) -> None:
        super().__init__(port, count, owners)
        self.marker = b""
        self.started = 0.0
        self.waiting: set[socket.socket] = set()
        self.latencies: list[float] = []
        self.open: set[socket.socket] = set()

    def received(self, sock: socket.socket) -> None:
        buffer = self.buffers[sock]
        if sock not in self.open and b": connected" in buffer:
            self.open.add(sock)
        if sock in self.waiting and self.marker in buffer:
            self.latencies.append(time.perf_counter() - self.started)
            self.waiting.discard(sock)
            del buffer[:]


def one_run(children: Children, args: argparse.Namespace) -> dict[str, float]:
    prefix = f"obitox-test-events-bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    gunicorn = start_gunicorn(children, args, port, prefix)
    state = RedisStateBackend.from_url(args.redis_url, prefix=prefix)
    client = redis.Redis.from_url(args.redis_url)
    streams: Timed | None = None
    try:
        time.sleep(1.0)
        pid = worker_pid(gunicorn.pid)
        # Warm-up: the first streams import and build what every later one shares.
        warm = Timed(port, 20, 20)
        warm.pump(lambda: len(warm.open) == 20, 60)
        warm.close()
        time.sleep(2.0)
        before = rss_kib(pid)
        streams = Timed(port, args.streams, args.owners)
        streams.pump(lambda: len(streams.open) == args.streams, 120)
        time.sleep(1.0)
        after = rss_kib(pid)
        blocked = blocked_clients(client, prefix)
        owners = sorted(set(streams.owner_of.values()))
        cpu_before = cpu_seconds(pid)
        for round_number in range(args.rounds):
            marker = f"bench-{uuid.uuid4().hex}"
            event = orjson.dumps(
                {"type": "upload.progress", "timestamp": "now", "data": {"uploadId": marker}}
            )
            streams.marker = marker.encode()
            streams.waiting = set(streams.buffers)
            streams.started = time.perf_counter()
            state.append_events([(owner, event) for owner in owners])
            streams.pump(lambda: not streams.waiting, 60)
            if round_number == 0:
                streams.latencies.clear()  # the first wakes everything up: not timed
            time.sleep(args.pause)
        cpu = (cpu_seconds(pid) - cpu_before) / args.rounds
        latencies = sorted(streams.latencies)
        return {
            "p50": statistics.median(latencies) * 1e3,
            "p99": latencies[int(len(latencies) * 0.99) - 1] * 1e3,
            "kib_per_stream": (after - before) / args.streams,
            "blocked": blocked,
            "cpu_ms": cpu * 1e3,
        }
    finally:
        if streams is not None:
            streams.close()
        children.stop(gunicorn)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        state.client.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--owners", type=int, default=100)
    parser.add_argument("--worker", choices=["gevent", "gthread"], default="gevent")
    parser.add_argument("--fan-in", type=int, choices=[0, 1], default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.1)
    parser.add_argument(
        "--redis-url", default=os.environ.get("OBITOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"{args.streams} streams over {args.owners} owners, gunicorn -k {args.worker} -w 1, "
        f"{'one reader per process' if args.fan_in else 'one XREAD per stream'}; "
        f"load average {load:.1f} on {os.cpu_count()} CPUs (shared machine)"
    )
    results = []
    with Children("bench-events") as children:
        for _ in range(args.runs):
            results.append(one_run(children, args))
    for run, result in enumerate(results):
        print(
            f"run {run + 1}: p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, "
            f"{result['kib_per_stream']:.1f} KiB RSS per stream, "
            f"{result['blocked']:.0f} blocked Redis clients while idle, "
            f"{result['cpu_ms']:.0f} ms of worker CPU per event round"
        )

    def span(name: str) -> str:
        values = [r[name] for r in results]
        return f"{min(values):.1f}-{max(values):.1f}"

    print(
        f"range over {args.runs} runs: p50 {span('p50')} ms, p99 {span('p99')} ms, "
        f"{span('kib_per_stream')} KiB per stream, {span('blocked')} blocked Redis clients, "
        f"{span('cpu_ms')} ms worker CPU per round"
    )
    p50 = max(r["p50"] for r in results)
    p99 = max(r["p99"] for r in results)
    goal = p50 <= 100 and p99 <= 500
    print(f"goal p50 <= 100 ms and p99 <= 500 ms in every run: {'met' if goal else 'NOT met'}")


if __name__ == "__main__":
    main()
