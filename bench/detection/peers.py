"""The peer detectors: river's ADWIN / KSWIN / PageHinkley and alibi-detect's KSDrift /
ChiSquareDrift (or the same procedure in scipy when alibi-detect is not available).

river (from the project's own venv, river==0.26.1) runs per feature on the feature's values
in event-time order, missing values skipped, default parameters. Categorical features are
fed the 0/1 indicator of the category most frequent in the reference days (0-29): river's
detectors take numbers. An alarm is ``drift_detected`` after an update, at that event's time.

KSWIN's default update runs ``scipy.stats.ks_2samp`` on 30 + 30 values at every event
(~300 µs), far too slow for millions of updates, so :class:`FastKSWIN` replays exactly the
same computation in blocks with numpy: the same ``random.Random(seed)`` draws in the same
order (re-seeded after every drift, as river's ``_reset`` does), the same KS statistic, and
the p-value of ``ks_2samp(method="auto")`` (exact for 30 + 30, a function of the statistic
only) from a 31-entry table made by scipy itself. :func:`verify_fast_kswin` checks it against
river's own KSWIN on every run.

alibi-detect (0.13 pins numpy < 2, so it cannot live in the project's venv) runs in a
separate venv, ``.venv-bench`` (``bench/requirements-detection.txt``), as a subprocess
(``bench/detection/alibi_worker.py``) that the benchmark feeds one stream at a time. Its
multivariate detectors, MMDDrift and LSDDDrift (PyTorch backend, on the CPU), test each day's
numeric rows, standardised and subsampled here (:func:`multivariate_batches`), against the
reference days as one sample.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from river import drift
from scipy import stats

from bench.detection.metrics import DAY, Alarm

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REFERENCE_DAYS = 30  # alibi-detect's fixed reference, days 0-29; also the river indicator's
ALIBI_P_VAL = 0.01
MV_DETECTORS = ("MMD", "LSDD")  # alibi-detect's multivariate detectors (PyTorch backend)
MV_ROWS = 500  # rows per side of each multivariate test (the reference's and each day's)
MV_PERMUTATIONS = 100  # alibi-detect's default
MV_P_VAL = 0.01  # one test per day: about 1 % of clean days alarm (1/101 at 100 permutations)
MV_SCENARIOS = ("seasonal-null", "null-50", "corr-flip", "corr-null")
KSWIN_SEED = 42

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "alibi_worker.py"
NANNYML_WORKER = Path(__file__).resolve().parent / "nannyml_worker.py"
REQUIREMENTS = ROOT / "bench" / "requirements-detection.txt"


# --------------------------------------------------------------------------- stream columns


@dataclass
class Columns:
    """A stream as arrays: event times, a day index per event, and one column per feature.

    Numeric columns hold NaN for missing values; categorical columns hold integer codes into
    ``categories[name]`` with -1 for missing.
    """

    start: float
    times: FloatArray
    day: IntArray
    numeric: dict[str, FloatArray]
    categorical: dict[str, IntArray]
    categories: dict[str, list[str]]

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def to_columns(
    events: Sequence[Any], start: float, numeric: list[str], categorical: list[str]
) -> Columns:
    """Columns of ``events`` (already in event-time order)."""
    times = np.fromiter((e.timestamp for e in events), np.float64, len(events))
    day = np.floor((times - start) / DAY).astype(np.int64)
    num: dict[str, FloatArray] = {}
    for name in numeric:
        num[name] = np.array(
            [math.nan if (v := e.features.get(name)) is None else v for e in events], np.float64
        )
    cat: dict[str, IntArray] = {}
    cats: dict[str, list[str]] = {}
    for name in categorical:
        raw = [e.features.get(name) for e in events]
        names = sorted({v for v in raw if v is not None})
        index = {v: i for i, v in enumerate(names)}
        cat[name] = np.array([-1 if v is None else index[v] for v in raw], np.int64)
        cats[name] = names
    return Columns(start, times, day, num, cat, cats)


# --------------------------------------------------------------------------- river


class FastKSWIN:
    """river's ``KSWIN`` (default parameters), replayed in numpy blocks with identical alarms.

    >>> rng = np.random.default_rng(3)
    >>> x = np.concatenate([rng.normal(0, 1, 600), rng.normal(2, 1, 600)]).round(1)
    >>> FastKSWIN(seed=1).alarms(x) == river_alarms(lambda: drift.KSWIN(seed=1), x)
    True
    """

    def __init__(
        self,
        alpha: float = 0.005,
        window_size: int = 100,
        stat_size: int = 30,
        seed: int | None = None,
        block: int = 8192,
    ) -> None:
        self.alpha, self.window_size, self.stat_size = alpha, window_size, stat_size
        self.seed, self.block = seed, block
        self._rng = random.Random(seed)
        self._draws = np.empty((0, stat_size), np.int64)
        self._reject = self._reject_table()

    def _reject_table(self) -> npt.NDArray[np.bool_]:
        """reject[k]: would river alarm when the 30-vs-30 KS statistic is k / 30?"""
        r = self.stat_size
        out = np.zeros(r + 1, dtype=bool)
        a = np.arange(r, dtype=np.float64)
        for k in range(r + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=RuntimeWarning)
                st, p = stats.ks_2samp(a, a + k - 0.5 if k else a, method="auto")
            assert round(st * r) == k, (k, st)
            out[k] = p <= self.alpha and st > 0.1
        return out

    def _indices(self, n: int) -> IntArray:
        """The first ``n`` index draws of a fresh ``random.Random(seed)``, as river makes them."""
        if len(self._draws) < n:
            population = range(self.window_size - self.stat_size)
            more = [
                self._rng.sample(population, self.stat_size)
                for _ in range(max(n - len(self._draws), 1024))
            ]
            self._draws = np.vstack([self._draws, np.array(more, np.int64)])
        return self._draws[:n]

    def alarms(self, x: FloatArray) -> list[int]:
        """Indices ``i`` at which ``drift_detected`` is true after ``update(x[i])``."""
        # Ranks keep the order and the ties of the values, and sort faster than floats.
        x = np.unique(np.asarray(x, np.float64), return_inverse=True)[1].astype(np.int64)
        ws, ss, n = self.window_size, self.stat_size, len(x)
        recent_offsets = np.arange(ws - ss, ws)
        out: list[int] = []
        s = 0  # index of the first value after the last reset
        while s + ws - 1 < n:
            tests = n - (s + ws - 1)
            found: int | None = None
            j0 = 0
            b = 128  # grows while nothing is found: alarms can come every few hundred values
            while j0 < tests and found is None:
                b = min(b * 2, self.block, tests - j0)
                draws = self._indices(j0 + b)[j0:]
                base = (s + j0 + np.arange(b))[:, None]
                k = _ks_counts(x[base + draws], x[base + recent_offsets])
                hits = np.flatnonzero(self._reject[k])
                if hits.size:
                    found = j0 + int(hits[0])
                j0 += b
            if found is None:
                break
            t = s + ws - 1 + found
            out.append(t)
            s = t + 1  # the next update resets the window (and re-seeds the draws)
        return out


def _ks_counts(a: IntArray, b: IntArray) -> IntArray:
    """Row-wise ``n * D``, the two-sample KS statistic of equal-size samples of ranks.

    Each value becomes ``2 * rank + side``; after a row sort, the running sum of +1 (side a)
    and -1 (side b) is n * (F_a - F_b), read only where a run of tied ranks ends, as scipy's
    ``searchsorted(..., side="right")`` does.

    >>> _ks_counts(np.array([[0, 1, 2]]), np.array([[3, 4, 5]])).tolist()
    [3]
    >>> _ks_counts(np.array([[0, 1, 1]]), np.array([[1, 1, 0]])).tolist()
    [0]
    """
    keys = np.concatenate([a * 2, b * 2 + 1], axis=1)
    keys.sort(axis=1)
    running = np.cumsum(1 - 2 * (keys & 1), axis=1)
    rank = keys >> 1
    last = np.ones(keys.shape, dtype=bool)
    last[:, :-1] = rank[:, 1:] != rank[:, :-1]
    counts: IntArray = np.abs(np.where(last, running, 0)).max(axis=1)
    return counts


def river_alarms(factory: Callable[[], Any], x: FloatArray) -> list[int]:
    """Indices at which a fresh detector from ``factory`` reports a drift, fed ``x`` in order."""
    det = factory()
    out: list[int] = []
    update = det.update
    for i, v in enumerate(x.tolist()):
        update(v)
        if det.drift_detected:
            out.append(i)
    return out


def verify_fast_kswin(n: int = 4000) -> int:
    """Compare :class:`FastKSWIN` with river's ``KSWIN`` on a shifting continuous series and
    a 0/1 indicator series (ties); raise if any alarm differs. Returns the alarms compared."""
    rng = np.random.default_rng(2024)
    regime = (np.arange(n) // 400) % 2  # a change every 400 values
    series = [
        (rng.normal(0, 1, n) + 1.5 * regime).round(4),
        (rng.random(n) < np.where(regime == 0, 0.2, 0.6)).astype(np.float64),
    ]
    compared = 0
    for x in series:
        ours = FastKSWIN(seed=KSWIN_SEED).alarms(x)
        theirs = river_alarms(lambda: drift.KSWIN(seed=KSWIN_SEED), x)
        if ours != theirs:
            raise AssertionError(
                f"FastKSWIN differs from river KSWIN: {ours[:10]} vs {theirs[:10]}"
            )
        compared += len(ours)
    return compared


RIVER_DETECTORS = ("ADWIN", "KSWIN", "PageHinkley")


def river_series(cols: Columns) -> dict[str, tuple[FloatArray, FloatArray]]:
    """Per feature, (times, values) fed to river: missing skipped, categoricals as the 0/1
    indicator of the reference period's most frequent category."""
    out: dict[str, tuple[FloatArray, FloatArray]] = {}
    for name, values in cols.numeric.items():
        ok = ~np.isnan(values)
        out[name] = (cols.times[ok], values[ok])
    for name, codes in cols.categorical.items():
        ok = codes >= 0
        ref = codes[ok & (cols.day < REFERENCE_DAYS)]
        top = int(np.bincount(ref).argmax()) if ref.size else 0
        out[name] = (cols.times[ok], (codes[ok] == top).astype(np.float64))
    return out


