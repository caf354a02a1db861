"""Client throughput: ``ObitoXClient.resumable_upload`` against boto3's ``upload_file``.

Both upload the same 256 MiB file to the same moto S3 server, in parts of the same
size with the same number of parts in flight:

- ``obitox``: the Python client through an ObitoX app (init, one signing call, parallel
  PUTs to the presigned URLs, complete with the server's ListParts check and its
  ranged-GET verification): every step a real upload takes;
- ``boto3``: ``S3Client.upload_file`` (s3transfer) with
  ``TransferConfig(multipart_threshold=part, multipart_chunksize=part,
  max_concurrency=N)``, credentials in hand, no server in between. Checksums only when
  required (``request_checksum_calculation="when_required"``), as the ObitoX URLs sign
  none: both send the same bytes.

moto and the ObitoX app run in processes of their own, so neither takes the GIL from
the client being measured. Runs alternate (obitox, boto3, boto3, obitox, ...) so a
slow moment of the shared machine hits both. Prints MB/s of every run, the medians and
their ratio, and the same for the data phase alone (start to the last byte sent).
``--cli`` also times the ``obitox upload`` command against boto3's ``upload_file`` in a
new process, both paying for Python's start-up and their imports. ``--reports`` also
times the client with its progress reports off (``report_progress=False``; on is the
default, and what ``obitox`` measures): what telling the server about each part and
each second costs.

moto and the app run in process groups of their own (``benchmarks/children.py``): if
either dies, the benchmark stops at once with its last lines of output, and both are
stopped however the benchmark ends.

Usage: ``python benchmarks/bench_client.py [--size-mib 256] [--part-mib 8]
[--concurrency 4] [--runs 9] [--cli] [--reports]``
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from children import Children

from flask_obitox.client import ObitoXClient, Progress

BUCKET = "bench-client"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
MiB = 1024 * 1024


#: boto3's upload_file in a process of its own: what the command is compared with, since
#: both then pay for starting Python and importing their libraries.
BOTO3_SCRIPT = """
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
endpoint, path, key, part, concurrency = sys.argv[1:]
s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint,
    aws_access_key_id="testing", aws_secret_access_key="testing",
    config=Config(signature_version="s3v4", request_checksum_calculation="when_required",
                  max_pool_connections=max(10, int(concurrency))))
config = TransferConfig(multipart_threshold=int(part), multipart_chunksize=int(part),
    max_concurrency=int(concurrency), use_threads=True)
s3.upload_file(path, "bench-client", key, Config=config)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def serve_app(port: int, endpoint: str) -> None:
    """The ObitoX app (memory state) on ``port``; run in a process of its own."""
    from flask import Flask
    from werkzeug.serving import WSGIRequestHandler, make_server

    from flask_obitox import ObitoX

    app = Flask("bench_client")
    app.config.update(
        OBITOX_BUCKET=BUCKET,
        # What is measured is signing: no per-request rate-limit counter (docs/production).
        OBITOX_RATE_LIMITS="",
        OBITOX_REGION=REGION,
        OBITOX_ENDPOINT_URL=endpoint,
        OBITOX_AWS_ACCESS_KEY_ID="testing",
        OBITOX_AWS_SECRET_ACCESS_KEY="testing",
        OBITOX_STATE_BACKEND="memory://",
    )
    obitox = ObitoX()
    obitox.identity_loader(lambda: "bench-user")
    obitox.init_app(app)

    class Quiet(WSGIRequestHandler):
        def log(self, type: str, message: str, *args: Any) -> None:
            pass

    make_server("127.0.0.1", port, app, threaded=True, request_handler=Quiet).serve_forever()


