"""One request of each hot browser route through Flask's test client, against boto3
signing the same answer on a cached client (what a hand-rolled server would do).

- ``/s3/params``: Companion's presigned POST (``GET /obitox/s3/params?filename=...``:
  validation, key, policy, signature, the record written); boto3:
  ``generate_presigned_post`` with the same fields and conditions;
- ``sign-part``: Companion's ``GET /obitox/s3/multipart/<id>/<n>?key=...`` (ownership
  read from state, one part URL); boto3: one ``generate_presigned_url("upload_part")``;
- ``/parts (10)``: ``POST /obitox/multipart/<id>/parts`` with 10 part numbers; boto3:
  10 ``upload_part`` URLs;
- ``status`` and ``progress``: ``GET /obitox/uploads/<id>`` and ``POST
  /obitox/uploads/<id>/progress`` (a higher count each time, so each writes), the pair
  DESIGN §12 wants close (a report at most 1.3x a read); their ``upload.progress``
  events are held and published every ``OBITOX_EVENTS_PROGRESS_INTERVAL_MS``, so a
  flush lands inside the count now and then.

Server work only (no HTTP server: ``bench_routes.sh`` measures that, with gunicorn,
against Companion itself). State is Redis (``--memory``: the memory backend); creating
the multipart uploads uses moto in-process, outside what is measured. With
``--instructions``, also the CPU instructions of one request and of boto3's answer,
counted by callgrind (:mod:`instructions`): the figure that does not move with load.

Usage: ``python benchmarks/bench_requests.py [--rounds N] [--memory] [--instructions]``
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import boto3
from bench_state import add_state_options, bench_state
from botocore.config import Config
from flask import Flask
from instructions import (
    add_instruction_options,
    count_instructions,
    run_counted_workloads,
    skipped_line,
)
from moto import mock_aws
from timing import median_seconds

from flask_obitox import ObitoX

BUCKET = "bench-bucket"
REGION = "us-east-1"
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
PART_SIZE = 5 * 1024 * 1024
PARTS = 10
PARAMS = "/obitox/s3/params?filename=cat.png&type=image/png&metadata%5Balbum%5D=summer"
#: route name -> the boto3 workload it is compared with
ROUTES = {"/s3/params": "boto3 presigned POST", "sign-part": "boto3 1 part URL"}
ROUTES["/parts (10)"] = "boto3 10 part URLs"


def make_app(state: Any) -> Flask:
    app = Flask("bench")
    app.config.update(
        OBITOX_BUCKET=BUCKET,
        # What is measured is signing: no per-request rate-limit counter (docs/production).
        OBITOX_RATE_LIMITS="",
        OBITOX_REGION=REGION,
        OBITOX_AWS_ACCESS_KEY_ID=ACCESS_KEY,
        OBITOX_AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    )
    obitox = ObitoX(state=state)
    obitox.identity_loader(lambda: "bench-user")
    obitox.init_app(app)
    return app


def boto3_client() -> Any:
    return boto3.client(
        "s3",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4"),
    )


class Routes:
    """The app with one Companion and one native multipart upload to sign parts of."""

    def __init__(self, state: Any) -> None:
        with mock_aws():
            boto3_client().create_bucket(Bucket=BUCKET)
            self.client = make_app(state).test_client()
            companion = self.client.post(
                "/obitox/s3/multipart",
                json={"filename": "movie.png", "type": "image/png", "metadata": {}},
            )
            assert companion.status_code == 200, companion.get_data(as_text=True)
            native = self.client.post(
                "/obitox/multipart",
                json={"filename": "movie.png", "contentType": "image/png", "size": 20 * PART_SIZE},
            )
            assert native.status_code == 201, native.get_data(as_text=True)
        answer = companion.json
        assert answer is not None
        self.companion_key = answer["key"]
        self.sign_part_path = f"/obitox/s3/multipart/{answer['uploadId']}/1"
        self.parts_path = f"/obitox/multipart/{native.json['uploadId']}/parts"  # type: ignore[index]
        self.parts_body = json.dumps({"partNumbers": list(range(1, PARTS + 1))}).encode()
        single = self.client.post(
            "/obitox/uploads",
            json={"filename": "a.bin", "contentType": "application/octet-stream", "size": 10**9},
        )
        assert single.status_code == 201, single.get_data(as_text=True)
        self.status_path = f"/obitox/uploads/{single.json['uploadId']}"  # type: ignore[index]
        self.reported = 0
        self.progress()  # pending -> uploading: the reports measured are the usual ones

    def status(self) -> None:
        response = self.client.get(self.status_path)
        assert response.status_code == 200, response.get_data(as_text=True)

    def progress(self) -> None:
        self.reported += 1
        response = self.client.post(
            f"{self.status_path}/progress",
            data=b'{"uploadedBytes":%d}' % self.reported,
            content_type="application/json",
        )
        assert response.status_code == 202, response.get_data(as_text=True)

    def params(self) -> None:
        response = self.client.get(PARAMS)
        assert response.status_code == 200, response.get_data(as_text=True)

    def sign_part(self) -> None:
        response = self.client.get(self.sign_part_path, query_string={"key": self.companion_key})
        assert response.status_code == 200, response.get_data(as_text=True)

    def parts(self) -> None:
        response = self.client.post(
            self.parts_path, data=self.parts_body, content_type="application/json"
        )
        assert response.status_code == 200, response.get_data(as_text=True)


def boto3_post(client: Any) -> Callable[[], Any]:
    return lambda: client.generate_presigned_post(
        BUCKET,
        "uploads/AAAAAAAAAAAAAAAAAAAAAA/cat.png",
        Fields={"Content-Type": "image/png", "x-amz-meta-album": "summer"},
        Conditions=[
            ["content-length-range", 0, 5 * 1024**3],
            {"Content-Type": "image/png"},
            {"x-amz-meta-album": "summer"},
        ],
        ExpiresIn=3600,
    )


def boto3_parts(client: Any, count: int) -> Callable[[], Any]:
    return lambda: [
        client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": BUCKET,
                "Key": "uploads/AAAAAAAAAAAAAAAAAAAAAA/movie.png",
                "UploadId": "2~exampleuploadid",
                "PartNumber": number,
                "ContentLength": PART_SIZE,
            },
            ExpiresIn=900,
        )
        for number in range(1, count + 1)
    ]


def workloads(state: Any) -> dict[str, Callable[[], Callable[[], Any]]]:
    routes: list[Routes] = []

    def app() -> Routes:
        if not routes:
            routes.append(Routes(state))
        return routes[0]

    return {
        "/s3/params": lambda: app().params,
        "sign-part": lambda: app().sign_part,
        "/parts (10)": lambda: app().parts,
        "status": lambda: app().status,
        "progress": lambda: app().progress,
        "boto3 presigned POST": lambda: boto3_post(boto3_client()),
        "boto3 1 part URL": lambda: boto3_parts(boto3_client(), 1),
        "boto3 10 part URLs": lambda: boto3_parts(boto3_client(), PARTS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=500)
    add_state_options(parser)
    add_instruction_options(parser)
    args = parser.parse_args()

    with bench_state(args) as (state, label):
        work = workloads(state)
        if run_counted_workloads(args, work):
            return
        seconds = {name: median_seconds(make(), args.rounds) for name, make in work.items()}

    print(f"one request of each hot route (Flask test client), state: {label}")
    # boto3 signs only: no HTTP, no ownership read, no record written. The ratio says
    # what the route costs beside its signature, not that one is faster.
    print(f"{'route':<14}{'median':>10}{'boto3':>10}{'ratio':>8}  (boto3: its signing alone)")
    for route, boto in ROUTES.items():
        ours, theirs = seconds[route], seconds[boto]
        print(f"{route:<14}{ours * 1e6:>8.0f}us{theirs * 1e6:>8.0f}us{theirs / ours:>7.1f}x")
    ratio = seconds["progress"] / seconds["status"]
    print(f"progress report {seconds['progress'] * 1e6:.0f}us = {ratio:.2f}x a status read")
    if not args.instructions:
        return
    counts = count_instructions(args, list(work))
    if counts is None:
        print(skipped_line())
        return
    k = args.instruction_iterations
    print(f"CPU instructions per request (callgrind, {k} iterations counted):")
    print(f"{'route':<14}{'obitox':>10}{'boto3':>10}{'ratio':>8}")
    for route, boto in ROUTES.items():
        ours, theirs = counts[route], counts[boto]
        print(f"{route:<14}{ours / 1e3:>9.0f}k{theirs / 1e3:>9.0f}k{theirs / ours:>7.1f}x")
    ratio = counts["progress"] / counts["status"]
    print(f"progress report {counts['progress'] / 1e3:.0f}k = {ratio:.2f}x a status read")


if __name__ == "__main__":
    main()
