"""The app ``bench_routes.sh`` serves under gunicorn: moto S3 (``BENCH_S3``), Redis
state (``BENCH_REDIS`` under the key prefix ``BENCH_PREFIX``), callers named by
``X-User``. Ownership and validation are on, as in production."""

from __future__ import annotations

import os

from flask import Flask, request

from flask_obitox import ObitoX, RedisStateBackend

app = Flask("obitox_bench_routes")
app.config.update(
    OBITOX_BUCKET=os.environ.get("BENCH_BUCKET", "obitox-bench"),
    # What is measured is signing: no per-request rate-limit counter (docs/production).
    OBITOX_RATE_LIMITS="",
    OBITOX_REGION="us-east-1",
    OBITOX_ENDPOINT_URL=os.environ["BENCH_S3"],
    OBITOX_AWS_ACCESS_KEY_ID="testing",
    OBITOX_AWS_SECRET_ACCESS_KEY="testing",
    OBITOX_PART_SIZE=5 * 1024 * 1024,
    OBITOX_EVENTS=os.environ.get("BENCH_EVENTS", "1") == "1",
)
obitox = ObitoX(
    state=RedisStateBackend.from_url(os.environ["BENCH_REDIS"], prefix=os.environ["BENCH_PREFIX"])
)


@obitox.identity_loader
def owner() -> str | None:
    return request.headers.get("X-User")


obitox.init_app(app)


@app.get("/bench/noop")
def noop() -> dict[str, bool]:
    """A route that does nothing, served the same way: what any Flask route pays under
    this server (gunicorn, Flask, the connection), the floor of every row."""
    return {"ok": True}