def run_river(cols: Columns) -> dict[str, list[Alarm]]:
    """Alarms of each river detector (fresh per feature) on every feature of the stream."""
    alarms: dict[str, list[Alarm]] = {name: [] for name in RIVER_DETECTORS}
    kswin = FastKSWIN(seed=KSWIN_SEED)
    for feature, (times, values) in river_series(cols).items():
        found = {
            "ADWIN": river_alarms(drift.ADWIN, values),
            "KSWIN": kswin.alarms(values),
            "PageHinkley": river_alarms(drift.PageHinkley, values),
        }
        for name, idx in found.items():
            alarms[name].extend(Alarm(feature, float(times[i])) for i in idx)
    return alarms


# --------------------------------------------------------------------------- alibi-detect


def daily_batches(cols: Columns) -> dict[str, Any]:
    """What the alibi-detect procedure sees: per feature, the reference values (days 0-29)
    and each later day's values, missing dropped."""
    days = int(cols.day.max()) + 1 if len(cols.day) else 0
    bounds = np.searchsorted(cols.day, np.arange(days + 1))
    out: dict[str, Any] = {"days": days, "numeric": {}, "categorical": {}}
    for kind, columns in (("numeric", cols.numeric), ("categorical", cols.categorical)):
        for name, col in columns.items():
            ok = ~np.isnan(col) if kind == "numeric" else col >= 0
            per_day = [
                col[bounds[d] : bounds[d + 1]][ok[bounds[d] : bounds[d + 1]]] for d in range(days)
            ]
            out[kind][name] = per_day
    return out


