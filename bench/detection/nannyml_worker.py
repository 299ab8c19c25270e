"""NannyML's univariate drift and PCA reconstruction error over one stream, in the bench venv.

Run by ``bench.detection.peers.NannyMLWorker`` with the interpreter of ``.venv-bench``
(NannyML 0.13 needs pandas < 3 and numpy < 2; the project's venv cannot). It imports nothing
from the project. Protocol: one JSON request per line on stdin,

    {"npz": path, "reference_days": 30, "numeric": [names], "categorical": [names],
     "multivariate": [names]}

where the npz holds ``t`` (event times, seconds since the stream's first midnight), ``n{i}``
(numeric feature i, NaN for missing) and ``c{i}`` (categorical feature i as integer codes,
-1 for missing). NannyML runs as a user would start it: daily chunks (``chunk_period="D"``),
the reference is days 0 .. reference_days - 1, the analysis the rest; the univariate
calculator with Kolmogorov-Smirnov (numeric) and chi-square (categorical) and its default
thresholds; the data-reconstruction calculator (PCA reconstruction error, its defaults) over
the ``multivariate`` numeric features. One JSON reply per line on stdout: per feature, the
days (from the stream's start) whose chunk raised an alert, and ``"__multivariate__"``'s.

A request with ``"kind": "performance"`` (``bench.performance``) holds ``t``, ``proba`` (the
score) and ``y`` (the label, -1 where there is none) instead, and a ``chunk_period``; the reply
has the ``cbpe`` and ``realised`` alerts (:func:`_performance`).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
from typing import Any

DAY = 86_400.0
START = "2025-01-01"  # any midnight: chunks are days counted from it


def main() -> None:
    warnings.simplefilter("ignore")
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no telemetry (segment.io)
    np = importlib.import_module("numpy")
    pd = importlib.import_module("pandas")
    nml = importlib.import_module("nannyml")
    version = nml.__version__
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            reply: dict[str, Any] = {"version": version, "alerts": {}}
            if req.get("kind") == "performance":
                reply["alerts"] = _performance(np, pd, nml, req)
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()
                continue
            with np.load(req["npz"]) as data:
                t = data["t"]
                frame: dict[str, Any] = {
                    "timestamp": pd.Timestamp(START) + pd.to_timedelta(t, unit="s")
                }
                for i, name in enumerate(req["numeric"]):
                    frame[name] = data[f"n{i}"]
                for i, name in enumerate(req["categorical"]):
                    codes = data[f"c{i}"]
                    labels = np.char.add("c", codes.astype(str)).astype(object)
                    frame[name] = pd.Series(np.where(codes >= 0, labels, None))
            df = pd.DataFrame(frame)
            cut = pd.Timestamp(START) + pd.Timedelta(days=int(req["reference_days"]))
            reference, analysis = df[df["timestamp"] < cut], df[df["timestamp"] >= cut]
            columns = [*req["numeric"], *req["categorical"]]
            # Columns without a value in the reference (a segment that appears later) cannot
            # be fitted: NannyML would fail on all of them together.
            columns = [c for c in columns if reference[c].notna().any()]
            univariate = nml.UnivariateDriftCalculator(
                column_names=columns,
                timestamp_column_name="timestamp",
                continuous_methods=["kolmogorov_smirnov"],
                categorical_methods=["chi2"],
                chunk_period="D",
            )
            univariate.fit(reference)
            res = univariate.calculate(analysis).filter(period="analysis").to_df()
            days = _days(pd, res[("chunk", "chunk", "start_date")])
            for name in columns:
                method = "kolmogorov_smirnov" if name in req["numeric"] else "chi2"
                alert = res[(name, method, "alert")].fillna(False).astype(bool).tolist()
                reply["alerts"][name] = [d for d, a in zip(days, alert, strict=True) if a]
            if len(req["multivariate"]) >= 2:
                pca = nml.DataReconstructionDriftCalculator(
                    column_names=req["multivariate"],
                    timestamp_column_name="timestamp",
                    chunk_period="D",
                )
                pca.fit(reference)
                mres = pca.calculate(analysis).filter(period="analysis").to_df()
                mdays = _days(pd, mres[("chunk", "start_date")])
                alert = mres[("reconstruction_error", "alert")].fillna(False).astype(bool).tolist()
                reply["alerts"]["__multivariate__"] = [
                    d for d, a in zip(mdays, alert, strict=True) if a
                ]
        except Exception as exc:  # reported to the caller, which stops the benchmark
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _performance(np: Any, pd: Any, nml: Any, req: dict[str, Any]) -> dict[str, list[float]]:
    """CBPE's estimated and the realised accuracy per chunk (``req["chunk_period"]``, from
    reference_days on), against the labelled reference predictions: the chunks (their end,
    in days from the stream's start) whose accuracy fell below NannyML's lower threshold
    (an alert for a drop; NannyML alerts on rises too, which are no performance drift)."""
    with np.load(req["npz"]) as data:
        t, proba, y = data["t"], data["proba"], data["y"]
    base = pd.Timestamp(START)
    df = pd.DataFrame(
        {
            "timestamp": base + pd.to_timedelta(t, unit="s"),
            "proba": proba,
            "pred": (proba >= 0.5).astype(int),
            "y": np.where(y >= 0, y, np.nan),
        }
    )
    cut = base + pd.Timedelta(days=int(req["reference_days"]))
    reference = df[(df["timestamp"] < cut) & df["y"].notna()]
    analysis = df[df["timestamp"] >= cut]
    common = {
        "y_pred_proba": "proba", "y_pred": "pred", "y_true": "y",
        "timestamp_column_name": "timestamp", "metrics": ["accuracy"],
        "chunk_period": req["chunk_period"], "problem_type": "classification_binary",
    }  # fmt: skip
    cbpe = nml.CBPE(**common)
    cbpe.fit(reference)
    estimated = cbpe.estimate(analysis).filter(period="analysis").to_df()
    realised_calc = nml.PerformanceCalculator(**common)
    realised_calc.fit(reference)
    realised = (
        realised_calc.calculate(analysis[analysis["y"].notna()]).filter(period="analysis").to_df()
    )
    out: dict[str, list[float]] = {}
    for name, res in (("cbpe", estimated), ("realised", realised)):
        low = res[("accuracy", "value")] < res[("accuracy", "lower_threshold")]
        ends = res[("chunk", "end_date")]
        out[name] = [
            (end - base) / pd.Timedelta(days=1) for end, a in zip(ends, low, strict=True) if a
        ]
    return out


def _days(pd: Any, starts: Any) -> list[int]:
    """Day numbers (from ``START``) of chunk start dates."""
    return [int((s - pd.Timestamp(START)) / pd.Timedelta(days=1)) for s in starts]


if __name__ == "__main__":
    main()
