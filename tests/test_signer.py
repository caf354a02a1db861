"""SigV4Presigner against botocore as the oracle: the URLs must be byte-identical.

The oracle calls freeze botocore's clock (``botocore_clock.frozen_botocore_clock``) so
both signers sign the same instant. No network:
fake static credentials, and presigning never talks to S3.
"""

from __future__ import annotations

import base64
import datetime
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal
from unittest import mock
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import botocore.session
import pytest
from botocore import UNSIGNED
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.utils import percent_encode, percent_encode_sequence
from botocore_clock import frozen_botocore_clock
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flask_obitox.domain.removal import content_disposition
from flask_obitox.errors import StorageUnavailable
from flask_obitox.storage.client import Storage, StorageSettings
from flask_obitox.storage.signer import (
    PresignerUnsupportedError,
    PutObjectSpec,
    SigV4Presigner,
    UploadPartSpec,
    _q,
    _q_key,
)

UTC = datetime.UTC
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
# Real STS tokens are base64 and contain "+", "/" and "=", which must be escaped.
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDP+abc/def==" + "x" * 40
FIXED = datetime.datetime(2024, 5, 17, 12, 34, 56, tzinfo=UTC)

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# The generic-path tests make several oracle calls per example: fewer examples keep
# the whole module well under 15 s.
GENERIC_SETTINGS = settings(SETTINGS, max_examples=150)


def make_client(
    region: str,
    *,
    addressing_style: str | None = None,
    endpoint_url: str | None = None,
    token: str | None = None,
    **config: Any,
) -> Any:
    s3: Any = {"addressing_style": addressing_style} if addressing_style else None
    return boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint_url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        aws_session_token=token,
        config=Config(signature_version="s3v4", s3=s3, **config),
    )


# Built once: hypothesis reruns the test bodies, and a client costs ~50 ms.
CLIENTS: dict[str, Any] = {
    "aws-us-east-1-default": make_client("us-east-1"),
    "aws-eu-west-1-default": make_client("eu-west-1"),
    "aws-eu-west-1-virtual": make_client("eu-west-1", addressing_style="virtual"),
    "aws-us-west-2-path": make_client("us-west-2", addressing_style="path"),
    "aws-ap-south-1-token": make_client("ap-south-1", token=SESSION_TOKEN),
    "aws-us-east-1-when-required": make_client(
        "us-east-1",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    ),
    "moto-path": make_client(
        "us-east-1", addressing_style="path", endpoint_url="http://127.0.0.1:5000"
    ),
    "moto-default": make_client("us-east-1", endpoint_url="http://127.0.0.1:5000"),
    "r2": make_client("auto", endpoint_url="https://0123456789abcdef.r2.cloudflarestorage.com"),
    "r2-virtual-token": make_client(
        "auto",
        addressing_style="virtual",
        endpoint_url="https://0123456789abcdef.r2.cloudflarestorage.com",
        token=SESSION_TOKEN,
    ),
    # Upper-case host, explicit default port and a path prefix: botocore keeps them in
    # the URL but signs "host:minio.example.com".
    "custom-prefix": make_client(
        "us-east-1", addressing_style="path", endpoint_url="https://MinIO.Example.com:443/s3/"
    ),
    "ipv6-port": make_client(
        "us-east-1", addressing_style="path", endpoint_url="http://[::1]:9000"
    ),
}
PRESIGNERS = {name: SigV4Presigner(client) for name, client in CLIENTS.items()}


def oracle(
    client: Any,
    operation: str,
    params: Mapping[str, Any],
    expires_in: int,
    now: datetime.datetime,
) -> str:
    """botocore's presigned URL for ``operation`` at the instant ``now``."""
    naive_utc = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    with frozen_botocore_clock(naive_utc):
        url: str = client.generate_presigned_url(
            operation, Params=dict(params), ExpiresIn=expires_in
        )
    return url


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


# -- strategies ---------------------------------------------------------------------

SURROGATES: tuple[Literal["Cs"]] = ("Cs",)

# Key characters: anything S3 can store. Excluded: lone surrogates (category Cs), which
# cannot be UTF-8 encoded (botocore and S3 both reject them), and NUL, which S3 does not
# accept in object keys. Everything else goes in, control characters and non-BMP
# code points included, with the URL-special ASCII characters drawn much more often.
URL_SPECIAL = list(" +%~=&?#/.;:@!$'()*,[]\\^`{|}<>\"\t")
key_chars = st.one_of(
    st.sampled_from(URL_SPECIAL),
    st.characters(exclude_categories=SURROGATES, exclude_characters="\x00"),
)
# For query values and header values: the same mix, NUL allowed (only keys exclude it).
any_chars = st.one_of(
    st.sampled_from(URL_SPECIAL),
    st.characters(exclude_categories=SURROGATES),
)
key_segments = st.one_of(
    st.sampled_from(["", ".", "..", "~", " ", "a b", "+", "%20", "é", "\U0001f600"]),
    st.text(key_chars, max_size=8),
)
keys = st.one_of(
    st.text(key_chars, min_size=1, max_size=64),
    # slash-separated: "//", leading "/", "." and ".." segments (kept verbatim by S3)
    st.lists(key_segments, min_size=1, max_size=6).map("/".join).filter(bool),
)
buckets = st.one_of(
    st.sampled_from(["uploads", "my.dotted.bucket", "b", "bucket-with-dashes", "Caps_Bucket"]),
    st.from_regex(r"\A[a-z0-9][a-z0-9.-]{1,20}[a-z0-9]\Z"),
)
printable_ascii = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
spacey_ascii = st.text(st.one_of(st.just(" "), printable_ascii), max_size=40)
metadata = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=16),
    st.one_of(
        spacey_ascii,
        st.sampled_from(["  leading", "trailing  ", "  inner    spaces  ", "", " "]),
    ),
    max_size=6,
)
checksums = st.binary(min_size=32, max_size=32).map(lambda b: base64.b64encode(b).decode())
content_types = st.one_of(
    st.sampled_from(
        [
            "image/png",
            "application/octet-stream",
            "text/plain; charset=utf-8",
            "  multipart/form-data;   boundary=abc  ",
            # botocore never signs this exact value (see test_auto_content_type_*).
            "application/x-www-form-urlencoded; charset=utf-8",
            "",
        ]
    ),
    st.text(printable_ascii, max_size=60),
)
content_lengths = st.integers(min_value=0, max_value=5 * 2**40)
# "*" is what OBITOX_CREATE_ONLY signs; other values prove the header is signed as
# botocore signs any value (trimmed, inner whitespace collapsed).
if_none_matches = st.one_of(
    st.none(),
    st.just("*"),
    st.sampled_from([" * ", '"etag"']),
    st.text(printable_ascii, max_size=20),
)
upload_ids = st.one_of(
    st.text(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/=",
        min_size=1,
        max_size=120,
    ),
    st.text(any_chars, min_size=1, max_size=20),
)
expires = st.integers(min_value=1, max_value=604_800)
offsets = st.integers(min_value=-12 * 60, max_value=14 * 60).map(
    lambda m: datetime.timezone(datetime.timedelta(minutes=m))
)
instants = st.one_of(
    st.datetimes(
        min_value=datetime.datetime(2000, 1, 1),
        max_value=datetime.datetime(2099, 12, 31),
        timezones=st.one_of(st.just(UTC), offsets),
    ),
    # naive datetimes are taken as UTC
    st.datetimes(
        min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 12, 31)
    ),
)
client_names = st.sampled_from(sorted(CLIENTS))


