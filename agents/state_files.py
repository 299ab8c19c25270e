"""Reading a stopped worker's RocksDB tables directly (operators' ``driftwatch inspect``, tests).

Faust keeps one RocksDB database per table partition under ``<datadir>/v<version>/tables/``;
the worker holds a lock on them while it runs, so this is for a stopped worker only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import rocksdict

from streams.perf_state import PerfStream, PerfWindow, history_row
from streams.segments import split_segment_feature
from streams.state import FeatureWindow, StreamState

_FAUST_META_PREFIX = b"__faust\x00"


def table_paths(data_dir: str | Path, table: str) -> list[Path]:
    return sorted(Path(data_dir).glob(f"v*/tables/{table}-*.db"))


def read_table(data_dir: str | Path, table: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in table_paths(data_dir, table):
        db = rocksdict.Rdict(str(path), access_type=rocksdict.AccessType.read_only())
        try:
            for key, value in db.items():
                if isinstance(key, bytes) and not key.startswith(_FAUST_META_PREFIX):
                    out[key.decode()] = bytes(value)
        finally:
            db.close()
    return out


def describe_state(entries: dict[str, bytes]) -> dict[str, Any]:
    """A JSON-able view: per stream, its clock, window counts per feature, open incidents."""
    streams: dict[str, dict[str, Any]] = {}

    def entry(tenant: str, model: str) -> dict[str, Any]:
        return streams.setdefault(f"{tenant}:{model}", {"windows": {}, "incidents": {}})

    for key, raw in sorted(entries.items()):
        kind, tenant, model, *rest = json.loads(key)
        if kind == "s":
            s = StreamState.from_bytes(raw)
            entry(tenant, model).update(
                watermark=s.watermark,
                last_closed=s.last_closed,
                events=s.events,
                late_events=s.late_events,
                features=s.features,
                model_version=s.model_version,
            )
            entry(tenant, model)["incidents"] = {
                f: i.to_json() for f, i in s.incidents.open.items()
            }
        elif kind == "w":
            window, feature = rest
            fw = FeatureWindow.from_bytes(raw)
            name, column, value = split_segment_feature(feature)
            if column is not None:  # a segment's feature, readable: "amount [country=IT]"
                name = f"{name} [{column}={value}]"
            entry(tenant, model)["windows"].setdefault(str(window), {})[name] = (
                fw.count + fw.missing
            )
    return streams


def describe_performance(entries: dict[str, bytes]) -> dict[str, Any]:
    """Per stream: the performance history (one row per window and model version) and the
    open performance incidents."""
    out: dict[str, dict[str, Any]] = {}
    for key, raw in sorted(entries.items(), key=lambda kv: json.loads(kv[0])):
        kind, tenant, model, *rest = json.loads(key)
        entry = out.setdefault(f"{tenant}:{model}", {"history": [], "incidents": {}})
        if kind == "pw":
            win = PerfWindow.from_bytes(raw)
            for version, summary in sorted(win.versions.items()):
                entry["history"].append(history_row(tenant, model, version, rest[0], summary))
        elif kind == "ps":
            stream = PerfStream.from_bytes(raw)
            entry["clock"] = stream.clock
            entry["incidents"] = {k: i.to_json() for k, i in stream.incidents.open.items()}
    return out
