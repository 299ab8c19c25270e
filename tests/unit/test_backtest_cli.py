"""`driftwatch simulate --out-dir` and `driftwatch backtest` as a user runs them."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest

from driftwatch.cli import main

START = "1767225600"


def test_simulate_then_backtest_with_outcomes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTWATCH_LOG_LEVEL", "WARNING")
    out = tmp_path / "data"
    assert (
        main(
            [
                "simulate",
                "--out-dir",
                str(out),
                "--days",
                "40",
                "--rate",
                "300",
                "--tenants",
                "acme",
                "--models",
                "fraud",
                "--outcomes",
                "--start",
                START,
                "--drift",
                "mean_shift:day=30.5:magnitude=1.5:features=amount",
            ]
        )
        == 0
    )
    (out / "predictions.jsonl").open("a").write("{broken\n")
    capsys.readouterr()
    history_file = tmp_path / "perf.jsonl"
    config = tmp_path / "short-history.toml"
    config.write_text("baseline_start_days = 28\nbaseline_end_days = 7\n")
    gc_before = gc.get_threshold()
    monkeypatch.setenv("DRIFTWATCH_BACKTEST_GC_THRESHOLD", "123457")
    paced: list[int] = []
    import driftwatch.backtest as backtest_module

    real_backtest_files = backtest_module.backtest_files

    def recording(*args: object, **kwargs: object) -> object:
        paced.append(gc.get_threshold()[0])
        return real_backtest_files(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(backtest_module, "backtest_files", recording)
    assert (
        main(
            [
                "backtest",
                "--config",
                str(config),
                "--predictions",
                str(out / "predictions.jsonl"),
                "--outcomes",
                str(out / "outcomes.jsonl"),
                "--performance",
                str(history_file),
            ]
        )
        == 0
    )
    assert paced == [123457]  # paced as a backtest (not as the worker)
    assert gc.get_threshold() == gc_before  # paced for the run, then as it was
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    drifts = [d for d in events if d["kind"] == "statistical"]
    assert drifts and {d["feature"] for d in drifts} == {"amount"}
    assert min(d["window_start"] for d in drifts) == "2026-01-31T00:00:00.000000Z"  # day 30
    # The shift makes the model less sure (more traffic near its threshold): its accuracy
    # really drops, and the label-free estimate says so before the labels do.
    perf = [d for d in events if d["kind"] == "performance"]
    assert all(d["window_start"] >= "2026-01-31" for d in perf)
    estimated = [d["detected_at"] for d in perf if d.get("estimated")]
    realised = [d["detected_at"] for d in perf if d["test"] == "accuracy_drop"]
    assert estimated and realised and min(estimated) < min(realised)
    summary = json.loads(captured.err.strip().splitlines()[-2])["backtest"]
    assert summary["performance_drift_events"] == len(perf)
    assert summary["events"] == 40 * 300 and summary["rejected"] == {"malformed_json": 1}
    assert summary["outcomes_joined"] == pytest.approx(0.8 * 40 * 300, rel=0.05)
    history = [json.loads(line) for line in history_file.read_text().splitlines()]
    assert len(history) == 40
    assert all(row["predictions"] == 300 for row in history)
    assert all(0.6 < row["label_rate"] <= 1 for row in history[:-3])
    assert all(row["pr_auc"] is None or row["pr_auc"] > 0.5 for row in history)


def test_backtest_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text("DRIFTWATCH_ALPHA = 2.0\n")
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("")
    assert main(["backtest", "--predictions", str(predictions), "--config", str(config)]) == 2
    assert "alpha" in capsys.readouterr().err


def test_simulate_s_default_start_keeps_outcomes_out_of_the_future(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the stream ending today, ~5 % of outcomes (1-3 days late) were from the future,
    and the worker ``simulate`` fed dead-lettered them (``future_timestamp``)."""
    import time

    monkeypatch.setenv("DRIFTWATCH_LOG_LEVEL", "WARNING")
    day = 86_400.0
    today = time.time() // day * day

    def latest(outcomes: bool) -> tuple[float, float]:
        out = tmp_path / ("with" if outcomes else "without")
        args = ["simulate", "--out-dir", str(out), "--days", "3", "--rate", "100",
                "--tenants", "acme", "--models", "fraud"]  # fmt: skip
        assert main([*args, "--outcomes"] if outcomes else args) == 0
        ts = [json.loads(line)["timestamp"] for line in (out / "predictions.jsonl").open()]
        labels = out / "outcomes.jsonl"
        done = [json.loads(line)["timestamp"] for line in labels.open()] if outcomes else []
        return max(map(_epoch, ts)), max(map(_epoch, done), default=0.0)

    last_prediction, last_outcome = latest(outcomes=True)
    assert last_outcome <= time.time() and last_prediction < today - 2 * day
    last_prediction, _ = latest(outcomes=False)
    assert today - day <= last_prediction < today  # no outcomes: the stream ends today