# -- byte-identical to botocore -----------------------------------------------------


@SETTINGS
@given(
    client_name=client_names,
    bucket=buckets,
    key=keys,
    content_type=content_types,
    content_length=content_lengths,
    checksum=st.none() | checksums,
    meta=st.none() | metadata,
    if_none_match=if_none_matches,
    expires_in=expires,
    now=instants,
)
@example(
    client_name="aws-us-east-1-default",
    bucket="uploads",
    key="/./../a//b/ +~=&?#%/\U0001f600.png",
    content_type="image/png",
    content_length=0,
    checksum=None,
    meta={"note": "  two   spaces  "},
    if_none_match=None,
    expires_in=1,
    now=FIXED,
)
@example(
    client_name="aws-ap-south-1-token",
    bucket="uploads",
    key="uploads/a.png",
    content_type="image/png",
    content_length=5,
    checksum="c2hh",
    meta={"zeta": "1"},
    if_none_match="*",
    expires_in=300,
    now=FIXED,
)
def test_put_object_matches_botocore(
    client_name: str,
    bucket: str,
    key: str,
    content_type: str,
    content_length: int,
    checksum: str | None,
    meta: dict[str, str] | None,
    if_none_match: str | None,
    expires_in: int,
    now: datetime.datetime,
) -> None:
    params: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "ContentType": content_type,
        "ContentLength": content_length,
    }
    if checksum is not None:
        params["ChecksumSHA256"] = checksum
    if meta is not None:
        params["Metadata"] = meta
    if if_none_match is not None:
        params["IfNoneMatch"] = if_none_match
    expected = oracle(CLIENTS[client_name], "put_object", params, expires_in, now)
    ours = PRESIGNERS[client_name].presign_put_object(
        bucket,
        key,
        content_type=content_type,
        content_length=content_length,
        expires_in=expires_in,
        checksum_sha256=checksum,
        metadata=meta,
        if_none_match=if_none_match,
        now=now,
    )
    assert ours == expected


@SETTINGS
@given(
    client_name=client_names,
    bucket=buckets,
    key=keys,
    upload_id=upload_ids,
    part_number=st.integers(min_value=1, max_value=10_000),
    content_length=content_lengths,
    expires_in=expires,
    now=instants,
)
def test_upload_part_matches_botocore(
    client_name: str,
    bucket: str,
    key: str,
    upload_id: str,
    part_number: int,
    content_length: int,
    expires_in: int,
    now: datetime.datetime,
) -> None:
    params = {
        "Bucket": bucket,
        "Key": key,
        "UploadId": upload_id,
        "PartNumber": part_number,
        "ContentLength": content_length,
    }
    expected = oracle(CLIENTS[client_name], "upload_part", params, expires_in, now)
    ours = PRESIGNERS[client_name].presign_upload_part(
        bucket,
        key,
        upload_id=upload_id,
        part_number=part_number,
        content_length=content_length,
        expires_in=expires_in,
        now=now,
    )
    assert ours == expected


@settings(SETTINGS, max_examples=60)
@given(
    client_name=client_names,
    bucket=buckets,
    key=keys,
    upload_id=upload_ids,
    parts=st.lists(
        st.tuples(st.integers(min_value=1, max_value=10_000), content_lengths, expires),
        min_size=1,
        max_size=12,
    ),
    now=instants,
)
def test_upload_parts_batch_matches_botocore(
    client_name: str,
    bucket: str,
    key: str,
    upload_id: str,
    parts: list[tuple[int, int, int]],
    now: datetime.datetime,
) -> None:
    specs = [UploadPartSpec(*part) for part in parts]
    ours = PRESIGNERS[client_name].presign_upload_parts(bucket, key, upload_id, specs, now=now)
    expected = [
        oracle(
            CLIENTS[client_name],
            "upload_part",
            {
                "Bucket": bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number,
                "ContentLength": length,
            },
            expires_in,
            now,
        )
        for number, length, expires_in in parts
    ]
    assert ours == expected