def scipy_alibi_equivalent(cols: Columns) -> dict[str, dict[str, list[float]]]:
    """The alibi-detect procedure in scipy: per-feature p-values of each tested day.

    KSDrift: ``ks_2samp(ref, x, method="asymp")``; ChiSquareDrift: ``chi2_contingency`` of
    the counts over the union of the categories seen (default Yates correction); p-values
    stored as float32 like alibi-detect does.
    """
    batches = daily_batches(cols)
    out: dict[str, dict[str, list[float]]] = {"numeric": {}, "categorical": {}}
    for name, per_day in batches["numeric"].items():
        ref = np.concatenate(per_day[:REFERENCE_DAYS])
        out["numeric"][name] = [
            float(np.float32(stats.ks_2samp(ref, x, method="asymp").pvalue)) if x.size else math.nan
            for x in per_day[REFERENCE_DAYS:]
        ]
    for name, per_day in batches["categorical"].items():
        ref = np.concatenate(per_day[:REFERENCE_DAYS])
        ps: list[float] = []
        for x in per_day[REFERENCE_DAYS:]:
            if not x.size:
                ps.append(math.nan)
                continue
            cats = np.union1d(np.unique(ref), np.unique(x))
            table = np.array([[(ref == c).sum() for c in cats], [(x == c).sum() for c in cats]])
            ps.append(float(np.float32(stats.chi2_contingency(table).pvalue)))
        out["categorical"][name] = ps
    return out


