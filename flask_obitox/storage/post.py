"""Presigned S3 POST policies (browser form uploads), byte-identical to botocore.

``boto3``'s ``generate_presigned_post`` resolves the endpoint and builds a request
object for every call. A POST policy is a base64 JSON document signed with the day's
SigV4 signing key, so this module builds it from what :class:`SigV4Presigner` has
already cached for the bucket (its URL base, credential scope and signing key).
``tests/test_companion.py`` proves the output equal to botocore's for the same clock.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _quote  # json.dumps's own quoting
from typing import NamedTuple

from .signer import SigV4Presigner, _amz_date, _check_expires, _check_key, _check_metadata

__all__ = ["PresignedPost", "presign_post"]

_ALGORITHM = "AWS4-HMAC-SHA256"


class PresignedPost(NamedTuple):
    """What a browser needs: POST a multipart form of ``fields`` + ``file`` to ``url``."""

    url: str
    fields: dict[str, str]


def presign_post(
    presigner: SigV4Presigner,
    bucket: str,
    key: str,
    *,
    content_type: str,
    metadata: Mapping[str, str],
    min_size: int,
    max_size: int,
    expires_in: int,
    extra_fields: Mapping[str, str] | None = None,
    now: datetime.datetime | None = None,
) -> PresignedPost:
    """The same answer as ``client.generate_presigned_post(bucket, key, Fields=fields,
    Conditions=conditions, ExpiresIn=expires_in)`` with ``fields`` the Content-Type and
    ``x-amz-meta-*`` values and ``conditions`` a ``content-length-range`` of
    ``[min_size, max_size]`` followed by each field as an exact match; ``extra_fields``
    (an upload profile's ``Cache-Control``, ``x-amz-server-side-encryption``...) are
    fields after the metadata ones, so storage refuses a form that drops or changes one.

    The size range is what storage enforces: a body outside it is refused by S3 itself.
    """
    _check_key(key)
    _check_expires(expires_in)
    _check_metadata(metadata)
    target = presigner.target(bucket)
    amz_date = _amz_date(now)
    datestamp = amz_date[:8]
    credentials, day = presigner.signing_key(datestamp, target)
    # The policy expires ``expires_in`` after the signing instant (``20261121T083000Z``);
    # built by hand: strptime/strftime were a tenth of the route's time.
    signed_at = datetime.datetime(
        int(amz_date[0:4]),
        int(amz_date[4:6]),
        int(amz_date[6:8]),
        int(amz_date[9:11]),
        int(amz_date[11:13]),
        int(amz_date[13:15]),
    )
    end = signed_at + datetime.timedelta(seconds=expires_in)
    expiration = (
        f"{end.year:04d}-{end.month:02d}-{end.day:02d}T"
        f"{end.hour:02d}:{end.minute:02d}:{end.second:02d}Z"
    )
    fields: dict[str, str] = {"Content-Type": content_type}
    for name, value in metadata.items():
        fields[f"x-amz-meta-{name}"] = value
    if extra_fields:
        fields.update(extra_fields)
    signing = {
        "key": key,
        "x-amz-algorithm": _ALGORITHM,
        "x-amz-credential": f"{credentials.access_key}/{datestamp}{target.scope_tail}",
        "x-amz-date": amz_date,
    }
    if credentials.token is not None:
        signing["x-amz-security-token"] = credentials.token
    # Each an exact-match condition, in botocore's order.
    conditions = [*fields.items(), ("bucket", bucket), *signing.items()]
    fields.update(signing)
    document = _policy_document(expiration, min_size, max_size, conditions)
    policy = base64.b64encode(document.encode()).decode()
    fields["policy"] = policy
    inner = day.inner.copy()
    inner.update(policy.encode())
    outer = day.outer.copy()
    outer.update(inner.digest())
    fields["x-amz-signature"] = outer.hexdigest()
    return PresignedPost(bucket_url(presigner, bucket), fields)


def _policy_document(
    expiration: str, min_size: int, max_size: int, conditions: list[tuple[str, str]]
) -> str:
    """``json.dumps({"expiration": expiration, "conditions": [["content-length-range",
    min_size, max_size], {name: value}, ...]})``, byte for byte (botocore's policy), built
    by hand: ``json.dumps`` makes an encoder per call, a third of this module's work."""
    items = [f'["content-length-range", {int(min_size)}, {int(max_size)}]']
    items += [f"{{{_quote(name)}: {_quote(value)}}}" for name, value in conditions]
    return f'{{"expiration": {_quote(expiration)}, "conditions": [{", ".join(items)}]}}'


def bucket_url(presigner: SigV4Presigner, bucket: str) -> str:
    """The bucket's root URL, as botocore gives it for a POST (``url + key`` is the
    object for path-style and virtual-hosted endpoints alike, once a ``/`` is put
    between them when the URL has none)."""
    target = presigner.target(bucket)
    return target.base if target.path else target.base + "/"
