"""The in-process benchmarks still run, on tiny inputs, and print what they measure.

The figures in docs/benchmarks.md come from these scripts; a change to what they drive (a
processor's message, an engine call) broke ``bench.profile_engine`` once without a test
noticing, since the benchmarks run only in ``make bench``. This runs each as a user would
(``python -m bench.X``) and checks that every row it reports has a positive figure: the
work was done, not only the script started. The broker benchmarks (``bench.throughput``,
``bench.worker_memory``, ...) need Kafka and minutes; they stay in ``make bench``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.gc_tuning import paced_gc

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"\d[\d,]*(?:\.\d+)?"


def run_bench(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def figures(output: str, label: str) -> list[float]:
    """The numbers on the line that starts with ``label`` (after it)."""
    for line in output.splitlines():
        if line.strip().startswith(label):
            rest = line.strip()[len(label) :]
            return [float(x.replace(",", "")) for x in re.findall(NUMBER, rest)]
    raise AssertionError(f"no line {label!r} in:\n{output}")


def test_profile_engine_drives_the_processor_every_way() -> None:
    out = run_bench("profile_engine", "--events", "400", "--features", "3", "--batch", "50",
                    "--no-profile")  # fmt: skip
    for row in (
        "validate+observe+flush",
        "PredictionProcessor (dict table)",
        "written every 5 s, applied per batch",
        "written every 5 s, applied in runs",
    ):
        seconds, per_second, *_ = figures(out, row)
        assert seconds >= 0 and per_second > 0, row
    engine = re.search(r"engine: events=(\d+), windows_closed=(\d+)", out)
    assert engine is not None and int(engine[1]) == 400 and int(engine[2]) > 0


def test_processor_share_times_the_processor_over_the_live_part(tmp_path: Path) -> None:
    out = run_bench("processor_share", "--events", "600", "--features", "3", "--batch", "50",
                    "--out", str(tmp_path / "share.json"))  # fmt: skip
    seconds, per_second, applied, history = figures(out, "drift processor alone:")[-4:]
    assert seconds > 0 and per_second > 0
    assert applied == 600 + history and history > 0  # every prediction went through the engine
    assert json.loads((tmp_path / "share.json").read_text())["applied"] == applied


def test_profile_join_times_the_three_join_paths() -> None:
    out = run_bench("profile_join", "--events", "300", "--features", "5")
    for row in (
        "join, stored as forwarded:",
        "join, decoded (trusted):",
        "join, decoded (checked):",
    ):
        assert figures(out, row)[0] > 0, row


def test_loop_lag_reports_both_modes() -> None:
    out = run_bench("loop_lag", "--events", "300", "--features", "5", "--batch", "50")
    for row in ("on the loop", "off the loop"):
        p50, p99, worst, seconds = figures(out, row)
        assert 0 <= p50 <= p99 <= worst and seconds > 0, row


def test_backtest_speed_runs_every_variant(tmp_path: Path) -> None:
    result = tmp_path / "speed.json"
    out = run_bench("backtest_speed", "--days", "3", "--rate", "100", "--features", "5",
                    "--out", str(result))  # fmt: skip
    for row in (
        "parse + validate only (baseline)",
        "engine, end-of-window tests only",
        "engine, defaults (hourly sub-day looks)",
        "engine + join + performance (15% labelled), join on disk",
    ):
        assert figures(out, row)[1] > 0, row  # values/s
    assert json.loads(result.read_text())["benchmark"] == "bench.backtest_speed"


@pytest.mark.parametrize(
    ("module", "args", "rows"),
    [
        ("validation_speed", ("--events", "300", "--features", "5"), ("envelopes of 500",)),
        ("request_encoding", ("--repeat", "2"), ("1 x 16 KiB", "1 x 512 KiB", "8 x 512 KiB")),
        (
            "bucket_reduction",
            ("--days", "2", "--repeat", "1", "--chunks", "6"),
            ("streams.buckets:", "folds, streams.buckets:"),
        ),
    ],
)
def test_small_benchmarks_print_their_figures(
    module: str, args: tuple[str, ...], rows: tuple[str, ...], tmp_path: Path
) -> None:
    writes = ("validation_speed", "request_encoding")
    extra = ("--out", str(tmp_path / "out.json")) if module in writes else ()
    out = run_bench(module, *args, *extra)
    for row in rows:
        assert figures(out, row)[0] > 0, row


def test_labelled_instructions_replays_with_and_without_outcomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What callgrind counts (valgrind itself is left to ``make bench``): the same stream
    through the backtest with its outcomes joined, and without them."""
    from bench.labelled_instructions import prepare, replay

    path = tmp_path / "stream.pkl"
    predictions, outcomes = prepare(path, days=3)
    assert predictions == 6_000 and outcomes > 500
    with paced_gc(0):  # the collector's pace as it was after (replay sets its own)
        replay(path, labelled=True)
        replay(path, labelled=False)
        replay(path, labelled=True, join_keys=True)  # as driftwatch backtest joins: the same
    with_labels, without, with_keys = capsys.readouterr().out.splitlines()
    assert int(with_labels.split("joined: ")[1]) > 300
    assert without.endswith("joined: 0") and with_keys == with_labels


def test_the_instruction_benchmarks_replay_at_the_backtests_collector_pace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both replays (what callgrind counts) run at the backtest's collector pace, each written
    in its own script: with ``--compare`` the other checkout's modules may predate it."""
    import gc
    import importlib
    import pickle

    from bench import labelled_instructions, steady_instructions
    from runtime.gc_tuning import BACKTEST_THRESHOLD
    from schemas import PredictionEvent

    state = tmp_path / "state.pkl"
    event = PredictionEvent("e1", "acme", "fraud", "v1", 0.0, {"x": 1.0}, 0.5)
    with state.open("wb") as fh:
        pickle.dump(({}, [event]), fh)
    stream = tmp_path / "stream.pkl"
    labelled_instructions.prepare(stream, days=1)
    for replay in (
        lambda: steady_instructions.replay(state, False),
        lambda: labelled_instructions.replay(stream, labelled=False),
    ):
        with paced_gc(0):  # the thresholds as they were, after
            gc.set_threshold(700, *gc.get_threshold()[1:])
            replay()
            assert gc.get_threshold()[0] == BACKTEST_THRESHOLD
    # Beside a checkout whose module has no pace_gc (--compare), the script still imports.
    monkeypatch.delattr(steady_instructions, "pace_gc")
    importlib.reload(labelled_instructions)
