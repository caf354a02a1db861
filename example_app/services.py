"""What ``python -m example_app`` runs next to the app: configuration and embedded services.

- Configuration: every ``OBITOX_*`` environment variable becomes the config key of the same
  name, parsed by the type of its default (``"true"`` for a bool, ``"1048576"`` for an int,
  ``"image/*,application/pdf"`` or a JSON list for a list).
- S3: ``OBITOX_ENDPOINT_URL`` set -> that storage (with ``OBITOX_BUCKET`` and credentials
  from ``OBITOX_AWS_*`` or boto3's chain, ``AWS_*``); otherwise a moto S3 server on
  127.0.0.1 in a thread of this process, with the bucket created.
- State: ``OBITOX_STATE_BACKEND`` or ``REDIS_URL`` set -> that Redis; otherwise an
  in-process fakeredis server on 127.0.0.1 (``fakeredis.TcpFakeServer``), database 1,
  which the worker subprocess shares: it runs the processors of the uploads the app
  completes (``example_app/processors.py``).
- Webhooks: the app receives its own (``example_app/webhooks.py``), delivered by a
  ``flask obitox worker`` subprocess (``example_app/worker.py``) whose output is echoed
  to ours and whose last lines are kept for the page (:class:`WorkerProcess`). RQ's
  Redis is ``OBITOX_RQ_REDIS_URL``, else the state Redis, else an in-process fakeredis
  server on 127.0.0.1 (``fakeredis.TcpFakeServer``) that the worker connects to.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Mapping, MutableMapping
from typing import IO, Any

from flask_obitox import ConfigError
from flask_obitox.config import DEFAULTS
from flask_obitox.state.redis import redact_url

logger = logging.getLogger("example_app")

DEFAULT_BUCKET = "obitox-demo"
DEFAULT_REGION = "us-east-1"
#: Credentials of the embedded S3: moto accepts any and checks no signature.
DEMO_CREDENTIALS = "demo"
#: The request headers the page may send on its PUTs (metadata and checksum included).
PREFLIGHT_HEADERS = "content-type,x-amz-checksum-sha256,x-amz-meta-demo,if-none-match"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


# -- configuration from the environment ---------------------------------------------


def parse_env_value(name: str, raw: str) -> Any:
    """``raw`` as the type of ``name``'s default; unknown keys: JSON if it parses, else text."""
    if name not in DEFAULTS:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    default = DEFAULTS[name]
    text = raw.strip()
    if isinstance(default, bool):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if isinstance(default, list):
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError as error:
                raise ConfigError(f"{name} is not a valid JSON list: {error}") from None
        items = [item.strip() for item in text.split(",") if item.strip()]
        if default and all(isinstance(d, int) for d in default):
            try:
                return [int(item) for item in items]
            except ValueError:
                raise ConfigError(f"{name} must be a comma-separated list of integers") from None
        return items
    return raw  # strings, and keys whose default is None (bucket, endpoint, credentials...)


