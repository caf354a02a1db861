"""The Redis backend packs its one-round-trip writes itself: the bytes must be exactly
redis-py's (``Connection.pack_commands``, the oracle) for every argument, and what
redis-py refuses must still be refused."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.exceptions import DataError

from flask_obitox.state.redis_wire import pack_commands

NAMES = st.sampled_from(["SET", "ZADD", "EXPIRE", "ZREMRANGEBYLEX", "EVALSHA", "CONFIG GET"])
NAMES |= st.sampled_from([b"SET", b"CLIENT SETNAME", b"set"])
#: What the backend sends (packed by hiredis when the encoding is strict UTF-8).
NATIVE = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
#: And what redis-py also accepts (encoded by the Python path).
ARGS = NATIVE | st.binary().map(bytearray) | st.binary().map(memoryview)
COMMANDS = st.lists(st.tuples(NAMES, st.lists(ARGS, max_size=6)), max_size=8).map(
    lambda commands: [(name, *args) for name, args in commands]
)
NATIVE_COMMANDS = st.lists(st.tuples(NAMES, st.lists(NATIVE, max_size=8)), max_size=8).map(
    lambda commands: [(name, *args) for name, args in commands]
)


def redis_py(connection: Any, commands: list[tuple[Any, ...]]) -> bytes:
    return b"".join(bytes(chunk) for chunk in connection.pack_commands(commands))


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param(redis.Connection(), id="utf-8"),
        pytest.param(redis.Connection(encoding="latin-1", encoding_errors="replace"), id="latin-1"),
    ],
)
@settings(max_examples=300, deadline=None)
@given(commands=COMMANDS, native=NATIVE_COMMANDS)
def test_same_bytes_as_redis_py(
    connection: Any, commands: list[tuple[Any, ...]], native: list[tuple[Any, ...]]
) -> None:
    if b"\xc2\x80" in redis_py(connection, [("SET", "k", "\x80")]) and (
        connection.encoder.encoding != "utf-8"
    ):
        pytest.skip("this redis-py sends UTF-8 whatever the connection's encoding (6.1)")
    for batch in (commands, native):
        ours = outcome(pack_commands, batch, connection.encoder)
        assert ours == outcome(redis_py, connection, batch)


def outcome(pack: Any, *args: Any) -> Any:
    """``pack(*args)``'s bytes, or ``DataError`` when refused: what redis-py refuses
    (bytearray, by some releases) must be refused too."""
    try:
        return pack(*args)
    except DataError:
        return DataError


def test_a_batch_write_packs_as_redis_py_does() -> None:
    connection = redis.Connection()
    commands = [
        ("SET", "obitox:upload:abc", b'{"owner":"\xc3\xa9"}', "EX", 86400),
        ("ZREMRANGEBYSCORE", "obitox:expiry", "-inf", "(1764000000.125"),
        ("ZADD", "obitox:expiry", 1764000900.5, "abc", 1764000901.25, "déf"),
        ("ZADD", "obitox:owner:x", 0, "00000001764000000.125000:abc"),
        ("EXPIRE", "obitox:owner:x", 86400),
    ]
    assert pack_commands(commands, connection.encoder) == redis_py(connection, commands)


@pytest.mark.parametrize("refused", [True, None, object(), 1 + 2j])
def test_what_redis_py_refuses_is_refused(refused: Any) -> None:
    connection = redis.Connection()
    with pytest.raises(DataError):
        redis_py(connection, [("SET", "k", refused)])
    with pytest.raises(DataError):
        pack_commands([("SET", "k", refused)], connection.encoder)
