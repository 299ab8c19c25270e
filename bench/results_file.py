"""Where a benchmark's figures go: one JSON file, with when and on what they were measured."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def write_results(path: Path, benchmark: str, **fields: Any) -> None:
    """``fields`` after the benchmark's name, the date and the machine.

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "results" / "x.json"
    >>> write_results(out, "bench.x", runs=[1])
    >>> data = json.loads(out.read_text())
    >>> data["benchmark"], sorted(data["machine"]), data["runs"]
    ('bench.x', ['nproc', 'python'], [1])
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version()},
        **fields,
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
