"""Smart expiry: how long a signed URL should live.

A URL must outlive the transfer it authorises, and no more: a leaked URL is only
useful until it expires. The estimate is a fixed allowance (``OBITOX_EXPIRY_DEFAULT``,
for the user to start the transfer) plus the transfer time on the client's network at
a conservative bandwidth, times a safety factor, clamped to
``OBITOX_EXPIRY_MIN..OBITOX_EXPIRY_MAX`` and never above SigV4's 7 days.
"""

from __future__ import annotations

import math

from .config import SIGV4_MAX_EXPIRY

#: Conservative sustained upload bandwidth in bytes per second, per Network Information
#: API ``effectiveType``. Upload links are slower than the download figures such
#: tables usually quote, so these sit at the low end of each class.
UPLOAD_BYTES_PER_SECOND: dict[str, int] = {
    "slow-2g": 6_000,  # ~50 kbit/s
    "2g": 30_000,  # ~250 kbit/s
    "3g": 90_000,  # ~700 kbit/s
    "4g": 1_000_000,  # ~8 Mbit/s
    "wifi": 2_500_000,  # ~20 Mbit/s
    "unknown": 90_000,  # assume 3g: too long beats a failed upload
}

#: Multiplier on the estimated transfer time, for congestion and retries.
SAFETY_FACTOR = 2.0


def smart_expiry(
    size: int,
    network_type: str | None,
    *,
    minimum: int,
    maximum: int,
    allowance: int,
    requested: int | None = None,
) -> int:
    """Seconds a URL for ``size`` bytes should stay valid.

    :param allowance: seconds granted before the transfer starts (``OBITOX_EXPIRY_DEFAULT``).
    :param requested: the client's ``expiresIn``. It may shorten the estimate, or
        lengthen it as far as the estimate for the slowest network (a client worse off
        than it said), never further: a day-long URL for a 1 KB file is a day-long window
        to replay it.
    """
    upper = min(maximum, SIGV4_MAX_EXPIRY)
    lower = min(minimum, upper)
    if requested is not None:
        slowest = _estimate(size, min(UPLOAD_BYTES_PER_SECOND.values()), allowance)
        return max(lower, min(requested, slowest, upper))
    bandwidth = UPLOAD_BYTES_PER_SECOND.get(
        network_type or "unknown", UPLOAD_BYTES_PER_SECOND["unknown"]
    )
    return max(lower, min(_estimate(size, bandwidth, allowance), upper))


def _estimate(size: int, bandwidth: int, allowance: int) -> int:
    return allowance + math.ceil(size / bandwidth * SAFETY_FACTOR)