def test_upload_parts_batch_rejects_any_invalid_part(presigner: SigV4Presigner) -> None:
    good = UploadPartSpec(1, 5, 60)
    for bad, error in [
        (UploadPartSpec(0, 5, 60), ValueError),
        (UploadPartSpec(10_001, 5, 60), ValueError),
        (UploadPartSpec(True, 5, 60), TypeError),  # type: ignore[arg-type]
        (UploadPartSpec(2, -1, 60), ValueError),
        (UploadPartSpec(2, 5, 0), ValueError),
    ]:
        with pytest.raises(error):
            presigner.presign_upload_parts("uploads", "k", "u", [good, bad])
    assert presigner.presign_upload_parts("uploads", "k", "u", []) == []


def test_object_url_is_the_unsigned_base_of_a_presigned_url(presigner: SigV4Presigner) -> None:
    url = presigner.presign_get_object("uploads", "a b/é.png", expires_in=60)
    assert presigner.object_url("uploads", "a b/é.png") == url.partition("?")[0]


@SETTINGS
@given(client_name=client_names, bucket=buckets, key=keys, expires_in=expires, now=instants)
def test_get_object_matches_botocore(
    client_name: str, bucket: str, key: str, expires_in: int, now: datetime.datetime
) -> None:
    expected = oracle(
        CLIENTS[client_name], "get_object", {"Bucket": bucket, "Key": key}, expires_in, now
    )
    ours = PRESIGNERS[client_name].presign_get_object(bucket, key, expires_in=expires_in, now=now)
    assert ours == expected


@SETTINGS
@given(
    client_name=client_names,
    key=keys,
    filename=st.text(any_chars, min_size=1, max_size=60),
    inline=st.booleans(),
    expires_in=st.integers(min_value=1, max_value=3600),
    now=instants,
)
def test_download_url_matches_botocore(
    client_name: str, key: str, filename: str, inline: bool, expires_in: int, now: datetime.datetime
) -> None:
    """The download route's presigned GET, with the Content-Disposition it builds for any
    file name, is byte-identical to botocore's."""
    disposition = content_disposition(filename, inline=inline)
    expected = oracle(
        CLIENTS[client_name],
        "get_object",
        {"Bucket": "uploads", "Key": key, "ResponseContentDisposition": disposition},
        expires_in,
        now,
    )
    ours = PRESIGNERS[client_name].presign_get_object(
        "uploads", key, expires_in=expires_in, response_content_disposition=disposition, now=now
    )
    assert ours == expected


@GENERIC_SETTINGS
@given(
    client_name=client_names,
    key=keys,
    disposition=st.text(any_chars, max_size=40),
    version_id=st.text(any_chars, min_size=1, max_size=30),
    expires_in=expires,
)
def test_generic_presign_matches_head_delete_and_get_params(
    client_name: str, key: str, disposition: str, version_id: str, expires_in: int
) -> None:
    client, presigner = CLIENTS[client_name], PRESIGNERS[client_name]
    bucket = "uploads"
    head = oracle(client, "head_object", {"Bucket": bucket, "Key": key}, expires_in, FIXED)
    assert head == presigner.presign("HEAD", bucket, key, expires_in=expires_in, now=FIXED)
    delete = oracle(
        client,
        "delete_object",
        {"Bucket": bucket, "Key": key, "VersionId": version_id},
        expires_in,
        FIXED,
    )
    assert delete == presigner.presign(
        "delete",
        bucket,
        key,
        expires_in=expires_in,
        params={"versionId": version_id},
        now=FIXED,
    )
    get = oracle(
        client,
        "get_object",
        {"Bucket": bucket, "Key": key, "ResponseContentDisposition": disposition},
        expires_in,
        FIXED,
    )
    assert get == presigner.presign(
        "GET",
        bucket,
        key,
        expires_in=expires_in,
        params={"response-content-disposition": disposition},
        now=FIXED,
    )


header_names = st.one_of(
    st.sampled_from(
        [
            "Content-Type",
            "content-type",
            "Content-MD5",
            "Host",
            "User-Agent",  # never signed by botocore
            "Expect",  # never signed by botocore
            "X-Amz-Content-SHA256",  # replaces UNSIGNED-PAYLOAD in the signature
            "x-amz-meta-A",
            "X-AMZ-META-a",  # same header as the previous one, different case
            "x-amz-acl",
        ]
    ),
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1),
)
header_values = st.one_of(
    spacey_ascii,
    st.text(any_chars, max_size=20),
    st.just("application/x-www-form-urlencoded; charset=utf-8"),
)


@GENERIC_SETTINGS
@given(
    client_name=client_names,
    key=keys,
    method=st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "post"]),
    headers=st.dictionaries(header_names, header_values, max_size=6),
    params=st.dictionaries(
        st.text(any_chars, min_size=1, max_size=10),
        st.text(any_chars, max_size=20),
        max_size=4,
    ),
    expires_in=expires,
    now=instants,
)
def test_generic_presign_matches_s3_sigv4_query_auth(
    client_name: str,
    key: str,
    method: str,
    headers: dict[str, str],
    params: dict[str, str],
    expires_in: int,
    now: datetime.datetime,
) -> None:
    """Arbitrary headers and query params against botocore's signer class itself."""
    client, presigner = CLIENTS[client_name], PRESIGNERS[client_name]
    bucket = "uploads"
    ours = presigner.presign(
        method, bucket, key, expires_in=expires_in, headers=headers, params=params, now=now
    )
    # botocore's request URL for this bucket/key, exactly as the client serialises it.
    get_url = oracle(client, "get_object", {"Bucket": bucket, "Key": key}, 1, now)
    url = get_url.partition("?")[0]
    if params:
        url += "?" + percent_encode_sequence(params)
    request = AWSRequest(method=method, url=url, headers=dict(headers))
    request.context = {}
    credential = query(get_url)["X-Amz-Credential"][0].split("/")
    frozen = client._request_signer._credentials.get_frozen_credentials()
    auth = S3SigV4QueryAuth(frozen, credential[3], credential[2], expires=expires_in)
    naive_utc = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    with frozen_botocore_clock(naive_utc):
        auth.add_auth(request)
    assert ours == request.prepare().url


# -- batches ------------------------------------------------------------------------

