"""A primary of the real Redis Cluster is killed (SIGKILL) under load: every answer is a
success or ``503 STATE_UNAVAILABLE`` (never a 500), service comes back on its own once
the replica has taken over, and nothing is left half-written (no S3 multipart upload
that no record knows of).

It takes a primary down, so it would fail whatever else runs on the cluster at that
moment: it runs only with ``OBITOX_TEST_CLUSTER_FAILOVER=1`` (``.ci/run`` runs it on its
own, after the suite), and restarts the killed node with ``.ci/redis-cluster.sh``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import BUCKET, UserClient, make_app
from flask import Flask

from flask_obitox.state.redis_cluster import RedisClusterStateBackend

pytestmark = pytest.mark.skipif(
    os.environ.get("OBITOX_TEST_CLUSTER_FAILOVER") != "1",
    reason="kills a cluster primary: set OBITOX_TEST_CLUSTER_FAILOVER=1 and run it alone",
)

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "redis-cluster.sh"
#: Requests each load thread sends at most: the load stops by itself.
MAX_REQUESTS = 400
#: Bounds (in polls of ~0.2 s) on waiting for the cluster to fail over and to heal.
MAX_POLLS = 300


def _base_port(url: str) -> int:
    return int(url.partition("://")[2].split(",")[0].rpartition(":")[2])


def _nodes(port: int) -> dict[str, dict[str, Any]]:
    nodes: dict[str, dict[str, Any]] = redis.Redis(port=port).execute_command("CLUSTER NODES")
    return nodes


def _live_primaries(port: int) -> dict[int, str]:
    """Port -> node id of every primary the node at ``port`` sees alive."""
    return {
        int(address.rpartition(":")[2]): node["node_id"]
        for address, node in _nodes(port).items()
        if "master" in node["flags"] and "fail" not in node["flags"]
    }


def _primary_with_replica(port: int) -> int:
    """The port of a live primary that has a replica attached."""
    replicated = {n["master_id"] for n in _nodes(port).values() if "slave" in n["flags"]}
    return next(p for p, node_id in _live_primaries(port).items() if node_id in replicated)


def _cluster_ok(port: int) -> bool:
    try:
        info = redis.Redis(port=port, socket_timeout=1).cluster("INFO")
    except redis.RedisError:
        return False
    return bool(info.get("cluster_state") == "ok")


def _load(app: Flask, owner: str, stop: threading.Event, seen: list[tuple[str, int]]) -> None:
    """Create single and multipart uploads and read them back, until ``stop``."""
    try:
        _requests(UserClient(app, owner), stop, seen)
    except Exception as error:  # an unhandled error is what a 500 would have been
        seen.append((f"error {type(error).__name__}: {error}", 500))


def _requests(client: UserClient, stop: threading.Event, seen: list[tuple[str, int]]) -> None:
    for i in range(MAX_REQUESTS):
        if stop.is_set():
            return
        if i % 3 == 0:
            spec = {"filename": f"m{i}.png", "contentType": "image/png", "size": 64 * 2**20}
            response = client.post("/multipart", json=spec)
            seen.append(("multipart", response.status_code))
            if response.status_code == 201:
                seen.append((f"s3:{response.json['uploadId']}", 201))
        else:
            spec = {"filename": f"f{i}.png", "contentType": "image/png", "size": 1000}
            response = client.post("/uploads", json=spec)
            seen.append(("single", response.status_code))
            if response.status_code == 201:
                status = client.get(f"/uploads/{response.json['uploadId']}")
                seen.append(("status", status.status_code))


@pytest.fixture
def failover_app(
    s3_server: Any, moto_server: str, cluster_backend: RedisClusterStateBackend, redis_url: str
) -> Flask:
    app, _ = make_app(
        cluster_backend,
        OBITOX_ENDPOINT_URL=moto_server,
        OBITOX_MULTIPART_THRESHOLD=5 * 2**20,
        OBITOX_MAX_OPEN_MULTIPART=0,
        OBITOX_MAX_OPEN_BYTES=0,
    )
    return app


def test_a_killed_primary_gives_503s_then_service_returns(
    failover_app: Flask,
    cluster_backend: RedisClusterStateBackend,
    redis_cluster_url: str,
    s3_server: Any,
) -> None:
    base = _base_port(redis_cluster_url)
    victim = _primary_with_replica(base)
    survivor = next(port for port in range(base, base + 6) if port != victim)
    pid = int(redis.Redis(port=victim).info("server")["process_id"])

    stop = threading.Event()
    seen: list[tuple[str, int]] = []
    threads = [
        threading.Thread(target=_load, args=(failover_app, f"owner-{n}", stop, seen))
        for n in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        while len(seen) < 30 and any(t.is_alive() for t in threads):
            threading.Event().wait(0.05)  # some load before the kill
        before = len(seen)
        os.kill(pid, signal.SIGKILL)
        # The replica takes over on its own (cluster-node-timeout, then an election).
        for _ in range(MAX_POLLS):
            took_over = _cluster_ok(survivor) and victim not in _live_primaries(survivor)
            if took_over and len(seen) > before + 30:
                break
            threading.Event().wait(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        # Bring the killed node back (it rejoins as a replica) for whatever runs next.
        subprocess.run(["bash", str(SCRIPT), "start", str(base)], check=True, timeout=120)

    codes = Counter(code for kind, code in seen if not kind.startswith("s3:"))
    assert set(codes) <= {200, 201, 503}, [kind for kind, code in seen if code == 500][:3]
    assert codes[503] > 0, "the kill was not seen: no request met the missing primary"

    # Service returns by itself: the same app, no restart.
    client = UserClient(failover_app, "owner-after")
    for _ in range(MAX_POLLS):
        response = client.post(
            "/uploads", json={"filename": "a.png", "contentType": "image/png", "size": 10}
        )
        if response.status_code == 201:
            break
        assert response.status_code == 503
        threading.Event().wait(0.2)
    assert response.status_code == 201
    assert client.get(f"/uploads/{response.json['uploadId']}").status_code == 200

    # Nothing half-written: every multipart upload open in S3 belongs to a 201 answer.
    answered = {kind[3:] for kind, _ in seen if kind.startswith("s3:")}
    listed = s3_server.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    owners = {upload["Key"].split("/")[-2] for upload in listed}
    assert owners <= answered, owners - answered
