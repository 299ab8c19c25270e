"""The worker's stop deadline (``runtime.stop_deadline``) over a fake app and clock, and a
worker made with its API off."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

from runtime.stop_deadline import STOP_TIMEOUT_EXIT_CODE, watch_stop


def test_a_stop_that_does_not_finish_is_ended_after_the_deadline() -> None:
    app = SimpleNamespace(should_stop=False)
    now = [0.0]
    exited: list[int] = []
    done = threading.Event()

    def exit(code: int) -> None:
        exited.append(code)
        done.set()

    thread = watch_stop(app, 30.0, poll=0.001, exit=exit, clock=lambda: now[0])
    assert thread is not None and thread.daemon
    assert not done.wait(0.05), "ended before the stop began"
    app.should_stop = True  # SIGTERM: the app begins to stop
    assert not done.wait(0.05), "ended before the deadline"
    now[0] = 29.0
    assert not done.wait(0.05)
    now[0] = 31.0
    assert done.wait(2.0) and exited == [STOP_TIMEOUT_EXIT_CODE]


def test_no_deadline_when_it_is_zero() -> None:
    assert watch_stop(SimpleNamespace(should_stop=True), 0.0) is None


def test_a_worker_with_the_api_off_can_be_made(tmp_path: Path) -> None:
    """``DRIFTWATCH_API_PORT=0`` turns the API off, as the README and the start-up error say;
    Faust checks its web port even with its server off, and 0 made the worker fail to start
    (``ImproperlyConfigured: Value 0 is out of range for Port``)."""
    from agents.app import create_app
    from runtime.settings import Settings

    settings = Settings.from_env(
        environ={"DRIFTWATCH_API_PORT": "0", "DRIFTWATCH_DATA_DIR": str(tmp_path)}
    )
    worker = create_app(settings)
    assert worker.app.conf.web_enabled is False
