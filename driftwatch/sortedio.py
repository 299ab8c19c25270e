"""JSON-lines files of events, read in event-time order with memory flat in the file's size.

:class:`SortedJsonLines` makes two passes over a file:

1. **Scan** (on opening): every line is parsed and validated once. Rejected lines are counted
   by reason and logged with ``file:line``; the valid ones are counted (with their first and
   last event time), and their order is checked: is each timestamp >= the one before?
2. **Read** (iterating): the valid events in event-time order, ties in file order — exactly
   ``sorted(valid_events, key=timestamp)`` (a stable sort), without holding them:

   - a file already in order is streamed straight through (parsed again, line by line);
   - otherwise the scan has kept the in-order prefix of the file where it is (a sorted run
     read in place) and, from the first line out of order, sorted the rest in chunks of
     bounded size by (timestamp, line number) and spilled each chunk's raw lines to a
     temporary file: an external merge sort. Reading merges the runs with
     :func:`heapq.merge`, which is stable across its inputs (at equal keys the earlier input
     first): the runs are in file order and each is stably sorted, so the merge equals the
     full stable sort. More runs than :data:`MAX_FAN_IN` are first merged in groups of
     consecutive runs (which keeps that property).

A gzip-compressed file (told by its first two bytes, whatever its name) is read as its
decompressed lines, streamed in both passes (:func:`open_lines`).

Memory: one chunk while scanning (``chunk_bytes`` of raw lines plus about 100 bytes of
overhead per line), and one event per run while reading. Disk: the raw lines from the first
line out of order on, in a temporary directory removed by :meth:`SortedJsonLines.close` (or
leaving the ``with`` block; else when the object is collected, or at exit).
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import heapq
import logging
import math
import os
import shutil
import tempfile
import weakref
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Generic, Protocol, TypeVar

from schemas import InvalidEvent

log = logging.getLogger(__name__)

CHUNK_BYTES = 32 << 20
"""Raw line bytes sorted in memory per spilled chunk (about 50,000 lines of 20 features)."""
CHUNK_LINES = 200_000
"""And at most this many lines per chunk."""
MAX_FAN_IN = 64
"""At most this many runs merged at once (open files); more are merged in groups first."""
_BUFFER = 1 << 16
GZIP_MAGIC = b"\x1f\x8b"


class Timestamped(Protocol):
    @property
    def timestamp(self) -> float: ...


E = TypeVar("E", bound=Timestamped)


class FileChanged(RuntimeError):
    """The file changed between the scan and the read."""


class UnreadableFile(ValueError):
    """A file that starts as gzip but does not decompress (corrupt, or cut short)."""


def open_lines(path: Path) -> BinaryIO | gzip.GzipFile:
    """``path`` for reading its lines as bytes: decompressed, streaming, if it is gzip
    (told by the magic bytes, not the name), else as it is; past a UTF-8 byte-order mark at
    its start (some tools write one: a file's mark, not its first line's, which the decoder
    refuses as a message's). Its ``fileno()`` is the file's."""
    fh = path.open("rb", buffering=_BUFFER)
    try:
        gzipped = fh.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    if gzipped:
        fh.close()
        fh = gzip.GzipFile(path, "rb")  # type: ignore[assignment]
    try:
        if fh.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            fh.seek(0)
    except BaseException:
        fh.close()
        raise
    return fh


class SortedJsonLines(Generic[E]):
    """The valid events of a JSON-lines file in event-time order (ties: file order).

    ``parse`` turns a line (without its line break) into an event or raises
    :class:`~schemas.InvalidEvent`; it must be deterministic (it runs again on reading).
    ``rejected`` counts rejected lines by reason; ``on_event`` sees each valid event once, in
    file order, during the scan.
    """

    def __init__(
        self,
        path: Path,
        parse: Callable[[bytes], E],
        rejected: Counter[str] | None = None,
        *,
        on_event: Callable[[E], object] | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        chunk_lines: int = CHUNK_LINES,
        max_fan_in: int = MAX_FAN_IN,
        tmp_dir: Path | None = None,
    ) -> None:
        if chunk_bytes < 1 or chunk_lines < 1 or max_fan_in < 2:
            raise ValueError("need chunk_bytes >= 1, chunk_lines >= 1 and max_fan_in >= 2")
        self.path = Path(path)
        self._parse = parse
        self._chunk_bytes = chunk_bytes
        self._chunk_lines = chunk_lines
        self._max_fan_in = max_fan_in
        self._tmp_parent = tmp_dir
        self.rejected: Counter[str] = Counter() if rejected is None else rejected
        self.count = 0
        """Valid events."""
        self.lines = 0
        self.min_timestamp = math.inf
        self.max_timestamp = -math.inf
        self.in_order = True
        """The valid events were already in non-decreasing event time: read in place."""
        self.prefix_bytes = 0
        """The file's first bytes that are in order (all of it when ``in_order``)."""
        self.spilled = 0
        """Events sorted into temporary files."""
        self.tmp_dir: Path | None = None
        self._runs: list[Path] = []
        self._stat: tuple[int, int] | None = None
        self._cleanup: weakref.finalize[[Path], SortedJsonLines[E]] | None = None
        try:
            self._scan(on_event)
        except BaseException:
            self.close()
            raise

    @property
    def runs(self) -> int:
        """Sorted runs the read merges (1 when the file was in order)."""
        if self.in_order:
            return 1
        return (1 if self.prefix_bytes else 0) + len(self._runs)

    # --- pass 1 --------------------------------------------------------------------------

    def _scan(self, on_event: Callable[[E], object] | None) -> None:
        parse, rejected = self._parse, self.rejected
        chunk: list[tuple[float, int, bytes]] = []
        chunk_size = 0
        previous = -math.inf
        offset = lineno = 0
        with open_lines(self.path) as fh, _readable(self.path):
            self._stat = _stat(fh.fileno())
            for lineno, line in enumerate(fh, start=1):
                start = offset
                offset += len(line)
                if not line.strip():
                    continue
                raw = line.rstrip(b"\r\n")
                try:
                    event = parse(raw)
                except InvalidEvent as exc:
                    rejected[exc.reason] += 1
                    log.warning("%s:%d: %s", self.path, lineno, exc)
                    continue
                ts = event.timestamp
                self.count += 1
                self.min_timestamp = min(self.min_timestamp, ts)
                self.max_timestamp = max(self.max_timestamp, ts)
                if on_event is not None:
                    on_event(event)
                if self.in_order:
                    if ts >= previous:
                        previous = ts
                        continue
                    # The first line out of order: everything before it is a sorted run,
                    # read in place; from here on, sort in chunks.
                    self.in_order = False
                    self.prefix_bytes = start
                    self._make_tmp_dir()
                chunk.append((ts, lineno, raw))
                chunk_size += len(raw)
                if chunk_size >= self._chunk_bytes or len(chunk) >= self._chunk_lines:
                    self._spill(chunk)
                    chunk, chunk_size = [], 0
        self.lines = lineno
        if chunk:
            self._spill(chunk)
        if self.in_order:
            self.prefix_bytes = offset
        while len(self._runs) + 1 > self._max_fan_in:
            self._merge_runs()

    def _make_tmp_dir(self) -> None:
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="driftwatch-sort-", dir=self._tmp_parent))
        # Removed by close(), or when this object is collected or the interpreter exits.
        self._cleanup = weakref.finalize(self, _remove_tree, self.tmp_dir)

    def _spill(self, chunk: list[tuple[float, int, bytes]]) -> None:
        assert self.tmp_dir is not None
        chunk.sort(key=lambda item: (item[0], item[1]))
        path = self.tmp_dir / f"run-{len(self._runs):06d}"
        with path.open("wb", buffering=_BUFFER) as fh:
            fh.writelines(b"%r\t%s\n" % (ts, raw) for ts, _, raw in chunk)
        self.spilled += len(chunk)
        chunk.clear()
        self._runs.append(path)

    def _merge_runs(self) -> None:
        """Merge the spilled runs in groups of consecutive ones, keeping the file order."""
        assert self.tmp_dir is not None
        merged: list[Path] = []
        group = self._max_fan_in
        for i in range(0, len(self._runs), group):
            members = self._runs[i : i + group]
            if len(members) == 1:
                merged.append(members[0])
                continue
            path = self.tmp_dir / f"merge-{i:06d}-{len(self._runs):06d}"
            with path.open("wb", buffering=_BUFFER) as out:
                out.writelines(heapq.merge(*(_spill_lines(p) for p in members), key=_spill_key))
            for p in members:
                p.unlink()
            merged.append(path)
        self._runs = merged

    # --- pass 2 --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[E]:
        if self._stat is None:
            raise ValueError(f"{self.path}: closed")
        with self.path.open("rb", buffering=_BUFFER) as fh:
            if _stat(fh.fileno()) != self._stat:
                raise FileChanged(f"{self.path} changed since it was scanned")
        if self.in_order:
            return self._read_prefix()
        runs: list[Iterable[E]] = [self._read_prefix()] if self.prefix_bytes else []
        runs += [self._read_run(p) for p in self._runs]
        return heapq.merge(*runs, key=_timestamp)

    def _read_prefix(self) -> Iterator[E]:
        """The file's in-order prefix; lines rejected by the scan are skipped silently."""
        parse, remaining = self._parse, self.prefix_bytes
        with open_lines(self.path) as fh:
            for line in fh:
                remaining -= len(line)
                event = None
                if line.strip():
                    with contextlib.suppress(InvalidEvent):  # counted and logged by the scan
                        event = parse(line.rstrip(b"\r\n"))
                if event is not None:
                    yield event
                if remaining <= 0:
                    return

    def _read_run(self, path: Path) -> Iterator[E]:
        parse = self._parse
        with path.open("rb", buffering=_BUFFER) as fh:
            for line in fh:
                yield parse(line[line.index(b"\t") + 1 : -1])

    # --- cleanup -------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the temporary files (the object cannot be read after this)."""
        self._stat = None
        self._runs = []
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None
        self.tmp_dir = None

    def __enter__(self) -> SortedJsonLines[E]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """A gzip file that does not decompress as :class:`UnreadableFile`, naming it."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UnreadableFile(f"{path}: not a readable gzip file ({exc})") from None


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _stat(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_size, st.st_mtime_ns


def _timestamp(event: Timestamped) -> float:
    return event.timestamp


def _spill_key(line: bytes) -> float:
    return float(line[: line.index(b"\t")])


def _spill_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb", buffering=_BUFFER) as fh:
        yield from fh
