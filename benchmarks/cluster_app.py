"""The app ``bench_cluster.py`` serves under gunicorn: state on the Redis Cluster
``BENCH_CLUSTER`` under the key prefix ``BENCH_PREFIX``, RQ (and nothing else) on
``BENCH_REDIS``, S3 on moto (``BENCH_S3``). ``BENCH_NAIVE_EXPIRY=1`` keeps the expiry
index in one sorted set, as the standalone layout does (the naive way). Each answer
names the process that served it (``X-Worker-Pid``)."""

from __future__ import annotations

import os

from flask import Flask, Response, request

from flask_obitox import ObitoX
from flask_obitox.state.redis_cluster import RedisClusterStateBackend


class OneExpirySet(RedisClusterStateBackend):
    """The expiry index as one sorted set (one slot, so one primary): the naive way."""

    def _expiry_key(self, upload_id: str) -> str:
        return f"{self.prefix}:expiry"


backend_class = (
    OneExpirySet if os.environ.get("BENCH_NAIVE_EXPIRY") == "1" else RedisClusterStateBackend
)
app = Flask("obitox_bench_cluster")
app.config.update(
    OBITOX_BUCKET=os.environ.get("BENCH_BUCKET", "obitox-bench"),
    OBITOX_RATE_LIMITS="",
    OBITOX_REGION="us-east-1",
    OBITOX_ENDPOINT_URL=os.environ["BENCH_S3"],
    OBITOX_AWS_ACCESS_KEY_ID="testing",
    OBITOX_AWS_SECRET_ACCESS_KEY="testing",
    OBITOX_STATE_BACKEND=os.environ["BENCH_CLUSTER"],
    OBITOX_RQ_REDIS_URL=os.environ["BENCH_REDIS"],
    OBITOX_VERIFY_CONTENT=False,
)
obitox = ObitoX(
    state=backend_class.from_url(os.environ["BENCH_CLUSTER"], prefix=os.environ["BENCH_PREFIX"])
)


@obitox.identity_loader
def owner() -> str | None:
    return request.headers.get("X-User")


@app.after_request
def name_the_process(response: Response) -> Response:
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


obitox.init_app(app)
