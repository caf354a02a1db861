"""Commands in Redis's wire protocol (RESP), packed for one round trip.

redis-py's ``Connection.pack_commands`` runs its encoder, an ``isinstance`` chain, on
every argument before hiredis packs them: for the ~110 commands and ~400 arguments of a
100-file batch that cost more instructions than everything else the Redis write does
(``docs/performance.rst``). :func:`pack_commands` writes the same bytes for the argument
types the backend sends (``str``, ``bytes``, ``int``, ``float``) at about a quarter of
the cost, and hands any other argument to the connection's own encoder, so what redis-py
accepts, refuses or encodes stays its decision. ``tests/test_state_redis_wire.py``
proves the bytes equal to redis-py's with hypothesis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def pack_commands(commands: Iterable[Sequence[Any]], encoder: Any) -> bytes:
    """``commands`` (each a name and its arguments) as one RESP buffer, byte for byte
    what ``b"".join(connection.pack_commands(commands))`` gives; ``encoder`` is the
    connection's (``connection.encoder``: its text encoding and its refusals)."""
    encoding = encoder.encoding
    errors = encoder.encoding_errors
    out: list[bytes] = []
    for command in commands:
        # The name as redis-py sends it: "CONFIG GET" is two arguments.
        name = command[0]
        if type(name) is str:
            head = name.encode().split()
        else:
            head = name.split() if b" " in name else [name]
        args = [
            arg.encode(encoding, errors)
            if type(arg) is str
            else arg
            if type(arg) is bytes
            else repr(arg).encode()
            if type(arg) is int or type(arg) is float
            # bool (refused), subclasses, bytearray, memoryview: as redis-py does it.
            else bytes(encoder.encode(arg))
            for arg in command[1:]
        ]
        args[:0] = head
        out.append(b"*%d\r\n" % len(args))
        out.append(b"".join([b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in args]))
    return b"".join(out)
