"""Storage failures as sentences an operator can act on.

The upload routes hide storage details from clients (``503 STORAGE_UNAVAILABLE`` with a
generic message). The operator's tools — ``flask obitox cors``, ``lifecycle``,
``doctor`` and the admin routes — are for the people who can fix the bucket, so they
say which permission is missing, which bucket does not exist and which URL does not
answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from ..errors import ObitoXError
from .client import STORAGE_ERRORS, Storage, StorageSettings

#: The IAM action each storage operation needs (IAM names, which differ from the API
#: names: ``PutBucketCors`` is allowed by ``s3:PutBucketCORS``).
IAM_PERMISSIONS: dict[str, str] = {
    "HeadBucket": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "GetBucketCors": "s3:GetBucketCORS",
    "PutBucketCors": "s3:PutBucketCORS",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "PutObject": "s3:PutObject",
    "HeadObject": "s3:GetObject",
    "GetObject": "s3:GetObject",
    "DeleteObject": "s3:DeleteObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "CreateBucket": "s3:CreateBucket",
}

#: Operations on objects: their IAM resource is ``arn:aws:s3:::bucket/key``, not the bucket.
_OBJECT_OPERATIONS = frozenset(
    {
        "PutObject",
        "HeadObject",
        "GetObject",
        "DeleteObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
        "ListParts",
    }
)

_DENIED = frozenset({"AccessDenied", "403", "AllAccessDisabled", "Forbidden"})
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


class StorageOperationError(ObitoXError):
    """A storage call of an operator's tool failed; the message says why and what to do.

    Unlike :class:`~flask_obitox.errors.StorageUnavailable`, whose sentence is generic
    because upload clients see it, this one names the bucket, the endpoint and the
    missing permission: only operators (the CLI, admin routes) receive it.
    """

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__("STORAGE_UNAVAILABLE", message, details=details)


def location_of(settings: StorageSettings) -> str:
    """Where the bucket lives, for a sentence: the endpoint URL or ``AWS S3 (<region>)``."""
    if settings.endpoint_url:
        return settings.endpoint_url
    return f"AWS S3 ({settings.region or 'default region'})"


def _endpoint_of(error: BaseException, settings: StorageSettings) -> str:
    kwargs = getattr(error, "kwargs", None) or {}
    url = kwargs.get("endpoint_url")
    return str(url) if url else location_of(settings)


def explain(
    settings: StorageSettings, error: BaseException, operation: str | None = None
) -> tuple[str, dict[str, Any]]:
    """A sentence and a details dict for ``error``, raised by ``operation`` on the
    bucket of ``settings`` (the operation is read from a ``ClientError`` if not given)."""
    bucket = settings.bucket
    if isinstance(error, ClientError):
        operation = operation or error.operation_name
    details: dict[str, Any] = {"bucket": bucket, "operation": operation}
    where = location_of(settings)

    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return (
            "No usable storage credentials were found: set OBITOX_AWS_ACCESS_KEY_ID and "
            "OBITOX_AWS_SECRET_ACCESS_KEY, or give the process credentials through boto3's "
            "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, an "
            "instance or task role).",
            details,
        )
    if isinstance(error, _UNREACHABLE):
        url = _endpoint_of(error, settings)
        details["endpoint"] = url
        return (
            f"The storage endpoint {url} cannot be reached ({type(error).__name__}): check "
            "OBITOX_ENDPOINT_URL and OBITOX_REGION, DNS, and that this machine may open "
            "connections to it.",
            details,
        )
    if not isinstance(error, ClientError):
        # botocore's messages are sentences already; anything else needs its type.
        said = (
            str(error) if isinstance(error, BotoCoreError) else f"{type(error).__name__}: {error}"
        )
        return f"Storage at {where} failed for bucket {bucket!r}: {said}", details

    body = error.response.get("Error", {})
    code = str(body.get("Code", ""))
    details["code"] = code
    if code == "NoSuchBucket" or (code in ("404", "NotFound") and operation == "HeadBucket"):
        return (
            f"The bucket {bucket!r} does not exist at {where}: create it, or set OBITOX_BUCKET "
            "to the bucket that exists.",
            details,
        )
    if code in _DENIED:
        permission = IAM_PERMISSIONS.get(operation or "")
        resource = f"arn:aws:s3:::{bucket}"
        if operation in _OBJECT_OPERATIONS:
            resource += "/*"
        if permission:
            details["permission"] = permission
            return (
                f"Access denied: the storage credentials may not call {operation} on bucket "
                f"{bucket!r}. Grant the IAM permission {permission} on {resource} to the "
                "role or user the app runs as.",
                details,
            )
        return (
            f"Access denied: the storage credentials may not call {operation or 'this operation'} "
            f"on bucket {bucket!r} at {where}.",
            details,
        )
    if code == "InvalidAccessKeyId":
        return (
            f"Storage at {where} does not know the access key id in use: check "
            "OBITOX_AWS_ACCESS_KEY_ID (or the credentials boto3 found).",
            details,
        )
    if code == "SignatureDoesNotMatch":
        return (
            f"Storage at {where} rejected the request signature: the secret key does not "
            "belong to the access key id (check OBITOX_AWS_SECRET_ACCESS_KEY), or a proxy "
            "rewrote the request.",
            details,
        )
    if code == "RequestTimeTooSkewed":
        return (
            "This machine's clock differs from the storage's by more than 15 minutes, so "
            "every signature is refused: synchronise the clock (NTP).",
            details,
        )
    if code in (
        "PermanentRedirect",
        "AuthorizationHeaderMalformed",
        "IllegalLocationConstraintException",
    ):
        region = body.get("Region") or error.response.get("ResponseMetadata", {}).get(
            "HTTPHeaders", {}
        ).get("x-amz-bucket-region")
        details["region"] = region
        hint = f"set OBITOX_REGION to {region!r}" if region else "set OBITOX_REGION to its region"
        return (
            f"The bucket {bucket!r} is in another region than {settings.region or 'the default'}: "
            f"{hint}.",
            details,
        )
    message = str(body.get("Message", "")).rstrip(".")
    return (
        f"Storage at {where} answered {code or 'an error'} to {operation or 'a request'} on "
        f"bucket {bucket!r}{': ' + message if message else ''}.",
        details,
    )


@contextmanager
def explained(storage: Storage, operation: str | None = None) -> Iterator[None]:
    """Turn a storage failure inside the block into a :class:`StorageOperationError`."""
    try:
        yield
    except STORAGE_ERRORS as error:
        message, details = explain(storage.settings, error, operation)
        raise StorageOperationError(message, details) from error
