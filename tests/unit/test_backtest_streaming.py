"""The streamed backtest (files read in place, or sorted on disk) against the in-memory one.

Whatever the file order, ``backtest_files`` must give exactly the DriftEvents that
``run_backtest`` gives on the same events read into lists and sorted in memory (ties in file
order, predictions before outcomes stamped the same instant), count rejected lines the same,
and leave no temporary files behind.
"""

from __future__ import annotations

import gc
import io
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agents.state_files import describe_state
from driftwatch import backtest
from driftwatch.backtest import (
    BacktestReport,
    backtest_files,
    read_outcomes,
    read_predictions,
    run_backtest,
    sorted_outcomes,
    sorted_predictions,
)
from driftwatch.cli import main
from driftwatch.disk_store import DiskStore
from driftwatch.join_keys import JoinKeys, JoinKeyScan
from driftwatch.simulate import (
    DriftSpec,
    DriftType,
    SimulationConfig,
    generate,
    generate_outcomes,
)
from driftwatch.sortedio import SortedJsonLines
from schemas import OutcomeEvent, PredictionEvent, parse_timestamp
from streams.config import EngineConfig, PerformanceConfig
from streams.engine import DriftEngine
from streams.ingest import PredictionValidator
from streams.join import JoinResult, OutcomeJoiner
from streams.keyed_state import Write

START = 1_767_225_600.0
HOUR = 3_600.0
ENGINE = EngineConfig(
    baseline_start_days=14, baseline_end_days=7, min_baseline_windows=5, retention_days=16,
    seasonal_period_days=0,
)  # fmt: skip
PERF = PerformanceConfig(engine=ENGINE)
SIM = SimulationConfig(
    seed=11, tenants=("acme",), models=("fraud", "conflict"), days=22, events_per_day=160,
    numeric_features=3, categorical_features=1, start=START, label_rate=0.8,
    outcome_delay_hours=(6.0, 30.0),
    drifts=(DriftSpec(DriftType.MEAN_SHIFT, 16.5, 1.5, features=("amount",)),
            DriftSpec(DriftType.CONCEPT, 16.5, 0.6)),
)  # fmt: skip
BAD_LINES = [b"{broken", b'{"event_id": "x"}', b"[1, 2]", b"   "]
"""malformed_json, missing_field, wrong_type, and a blank line (skipped, not counted)."""
VALIDATOR = PredictionValidator(max_future_seconds=None)


def _shuffled(lines: list[bytes], seed: int, local_hours: float | None = None) -> list[bytes]:
    """Fully shuffled, or (``local_hours``) each line moved within windows of that many hours."""
    rng = random.Random(seed)
    if local_hours is None:
        out = list(lines)
        rng.shuffle(out)
        return out
    stamps = [parse_timestamp(json.loads(x)["timestamp"]) for x in lines]
    keyed = [
        (t // (local_hours * HOUR), rng.random(), x) for t, x in zip(stamps, lines, strict=True)
    ]
    return [x for *_, x in sorted(keyed)]


def _with_bad_lines(lines: list[bytes], seed: int) -> list[bytes]:
    out = list(lines)
    rng = random.Random(seed)
    for bad in BAD_LINES:
        out.insert(rng.randrange(len(out) + 1), bad)
    return out


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(x + b"\n" for x in lines))
    return path


