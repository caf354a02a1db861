"""Commands in Redis's wire protocol (RESP), packed for one round trip.

redis-py's ``Connection.pack_commands`` runs its encoder, an ``isinstance`` chain, on
every argument before hiredis packs them: for the ~110 commands and ~1,100 arguments of
a 100-file batch that cost more instructions than everything else the Redis write does
(``docs/performance.rst``). :func:`pack_commands` writes the same bytes: a command whose
arguments are all of the types the backend sends (``str``, ``bytes``, ``int``,
``float``) goes to hiredis's packer as it is, when the connection encodes text as strict
UTF-8 (hiredis's way); any other command is encoded here, any other argument by the
connection's own encoder, so what redis-py accepts, refuses or encodes stays its
decision. ``tests/test_state_redis_wire.py``
proves the bytes equal to redis-py's with hypothesis.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Sequence
from typing import Any

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # redis[hiredis], a dependency: its packer is C
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - a broken install; the Python path is exact
    _hiredis_pack = None

#: The exact argument types hiredis packs as redis-py encodes them (``repr`` of a
#: number, UTF-8 of a text); any other type takes the Python path below.
_NATIVE = frozenset({str, bytes, int, float})


def pack_commands(commands: Iterable[Sequence[Any]], encoder: Any) -> bytes:
    """``commands`` (each a name and its arguments) as one RESP buffer, byte for byte
    what ``b"".join(connection.pack_commands(commands))`` gives; ``encoder`` is the
    connection's (``connection.encoder``: its text encoding and its refusals)."""
    encoding = encoder.encoding
    errors = encoder.encoding_errors
    native = _hiredis_pack if _utf8_strict(encoding, errors) else None
    out: list[bytes] = []
    for command in commands:
        if native is not None and set(map(type, command)) <= _NATIVE and _one_word(command[0]):
            try:
                out.append(native(tuple(command)))
                continue
            except (TypeError, ValueError, UnicodeError):
                pass  # the Python path raises what redis-py raises
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


def _utf8_strict(encoding: str, errors: str) -> bool:
    return errors == "strict" and codecs.lookup(encoding).name == "utf-8"


def _one_word(name: str | bytes) -> bool:
    """A name redis-py sends as it is (it splits one with white space in it)."""
    return name.split() == [name]
