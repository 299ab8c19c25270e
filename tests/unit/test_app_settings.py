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


INPUTS = {"predictions", "outcomes", "join-input", "performance-input"}


@pytest.mark.parametrize(
    ("env", "topics", "capacity"),
    [
        ({}, INPUTS, 8192),
        ({"DRIFTWATCH_GATHER_AHEAD": "false"}, INPUTS, 4096),
        ({"DRIFTWATCH_JOIN_OUTCOMES": "false"}, {"predictions"}, 8192),
        ({"DRIFTWATCH_BULK_DELIVERY": "false"}, set(), 0),
    ],
)
def test_the_input_topics_are_delivered_in_bulk_with_the_stream_buffers_bounds(
    tmp_path: Path, env: dict[str, str], topics: set[str], capacity: int
) -> None:
    """DRIFTWATCH_BULK_DELIVERY (on by default) gives each input agent's topic a sink,
    registered before the app starts, of its stream buffer's bounds, twice over when the
    agents gather ahead; the alert agents keep Faust's delivery."""
    from agents.app import create_app
    from agents.faust_compat import bulk_delivery
    from runtime.settings import Settings

    environ = {"DRIFTWATCH_DATA_DIR": str(tmp_path), "DRIFTWATCH_API_PORT": "0", **env}
    app = create_app(Settings.from_env(environ=environ)).app
    sinks = bulk_delivery.sinks_of(app)
    assert set(sinks) == topics
    for sink in sinks.values():
        assert sink.capacity == capacity and sink.place_bytes == (8 << 20) // 4096
    if "join-input" in sinks:  # a join batch is a sixty-fourth of a batch of predictions
        assert (sinks["predictions"].size, sinks["join-input"].size) == (1000, 15)


@pytest.mark.parametrize("grace", [None, "0", "45"])
def test_the_join_stall_grace_reaches_the_join(tmp_path: Path, grace: str | None) -> None:
    """DRIFTWATCH_JOIN_STALL_GRACE_SECONDS is the worker join's grace, JoinConfig's own
    default when unset; a negative one is refused at start."""
    from agents.app import create_app
    from runtime.settings import Settings
    from streams.join import JoinConfig

    environ = {"DRIFTWATCH_DATA_DIR": str(tmp_path), "DRIFTWATCH_API_PORT": "0"}
    if grace is not None:
        environ["DRIFTWATCH_JOIN_STALL_GRACE_SECONDS"] = grace
    joins = create_app(Settings.from_env(environ=environ)).joins
    assert joins is not None
    expected = JoinConfig().stall_grace_seconds if grace is None else float(grace)
    assert joins.config.stall_grace_seconds == expected
    with pytest.raises(ValueError, match="JOIN_STALL_GRACE"):
        Settings.from_env(environ={**environ, "DRIFTWATCH_JOIN_STALL_GRACE_SECONDS": "-1"})
    with pytest.raises(ValueError, match="JOIN_DRAIN_CHECK"):
        Settings.from_env(environ={**environ, "DRIFTWATCH_JOIN_DRAIN_CHECK_SECONDS": "-1"})
    assert Settings.from_env(environ=environ).join_drain_check_seconds == 15.0