# ``str.split()`` (botocore's header-value normaliser) splits on every character for
# which ``str.isspace()`` holds: ASCII \t\n\v\f\r and \x1c-\x1f as well as \x85, \xa0,
# \u1680, \u2000-\u200a, \u2028, \u2029, \u202f, \u205f and \u3000.
UNICODE_SPACES = [char for char in map(chr, range(0x110000)) if char.isspace()]
spacey_unicode = st.text(
    st.one_of(st.sampled_from(UNICODE_SPACES), any_chars, printable_ascii), max_size=24
)
batch_content_types = st.one_of(content_types, spacey_unicode)
batch_checksums = st.one_of(st.none(), checksums, spacey_unicode)
batch_if_none_matches = st.one_of(st.none(), st.just("*"), spacey_ascii)
# Metadata names that only differ in case end up in one header, values joined with ",";
# names with edge spaces are stripped in SignedHeaders but not in the canonical headers.
batch_metadata = st.one_of(
    st.none(),
    metadata,
    st.dictionaries(
        st.text("aAbB-_ ", min_size=1, max_size=3),
        st.one_of(spacey_ascii, st.sampled_from(["", " ", " a  b "])),
        max_size=4,
    ),
)


@st.composite
def put_batches(draw: st.DrawFn) -> list[PutObjectSpec]:
    """1-20 specs; their (content type, checksum, metadata) drawn from a few variants,
    as in a real batch (the presigner builds each distinct variant's headers once)."""
    # Variants often share a content type or checksum and differ in the rest only.
    content_type_pool = draw(st.lists(batch_content_types, min_size=1, max_size=2))
    checksum_pool = draw(st.lists(batch_checksums, min_size=1, max_size=2))
    variants = draw(
        st.lists(
            st.tuples(
                st.sampled_from(content_type_pool),
                st.sampled_from(checksum_pool),
                batch_metadata,
                batch_if_none_matches,
                st.just(()) | storage_headers,
            ),
            min_size=1,
            max_size=4,
        )
    )
    specs = []
    for _ in range(draw(st.integers(min_value=1, max_value=20))):
        content_type, checksum, meta, if_none_match, more = draw(st.sampled_from(variants))
        if meta is not None and draw(st.booleans()):
            meta = dict(meta)  # an equal mapping, not the same object
        specs.append(
            PutObjectSpec(
                key=draw(keys),
                content_type=content_type,
                content_length=draw(content_lengths),
                expires_in=draw(expires),
                checksum_sha256=checksum,
                metadata=meta,
                if_none_match=if_none_match,
                headers=more,
            )
        )
    return specs


#: An upload profile's storage headers, as the presigner signs them -> the botocore
#: ``put_object`` parameter that sets each.
HEADER_PARAMS = {
    "Cache-Control": "CacheControl",
    "Content-Disposition": "ContentDisposition",
    "x-amz-acl": "ACL",
    "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-server-side-encryption-aws-kms-key-id": "SSEKMSKeyId",
    "x-amz-storage-class": "StorageClass",
}
header_value = st.one_of(
    st.sampled_from(
        ["AES256", "aws:kms", "alias/docs", "STANDARD_IA", "public, max-age=31536000",
         'attachment; filename="a b.pdf"', "  two   spaces  ", "private"]
    ),
    st.text(printable_ascii, min_size=1, max_size=30),
)  # fmt: skip
#: Any subset of the profile headers, in any order (a profile's order is its config's).
storage_headers = (
    st.dictionaries(st.sampled_from(sorted(HEADER_PARAMS)), header_value, min_size=1)
    .flatmap(lambda d: st.permutations(list(d.items())))
    .map(tuple)
)


@SETTINGS
@given(
    client_name=client_names,
    bucket=buckets,
    key=keys,
    content_type=content_types,
    content_length=content_lengths,
    checksum=st.none() | checksums,
    meta=st.none() | metadata,
    if_none_match=if_none_matches,
    more=storage_headers,
    expires_in=expires,
    now=instants,
)
@example(
    client_name="aws-us-east-1-default",
    bucket="uploads",
    key="uploads/documents/AbC/report.pdf",
    content_type="application/pdf",
    content_length=1234,
    checksum=None,
    meta={"owner": "7"},
    if_none_match="*",
    more=(
        ("Content-Disposition", "attachment"),
        ("x-amz-server-side-encryption", "aws:kms"),
        ("x-amz-server-side-encryption-aws-kms-key-id", "alias/docs"),
        ("x-amz-storage-class", "STANDARD_IA"),
        ("Cache-Control", "private"),
        ("x-amz-acl", "bucket-owner-full-control"),
    ),
    expires_in=300,
    now=FIXED,
)
def test_put_object_with_profile_headers_matches_botocore(
    client_name: str,
    bucket: str,
    key: str,
    content_type: str,
    content_length: int,
    checksum: str | None,
    meta: dict[str, str] | None,
    if_none_match: str | None,
    more: tuple[tuple[str, str], ...],
    expires_in: int,
    now: datetime.datetime,
) -> None:
    """A profile's storage headers (some sort before content-length, some among the
    x-amz-* ones) are signed exactly as botocore signs the put_object parameters."""
    params: dict[str, Any] = {
        "Bucket": bucket,
        "Key": key,
        "ContentType": content_type,
        "ContentLength": content_length,
    }
    if checksum is not None:
        params["ChecksumSHA256"] = checksum
    if meta is not None:
        params["Metadata"] = meta
    if if_none_match is not None:
        params["IfNoneMatch"] = if_none_match
    for header, value in more:
        params[HEADER_PARAMS[header]] = value
    expected = oracle(CLIENTS[client_name], "put_object", params, expires_in, now)
    ours = PRESIGNERS[client_name].presign_put_object(
        bucket,
        key,
        content_type=content_type,
        content_length=content_length,
        expires_in=expires_in,
        checksum_sha256=checksum,
        metadata=meta,
        if_none_match=if_none_match,
        headers=more,
        now=now,
    )
    assert ours == expected
    signed = query(ours)["X-Amz-SignedHeaders"][0].split(";")
    assert {header.lower() for header, _value in more} <= set(signed)


