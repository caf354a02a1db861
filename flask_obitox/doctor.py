"""``flask obitox doctor``: check a deployment end to end, one line per part.

Each check answers ✓ (works), ✗ (broken: the line says why and how to fix it) or -
(skipped: not configured, or a check it depends on failed). A check never raises: an
unexpected error is reported as that check's failure, so one broken part never hides
the state of the others.

The checks touch real services: the bucket gets a tiny object under
``OBITOX_KEY_PREFIX`` (written and deleted) and a 1-byte upload through a presigned URL
(also deleted). Nothing else is written.
"""

from __future__ import annotations

import dataclasses
import secrets
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from redis.exceptions import RedisError
from rq import Worker
from rq.scheduler import RQScheduler
from rq.suspension import is_suspended

from .appstate import ObitoXState, get_state
from .config import ConfigError, Profile, load_settings
from .domain.settling import stored_as
from .errors import StateUnavailable
from .state import MemoryStateBackend
from .state.redis import redact_url
from .storage import Storage
from .storage.client import STORAGE_ERRORS
from .storage.cors import verify_cors
from .storage.explain import StorageOperationError, explain, explained
from .storage.lifecycle import abort_days, covering_rule, read_configuration
from .webhooks import WebhookTargetRefused, check_target, webhook_queue, webhooks_for

OK, FAIL, SKIP = "ok", "fail", "skip"
MARKS = {OK: "✓", FAIL: "✗", SKIP: "-"}
#: Where the doctor writes its probe objects, under ``OBITOX_KEY_PREFIX``.
PROBE_FOLDER = ".obitox-doctor"
#: Seconds the probe's HTTP PUT may take.
HTTP_TIMEOUT = 15


