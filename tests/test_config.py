"""Configuration: defaults, validation at init_app, and never touching services."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from flask_obitox import ConfigError, ObitoX
from flask_obitox.config import DEFAULTS, ConfigVars, load_settings


def settings_for(**config: Any) -> Any:
    values: dict[str, Any] = {"OBITOX_BUCKET": "b", **config}
    return load_settings(values)


def test_defaults_are_filled_in() -> None:
    app = Flask("defaults")
    app.config["OBITOX_BUCKET"] = "b"
    app.config["OBITOX_STATE_BACKEND"] = "memory://"
    ObitoX(app)
    for key in DEFAULTS:
        assert key in app.config
    settings = app.extensions["obitox"].settings
    assert settings.url_prefix == "/obitox"
    assert settings.key_prefix == "uploads/"
    assert settings.max_file_size == 5 * 1024**3
    assert settings.batch_max_files == 100
    assert settings.block_executables is True


def test_state_backend_defaults_to_the_apps_redis_url() -> None:
    assert settings_for().state_backend == "redis://localhost:6379/0"
    assert settings_for(REDIS_URL="redis://cache:6380/2").state_backend == "redis://cache:6380/2"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"OBITOX_BUCKET": None}, ConfigVars.BUCKET),
        ({"OBITOX_ADDRESSING_STYLE": "sideways"}, ConfigVars.ADDRESSING_STYLE),
        ({"OBITOX_ENDPOINT_URL": "minio:9000"}, ConfigVars.ENDPOINT_URL),
        ({"OBITOX_AWS_ACCESS_KEY_ID": "AKID"}, ConfigVars.AWS_ACCESS_KEY_ID),
        ({"OBITOX_URL_PREFIX": "obitox"}, ConfigVars.URL_PREFIX),
        ({"OBITOX_KEY_PREFIX": "/abs/"}, ConfigVars.KEY_PREFIX),
        ({"OBITOX_KEY_PREFIX": "a/../b/"}, ConfigVars.KEY_PREFIX),
        ({"OBITOX_STATE_BACKEND": "localhost"}, ConfigVars.STATE_BACKEND),
        ({"OBITOX_MAX_FILE_SIZE": 6 * 1024**3}, ConfigVars.MAX_FILE_SIZE),
        ({"OBITOX_MAX_FILE_SIZE": "5GB"}, ConfigVars.MAX_FILE_SIZE),
        ({"OBITOX_MIN_FILE_SIZE": 10, "OBITOX_MAX_FILE_SIZE": 5}, ConfigVars.MIN_FILE_SIZE),
        ({"OBITOX_EXPIRY_MAX": 8 * 24 * 3600}, ConfigVars.EXPIRY_MAX),
        ({"OBITOX_EXPIRY_MIN": 600, "OBITOX_EXPIRY_MAX": 60}, ConfigVars.EXPIRY_MIN),
        ({"OBITOX_PART_SIZE": 1024}, ConfigVars.PART_SIZE),
        ({"OBITOX_BLOCK_EXECUTABLES": "yes"}, ConfigVars.BLOCK_EXECUTABLES),
        ({"OBITOX_BATCH_MAX_FILES": 0}, ConfigVars.BATCH_MAX_FILES),
        ({"OBITOX_ALLOWED_CONTENT_TYPES": [1]}, ConfigVars.ALLOWED_CONTENT_TYPES),
        ({"OBITOX_WEBHOOKS": [{"secret": "x"}]}, ConfigVars.WEBHOOKS),
        ({"OBITOX_WEBHOOK_RETRY_SCHEDULE": [5, -1]}, ConfigVars.WEBHOOK_RETRY_SCHEDULE),
        ({"OBITOX_RQ_QUEUE": ""}, ConfigVars.RQ_QUEUE),
        ({"OBITOX_WEBHOOK_RETRY_SCHEDULE": ""}, ConfigVars.WEBHOOK_RETRY_SCHEDULE),
        ({"OBITOX_UPLOAD_TTL": 3600, "OBITOX_EXPIRY_MAX": 7200}, ConfigVars.UPLOAD_TTL),
        ({"OBITOX_STATE_BACKEND": "memcached://x"}, ConfigVars.STATE_BACKEND),
        ({"OBITOX_KEY_PREFIX": "./up/"}, ConfigVars.KEY_PREFIX),
        ({"OBITOX_KEY_PREFIX": "up//x/"}, ConfigVars.KEY_PREFIX),
        ({"OBITOX_KEY_PREFIX": "up/./"}, ConfigVars.KEY_PREFIX),
        ({"OBITOX_KEY_PREFIX": "\x00/"}, ConfigVars.KEY_PREFIX),
        ({"OBITOX_KEY_PREFIX": "x" * 800}, ConfigVars.KEY_PREFIX),
        ({"OBITOX_ENDPOINT_URL": "http://bad host"}, ConfigVars.ENDPOINT_URL),
        ({"OBITOX_ENDPOINT_URL": "http://:9000"}, ConfigVars.ENDPOINT_URL),
        ({"OBITOX_ALLOWED_CONTENT_TYPES": ["png"]}, ConfigVars.ALLOWED_CONTENT_TYPES),
        ({"OBITOX_ALLOWED_CONTENT_TYPES": ["image/*.png"]}, ConfigVars.ALLOWED_CONTENT_TYPES),
        ({"OBITOX_ALLOWED_EXTENSIONS": ["*.png"]}, ConfigVars.ALLOWED_EXTENSIONS),
    ],
)
def test_bad_config_fails_at_init_app_naming_the_key(config: dict[str, Any], key: str) -> None:
    app = Flask("bad")
    app.config.update({"OBITOX_BUCKET": "b", "OBITOX_STATE_BACKEND": "memory://", **config})
    with pytest.raises(ConfigError, match=key):
        ObitoX(app)
    assert "obitox" not in app.extensions


def test_lists_accept_comma_separated_strings() -> None:
    settings = settings_for(
        OBITOX_ALLOWED_CONTENT_TYPES="image/*, application/pdf",
        OBITOX_ALLOWED_EXTENSIONS=".PNG,pdf",
    )
    assert settings.allowed_content_types == ("image/*", "application/pdf")
    assert settings.allowed_extensions == ("png", "pdf")


def test_key_prefix_gets_its_slash() -> None:
    assert settings_for(OBITOX_KEY_PREFIX="media").key_prefix == "media/"


def test_init_app_never_connects_and_answers_503_while_redis_is_down(s3: Any) -> None:
    app = Flask("down")
    app.config.update(OBITOX_BUCKET="obitox-test", OBITOX_STATE_BACKEND="redis://127.0.0.1:1/0")
    obitox = ObitoX(app)  # Redis is down: starting must still work
    obitox.identity_loader(lambda: "alice")
    response = app.test_client().post(
        "/obitox/uploads", json={"filename": "a.png", "contentType": "image/png", "size": 1}
    )
    assert response.status_code == 503
    assert response.json["error"] == "STATE_UNAVAILABLE"


def test_service_outside_an_initialised_app_raises() -> None:
    obitox = ObitoX()
    with Flask("nope").app_context(), pytest.raises(RuntimeError, match="not initialised"):
        obitox.service  # noqa: B018
