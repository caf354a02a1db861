"""The Redis Cluster backend under load: round trips per route, and how evenly the
primaries share the work, against the naive way (one expiry sorted set: a hot key).

1. **Round trips per route** (in-process, Flask's test client, counted at the socket:
   each is one packet to one node): single create, batch of 100, status, complete,
   listing, multipart start; and a batch of 100 as ``create_many`` against 100
   ``create`` calls (the naive way).
2. **Spread** (``--runs`` times): gunicorn with 3 worker processes serves
   ``cluster_app.py``; client threads create single uploads and batches of 10, read
   them, PUT their bytes to moto and complete them. Printed: how many requests each
   process served, the ``INFO commandstats`` delta of every primary (client commands
   only: replication and cluster bus chatter left out), and the busiest primary against
   the mean; the same load on the naive layout (``BENCH_NAIVE_EXPIRY=1``) in the same
   run.

Usage: ``python benchmarks/bench_cluster.py [--runs 3] [--requests 150]``; the cluster is
``OBITOX_BENCH_CLUSTER_URL`` (default ``redis+cluster://127.0.0.1:7100``, see
``.ci/redis-cluster.sh``), RQ's Redis ``OBITOX_BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/15``). Keys go under a prefix of the run's own and are deleted.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import requests
from moto.server import ThreadedMotoServer
from redis.connection import Connection

from flask_obitox.state import UploadRecord
from flask_obitox.state.redis_cluster import cluster_client

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUCKET = "obitox-bench"
#: Commands that are not the app's: replication, the cluster bus, health checks.
NOT_THE_APPS = {"replconf", "ping", "cluster", "info", "command", "client", "hello", "psync"}
#: Callers the load spreads over: an owner's listings live on one slot, so a handful
#: of owners would measure where their tags happen to fall, not the layout.
OWNERS = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def png(size: int) -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\0" * (size - 8)


def spec(i: int, size: int = 2048) -> dict[str, Any]:
    return {"filename": f"photo {i}.png", "contentType": "image/png", "size": size}


def records(count: int) -> list[UploadRecord]:
    now = time.time()
    return [
        UploadRecord(
            upload_id=uuid.uuid4().hex,
            owner=f"owner-{i % OWNERS}",
            kind="single",
            bucket=BUCKET,
            key=f"bench/{uuid.uuid4().hex}.png",
            filename="photo.png",
            content_type="image/png",
            size=2048,
            status="pending",
            created_at=now,
            updated_at=now,
            expires_at=now + 600,
        )
        for i in range(count)
    ]


# -- round trips per route -----------------------------------------------------------------


class Trips:
    def __init__(self) -> None:
        self.packets: list[int] = []

    @contextmanager
    def counting(self) -> Iterator[Trips]:
        original: Any = Connection.send_packed_command
        packets = self.packets

        def spy(connection: Connection, command: Any, check_health: bool = True) -> None:
            packets.append(int(getattr(connection, "port", 0)))
            original(connection, command, check_health)

        packets.clear()
        Connection.send_packed_command = spy  # type: ignore[method-assign]
        try:
            yield self
        finally:
            Connection.send_packed_command = original  # type: ignore[method-assign]


def round_trips(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(HERE))
    import cluster_app

    app, backend = cluster_app.app, cluster_app.obitox
    state = app.extensions["obitox"].state
    client = app.test_client()
    headers = {"X-User": "owner-rt"}
    state.ping()  # connect to every primary first: handshakes are not the routes'
    client.post("/obitox/uploads", json=spec(0), headers=headers)  # load the scripts
    trips = Trips()
    rows: list[tuple[str, list[int]]] = []

    def measure(name: str, call: Any) -> Any:
        with trips.counting():
            answer = call()
        rows.append((name, list(trips.packets)))
        return answer

    one = measure(
        "POST /uploads", lambda: client.post("/obitox/uploads", json=spec(1), headers=headers)
    )
    upload_id = one.json["uploadId"]
    files = [spec(i) for i in range(100)]
    measure(
        "POST /uploads/batch (100 files)",
        lambda: client.post("/obitox/uploads/batch", json={"files": files}, headers=headers),
    )
    measure(
        "GET /uploads/<id>", lambda: client.get(f"/obitox/uploads/{upload_id}", headers=headers)
    )
    requests.put(one.json["url"], data=png(2048), headers=one.json["headers"], timeout=10)
    done = measure(
        "POST /uploads/<id>/complete",
        lambda: client.post(f"/obitox/uploads/{upload_id}/complete", json={}, headers=headers),
    )
    assert done.status_code == 200, done.json
    measure("list_uploads (a page; no route yet)", lambda: state.list_uploads("owner-rt"))
    measure(
        "POST /multipart",
        lambda: client.post("/obitox/multipart", json=spec(2, 200 * 2**20), headers=headers),
    )
    print("round trips per request (one packet to one node each; per node in parallel):")
    for name, packets in rows:
        print(f"  {name:34s} {len(packets):3d} round trips to {len(set(packets))} node(s)")

    batch = records(100)
    with trips.counting():
        state.create_many(batch, ttl=600)
    ours = len(trips.packets)
    with trips.counting():
        for record in records(100):
            state.create(record, ttl=600)
    naive = len(trips.packets)
    print(
        f"batch of 100 records: create_many {ours} round trips, 100 x create {naive}: "
        f"{naive / ours:.0f}x fewer"
    )
    del backend


# -- spread over processes and primaries ----------------------------------------------------


def commandstats(url: str) -> dict[str, int]:
    client = cluster_client("redis://" + url.partition("://")[2])
    try:
        calls: dict[str, int] = {}
        for node in client.get_primaries():
            stats = client.get_redis_connection(node).info("commandstats")
            calls[node.name] = sum(
                v["calls"]
                for k, v in stats.items()
                if k.removeprefix("cmdstat_").split("|")[0] not in NOT_THE_APPS
            )
        return calls
    finally:
        client.close()


def delete_keys(url: str, prefix: str) -> None:
    client = cluster_client("redis://" + url.partition("://")[2])
    try:
        for node in client.get_primaries():
            connection = client.get_redis_connection(node)
            for key in connection.scan_iter(match=f"{prefix}*", count=1000):
                connection.delete(key)
    finally:
        client.close()


def load(
    base: str, per_thread: int, thread: int, served: Counter[str], codes: Counter[int]
) -> None:
    session = requests.Session()
    for i in range(per_thread):
        headers = {"X-User": f"owner-{(thread * per_thread + i) % OWNERS}"}
        if i % 5 == 4:
            files = [spec(n) for n in range(10)]
            answer = session.post(f"{base}/uploads/batch", json={"files": files}, headers=headers)
            codes[answer.status_code] += 1
            served[answer.headers.get("X-Worker-Pid", "?")] += 1
            continue
        created = session.post(f"{base}/uploads", json=spec(i), headers=headers)
        codes[created.status_code] += 1
        served[created.headers.get("X-Worker-Pid", "?")] += 1
        if created.status_code != 201:
            continue
        body = created.json()
        status = session.get(f"{base}/uploads/{body['uploadId']}", headers=headers)
        codes[status.status_code] += 1
        served[status.headers.get("X-Worker-Pid", "?")] += 1
        requests.put(body["url"], data=png(2048), headers=body["headers"], timeout=10)
        done = session.post(f"{base}/uploads/{body['uploadId']}/complete", json={}, headers=headers)
        codes[done.status_code] += 1
        served[done.headers.get("X-Worker-Pid", "?")] += 1


def spread(env: dict[str, str], cluster: str, requests_per_thread: int, naive: bool) -> float:
    port = free_port()
    prefix = f"obitox-test-cluster-bench-{uuid.uuid4().hex[:8]}"
    child_env = {
        **os.environ,
        **env,
        "BENCH_PREFIX": prefix,
        "BENCH_NAIVE_EXPIRY": "1" if naive else "0",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}", "cluster_app:app"],
        cwd=HERE,
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/obitox"
    try:
        for _ in range(200):  # gunicorn's workers start
            try:
                requests.get(f"{base}/uploads/none", headers={"X-User": "x"}, timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.1)
        before = commandstats(cluster)
        served: Counter[str] = Counter()
        codes: Counter[int] = Counter()
        threads = [
            threading.Thread(target=load, args=(base, requests_per_thread, n, served, codes))
            for n in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = commandstats(cluster)
    finally:
        server.terminate()
        server.wait(timeout=30)
        delete_keys(cluster, prefix)
    deltas = {node: after[node] - before.get(node, 0) for node in after}
    mean = sum(deltas.values()) / len(deltas)
    busiest = max(deltas.values()) / mean
    layout = "naive: one expiry set" if naive else "sharded expiry index"
    print(f"  {layout}: {sum(served.values())} requests, answers {dict(sorted(codes.items()))}")
    print(f"    served per process: {sorted(served.values(), reverse=True)}")
    per_node = ", ".join(f"{node} {delta}" for node, delta in sorted(deltas.items()))
    print(f"    commands per primary: {per_node}; busiest / mean = {busiest:.2f}")
    return busiest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=150, help="per client thread (6)")
    args = parser.parse_args()
    cluster = os.environ.get("OBITOX_BENCH_CLUSTER_URL", "redis+cluster://127.0.0.1:7100")
    rq_redis = os.environ.get("OBITOX_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, moto_port = moto.get_host_and_port()
    s3_url = f"http://{host}:{moto_port}"
    boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=s3_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).create_bucket(Bucket=BUCKET)
    env = {"BENCH_S3": s3_url, "BENCH_CLUSTER": cluster, "BENCH_REDIS": rq_redis}
    prefix = f"obitox-test-cluster-bench-{uuid.uuid4().hex[:8]}"
    try:
        round_trips({**env, "BENCH_PREFIX": prefix})
    finally:
        delete_keys(cluster, prefix)
    ours: list[float] = []
    naive: list[float] = []
    for run in range(args.runs):
        print(f"run {run + 1}: gunicorn -w 3, 6 client threads x {args.requests} iterations")
        ours.append(spread(env, cluster, args.requests, naive=False))
        naive.append(spread(env, cluster, args.requests, naive=True))
    print(
        f"busiest primary / mean over {args.runs} run(s): sharded {min(ours):.2f}-{max(ours):.2f}, "
        f"naive one expiry set {min(naive):.2f}-{max(naive):.2f}"
    )
    moto.stop()


if __name__ == "__main__":
    main()