def test_extra_headers_that_cannot_be_signed_are_refused() -> None:
    presigner = PRESIGNERS["aws-us-east-1-default"]
    for name in ("Host", "content-length", "User-Agent"):
        with pytest.raises(ValueError, match="cannot be signed"):
            presigner.presign_put_object(
                "uploads", "k", content_type="a/b", content_length=1, expires_in=60,
                headers=[(name, "x")], now=FIXED,
            )  # fmt: skip


def oracle_puts(
    client: Any, bucket: str, specs: list[PutObjectSpec], now: datetime.datetime
) -> list[str]:
    """botocore's ``put_object`` URL for each spec, all at the instant ``now``."""
    naive_utc = now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now
    urls = []
    with frozen_botocore_clock(naive_utc):
        for spec in specs:
            params: dict[str, Any] = {
                "Bucket": bucket,
                "Key": spec.key,
                "ContentType": spec.content_type,
                "ContentLength": spec.content_length,
            }
            if spec.checksum_sha256 is not None:
                params["ChecksumSHA256"] = spec.checksum_sha256
            if spec.metadata is not None:
                params["Metadata"] = spec.metadata
            if spec.if_none_match is not None:
                params["IfNoneMatch"] = spec.if_none_match
            for header, value in spec.headers:
                params[HEADER_PARAMS[header]] = value
            urls.append(
                client.generate_presigned_url(
                    "put_object", Params=params, ExpiresIn=spec.expires_in
                )
            )
    return urls


@settings(SETTINGS, max_examples=50)
@given(client_name=client_names, bucket=buckets, specs=put_batches(), now=instants)
@example(
    client_name="aws-ap-south-1-token",
    bucket="uploads",
    specs=[
        PutObjectSpec(f"uploads/AbCdEfGhIjKlMnOpQrStUv/holiday photo {i:03d}.jpg",
                      "image/jpeg", 2_000_000 + i, 300 + i, None, {"album": "summer"})
        for i in range(3)
    ] + [
        PutObjectSpec("a/é b/%20(1).png", " image/png\u3000", 0, 1, " x\x85y ", {"A": "1", "a": " 2  3 "}),
        PutObjectSpec("k", "application/x-www-form-urlencoded; charset=utf-8", 1, 604_800),
        PutObjectSpec("k", "image/jpeg", 1, 60, None, {"album": "winter"}),
        PutObjectSpec("k", "image/jpeg", 1, 60, None, {"Album": "summer"}),
        PutObjectSpec("k", "image/jpeg", 1, 60, None, {"b": "summer"}),
        PutObjectSpec("k", "image/jpeg", 1, 60, "c2hh", {"album": "summer"}),
        PutObjectSpec("k", "image/png", 1, 60, "c2hh", {"album": "summer"}),
        PutObjectSpec("k", "image/jpeg", 1, 60, None, {"album": "summer", "x": ""}),
        PutObjectSpec("k", "image/jpeg", 1, 60, None, {"x": "", "album": "summer"}),
        PutObjectSpec("k", "image/jpeg", 1, 60),
        PutObjectSpec("k", "image/jpeg", 1, 60, "c2hh"),
        # Create-only: the same file with and without If-None-Match are two variants.
        PutObjectSpec("k", "image/jpeg", 1, 60, "c2hh", None, "*"),
        PutObjectSpec("k", "image/jpeg", 1, 60, None, {"album": "summer"}, "*"),
        PutObjectSpec("k", "image/jpeg", 1, 60, None, {"album": "summer"}),
        # Profiles: the same file with and without storage headers are two variants.
        PutObjectSpec("k", "image/jpeg", 1, 60, None, {"album": "summer"}, "*", (("Cache-Control", "public"),)),
        PutObjectSpec("k", "application/pdf", 1, 60, None, None, "*", (("Content-Disposition", "attachment"), ("x-amz-server-side-encryption", "AES256"))),
        PutObjectSpec("k", "application/pdf", 1, 60, None, None, "*", (("x-amz-server-side-encryption", "AES256"), ("Content-Disposition", "attachment"))),
        PutObjectSpec("k", "application/x-www-form-urlencoded; charset=utf-8", 1, 60, None, None, "*"),
    ],
    now=FIXED,
)  # fmt: skip
def test_put_objects_batch_matches_botocore(
    client_name: str, bucket: str, specs: list[PutObjectSpec], now: datetime.datetime
) -> None:
    presigner = PRESIGNERS[client_name]
    ours = presigner.presign_put_objects(bucket, specs, now=now)
    assert ours == oracle_puts(CLIENTS[client_name], bucket, specs, now)
    # ... and the single-URL method agrees (it is the one-spec batch).
    assert ours[-1] == presigner.presign_put_object(
        bucket,
        specs[-1].key,
        content_type=specs[-1].content_type,
        content_length=specs[-1].content_length,
        expires_in=specs[-1].expires_in,
        checksum_sha256=specs[-1].checksum_sha256,
        metadata=specs[-1].metadata,
        if_none_match=specs[-1].if_none_match,
        headers=specs[-1].headers,
        now=now,
    )


def test_put_objects_batch_shares_one_instant_and_one_credentials_read() -> None:
    client = make_client("eu-west-1", addressing_style="virtual", token=SESSION_TOKEN)
    presigner = SigV4Presigner(client)
    presigner.presign_get_object("uploads", "warm-up", expires_in=60)  # endpoint discovery
    specs = [PutObjectSpec(f"k {i}", "a/b", i, 60 + i) for i in range(50)]
    credentials = client._request_signer._credentials
    with mock.patch.object(
        credentials, "get_frozen_credentials", wraps=credentials.get_frozen_credentials
    ) as spy:
        urls = presigner.presign_put_objects("uploads", specs)
    assert spy.call_count == 1
    stamps = {query(url)["X-Amz-Date"][0] for url in urls}
    assert len(stamps) == 1
    instant = datetime.datetime.strptime(stamps.pop(), "%Y%m%dT%H%M%SZ")
    assert urls == oracle_puts(client, "uploads", specs, instant)


