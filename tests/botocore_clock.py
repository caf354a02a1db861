"""Freeze botocore's clock, on every botocore pyproject allows, for the oracle tests.

Newer botocore reads the time through ``get_current_datetime`` in ``botocore.auth`` and
``botocore.signers``; older releases (1.36 .. 1.40, tested by CI's lowest-versions run)
call ``datetime.datetime.utcnow()`` there. Either way the signers see ``now`` only.
"""

from __future__ import annotations

import datetime
import types
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from unittest import mock

import botocore.auth
import botocore.signers


@contextmanager
def frozen_botocore_clock(now: datetime.datetime) -> Iterator[None]:
    """botocore signs at ``now`` (aware or naive UTC) inside the block."""
    naive_utc = now.astimezone(datetime.UTC).replace(tzinfo=None) if now.tzinfo else now

    class Frozen(datetime.datetime):
        @classmethod
        def utcnow(cls) -> datetime.datetime:  # type: ignore[override]
            return naive_utc

    module = types.SimpleNamespace(**vars(datetime))
    module.datetime = Frozen
    with ExitStack() as stack:
        for target in (botocore.auth, botocore.signers):
            if hasattr(target, "get_current_datetime"):
                stack.enter_context(
                    mock.patch.object(target, "get_current_datetime", return_value=naive_utc)
                )
            else:
                stack.enter_context(mock.patch.object(target, "datetime", module))
        yield