def alibi_alarms(pvalues: dict[str, dict[str, list[float]]], cols: Columns) -> list[Alarm]:
    """Daily alarms from per-feature p-values: Bonferroni over each detector's features
    (KSDrift's numeric columns, ChiSquareDrift's categorical ones), as alibi-detect's default
    ``correction="bonferroni"`` does; alarm time = the end of the tested day."""
    alarms: list[Alarm] = []
    for kind in ("numeric", "categorical"):
        features = pvalues.get(kind, {})
        if not features:
            continue
        threshold = ALIBI_P_VAL / len(features)
        for name, ps in features.items():
            for i, p in enumerate(ps):
                if p < threshold:  # NaN (no data that day) is never an alarm
                    t = cols.start + (REFERENCE_DAYS + i + 1) * DAY
                    alarms.append(Alarm(name, t))
    return alarms


@dataclass
class MultivariateBatches:
    """What alibi-detect's multivariate detectors see of a stream: the reference sample and
    one sample per tested day (``None`` for a day with fewer than 2 complete rows), rows x
    features, float32, standardised by the complete reference rows' mean and deviation."""

    features: list[str]
    reference: npt.NDArray[np.float32]
    days: list[npt.NDArray[np.float32] | None]
    reference_rows: int  # complete rows in the reference days, before subsampling
    day_rows: list[int]  # complete rows in each tested day, before subsampling


def multivariate_batches(
    cols: Columns, features: Sequence[str], rows: int = MV_ROWS, seed: int = 0
) -> MultivariateBatches:
    """The numeric ``features`` of ``cols`` as multivariate samples: rows missing any of them
    dropped, each standardised by the mean and (population) deviation of the complete rows of
    days 0 .. REFERENCE_DAYS - 1, then at most ``rows`` rows drawn without replacement
    (``default_rng([seed, 0])`` for the reference, ``[seed, 1 + day]`` for a day), kept in
    event order.

    >>> day = np.repeat(np.arange(32), 3)
    >>> x = np.arange(96, dtype=np.float64); y = x % 5; y[4] = np.nan
    >>> cols = Columns(0.0, day * DAY + 1.0, day, {"x": x, "y": y}, {}, {})
    >>> b = multivariate_batches(cols, ["x", "y"], rows=2, seed=7)
    >>> b.reference.shape, b.reference_rows, [d.shape for d in b.days], b.day_rows
    ((2, 2), 89, [(2, 2), (2, 2)], [3, 3])
    >>> full = multivariate_batches(cols, ["x", "y"], rows=1000)
    >>> np.allclose(full.reference.mean(axis=0), 0, atol=1e-6), full.days[1][:, 0].round(2)
    (True, array([1.86, 1.9 , 1.94], dtype=float32))
    """
    if len(features) < 2:
        raise ValueError("a multivariate test needs at least two features")
    x = np.column_stack([cols.numeric[f] for f in features])
    ok = ~np.isnan(x).any(axis=1)
    x, day = x[ok], cols.day[ok]
    ref = x[day < REFERENCE_DAYS]
    mean, sd = ref.mean(axis=0), ref.std(axis=0)
    sd[sd == 0] = 1.0
    z = ((x - mean) / sd).astype(np.float32)

    def sample(part: npt.NDArray[np.float32], key: int) -> npt.NDArray[np.float32]:
        if len(part) <= rows:
            return part
        pick = np.random.default_rng([seed, key]).choice(len(part), rows, replace=False)
        return part[np.sort(pick)]

    days = int(cols.day.max()) + 1 if len(cols.day) else 0
    tested: list[npt.NDArray[np.float32] | None] = []
    counts: list[int] = []
    for d in range(REFERENCE_DAYS, days):
        part = z[day == d]
        counts.append(len(part))
        tested.append(sample(part, 1 + d) if len(part) >= 2 else None)
    return MultivariateBatches(
        list(features), sample(z[day < REFERENCE_DAYS], 0), tested, len(ref), counts
    )


