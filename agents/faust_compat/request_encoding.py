"""aiokafka's requests encoded with one copy of their record batches, not eight.

aiokafka 0.14.0 encodes a request level by level: each ``Schema``, ``Array`` and ``Bytes``
returns a new bytes object made by joining its parts, so a produce request's record batches
(up to ``DRIFTWATCH_PRODUCER_MAX_BATCH_BYTES`` each, one per partition, all of a broker's in one
request) are copied once at each of the six levels that hold them, then twice more when the
connection prefixes the header and the size. A buffer that large is a fresh allocation each
time, and the page faults make each copy slow: a request of eight 512 KiB batches took 8.5 ms
to encode, and one list of its pieces joined once 0.14 ms (``bench.request_encoding``). In a
worker on envelopes, encoding and sending produce requests was ~9 % of the interpreter's time
(``py-spy --gil``; the join's state changelog and the ``join-input`` topic carry every
prediction's bytes).

:func:`install` gives every aiokafka ``Struct`` an ``encode`` that gathers the same pieces into
one list (:func:`request_pieces`) and joins them once, and replaces
``AIOKafkaConnection.send`` with aiokafka 0.14.0's own, line for line, except that the size,
the header and the request's pieces are joined once. The bytes on the wire are the same
(``tests/unit/test_request_encoding.py`` compares them with aiokafka's for every request
class it has, with random values).
"""

from __future__ import annotations

import struct
from typing import Any

import aiokafka.conn as aiokafka_conn
from aiokafka.protocol.struct import Struct
from aiokafka.protocol.types import Array, Bytes, Int32, Schema

from agents.faust_compat.version import check_aiokafka_version

_installed = False
ORIGINAL_ENCODE: Any = None
ORIGINAL_SEND: Any = None


def request_pieces(schema: Any, item: Any, out: list[bytes]) -> None:
    """Append to ``out`` the pieces of ``schema.encode(item)``, in order, without joining
    them: ``Schema`` and ``Array`` (exactly those classes: a ``CompactArray`` encodes its
    length otherwise) are walked, ``Bytes`` gives its length and its value as it is, and every
    other type (integers, strings, compact and tagged fields) its own ``encode``."""
    kind = type(schema)
    if kind is Schema:
        fields = schema.fields
        if len(item) != len(fields):
            raise ValueError("Item field count does not match Schema")
        for field, value in zip(fields, item, strict=True):
            request_pieces(field, value, out)
    elif kind is Array:
        if item is None:
            out.append(Int32.encode(-1))
            return
        out.append(Int32.encode(len(item)))
        of = schema.array_of
        for value in item:
            request_pieces(of, value, out)
    elif schema is Bytes:
        if item is None:
            out.append(Int32.encode(-1))
        else:
            out.append(Int32.encode(len(item)))
            out.append(item)
    else:
        out.append(schema.encode(item))


def _struct_pieces(request: Any, out: list[bytes]) -> None:
    schema = request.SCHEMA
    values = request.__dict__
    request_pieces(schema, [values[name] for name in schema.names], out)


def encode_struct(self: Any) -> bytes:
    """``Struct.encode``: the same bytes, joined once."""
    out: list[bytes] = []
    _struct_pieces(self, out)
    return b"".join(out)


def install() -> None:
    """Patch aiokafka's request encoding (once per process)."""
    global _installed, ORIGINAL_ENCODE, ORIGINAL_SEND
    if _installed:
        return
    check_aiokafka_version()
    ORIGINAL_ENCODE = Struct.encode
    ORIGINAL_SEND = aiokafka_conn.AIOKafkaConnection.send
    Struct.encode = encode_struct
    aiokafka_conn.AIOKafkaConnection.send = _send
    _installed = True


def uninstall() -> None:
    """Testing only: aiokafka's own encoding again."""
    global _installed
    if not _installed:
        return
    Struct.encode = ORIGINAL_ENCODE
    aiokafka_conn.AIOKafkaConnection.send = ORIGINAL_SEND
    _installed = False


def _send(self: Any, request: Any, expect_response: bool = True) -> Any:
    """aiokafka 0.14.0's ``AIOKafkaConnection.send``, but the size, the header and the request
    joined once; every other line as it is there (its module's names read from it)."""
    Errors, CloseReason = aiokafka_conn.Errors, aiokafka_conn.CloseReason
    log = aiokafka_conn.log
    if self._writer is None:
        raise Errors.KafkaConnectionError(f"No connection to broker at {self._host}:{self._port}")

    request_struct = request.prepare(self._versions)

    correlation_id = self._next_correlation_id()
    header = request_struct.build_request_header(
        correlation_id=correlation_id, client_id=self._client_id
    )
    pieces: list[bytes] = [b"", header.encode()]
    if type(request_struct).encode is encode_struct:
        _struct_pieces(request_struct, pieces)
    else:  # a request class with an encoding of its own (none in 0.14.0)
        pieces.append(request_struct.encode())
    pieces[0] = struct.pack(">i", sum(map(len, pieces)))
    try:
        self._writer.write(b"".join(pieces))
    except OSError as err:
        self.close(reason=CloseReason.CONNECTION_BROKEN)
        raise Errors.KafkaConnectionError(
            f"Connection at {self._host}:{self._port} broken: {err}"
        ) from err

    log.debug(
        "Request to %s:%d %d: %s",
        self._host,
        self._port,
        correlation_id,
        request_struct,
    )

    if not expect_response:
        return self._writer.drain()
    fut = self._loop.create_future()
    self._requests.append(
        (correlation_id, request_struct, fut),
    )
    return aiokafka_conn.wait_for(fut, self._request_timeout)