@pytest.mark.parametrize(
    ("name", "raw", "attribute", "value", "refused"),
    [
        ("DRIFTWATCH_MAX_FETCH_KB", None, "consumer_max_fetch_size", 1 << 20, "0"),
        ("DRIFTWATCH_MAX_FETCH_KB", "256", "consumer_max_fetch_size", 256 << 10, "0"),
        ("DRIFTWATCH_PRODUCER_MAX_BATCH_BYTES", None, "producer_max_batch_size", 512 << 10, "0"),
        ("DRIFTWATCH_PRODUCER_MAX_BATCH_BYTES", "16384", "producer_max_batch_size", 16384, "0"),
    ],
)
def test_the_fetch_and_batch_sizes_reach_faust(
    tmp_path: Path, name: str, raw: str | None, attribute: str, value: int, refused: str
) -> None:
    """DRIFTWATCH_MAX_FETCH_KB is Faust's consumer_max_fetch_size (aiokafka's
    max_partition_fetch_bytes), DRIFTWATCH_PRODUCER_MAX_BATCH_BYTES its producer_max_batch_size
    (512 KiB unless set); below 1 (KiB, byte) each is refused at start, and so is a negative
    changelog batch size."""
    from agents.app import create_app
    from runtime.settings import Settings

    environ = {"DRIFTWATCH_DATA_DIR": str(tmp_path), "DRIFTWATCH_API_PORT": "0"}
    if raw is not None:
        environ[name] = raw
    app = create_app(Settings.from_env(environ=environ)).app
    assert getattr(app.conf, attribute) == value
    with pytest.raises(ValueError, match=name):
        Settings.from_env(environ={**environ, name: refused})
    with pytest.raises(ValueError, match="CHANGELOG_MAX_BATCH_BYTES"):
        Settings.from_env(environ={**environ, "DRIFTWATCH_CHANGELOG_MAX_BATCH_BYTES": "-1"})


@pytest.mark.parametrize("mb", [None, "8"])
def test_the_join_cache_budget_reaches_the_join(tmp_path: Path, mb: str | None) -> None:
    """DRIFTWATCH_JOIN_CACHE_MB is the worker join's cache budget, JoinConfig's own default
    when unset; a negative one is refused at start."""
    from agents.app import create_app
    from runtime.settings import Settings
    from streams.join import JoinConfig

    environ = {"DRIFTWATCH_DATA_DIR": str(tmp_path), "DRIFTWATCH_API_PORT": "0"}
    if mb is not None:
        environ["DRIFTWATCH_JOIN_CACHE_MB"] = mb
    joins = create_app(Settings.from_env(environ=environ)).joins
    assert joins is not None
    assert joins.config.cache_mb == (JoinConfig().cache_mb if mb is None else float(mb))
    with pytest.raises(ValueError, match="JOIN_CACHE_MB"):
        Settings.from_env(environ={**environ, "DRIFTWATCH_JOIN_CACHE_MB": "-1"})


@pytest.mark.parametrize("seconds", [None, "0", "12.5"])
def test_the_state_write_interval_reaches_the_drift_agent(
    tmp_path: Path, seconds: str | None
) -> None:
    """DRIFTWATCH_STATE_FLUSH_SECONDS is the drift agent's write interval (5 s unset); the
    clean stop writes what it holds; values outside 0-300 are refused at start."""
    from agents.app import create_app
    from agents.faust_compat import commit_cap
    from runtime.settings import Settings

    environ = {"DRIFTWATCH_DATA_DIR": str(tmp_path), "DRIFTWATCH_API_PORT": "0"}
    if seconds is not None:
        environ["DRIFTWATCH_STATE_FLUSH_SECONDS"] = seconds
    worker = create_app(Settings.from_env(environ=environ))
    assert worker.processor.state_flush_seconds == (5.0 if seconds is None else float(seconds))
    assert [w for w, _ in commit_cap._BEFORE_STOP[worker.app]] == [worker.processor.write_held]
    # The watchdog excuses a commit held for the next write (the interval, its 1 s check and
    # the commit interval, twice): a short stall time keeps the interval.
    short = create_app(Settings.from_env(environ={**environ, "DRIFTWATCH_STALL_SECONDS": "8"}))
    assert short.processor.state_flush_seconds == worker.processor.state_flush_seconds
    assert short.watchdog is not None
    flush = worker.processor.state_flush_seconds
    assert short.watchdog.hold_grace_seconds == 2 * (flush + 1.0 + 2.0)
    for bad in ("-1", "301", "nan"):
        with pytest.raises(ValueError, match="STATE_FLUSH_SECONDS"):
            Settings.from_env(environ={**environ, "DRIFTWATCH_STATE_FLUSH_SECONDS": bad})