def daily_alarms(
    pvalues: Sequence[float | None], start: float, feature: str, p_val: float = MV_P_VAL
) -> list[Alarm]:
    """An alarm on ``feature`` at the end of each tested day (day REFERENCE_DAYS + i for the
    i-th p-value) whose p-value is below ``p_val``; ``None`` (no test) is never an alarm.

    >>> [a.time / DAY for a in daily_alarms([0.5, 0.0, None, 0.009], 0.0, "__multivariate__")]
    [32.0, 34.0]
    """
    return [
        Alarm(feature, start + (REFERENCE_DAYS + i + 1) * DAY)
        for i, p in enumerate(pvalues)
        if p is not None and p < p_val
    ]


class VenvWorker:
    """A long-lived worker script in the bench venv: one JSON request (a stream, its arrays
    in an npz file) per line, one JSON reply per line."""

    script = WORKER
    name = "alibi-detect"

    def __init__(self, python: str) -> None:
        self.python = python
        self.proc: subprocess.Popen[str] | None = None
        self.version: str | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [self.python, str(self.script)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={
                    **os.environ,
                    "TF_CPP_MIN_LOG_LEVEL": "3",
                    "TRANSFORMERS_VERBOSITY": "error",
                    "NML_DISABLE_USAGE_LOGGING": "1",  # NannyML's telemetry (segment.io)
                },
            )
        return self.proc

    def ask(self, request: dict[str, Any], arrays: dict[str, Any]) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="dw-peer-") as tmp:
            path = Path(tmp) / "stream.npz"
            np.savez(path, **arrays)
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps({"npz": str(path), **request}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker exited")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} worker: {reply['error']}")
        self.version = reply["version"]
        return reply

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        self.proc = None


class NannyMLWorker(VenvWorker):
    """``nannyml_worker.py``: NannyML's univariate drift (KS, chi-square) and PCA
    reconstruction error, daily chunks against days 0-29, as a user would start it."""

    script = NANNYML_WORKER
    name = "NannyML"

    def alarms(self, cols: Columns, multivariate: Sequence[str]) -> list[Alarm]:
        """An alarm per feature (and ``__multivariate__``) and alerting chunk, at the end of
        its day."""
        arrays: dict[str, Any] = {"t": cols.times - cols.start}
        for i, name in enumerate(cols.numeric):
            arrays[f"n{i}"] = cols.numeric[name]
        for i, name in enumerate(cols.categorical):
            arrays[f"c{i}"] = cols.categorical[name]
        request = {
            "reference_days": REFERENCE_DAYS,
            "numeric": list(cols.numeric),
            "categorical": list(cols.categorical),
            "multivariate": list(multivariate),
        }
        reply = self.ask(request, arrays)
        return [
            Alarm(name, cols.start + (day + 1) * DAY)
            for name, days in reply["alerts"].items()
            for day in days
        ]

    def performance_alarms(
        self, t: FloatArray, proba: FloatArray, labels: IntArray, chunk_period: str
    ) -> dict[str, list[float]]:
        """Chunk ends (days from the stream's start) whose CBPE-estimated (``cbpe``) or
        realised (``realised``) accuracy fell below NannyML's lower threshold; ``labels``
        -1 where a prediction has none."""
        request = {
            "kind": "performance",
            "reference_days": REFERENCE_DAYS,
            "chunk_period": chunk_period,
        }
        reply = self.ask(request, {"t": t, "proba": proba, "y": labels})
        alerts: dict[str, list[float]] = reply["alerts"]
        return alerts


