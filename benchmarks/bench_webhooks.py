"""Webhook deliveries per second, and completion-to-receipt latency, per worker class.

For RQ's forking ``Worker`` (one process forked per job, RQ's default) and
``SimpleWorker`` (jobs in the worker process, this project's default), in one run:

- ``throughput``: 2,000 ``upload-completed`` events are enqueued (by the receivers
  ``init_app`` connects, as a completion does), then one ``flask obitox worker
  --burst`` delivers them to a local receiver; deliveries/s from the first receipt to
  the last (worker start-up excluded);
- ``latency``: with one idle worker running, one event at a time; the time from just
  before the signal is sent to the receiver's receipt of the POST, p50 and p99.

The receiver runs in its own process (HTTP/1.1 keep-alive, answers 204) and stamps
each receipt with ``time.time()``, the same clock as the sender. The events are sent
as ``UploadService`` sends them after a completion; storage (HEAD, ranged GET) is not
part of the figure.

With ``--recovery`` it measures instead how long a delivery whose worker was
SIGKILLed takes to be attempted again, with the default timeout and retry schedule:
once with a second worker running, once with the only worker restarted at once.

The workers run in process groups of their own (``benchmarks/children.py``), their
output in log files. While the benchmark waits for deliveries it watches them and the
receiver: a worker that dies, or one that ends its burst with deliveries missing, stops
the benchmark at once with the worker's last lines of output, and so does a wait with
no delivery for ``SILENCE`` seconds. Every child is stopped when the benchmark ends,
however it ends.

Usage: ``python benchmarks/bench_webhooks.py [--events 2000] [--latency-rounds 200]
[--redis-url redis://127.0.0.1:6379/15] [--recovery]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import statistics
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis
from children import Child, Children
from flask import Flask

from flask_obitox import ObitoX, UploadRecord, signals
from flask_obitox.webhooks import webhook_queue
from flask_obitox.webhooks.events import UPLOAD_COMPLETED, message_id

HERE = Path(__file__).resolve().parent
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: Seconds without a delivery after which a measurement is given up as broken.
SILENCE = 60
#: Seconds deliveries still in flight have to arrive once a burst worker has ended.
AFTER_BURST = 5


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The host app, for this process and for ``flask --app bench_webhooks obitox worker``."""
    app = Flask("bench_webhooks")
    app.config.update(
        OBITOX_BUCKET="bench", OBITOX_STATE_BACKEND="memory://", OBITOX_RATE_LIMITS=""
    )
    app.config.update(config if config is not None else json.loads(os.environ["BENCH_CONFIG"]))
    ObitoX(app)
    return app


# -- the receiver (its own process) ------------------------------------------------------


