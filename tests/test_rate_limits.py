"""``OBITOX_RATE_LIMITS``: one budget per owner over the routes that sign or create."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import UserClient, file_spec, make_app
from flask import Flask

from flask_obitox import ConfigError, MemoryStateBackend, ObitoX, RedisStateBackend
from flask_obitox.ratelimit import LIMITED_ENDPOINTS


def limited_app(limits: str = "3 per minute", **config: Any) -> Flask:
    app, _ = make_app(MemoryStateBackend(), OBITOX_RATE_LIMITS=limits, **config)
    return app


def assert_rate_limited(response: Any) -> None:
    assert response.status_code == 429, response.json
    body = response.json
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == "RATE_LIMITED"
    assert "OBITOX_RATE_LIMITS" in body["message"]
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert body["details"] == {"limit": "3 per 1 minute", "retryAfter": retry_after}


def test_an_owner_past_the_limit_gets_429_and_others_do_not(s3: Any) -> None:
    app = limited_app()
    alice, bob = UserClient(app, "alice"), UserClient(app, "bob")
    for _ in range(3):
        assert alice.post("/uploads", json=file_spec()).status_code == 201
    assert_rate_limited(alice.post("/uploads", json=file_spec()))
    assert bob.post("/uploads", json=file_spec()).status_code == 201


def test_every_signing_route_draws_on_one_budget(s3: Any) -> None:
    app = limited_app()
    alice = UserClient(app, "alice")
    assert alice.post("/uploads/batch", json={"files": [file_spec()]}).status_code == 200
    created = alice.post("/multipart", json=file_spec(size=200 * 2**20))
    assert created.status_code == 201
    upload_id = created.json["uploadId"]
    assert alice.post(f"/multipart/{upload_id}/parts", json={"partNumbers": [1]}).status_code == 200
    # Native and Companion routes alike.
    assert_rate_limited(alice.get("/s3/params?filename=cat.png&type=image/png"))
    assert_rate_limited(
        alice.post("/s3/multipart", json={"filename": "a.png", "type": "image/png"})
    )
    assert_rate_limited(alice.get(f"/s3/multipart/{upload_id}/1?key=k"))
    assert_rate_limited(alice.get(f"/s3/multipart/{upload_id}/batch?key=k&partNumbers=1"))
    assert_rate_limited(alice.post("/multipart", json=file_spec(size=200 * 2**20)))


def test_routes_that_do_not_sign_are_never_limited(s3: Any) -> None:
    app = limited_app("1 per minute")
    alice = UserClient(app, "alice")
    signed = alice.post("/uploads", json=file_spec())
    assert signed.status_code == 201
    assert_limited = alice.post("/uploads", json=file_spec())
    assert assert_limited.status_code == 429
    upload_id = signed.json["uploadId"]
    for _ in range(3):
        assert alice.get(f"/uploads/{upload_id}").status_code == 200
        # 409: not uploaded yet; not 429.
        assert alice.post(f"/uploads/{upload_id}/complete").status_code == 409
        assert alice.get("/openapi.json").status_code == 200


def test_the_limited_endpoints_are_routes_of_the_app(s3: Any) -> None:
    app = limited_app()
    assert set(app.view_functions) >= LIMITED_ENDPOINTS


def test_callers_without_an_identity_count_by_address(s3: Any) -> None:
    app = limited_app("2 per minute", OBITOX_ALLOW_ANONYMOUS=True)
    client = app.test_client()

    def sign(address: str) -> Any:
        return client.post(
            "/obitox/uploads", json=file_spec(), environ_base={"REMOTE_ADDR": address}
        )

    assert [sign("192.0.2.1").status_code for _ in range(2)] == [201, 201]
    assert sign("192.0.2.1").status_code == 429
    # Anonymous callers share one owner id, but not one budget.
    assert sign("192.0.2.2").status_code == 201


def test_empty_limits_turn_the_limiter_off(s3: Any) -> None:
    app = limited_app("")
    assert app.extensions["obitox"].limiter is None
    assert not app.extensions.get("limiter")
    alice = UserClient(app, "alice")
    assert {alice.post("/uploads", json=file_spec()).status_code for _ in range(5)} == {201}


def test_the_default_is_600_per_minute(s3: Any) -> None:
    app = Flask("defaults")
    app.config.update(OBITOX_BUCKET="b", OBITOX_STATE_BACKEND="memory://")
    ObitoX(app)
    assert app.config["OBITOX_RATE_LIMITS"] == "600 per minute"
    assert app.extensions["obitox"].limiter is not None


@pytest.mark.parametrize("value", ["lots", 600, "600 per fortnight", ["600 per minute"]], ids=repr)
def test_bad_limits_fail_at_init_naming_the_key(value: Any) -> None:
    with pytest.raises(ConfigError, match="OBITOX_RATE_LIMITS"):
        limited_app(value)


# -- Redis ------------------------------------------------------------------------------


@pytest.fixture
def owner(redis_url: str) -> Iterator[str]:
    """An owner id of this test's own; its counters are removed afterwards."""
    name = f"rate-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"LIMITS:LIMITER/obitox/owner:{name}/*"))
    if keys:
        client.delete(*keys)


def test_counters_live_in_the_state_redis_and_are_shared_by_processes(
    s3: Any, redis_url: str, redis_backend: RedisStateBackend, owner: str
) -> None:
    # Two apps on one Redis stand for two worker processes.
    apps = [
        make_app(redis_backend, OBITOX_STATE_BACKEND=redis_url, OBITOX_RATE_LIMITS="3 per minute")[
            0
        ]
        for _ in range(2)
    ]
    first, second = (UserClient(app, owner) for app in apps)
    assert first.post("/uploads", json=file_spec()).status_code == 201
    assert second.post("/uploads", json=file_spec()).status_code == 201
    assert first.post("/uploads", json=file_spec()).status_code == 201
    assert_rate_limited(second.post("/uploads", json=file_spec()))
    keys = redis.Redis.from_url(redis_url).keys(f"LIMITS:LIMITER/obitox/owner:{owner}/*")
    assert len(keys) == 1


def test_an_unreachable_limiter_storage_lets_requests_through(
    s3: Any, redis_backend: RedisStateBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # The state answers; the limiter's storage fails (its counter calls are made to
    # raise what redis-py raises for a dead server).
    app, _ = make_app(redis_backend, OBITOX_RATE_LIMITS="1/minute")
    storage = app.extensions["obitox"].limiter.storage
    alice = UserClient(app, "alice")

    def down(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    with (
        pytest.MonkeyPatch.context() as patch,
        caplog.at_level(logging.ERROR, logger="flask-limiter"),
    ):
        for name in ("incr", "get", "get_expiry", "acquire_entry", "get_moving_window"):
            if hasattr(storage, name):
                patch.setattr(storage, name, down)
        statuses = [alice.post("/uploads", json=file_spec()).status_code for _ in range(3)]
    assert statuses == [201, 201, 201]
    assert "Failed to rate limit" in caplog.text


def test_init_app_does_not_connect_to_the_limiter_storage(s3: Any) -> None:
    down = "redis://127.0.0.1:1/0"
    app, _ = make_app(
        RedisStateBackend.from_url(down), OBITOX_STATE_BACKEND=down, OBITOX_RATE_LIMITS="1/minute"
    )
    assert app.extensions["obitox"].limiter.storage.base_exceptions  # a Redis storage
    # Up and answering: the upload route's own 503, not the limiter's failure.
    response = UserClient(app, "alice").post("/uploads", json=file_spec())
    assert response.status_code == 503
    assert response.json["error"] == "STATE_UNAVAILABLE"