def config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Every ``OBITOX_*`` variable (but the test suite's ``OBITOX_TEST_*``), parsed."""
    return {
        name: parse_env_value(name, raw)
        for name, raw in environ.items()
        if name.startswith("OBITOX_") and not name.startswith("OBITOX_TEST_")
    }


# -- CORS ---------------------------------------------------------------------------


def preflight_ok(endpoint: str, bucket: str, origin: str, *, timeout: float = 3.0) -> bool:
    """Whether storage answers a browser's preflight for the page's PUTs from ``origin``."""
    if not endpoint.startswith(("http://", "https://")):
        return False
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        f"{endpoint.rstrip('/')}/{bucket}/uploads/cors-preflight-check",
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": PREFLIGHT_HEADERS,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            headers = response.headers
    except (urllib.error.URLError, OSError):
        return False
    allowed_origin = headers.get("Access-Control-Allow-Origin", "")
    methods = {
        m.strip().upper() for m in headers.get("Access-Control-Allow-Methods", "").split(",")
    }
    allowed = {
        h.strip().lower() for h in headers.get("Access-Control-Allow-Headers", "").split(",")
    }
    return (
        allowed_origin in (origin, "*")
        and ("PUT" in methods or "*" in methods)
        and ("*" in allowed or set(PREFLIGHT_HEADERS.split(",")) <= allowed)
    )


def ensure_browser_cors(client: Any, endpoint: str, bucket: str, origins: list[str]) -> str:
    """Make sure browsers on ``origins`` may PUT to ``bucket``; returns what was done.

    moto's server answers preflights on its own (it reflects the origin and headers); a
    storage that does not gets a bucket CORS rule for ``origins``, then is checked again.
    """
    if preflight_ok(endpoint, bucket, origins[0]):
        return "answers CORS preflight as is"
    client.put_bucket_cors(
        Bucket=bucket,
        CORSConfiguration={
            "CORSRules": [
                {
                    "AllowedOrigins": origins,
                    "AllowedMethods": ["PUT", "POST", "GET", "HEAD"],
                    "AllowedHeaders": ["*"],
                    "ExposeHeaders": ["ETag"],
                    "MaxAgeSeconds": 3600,
                }
            ]
        },
    )
    if not preflight_ok(endpoint, bucket, origins[0]):
        raise RuntimeError(
            f"the S3 server at {endpoint} refuses CORS preflight from {origins[0]} "
            "even after put_bucket_cors: browsers could not upload"
        )
    return f"bucket CORS set for {', '.join(origins)}"


# -- the services -------------------------------------------------------------------


class Services:
    """What :func:`start_services` started; :meth:`stop` ends it."""

    def __init__(self) -> None:
        self.moto: Any = None
        self.redis: Any = None
        self.worker: WorkerProcess | None = None

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.redis is not None:
            self.redis.shutdown()
            self.redis.server_close()
            self.redis = None
        if self.moto is not None:
            self.moto.stop()
            self.moto = None


#: Bindings that a client on this machine reaches at 127.0.0.1.
_LOOPBACK_BINDS = ("", "0.0.0.0", "::", "localhost")  # noqa: S104 - compared, never bound


def _local_url(host: str, port: int) -> str:
    """``http://host:port`` as a client on this machine reaches a server bound there: a
    wildcard or ``localhost`` binding at 127.0.0.1, an IPv6 literal in brackets."""
    shown = "127.0.0.1" if host in _LOOPBACK_BINDS else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def _origins(host: str, port: int) -> list[str]:
    if host in (*_LOOPBACK_BINDS, "127.0.0.1"):
        return [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    return [_local_url(host, port)]


def _start_moto(config: MutableMapping[str, Any], services: Services, host: str, port: int) -> None:
    try:
        import boto3
        from botocore.config import Config
        from moto.server import ThreadedMotoServer
    except ImportError as error:  # pragma: no cover - the [demo] extra is missing
        raise RuntimeError(
            f"the embedded S3 needs moto's server ({error}): pip install -e '.[demo]' "
            "or set OBITOX_ENDPOINT_URL to a real S3"
        ) from error

    bind = "127.0.0.1" if host in _LOOPBACK_BINDS else host
    server = ThreadedMotoServer(ip_address=bind, port=0, verbose=False)
    server.start()
    services.moto = server
    moto_host, moto_port = server.get_host_and_port()
    endpoint = _local_url(moto_host, moto_port)

    bucket = config.get("OBITOX_BUCKET") or DEFAULT_BUCKET
    region = config.get("OBITOX_REGION") or DEFAULT_REGION
    config.update(
        OBITOX_BUCKET=bucket,
        OBITOX_REGION=region,
        OBITOX_ENDPOINT_URL=endpoint,
        OBITOX_ADDRESSING_STYLE="path",
        OBITOX_AWS_ACCESS_KEY_ID=DEMO_CREDENTIALS,
        OBITOX_AWS_SECRET_ACCESS_KEY=DEMO_CREDENTIALS,
        EXAMPLE_EMBEDDED_S3=True,
    )
    client = boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=DEMO_CREDENTIALS,
        aws_secret_access_key=DEMO_CREDENTIALS,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        # Any region string: the stubs only know the Literal list of AWS regions.
        location = {"LocationConstraint": region}
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration=location)  # type: ignore[arg-type]
    cors = ensure_browser_cors(client, endpoint, bucket, _origins(host, port))
    logger.info("S3: embedded moto server at %s, bucket %r (%s)", endpoint, bucket, cors)
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a comparison
        logger.warning(
            "S3: the embedded S3 listens on %s only: browsers on other machines cannot PUT to it; "
            "set OBITOX_ENDPOINT_URL to a storage they can reach",
            moto_host,
        )


# -- webhooks -----------------------------------------------------------------------

#: How the worker subprocess is started: the CLI a deployment would run.
WORKER_COMMAND = (
    "-m",
    "flask",
    "--app",
    "example_app.worker:create_worker_app",
    "obitox",
    "worker",
)


#: Lines of the worker's output kept for the page.
WORKER_LOG_LINES = 20


class WorkerProcess:
    """The ``flask obitox worker`` subprocess, in a process group of its own. Its output
    goes on to ours, as if it wrote there itself, and its last lines are kept: when it
    dies, they say why."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.started_at = time.time()
        self._lines: deque[str] = deque(maxlen=WORKER_LOG_LINES)
        self._lock = threading.Lock()
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, *WORKER_COMMAND],
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        threading.Thread(
            target=self._relay, args=(self.process.stdout,), name="worker-output", daemon=True
        ).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exit_code(self) -> int | None:
        """``None`` while it runs; negative: the number of the signal that killed it."""
        return self.process.poll()

    def log_tail(self) -> list[str]:
        """Its last lines of output, oldest first."""
        with self._lock:
            return list(self._lines)

    def _relay(self, output: IO[bytes]) -> None:
        for raw in output:
            with contextlib.suppress(OSError, ValueError):  # our stderr closed at exit
                sys.stderr.buffer.write(raw)
                sys.stderr.flush()
            line = raw.decode("utf-8", errors="replace").rstrip()
            if line:
                with self._lock:
                    self._lines.append(line)
        output.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # RQ's warm shutdown: finish the delivery in hand
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # the worker's scheduler, if left
        self.process.wait(5)


def _env_value(value: Any) -> str:
    """A config value as :func:`parse_env_value` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return str(value)


def _start_embedded_redis(services: Services) -> str:
    try:
        from fakeredis import TcpFakeServer
    except ImportError as error:  # pragma: no cover - the [demo] extra is missing
        raise RuntimeError(
            f"the embedded Redis for webhooks needs fakeredis ({error}): pip install -e "
            "'.[demo]' or set REDIS_URL"
        ) from error
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    server.daemon_threads = True  # a connection left open never blocks the exit
    threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True).start()
    services.redis = server
    return f"redis://127.0.0.1:{server.server_address[1]}/0"


