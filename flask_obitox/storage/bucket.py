"""Create the bucket ``OBITOX_BUCKET`` names, where ``OBITOX_ENDPOINT_URL`` and
``OBITOX_REGION`` say, for ``flask obitox bucket create``.

The bucket is looked at (``HeadBucket``) before it is created: on AWS ``us-east-1``
``CreateBucket`` answers 200 for a bucket the caller already owns, and resets its ACLs
while doing so, so a bucket that answers is left alone. Outside ``us-east-1`` AWS wants
the region again as the bucket's ``LocationConstraint``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from .client import STORAGE_ERRORS, Storage, _error_code
from .explain import StorageOperationError, explain, location_of

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CreateBucketRequestTypeDef

logger = logging.getLogger("flask_obitox")

#: Regions whose buckets are created without a ``LocationConstraint``: AWS's default
#: region refuses one, and ``auto`` is Cloudflare R2's name for "any region".
NO_LOCATION_CONSTRAINT = frozenset({"us-east-1", "auto"})


@dataclasses.dataclass(frozen=True, slots=True)
class BucketCreation:
    """What :func:`create_bucket` found or did."""

    bucket: str
    #: Where the bucket lives: the endpoint URL, or ``AWS S3 (<region>)``.
    location: str
    #: ``False`` when the bucket existed already (nothing was written).
    created: bool
    #: Whether ``HeadBucket`` answered: ``False`` for a bucket of ours that these
    #: credentials may not list (``s3:ListBucket``), which completing uploads needs.
    reachable: bool = True


def location_constraint(region: str | None) -> str | None:
    """The ``LocationConstraint`` a new bucket in ``region`` needs, or ``None``."""
    if not region or region in NO_LOCATION_CONSTRAINT:
        return None
    return region


def _explained(storage: Storage, error: Exception, operation: str) -> StorageOperationError:
    message, details = explain(storage.settings, error, operation)
    return StorageOperationError(message, details)


def _head(storage: Storage) -> dict[str, Any] | None:
    """``HeadBucket``'s answer; ``None`` when the bucket is missing or hidden (403).
    Unreachable storage and missing credentials raise, explained."""
    try:
        return dict(storage.client.head_bucket(Bucket=storage.bucket))
    except ClientError as error:
        if _error_code(error) in ("404", "NoSuchBucket", "NotFound", "403", "AccessDenied"):
            return None
        raise _explained(storage, error, "HeadBucket") from error
    except STORAGE_ERRORS as error:
        raise _explained(storage, error, "HeadBucket") from error


def _check_region(storage: Storage, answer: dict[str, Any]) -> None:
    """On AWS, refuse a bucket that exists in another region than ``OBITOX_REGION``:
    every URL the app signed would be refused."""
    settings = storage.settings
    region = answer.get("BucketRegion")
    if settings.endpoint_url or not settings.region or not region or region == settings.region:
        return
    raise StorageOperationError(
        f"The bucket {storage.bucket!r} already exists in region {region}, not in "
        f"OBITOX_REGION {settings.region!r}: set OBITOX_REGION = {region!r}.",
        {"bucket": storage.bucket, "operation": "HeadBucket", "region": region},
    )


def _refusal(storage: Storage, error: ClientError, constraint: str | None) -> StorageOperationError:
    """``CreateBucket``'s refusals that :func:`explain` does not word for creation."""
    bucket, location = storage.bucket, location_of(storage.settings)
    code = _error_code(error)
    details: dict[str, Any] = {"bucket": bucket, "operation": "CreateBucket", "code": code}
    if code == "BucketAlreadyExists":
        return StorageOperationError(
            f"The bucket name {bucket!r} is taken by another account at {location} (bucket "
            "names are shared by every user of the storage): set OBITOX_BUCKET to another name.",
            details,
        )
    if code == "InvalidBucketName":
        return StorageOperationError(
            f"{bucket!r} is not a valid bucket name at {location}: use 3 to 63 lower-case "
            "letters, digits, dots and hyphens, starting and ending with a letter or digit.",
            details,
        )
    if code in ("IllegalLocationConstraintException", "InvalidLocationConstraint"):
        asked = f"region {constraint!r}" if constraint else "the default region"
        return StorageOperationError(
            f"Storage at {location} refused to create bucket {bucket!r} in {asked} ({code}): "
            "set OBITOX_REGION to a region this endpoint serves.",
            details,
        )
    return _explained(storage, error, "CreateBucket")


def create_bucket(storage: Storage) -> BucketCreation:
    """Create ``storage``'s bucket unless it exists; say which.

    Raises :class:`~flask_obitox.storage.explain.StorageOperationError` with one
    sentence when storage cannot be reached, refuses the credentials, or the name
    belongs to another account.
    """
    settings = storage.settings
    location = location_of(settings)
    answer = _head(storage)
    if answer is not None:
        _check_region(storage, answer)
        return BucketCreation(storage.bucket, location, created=False)
    constraint = location_constraint(settings.region)
    request: CreateBucketRequestTypeDef = {"Bucket": storage.bucket}
    if constraint:
        request["CreateBucketConfiguration"] = {"LocationConstraint": constraint}  # type: ignore[typeddict-item]
    try:
        storage.client.create_bucket(**request)
    except ClientError as error:
        if _error_code(error) == "BucketAlreadyOwnedByYou":
            return BucketCreation(storage.bucket, location, created=False, reachable=False)
        raise _refusal(storage, error, constraint) from error
    except STORAGE_ERRORS as error:
        raise _explained(storage, error, "CreateBucket") from error
    logger.info("Created bucket %r at %s", storage.bucket, location)
    return BucketCreation(storage.bucket, location, created=True)