def _serve(port_pipe: Any, receipts: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            receipts.put((self.headers["webhook-id"], time.time()))
            if self.path == "/hold":  # a receiver that is slow to answer
                time.sleep(20)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_pipe.send(server.server_address[1])
    server.serve_forever()


class Receiver:
    """A webhook receiver in another process; each receipt (webhook-id, time.time())
    comes back on a queue, so waiting for one costs no polling of the receiver."""

    def __init__(self, children: Children) -> None:
        context = multiprocessing.get_context("fork")
        parent, child = context.Pipe()
        self.children = children
        self.receipts: Any = context.Queue()
        self.process = context.Process(target=_serve, args=(child, self.receipts), daemon=True)
        self.process.start()
        self.base = f"http://127.0.0.1:{parent.recv()}"
        self.url = self.base + "/hook"

    def take(
        self, count: int, *, silence: float = SILENCE, worker: Child | None = None
    ) -> list[tuple[str, float]]:
        """The next ``count`` receipts. Stops the benchmark as soon as it is clear they
        will not come: a child failed, the receiver died, ``worker`` (a burst worker)
        ended with receipts missing, or none came for ``silence`` seconds."""
        taken: list[tuple[str, float]] = []
        last = time.monotonic()
        while len(taken) < count:
            try:
                taken.append(self.receipts.get(timeout=0.2))
                last = time.monotonic()
                continue
            except queue.Empty:
                pass
            self.children.check()
            missing = f"only {len(taken)} of {count} deliveries arrived"
            if not self.process.is_alive():
                raise self.children.failure(f"{missing}: the receiver process died")
            quiet = time.monotonic() - last
            if worker is not None and worker.process.poll() is not None and quiet > AFTER_BURST:
                raise self.children.failure(f"{missing}; {worker.report()}")
            if quiet > silence:
                running = f"; {worker.report()}" if worker is not None else ""
                raise self.children.failure(f"{missing}, none for {silence} s{running}")
        return taken

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


# -- the worker (its own process) --------------------------------------------------------


def start_worker(
    children: Children, config: dict[str, Any], worker_class: str, *, burst: bool
) -> Child:
    env = {
        **os.environ,
        "BENCH_CONFIG": json.dumps(config),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "flask",
        "--app",
        "bench_webhooks:create_app",
        "obitox",
        "worker",
    ]
    command += ["--worker-class", worker_class] + (["--burst"] if burst else [])
    return children.start(f"{worker_class} worker", command, env=env, may_exit=burst)


# -- the measurements --------------------------------------------------------------------


def record(upload_id: str) -> UploadRecord:
    now = time.time()
    return UploadRecord(
        upload_id=upload_id,
        owner="bench-user",
        kind="single",
        bucket="bench",
        key=f"uploads/{upload_id}/photo.jpg",
        filename="photo.jpg",
        content_type="image/jpeg",
        size=2_000_000,
        status="completed",
        created_at=now,
        updated_at=now,
        expires_at=now + 3600,
        metadata={"album": "summer"},
        result={"etag": '"0123456789abcdef"', "size": 2_000_000},
    )


def throughput(
    app: Flask, config: dict[str, Any], receiver: Receiver, worker_class: str, events: int
) -> dict[str, float]:
    with app.app_context():
        started = time.perf_counter()
        for _ in range(events):
            signals.upload_completed.send(app, upload=record(uuid.uuid4().hex))
        enqueue_seconds = time.perf_counter() - started
    assert webhook_queue(app).count == events
    worker = start_worker(receiver.children, config, worker_class, burst=True)
    try:
        times = sorted(t for _, t in receiver.take(events, worker=worker))
    finally:
        receiver.children.stop(worker)
    return {
        "deliveries_per_s": (len(times) - 1) / (times[-1] - times[0]),
        "enqueue_per_s": events / enqueue_seconds,
    }


def latency(
    app: Flask, config: dict[str, Any], receiver: Receiver, worker_class: str, rounds: int
) -> dict[str, float]:
    worker = start_worker(receiver.children, config, worker_class, burst=False)
    samples: list[float] = []
    try:
        with app.app_context():
            for round_ in range(-5, rounds):  # 5 rounds of warm-up: start-up, connections
                time.sleep(0.02)  # the worker is idle, blocked on its queue
                upload = record(uuid.uuid4().hex)
                sent = time.time()
                signals.upload_completed.send(app, upload=upload)
                [(webhook_id, received)] = receiver.take(1)
                # The webhook-id of an upload's completion derives from its upload id.
                assert webhook_id == message_id(UPLOAD_COMPLETED, upload.upload_id)
                if round_ >= 0:
                    samples.append((received - sent) * 1000)
    finally:
        receiver.children.stop(worker)
    samples.sort()
    return {
        "p50_ms": statistics.median(samples),
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    }


def recovery(
    app: Flask, config: dict[str, Any], receiver: Receiver, client: redis.Redis, *, second: bool
) -> tuple[float, str]:
    """Seconds from the SIGKILL of the worker that is delivering to the next attempt,
    and which case it was."""
    from rq import Worker

    queue = webhook_queue(app)
    children = receiver.children
    workers = [start_worker(children, config, "simple", burst=False)]
    if second:
        time.sleep(3)  # the first worker takes the scheduler lock and queues first
        workers.append(start_worker(children, config, "simple", burst=False))
    try:
        time.sleep(5)
        with app.app_context():
            if second:
                # One quick delivery: the worker that takes it queues up behind the other.
                signals.upload_aborted.send(app, upload=record(uuid.uuid4().hex))
                receiver.take(1)
                time.sleep(1)
            signals.upload_completed.send(app, upload=record(uuid.uuid4().hex))
        receiver.take(1)  # the held delivery has arrived
        busy = [w for w in Worker.all(queue=queue) if w.get_current_job_id()]
        victim = next(child for child in workers if child.pid == busy[0].pid)
        lock = client.get(f"rq:scheduler-lock:{queue.name}")
        scheduler_pid = client.hget(f"rq:scheduler:{lock.decode()}", "pid") if lock else None
        held_lock = scheduler_pid is not None and os.getpgid(int(scheduler_pid)) == victim.pid
        victim.kill()
        killed_at = time.time()
        if not second:
            workers.append(start_worker(children, config, "simple", burst=False))
        # The next attempt waits for the job's timeout and the first retry delay.
        [(_, again)] = receiver.take(1, silence=300)
    finally:
        for child in workers:
            children.stop(child)
    case = (
        "second worker running"
        if second and not held_lock
        else "second worker running, the killed one ran the scheduler"
        if second
        else "only worker, restarted at once"
    )
    return again - killed_at, case


def cleanup(app: Flask, client: redis.Redis) -> None:
    """Delete this run's jobs and registries (other users of the database are left alone)."""
    queue = webhook_queue(app)
    ids = set(queue.get_job_ids())
    for registry in (
        queue.finished_job_registry,
        queue.failed_job_registry,
        queue.started_job_registry,
    ):
        ids.update(registry.get_job_ids(cleanup=False))
    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.delete(f"rq:job:{job_id}", f"rq:results:{job_id}", f"rq:executions:{job_id}")
        pipe.execute()
    workers = [name.decode() for name in client.smembers(f"rq:workers:{queue.name}")]
    if workers:
        client.srem("rq:workers", *workers)
    keys = list(client.scan_iter(match=f"rq:*{queue.name}*", count=1000))
    if keys:
        client.delete(*keys)
    client.srem("rq:queues", f"rq:queue:{queue.name}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--latency-rounds", type=int, default=200)
    parser.add_argument("--recovery", action="store_true", help="measure SIGKILL recovery")
    parser.add_argument(
        "--redis-url", default=os.environ.get("OBITOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    args = parser.parse_args()

    with Children("bench-webhooks") as children:
        run(args, children)


def run(args: argparse.Namespace, children: Children) -> None:
    receiver = Receiver(children)
    client = redis.Redis.from_url(args.redis_url)
    if args.recovery:
        try:
            for second in (True, False):
                queue = f"bench-recovery-{uuid.uuid4().hex[:8]}"
                config = {
                    "OBITOX_RQ_REDIS_URL": args.redis_url,
                    "OBITOX_RQ_QUEUE": queue,
                    "OBITOX_WEBHOOK_ALLOW_PRIVATE": True,
                    "OBITOX_WEBHOOKS": [
                        {
                            "url": receiver.base + "/hold",
                            "secret": SECRET,
                            "events": ["upload.completed"],
                        },
                        {"url": receiver.url, "secret": SECRET, "events": ["upload.aborted"]},
                    ],
                }
                app = create_app(config)
                try:
                    seconds, case = recovery(app, config, receiver, client, second=second)
                finally:
                    cleanup(app, client)
                print(f"next attempt {seconds:.1f} s after the SIGKILL ({case})")
        finally:
            receiver.stop()
        return
    results: dict[str, dict[str, float]] = {}
    try:
        for worker_class in ("fork", "simple"):
            queue = f"bench-webhooks-{uuid.uuid4().hex[:8]}"
            config = {
                "OBITOX_RQ_REDIS_URL": args.redis_url,
                "OBITOX_RQ_QUEUE": queue,
                "OBITOX_WEBHOOK_ALLOW_PRIVATE": True,  # the receiver is on loopback
                "OBITOX_WEBHOOKS": [{"url": receiver.url, "secret": SECRET}],
            }
            app = create_app(config)
            try:
                results[worker_class] = {
                    **throughput(app, config, receiver, worker_class, args.events),
                    **latency(app, config, receiver, worker_class, args.latency_rounds),
                }
            finally:
                cleanup(app, client)
    finally:
        receiver.stop()

    ping = statistics.median(_ping(client) for _ in range(200)) * 1e6
    print(
        f"Redis PING round trip: {ping:.0f} µs; {args.events} events, {args.latency_rounds} latency rounds"
    )
    print(f"{'worker class':<14}{'deliveries/s':>14}{'p50 ms':>10}{'p99 ms':>10}{'enqueue/s':>12}")
    names = {"fork": "Worker (fork)", "simple": "SimpleWorker"}
    for worker_class, figures in results.items():
        print(
            f"{names[worker_class]:<14}{figures['deliveries_per_s']:>14.0f}{figures['p50_ms']:>10.1f}"
            f"{figures['p99_ms']:>10.1f}{figures['enqueue_per_s']:>12.0f}"
        )
    fork, simple = results["fork"], results["simple"]
    print(
        f"SimpleWorker vs Worker: {simple['deliveries_per_s'] / fork['deliveries_per_s']:.1f}x the deliveries/s, "
        f"{fork['p50_ms'] / simple['p50_ms']:.1f}x lower p50 latency"
    )


def _ping(client: redis.Redis) -> float:
    started = time.perf_counter()
    client.ping()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
