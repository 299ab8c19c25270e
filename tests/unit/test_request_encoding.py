"""aiokafka's requests encoded in one join (``agents.faust_compat.request_encoding``): the same
bytes as aiokafka's own encoding, for every request class it has, with random values."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import random
import struct
from typing import Any

import pytest
from aiokafka.conn import AIOKafkaConnection
from aiokafka.protocol import types as t
from aiokafka.protocol.api import Request, RequestStruct
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.struct import Struct

from agents.faust_compat import request_encoding
from agents.faust_compat.version import check_aiokafka_version

MODULES = ("admin", "commit", "coordination", "fetch", "group", "metadata", "offset",
           "produce", "transaction")  # fmt: skip


def request_classes() -> list[type[RequestStruct]]:
    out: list[type[RequestStruct]] = []
    for name in MODULES:
        module = importlib.import_module(f"aiokafka.protocol.{name}")
        members: list[tuple[str, Any]] = inspect.getmembers(module, inspect.isclass)
        for _, cls in members:
            if issubclass(cls, RequestStruct) and cls is not RequestStruct and cls.SCHEMA.fields:
                out.append(cls)
    return sorted(set(out), key=lambda c: (c.__module__, c.__name__))


def random_value(schema: Any, rng: random.Random, depth: int = 0) -> Any:
    """A value ``schema.encode`` takes, nulls and empty arrays included."""
    kind = type(schema)
    if kind is t.Schema:
        return tuple(random_value(f, rng, depth + 1) for f in schema.fields)
    if isinstance(schema, t.Array):  # Array and CompactArray
        if rng.random() < 0.1:
            return None
        return [random_value(schema.array_of, rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if isinstance(schema, t.String):  # String and CompactString
        return None if rng.random() < 0.1 else "".join(rng.choices("abcé-_.", k=rng.randint(0, 9)))
    if schema in (t.Bytes, t.CompactBytes):
        if rng.random() < 0.1:
            return None
        return rng.randbytes(rng.choice((0, 3, 700, 70_000)))
    if schema is t.TaggedFields:
        return {
            rng.randint(1, 5): rng.randbytes(rng.randint(0, 4)) for _ in range(rng.randint(0, 2))
        }
    ranges = {t.Int8: 7, t.Int16: 15, t.Int32: 31, t.Int64: 63, t.VarInt32: 31, t.VarInt64: 63}
    if schema in ranges:
        bits = ranges[schema]
        return rng.randint(-(2**bits), 2**bits - 1)
    if schema is t.UInt32:
        return rng.randint(0, 2**32 - 1)
    if schema is t.UnsignedVarInt32:
        return rng.randint(0, 2**31 - 1)
    if schema is t.Boolean:
        return rng.random() < 0.5
    if schema is t.Float64:
        return rng.uniform(-1e9, 1e9)
    raise AssertionError(f"no random value for {schema!r}")


def test_every_request_class_encodes_to_the_same_bytes() -> None:
    check_aiokafka_version()
    classes = request_classes()
    assert len(classes) > 80, "aiokafka's request classes were not found"
    assert any(issubclass(c, Struct) and c.FLEXIBLE_VERSION for c in classes)
    rng = random.Random(11)
    original = request_encoding.ORIGINAL_ENCODE or Struct.encode
    big = 0
    for cls in classes:
        for _ in range(15):
            request = cls(*random_value(cls.SCHEMA, rng))
            ours = request_encoding.encode_struct(request)
            assert ours == original(request), cls.__name__
            big += len(ours) > 70_000
    assert big > 50, "no request held a large byte field"


def test_a_schema_with_the_wrong_field_count_is_refused_as_aiokafka_does() -> None:
    schema = t.Schema(("a", t.Int32), ("b", t.Bytes))
    with pytest.raises(ValueError, match="field count"):
        schema.encode((1,))
    with pytest.raises(ValueError, match="field count"):
        request_encoding.request_pieces(schema, (1,), [])


class _Writer:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def drain(self) -> str:
        return "drained"


def _connection() -> AIOKafkaConnection:
    conn = AIOKafkaConnection("localhost", 9092)  # never connected: its writer is ours
    conn._writer = _Writer()
    conn._versions = {ProduceRequest.API_KEY: (0, 8)}
    return conn


def test_a_connection_sends_the_bytes_aiokafka_would() -> None:
    """The size, the header and the request, as aiokafka 0.14.0's ``send`` writes them; a
    request that expects a response is queued by its correlation id, one that does not is
    drained."""

    async def run() -> None:
        batches = [(p, random.Random(p).randbytes(300_000)) for p in range(4)]
        request = ProduceRequest(None, -1, 30_000, [("join-state-changelog", batches)])
        theirs, ours = _connection(), _connection()
        original = request_encoding.ORIGINAL_SEND or AIOKafkaConnection.send
        assert original(theirs, request, expect_response=False) == "drained"
        assert request_encoding._send(ours, request, expect_response=False) == "drained"
        written = ours._writer.written
        assert written == theirs._writer.written
        assert struct.unpack(">i", written[0][:4])[0] == len(written[0]) - 4 > 1_200_000

        waiting = request_encoding._send(ours, request)
        assert [c for c, _, _ in ours._requests] == [2]
        first, second = written
        assert (second[:8], second[12:]) == (first[:8], first[12:])  # only its id differs
        waiting.close()  # its response would come from a broker

    asyncio.run(run())


def test_a_bytearray_batch_and_the_connection_s_failures_are_aiokafka_s() -> None:
    """The producer hands over its batches as ``bytearray`` s; a connection without a writer,
    a writer that fails and a request class with its own ``encode`` go as aiokafka's do."""
    from aiokafka.errors import KafkaConnectionError

    class Failing(_Writer):
        def write(self, data: bytes) -> None:
            raise OSError("broken pipe")

    async def run() -> None:
        batch = bytearray(random.Random(3).randbytes(70_000))
        request = ProduceRequest(None, -1, 30_000, [("t", [(0, batch), (1, bytes(batch))])])
        theirs, ours = _connection(), _connection()
        original = request_encoding.ORIGINAL_SEND or AIOKafkaConnection.send
        original(theirs, request, expect_response=False)
        request_encoding._send(ours, request, expect_response=False)
        assert ours._writer.written == theirs._writer.written

        closed = _connection()
        closed._writer = None
        with pytest.raises(KafkaConnectionError, match="No connection"):
            request_encoding._send(closed, request)
        broken = _connection()
        broken._writer = Failing()
        reasons: list[Any] = []
        broken.close = lambda reason=None, **_: reasons.append(reason)
        with pytest.raises(KafkaConnectionError, match="broken"):
            request_encoding._send(broken, request)
        assert len(reasons) == 1 and not broken._requests

    asyncio.run(run())