def _hourly(events: list[PredictionEvent]) -> list[PredictionEvent]:
    """Timestamps floored to the hour: many equal timestamps, so tie order matters."""
    return [replace(e, timestamp=e.timestamp // HOUR * HOUR) for e in events]


def _predictions(ties: bool = False, days: int = SIM.days) -> list[bytes]:
    events = list(generate(replace(SIM, days=days)))
    return [e.to_json() for e in (_hourly(events) if ties else events)]


def _outcomes() -> list[bytes]:
    return [o.to_json() for o in generate_outcomes(SIM)]


def _reference(predictions: Path, outcomes: Path | None = None) -> tuple[BacktestReport, str]:
    """Today's backtest: both files read into lists, sorted in memory."""
    rejected: Counter[str] = Counter()
    events = list(read_predictions(predictions, VALIDATOR, rejected))
    labels = [] if outcomes is None else list(read_outcomes(outcomes, rejected))
    out = io.StringIO()
    report = run_backtest(events, ENGINE, out=out, outcomes=labels, performance=PERF)
    report.rejected.update(rejected)
    return report, out.getvalue()


def _streamed(
    predictions: Path,
    outcomes: Path | None = None,
    spill: Path | None = None,
    chunk_lines: int = 200_000,
) -> tuple[BacktestReport, str]:
    out = io.StringIO()
    report = backtest_files(
        predictions, ENGINE, VALIDATOR, outcomes=outcomes, out=out, performance=PERF,
        tmp_dir=spill, chunk_lines=chunk_lines,
    )  # fmt: skip
    return report, out.getvalue()


def _same(a: BacktestReport, b: BacktestReport) -> None:
    assert a.events == b.events and a.feature_values == b.feature_values
    assert a.outcomes_joined == b.outcomes_joined
    assert a.rejected == b.rejected
    assert a.performance == b.performance
    assert a.engine_stats == b.engine_stats
    assert a.notices == b.notices


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return _predictions()


def test_sorted_file_streams_in_place(lines: list[bytes], tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _with_bad_lines(lines, 1))
    spill = tmp_path / "spill"
    spill.mkdir()
    ref, ref_out = _reference(path)
    with sorted_predictions(path, VALIDATOR, tmp_dir=spill, chunk_lines=7) as source:
        assert source.in_order and source.runs == 1 and source.spilled == 0
        assert source.count == len(lines) and source.tmp_dir is None
        assert [e.event_id for e in source] == [json.loads(x)["event_id"] for x in lines]
    got, got_out = _streamed(path, spill=spill, chunk_lines=7)
    assert ref.drift_events_total > 5 and ref.performance_drift_events_total == 0
    assert got_out == ref_out and got_out.count("\n") == ref.drift_events_total
    _same(got, ref)
    assert got.rejected == {"malformed_json": 1, "missing_field": 1, "wrong_type": 1}
    assert got.drift_events == [] and got.drift_events_total == ref.drift_events_total
    assert list(spill.iterdir()) == []


@pytest.mark.parametrize("local_hours", [None, 6.0], ids=["full", "local"])
def test_shuffled_file_is_merge_sorted(
    lines: list[bytes], tmp_path: Path, local_hours: float | None
) -> None:
    path = _write(tmp_path / "p.jsonl", _with_bad_lines(_shuffled(lines, 2, local_hours), 3))
    spill = tmp_path / "spill"
    spill.mkdir()
    ref, ref_out = _reference(path)
    with sorted_predictions(path, VALIDATOR, tmp_dir=spill, chunk_lines=500) as source:
        assert not source.in_order and source.runs > 5 and source.spilled > 0
        assert source.tmp_dir is not None and source.tmp_dir.parent == spill
        tmp = source.tmp_dir
    assert not tmp.exists()
    got, got_out = _streamed(path, spill=spill, chunk_lines=500)
    assert got_out == ref_out and ref.drift_events_total > 5
    _same(got, ref)
    # The timestamps are all distinct: the sorted file's backtest is the same too.
    assert got_out == _streamed(_write(tmp_path / "sorted.jsonl", lines))[1]
    assert list(spill.iterdir()) == []


def test_ties_keep_file_order(tmp_path: Path) -> None:
    """Hour-floored timestamps (about 13 equal ones each), shuffled: the read order is exactly
    a stable sort of the file's valid events, through several chunks and merge levels."""
    lines = _with_bad_lines(_shuffled(_predictions(ties=True, days=4), 4), 5)
    path = _write(tmp_path / "p.jsonl", lines)
    valid = list(read_predictions(path, VALIDATOR, Counter()))
    assert len({e.timestamp for e in valid}) < len(valid) / 10
    expected = [e.event_id for e in sorted(valid, key=lambda e: e.timestamp)]
    for chunk_lines, fan_in in ((1, 64), (3, 2), (50, 3), (10**6, 64)):
        with SortedJsonLines(
            path, lambda raw: VALIDATOR.validate(raw, now=None), chunk_lines=chunk_lines,
            max_fan_in=fan_in, tmp_dir=tmp_path,
        ) as source:  # fmt: skip
            assert source.runs <= fan_in
            assert [e.event_id for e in source] == expected
            assert [e.event_id for e in source] == expected  # readable twice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_ties_same_drift_events(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", _shuffled(_predictions(ties=True), 4))
    ref, ref_out = _reference(path)
    got, got_out = _streamed(path, chunk_lines=37, spill=tmp_path)
    assert got_out == ref_out and ref.drift_events_total > 5
    _same(got, ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]


def test_in_order_prefix_then_disorder(lines: list[bytes], tmp_path: Path) -> None:
    """Sorted, but a few lines late: the sorted prefix is read in place, the rest merged."""
    late = list(lines)
    for i in (len(late) // 2, len(late) - 40, len(late) - 3):
        late.insert(i + 25, late.pop(i))
    path = _write(tmp_path / "p.jsonl", _with_bad_lines(late, 6))
    with sorted_predictions(path, VALIDATOR, chunk_lines=1000) as source:
        assert not source.in_order and 0 < source.prefix_bytes < path.stat().st_size
        assert source.spilled < len(lines) / 2 + 100
        assert [e.event_id for e in source] == [json.loads(x)["event_id"] for x in lines]
    ref, ref_out = _reference(path)
    got, got_out = _streamed(path, chunk_lines=1000)
    assert got_out == ref_out
    _same(got, ref)


@pytest.mark.parametrize("shuffle", [False, True], ids=["sorted", "shuffled"])
def test_outcomes_streamed(
    lines: list[bytes], tmp_path: Path, shuffle: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: the join's records go to a RocksDB store in the spill directory (a labelled
    input's join holds a retention of predictions: 1.04 GB of RSS in memory for 1.5M), with
    the same results as the in-memory join, and the store goes with the run."""
    applied: list[int] = []

    class CountingStore(DiskStore):
        def apply(self, writes: Iterable[Write]) -> None:
            batch = list(writes)
            applied.append(len(batch))
            super().apply(batch)

    monkeypatch.setattr(backtest, "DiskStore", CountingStore)
    monkeypatch.setattr(backtest, "FLUSH_EVERY", 700)  # state written a few times a run
    outcomes = _outcomes()
    if shuffle:
        lines, outcomes = _shuffled(lines, 7), _shuffled(outcomes, 8)
    predictions = _write(tmp_path / "p.jsonl", _with_bad_lines(lines, 9))
    labels = _write(tmp_path / "o.jsonl", [*outcomes, b'{"event_id": "x", "label": 1}'])
    spill = tmp_path / "spill"
    spill.mkdir()
    with sorted_outcomes(labels, tmp_dir=spill, chunk_lines=300) as source:
        assert source.in_order is not shuffle and source.count == len(outcomes)
        stamps = [o.timestamp for o in source]
        assert stamps == sorted(stamps) and len(stamps) == len(outcomes)
    ref, ref_out = _reference(predictions, labels)
    got, got_out = _streamed(predictions, labels, spill=spill, chunk_lines=300)
    assert ref.performance_drift_events_total > 0 and ref.outcomes_joined > 0.7 * len(lines)
    assert got_out == ref_out
    _same(got, ref)
    assert got.rejected["missing_field"] == 2
    assert sum(applied) > len(outcomes)  # the join's records, written to the disk store
    assert list(spill.iterdir()) == []


def test_prediction_before_outcome_at_the_same_instant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outcomes stamped exactly at their prediction's time (hour-floored, so many ties on
    both sides), both files shuffled: the joiner sees the events in exactly the order of a
    stable sort by (timestamp, predictions first)."""
    events = _hourly(list(generate(replace(SIM, days=3))))
    outcomes = [
        OutcomeEvent(e.event_id, e.tenant, e.model, e.timestamp, i % 2)
        for i, e in enumerate(events)
    ]
    random.Random(15).shuffle(outcomes)
    events = _shuffled_events(events)
    predictions = _write(tmp_path / "p.jsonl", [e.to_json() for e in events])
    labels = _write(tmp_path / "o.jsonl", [o.to_json() for o in outcomes])
    seen: list[tuple[str, str]] = []

    class Recording(OutcomeJoiner):
        def on_prediction(self, event: Any, *args: Any, **kw: Any) -> JoinResult:
            seen.append(("p", event.event_id))
            return super().on_prediction(event, *args, **kw)

        def on_outcome(self, event: OutcomeEvent, *args: Any, **kw: Any) -> JoinResult:
            seen.append(("o", event.event_id))
            return super().on_outcome(event, *args, **kw)

    monkeypatch.setattr(backtest, "OutcomeJoiner", Recording)
    ref, ref_out = _reference(predictions, labels)
    expected = sorted(
        [(e.timestamp, 0, i, "p", e.event_id) for i, e in enumerate(events)]
        + [(o.timestamp, 1, i, "o", o.event_id) for i, o in enumerate(outcomes)]
    )
    assert seen == [x[3:] for x in expected]
    seen.clear()
    got, got_out = _streamed(predictions, labels, chunk_lines=50)
    assert seen == [x[3:] for x in expected]
    assert ref.outcomes_joined == len(events) and got_out == ref_out
    _same(got, ref)


def _shuffled_events(events: list[PredictionEvent]) -> list[PredictionEvent]:
    out = list(events)
    random.Random(10).shuffle(out)
    return out


def test_rejected_lines_logged_with_file_and_line(
    lines: list[bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "p.jsonl", [lines[0], b"", b"{broken", *_shuffled(lines[1:50], 1)])
    with caplog.at_level(logging.WARNING):
        report, _ = _streamed(path, chunk_lines=10)
    assert report.rejected == {"malformed_json": 1} and report.events == 50
    assert [r.getMessage().split(": ")[0] for r in caplog.records] == [f"{path}:3"]


def test_empty_and_all_rejected_files(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.jsonl", [])
    bad = _write(tmp_path / "bad.jsonl", [b"{", b"", b"null"])
    for path in (empty, bad):
        with sorted_predictions(path, VALIDATOR) as source:
            assert source.count == 0 and source.in_order and list(source) == []
        report, out = _streamed(path)
        assert report.events == 0 and out == ""
    assert _streamed(bad)[0].rejected == {"malformed_json": 1, "wrong_type": 1}


def test_presorted_input_must_be_in_order() -> None:
    events = list(generate(replace(SIM, days=1)))
    run_backtest(iter(events), ENGINE, presorted=True)
    with pytest.raises(ValueError, match="out of event-time order"):
        run_backtest(iter(events[::-1]), ENGINE, presorted=True)


def test_in_memory_callers_keep_drift_events(lines: list[bytes]) -> None:
    events = [VALIDATOR.validate(x, now=None) for x in lines]
    report = run_backtest(_shuffled_events(events), ENGINE)
    assert len(report.drift_events) == report.drift_events_total > 5
    streamed = run_backtest(iter(events), ENGINE, presorted=True, keep_drift_events=False)
    assert streamed.drift_events == [] and streamed.drift_events_total == len(report.drift_events)


def test_changed_file_is_refused(lines: list[bytes], tmp_path: Path) -> None:
    path = _write(tmp_path / "p.jsonl", lines[:20])
    with sorted_predictions(path, VALIDATOR) as source:
        _write(path, lines[:21])
        with pytest.raises(RuntimeError, match="changed since it was scanned"):
            list(source)


GENERATED = re.compile(
    r"(?<=generated )\d{4}-\d\d-\d\d \d\d:\d\d UTC"
    r"|(?<=<dt>Generated</dt><dd>)\d{4}-\d\d-\d\d \d\d:\d\d"
)


def test_cli_backtest_and_report_stream(
    lines: list[bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commands on a shuffled file: the in-memory DriftEvents, and the same report page
    as for the sorted file, and as for a join that keeps every prediction (the report's
    scans find the join's keys: ``driftwatch.join_keys``)."""
    config = tmp_path / "c.toml"
    config.write_text(
        "baseline_start_days = 14\nbaseline_end_days = 7\nmin_baseline_windows = 5\n"
        "retention_days = 16\nseasonal_period_days = 0\n"
    )
    outcomes = _outcomes()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    sorted_p = _write(tmp_path / "a" / "p.jsonl", lines)
    sorted_o = _write(tmp_path / "a" / "o.jsonl", outcomes)
    shuffled_p = _write(tmp_path / "b" / "p.jsonl", _with_bad_lines(_shuffled(lines, 12), 13))
    shuffled_o = _write(tmp_path / "b" / "o.jsonl", _shuffled(outcomes, 14))
    _, ref_out = _reference(shuffled_p, shuffled_o)
    capsys.readouterr()
    args = ["backtest", "--config", str(config), "--predictions", str(shuffled_p)]
    assert main([*args, "--outcomes", str(shuffled_o)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ref_out
    summary = json.loads(captured.err.strip().splitlines()[-1])["backtest"]
    assert summary["drift_events"] == ref_out.count("\n") > 5
    assert summary["performance_drift_events"] == ref_out.count('"kind":"performance"') > 0
    assert summary["rejected"] == {"malformed_json": 1, "missing_field": 1, "wrong_type": 1}
    pages = []
    found: list[JoinKeys] = []
    scanned = JoinKeyScan.keys

    def every_prediction(scan: JoinKeyScan) -> JoinKeys:
        found.append(scanned(scan))
        return JoinKeys.everything()

    # The report's backtest is paced as `driftwatch backtest`'s, and the pace put back.
    monkeypatch.setenv("DRIFTWATCH_BACKTEST_GC_THRESHOLD", "123457")
    gc_before = gc.get_threshold()
    paced: list[int] = []
    real_run = backtest.run_backtest

    def recording(*args: Any, **kwargs: Any) -> BacktestReport:
        paced.append(gc.get_threshold()[0])
        return real_run(*args, **kwargs)

    monkeypatch.setattr(backtest, "run_backtest", recording)

    for p, o, keep_all in ((sorted_p, sorted_o, False), (shuffled_p, shuffled_o, False),
                           (shuffled_p, shuffled_o, True)):  # fmt: skip
        if keep_all:
            monkeypatch.setattr(JoinKeyScan, "keys", every_prediction)
        out = p.parent / ("html-all" if keep_all else "html")
        out.mkdir()
        assert main(["report", "--config", str(config), "--predictions", str(p),
                     "--outcomes", str(o), "--out", str(out)]) == 0  # fmt: skip
        # "generated <minute>" (footer and header) differs when the runs straddle a minute
        pages.append({f.name: GENERATED.sub("-", f.read_text()) for f in out.iterdir()})
    assert sorted(pages[0]) == ["acme-conflict.html", "acme-fraud.html"]
    assert pages[0] == pages[1] == pages[2]
    assert paced == [123457] * 3 and gc.get_threshold() == gc_before
    # What the scans found (and the others ran with): the outcomes' ids, the join's keys.
    assert found[0].size == len({json.loads(o)["event_id"] for o in outcomes}) > 1000


def test_unclosed_source_removes_its_files_when_collected(
    lines: list[bytes], tmp_path: Path
) -> None:
    path = _write(tmp_path / "p.jsonl", _shuffled(lines[:100], 1))
    spill = tmp_path / "spill"
    spill.mkdir()
    source = sorted_predictions(path, VALIDATOR, tmp_dir=spill, chunk_lines=10)
    assert source.tmp_dir is not None and len(list(source.tmp_dir.iterdir())) == 10
    assert len(list(source)) == 100
    del source
    gc.collect()
    assert list(spill.iterdir()) == []


def test_state_spilled_as_a_backtest_goes_is_the_state_kept_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every few hundred events the engine writes what bounds memory (expired windows'
    deletes, the windows its cache forgets) and nothing else: with a cache of 40 windows, so
    that windows are forgotten and read back all along, the same drift events and the same
    final state as a run that writes nothing until its end, and as one that flushes every
    change each time (as the backtest did), with fewer windows encoded than the latter."""
    events = sorted(
        (VALIDATOR.validate(e.to_json(), now=None) for e in generate(replace(SIM, label_rate=0))),
        key=lambda e: e.timestamp,
    )
    spill = DriftEngine.spill

    def run(how: str, cache: int) -> tuple[BacktestReport, list[Write]]:
        writes: list[Write] = []

        def recorded(engine: DriftEngine) -> list[Write]:
            out = spill(engine) if how == "spill" else engine.flush(keep_cache=True)
            writes.extend(out)
            return out

        monkeypatch.setattr(DriftEngine, "spill", recorded)
        monkeypatch.setattr(backtest, "FLUSH_EVERY", 10**9 if how == "end" else 300)
        return run_backtest(events, replace(ENGINE, cached_windows=cache)), writes

    whole, none = run("end", 10**6)
    spilled, spills = run("spill", 40)
    flushed, flushes = run("flush", 40)
    assert len(whole.drift_events) >= 2 and not none
    assert spilled.engine_stats["windows_expired"] > 0
    for report in (spilled, flushed):
        assert [d.to_json() for d in report.drift_events] == [
            d.to_json() for d in whole.drift_events
        ]
        assert report.feature_state is not None and whole.feature_state is not None
        assert describe_state(report.feature_state.data) == describe_state(whole.feature_state.data)
    # Byte for byte (summaries, tests' results, moments): the changes not yet written were
    # kept whole, and the last flush wrote each as the flushes had.
    assert spilled.feature_state.data == flushed.feature_state.data  # type: ignore[union-attr]
    encoded = sum(w.value is not None for w in spills)
    deletes = sum(w.value is None for w in spills)
    assert deletes == sum(w.value is None for w in flushes) > 0
    assert 40 < encoded < 0.6 * sum(w.value is not None for w in flushes)


def test_gzip_files_are_read_as_their_lines(lines: list[bytes], tmp_path: Path) -> None:
    """Operators keep logs gzipped: a gzip file (told by its magic bytes, whatever its name)
    is read as its decompressed lines, in place or sorted on disk, with outcomes too."""
    import gzip

    from driftwatch.sortedio import UnreadableFile

    predictions = _with_bad_lines(_shuffled(lines, 21, local_hours=30), 22)
    plain_p = _write(tmp_path / "p.jsonl", predictions)
    plain_o = _write(tmp_path / "o.jsonl", _shuffled(_outcomes(), 23))
    zipped_p, zipped_o = tmp_path / "p.log", tmp_path / "o.jsonl.gz"
    zipped_p.write_bytes(gzip.compress(plain_p.read_bytes()))
    zipped_o.write_bytes(gzip.compress(plain_o.read_bytes()))
    ref, ref_out = _streamed(plain_p, plain_o, chunk_lines=500)
    got, got_out = _streamed(zipped_p, zipped_o, chunk_lines=500)
    assert ref.events == len(lines) and ref.outcomes_joined > 1000
    assert got_out == ref_out and ref_out.count("\n") > 5
    _same(got, ref)
    with sorted_predictions(zipped_p, VALIDATOR, chunk_lines=500) as source:
        assert not source.in_order and source.count == len(lines)
    in_order = tmp_path / "sorted.gz"
    in_order.write_bytes(gzip.compress(b"".join(x + b"\n" for x in lines)))
    with sorted_predictions(in_order, VALIDATOR) as source:
        assert source.in_order and source.count == len(lines) == len(list(source))
    assert list(read_predictions(zipped_p, VALIDATOR, Counter())) == list(
        read_predictions(plain_p, VALIDATOR, Counter())
    )
    cut = tmp_path / "cut.gz"
    cut.write_bytes(zipped_p.read_bytes()[:5000])  # a log still being written
    with pytest.raises(UnreadableFile, match=f"{cut}: not a readable gzip file"):
        sorted_predictions(cut, VALIDATOR)


def test_a_refused_type_is_logged_like_a_rejected_line(
    lines: list[bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A value of the other type for a feature (``"amount": "NaN"`` where it is numeric)
    passes the scan and is refused by the engine: counted, and logged with its event id."""
    data = [json.loads(x) for x in lines[:60]]
    k = next(k for k in range(30, 60) if data[k]["model"] == "fraud")
    data[k]["features"]["amount"] = "NaN"
    bad_id = data[k]["event_id"]
    path = _write(tmp_path / "p.jsonl", [json.dumps(d).encode() for d in data])
    for outcomes in (None, _write(tmp_path / "o.jsonl", _outcomes()[:5])):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            report, _ = _streamed(path, outcomes)
        assert report.rejected["type_mismatch"] == 1 and report.events == 59
        said = [r.getMessage() for r in caplog.records if "type_mismatch" in r.getMessage()]
        assert said == [
            f"prediction {bad_id} (acme/fraud): type_mismatch: feature "
            "'amount' is numeric in this stream, got categorical"
        ]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_file_s_byte_order_mark_is_not_its_first_line_s(
    lines: list[bytes], tmp_path: Path, compressed: bool
) -> None:
    """Some tools start a UTF-8 file with a byte-order mark: the file's, skipped, not its
    first line's (a message that starts with one is refused as not UTF-8 JSON), in order or
    sorted, plain or gzip."""
    import codecs
    import gzip

    shuffled = _shuffled(lines[:400], 6)
    for name, content in (("sorted", lines[:400]), ("shuffled", shuffled)):
        body = codecs.BOM_UTF8 + b"".join(x + b"\n" for x in content)
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(gzip.compress(body) if compressed else body)
        rejected: Counter[str] = Counter()
        assert len(list(read_predictions(path, VALIDATOR, rejected))) == 400 and not rejected
        with sorted_predictions(path, VALIDATOR, tmp_dir=tmp_path, chunk_lines=50) as source:
            assert source.in_order == (name == "sorted") and not source.rejected
            assert sorted(e.event_id for e in source) == sorted(
                json.loads(x)["event_id"] for x in content
            )
