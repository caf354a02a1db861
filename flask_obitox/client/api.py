"""``ObitoXClient``: uploads through an ObitoX server, from Python.

The server signs; the bytes go straight to storage. Two pooled HTTP sessions keep
those apart: one talks to the ObitoX server with the caller's auth headers, the other
PUTs to storage with nothing but the signed headers (an ``Authorization`` header next
to a presigned query would make S3 refuse the request). Both keep their connections
alive between requests, which matters as much as concurrency for throughput.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from . import resume as resume_files
from .downloads import safe_filename, stream_to_file
from .errors import ObitoXClientError, StaleResumeFile
from .events import EventStream
from .files import Cancelled, FileIdentity, FileSlice, guess_content_type, resolve
from .reports import REPORT_TIMEOUT, ProgressReporter, ReportSender

#: Parts (or files) sent at once unless told otherwise.
DEFAULT_CONCURRENCY = 4
#: The server signs at most this many part URLs per call.
MAX_PARTS_PER_CALL = 1000
#: The server accepts at most this many files per batch call (its default
#: ``OBITOX_BATCH_MAX_FILES``); larger lists are sent as several batches.
DEFAULT_BATCH_SIZE = 100
#: A signed part URL is re-signed when it has less than this left to live.
URL_EXPIRY_MARGIN = 60.0
#: Statuses worth another try: the request may succeed as it is a moment later.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: The most items the server gives per page of a listing.
MAX_PAGE_SIZE = 100
#: Server codes that mean a resume token can no longer be continued.
GONE_CODES = frozenset({"UPLOAD_NOT_FOUND", "UPLOAD_EXPIRED", "UPLOAD_ABORTED"})

PathLike = str | Path


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    Attempt ``n`` (from 1) that failed waits a random time between half and all of
    ``min(max_delay, base_delay * 2 ** (n - 1))`` before the next one: the jitter keeps
    parallel parts that failed together from retrying together.
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - not a secret


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an upload stands; passed to ``on_progress`` after every chunk.

    ``bytes_sent`` counts bytes storage has taken (or held already, when resuming); it
    goes *down* when a failed attempt's bytes are taken back before a retry.
    ``parts_done``/``total_parts`` count parts of a multipart upload, or files of a
    batch.
    """

    bytes_sent: int
    total_bytes: int
    parts_done: int
    total_parts: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class UploadResult:
    """A completed upload: the server's answer to *complete*."""

    path: Path
    upload_id: str
    key: str
    bucket: str
    size: int
    etag: str
    #: True when a multipart upload continued one that an earlier run began.
    resumed: bool = False
    #: The server's whole answer, for fields this class does not name.
    answer: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_answer(
        cls, path: Path, answer: Mapping[str, Any], *, resumed: bool = False
    ) -> UploadResult:
        try:
            return cls(
                path=path,
                upload_id=str(answer["uploadId"]),
                key=str(answer["key"]),
                bucket=str(answer["bucket"]),
                size=int(answer["size"]),
                etag=str(answer["etag"]),
                resumed=resumed,
                answer=dict(answer),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _bad_answer("complete", error) from None


@dataclass(frozen=True, slots=True)
class UploadOutcome:
    """One file of :meth:`ObitoXClient.upload_files`: its result, or why it failed."""

    path: Path
    result: UploadResult | None = None
    error: ObitoXClientError | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


class UploadOutcomes(list[UploadOutcome]):
    """What :meth:`ObitoXClient.upload_files` returns: a list of :class:`UploadOutcome`
    in the order of the paths given, and the group the files joined."""

    #: The ``groupId`` of the group the files joined, or ``None``.
    group_id: str | None

    def __init__(self, outcomes: Iterable[UploadOutcome], group_id: str | None = None) -> None:
        super().__init__(outcomes)
        self.group_id = group_id


@dataclass(frozen=True, slots=True)
class UploadedPart:
    part_number: int
    etag: str
    size: int


@dataclass(frozen=True, slots=True)
class MultipartStatus:
    """The server's resume view (``GET /multipart/<uploadId>``): what storage holds."""

    upload_id: str
    key: str
    status: str
    part_size: int
    total_parts: int
    uploaded_parts: tuple[UploadedPart, ...]
    remaining_parts: tuple[int, ...]
    uploaded_bytes: int
    total_bytes: int
    percentage: float
    #: Every part's ``{partNumber, size, status, etag?}``, status ``pending``,
    #: ``uploading``, ``uploaded`` or ``failed`` (storage's word wins over reports);
    #: empty from a server that does not send them.
    parts: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> MultipartStatus:
        try:
            return cls(
                upload_id=str(answer["uploadId"]),
                key=str(answer["key"]),
                status=str(answer["status"]),
                part_size=int(answer["partSize"]),
                total_parts=int(answer["totalParts"]),
                uploaded_parts=tuple(
                    UploadedPart(int(p["partNumber"]), str(p["etag"]), int(p["size"]))
                    for p in answer["uploadedParts"]
                ),
                remaining_parts=tuple(int(n) for n in answer["remainingParts"]),
                uploaded_bytes=int(answer["uploadedBytes"]),
                total_bytes=int(answer["totalBytes"]),
                percentage=float(answer["percentage"]),
                parts=tuple(dict(p) for p in answer.get("parts") or ()),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _bad_answer("the resume view", error) from None


@dataclass(frozen=True, slots=True)
class _SignedPart:
    url: str
    headers: dict[str, str]
    size: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class _Multipart:
    """A multipart upload being sent: its token and the layout of its parts."""

    token: str
    path: Path
    identity: FileIdentity
    part_size: int
    total_parts: int

    def span(self, part_number: int) -> tuple[int, int]:
        """(offset, length) of a part in the file."""
        offset = (part_number - 1) * self.part_size
        return offset, min(self.part_size, self.identity.size - offset)


def _create_only(headers: Mapping[str, str]) -> bool:
    """Whether a PUT was signed with ``If-None-Match: *`` (the server's
    ``OBITOX_CREATE_ONLY``): storage answers 412 to it once the object exists."""
    return any(k.lower() == "if-none-match" and v.strip() == "*" for k, v in headers.items())


def _bad_answer(what: str, error: BaseException) -> ObitoXClientError:
    return ObitoXClientError(
        "BAD_RESPONSE",
        f"The server's answer to {what} is not what the contract describes: {error!r}",
    )


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class _Tracker:
    """Thread-safe progress, reported in order (the callback runs under the lock)."""

    def __init__(
        self,
        callback: ProgressCallback | None,
        total_bytes: int,
        total_parts: int,
        *,
        bytes_sent: int = 0,
        parts_done: int = 0,
    ) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self.total_bytes = total_bytes
        self.total_parts = total_parts
        self.bytes_sent = bytes_sent
        self.parts_done = parts_done

    def _report(self) -> None:
        if self._callback is not None:
            self._callback(
                Progress(self.bytes_sent, self.total_bytes, self.parts_done, self.total_parts)
            )

    def start(self) -> None:
        with self._lock:
            self._report()

    def sent(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count
            self._report()

    def take_back(self, count: int) -> None:
        if count:
            self.sent(-count)

    def part_done(self) -> None:
        with self._lock:
            self.parts_done += 1
            self._report()


class _Reported:
    """A file's bytes counted twice: in the call's progress, and in the file's reports
    to the server."""

    def __init__(self, tracker: _Tracker, reporter: ProgressReporter | None) -> None:
        self._tracker = tracker
        self._reporter = reporter

    def sent(self, count: int) -> None:
        self._tracker.sent(count)
        if self._reporter is not None:
            self._reporter.add(count)

    def take_back(self, count: int) -> None:
        if count:
            self.sent(-count)


class _PartSigner:
    """Signs part URLs on demand, a window at a time, and re-signs expiring ones.

    Signing every part up front would let the URLs of a large file's last parts expire
    (each URL's expiry fits its own part, not the whole file); one call per part would
    cost a round trip each. A window of parts ahead is the middle way.
    """

    def __init__(
        self, client: ObitoXClient, upload: _Multipart, pending: Sequence[int], window: int
    ) -> None:
        self._client = client
        self._upload = upload
        self._pending = dict.fromkeys(pending)  # an ordered set of the parts not yet sent
        self._window = window
        self._signed: dict[int, _SignedPart] = {}
        self._lock = threading.Lock()

    def get(self, part_number: int, *, fresh: bool = False) -> _SignedPart:
        with self._lock:
            part = self._signed.get(part_number)
            if part is None or fresh or part.expires_at - time.time() < URL_EXPIRY_MARGIN:
                self._sign_from(part_number)
                part = self._signed[part_number]
            return part

    def forget(self, part_number: int) -> None:
        """``part_number`` is stored: drop its URL and never sign it again."""
        with self._lock:
            self._signed.pop(part_number, None)
            self._pending.pop(part_number, None)

    def _sign_from(self, part_number: int) -> None:
        ahead = [
            n
            for n in self._pending
            if n > part_number
            and (
                n not in self._signed
                or self._signed[n].expires_at - time.time() < URL_EXPIRY_MARGIN
            )
        ]
        numbers = [part_number, *ahead[: self._window - 1]]
        answer = self._client._call(
            "POST",
            f"/multipart/{self._upload.token}/parts",
            {"partNumbers": numbers},
            idempotent=True,
        )
        try:
            for item in answer["parts"]:
                number = int(item["partNumber"])
                _, length = self._upload.span(number)
                if int(item["size"]) != length:
                    raise ValueError(
                        f"part {number} is {item['size']} bytes on the server, {length} here"
                    )
                self._signed[number] = _SignedPart(
                    url=str(item["url"]),
                    headers={str(k): str(v) for k, v in dict(item.get("headers") or {}).items()},
                    size=length,
                    expires_at=_timestamp(str(item["expiresAt"])),
                )
        except (KeyError, TypeError, ValueError) as error:
            raise _bad_answer("the part signing call", error) from None
        if part_number not in self._signed:
            raise _bad_answer("the part signing call", KeyError(part_number))


def _api_base(url: str) -> str:
    """The routes' base URL: a server URL with no path gets the default ``/obitox``."""
    url = url.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url if parts.path else url + "/obitox"


def _pooled_session(pool_size: int) -> requests.Session:
    session = requests.Session()
    # One pool per host, keeping a connection alive for every part in flight (a call may
    # ask for more concurrency than the client's default; connections open lazily, so
    # room to spare costs nothing).
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 64))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class ObitoXClient:
    """Upload files through an ObitoX server.

    :param base_url: where the ObitoX routes live, e.g. ``https://example.com/obitox``
        (a URL with no path gets ``/obitox``).
    :param auth_headers: sent with every call to the ObitoX server (never to storage),
        e.g. ``{"Authorization": "Bearer ..."}``.
    :param concurrency: default number of parts (or files) sent at once.
    :param retry: backoff for failed PUTs and for server calls that are safe to repeat.
    :param timeout: seconds to wait for a connection or for the next bytes of an answer.
    :param network_type: passed to the server, which sizes URL expiry by it
        (``wifi``, ``4g``...).
    :param report_progress: tell the server how far each upload got
        (``POST /uploads/<uploadId>/progress``), about once a second per file and after
        each part, for its live views; a report that fails never fails the upload.

    Usable as a context manager, which closes the pooled connections.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth_headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        network_type: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        report_progress: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = _api_base(base_url)
        self.concurrency = concurrency
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.network_type = network_type
        self.batch_size = batch_size
        self.report_progress = report_progress
        self._reports = ReportSender()
        self._api = _pooled_session(concurrency)
        self._api.headers.update(auth_headers or {})
        self._storage = _pooled_session(concurrency)

    def close(self) -> None:
        self._reports.close()
        self._api.close()
        self._storage.close()

    def __enter__(self) -> ObitoXClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- calls to the ObitoX server ------------------------------------------------

    def _call(
        self,
        method: str,
        route: str,
        body: Mapping[str, Any] | None = None,
        *,
        idempotent: bool,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One API call, retried while that is safe.

        A 503 is always retried: the server promises that a failed request leaves no
        state behind. Lost connections and gateway errors are retried only for calls
        that mean the same thing twice (signing, status, complete, abort); creating an
        upload twice would leave an orphan.
        """
        url = self.base_url + route
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.retry.attempts
            try:
                response = self._api.request(
                    method, url, json=body, params=params, headers=headers, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                if idempotent and not last:
                    time.sleep(self.retry.delay(attempt))
                    continue
                raise ObitoXClientError(
                    "CONNECTION_ERROR", f"{method} {url} failed: {error}"
                ) from None
            status = response.status_code
            if status == 204:
                return {}
            if status < 400:
                try:
                    answer = response.json()
                except ValueError:
                    answer = None
                if not isinstance(answer, dict):
                    raise _bad_answer(f"{method} {route}", TypeError("not a JSON object"))
                return answer
            if not last and (status == 503 or (idempotent and status in RETRYABLE_STATUSES)):
                time.sleep(self.retry.delay(attempt))
                continue
            raise ObitoXClientError.from_api_response(response)

    def _send_report(self, upload_id: str, body: dict[str, Any]) -> None:
        """One progress report, one attempt, a short wait: it is for display only."""
        url = f"{self.base_url}/uploads/{upload_id}/progress"
        try:
            response = self._api.post(url, json=body, timeout=REPORT_TIMEOUT)
        except requests.RequestException as error:
            raise ObitoXClientError("CONNECTION_ERROR", f"POST {url} failed: {error}") from None
        if response.status_code >= 400:
            refused = ObitoXClientError.from_api_response(response)
            if refused.code == "BAD_RESPONSE" and response.status_code in (404, 405):
                # A server from before progress reports: stop asking it.
                self.report_progress = False
            raise refused

    def _reporter(self, upload_id: str, total: int, sent: int = 0) -> ProgressReporter | None:
        if not self.report_progress:
            return None
        return ProgressReporter(
            self._send_report, upload_id, total, uploaded_bytes=sent, sender=self._reports
        )

    # -- PUTs to storage -----------------------------------------------------------

    def _put(
        self,
        target: Callable[[bool], _SignedPart],
        path: Path,
        offset: int,
        tracker: _Tracker | _Reported,
        cancel: threading.Event,
        *,
        describe: Mapping[str, Any],
    ) -> str:
        """PUT one body with retries; the stored object's or part's ETag.

        ``target(fresh)`` gives the signed URL, re-signed when ``fresh``: a 403 may be
        a URL that expired while earlier parts were being sent, so the first one is
        answered by re-signing at once. For a single upload there is nothing to
        re-sign, and a 403 is final.
        """
        attempt = 0
        fresh = False
        resigned = False
        while True:
            attempt += 1
            signed = target(fresh)
            fresh = False
            body = FileSlice(path, offset, signed.size, on_sent=tracker.sent, cancel=cancel)
            try:
                response = self._storage.put(
                    signed.url,
                    data=body if signed.size else b"",
                    headers=signed.headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as error:
                tracker.take_back(body.sent)
                failure = ObitoXClientError(
                    "CONNECTION_ERROR", f"PUT to storage failed: {error}", details=dict(describe)
                )
            except BaseException:
                tracker.take_back(body.sent)
                raise
            else:
                if response.status_code == 412 and attempt > 1 and _create_only(signed.headers):
                    # A create-only URL refuses to write twice: an earlier attempt landed
                    # and its answer was lost. Completion checks what storage holds.
                    return response.headers.get("ETag") or ""
                if response.status_code < 300:
                    etag = response.headers.get("ETag")
                    if not etag:
                        raise ObitoXClientError(
                            "STORAGE_ERROR",
                            "storage answered the PUT without an ETag",
                            details=dict(describe),
                        )
                    return etag
                tracker.take_back(body.sent)
                failure = ObitoXClientError.from_storage_response(response, **describe)
                can_resign = signed.expires_at != float("inf") and not resigned
                if response.status_code == 403 and can_resign and attempt < self.retry.attempts:
                    fresh = resigned = True
                    continue
                if response.status_code not in RETRYABLE_STATUSES:
                    raise failure
            if attempt >= self.retry.attempts:
                failure.details["attempts"] = attempt
                raise failure
            if cancel.wait(self.retry.delay(attempt)):
                raise Cancelled()

    # -- single and batch ------------------------------------------------------------

    def _spec(
        self,
        path: Path,
        identity: FileIdentity,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        group_id: str | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "filename": path.name,
            "contentType": content_type or guess_content_type(path),
            "size": identity.size,
        }
        if metadata:
            spec["metadata"] = dict(metadata)
        if self.network_type:
            spec["networkType"] = self.network_type
        if group_id is not None:
            spec["groupId"] = group_id
        return spec

    def _send_signed(
        self,
        path: Path,
        identity: FileIdentity,
        signed: Mapping[str, Any],
        tracker: _Tracker,
        cancel: threading.Event,
    ) -> UploadResult:
        """PUT a file to its signed URL, then ask the server to verify and complete it."""
        try:
            upload_id = str(signed["uploadId"])
            part = _SignedPart(
                str(signed["url"]),
                {str(k): str(v) for k, v in dict(signed["headers"]).items()},
                identity.size,
                float("inf"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _bad_answer("the signing call", error) from None
        reporter = self._reporter(upload_id, identity.size)
        try:
            self._put(
                lambda _fresh: part,
                path,
                0,
                _Reported(tracker, reporter),
                cancel,
                describe={"uploadId": upload_id, "path": str(path)},
            )
        finally:
            if reporter is not None:
                reporter.close()
        identity.check(path)
        answer = self._call("POST", f"/uploads/{upload_id}/complete", {}, idempotent=True)
        return UploadResult.from_answer(path, answer)

    def upload_file(
        self,
        path: PathLike,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        on_progress: ProgressCallback | None = None,
        group_id: str | None = None,
        profile: str | None = None,
    ) -> UploadResult:
        """Upload one file with a single signed PUT (``POST /uploads``, PUT, complete).

        :param content_type: declared type; guessed from the name when omitted. The
            server checks the first bytes against it after the upload.
        :param group_id: a group of the caller's to join (:meth:`create_group`); the
            server refuses a sealed, cancelled or deleted one with ``GROUP_CLOSED``.
        :param profile: an upload profile of the server's ``OBITOX_PROFILES``.
        :raises ObitoXClientError: with the server's code (``FILE_TOO_LARGE``,
            ``CONTENT_MISMATCH``...) or a client one (``STORAGE_ERROR``...).
        """
        file = resolve(path)
        identity = FileIdentity.of(file)
        spec = self._spec(file, identity, content_type, metadata, group_id)
        if profile is not None:
            spec["profile"] = profile
        signed = self._call("POST", "/uploads", spec, idempotent=False)
        tracker = _Tracker(on_progress, identity.size, 1)
        tracker.start()
        result = self._send_signed(file, identity, signed, tracker, threading.Event())
        tracker.part_done()
        return result

    def upload_files(
        self,
        paths: Iterable[PathLike],
        *,
        concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        group: str | Mapping[str, Any] | None = None,
        group_id: str | None = None,
        profile: str | None = None,
    ) -> UploadOutcomes:
        """Upload many files: one batch call signs them all, then parallel PUTs, each
        followed by its complete call; ``profile`` (an upload profile of the server's
        ``OBITOX_PROFILES``) applies to every file.

        One file failing (refused by validation, missing, rejected after upload) never
        stops the others: every path gets an :class:`UploadOutcome`, in the order given.
        ``on_progress`` sees the bytes of all files together, and files as parts.

        :param group: make the files a new group: its name, or
            ``{"name", "description", "metadata"}``. The group holds exactly the files
            the server signed and is sealed before the first byte is sent; its
            ``groupId`` is :attr:`UploadOutcomes.group_id` (``GET /groups/<groupId>``
            follows it to ``completed`` or ``failed``). One batch call creates it (the
            batch's ``group`` field); more files than a batch holds are sent as several
            batches into a group created first and sealed after the last.
        :param group_id: join an existing group of the caller's instead.
        """
        if group is not None and group_id is not None:
            raise ValueError("give group (a new group) or group_id (an existing one), not both")
        new_group = {"name": group} if isinstance(group, str) else group
        files = [resolve(p) for p in paths]
        outcomes: list[UploadOutcome | None] = [None] * len(files)
        ready: list[tuple[int, FileIdentity]] = []
        for index, file in enumerate(files):
            try:
                ready.append((index, FileIdentity.of(file)))
            except ObitoXClientError as error:
                outcomes[index] = UploadOutcome(file, error=error)

        envelope: dict[str, Any] = {}
        seal = False
        if group_id is not None:
            envelope["groupId"] = group_id
        elif new_group is not None and len(ready) > self.batch_size:
            group_id = str(self.create_group(**new_group)["groupId"])
            envelope["groupId"] = group_id
            seal = True
        elif new_group is not None and ready:
            envelope["group"] = dict(new_group)

        signed: list[tuple[int, FileIdentity, Mapping[str, Any]]] = []
        for start in range(0, len(ready), self.batch_size):
            chunk = ready[start : start + self.batch_size]
            specs = [self._spec(files[i], identity, None, None) for i, identity in chunk]
            try:
                body: dict[str, Any] = {**envelope, "files": specs}
                if profile is not None:
                    body["profile"] = profile
                answer = self._call("POST", "/uploads/batch", body, idempotent=False)
            except ObitoXClientError as error:
                for index, _ in chunk:
                    outcomes[index] = UploadOutcome(files[index], error=error)
                continue
            try:
                if "group" in envelope:
                    group_id = str(answer["groupId"])
                for upload in answer["uploads"]:
                    index, identity = chunk[int(upload["index"])]
                    signed.append((index, identity, upload))
                for refused in answer["errors"]:
                    index, _ = chunk[int(refused["index"])]
                    details = refused.get("details")
                    outcomes[index] = UploadOutcome(
                        files[index],
                        error=ObitoXClientError(
                            str(refused["error"]),
                            str(refused["message"]),
                            details=details if isinstance(details, dict) else {},
                        ),
                    )
            except (KeyError, TypeError, ValueError, IndexError) as error:
                raise _bad_answer("the batch call", error) from None
        if seal and group_id is not None:
            self.seal_group(group_id)

        tracker = _Tracker(
            on_progress, sum(identity.size for _, identity, _ in signed), len(signed)
        )
        tracker.start()
        cancel = threading.Event()

        def send(index: int, identity: FileIdentity, upload: Mapping[str, Any]) -> UploadOutcome:
            try:
                outcome = UploadOutcome(
                    files[index],
                    result=self._send_signed(files[index], identity, upload, tracker, cancel),
                )
            except Cancelled:
                raise
            except ObitoXClientError as error:
                outcome = UploadOutcome(files[index], error=error)
            tracker.part_done()  # done either way: the count is of files settled
            return outcome

        workers = min(concurrency or self.concurrency, max(len(signed), 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="obitox-put") as pool:
            futures = {pool.submit(send, *item): item[0] for item in signed}
            try:
                for future in futures:
                    outcomes[futures[future]] = future.result()
            except BaseException:
                cancel.set()
                for future in futures:
                    future.cancel()
                raise
        return UploadOutcomes((o for o in outcomes if o is not None), group_id)

    # -- multipart -----------------------------------------------------------------

    def multipart_status(self, token: str) -> MultipartStatus:
        """The resume view of a multipart upload: what storage holds, what remains."""
        return MultipartStatus.from_answer(
            self._call("GET", f"/multipart/{token}", idempotent=True)
        )

    def abort(self, token: str) -> dict[str, Any]:
        """Abort a multipart upload; storage drops the parts it holds."""
        return self._call("DELETE", f"/multipart/{token}", idempotent=True)

    def resumable_upload(
        self,
        path: PathLike,
        part_size: int | None = None,
        concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        resume_file: PathLike | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        restart: bool = False,
        on_restart: Callable[[StaleResumeFile], None] | None = None,
        group_id: str | None = None,
        profile: str | None = None,
    ) -> UploadResult:
        """Upload a file in parts that can be continued after a crash.

        :param part_size: bytes per part (at least 5 MiB); the server's
            ``OBITOX_PART_SIZE`` when omitted. The server may raise it to stay within
            10,000 parts.
        :param concurrency: parts in flight at once.
        :param resume_file: where to remember the upload. If it already describes an
            upload of this same file (same size and mtime) to this server, that upload is
            continued: the server's resume view says which parts storage holds and only
            the others are sent. The file is removed once the upload completes. Without
            it, the token is still in :attr:`ObitoXClientError.details` (``uploadId``)
            of a failure, for :meth:`resume`.
        :param restart: when the resume file's upload can no longer be continued (the
            server does not know it, it expired or it was aborted), begin a new upload of
            the file instead of raising :class:`StaleResumeFile`. An upload that can be
            continued is continued either way.
        :param on_restart: called with the :class:`StaleResumeFile` that ``restart``
            overrode, before the new upload begins (to tell the user).
        :param group_id: a group of the caller's for a new upload to join; an upload
            that is continued stays in the group it began in.
        :param profile: an upload profile of the server's ``OBITOX_PROFILES`` (for a new
            upload; a resumed one keeps the profile it began with).
        :raises StaleResumeFile: the resume file's upload can no longer be continued,
            and ``restart`` is false. What storage held of it is aborted when the server
            still knows it; the resume file stays.
        """
        file = resolve(path)
        identity = FileIdentity.of(file)
        state = Path(resume_file) if resume_file is not None else None
        if state is not None:
            record = self._usable_record(state, file, identity)
            if record is not None:
                upload = _Multipart(
                    record.upload_id, file, identity, record.part_size, record.total_parts
                )
                try:
                    result = self._continue(upload, concurrency, on_progress, resumed=True)
                except ObitoXClientError as error:
                    if error.code not in GONE_CODES:
                        raise
                    stale = self._stale_resume_file(state, upload, error)
                    # Starting over silently would leave the user wondering why a
                    # resumed upload sends every byte again: only when asked to.
                    if not restart:
                        raise stale from error
                    if on_restart is not None:
                        on_restart(stale)
                    resume_files.remove(state)
                else:
                    resume_files.remove(state)
                    return result

        body = self._spec(file, identity, content_type, metadata, group_id)
        if part_size is not None:
            body["partSize"] = part_size
        if profile is not None:
            body["profile"] = profile
        answer = self._call("POST", "/multipart", body, idempotent=False)
        try:
            upload = _Multipart(
                str(answer["uploadId"]),
                file,
                identity,
                int(answer["partSize"]),
                int(answer["totalParts"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _bad_answer("POST /multipart", error) from None
        if state is not None:
            resume_files.save(
                state,
                resume_files.new_record(self.base_url, file, identity, answer, body["contentType"]),
            )
        result = self._continue(upload, concurrency, on_progress, resumed=False, fresh=True)
        if state is not None:
            resume_files.remove(state)
        return result

    def resume(
        self,
        token: str,
        path: PathLike,
        *,
        concurrency: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """Continue the multipart upload ``token`` of ``path``: send only the parts
        storage does not hold, then complete it.

        :raises ObitoXClientError: ``FILE_CHANGED`` when the file's size is not the
            upload's; the server's ``UPLOAD_NOT_FOUND``/``UPLOAD_EXPIRED``/
            ``UPLOAD_ABORTED`` when the token cannot be continued.
        """
        file = resolve(path)
        identity = FileIdentity.of(file)
        view = self.multipart_status(token)
        upload = _Multipart(token, file, identity, view.part_size, view.total_parts)
        return self._continue(upload, concurrency, on_progress, resumed=True, view=view)

    def _stale_resume_file(
        self, state: Path, upload: _Multipart, error: ObitoXClientError
    ) -> StaleResumeFile:
        """Why the resume file's upload cannot be continued, after aborting what of it
        can be aborted (best effort: the server's cleanup aborts it at expiry anyway)."""
        token = upload.token
        ttl = "after OBITOX_UPLOAD_TTL"
        if error.code == "UPLOAD_NOT_FOUND":
            # Nobody here may abort it: the server cannot tell it from another's upload.
            reason = (
                f"the server does not know upload {token} (it was begun with other "
                "credentials, or its record expired)"
            )
            cleanup = f"if nobody continues it, storage cleanup aborts its parts {ttl}"
        else:
            reason = (
                f"upload {token} expired (OBITOX_UPLOAD_TTL)"
                if error.code == "UPLOAD_EXPIRED"
                else f"upload {token} was aborted"
            )
            try:
                self.abort(token)
            except ObitoXClientError as refused:
                cleanup = (
                    "the server's cleanup aborts its parts in storage"
                    if refused.code == "UPLOAD_EXPIRED"
                    else f"aborting it failed ({refused}): storage cleanup aborts it {ttl}"
                )
            else:
                cleanup = "its parts were aborted in storage"
        return StaleResumeFile(
            error,
            path=upload.path,
            resume_file=state,
            upload_id=token,
            reason=reason,
            cleanup=cleanup,
        )

    def _usable_record(
        self, state: Path, file: Path, identity: FileIdentity
    ) -> resume_files.ResumeRecord | None:
        """The resume file's record if it can continue this upload; otherwise clear it
        (aborting its upload when the file changed, so storage drops the stale parts)."""
        try:
            record = resume_files.load(state)
        except resume_files.InvalidResumeFile:
            resume_files.remove(state)
            return None
        if record is None:
            return None
        reason = record.mismatch(self.base_url, file, identity)
        if reason is None:
            return record
        if record.server == self.base_url:
            # Best effort: the server's cleanup aborts it at expiry anyway.
            with contextlib.suppress(ObitoXClientError):
                self.abort(record.upload_id)
        resume_files.remove(state)
        return None

    def _continue(
        self,
        upload: _Multipart,
        concurrency: int | None,
        on_progress: ProgressCallback | None,
        *,
        resumed: bool,
        fresh: bool = False,
        view: MultipartStatus | None = None,
    ) -> UploadResult:
        """Send what storage lacks, then complete; one more round if complete finds a
        part missing (storage is the truth, and it may have dropped one)."""
        for round_ in range(2):
            if fresh and round_ == 0:
                held: dict[int, UploadedPart] = {}
                remaining: Sequence[int] = range(1, upload.total_parts + 1)
            else:
                view = view if view is not None else self.multipart_status(upload.token)
                if view.status == "completed":
                    # A previous run completed it and died before saying so.
                    return self._complete(upload, None, resumed=resumed)
                if view.status in ("aborted", "expired"):
                    raise ObitoXClientError(
                        f"UPLOAD_{view.status.upper()}",
                        f"upload {upload.token} was {view.status}",
                        details={"uploadId": upload.token},
                    )
                if view.total_bytes != upload.identity.size or view.part_size != upload.part_size:
                    raise ObitoXClientError(
                        "FILE_CHANGED",
                        f"upload {upload.token} is for {view.total_bytes} bytes in parts of "
                        f"{view.part_size}; {upload.path} has {upload.identity.size} bytes",
                        details={"uploadId": upload.token, "path": str(upload.path)},
                    )
                # A held part of the wrong size (another client's bytes) is sent again.
                held = {
                    p.part_number: p
                    for p in view.uploaded_parts
                    if 1 <= p.part_number <= upload.total_parts
                    and p.size == upload.span(p.part_number)[1]
                }
                remaining = [n for n in range(1, upload.total_parts + 1) if n not in held]
                view = None
            tracker = _Tracker(
                on_progress,
                upload.identity.size,
                upload.total_parts,
                bytes_sent=sum(p.size for p in held.values()),
                parts_done=len(held),
            )
            tracker.start()
            reporter = self._reporter(upload.token, upload.identity.size, tracker.bytes_sent)
            try:
                etags = {n: p.etag for n, p in held.items()}
                try:
                    etags.update(
                        self._send_parts(upload, remaining, concurrency, tracker, reporter)
                    )
                except ObitoXClientError:
                    if reporter is not None:
                        reporter.drain()  # the failed part's report, before the error
                    raise
                finally:
                    if reporter is not None:
                        reporter.close()
                upload.identity.check(upload.path)
                return self._complete(upload, etags, resumed=resumed)
            except ObitoXClientError as error:
                error.details.setdefault("uploadId", upload.token)
                if round_ == 0 and error.code in ("UPLOAD_NOT_COMPLETE", "INVALID_PARTS"):
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_parts(
        self,
        upload: _Multipart,
        part_numbers: Sequence[int],
        concurrency: int | None,
        tracker: _Tracker,
        reporter: ProgressReporter | None = None,
    ) -> dict[int, str]:
        """PUT ``part_numbers`` in parallel; their ETags. The first part that fails for
        good stops the others (their bytes sent so far are kept by nobody: storage drops
        an incomplete part). Each part's outcome is reported to the server."""
        if not part_numbers:
            return {}
        workers = min(concurrency or self.concurrency, len(part_numbers))
        window = min(MAX_PARTS_PER_CALL, max(4 * workers, 100))
        signer = _PartSigner(self, upload, part_numbers, window)
        cancel = threading.Event()

        def send(number: int) -> str:
            if cancel.is_set():
                raise Cancelled()
            offset, _ = upload.span(number)
            if reporter is not None:
                reporter.part(number, "uploading")
            try:
                etag = self._put(
                    lambda fresh: signer.get(number, fresh=fresh),
                    upload.path,
                    offset,
                    _Reported(tracker, reporter),
                    cancel,
                    describe={"uploadId": upload.token, "partNumber": number},
                )
            except BaseException as error:
                # Set here, not only by the caller: a worker that is free again must
                # not start the next part in the moment before the caller hears of it.
                cancel.set()
                failed = isinstance(error, ObitoXClientError) and not isinstance(error, Cancelled)
                if failed and reporter is not None:
                    reporter.part(number, "failed")
                raise
            signer.forget(number)
            tracker.part_done()
            if reporter is not None:
                reporter.part(number, "uploaded", etag)
            return etag

        etags: dict[int, str] = {}
        with ThreadPoolExecutor(workers, thread_name_prefix="obitox-part") as pool:
            futures: dict[Future[str], int] = {pool.submit(send, n): n for n in part_numbers}
            try:
                done, pending = wait(futures, return_when=FIRST_EXCEPTION)
                if pending:
                    # A part failed for good: stop the others, and hear the running ones
                    # out. A part the failure cancelled can finish before the failing
                    # one's own future does, and the failure is what must be raised.
                    cancel.set()
                    for future in pending:
                        future.cancel()
                    done, _ = wait(futures)
                done = {future for future in done if not future.cancelled()}
                for future in sorted(done, key=lambda f: isinstance(f.exception(), Cancelled)):
                    etags[futures[future]] = future.result()
            except BaseException:
                # Ctrl-C or a part that failed for good: stop the parts still running
                # at their next chunk, and never start the queued ones.
                cancel.set()
                for future in futures:
                    future.cancel()
                raise
        return etags

    def _complete(
        self, upload: _Multipart, etags: Mapping[int, str] | None, *, resumed: bool
    ) -> UploadResult:
        body: dict[str, Any] = {}
        if etags is not None:
            body["parts"] = [{"partNumber": n, "etag": etags[n]} for n in sorted(etags)]
        answer = self._call("POST", f"/multipart/{upload.token}/complete", body, idempotent=True)
        return UploadResult.from_answer(upload.path, answer, resumed=resumed)

    # -- groups --------------------------------------------------------------------

    def create_group(
        self,
        name: str,
        *,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create an empty group (``POST /groups``); its group view, ``pending`` and not
        sealed. Uploads join it with ``group_id=``; :meth:`seal_group` ends the joining."""
        body: dict[str, Any] = {"name": name}
        if description is not None:
            body["description"] = description
        if metadata:
            body["metadata"] = dict(metadata)
        return self._call("POST", "/groups", body, idempotent=False)

    def get_group(self, group_id: str) -> dict[str, Any]:
        """The group view with ``uploads``, its members' upload views in the order they
        joined. Another owner's group is ``GROUP_NOT_FOUND``, like one that never was."""
        return self._call("GET", f"/groups/{group_id}", idempotent=True)

    def list_groups(
        self,
        *,
        status: str | None = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """The caller's group views, newest first, page after page (``GET /groups``
        following ``nextCursor``) until ``limit`` of them or the last one."""
        return self._pages("/groups", "groups", {"status": status}, limit, page_size)

    def seal_group(self, group_id: str) -> dict[str, Any]:
        """No more members (``POST /groups/<groupId>/seal``); idempotent. A sealed group
        reaches ``completed`` or ``failed`` once its members settle."""
        return self._call("POST", f"/groups/{group_id}/seal", {}, idempotent=True)

    def cancel_group(self, group_id: str) -> dict[str, Any]:
        """Abort every member not yet settled; the group becomes ``cancelled``. Idempotent."""
        return self._call("POST", f"/groups/{group_id}/cancel", {}, idempotent=True)

    def delete_group(self, group_id: str) -> dict[str, Any]:
        """Cancel the group, then delete every member's stored object. Idempotent."""
        return self._call("DELETE", f"/groups/{group_id}", idempotent=True)

    # -- listing, deletion, download -----------------------------------------------

    def get_upload(self, upload_id: str) -> dict[str, Any]:
        """The upload view (``GET /uploads/<uploadId>``) of any upload of the caller."""
        return self._call("GET", f"/uploads/{upload_id}", idempotent=True)

    def list_uploads(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        group_id: str | None = None,
        limit: int | None = None,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """The caller's upload views, newest first, page after page (``GET /uploads``
        following ``nextCursor``) until ``limit`` of them or the last one.

        Lazy: a page is asked for when the one before is used up, so
        ``next(client.list_uploads())`` costs one call.

        :param status: only uploads in this status (``completed``, ``pending``...).
        :param kind: ``single`` or ``multipart``.
        :param group_id: only the members of this group.
        :param limit: the most views to yield (``None``: all of them).
        :param page_size: views asked for per call (1..100).
        """
        filters = {"status": status, "kind": kind, "groupId": group_id}
        return self._pages("/uploads", "uploads", filters, limit, page_size)

    def _pages(
        self,
        route: str,
        field: str,
        filters: Mapping[str, str | None],
        limit: int | None,
        page_size: int,
    ) -> Iterator[dict[str, Any]]:
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1 (or None for all)")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        params: dict[str, str | int] = {k: v for k, v in filters.items() if v is not None}

        def pages() -> Iterator[dict[str, Any]]:
            left = limit
            cursor: str | None = None
            while left is None or left > 0:
                query = {**params, "limit": page_size if left is None else min(left, page_size)}
                if cursor is not None:
                    query["cursor"] = cursor
                answer = self._call("GET", route, idempotent=True, params=query)
                items = answer.get(field)
                if not isinstance(items, list):
                    raise _bad_answer(f"GET {route}", KeyError(field))
                yield from items[:left]
                if left is not None:
                    left -= min(len(items), left)
                cursor = answer.get("nextCursor")
                if not cursor or not items:
                    return

        return pages()

    def delete(self, upload_id: str) -> dict[str, Any]:
        """Delete an upload (``DELETE /uploads/<uploadId>``): an open one is aborted in
        storage, a completed one's object (and derived objects) deleted. Its upload view,
        status ``deleted``; idempotent."""
        return self._call("DELETE", f"/uploads/{upload_id}", idempotent=True)

    def download_url(self, upload_id: str, *, inline: bool = False) -> dict[str, Any]:
        """``{url, expiresAt}``: a presigned GET of a completed upload's object (at most
        an hour; ``Content-Disposition: attachment`` with its filename unless
        ``inline``). ``UPLOAD_NOT_COMPLETE`` before it completed."""
        return self._call(
            "GET",
            f"/uploads/{upload_id}/download",
            idempotent=True,
            params={"inline": 1} if inline else None,
            headers={"Accept": "application/json"},
        )

    def download(
        self,
        upload_id: str,
        dest: PathLike | None = None,
        *,
        on_progress: ProgressCallback | None = None,
    ) -> Path:
        """Download a completed upload's object; the path written.

        :param dest: the file to write, or a directory to write the upload's filename
            into (default: the current directory). The bytes go to a temporary file
            beside it, renamed over ``dest`` only once all arrived: a failed download
            leaves no partial file and an existing ``dest`` untouched.
        :param on_progress: a :class:`Progress` after every chunk received
            (``bytes_sent`` counts bytes received; ``parts_done`` is 1 at the end).

        A lost connection or a retryable storage status starts the download over, with
        the client's backoff; an expired URL (403) is asked for again once.
        """
        target = Path(dest) if dest is not None else Path.cwd()
        if target.is_dir():
            view = self.get_upload(upload_id)
            target = target / safe_filename(str(view.get("filename") or ""), upload_id)
        target = resolve(target)
        tracker: _Tracker | None = None

        def on_bytes(count: int, total: int | None) -> None:
            nonlocal tracker
            if tracker is None:
                tracker = _Tracker(on_progress, total or 0, 1)
                tracker.start()
            elif count:
                tracker.sent(count)

        attempt = 0
        resigned = False
        url = str(self.download_url(upload_id)["url"])
        while True:
            attempt += 1
            try:
                stream_to_file(self._storage, url, target, timeout=self.timeout, on_bytes=on_bytes)
            except ObitoXClientError as error:
                error.details.setdefault("uploadId", upload_id)
                if error.status == 403 and not resigned:
                    resigned = True
                    url = str(self.download_url(upload_id)["url"])
                    continue
                retryable = error.status is None or error.status in RETRYABLE_STATUSES
                if not retryable or attempt >= self.retry.attempts:
                    raise
                time.sleep(self.retry.delay(attempt))
                continue
            if tracker is not None:
                tracker.part_done()
            return target

    # -- live events ---------------------------------------------------------------

    def events(
        self,
        group_id: str | None = None,
        upload_id: str | None = None,
        last_event_id: str | None = None,
        *,
        reconnect_attempts: int | None = None,
    ) -> EventStream:
        """The caller's live events (``GET /events``), as they happen: an endless
        iterator of ``{id, type, timestamp, data}`` dicts, ``data`` being the upload or
        group view.

        The stream is open when this returns: every event from then on reaches it. A
        refusal raises here (``UNAUTHENTICATED``; ``INVALID_INPUT`` for a
        ``last_event_id`` the server does not know, e.g. one older than its retention).

        A dropped connection is reopened with ``Last-Event-ID``: the server sends the
        events missed meanwhile (within its ``OBITOX_EVENTS_RETENTION``) and none twice.
        Reconnects back off like the client's retries (and never faster than the
        server's ``retry:``); a connection that delivered events starts the backoff over.

        :param group_id: only events of this group and its members.
        :param upload_id: only events of this upload.
        :param last_event_id: begin after this event (a saved ``event["id"]``).
        :param reconnect_attempts: give up (raise ``CONNECTION_ERROR``) after this many
            failed connections in a row; ``None`` tries forever.

        .. code-block:: python

            with client.events(group_id=gid) as stream:
                for event in stream:
                    if event["type"] == "group.completed":
                        break
        """
        params = {"groupId": group_id, "uploadId": upload_id}
        stream = EventStream(
            self._api,
            self.base_url + "/events",
            {k: v for k, v in params.items() if v is not None},
            last_event_id=last_event_id,
            read_timeout=self.timeout,
            backoff=self.retry,
            max_attempts=reconnect_attempts,
        )
        return stream.open()