@dataclasses.dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check."""

    check: str
    title: str
    status: str
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Verdict(Exception):
    """Ends a check early: ``detail`` is what was found, ``fix`` what to do about it."""

    status = FAIL

    def __init__(self, detail: str, fix: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


class _Failed(_Verdict):
    status = FAIL


class _Skipped(_Verdict):
    status = SKIP


def _storage_fix(error: StorageOperationError) -> str:
    details = error.details
    if details.get("permission"):
        return f"grant {details['permission']} to the app's storage credentials (see the IAM policy in the docs)"
    if details.get("endpoint"):
        return "fix OBITOX_ENDPOINT_URL / OBITOX_REGION or the network path to the storage"
    if details.get("code") in ("NoSuchBucket", "404", "NotFound"):
        return "create the bucket: flask obitox bucket create (or set OBITOX_BUCKET to one that exists)"
    return "see the sentence above"


class Doctor:
    """Runs every check against one app (inside its app context or not)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.ext: ObitoXState = get_state(app)
        self.settings = self.ext.settings
        self.storage: Storage = self.ext.storages.get(self.ext.service.default_storage)
        self._bucket_ok = False
        self._presign_ok = False
        self._queue_ok = False

    # -- plumbing ------------------------------------------------------------------

    def run(self) -> list[CheckResult]:
        checks: list[tuple[str, str, Callable[[], str]]] = [
            ("config", "configuration", self.check_config),
            ("credentials", "storage credentials", self.check_credentials),
            ("bucket", "bucket writable", self.check_bucket),
            ("presign", "presigned upload", self.check_presign),
            ("create-only", "create-only writes", self.check_create_only),
            ("profiles", "upload profiles", self.check_profiles),
            ("cors", "bucket CORS", self.check_cors),
            ("lifecycle", "lifecycle rule", self.check_lifecycle),
            ("state", "state backend", self.check_state),
            ("queue", "RQ queue", self.check_queue),
            ("workers", "RQ workers", self.check_workers),
            ("webhooks", "webhook targets", self.check_webhooks),
        ]
        return [self._run_one(name, title, check) for name, title, check in checks]

    @staticmethod
    def _run_one(name: str, title: str, check: Callable[[], str]) -> CheckResult:
        try:
            detail = check()
        except _Verdict as verdict:
            return CheckResult(name, title, verdict.status, verdict.detail, verdict.fix)
        except StorageOperationError as error:
            return CheckResult(name, title, FAIL, error.message, _storage_fix(error))
        except Exception as error:  # a doctor reports, it never crashes
            return CheckResult(
                name,
                title,
                FAIL,
                f"the check itself failed: {type(error).__name__}: {error}",
                "report this as a bug in flask-obitox",
            )
        return CheckResult(name, title, OK, detail)

    def _needs_bucket(self) -> None:
        if not self._bucket_ok:
            raise _Skipped("skipped: the bucket check failed")

    @contextmanager
    def _probe_key(self, prefix: str | None = None) -> Iterator[str]:
        """A fresh key under the prefix, deleted afterwards even if the check failed."""
        prefix = self.settings.key_prefix if prefix is None else prefix
        key = f"{prefix}{PROBE_FOLDER}/{secrets.token_hex(8)}"
        try:
            yield key
        finally:
            # The check has reported what failed already; the key is unique, so a
            # delete that fails too leaves nothing another check could trip over.
            with suppress(*STORAGE_ERRORS):
                self.storage.client.delete_object(Bucket=self.storage.bucket, Key=key)

    # -- the checks ----------------------------------------------------------------

    def check_config(self) -> str:
        try:
            settings = load_settings(dict(self.app.config))
        except ConfigError as error:
            raise _Failed(str(error), "fix the key named above") from None
        hooks = self.ext.hooks
        if hooks.identity_loader is None and not settings.allow_anonymous:
            raise _Failed(
                "no @obitox.identity_loader is registered: every upload route answers 401",
                "register one: @obitox.identity_loader returning the caller's id",
            )
        where = settings.endpoint_url or f"AWS S3 ({settings.region or 'default region'})"
        notes = [f"bucket {settings.bucket!r} at {where}", f"routes under {settings.url_prefix}"]
        if settings.allow_anonymous:
            notes.append("OBITOX_ALLOW_ANONYMOUS is on: every caller shares one owner")
        if hooks.admin_loader is None:
            notes.append("no admin_loader: the admin routes answer 403")
        return "; ".join(notes)

    def check_credentials(self) -> str:
        try:
            signer: Any = getattr(self.storage.client, "_request_signer")  # noqa: B009
            credentials = signer._credentials
            frozen = credentials.get_frozen_credentials() if credentials is not None else None
        except STORAGE_ERRORS as error:
            raise _Failed(explain(self.storage.settings, error)[0], "fix the credentials") from None
        if frozen is None or not frozen.access_key:
            raise _Failed(
                "no storage credentials were found",
                "set OBITOX_AWS_ACCESS_KEY_ID and OBITOX_AWS_SECRET_ACCESS_KEY, or give the "
                "process credentials through boto3's chain (environment, ~/.aws, a role)",
            )
        source = {
            "explicit": "OBITOX_AWS_ACCESS_KEY_ID",
            "env": "the environment",
            "shared-credentials-file": "~/.aws/credentials",
            "config-file": "~/.aws/config",
            "iam-role": "the instance role",
            "container-role": "the container role",
            "assume-role": "an assumed role",
            "sso": "AWS SSO",
        }.get(credentials.method, credentials.method)
        key = frozen.access_key
        shown = f"{key[:4]}…{key[-2:]}" if len(key) > 8 else "…"
        temporary = ", temporary (with a session token)" if frozen.token else ""
        return f"access key {shown} from {source}{temporary}"

    def check_bucket(self) -> str:
        storage = self.storage
        with explained(storage, "HeadBucket"):
            storage.client.head_bucket(Bucket=storage.bucket)
        with self._probe_key() as key:
            with explained(storage, "PutObject"):
                storage.client.put_object(
                    Bucket=storage.bucket, Key=key, Body=b"obitox", ContentType="text/plain"
                )
            with explained(storage, "DeleteObject"):
                storage.client.delete_object(Bucket=storage.bucket, Key=key)
        self._bucket_ok = True
        return f"bucket {storage.bucket!r}: HEAD, then a 6-byte object written and deleted under {self.settings.key_prefix or '/'}"

    def check_presign(self) -> str:
        self._needs_bucket()
        storage = self.storage
        with self._probe_key() as key:
            with explained(storage):
                url = storage.presigner.presign_put_object(
                    storage.bucket,
                    key,
                    content_type="application/octet-stream",
                    content_length=1,
                    expires_in=60,
                )
            host = urlsplit(url).netloc
            request = urllib.request.Request(  # noqa: S310 - an https/http URL we signed
                url,
                data=b"\x00",
                method="PUT",
                headers={"Content-Type": "application/octet-stream"},
            )
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
                    status = answer.status
            except urllib.error.HTTPError as error:
                raise _Failed(*_explain_http_refusal(error, host)) from None
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise _Failed(
                    f"the signed URL's host {host} cannot be reached from here ({reason}); "
                    "browsers must reach it too",
                    "set OBITOX_ENDPOINT_URL to the storage's public address and check "
                    "OBITOX_ADDRESSING_STYLE (path for MinIO and most self-hosted servers)",
                ) from None
            with explained(storage, "HeadObject"):
                head = storage.client.head_object(Bucket=storage.bucket, Key=key)
            if int(head["ContentLength"]) != 1:
                raise _Failed(
                    f"the signed PUT answered {status} but storage holds "
                    f"{head['ContentLength']} bytes instead of 1",
                    "check that no proxy between the app and storage rewrites bodies",
                )
        self._presign_ok = True
        return f"PUT of 1 byte to a SigV4 URL for {host} answered {status}; HEAD saw it; deleted"

    def check_create_only(self) -> str:
        """Two PUTs with ``If-None-Match: *`` to one scratch key: the second must be 412."""
        if not self.settings.create_only:
            raise _Skipped(
                "OBITOX_CREATE_ONLY is off: a signed URL can overwrite its object until it expires"
            )
        if not self._presign_ok:
            raise _Skipped("skipped: the presigned upload check failed")
        storage = self.storage
        turn_off = (
            "set OBITOX_CREATE_ONLY=False: this store does not honour If-None-Match on PUT "
            "(see docs/production.rst)"
        )
        with self._probe_key() as key:
            with explained(storage):
                url = storage.presigner.presign_put_object(
                    storage.bucket,
                    key,
                    content_type="application/octet-stream",
                    content_length=1,
                    expires_in=60,
                    if_none_match="*",
                )
            host = urlsplit(url).netloc
            first, said = _conditional_put(url)
            if not 200 <= first < 300:
                raise _Failed(
                    f"storage at {host} refused a first PUT signed with If-None-Match: * "
                    f"({first}{said}): every single upload would fail the same way",
                    turn_off,
                )
            second, said = _conditional_put(url)
            if second != 412:
                raise _Failed(
                    f"a second PUT with If-None-Match: * to the same key answered {second}{said} "
                    "instead of 412: this store ignores the header, so a signed URL can "
                    "overwrite its object until it expires",
                    turn_off,
                )
        return "a second PUT with If-None-Match: * to the same key answered 412: signed URLs cannot overwrite"

    def check_profiles(self) -> str:
        """Per profile with storage settings: one byte PUT through a URL signed with its
        headers, under its prefix; HEAD shows them stored; a ranged GET reads it back
        (KMS: the key's kms:GenerateDataKey, then kms:Decrypt); deleted."""
        profiles = self.settings.profiles
        if not profiles:
            raise _Skipped("OBITOX_PROFILES is empty: no upload profile to check")
        if not self._presign_ok:
            raise _Skipped("skipped: the presigned upload check failed")
        return "; ".join(self._check_profile(profile) for profile in profiles.values())

    def _check_profile(self, profile: Profile) -> str:
        name = profile.name
        if not profile.put_headers and not profile.metadata:
            return f"{name!r}: rules only"
        storage = self.storage
        headers = {
            "Content-Type": "application/octet-stream",
            **{f"x-amz-meta-{k}": v for k, v in profile.metadata.items()},
            **dict(profile.put_headers),
        }
        with self._probe_key(profile.settings.key_prefix) as key:
            with explained(storage):
                url = storage.presigner.presign_put_object(
                    storage.bucket,
                    key,
                    content_type="application/octet-stream",
                    content_length=1,
                    expires_in=60,
                    metadata=profile.metadata,
                    headers=profile.put_headers,
                )
            host = urlsplit(url).netloc
            request = urllib.request.Request(  # noqa: S310 - an https/http URL we signed
                url, data=b"\x00", method="PUT", headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT):  # noqa: S310
                    pass
            except urllib.error.HTTPError as error:
                said, fix = _explain_http_refusal(error, host)
                raise _Failed(
                    f"profile {name!r}: {said}", _profile_fix(profile, said, fix)
                ) from None
            except (urllib.error.URLError, OSError) as error:
                raise _Failed(
                    f"profile {name!r}: storage could not be reached ({getattr(error, 'reason', error)})",
                    "run the doctor again: the presigned upload check reached it a moment ago",
                ) from None
            with explained(storage, "HeadObject"):
                info = storage.head(key)
            if info is None:
                raise _Failed(f"profile {name!r}: the PUT answered 2xx but HEAD finds nothing")
            for param, expected in profile.storage_params.items():
                actual = info.stored.get(param)
                if param != "ACL" and not stored_as(param, expected, actual):
                    raise _Failed(
                        f"profile {name!r}: storage accepted {param} {expected!r} but stored "
                        f"{actual!r}; every upload of the profile would be rejected at complete",
                        f"this store does not keep {param}: remove it from the profile, or use "
                        "a store that does (AWS S3 keeps them all)",
                    )
            with explained(storage, "GetObject"):
                storage.read_head(key, 1)
        kept = ", ".join(dict(profile.put_headers)) or "its metadata"
        return f"{name!r}: a PUT with {kept} stored them and read back"

    def check_cors(self) -> str:
        self._needs_bucket()
        origins = self.settings.cors_origins
        if not origins:
            raise _Skipped(
                "OBITOX_CORS_ORIGINS is empty: no browser origin to check",
                "if browsers upload, set OBITOX_CORS_ORIGINS to your pages' origins and run "
                "flask obitox cors setup",
            )
        report = verify_cors(self.storage, None, configured=origins)
        if not report.ok:
            problems = [f"{r.origin}: {'; '.join(r.problems)}" for r in report.origins if not r.ok]
            fix = "flask obitox cors setup"
            if any(r.origin == "*" and not r.ok for r in report.origins):
                fix += ", and flask obitox cors setup --origin '*' for the '*' origin"
            raise _Failed(" | ".join(problems), fix)
        return f"browser uploads work from {', '.join(r.origin for r in report.origins)}"

    def check_lifecycle(self) -> str:
        self._needs_bucket()
        prefix = self.settings.key_prefix
        rules = read_configuration(self.storage).rules
        rule = covering_rule(rules, prefix)
        if rule is None:
            raise _Failed(
                f"no lifecycle rule aborts incomplete multipart uploads under {prefix!r}: "
                "abandoned parts stay stored, and billed, forever",
                "flask obitox lifecycle setup",
            )
        days = rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"]
        detail = f"rule {rule.get('ID') or '(no ID)'} aborts incomplete uploads after {days} days"
        wanted = abort_days(self.settings.upload_ttl)
        if days < wanted:
            raise _Failed(
                f"{detail}, before OBITOX_UPLOAD_TTL ({wanted} days) ends: storage would "
                "reap uploads the app still accepts",
                "flask obitox lifecycle setup (or lengthen that rule)",
            )
        return detail

    def check_state(self) -> str:
        state = self.ext.state
        try:
            latency = state.ping()
        except StateUnavailable as error:
            raise _Failed(
                error.detail,
                "start Redis, or point OBITOX_STATE_BACKEND (or REDIS_URL) at one that runs",
            ) from None
        if isinstance(state, MemoryStateBackend):
            return (
                "memory:// (this process only): use Redis when more than one process serves the app"
            )
        where = getattr(state, "url", type(state).__name__)
        return f"{where} answered PING in {latency * 1000:.1f} ms"

    def _webhook_urls(self) -> list[str]:
        return [endpoint.url for endpoint in webhooks_for(self.app).endpoints]

    def _needs_webhooks(self) -> None:
        if not self._webhook_urls():
            raise _Skipped(
                "no webhook endpoints are configured, so nothing is enqueued",
                "set OBITOX_WEBHOOKS (or call obitox.add_webhook) to deliver upload events",
            )

    def check_queue(self) -> str:
        self._needs_webhooks()
        queue = webhook_queue(self.app)
        where = redact_url(self.settings.rq_redis_url)
        try:
            start = time.perf_counter()
            queue.connection.ping()
            latency = time.perf_counter() - start
            waiting = queue.count
            scheduled = queue.scheduled_job_registry.count
            failed = queue.failed_job_registry.count
        except (RedisError, OSError) as error:
            raise _Failed(
                f"the RQ queue {queue.name!r} on {where} cannot be reached: "
                f"{type(error).__name__}: {error}",
                "start Redis, or point OBITOX_RQ_REDIS_URL (default: the state backend's "
                "Redis) at one that runs",
            ) from None
        self._queue_ok = True
        detail = (
            f"queue {queue.name!r} on {where} answered PING in {latency * 1000:.1f} ms: "
            f"{waiting} waiting, {scheduled} scheduled for retry, {failed} failed"
        )
        if failed:
            detail += " (flask obitox webhooks failed lists them)"
        return detail

    def check_workers(self) -> str:
        self._needs_webhooks()
        if not self._queue_ok:
            raise _Skipped("skipped: the RQ queue check did not pass")
        queue = webhook_queue(self.app)
        connection = queue.connection
        # Worker.all only finds workers whose key has not expired: RQ renews it on every
        # heartbeat, so a worker that died (even by SIGKILL) drops out within its TTL.
        workers = Worker.all(queue=queue)
        if not workers:
            raise _Failed(
                f"no live RQ worker listens on queue {queue.name!r}: deliveries are enqueued "
                "but never sent",
                "run flask obitox worker next to the web app (two, so a deploy never stops "
                "deliveries)",
            )
        if is_suspended(connection):
            raise _Failed(
                f"{len(workers)} RQ worker(s) on {queue.name!r}, but RQ is suspended: they "
                "take no job",
                "rq resume --url <OBITOX_RQ_REDIS_URL>",
            )
        holder = connection.get(RQScheduler.get_locking_key(queue.name))
        if holder is None:
            raise _Failed(
                f"{len(workers)} RQ worker(s) on {queue.name!r}, but no RQ scheduler holds "
                "the queue: failed deliveries are never retried",
                "run the workers with the scheduler: flask obitox worker starts one (a plain "
                "rq worker needs --with-scheduler)",
            )
        names = ", ".join(sorted(worker.name for worker in workers))
        scheduler = holder.decode() if isinstance(holder, bytes) else str(holder)
        return f"{len(workers)} worker(s) on {queue.name!r} ({names}); scheduler {scheduler}"

    def check_webhooks(self) -> str:
        urls = self._webhook_urls()
        if not urls:
            raise _Skipped(
                "no webhook endpoints are configured",
                "set OBITOX_WEBHOOKS (or call obitox.add_webhook) to deliver upload events",
            )
        refused: list[str] = []
        allowed: list[str] = []
        for url in urls:
            try:
                addresses = check_target(url, self.settings)
            except WebhookTargetRefused as error:
                refused.append(str(error))
            else:
                allowed.append(f"{urlsplit(url).hostname} -> {', '.join(addresses)}")
        if refused:
            raise _Failed(
                " ".join(refused),
                "fix the URL, list its host in OBITOX_WEBHOOK_ALLOWED_HOSTS, or, for a "
                "receiver inside your network, set OBITOX_WEBHOOK_ALLOW_PRIVATE = True",
            )
        return "; ".join(allowed)