def make_file(directory: Path, size: int) -> Path:
    path = directory / "bench.bin"
    with path.open("wb") as file:
        file.write(b"OBITOX-BENCH-DATA\n")
        while file.tell() < size:
            file.write(os.urandom(min(MiB, size - file.tell())))
        file.truncate(size)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--cli", action="store_true", help="also time the obitox command")
    parser.add_argument(
        "--reports", action="store_true", help="also time the client without progress reports"
    )
    parser.add_argument(
        "--serve-app", nargs=2, metavar=("PORT", "ENDPOINT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve_app:
        serve_app(int(args.serve_app[0]), args.serve_app[1])
        return

    with Children("bench-client") as children:
        measure(args, children)


def measure(args: argparse.Namespace, children: Children) -> None:
    size, part = args.size_mib * MiB, args.part_mib * MiB
    moto_port, app_port = free_port(), free_port()
    endpoint = f"http://127.0.0.1:{moto_port}"
    moto = children.start(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
    )
    app = children.start(
        "ObitoX app", [sys.executable, __file__, "--serve-app", str(app_port), endpoint]
    )
    children.wait_for_port(moto, moto_port)
    children.wait_for_port(app, app_port)
    s3 = boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        config=Config(
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            max_pool_connections=max(10, args.concurrency),
        ),
        **CREDENTIALS,
    )
    s3.create_bucket(Bucket=BUCKET)
    transfer = TransferConfig(
        multipart_threshold=part,
        multipart_chunksize=part,
        max_concurrency=args.concurrency,
        use_threads=True,
    )
    server = f"http://127.0.0.1:{app_port}/obitox"
    client = ObitoXClient(server, concurrency=args.concurrency)
    quiet = ObitoXClient(server, concurrency=args.concurrency, report_progress=False)

    # When the last byte went out: the data phase, before the complete call (whose
    # cost on moto, which concatenates the parts in Python, dwarfs real S3's).
    last_byte: dict[str, float] = {}

    def obitox_api(path: Path) -> str:
        def on_progress(progress: Progress) -> None:
            if progress.bytes_sent == progress.total_bytes:
                last_byte.setdefault("at", time.perf_counter())

        return client.resumable_upload(path, part_size=part, on_progress=on_progress).key

    def obitox_quiet(path: Path) -> str:
        def on_progress(progress: Progress) -> None:
            if progress.bytes_sent == progress.total_bytes:
                last_byte.setdefault("at", time.perf_counter())

        return quiet.resumable_upload(path, part_size=part, on_progress=on_progress).key

    def obitox_cli(path: Path) -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "flask_obitox.client",
                "upload",
                str(path),
                "--server",
                server,
                "--part-size",
                str(part),
                "--multipart-threshold",
                str(part),
                "--concurrency",
                str(args.concurrency),
                "--no-progress",
            ],
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        return out.split(f" -> {BUCKET}/", 1)[1].split(" (", 1)[0]

    def boto3_upload(path: Path) -> str:
        key = f"boto3/{time.time_ns()}/{path.name}"
        sent = [0]

        def callback(count: int) -> None:
            sent[0] += count
            if sent[0] >= size:
                last_byte.setdefault("at", time.perf_counter())

        s3.upload_file(str(path), BUCKET, key, Config=transfer, Callback=callback)
        return key

    def boto3_process(path: Path) -> str:
        key = f"boto3-process/{time.time_ns()}/{path.name}"
        subprocess.run(
            [
                *(sys.executable, "-c", BOTO3_SCRIPT, endpoint, str(path), key),
                *(str(part), str(args.concurrency)),
            ],
            check=True,
        )
        return key

    ways = {"obitox": obitox_api, "boto3": boto3_upload}
    if args.reports:
        ways["obitox, no reports"] = obitox_quiet
    if args.cli:
        ways["obitox upload (command)"] = obitox_cli
        ways["boto3 (new process)"] = boto3_process
    with tempfile.TemporaryDirectory() as directory:
        path = make_file(Path(directory), size)
        print(
            f"{args.size_mib} MiB file, parts of {args.part_mib} MiB, concurrency "
            f"{args.concurrency}, {args.runs} runs, moto {endpoint}"
        )
        rates: dict[str, list[float]] = {name: [] for name in ways}
        data_rates: dict[str, list[float]] = {name: [] for name in ways}
        # Warm-up: connection pools, moto's first-request costs.
        for upload in ways.values():
            s3.delete_object(Bucket=BUCKET, Key=upload(path))
        for run in range(args.runs):
            order = list(ways) if run % 2 == 0 else list(reversed(ways))
            for name in order:
                last_byte.clear()
                start = time.perf_counter()
                key = ways[name](path)
                elapsed = time.perf_counter() - start
                if "at" in last_byte:
                    data_rates[name].append(size / 1e6 / (last_byte["at"] - start))
                head = s3.head_object(Bucket=BUCKET, Key=key)
                assert head["ContentLength"] == size, (name, head["ContentLength"])
                s3.delete_object(Bucket=BUCKET, Key=key)
                rates[name].append(size / 1e6 / elapsed)
            print(
                f"run {run + 1}: "
                + ", ".join(f"{name} {rates[name][-1]:.1f} MB/s" for name in ways)
            )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print()
    for name, values in rates.items():
        print(
            f"{name:24} median {medians[name]:6.1f} MB/s "
            f"(range {min(values):.1f}-{max(values):.1f})"
        )
    per_run = [o / b for o, b in zip(rates["obitox"], rates["boto3"], strict=True)]
    print(
        f"ratio obitox / boto3: {medians['obitox'] / medians['boto3']:.2f}x of the medians "
        f"(per run {min(per_run):.2f}-{max(per_run):.2f}x); goal >= 0.9x"
    )
    data = {name: statistics.median(data_rates[name]) for name in ("obitox", "boto3")}
    print(
        f"data phase (start to last byte sent): obitox {data['obitox']:.1f} MB/s, "
        f"boto3 {data['boto3']:.1f} MB/s, ratio {data['obitox'] / data['boto3']:.2f}x"
    )
    if args.reports:
        off = rates["obitox, no reports"]
        per_run = [on / o for on, o in zip(rates["obitox"], off, strict=True)]
        print(
            f"ratio obitox with reports / without: "
            f"{medians['obitox'] / medians['obitox, no reports']:.2f}x of the medians "
            f"(per run {min(per_run):.2f}-{max(per_run):.2f}x)"
        )
    if args.cli:
        cli = medians["obitox upload (command)"]
        fresh = medians["boto3 (new process)"]
        print(
            f"ratio obitox upload (command) / boto3 in a new process: {cli / fresh:.2f}x "
            f"(/ boto3 in this process: {cli / medians['boto3']:.2f}x)"
        )
    client.close()
    quiet.close()


if __name__ == "__main__":
    main()