def test_a_request_struct_with_an_encoding_of_its_own_is_asked_for_it() -> None:
    class Header:
        def encode(self) -> bytes:
            return b"H"

    class Odd(Struct):  # type: ignore[misc]
        SCHEMA = t.Schema(("a", t.Int32))

        def encode(self) -> bytes:
            return b"odd"

        def build_request_header(self, correlation_id: int, client_id: str) -> Header:
            return Header()

    class Ask:
        def prepare(self, versions: Any) -> Odd:
            return Odd(1)

    async def run() -> None:
        conn = _connection()
        request_encoding._send(conn, Ask(), expect_response=False)
        assert conn._writer.written == [struct.pack(">i", 4) + b"Hodd"]

    asyncio.run(run())


def test_another_aiokafka_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import aiokafka

    monkeypatch.setattr(aiokafka, "__version__", "0.15.0")
    with pytest.raises(RuntimeError, match=r"written for aiokafka 0\.14\.0, found 0\.15\.0"):
        check_aiokafka_version()


def test_install_patches_once_and_uninstall_restores() -> None:
    was = request_encoding._installed
    try:
        request_encoding.uninstall()
        assert AIOKafkaConnection.send is not request_encoding._send
        request_encoding.install()
        request_encoding.install()
        assert Struct.encode is request_encoding.encode_struct
        assert AIOKafkaConnection.send is request_encoding._send
        request_encoding.uninstall()
        assert Struct.encode is not request_encoding.encode_struct
    finally:
        if was:
            request_encoding.install()


def test_the_request_api_is_what_the_patch_was_written_for() -> None:
    """``Request.prepare`` picks the struct that ``send`` encodes."""
    versions = {ProduceRequest.API_KEY: (0, 8)}
    struct_ = ProduceRequest(None, -1, 30_000, [("t", [(0, b"x")])]).prepare(versions)
    assert isinstance(struct_, RequestStruct) and struct_.API_VERSION == 7
    assert issubclass(ProduceRequest, Request)