def _epoch(ts: str) -> float:
    from schemas import parse_timestamp

    return parse_timestamp(ts)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["simulate", "--drift", "bogus:day=1"], "argument --drift: unknown drift type 'bogus'"),
        (["simulate", "--drift", "mean_shift:day=1:magnitud=1"], "unknown drift option"),
        (["simulate", "--drift", "mean_shift:day=1:features=nosuch"], "no numeric feature named"),
        (["backtest", "--predictions", "{tmp}/nope.jsonl"], "{tmp}/nope.jsonl: No such file"),
        (["report", "--predictions", "{tmp}/nope.jsonl", "--out", "{tmp}/r.html"], "No such file"),
    ],
)
def test_a_user_s_mistake_is_a_usage_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if argv[0] == "simulate":
        argv += ["--out-dir", str(tmp_path / "out"), "--days", "2", "--rate", "10"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage error
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and says.replace("{tmp}", str(tmp_path)) in err, err
    assert "Traceback" not in err


def test_asking_for_what_is_not_there_says_what_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTWATCH_LOG_LEVEL", "WARNING")
    data = tmp_path / "data"
    assert main(["simulate", "--out-dir", str(data), "--days", "2", "--rate", "20",
                 "--tenants", "acme", "--models", "fraud", "--start", START]) == 0  # fmt: skip
    capsys.readouterr()
    report = ["report", "--predictions", str(data / "predictions.jsonl"), "--tenant", "acme"]

    def no_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("refused after the scan, before the engine's run")

    with monkeypatch.context() as m:
        m.setattr("driftwatch.backtest.run_backtest", no_run)
        code = main([*report, "--model", "nosuch", "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and "no model acme/nosuch in the input (it has: acme/fraud)" in err, err
    assert main(["inspect", "--data-dir", str(tmp_path / "nonexistent")]) == 1
    err = capsys.readouterr().err
    assert f"no worker state at {tmp_path / 'nonexistent'}" in err, err
    (tmp_path / "empty").mkdir()
    assert main(["inspect", "--data-dir", str(tmp_path / "empty")]) == 1
    assert "no stream state in" in capsys.readouterr().err


def test_simulate_s_help_names_every_drift_type() -> None:
    from driftwatch.cli import DRIFT_TYPES
    from driftwatch.simulate import DriftType

    assert tuple(t.value for t in DriftType) == DRIFT_TYPES


@pytest.mark.parametrize(
    ("name", "text", "says"),
    [
        ("c.toml", 'DRIFTWATCH_ALPHA = "0.05"\nDRIFTWATCH_MULTIVARIATE = "false"\n', None),
        (
            "c.toml",
            "DRIFTWATCH_CONFIRM_WINDOWS = 2.5\n",
            "setting DRIFTWATCH_CONFIRM_WINDOWS in {f}: expected an integer, got 2.5",
        ),
        (
            "c.toml",
            "DRIFTWATCH_MULTIVARIATE = 1\n",
            "setting DRIFTWATCH_MULTIVARIATE in {f}: expected true or false",
        ),
        ("c.toml", 'DRIFTWATCH_ALPHA = "lots"\n', "DRIFTWATCH_ALPHA in {f}: cannot parse 'lots'"),
        ("c.json", "[1, 2]", "{f}: expected a table of settings (name = value), got a list"),
        ("c.json", '{"alpha": [0.05]}', "(DRIFTWATCH_ALPHA) in {f}: expected a number"),
        ("c.json", "{", "{f}: Expecting property name"),
    ],
)
def test_config_file_values_are_checked_as_the_environment_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, says: str | None
) -> None:
    """A value of the wrong type in ``--config`` is one line and exit 2, as the same value in
    the environment is (not a traceback, nor a string taken as it is)."""
    config = tmp_path / name
    config.write_text(text)
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("")
    code = main(["backtest", "--predictions", str(predictions), "--config", str(config)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if says is None:
        assert code == 0, err
        return
    [line] = [x for x in err.splitlines() if "configuration error" in x]
    assert code == 2 and line.startswith("driftwatch: configuration error: ")
    assert says.format(f=config) in line, err


def test_a_run_that_accepted_nothing_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every line rejected (the outcomes given as ``--predictions``, a file of garbage) is
    exit 1 with the reasons, not the "no drift" of exit 0; an empty file is still 0."""
    monkeypatch.setenv("DRIFTWATCH_LOG_LEVEL", "ERROR")
    data = tmp_path / "data"
    assert main(["simulate", "--out-dir", str(data), "--days", "2", "--rate", "20",
                 "--tenants", "acme", "--models", "fraud", "--outcomes",
                 "--start", START]) == 0  # fmt: skip
    labels = sum(1 for _ in (data / "outcomes.jsonl").open())
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\xff{\n" * 3 + b"[1]\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    capsys.readouterr()
    assert main(["backtest", "--predictions", str(data / "outcomes.jsonl")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert json.loads(err[-2])["backtest"]["events"] == 0
    assert err[-1] == (
        f"driftwatch: no prediction accepted: {labels} lines rejected (missing_field {labels})"
    )
    assert main(["backtest", "--predictions", str(garbage)]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == (
        "driftwatch: no prediction accepted: 4 lines rejected (malformed_json 3, wrong_type 1)"
    )
    assert main(["backtest", "--predictions", str(empty)]) == 0
    assert "no prediction accepted" not in capsys.readouterr().err


def test_gzip_input_is_read_and_a_cut_one_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gzip

    monkeypatch.setenv("DRIFTWATCH_LOG_LEVEL", "ERROR")
    data = tmp_path / "data"
    assert main(["simulate", "--out-dir", str(data), "--days", "20", "--rate", "150",
                 "--tenants", "acme", "--models", "fraud", "--outcomes", "--start", START,
                 "--drift", "mean_shift:day=16.5:magnitude=1.5:features=amount"]) == 0  # fmt: skip
    zipped = {}
    for name in ("predictions", "outcomes"):
        zipped[name] = tmp_path / f"{name}.log"  # told by its bytes, not its name
        zipped[name].write_bytes(gzip.compress((data / f"{name}.jsonl").read_bytes()))
    config = tmp_path / "c.toml"
    config.write_text(
        "baseline_start_days = 14\nbaseline_end_days = 7\nmin_baseline_windows = 5\n"
        "seasonal_period_days = 0\n"
    )
    capsys.readouterr()
    runs = []
    for p, o in ((data / "predictions.jsonl", data / "outcomes.jsonl"),
                 (zipped["predictions"], zipped["outcomes"])):  # fmt: skip
        assert main(["backtest", "--config", str(config), "--predictions", str(p),
                     "--outcomes", str(o)]) == 0  # fmt: skip
        out, err = capsys.readouterr()
        summary = json.loads(err.splitlines()[-1])["backtest"]
        runs.append((out, {k: v for k, v in summary.items() if "second" not in k}))
    assert runs[0] == runs[1] and runs[0][1]["events"] == 20 * 150
    assert runs[0][1]["outcomes_joined"] > 0 and '"feature":"amount"' in runs[0][0]
    cut = tmp_path / "cut.gz"
    cut.write_bytes(zipped["predictions"].read_bytes()[:4000])
    assert main(["backtest", "--predictions", str(cut)]) == 2
    err = capsys.readouterr().err
    assert f"driftwatch: {cut}: not a readable gzip file" in err and "Traceback" not in err


def test_an_unwritable_performance_path_stops_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    predictions = tmp_path / "p.jsonl"
    predictions.write_text("")

    def no_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the output path is checked before the run")

    monkeypatch.setattr("driftwatch.backtest.backtest_files", no_run)
    history = tmp_path / "nonexistent" / "h.jsonl"
    assert main(["backtest", "--predictions", str(predictions),
                 "--performance", str(history)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err == f"driftwatch: {history}: No such file or directory\n"