def _explain_http_refusal(error: urllib.error.HTTPError, host: str) -> tuple[str, str]:
    """Why storage refused the presigned PUT, from its XML error body."""
    try:
        body = error.read(4096).decode("utf-8", "replace")
    except OSError:
        body = ""
    code = _xml_text(body, "Code") or str(error.code)
    message = _xml_text(body, "Message")
    said = f"storage at {host} refused the signed PUT: {error.code} {code}" + (
        f" ({message})" if message else ""
    )
    fixes = {
        "SignatureDoesNotMatch": "the URL was signed for another host or region: check "
        "OBITOX_REGION, OBITOX_ENDPOINT_URL and OBITOX_ADDRESSING_STYLE, and that no proxy "
        "rewrites the Host header",
        "RequestTimeTooSkewed": "synchronise this machine's clock (NTP)",
        "AccessDenied": "grant s3:PutObject on the key prefix to the app's credentials",
        "InvalidAccessKeyId": "check OBITOX_AWS_ACCESS_KEY_ID",
    }
    return said, fixes.get(code, "see storage's answer above")


def _profile_fix(profile: Profile, said: str, fallback: str) -> str:
    """What to do when storage refused a profile's probe PUT."""
    params = profile.storage_params
    if "SSEKMSKeyId" in params or params.get("ServerSideEncryption") == "aws:kms":
        key = params.get("SSEKMSKeyId", "the bucket's aws/s3 key")
        kms = (
            f"check that the KMS key {key} exists in the bucket's region and that the app's "
            "credentials may use it (kms:GenerateDataKey to write, kms:Decrypt to read and for "
            "multipart uploads; see docs/profiles.rst)"
        )
        if "KMS" in said or "AccessDenied" in said:
            return kms
    if "StorageClass" in params and "StorageClass" in said:
        return f"this store does not offer {params['StorageClass']}: change the profile's storage_class"
    return fallback