def _start_webhooks(
    config: MutableMapping[str, Any],
    services: Services,
    host: str,
    port: int,
    environ: Mapping[str, str],
) -> None:
    from .webhooks import RECEIVER_PATH, SECRET_KEY, URL_KEY, WORKER_KEY

    state = str(config.get("OBITOX_STATE_BACKEND", ""))
    if config.get("OBITOX_RQ_REDIS_URL"):
        logger.info(
            "Webhooks: RQ on %s (OBITOX_RQ_REDIS_URL)", redact_url(config["OBITOX_RQ_REDIS_URL"])
        )
    elif state.startswith(("redis://", "rediss://", "unix://")):
        logger.info("Webhooks: RQ on the state Redis %s", redact_url(state))
    else:
        config["OBITOX_RQ_REDIS_URL"] = _start_embedded_redis(services)
        logger.info(
            "Webhooks: RQ on an embedded fakeredis server at %s", config["OBITOX_RQ_REDIS_URL"]
        )

    config[URL_KEY] = _local_url(host, port) + RECEIVER_PATH
    config[SECRET_KEY] = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    # The demo delivers to itself, on a loopback (or private) address.
    config.setdefault("OBITOX_WEBHOOK_ALLOW_PRIVATE", True)

    env = dict(environ)
    env.update(
        {
            name: _env_value(value)
            for name, value in config.items()
            if (name.startswith("OBITOX_") or name in (URL_KEY, SECRET_KEY)) and value is not None
        }
    )
    env["EXAMPLE_PARENT_PID"] = str(os.getpid())
    services.worker = WorkerProcess(env)
    # For the page's worker health (example_app/webhooks.py); never passed to the worker.
    config[WORKER_KEY] = services.worker
    logger.info(
        "Webhooks: delivered to %s by `flask obitox worker` (pid %d)",
        config[URL_KEY],
        services.worker.pid,
    )


def start_services(
    config: MutableMapping[str, Any],
    *,
    host: str = "127.0.0.1",
    port: int = 5000,
    environ: Mapping[str, str] | None = None,
) -> Services:
    """Fill ``config`` with where S3 and state are, starting embedded ones as needed."""
    environ = environ if environ is not None else {}
    services = Services()

    if config.get("OBITOX_STATE_BACKEND"):
        logger.info("State: %s (OBITOX_STATE_BACKEND)", redact_url(config["OBITOX_STATE_BACKEND"]))
    elif environ.get("REDIS_URL"):
        config["REDIS_URL"] = environ["REDIS_URL"]
        config["OBITOX_STATE_BACKEND"] = environ["REDIS_URL"]
        logger.info("State: Redis at %s (REDIS_URL)", redact_url(environ["REDIS_URL"]))
    else:
        # Not memory://: the worker subprocess runs the processors, and must see the
        # uploads the app completes. The embedded Redis serves RQ too.
        url = _start_embedded_redis(services)
        config["OBITOX_RQ_REDIS_URL"] = url
        config["OBITOX_STATE_BACKEND"] = url.rsplit("/", 1)[0] + "/1"
        logger.info(
            "State: the embedded fakeredis server, database 1, shared with the worker "
            "(set REDIS_URL to use Redis)"
        )

    if config.get("OBITOX_ENDPOINT_URL"):
        config["EXAMPLE_EMBEDDED_S3"] = False
        endpoint = config["OBITOX_ENDPOINT_URL"]
        bucket = config.get("OBITOX_BUCKET")
        logger.info("S3: %s, bucket %r (OBITOX_ENDPOINT_URL)", endpoint, bucket)
        origin = _origins(host, port)[0]
        if bucket and not preflight_ok(endpoint, bucket, origin):
            logger.warning(
                "S3: %s does not answer CORS preflight for PUT from %s: browser uploads will "
                "fail until the bucket's CORS allows it",
                endpoint,
                origin,
            )
    else:
        try:
            _start_moto(config, services, host, port)
        except BaseException:
            services.stop()
            raise
    try:
        _start_webhooks(config, services, host, port, environ)
    except BaseException:
        services.stop()
        raise
    return services