def test_put_objects_empty_batch() -> None:
    assert PRESIGNERS["aws-us-east-1-default"].presign_put_objects("uploads", []) == []


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (PutObjectSpec("", "a/b", 1, 60), ValueError),
        (PutObjectSpec("k", "a/b", 1, 0), ValueError),
        (PutObjectSpec("k", "a/b", 1, True), TypeError),
        (PutObjectSpec("k", "a/b", -1, 60), ValueError),
        (PutObjectSpec("k", "a/b", 1.0, 60), TypeError),  # type: ignore[arg-type]
        (PutObjectSpec("k", "a/b", 1, 60, None, {"name": "caf\u00e9"}), ValueError),
        (PutObjectSpec("k", "a/b", 1, 60, None, {"caf\u00e9": "x"}), ValueError),
        (PutObjectSpec("k\ud800", "a/b", 1, 60), UnicodeEncodeError),  # as quote() raises
    ],
)
def test_put_objects_rejects_any_invalid_spec(bad: PutObjectSpec, error: type[Exception]) -> None:
    presigner = PRESIGNERS["aws-eu-west-1-virtual"]
    # The metadata values are valid in the first spec and cached: still checked after.
    good = PutObjectSpec("k", "a/b", 1, 60, None, {"name": "cafe"})
    with pytest.raises(error):
        presigner.presign_put_objects("uploads", [good, bad, good])


# -- the quoting helpers ------------------------------------------------------------

# Full unicode but lone surrogates (which ``quote`` cannot encode either), with the
# characters that need escaping or are special to ``quote`` drawn often.
quote_texts = st.text(
    st.one_of(
        st.sampled_from([*URL_SPECIAL, "\x00", "\x7f", "\x80", "\xff", "-", "_", "."]),
        st.characters(exclude_categories=SURROGATES),
    ),
    max_size=40,
)


@settings(SETTINGS, max_examples=300)
@given(text=quote_texts)
@example(text="%")
@example(text="%%25 %")
@example(text="a b%c\u00e9/\U0001f600~")
def test_quoters_equal_urllib_quote(text: str) -> None:
    for _ in range(2):  # the second call takes the memoised replacement plan
        assert _q_key(text) == quote(text, safe="/~")
        assert _q(text) == quote(text, safe="-._~") == percent_encode(text)


def test_quoters_equal_urllib_quote_on_every_code_point() -> None:
    for char in map(chr, range(256)):
        for text in (char, f"a{char}b{char}%"):
            assert _q_key(text) == quote(text, safe="/~")
            assert _q(text) == quote(text, safe="-._~")
    everything = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))
    for start in range(0, len(everything), 4096):
        chunk = everything[start : start + 4096]
        assert _q_key(chunk) == quote(chunk, safe="/~")
        assert _q(chunk) == quote(chunk, safe="-._~")


@pytest.mark.parametrize("quoter", [_q, _q_key])
def test_quoters_reject_lone_surrogates_like_quote(quoter: Callable[[str], str]) -> None:
    with pytest.raises(UnicodeEncodeError):
        quote("a\udc80", safe="/~")
    with pytest.raises(UnicodeEncodeError):
        quoter("a\udc80")


def test_whitespace_set_of_str_split_is_str_isspace() -> None:
    """The batch test above draws header values from UNICODE_SPACES: make sure that set
    is exactly what ``" ".join(value.split())`` (botocore's normaliser) collapses."""
    everything = "x".join(map(chr, range(0x110000)))  # each code point once
    kept = "".join(everything.split())
    assert len(everything) - len(kept) == len(UNICODE_SPACES)
    assert not any(space in kept for space in UNICODE_SPACES)


# -- specific behaviours ------------------------------------------------------------

# Every ASCII character (NUL excluded from keys, see key_chars) plus a few awkward code
# points: hypothesis may well miss that one of them is escaped wrongly.
EVERY_CHAR = [chr(i) for i in range(1, 128)] + ["\u00e9", "\u2028", "\ufeff", "\U0001f600"]


@pytest.mark.parametrize("client_name", ["aws-ap-south-1-token", "moto-path"])
def test_every_character_is_encoded_like_botocore(client_name: str) -> None:
    client, presigner = CLIENTS[client_name], PRESIGNERS[client_name]
    for char in EVERY_CHAR:
        text = f"a{char}b{char}"
        for key in (char, text, f"{char}/{char}"):
            get = oracle(client, "get_object", {"Bucket": "uploads", "Key": key}, 60, FIXED)
            assert get == presigner.presign_get_object("uploads", key, expires_in=60, now=FIXED)
        params = {"Bucket": "uploads", "Key": "k", "UploadId": text, "PartNumber": 1}
        expected = oracle(client, "upload_part", {**params, "ContentLength": 1}, 60, FIXED)
        assert expected == presigner.presign_upload_part(
            "uploads", "k", upload_id=text, part_number=1, content_length=1, expires_in=60,
            now=FIXED,
        )  # fmt: skip
        disposition = {"Bucket": "uploads", "Key": "k", "ResponseContentDisposition": text}
        assert oracle(client, "get_object", disposition, 60, FIXED) == presigner.presign(
            "GET",
            "uploads",
            "k",
            expires_in=60,
            params={"response-content-disposition": text},
            now=FIXED,
        )
        if " " <= char <= "~":  # metadata and Content-Type: printable ASCII
            put = {"Bucket": "uploads", "Key": "k", "ContentType": text, "ContentLength": 1}
            expected = oracle(client, "put_object", {**put, "Metadata": {"m": text}}, 60, FIXED)
            assert expected == presigner.presign_put_object(
                "uploads", "k", content_type=text, content_length=1, metadata={"m": text},
                expires_in=60, now=FIXED,
            )  # fmt: skip