def _conditional_put(url: str) -> tuple[int, str]:
    """PUT one byte with ``If-None-Match: *``: the status, and storage's error code as
    ``" Code"`` (or ``""``)."""
    request = urllib.request.Request(  # noqa: S310 - an https/http URL we signed
        url,
        data=b"\x00",
        method="PUT",
        headers={"Content-Type": "application/octet-stream", "If-None-Match": "*"},
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310
            return int(answer.status), ""
    except urllib.error.HTTPError as error:
        try:
            body = error.read(4096).decode("utf-8", "replace")
        except OSError:
            body = ""
        code = _xml_text(body, "Code")
        return error.code, f" {code}" if code else ""
    except (urllib.error.URLError, OSError) as error:
        raise _Failed(
            f"storage could not be reached for the conditional PUT ({getattr(error, 'reason', error)})",
            "run the doctor again: the presigned upload check reached it a moment ago",
        ) from None


def _xml_text(body: str, tag: str) -> str | None:
    start = body.find(f"<{tag}>")
    end = body.find(f"</{tag}>", start)
    if start < 0 or end < 0:
        return None
    return body[start + len(tag) + 2 : end].strip() or None


def run_checks(app: Flask) -> list[CheckResult]:
    """Every doctor check against ``app``, in order."""
    return Doctor(app).run()


def render_table(results: list[CheckResult], width: int = 100) -> str:
    """The results as a table: mark, check, what was found and, when not ✓, the fix."""
    name_width = max(len(r.title) for r in results)
    indent = " " * (name_width + 4)
    lines = []
    for result in results:
        head = f"{MARKS[result.status]} {result.title:<{name_width}}  "
        lines.append(
            textwrap.fill(result.detail, width, initial_indent=head, subsequent_indent=indent)
        )
        if result.fix and result.status != OK:
            lines.append(
                textwrap.fill(
                    f"fix: {result.fix}",
                    width,
                    initial_indent=indent,
                    subsequent_indent=indent + "     ",
                )
            )
    counts = {status: sum(r.status == status for r in results) for status in MARKS}
    lines.append("")
    lines.append(f"{counts[OK]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped")
    return "\n".join(lines)
