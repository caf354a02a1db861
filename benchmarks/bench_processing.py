"""Processing after upload: a no-op processor's jobs/s per worker, and the latency from
an upload's completion to ``upload.ready``, each against bare RQ in the same run.

- ``throughput``: N uploads completed with one no-op processor each (records written
  straight to the state Redis, jobs queued in batches as a completion queues them),
  then one ``flask obitox worker --burst`` (``SimpleWorker``) runs them: jobs/s from
  the first job's start to the last one's end (worker start-up excluded). The naive
  way: the same worker running N bare RQ jobs of a no-op function (no record claimed,
  no outcome recorded). The ratio is what the bookkeeping (claim, result, ready: two
  read-modify-writes of the record) costs per job.
- ``latency``: one idle worker running; one upload at a time is completed through the
  app (``POST /uploads/<id>/complete``: HEAD of the object, the status race, the plan of
  its processors, the one-round-trip enqueue when the request ends) and the record is
  polled every millisecond until ``ready``; p50 and p90. The naive way: ``enqueue`` of a
  bare no-op job, polled until it finished.

Storage is moto in this process (``mock_aws``); the no-op processor never reads the
object, so the figures are the queue's and the state's, not storage's.

Usage: ``python benchmarks/bench_processing.py [--jobs 500] [--latency-rounds 50]
[--redis-url redis://127.0.0.1:6379/15]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from children import Children
from flask import Flask, request
from rq import Queue
from rq.job import Job

BENCHMARKS = Path(__file__).resolve().parent
CONFIG_VARIABLE = "BENCH_PROCESSING_CONFIG"
BUCKET = "obitox-bench"
#: The naive jobs' ids (random), for the cleanup.
NAIVE_IDS: list[str] = []


def noop(*args: Any) -> None:
    """The naive job: nothing at all."""


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app of the benchmark, built the same way here and in its workers."""
    from flask_obitox import ObitoX
    from flask_obitox.state import RedisStateBackend

    if config is None:
        config = json.loads(os.environ[CONFIG_VARIABLE])
    app = Flask("bench_processing")
    app.config.update(
        OBITOX_BUCKET=BUCKET,
        OBITOX_REGION="us-east-1",
        OBITOX_AWS_ACCESS_KEY_ID="testing",
        OBITOX_AWS_SECRET_ACCESS_KEY="testing",
        OBITOX_RATE_LIMITS="",
        OBITOX_VERIFY_CONTENT=False,
        **{key: value for key, value in config.items() if key.startswith("OBITOX_")},
    )
    obitox = ObitoX(state=RedisStateBackend.from_url(config["redis_url"], prefix=config["prefix"]))
    obitox.identity_loader(lambda: request.headers.get("X-User"))
    obitox.processor("noop", retries=0)(lambda ctx: None)
    obitox.init_app(app)
    return app


def _worker(children: Children, config: dict[str, Any], queue: str, *, burst: bool) -> Any:
    env = {
        **os.environ,
        CONFIG_VARIABLE: json.dumps(config),
        "PYTHONPATH": os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "flask", "--app", "bench_processing:create_app"]
    command += ["obitox", "worker", "--queue", queue, "--maintenance-interval", "60"]
    return children.start(
        f"worker-{queue}",
        [*command, *(["--burst"] if burst else [])],
        env=env,
        cwd=BENCHMARKS,
        may_exit=burst,
    )


def _jobs_per_second(connection: redis.Redis, ids: list[str]) -> float:
    jobs = [job for job in Job.fetch_many(ids, connection=connection) if job is not None]
    assert len(jobs) == len(ids), f"{len(ids) - len(jobs)} jobs missing"
    started = min(job.started_at for job in jobs if job.started_at)
    ended = max(job.ended_at for job in jobs if job.ended_at)
    return len(jobs) / (ended - started).total_seconds()


def _wait_burst(child: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while child.process.poll() is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"the burst worker did not finish in {timeout} s")
        time.sleep(0.05)


def throughput(
    app: Flask, children: Children, config: dict[str, Any], count: int
) -> tuple[float, float]:
    from flask_obitox.domain.processors import processing_plan
    from flask_obitox.state import UploadRecord

    ext = app.extensions["obitox"]
    queue = ext.processing
    now = time.time()
    records = []
    for index in range(count):
        record = UploadRecord(
            upload_id=f"bench-{uuid.uuid4().hex}",
            owner="bench",
            kind="single",
            bucket=BUCKET,
            key=f"uploads/bench/{index}.bin",
            filename=f"{index}.bin",
            content_type="application/octet-stream",
            size=1,
            status="completed",
            created_at=now,
            updated_at=now,
            expires_at=now + 3600,
        )
        record.processing = processing_plan(ext.hooks.processors, record, ext.settings, now)
        records.append(record)
    ext.state.create_many(records, ttl=3600)
    jobs = [queue._job(record, "noop") for record in records]
    for start in range(0, count, 100):
        queue.save(jobs[start : start + 100])
    ours = _worker(children, config, config["OBITOX_PROCESSING_QUEUE"], burst=True)
    _wait_burst(ours)
    done = [
        r
        for r in ext.state.get_many([r.upload_id for r in records])
        if r and r.processing["noop"]["status"] == "completed"
    ]
    assert len(done) == count, f"only {len(done)} of {count} processed"
    ours_rate = _jobs_per_second(queue.webhooks.connection, [job.id for job in jobs])

    naive_queue = Queue(config["naive_queue"], connection=queue.webhooks.connection)
    # By name: run as a script, this module is __main__, which the worker cannot import.
    naive_ids = [naive_queue.enqueue("bench_processing.noop", index).id for index in range(count)]
    NAIVE_IDS.extend(naive_ids)
    naive = _worker(children, config, config["naive_queue"], burst=True)
    _wait_burst(naive)
    naive_rate = _jobs_per_second(queue.webhooks.connection, naive_ids)
    return ours_rate, naive_rate