def peer_python(venv: Path, module: str) -> str | None:
    """An interpreter that can import ``module``: this one, or the bench venv's."""
    for python in (sys.executable, str(venv / "bin" / "python")):
        if not Path(python).exists():
            continue
        probe = subprocess.run(
            [python, "-c", f"import {module}"],
            capture_output=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if probe.returncode == 0:
            return python
    return None


class AlibiWorker(VenvWorker):
    """``alibi_worker.py``: alibi-detect's daily KSDrift / ChiSquareDrift p-values, and its
    MMDDrift / LSDDDrift p-values of multivariate daily samples."""

    backend: str | None = None  # "pytorch <version>" once a multivariate request ran

    def pvalues(self, cols: Columns) -> dict[str, dict[str, list[float]]]:
        batches = daily_batches(cols)
        arrays: dict[str, FloatArray | IntArray] = {}
        spec: dict[str, Any] = {"reference_days": REFERENCE_DAYS, "days": batches["days"]}
        for kind in ("numeric", "categorical"):
            spec[kind] = list(batches[kind])
            for i, name in enumerate(batches[kind]):
                for d, x in enumerate(batches[kind][name]):
                    arrays[f"{kind[0]}{i}_{d}"] = x
        reply = self.ask(spec, arrays)
        return {
            kind: {
                name: [math.nan if p is None else p for p in ps] for name, ps in reply[kind].items()
            }
            for kind in ("numeric", "categorical")
        }

    def multivariate(
        self,
        batches: MultivariateBatches,
        seed: int,
        permutations: int = MV_PERMUTATIONS,
        detectors: Sequence[str] = MV_DETECTORS,
    ) -> dict[str, list[float | None]]:
        """Per detector (``"MMD"``, ``"LSDD"``), the p-value of each tested day of
        ``batches`` (``None`` for a day without a sample); torch seeded with ``seed``."""
        arrays: dict[str, Any] = {"ref": batches.reference}
        for i, x in enumerate(batches.days):
            if x is not None:
                arrays[f"d{i}"] = x
        request = {
            "kind": "multivariate",
            "days": len(batches.days),
            "detectors": list(detectors),
            "p_val": MV_P_VAL,
            "permutations": permutations,
            "seed": seed,
        }
        reply = self.ask(request, arrays)
        self.backend = reply.get("backend")
        pvalues: dict[str, list[float | None]] = reply["pvalues"]
        return pvalues


def alibi_python(venv: Path) -> str | None:
    """An interpreter that can import alibi_detect: this one, or the bench venv's."""
    return peer_python(venv, "alibi_detect.cd")


def torch_python(venv: Path) -> str | None:
    """An interpreter with alibi-detect and PyTorch (its multivariate detectors' backend)."""
    return peer_python(venv, "alibi_detect.cd, torch")


def setup_bench_venv(venv: Path, log: Callable[[str], None]) -> bool:
    """Create the bench venv with alibi-detect (``bench/requirements-detection.txt``).

    The venv gets a ``.gitignore`` of ``*`` so git (and ruff) ignore it. Returns success.
    """
    log(f"creating {venv} with {REQUIREMENTS.name} (alibi-detect; once, about 1-2 minutes)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        (venv / ".gitignore").write_text("# created by python -m bench.detection\n*\n")
        pip = [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"could not set up {venv}: {exc}")
        return False
    return True
