"""Fixtures: apps, clients and the real services behind them.

- S3 is moto: ``mock_aws`` for in-process tests, a ``ThreadedMotoServer`` on
  127.0.0.1 for end-to-end tests that PUT real bytes to signed URLs.
- Redis is a real server. With ``OBITOX_TEST_REDIS_URL`` set (CI), a Redis that does
  not answer fails the tests that need it; without it, they skip.
- A Redis Cluster (``.ci/redis-cluster.sh start``) is used when
  ``OBITOX_TEST_REDIS_CLUSTER_URL`` names one (``redis+cluster://127.0.0.1:7100``): the
  state contract suites and the end-to-end flows then run against it too, and a
  cluster that does not answer fails them. Without it, the cluster cases skip.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
from flask import Flask, request
from moto import mock_aws
from moto.server import ThreadedMotoServer

from flask_obitox import MemoryStateBackend, ObitoX, RedisStateBackend, signals
from flask_obitox.state.redis_cluster import RedisClusterStateBackend, cluster_client

BUCKET = "obitox-test"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never let a test find real credentials or talk to real AWS.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# -- Redis ---------------------------------------------------------------------------


def _redis_url() -> str | None:
    """The test Redis URL, ``None`` to skip; fails when CI promised a Redis that is down."""
    url = os.environ.get("OBITOX_TEST_REDIS_URL")
    candidate = url or "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(candidate, socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        if url:
            pytest.fail(f"OBITOX_TEST_REDIS_URL={url} is set but Redis does not answer: {error}")
        return None
    return candidate


def pytest_report_header() -> str:
    url = os.environ.get("OBITOX_TEST_REDIS_URL")
    where = url or "redis://127.0.0.1:6379/15 (set OBITOX_TEST_REDIS_URL to choose)"
    cluster = os.environ.get(CLUSTER_URL_ENV) or f"none (set {CLUSTER_URL_ENV})"
    return f"obitox: Redis tests use {where}, under key prefixes of their own; cluster: {cluster}"


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _redis_url()
    if url is None:
        pytest.skip("no Redis on 127.0.0.1:6379 (set OBITOX_TEST_REDIS_URL to require one)")
    return url


@pytest.fixture
def redis_backend(redis_url: str) -> Iterator[RedisStateBackend]:
    """A Redis backend under a key prefix of its own, cleaned up afterwards."""
    prefix = f"obitox-test-{uuid.uuid4().hex[:12]}"
    backend = RedisStateBackend.from_url(redis_url, prefix=prefix)
    yield backend
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


CLUSTER_URL_ENV = "OBITOX_TEST_REDIS_CLUSTER_URL"


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """``OBITOX_TEST_REDIS_CLUSTER_URL``; skips without it, fails when it does not answer."""
    url = os.environ.get(CLUSTER_URL_ENV)
    if not url:
        pytest.skip(f"no Redis Cluster ({CLUSTER_URL_ENV} unset; .ci/redis-cluster.sh start)")
    try:
        client = cluster_client("redis://" + url.partition("://")[2])
        state = client.cluster_info().get("cluster_state")
        client.close()
    except Exception as error:  # any failure to reach the promised cluster
        pytest.fail(f"{CLUSTER_URL_ENV}={url} is set but the cluster does not answer: {error}")
    if state != "ok":
        pytest.fail(f"{CLUSTER_URL_ENV}={url}: cluster_state is {state}, not ok")
    return url


def delete_cluster_keys(url: str, prefix: str) -> None:
    """Delete the keys under ``prefix`` on every primary of the cluster at ``url``."""
    client = cluster_client("redis://" + url.partition("://")[2])
    try:
        for node in client.get_primaries():
            connection = client.get_redis_connection(node)
            keys = list(connection.scan_iter(match=f"{prefix}*", count=1000))
            for key in keys:
                connection.delete(key)
    finally:
        client.close()


@pytest.fixture
def cluster_backend(redis_cluster_url: str) -> Iterator[RedisClusterStateBackend]:
    """A Redis Cluster backend under a key prefix of its own, cleaned up afterwards."""
    prefix = f"obitox-test-cluster-{uuid.uuid4().hex[:12]}"
    backend = RedisClusterStateBackend.from_url(redis_cluster_url, prefix=prefix)
    yield backend
    backend.close()
    delete_cluster_keys(redis_cluster_url, prefix)


@pytest.fixture(params=["redis", "cluster"])
def e2e_state(request: pytest.FixtureRequest) -> RedisStateBackend:
    """The Redis state of the end-to-end flows: standalone, then (when
    ``OBITOX_TEST_REDIS_CLUSTER_URL`` names one) a Redis Cluster."""
    backend: RedisStateBackend = request.getfixturevalue(f"{request.param}_backend")
    return backend


# -- S3 ------------------------------------------------------------------------------


@pytest.fixture
def s3() -> Iterator[Any]:
    """In-process moto with the test bucket; yields a boto3 client on it."""
    with mock_aws():
        client = boto3.client("s3", region_name=REGION, **CREDENTIALS)
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real HTTP S3 (moto) on 127.0.0.1; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_server(moto_server: str) -> Iterator[Any]:
    """A fresh bucket on the moto server; yields a boto3 client on it."""
    client = boto3.client("s3", region_name=REGION, endpoint_url=moto_server, **CREDENTIALS)
    client.create_bucket(Bucket=BUCKET)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


# -- apps ----------------------------------------------------------------------------


def make_app(state: Any = None, **config: Any) -> tuple[Flask, ObitoX]:
    """A host app whose callers name themselves in the ``X-User`` header."""
    app = Flask("obitox_test_app")
    app.config.update(
        TESTING=True,
        OBITOX_BUCKET=BUCKET,
        OBITOX_REGION=REGION,
        OBITOX_AWS_ACCESS_KEY_ID="testing",
        OBITOX_AWS_SECRET_ACCESS_KEY="testing",
        OBITOX_STATE_BACKEND="memory://",
        # Rate limits count per owner across requests, and most tests are "alice": on
        # only where a test turns them on (tests/test_rate_limits.py).
        OBITOX_RATE_LIMITS="",
    )
    app.config.update(config)
    obitox = ObitoX(state=state)

    @obitox.identity_loader
    def current_owner() -> str | None:
        return request.headers.get("X-User")

    obitox.init_app(app)
    return app, obitox


@pytest.fixture
def config() -> dict[str, Any]:
    """Extra app config; override in a test module to change it."""
    return {}


@pytest.fixture
def obitox_app(s3: Any, config: dict[str, Any]) -> tuple[Flask, ObitoX]:
    return make_app(MemoryStateBackend(), **config)


@pytest.fixture
def app(obitox_app: tuple[Flask, ObitoX]) -> Flask:
    return obitox_app[0]


@pytest.fixture
def obitox(obitox_app: tuple[Flask, ObitoX]) -> ObitoX:
    return obitox_app[1]


class UserClient:
    """A test client that speaks as one user."""

    def __init__(self, app: Flask, user: str | None) -> None:
        self._client = app.test_client()
        self.user = user

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        out = {"X-User": self.user} if self.user else {}
        return {**out, **(headers or {})}

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        """POST as JSON; with neither ``json`` nor ``data``, an empty JSON object."""
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        if json is None and "data" not in kwargs:
            json = {}
        return self._client.post(f"/obitox{path}", json=json, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        return self._client.get(f"/obitox{path}", **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        kwargs["headers"] = self._headers(kwargs.get("headers"))
        return self._client.delete(f"/obitox{path}", **kwargs)


@pytest.fixture
def client(app: Flask) -> UserClient:
    return UserClient(app, "alice")


@pytest.fixture
def other_client(app: Flask) -> UserClient:
    return UserClient(app, "mallory")


def file_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"filename": "photo.png", "contentType": "image/png", "size": 1024}
    spec.update(overrides)
    return spec


# -- end-to-end modules (each defines an ``e2e_app`` fixture) -----------------------


@pytest.fixture
def alice(e2e_app: Flask) -> UserClient:
    return UserClient(e2e_app, "alice")


@pytest.fixture
def mallory(e2e_app: Flask) -> UserClient:
    return UserClient(e2e_app, "mallory")


@pytest.fixture
def events(e2e_app: Flask) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every signal ``e2e_app`` sends, as (python name, keyword arguments)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()
    receivers = []
    for name in signals.__all__:
        signal = getattr(signals, name)

        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            with lock:
                seen.append((_name, kwargs))

        signal.connect(receiver, sender=e2e_app)
        receivers.append((signal, receiver))
    yield seen
    for signal, receiver in receivers:
        signal.disconnect(receiver)


# -- webhook modules: a receiver on 127.0.0.1 and an RQ queue of the test's own -------


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Any]:
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def receiver(receiver_server: Any) -> Iterator[Any]:
    from webhook_support import Receiver

    receiver_server.clear()
    yield Receiver(receiver_server)
    receiver_server.clear()


@pytest.fixture
def queue_name(redis_url: str) -> Iterator[str]:
    """An RQ queue name of this test's own; its keys are deleted afterwards."""
    from webhook_support import delete_rq_keys

    name = f"obitox-test-rq-{uuid.uuid4().hex[:10]}"
    yield name
    delete_rq_keys(redis.Redis.from_url(redis_url), name)
