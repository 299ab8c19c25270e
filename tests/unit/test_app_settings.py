"""How the worker's settings reach Faust's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("env", "buffer"),
    [({"DRIFTWATCH_BATCH_SIZE": "300"}, 600), ({"DRIFTWATCH_STREAM_BUFFER_SIZE": "50"}, 50)],
)
def test_the_stream_buffer_follows_the_batch_size_unless_set(
    tmp_path: Path, env: dict[str, str], buffer: int
) -> None:
    """Faust's own 4,096 messages per agent held ~0.5 GB of 500-prediction envelopes read
    ahead through a backlog (bench.worker_memory): bounded by the batch it feeds instead."""
    from agents.app import create_app
    from runtime.settings import Settings

    environ = {"DRIFTWATCH_DATA_DIR": str(tmp_path), "DRIFTWATCH_API_PORT": "0", **env}
    settings = Settings.from_env(environ=environ)
    assert create_app(settings).app.conf.stream_buffer_maxsize == buffer