def test_aws_documentation_example() -> None:
    """The worked example of the S3 SigV4 query-string auth docs (independent of botocore)."""
    presigner = PRESIGNERS["aws-us-east-1-default"]
    url = presigner.presign_get_object(
        "examplebucket",
        "test.txt",
        expires_in=86400,
        now=datetime.datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert url == (
        "https://examplebucket.s3.amazonaws.com/test.txt"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_signing_key_rolls_over_at_utc_midnight() -> None:
    client = make_client("eu-west-1", addressing_style="virtual")
    presigner = SigV4Presigner(client)
    before = datetime.datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)
    after = datetime.datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC)
    urls = []
    for now in (before, after, before):  # and back: both days stay cached
        params = {"Bucket": "uploads", "Key": "k", "ContentType": "a/b", "ContentLength": 1}
        ours = presigner.presign_put_object(
            "uploads", "k", content_type="a/b", content_length=1, expires_in=60, now=now
        )
        assert ours == oracle(client, "put_object", params, 60, now)
        urls.append(ours)
    assert "%2F20241231%2Feu-west-1%2F" in urls[0]
    assert "%2F20250101%2Feu-west-1%2F" in urls[1]
    assert urls[2] == urls[0]


def test_local_midnight_is_not_utc_midnight() -> None:
    """An aware ``now`` is converted to UTC before the date is taken."""
    presigner = PRESIGNERS["aws-eu-west-1-virtual"]
    cest = datetime.timezone(datetime.timedelta(hours=2))
    now = datetime.datetime(2025, 1, 1, 1, 0, 0, tzinfo=cest)  # 2024-12-31T23:00Z
    url = presigner.presign_get_object("uploads", "k", expires_in=60, now=now)
    assert query(url)["X-Amz-Date"] == ["20241231T230000Z"]
    assert url == oracle(
        CLIENTS["aws-eu-west-1-virtual"], "get_object", {"Bucket": "uploads", "Key": "k"}, 60, now
    )


