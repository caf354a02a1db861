"""The app ``bench_events.py`` serves under gunicorn: Redis state (``BENCH_REDIS`` under
the key prefix ``BENCH_PREFIX``), callers named by ``X-User``. ``BENCH_FAN_IN=0`` makes
every stream wait on its own Redis connection instead of sharing the process's reader."""

from __future__ import annotations

import os

from flask import Flask, request

from flask_obitox import ObitoX, RedisStateBackend

app = Flask("obitox_bench_events")
app.config.update(
    OBITOX_BUCKET="obitox-bench",
    OBITOX_RATE_LIMITS="",
    OBITOX_REGION="us-east-1",
    OBITOX_AWS_ACCESS_KEY_ID="testing",
    OBITOX_AWS_SECRET_ACCESS_KEY="testing",
)
obitox = ObitoX(
    state=RedisStateBackend.from_url(os.environ["BENCH_REDIS"], prefix=os.environ["BENCH_PREFIX"])
)


@obitox.identity_loader
def owner() -> str | None:
    return request.headers.get("X-User")


obitox.init_app(app)
obitox.get_state(app).service.events_fan_in = os.environ.get("BENCH_FAN_IN", "1") == "1"