def latency(
    app: Flask, children: Children, config: dict[str, Any], rounds: int
) -> tuple[list[float], list[float]]:
    import boto3

    ext = app.extensions["obitox"]
    s3 = boto3.client("s3", region_name="us-east-1")
    client = app.test_client()
    worker = _worker(children, config, config["OBITOX_PROCESSING_QUEUE"], burst=False)
    naive_worker = _worker(children, config, config["naive_queue"], burst=False)
    time.sleep(3)  # both idle, waiting on their queues
    assert worker.process.poll() is None, "the processing worker ended"
    assert naive_worker.process.poll() is None, "the bare worker ended"
    ours: list[float] = []
    for _ in range(rounds):
        signed = client.post(
            "/obitox/uploads",
            json={"filename": "f.bin", "contentType": "application/octet-stream", "size": 1},
            headers={"X-User": "bench"},
        ).json
        s3.put_object(Bucket=BUCKET, Key=signed["key"], Body=b"x")
        started = time.perf_counter()
        done = client.post(
            f"/obitox/uploads/{signed['uploadId']}/complete", json={}, headers={"X-User": "bench"}
        )
        assert done.status_code == 200, done.json
        deadline = time.monotonic() + 30
        while True:
            record = ext.state.get(signed["uploadId"])
            if record.processing["noop"]["status"] == "completed":
                break
            if time.monotonic() > deadline:
                raise SystemExit("upload.ready did not come within 30 s")
            time.sleep(0.001)
        ours.append(time.perf_counter() - started)
    naive_queue = Queue(config["naive_queue"], connection=ext.processing.webhooks.connection)
    naive: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        job = naive_queue.enqueue("bench_processing.noop")
        NAIVE_IDS.append(job.id)
        while job.get_status(refresh=True) != "finished":
            if time.perf_counter() - started > 30:
                raise SystemExit("a bare job did not finish within 30 s")
            time.sleep(0.001)
        naive.append(time.perf_counter() - started)
    return ours, naive


def _cleanup(redis_url: str, config: dict[str, Any]) -> None:
    """Delete every key this run wrote: its state, its queues, their registries, jobs
    and workers (the Redis is shared: nothing else)."""
    client = redis.Redis.from_url(redis_url)
    names = (config["OBITOX_PROCESSING_QUEUE"], config["OBITOX_RQ_QUEUE"], config["naive_queue"])
    ids = set(NAIVE_IDS)
    for name in names:
        queue = Queue(name, connection=client)
        ids.update(queue.get_job_ids())
        for registry in (
            queue.started_job_registry,
            queue.finished_job_registry,
            queue.failed_job_registry,
            queue.scheduled_job_registry,
        ):
            ids.update(registry.get_job_ids(cleanup=False))
        for worker in client.smembers(f"rq:workers:{name}"):
            client.delete(f"rq:worker:{worker.decode()}")
            client.srem("rq:workers", worker)
        client.srem("rq:queues", f"rq:queue:{name}")
    keys = [key for job_id in ids for key in (f"rq:job:{job_id}", f"rq:results:{job_id}")]
    for pattern in (f"{config['prefix']}*", f"rq:*{config['prefix']}*"):
        keys += [key.decode() for key in client.scan_iter(match=pattern, count=1000)]
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--latency-rounds", type=int, default=50)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("OBITOX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    args = parser.parse_args()
    from moto import mock_aws

    run = uuid.uuid4().hex[:10]
    config = {
        "redis_url": args.redis_url,
        "prefix": f"obitox-test-processing-bench-{run}",
        "OBITOX_RQ_REDIS_URL": args.redis_url,
        "OBITOX_RQ_QUEUE": f"obitox-test-processing-bench-{run}-hooks",
        "OBITOX_PROCESSING_QUEUE": f"obitox-test-processing-bench-{run}-work",
        "naive_queue": f"obitox-test-processing-bench-{run}-naive",
    }
    try:
        with mock_aws(), Children("bench-processing") as children:
            import boto3

            boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
            app = create_app(config)
            ours_rate, naive_rate = throughput(app, children, config, args.jobs)
            print(f"throughput, one SimpleWorker, {args.jobs} jobs:")
            print(f"  no-op processor (claim, run, record, ready): {ours_rate:8.0f} jobs/s")
            print(f"  bare RQ job of a no-op function:            {naive_rate:8.0f} jobs/s")
            print(f"  ratio bare / processor: {naive_rate / ours_rate:.2f}x")
            ours, naive = latency(app, children, config, args.latency_rounds)

            def pct(values: list[float], q: int) -> float:
                return (
                    statistics.quantiles(values, n=100)[q - 1] * 1000
                    if len(values) > 1
                    else values[0] * 1000
                )

            print(f"latency, {args.latency_rounds} rounds, one idle worker:")
            print(
                f"  complete -> upload ready: p50 {pct(ours, 50):6.1f} ms, p90 {pct(ours, 90):6.1f} ms"
            )
            print(
                f"  enqueue -> bare job done: p50 {pct(naive, 50):6.1f} ms, p90 {pct(naive, 90):6.1f} ms"
            )
            print(f"  ratio p50 processor / bare: {pct(ours, 50) / pct(naive, 50):.2f}x")
    finally:
        _cleanup(args.redis_url, config)


if __name__ == "__main__":
    main()
