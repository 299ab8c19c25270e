"""How the worker's settings reach Faust's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("env", "buffer", "join_buffer"),
    [
        ({"DRIFTWATCH_BATCH_SIZE": "1000"}, 4096, None),
        ({"DRIFTWATCH_STREAM_BUFFER_SIZE": "50"}, 50, 50),
    ],
)
def test_the_stream_buffers_follow_the_batches_unless_set(
    tmp_path: Path, env: dict[str, str], buffer: int, join_buffer: int | None
) -> None:
    """The read-ahead is Faust's 4,096 messages per agent unless an operator bounds it
    (join-input too): a smaller default saw a fetch stall in a test under load."""
    from agents.app import create_app
    from runtime.settings import Settings

    environ = {"DRIFTWATCH_DATA_DIR": str(tmp_path), "DRIFTWATCH_API_PORT": "0", **env}
    app = create_app(Settings.from_env(environ=environ)).app
    assert app.conf.stream_buffer_maxsize == buffer
    channels = {name: agent.channel for name, agent in app.agents.items()}
    assert channels["join-outcomes"].maxsize == join_buffer
    assert channels["detect-feature-drift"].maxsize is None  # the stream buffer's
