"""Smart expiry: from size and network, clamped, never above SigV4's 7 days."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flask_obitox.config import NETWORK_TYPES, SIGV4_MAX_EXPIRY
from flask_obitox.expiry import UPLOAD_BYTES_PER_SECOND, smart_expiry

LIMITS = {"minimum": 60, "maximum": 86400, "allowance": 300}


def test_small_file_gets_the_allowance() -> None:
    assert smart_expiry(1000, "wifi", **LIMITS) == 301


def test_transfer_time_with_safety_factor() -> None:
    size = 100 * 1024 * 1024
    assert smart_expiry(size, "4g", **LIMITS) == 300 + -(-size * 2 // 1_000_000)


def test_slower_networks_get_longer() -> None:
    size = 20 * 1024 * 1024
    times = [smart_expiry(size, n, **LIMITS) for n in ("wifi", "4g", "3g", "2g", "slow-2g")]
    assert times == sorted(times)
    assert len(set(times)) == len(times)


def test_unknown_and_missing_network_assume_3g() -> None:
    size = 5 * 1024 * 1024
    assert smart_expiry(size, None, **LIMITS) == smart_expiry(size, "3g", **LIMITS)
    assert smart_expiry(size, "unknown", **LIMITS) == smart_expiry(size, "3g", **LIMITS)


def test_clamped_to_the_configured_window() -> None:
    assert smart_expiry(5 * 1024**4, "slow-2g", **LIMITS) == 86400
    assert smart_expiry(0, "wifi", minimum=600, maximum=900, allowance=1) == 600


def test_requested_expiry_is_clamped_too() -> None:
    assert smart_expiry(1, "wifi", requested=10, **LIMITS) == 60
    huge = 5 * 1024**4  # the slowest network needs longer than the maximum
    assert smart_expiry(huge, "wifi", requested=10**9, **LIMITS) == 86400
    # Never longer than the slowest network needs for the size.
    slowest = smart_expiry(1, "slow-2g", **LIMITS)
    assert smart_expiry(1, "wifi", requested=10**9, **LIMITS) == slowest
    assert smart_expiry(1, "wifi", requested=slowest - 1, **LIMITS) == slowest - 1


@given(
    size=st.integers(0, 5 * 1024**4),
    network=st.sampled_from([*NETWORK_TYPES, None]),
    minimum=st.integers(1, 10**7),
    maximum=st.integers(1, 10**7),
    requested=st.none() | st.integers(-(10**9), 10**9),
)
def test_never_above_seven_days(
    size: int, network: str | None, minimum: int, maximum: int, requested: int | None
) -> None:
    value = smart_expiry(
        size, network, minimum=minimum, maximum=maximum, allowance=300, requested=requested
    )
    assert 1 <= value <= min(maximum, SIGV4_MAX_EXPIRY)


def test_every_network_type_has_a_bandwidth() -> None:
    assert set(NETWORK_TYPES) == set(UPLOAD_BYTES_PER_SECOND)
