"""``OBITOX_METRICS``: Prometheus text at ``<prefix>/metrics``, fed by the signals and
the route timer; nothing at all when off."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from conftest import UserClient, file_spec, make_app
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from flask_obitox import ConfigError, MemoryStateBackend, signals
from flask_obitox.webhooks.delivery import Delivery

TOKEN = "s3cret-metrics-token-0123456789"


def metrics_app(**config: Any) -> Flask:
    app, _ = make_app(MemoryStateBackend(), OBITOX_METRICS=True, **config)
    return app


def scrape(
    app: Flask, token: str | None = None
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = app.test_client().get("/obitox/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_uploads_are_counted_by_kind_and_code(s3: Any) -> None:
    app = metrics_app()
    alice = UserClient(app, "alice")
    assert alice.post("/uploads", json=file_spec()).status_code == 201
    batch = {
        "files": [
            file_spec(),
            file_spec(filename="evil.exe", contentType="application/x-msdownload"),
        ]
    }
    assert alice.post("/uploads/batch", json=batch).json["failed"] == 1
    created = alice.post("/multipart", json=file_spec(size=200 * 2**20)).json
    assert alice.delete(f"/multipart/{created['uploadId']}").status_code == 200
    samples = scrape(app)
    assert samples["obitox_uploads_signed_total", (("kind", "single"),)] == 2
    assert samples["obitox_uploads_signed_total", (("kind", "multipart"),)] == 1
    assert samples["obitox_uploads_aborted_total", (("kind", "multipart"),)] == 1
    rejected = [
        (labels, value)
        for (name, labels), value in samples.items()
        if name == "obitox_uploads_rejected_total"
    ]
    assert rejected == [
        ((("code", "VALIDATION_FAILED"), ("kind", "unknown"), ("stage", "validation")), 1.0)
    ]


def test_completed_uploads_and_their_bytes(s3: Any) -> None:
    app = metrics_app()
    alice = UserClient(app, "alice")
    from test_uploads import png_bytes

    content = png_bytes(extra=1000)
    signed = alice.post("/uploads", json=file_spec(size=len(content))).json
    s3.put_object(Bucket=signed["bucket"], Key=signed["key"], Body=content, ContentType="image/png")
    assert alice.post(f"/uploads/{signed['uploadId']}/complete").status_code == 200
    samples = scrape(app)
    assert samples["obitox_uploads_completed_total", (("kind", "single"),)] == 1
    assert samples["obitox_upload_completed_bytes_total", (("kind", "single"),)] == len(content)


def test_route_latency_by_endpoint_and_status(s3: Any) -> None:
    app = metrics_app(OBITOX_RATE_LIMITS="1 per minute")
    alice = UserClient(app, "alice")
    assert alice.post("/uploads", json=file_spec()).status_code == 201
    assert alice.post("/uploads", json=file_spec()).status_code == 429
    assert alice.get("/uploads/nope").status_code == 404
    samples = scrape(app)

    def count(endpoint: str, method: str, status: str) -> float:
        labels = (("endpoint", endpoint), ("method", method), ("status", status))
        return samples["obitox_request_duration_seconds_count", labels]

    assert count("obitox.create_upload", "POST", "201") == 1
    assert count("obitox.create_upload", "POST", "429") == 1  # the limiter's answer is timed
    assert count("obitox.get_upload", "GET", "404") == 1


def test_webhook_outcomes_are_counted(s3: Any) -> None:
    app = metrics_app()
    delivery = Delivery(
        webhook_id="msg_1",
        event="upload.completed",
        url="https://hooks.example.com/",
        attempt=1,
        job_id=None,
        status_code=200,
        error=None,
        duration=0.01,
        body="{}",
    )
    with app.app_context():
        signals.webhook_delivered.send(app, delivery=delivery)
        signals.webhook_failed.send(app, delivery=delivery, final=False)
        signals.webhook_failed.send(app, delivery=delivery, final=True)
    samples = scrape(app)
    for outcome in ("delivered", "failed", "failed_final"):
        labels = (("event", "upload.completed"), ("outcome", outcome))
        assert samples["obitox_webhook_deliveries_total", labels] == 1


def test_the_token_guards_the_route(s3: Any) -> None:
    app = metrics_app(OBITOX_METRICS_TOKEN=TOKEN)
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        response = client.get("/obitox/metrics", headers=headers)
        assert response.status_code == 401
        assert response.json["error"] == "UNAUTHENTICATED"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    samples = scrape(app, TOKEN)
    refused = (("endpoint", "obitox.metrics.serve"), ("method", "GET"), ("status", "401"))
    assert samples["obitox_request_duration_seconds_count", refused] == 3


def test_metrics_need_no_identity_loader(s3: Any) -> None:
    app = metrics_app()
    response = app.test_client().get("/obitox/metrics")  # no X-User: not an upload caller
    assert response.status_code == 200


def test_off_by_default_no_route_and_no_collectors(s3: Any) -> None:
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    app, _ = make_app(MemoryStateBackend())
    assert app.config["OBITOX_METRICS"] is False
    assert app.extensions["obitox"].metrics is None
    response = app.test_client().get("/obitox/metrics")
    assert response.status_code == 404
    assert response.json["error"] == "NOT_FOUND"
    # On or off, nothing is registered in prometheus_client's global registry.
    metrics_app()
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"OBITOX_METRICS": "yes"}, "OBITOX_METRICS must be True or False"),
        ({"OBITOX_METRICS_TOKEN": "short"}, "OBITOX_METRICS_TOKEN must be at least 16"),
        ({"OBITOX_METRICS_TOKEN": 12345678901234567}, "OBITOX_METRICS_TOKEN must be a string"),
    ],
)
def test_bad_metrics_config_fails_at_init(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_app(MemoryStateBackend(), **config)


WORKER = """
import sys
from flask_obitox import MemoryStateBackend, signals
sys.path.insert(0, {tests!r})
from conftest import make_app
from moto import mock_aws

with mock_aws():
    app, _ = make_app(MemoryStateBackend(), OBITOX_METRICS=True)
    client = app.test_client()
    for _ in range({count}):
        assert client.post("/obitox/uploads", json={{"filename": "a.png", "contentType": "image/png", "size": 10}}, headers={{"X-User": "alice"}}).status_code == 201
"""


def test_multiprocess_mode_sums_every_process(s3: Any, tmp_path: Path) -> None:
    """Two worker processes write to PROMETHEUS_MULTIPROC_DIR; a third answers the scrape."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    tests = str(Path(__file__).parent)
    for count in (2, 3):
        script = textwrap.dedent(WORKER.format(tests=tests, count=count))
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    scraper = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {tests!r})
        from conftest import make_app
        from flask_obitox import MemoryStateBackend
        app, _ = make_app(MemoryStateBackend(), OBITOX_METRICS=True)
        sys.stdout.write(app.test_client().get("/obitox/metrics").get_data(as_text=True))
        """
    )
    answer = subprocess.run(
        [sys.executable, "-c", scraper],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer)
        for sample in family.samples
    }
    assert values["obitox_uploads_signed_total", (("kind", "single"),)] == 5
