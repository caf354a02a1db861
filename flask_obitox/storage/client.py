"""S3 access: one boto3 client per storage settings, created once and reused.

Creating a boto3 client costs ~250 ms and may resolve credentials over the network
(instance metadata), so it happens on first use, never at ``init_app`` and never per
request. boto3 clients are thread-safe; one is shared by every request thread.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ..errors import ObitoXError, StorageUnavailable
from .post import PresignedPost, presign_post
from .signer import PresignerUnsupportedError, PutObjectSpec, SigV4Presigner, UploadPartSpec

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@dataclasses.dataclass(frozen=True, slots=True)
class StorageSettings:
    """Where objects go and how to reach it; hashable, so it keys the client cache."""

    bucket: str
    region: str | None = None
    endpoint_url: str | None = None
    addressing_style: str = "auto"
    aws_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.endpoint_url or 's3'}/{self.bucket}"


#: What a HEAD answers about how an object is stored (an upload profile's settings).
STORED_FIELDS = (
    "ServerSideEncryption",
    "SSEKMSKeyId",
    "StorageClass",
    "CacheControl",
    "ContentDisposition",
)


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    etag: str
    content_type: str | None
    #: boto3 name -> value of the :data:`STORED_FIELDS` the HEAD answered.
    stored: Mapping[str, str] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class PartInfo:
    """One part storage holds for a multipart upload (ETag without quotes)."""

    part_number: int
    etag: str
    size: int


@dataclasses.dataclass(frozen=True, slots=True)
class PendingMultipart:
    """A multipart upload storage still holds open (from ListMultipartUploads)."""

    key: str
    upload_id: str
    initiated: float  # unix seconds


#: ListParts and ListMultipartUploads return at most this many entries per page.
PAGE_SIZE = 1000

#: Failures of a storage call: botocore's, and configurations the presigner refuses.
STORAGE_ERRORS = (BotoCoreError, ClientError, PresignerUnsupportedError)


def _error_code(error: BaseException | None) -> str:
    """The storage error code of a botocore ``ClientError`` ("" for anything else)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


#: CompleteMultipartUpload errors that mean the parts sent are not the parts held.
_PART_ERRORS = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall"})


def _is_no_such_upload(error: BaseException | None) -> bool:
    return _error_code(error) in ("NoSuchUpload", "404")


def _is_not_found(error: BaseException | None) -> bool:
    return _error_code(error) in ("404", "NoSuchKey", "NoSuchBucket", "NotFound")


def _describe(settings: StorageSettings, error: Exception) -> str:
    where = settings.endpoint_url or f"S3 ({settings.region or 'default region'})"
    if isinstance(error, PresignerUnsupportedError):
        return f"Cannot presign for bucket {settings.bucket!r} at {where}: {error}."
    if isinstance(error, NoCredentialsError):
        return (
            "No storage credentials were found: set OBITOX_AWS_ACCESS_KEY_ID and "
            "OBITOX_AWS_SECRET_ACCESS_KEY or configure boto3's credential chain."
        )
    if isinstance(error, ClientError):
        code = _error_code(error)
        if code == "NoSuchBucket" or (
            code in ("404", "NotFound") and error.operation_name == "HeadBucket"
        ):
            return f"The bucket {settings.bucket!r} does not exist at {where}."
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"Storage at {where} refused access to bucket {settings.bucket!r} ({code})."
        return f"Storage at {where} answered {code or 'an error'} for bucket {settings.bucket!r}."
    return f"Storage at {where} cannot be reached ({type(error).__name__})."