def test_default_clock_is_utc_now() -> None:
    presigner = PRESIGNERS["aws-us-west-2-path"]
    before = datetime.datetime.now(UTC).replace(microsecond=0)
    url = presigner.presign_get_object("uploads", "k", expires_in=60)
    after = datetime.datetime.now(UTC)
    stamp = datetime.datetime.strptime(query(url)["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
    assert before <= stamp.replace(tzinfo=UTC) <= after
    assert url == oracle(
        CLIENTS["aws-us-west-2-path"], "get_object", {"Bucket": "uploads", "Key": "k"}, 60, stamp
    )


def test_session_token_is_signed_where_botocore_puts_it() -> None:
    presigner = PRESIGNERS["aws-ap-south-1-token"]
    url = presigner.presign_upload_part(
        "uploads", "k", upload_id="u", part_number=1, content_length=1, expires_in=60, now=FIXED
    )
    q = urlsplit(url).query
    assert q.startswith("uploadId=u&partNumber=1&X-Amz-Algorithm=")
    assert f"&X-Amz-Security-Token={percent_encode(SESSION_TOKEN)}&X-Amz-Signature=" in q
    assert query(url)["X-Amz-Security-Token"] == [SESSION_TOKEN]


def test_no_session_token_without_one() -> None:
    url = PRESIGNERS["aws-eu-west-1-default"].presign_get_object(
        "uploads", "k", expires_in=60, now=FIXED
    )
    assert "X-Amz-Security-Token" not in url


def test_no_unrequested_checksum_is_signed() -> None:
    """botocore skips flexible checksums on presigned requests (``is_presign_request``);
    we must not sign any header the caller did not ask for either."""
    for name, presigner in PRESIGNERS.items():
        put = presigner.presign_put_object(
            "uploads", "k", content_type="a/b", content_length=5, expires_in=60, now=FIXED
        )
        part = presigner.presign_upload_part(
            "uploads", "k", upload_id="u", part_number=2, content_length=5, expires_in=60,
            now=FIXED,
        )  # fmt: skip
        get = presigner.presign_get_object("uploads", "k", expires_in=60, now=FIXED)
        assert query(put)["X-Amz-SignedHeaders"] == ["content-length;content-type;host"], name
        assert query(part)["X-Amz-SignedHeaders"] == ["content-length;host"], name
        # no x-amz-checksum-mode either (botocore adds it to real GetObject calls only)
        assert query(get)["X-Amz-SignedHeaders"] == ["host"], name


def test_supplied_checksum_and_metadata_are_signed() -> None:
    presigner = PRESIGNERS["aws-us-east-1-default"]
    checksum = base64.b64encode(bytes(32)).decode()
    url = presigner.presign_put_object(
        "uploads",
        "k",
        content_type="a/b",
        content_length=5,
        checksum_sha256=checksum,
        metadata={"owner": "me"},
        expires_in=60,
        now=FIXED,
    )
    assert query(url)["X-Amz-SignedHeaders"] == [
        "content-length;content-type;host;x-amz-checksum-sha256;x-amz-meta-owner"
    ]


def test_auto_content_type_is_not_signed_like_botocore() -> None:
    """botocore's SigV4QueryAuth drops exactly this Content-Type from presigned URLs."""
    url = PRESIGNERS["aws-eu-west-1-virtual"].presign_put_object(
        "uploads",
        "k",
        content_type="application/x-www-form-urlencoded; charset=utf-8",
        content_length=5,
        expires_in=60,
        now=FIXED,
    )
    assert query(url)["X-Amz-SignedHeaders"] == ["content-length;host"]


def test_refreshable_credentials_are_reread_on_every_call() -> None:
    current = {"access_key": "AKIAFIRST", "secret_key": "first-secret", "token": "tok-1"}

    def refresh() -> dict[str, str]:
        # Always within the mandatory refresh window: every read refreshes.
        expiry = datetime.datetime.now(UTC) + datetime.timedelta(minutes=5)
        return {**current, "expiry_time": expiry.isoformat()}

    session = botocore.session.get_session()
    credentials = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    session._credentials = credentials  # type: ignore[attr-defined]
    client = boto3.Session(botocore_session=session).client(
        "s3", region_name="eu-west-1", config=Config(signature_version="s3v4")
    )
    presigner = SigV4Presigner(client)
    for access_key, token in (("AKIAFIRST", "tok-1"), ("AKIASECOND", "tok-2")):
        current.update(access_key=access_key, secret_key=f"{access_key}-secret", token=token)
        ours = presigner.presign_get_object("uploads", "k", expires_in=60, now=FIXED)
        assert ours == oracle(client, "get_object", {"Bucket": "uploads", "Key": "k"}, 60, FIXED)
        assert query(ours)["X-Amz-Credential"][0].startswith(access_key + "/")
        assert query(ours)["X-Amz-Security-Token"] == [token]


def test_empty_session_token_is_still_sent_like_botocore() -> None:
    client = make_client("eu-west-1", addressing_style="virtual")
    presigner = SigV4Presigner(client)
    empty = ReadOnlyCredentials(ACCESS_KEY, SECRET_KEY, "")
    with mock.patch.object(
        client._request_signer._credentials, "get_frozen_credentials", return_value=empty
    ):
        ours = presigner.presign_get_object("uploads", "k", expires_in=60, now=FIXED)
        expected = oracle(client, "get_object", {"Bucket": "uploads", "Key": "k"}, 60, FIXED)
    assert ours == expected
    assert "&X-Amz-Security-Token=&" in ours


def test_endpoint_is_resolved_once_per_bucket() -> None:
    client = make_client("eu-west-1")
    presigner = SigV4Presigner(client)
    with mock.patch.object(
        client, "generate_presigned_url", wraps=client.generate_presigned_url
    ) as spy:
        for _ in range(3):
            presigner.presign_get_object("uploads", "a", expires_in=60)
            presigner.presign_get_object("my.dotted.bucket", "a", expires_in=60)
    assert spy.call_count == 2


def test_concurrent_first_use_resolves_once() -> None:
    client = make_client("us-east-1")
    presigner = SigV4Presigner(client)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        results.append(presigner.presign_get_object("uploads", "k", expires_in=60, now=FIXED))

    with mock.patch.object(
        client, "generate_presigned_url", wraps=client.generate_presigned_url
    ) as spy:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert spy.call_count == 1
    assert len(set(results)) == 1


def test_unsigned_client_is_refused() -> None:
    client = boto3.client("s3", region_name="us-east-1", config=Config(signature_version=UNSIGNED))
    with pytest.raises(PresignerUnsupportedError):
        SigV4Presigner(client).presign_get_object("uploads", "k", expires_in=60)


def test_s3_express_bucket_is_refused_without_network() -> None:
    presigner = PRESIGNERS["aws-eu-west-1-virtual"]
    with pytest.raises(PresignerUnsupportedError, match="S3 Express"):
        presigner.presign_get_object("data--euw1-az1--x-s3", "k", expires_in=60)


@pytest.fixture
def presigner() -> SigV4Presigner:
    return PRESIGNERS["aws-eu-west-1-virtual"]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p: p.presign_get_object("uploads", "", expires_in=60), ValueError),
        (lambda p: p.presign_get_object("uploads", "k", expires_in=0), ValueError),
        (lambda p: p.presign_get_object("uploads", "k", expires_in=604_801), ValueError),
        (lambda p: p.presign_get_object("uploads", "k", expires_in=1.5), TypeError),
        (
            lambda p: p.presign_upload_part(
                "uploads", "k", upload_id="u", part_number=0, content_length=1, expires_in=60
            ),
            ValueError,
        ),
        (
            lambda p: p.presign_upload_part(
                "uploads", "k", upload_id="", part_number=1, content_length=1, expires_in=60
            ),
            ValueError,
        ),
        (
            lambda p: p.presign_put_object(
                "uploads", "k", content_type="a/b", content_length=-1, expires_in=60
            ),
            ValueError,
        ),
        (
            lambda p: p.presign_put_object(
                "uploads",
                "k",
                content_type="a/b",
                content_length=1,
                expires_in=60,
                metadata={"name": "caf\u00e9"},
            ),
            ValueError,
        ),
        (lambda p: p.presign("GET /", "uploads", "k", expires_in=60), ValueError),
    ],
)
def test_invalid_input_is_rejected(
    presigner: SigV4Presigner, call: Callable[[SigV4Presigner], str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        call(presigner)


# -- Storage ------------------------------------------------------------------------


def make_storage() -> Storage:
    return Storage(
        StorageSettings(
            bucket="uploads",
            region="eu-west-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
    )


def test_storage_presign_puts_is_the_presigner_batch() -> None:
    storage = make_storage()
    specs = [PutObjectSpec(f"uploads/x/photo {i}.jpg", "image/jpeg", 10 + i, 300) for i in range(3)]
    with mock.patch("flask_obitox.storage.signer._time", return_value=FIXED.timestamp()):
        urls = storage.presign_puts(specs)
        single = storage.presign_puts(specs[1:2])
    assert urls == storage.presigner.presign_put_objects("uploads", specs, now=FIXED)
    assert single == urls[1:2]


@pytest.mark.parametrize(
    "error",
    [
        EndpointConnectionError(endpoint_url="https://s3.example"),
        ClientError({"Error": {"Code": "AccessDenied"}}, "PutObject"),
    ],
)
def test_storage_presign_puts_translates_botocore_errors(error: Exception) -> None:
    storage = make_storage()
    with (
        mock.patch.object(storage.presigner, "presign_put_objects", side_effect=error),
        pytest.raises(StorageUnavailable),
    ):
        storage.presign_puts([PutObjectSpec("k", "a/b", 1, 60)])