class Storage:
    """Object operations on one bucket, through one cached client and presigner."""

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self._lock = threading.Lock()
        self._client: S3Client | None = None
        self._presigner: SigV4Presigner | None = None

    def unavailable(self, error: Exception) -> StorageUnavailable:
        """The 503 error for a storage failure: one sentence naming the bucket and the
        endpoint, never the credentials."""
        return StorageUnavailable(_describe(self.settings, error))

    def _build(self) -> None:
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": self.settings.addressing_style},  # type: ignore[arg-type]
            connect_timeout=3,
            read_timeout=10,
            retries={"mode": "standard", "max_attempts": 2},
            max_pool_connections=32,
            # Checksums only where S3 requires them: R2, MinIO and older S3-compatible
            # servers reject the CRC32 trailers botocore would otherwise add.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        client = session.client(
            "s3",
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            aws_access_key_id=self.settings.aws_access_key_id,
            aws_secret_access_key=self.settings.aws_secret_access_key,
            config=config,
        )
        self._presigner = SigV4Presigner(client)
        self._client = client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._build()
        assert self._client is not None
        return self._client

    @property
    def presigner(self) -> SigV4Presigner:
        if self._presigner is None:
            self.client  # noqa: B018 - builds both
        assert self._presigner is not None
        return self._presigner

    @contextmanager
    def _calling(self) -> Iterator[None]:
        try:
            yield
        except STORAGE_ERRORS as error:
            raise self.unavailable(error) from error

    def presign_puts(self, specs: Sequence[PutObjectSpec]) -> list[str]:
        """One presigned PUT URL per spec, in order, all signed at the same instant."""
        # A plain try, not ``with self._calling()``: a batch request's hot path.
        try:
            return self.presigner.presign_put_objects(self.bucket, specs)
        except STORAGE_ERRORS as error:
            raise self.unavailable(error) from error

    def head(self, key: str) -> ObjectInfo | None:
        """Size, ETag and type of ``key``, or ``None`` if it does not exist."""
        try:
            with self._calling():
                answer = self.client.head_object(Bucket=self.bucket, Key=key)
        except StorageUnavailable as error:
            if not _is_not_found(error.__cause__):
                raise
            # HEAD answers a bare 404 for a missing bucket too: tell the two apart, so a
            # deleted bucket is a 503 for the operator, not "upload not complete".
            with self._calling():
                self.client.head_bucket(Bucket=self.bucket)
            return None
        stored = cast("Mapping[str, Any]", answer)
        return ObjectInfo(
            size=int(answer["ContentLength"]),
            etag=str(answer.get("ETag", "")).strip('"'),
            content_type=answer.get("ContentType"),
            stored={name: str(stored[name]) for name in STORED_FIELDS if stored.get(name)},
            metadata=dict(answer.get("Metadata") or {}),
        )

    def read_head(self, key: str, length: int, *, etag: str | None = None) -> bytes | None:
        """The first ``length`` bytes of ``key`` (a ranged GET, never the whole object);
        with ``etag``, only of that version of it. ``None`` when it changed since, or is
        gone (a concurrent caller that refused it deleted it)."""
        try:
            with self._calling():
                if etag:
                    answer = self.client.get_object(
                        Bucket=self.bucket,
                        Key=key,
                        Range=f"bytes=0-{length - 1}",
                        IfMatch=f'"{etag}"',
                    )
                else:
                    answer = self.client.get_object(
                        Bucket=self.bucket, Key=key, Range=f"bytes=0-{length - 1}"
                    )
        except StorageUnavailable as error:
            cause = error.__cause__
            if _error_code(cause) in ("PreconditionFailed", "412", "NoSuchKey"):
                return None
            raise
        with self._calling():
            body = answer["Body"]
            try:
                # A server ignoring Range would stream the whole object: read no more.
                return body.read(length)
            finally:
                body.close()

    def open(self, key: str) -> Any:
        """A streaming read of ``key``: a file-like object (``read(n)``, ``close()``),
        the whole object read as it is consumed, never held in memory at once."""
        with self._calling():
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]

    def put(self, key: str, data: bytes | IO[bytes], content_type: str) -> str:
        """Store ``data`` as ``key``; returns its ETag."""
        with self._calling():
            answer = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )
        return str(answer.get("ETag", "")).strip('"')

    def delete(self, key: str) -> None:
        with self._calling():
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def presign_download(self, key: str, *, content_disposition: str, expires_in: int) -> str:
        """A presigned GET of ``key`` answered with ``content_disposition``."""
        try:
            return self.presigner.presign_get_object(
                self.bucket,
                key,
                expires_in=expires_in,
                response_content_disposition=content_disposition,
            )
        except STORAGE_ERRORS as error:
            raise self.unavailable(error) from error

    def object_url(self, key: str) -> str:
        """The object's unsigned URL (its ``Location``); pure CPU after the first call."""
        with self._calling():
            return self.presigner.object_url(self.bucket, key)

    # -- multipart ---------------------------------------------------------------------

    def create_multipart(
        self,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        params: Mapping[str, str] | None = None,
    ) -> str:
        """``CreateMultipartUpload``; returns storage's UploadId (never shown to clients).
        ``params``: more of its parameters (an upload profile's ``ServerSideEncryption``,
        ``StorageClass``...), which the assembled object keeps."""
        with self._calling():
            answer = self.client.create_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                ContentType=content_type,
                Metadata=dict(metadata),
                **cast("dict[str, Any]", dict(params or {})),
            )
        return str(answer["UploadId"])

    def presign_parts(self, key: str, upload_id: str, parts: Sequence[UploadPartSpec]) -> list[str]:
        """One presigned ``UploadPart`` URL per part (Content-Length signed), one instant."""
        try:
            return self.presigner.presign_upload_parts(self.bucket, key, upload_id, parts)
        except STORAGE_ERRORS as error:
            raise self.unavailable(error) from error

    def presign_unsized_parts(
        self, key: str, upload_id: str, part_numbers: Sequence[int], expires_in: int
    ) -> list[str]:
        """One presigned ``UploadPart`` URL per part number, no length signed: for an
        upload whose client chooses its own part sizes (Uppy)."""
        try:
            presigner = self.presigner
            return [
                presigner.presign(
                    "PUT",
                    self.bucket,
                    key,
                    expires_in=expires_in,
                    params={"uploadId": upload_id, "partNumber": str(number)},
                )
                for number in part_numbers
            ]
        except STORAGE_ERRORS as error:
            raise self.unavailable(error) from error

    def presign_post(
        self,
        key: str,
        *,
        content_type: str,
        metadata: Mapping[str, str],
        min_size: int,
        max_size: int,
        expires_in: int,
        extra_fields: Mapping[str, str] | None = None,
    ) -> PresignedPost:
        """A presigned POST policy for ``key`` (browser form uploads), bounding the size
        with a ``content-length-range`` storage enforces; ``extra_fields`` (an upload
        profile's storage headers) are fields the policy requires exactly."""
        try:
            return presign_post(
                self.presigner,
                self.bucket,
                key,
                content_type=content_type,
                metadata=metadata,
                min_size=min_size,
                max_size=max_size,
                expires_in=expires_in,
                extra_fields=extra_fields,
            )
        except STORAGE_ERRORS as error:
            raise self.unavailable(error) from error

    def list_parts(self, key: str, upload_id: str) -> list[PartInfo] | None:
        """Every part storage holds, following all pages (1000 parts each), by number;
        ``None`` when storage no longer knows the upload (completed or aborted)."""
        parts: list[PartInfo] = []
        marker = 0
        try:
            while True:
                with self._calling():
                    page = self.client.list_parts(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MaxParts=PAGE_SIZE,
                        PartNumberMarker=marker,
                    )
                parts.extend(
                    PartInfo(int(p["PartNumber"]), str(p["ETag"]).strip('"'), int(p["Size"]))
                    for p in page.get("Parts", ())
                )
                if not page.get("IsTruncated"):
                    break
                next_marker = int(page.get("NextPartNumberMarker") or 0)
                if next_marker <= marker:  # a server that does not page: stop, don't loop
                    break
                marker = next_marker
        except StorageUnavailable as error:
            if _is_no_such_upload(error.__cause__):
                return None
            raise
        parts.sort(key=lambda p: p.part_number)
        return parts

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> str | None:
        """``CompleteMultipartUpload`` with ``parts`` (sorted); the object's ETag, or
        ``None`` when storage no longer knows the upload (another caller completed it,
        or it was aborted)."""
        try:
            with self._calling():
                answer = self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={
                        "Parts": [
                            {"PartNumber": p.part_number, "ETag": f'"{p.etag}"'} for p in parts
                        ]
                    },
                )
        except StorageUnavailable as error:
            if _is_no_such_upload(error.__cause__):
                return None
            code = _error_code(error.__cause__)
            if code in _PART_ERRORS:
                # The parts changed since they were listed (a part uploaded again): the
                # client's doing, so a 4xx it can act on, not a storage outage.
                raise ObitoXError(
                    "INVALID_PARTS",
                    f"Storage refused the parts ({code}); list them again and retry.",
                    details={"storageCode": code},
                ) from None
            raise
        return str(answer.get("ETag", "")).strip('"')

    def abort_multipart(self, key: str, upload_id: str) -> bool:
        """``AbortMultipartUpload``; ``False`` if storage no longer knew the upload."""
        try:
            with self._calling():
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageUnavailable as error:
            if _is_no_such_upload(error.__cause__):
                return False
            raise
        return True

    def pending_multiparts(self, prefix: str) -> Iterator[PendingMultipart]:
        """Every multipart upload storage holds open under ``prefix``, all pages."""
        markers: dict[str, Any] = {}
        while True:
            with self._calling():
                page = self.client.list_multipart_uploads(
                    Bucket=self.bucket, Prefix=prefix, MaxUploads=PAGE_SIZE, **markers
                )
            for upload in page.get("Uploads", ()):
                yield PendingMultipart(
                    key=str(upload["Key"]),
                    upload_id=str(upload["UploadId"]),
                    initiated=upload["Initiated"].timestamp(),
                )
            if not page.get("IsTruncated"):
                return
            next_key = page.get("NextKeyMarker")
            next_id = page.get("NextUploadIdMarker")
            if not next_key or (markers.get("KeyMarker"), markers.get("UploadIdMarker")) == (
                next_key,
                next_id,
            ):
                return
            markers = {"KeyMarker": next_key, "UploadIdMarker": next_id or ""}


class StorageRegistry:
    """One :class:`Storage` per distinct :class:`StorageSettings`, for the app's life."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._storages: dict[StorageSettings, Storage] = {}

    def get(self, settings: StorageSettings) -> Storage:
        storage = self._storages.get(settings)
        if storage is None:
            with self._lock:
                storage = self._storages.setdefault(settings, Storage(settings))
        return storage


def storage_settings_from(
    value: StorageSettings | Mapping[str, Any], default: StorageSettings
) -> StorageSettings:
    """Settings from a ``storage_resolver`` answer: a :class:`StorageSettings` or a
    mapping of its fields; missing fields come from the app's defaults."""
    if isinstance(value, StorageSettings):
        return value
    unknown = set(value) - {f.name for f in dataclasses.fields(StorageSettings)}
    if unknown:
        raise TypeError(f"storage_resolver returned unknown storage settings: {sorted(unknown)}")
    return dataclasses.replace(default, **value)
