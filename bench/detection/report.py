"""Aggregation over seeds and the markdown report."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from bench.detection.metrics import SEVERITIES, median_delay, per_thousand
from bench.detection.scenarios import Scenario
from streams.drift_tests.multivariate import MULTIVARIATE_FEATURE

DRIFTWATCH = "driftwatch"
RIVER = ("river ADWIN", "river KSWIN", "river PageHinkley")
ALIBI = "alibi-detect KS / χ²"
NANNYML = "NannyML"
ALIBI_SCIPY = "alibi-detect-equivalent (scipy)"
MMD = "alibi-detect MMD"
LSDD = "alibi-detect LSDD"
MV_NAMES = (MMD, LSDD)  # in the order of peers.MV_DETECTORS
S = "\u03c3"  # sigma


def aggregate(results: Sequence[dict[str, Any]], detectors: Sequence[str]) -> dict[str, Any]:
    """Per scenario and detector, the metrics over its seeds."""
    out: dict[str, Any] = {}
    keys = sorted(
        {r["scenario"] for r in results},
        key=lambda k: min(r["number"] for r in results if r["scenario"] == k),
    )
    for key in keys:
        runs = sorted((r for r in results if r["scenario"] == key), key=lambda r: r["seed"])
        per: dict[str, Any] = {}
        for det in detectors:
            scores = [r["scores"][det] for r in runs if det in r["scores"]]
            if not scores:
                continue
            delays = [s["delay_hours"] for s in scores]
            confirms = [s["confirm_delay_hours"] for s in scores]
            fa = sum(s["false_alarm_days"] for s in scores)
            fd = sum(s["feature_days"] for s in scores)
            sev = [s["max_confirmed_severity"] for s in scores if s["max_confirmed_severity"]]
            per[det] = {
                "seeds": len(scores),
                "delays_hours": delays,
                "median_delay_hours": median_delay(delays),
                "detected": sum(d is not None for d in delays),
                "median_confirm_delay_hours": median_delay(confirms),
                "false_alarm_days": fa,
                "feature_days": fd,
                "false_alarms_per_1000_feature_days": per_thousand(fa, fd),
                "confirmed_false_incidents": sum(s["confirmed_false"] for s in scores),
                "max_confirmed_severity": max(sev, key=SEVERITIES.index) if sev else None,
                "alarms": sum(s["alarms"] for s in scores),
            }
        out[key] = per
    return out


def _hours(h: float | None) -> str:
    if h is None:
        return "missed"
    return f"{h:.1f}" if h < 100 else f"{h:.0f}"


NANNYML_NOTE = (
    "- NannyML's thresholds are the reference chunks' mean +- 3 sd of each statistic, not a"
    " significance level: with daily chunks every drift is found at the end of its onset da"
    "y (16.8 h after an onset at 07:12), and 18-50 of 1,000 clean feature-days alert (more "
    "where a drifting feature's neighbours move with it). Its PCA reconstruction error find"
    "s the correlation flip at the same chunk end; it runs over all numeric features, so a "
    "marginal shift can raise it too (a false alarm there)."
)

NOISY = 100.0  # false alarms per 1,000 feature-days above which a delay says little


def _delay_cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    cell = f"{_hours(m['median_delay_hours'])} ({m['detected']}/{m['seeds']})"
    return cell + " †" if m["false_alarms_per_1000_feature_days"] > NOISY else cell


def _rate_cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    rate = m["false_alarms_per_1000_feature_days"]
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def targets(agg: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """driftwatch's detection targets: (target, measured, met; None = scenario not run)."""
    out: list[tuple[str, str, bool | None]] = []

    def dw(key: str) -> dict[str, Any] | None:
        m: dict[str, Any] | None = agg.get(key, {}).get(DRIFTWATCH)
        return m

    m = dw("null-50")
    if m is None:
        out.append(("50-feature null stream: 0 confirmed incidents", "not run", None))
        out.append(("50-feature null stream: ≤ 1 alarm per 1,000 feature-days", "not run", None))
    else:
        c = m["confirmed_false_incidents"]
        out.append(("50-feature null stream: 0 confirmed incidents", str(c), c == 0))
        r = m["false_alarms_per_1000_feature_days"]
        out.append(
            ("50-feature null stream: ≤ 1 alarm per 1,000 feature-days", f"{r:.2f}", r <= 1.0)
        )
    for key, label, limit in (("mean-0.5", f"0.5{S} shift", 6.0), ("mean-1", f"1{S} shift", 2.0)):
        m = dw(key)
        if m is None:
            out.append((f"{label}: median delay ≤ {limit:g} h", "not run", None))
            continue
        d = m["median_delay_hours"]
        out.append(
            (
                f"{label}: median delay ≤ {limit:g} h",
                f"{_hours(d)} h" if d is not None else "missed",
                d is not None and d <= limit,
            )
        )
    m = dw("segment-shift")
    label = f"2{S} shift in a 5 % segment: found within 24 h in every seed, confirmed"
    if m is None:
        out.append((label, "not run", None))
    else:
        worst = max((d if d is not None else math.inf) for d in m["delays_hours"])
        confirmed = m["median_confirm_delay_hours"]
        out.append(
            (
                label,
                f"max {_hours(worst)} h ({m['detected']}/{m['seeds']}), confirmed after "
                f"{_hours(confirmed)} h (median)",
                worst <= 24.0 and confirmed is not None,
            )
        )
    for key in ("segment-shift", "segment-null"):
        m = dw(key)
        label = f"`{key}`: ≤ 0.5 false alarms per 1,000 feature-days over all segments"
        if m is None:
            out.append((label, "not run", None))
            continue
        r = m["false_alarms_per_1000_feature_days"]
        out.append((label, f"{r:.2f}", r <= 0.5))
    m = dw("tiny-shift")
    if m is None:
        out.append((f"tiny 0.03{S} shift: no confirmed incident ≥ MEDIUM", "not run", None))
    else:
        sev = m["max_confirmed_severity"]
        ok = sev is None or SEVERITIES.index(sev) < SEVERITIES.index("MEDIUM")
        out.append(
            (f"tiny 0.03{S} shift: no confirmed incident ≥ MEDIUM", sev or "nothing confirmed", ok)
        )
    return out


def _dirty(meta: dict[str, Any]) -> str:
    """Which uncommitted changes (outside the benchmark's own files) the run measured."""
    own = ("bench/detection/", "bench/results/", "bench/requirements-detection.txt", "docs/")
    files = [f for f in meta.get("modified_files", []) if not f.startswith(own)]
    if not files:
        return ""
    return " plus uncommitted changes to " + ", ".join(f"`{f}`" for f in files)


def _mv_bullet(meta: dict[str, Any], mmd: dict[str, Any]) -> str:
    return (
        f"- **alibi-detect MMD, alibi-detect LSDD**: alibi-detect "
        f"{meta['versions'].get('alibi-detect')}'s multivariate `MMDDrift` and `LSDDDrift` "
        f"({mmd.get('backend') or 'PyTorch'} backend, on the CPU, one thread), in the "
        "same venv and worker, on "
        + ", ".join(f"`{k}`" for k in mmd.get("scenarios", []))
        + " only (elsewhere '-'): each day from 30 on is tested as one sample of the "
        "stream's numeric features (the same features as NannyML's PCA; rows missing any "
        "dropped) against the reference days 0-29, each feature standardised by the "
        f"reference's mean and deviation; at most {mmd.get('rows')} rows a side, drawn "
        "without replacement with numpy seeded by (seed, day) (a day had a median of "
        f"{mmd.get('day_rows', '?'):,} complete rows, the reference "
        f"{mmd.get('reference_rows', '?'):,}); a permutation test with "
        f"{mmd.get('permutations')} permutations (torch seeded by the stream's seed), "
        f"p_val {mmd.get('p_val')}, one test per day (no correction needed), the detectors' "
        "default kernels (MMD: Gaussian RBF, bandwidth the reference's median distance; "
        "LSDD: a 20th of the reference as kernel centres). An alarm is a day with p < "
        "p_val, at its end, on `__multivariate__`." + _calibration(mmd)
    )


def _calibration(mmd: dict[str, Any]) -> str:
    """The measured false-alarm rate of MMD / LSDD on days without any change."""
    cal = mmd.get("calibration") or {}
    if not cal.get("days"):
        return ""
    alarms = cal["alarms"]
    return (
        f" Their false-alarm rate measured: on the {cal['days']} tested days before the onset "
        "of " + ", ".join(f"`{k}`" for k in cal["scenarios"]) + " (no weekly pattern; days "
        "30 to the onset, unscored days included) MMD alarmed on "
        f"{alarms.get('MMD', 0)} and LSDD on {alarms.get('LSDD', 0)} (p_val "
        f"{mmd.get('p_val')} expects about 1 %)."
    )


MV_NOTE = (
    "- alibi-detect's MMD and LSDD test each day against the fixed reference as one joint "
    "sample. Where nothing changes (`corr-flip` before its onset) they stay at or under their "
    "p_val (the measured rate above; with 100 permutations a clean day alarms only when all "
    "100 permuted statistics fall below the observed one, 1 chance in 101), and both see the "
    "correlation flip on its first day. But any change in the distribution of any numeric "
    "feature is a change of the joint one, and the fixed reference mixes all weekdays: on the "
    "streams with a weekly pattern they alarm on (nearly) every day, the same failure as the "
    "univariate KS / χ² against the same reference, now on one 'feature' instead of each. "
    "They are not run on the marginal-shift scenarios, where they would alarm too (a "
    "multivariate alarm is scored false there, as NannyML's PCA is). Their test is daily, so "
    "a drift is found at the end of its onset day at best."
)


def _mv_section(
    scenarios: Sequence[Scenario], agg_mv: dict[str, Any] | None, meta: dict[str, Any]
) -> list[str]:
    """The multivariate detectors alone: their ``__multivariate__`` alarms scored against
    that one 'feature' (false alarms per 1,000 model-days)."""
    if not agg_mv:
        return []
    dets = [d for d in (DRIFTWATCH, NANNYML, MMD, LSDD) if any(d in m for m in agg_mv.values())]
    name = {
        DRIFTWATCH: "driftwatch (Jennrich)",
        NANNYML: "NannyML (PCA)",
        MMD: "alibi MMD",
        LSDD: "alibi LSDD",
    }
    rows = [s for s in scenarios if s.key in agg_mv]

    def cell(m: dict[str, Any] | None) -> str:
        if m is None:
            return "-"
        rate = m["false_alarms_per_1000_feature_days"]
        return (
            f"{m['false_alarm_days']} / {m['feature_days']:g} ({rate:.0f}), "
            f"{m['confirmed_false_incidents']} conf."
        )

    return [
        "## Multivariate detectors alone (`__multivariate__` alarms)",
        "",
        "The multivariate parts of driftwatch (its correlation test), NannyML (PCA "
        "reconstruction error) and alibi-detect (MMD, LSDD), scored against the one "
        "'feature' `__multivariate__`: a multivariate alarm is true only in `corr-flip` after "
        "the onset. Cells: in `corr-flip` the delay (hours, median (detected/seeds)); "
        "then false alarm days / clean model-days (from day "
        f"{meta['eval_from_day']} to the stream's end or the onset, summed over seeds), in "
        "brackets per 1,000 model-days, and the confirmed false incidents (driftwatch's own; "
        "the others' by its rule, as above).",
        "",
        *_table(
            ["#", "scenario", *(name[d] for d in dets)],
            [
                [
                    str(s.number),
                    s.key,
                    *(
                        (
                            f"{_delay_cell(m)} h; "
                            if m is not None and MULTIVARIATE_FEATURE in s.drifting
                            else ""
                        )
                        + cell(m)
                        for d in dets
                        for m in [agg_mv[s.key].get(d)]
                    ),
                ]
                for s in rows
            ],
        ),
        "",
    ]


def render(
    meta: dict[str, Any],
    scenarios: Sequence[Scenario],
    agg: dict[str, Any],
    detectors: Sequence[str],
    agg_mv: dict[str, Any] | None = None,
) -> str:
    alibi = next(d for d in detectors if d in (ALIBI, ALIBI_SCIPY))
    mmd = meta.get("mmd", {})
    short = {
        DRIFTWATCH: "driftwatch",
        "river ADWIN": "ADWIN",
        "river KSWIN": "KSWIN",
        "river PageHinkley": "PageHinkley",
        ALIBI: "alibi KS/χ²",
        ALIBI_SCIPY: "alibi-equiv (scipy)",
        NANNYML: "NannyML",
        MMD: "alibi MMD",
        LSDD: "alibi LSDD",
    }
    head = ["#", "scenario", *(short[d] for d in detectors)]
    lines = [
        "# Detection benchmark",
        "",
        f"Generated by `{meta['command']}` on {meta['date']} (UTC) — commit {meta['commit']}"
        f"{_dirty(meta)}, {meta['seconds']:.0f} s wall "
        f"on {meta['cpus']} cores"
        + (
            f" ({meta['cpu_seconds_total']:.0f} CPU seconds)"
            if meta.get("cpu_seconds_total")
            else ""
        )
        + f"{', QUICK smoke run' if meta['quick'] else ''}. "
        "Do not edit by hand: re-run the command.",
        "",
        "Every detector sees the same seeded streams in the same run: one stream per scenario and "
        "seed (tenant `acme`, model `fraud`, from `driftwatch.simulate`, about 1 % missing "
        "values; drift on `amount` or `merchant_category` from a fractional onset day; the "
        "seeds give the same noise in every scenario; see the table below). Detectors:",
        "",
        "- **driftwatch**: `run_backtest(events, EngineConfig())`, the defaults, the same for "
        'every scenario (the segment scenarios add `segment_columns="country"`); an alarm is '
        "any DriftEvent (at its `detected_at`), interim looks at the "
        "open window included; a DriftEvent of its missing-rate test is always a false alarm "
        "(no scenario changes the missing rate).",
        f"- **river {meta['versions'].get('river', '?')}** ADWIN, KSWIN (seed "
        f"{meta['kswin_seed']}), PageHinkley with default parameters, one per feature, fed its "
        "values in event-time order (missing skipped; a categorical feature as the 0/1 indicator "
        "of its most frequent category in days 0-29); an alarm is `drift_detected`, at that "
        "event's time. KSWIN runs as an exact numpy replay of river's code, checked against "
        f"river's own KSWIN at the start of every run ({meta['kswin_verified']} alarms matched).",
        *(
            [
                f"- **NannyML {meta['versions'].get('nannyml', '?')}** (in the bench venv), as a "
                "user would start it: daily chunks, reference days 0-29, "
                "`UnivariateDriftCalculator` with Kolmogorov-Smirnov (numeric) and chi-square "
                "(categorical) and its default thresholds (an alert when a chunk's statistic "
                "leaves the reference chunks' mean +- 3 sd), and "
                "`DataReconstructionDriftCalculator` (PCA reconstruction error of the numeric "
                "features, its defaults) as the "
                "multivariate `__multivariate__`; an alarm per alerting chunk, at its day's end."
            ]
            if NANNYML in detectors
            else []
        ),
        f"- **{alibi}**: "
        + (
            f"alibi-detect {meta['versions'].get('alibi-detect')} in its own venv "
            f"(`{meta['alibi_python']}`),"
            if alibi == ALIBI
            else "alibi-detect could not be used here "
            f"({meta['alibi_note']}), so the same procedure in scipy:"
        )
        + " a daily test of each day from 30 on against the fixed reference of days 0-29, "
        "KSDrift (KS, asymptotic p) for numeric and ChiSquareDrift (χ² over the union of "
        "categories) for categorical features, p_val 0.01 with the default Bonferroni correction "
        "over each detector's features; alarm time = the end of the tested day."
        + (f" {meta['alibi_crosscheck']}" if meta.get("alibi_crosscheck") else ""),
        *([_mv_bullet(meta, mmd)] if MMD in detectors else []),
        "",
        "Metrics (`bench/detection/metrics.py`): **delay** = first alarm on the drifting feature "
        "at or after the onset, minus the onset, in hours of event time; median over seeds, a "
        "miss counting as infinite (shown: median (detected seeds / seeds)). **False alarms** = "
        "distinct (feature, day) pairs with an alarm on a non-drifting feature, or before the "
        f"onset, from day {meta['eval_from_day']} on (the first day every detector runs: "
        "driftwatch's defaults first test day "
        f"{meta['eval_from_day']}, alibi-detect's reference is days 0-29; earlier alarms are "
        "not scored); per 1,000 feature-days of not-drifting features in that period, pooled "
        "over seeds. A detector that alarms on most feature-days has a short 'delay' on "
        "everything: read the two tables together. **Confirmed false incidents**: driftwatch's "
        "own confirmed incidents "
        "on a non-drifting feature or opened before the onset; the peers have no confirmation, "
        "so driftwatch's rule is applied to their daily alarm flags (an alarm day opens an "
        "incident, the 7th alarm day while open confirms it, 2 clean days close it).",
        "",
        "Multivariate scenarios (`corr-flip`, `corr-null`): the second numeric feature is made "
        "to correlate 0.8 with the first (its marginal unchanged); in `corr-flip` the "
        "correlation becomes -0.8 at the onset. The drifting 'feature' is the pair, "
        "`__multivariate__`, the feature of driftwatch's multivariate DriftEvents (Jennrich's "
        "test of the numeric features' correlations), scored as one more feature; an alarm "
        "on either of the two features themselves is false. river and alibi-detect's KS / χ² run "
        "univariate here and cannot see this change; NannyML's PCA reconstruction error"
        + (" and alibi-detect's MMD and LSDD are" if MMD in detectors else " is")
        + " scored as `__multivariate__` too. In every other scenario a multivariate DriftEvent "
        "(or NannyML reconstruction alert"
        + (", or MMD / LSDD alarm" if MMD in detectors else "")
        + ") counts as a false alarm.",
        "",
        "Segment scenarios (`segment-shift`, `segment-null`): a seeded 5 % of the events get "
        "`country` IT (a value the simulator never makes); in `segment-shift` `amount` moves "
        "by 2 sd (its pre-onset deviation) in those events only, from the onset. driftwatch "
        "runs with `country` as its segment column; its DriftEvents in a segment are scored as "
        "the feature `amount@country=IT` (and so on). The peers watch the same segments: each "
        "gets, per value of `country` and feature, a column holding the feature's values in "
        "that segment alone (missing elsewhere, so skipped), beside the features themselves. "
        "The drifting features are `amount` (whose marginal moves by a twentieth) and "
        "`amount@country=IT`; feature-days count every segment feature (every value of "
        "`country` and driftwatch's `__other__`, times the other 7 features), so the false-alarm "
        "rate is per 1,000 feature-days over all segments.",
        "",
        "## Scenarios",
        "",
        *_table(
            ["#", "key", "scenario", "days", "events/day", "features", "onset day", "seeds"],
            [
                [
                    str(s.number),
                    f"`{s.key}`",
                    s.title,
                    str(s.days),
                    f"{s.events_per_day:,}",
                    str(s.numeric_features + s.categorical_features),
                    "-" if s.onset_day is None else f"{s.onset_day:g}",
                    str(s.seeds),
                ]
                for s in scenarios
            ],
        ),
        "",
        "## Detection delay (hours; median over seeds, detected/seeds)",
        "",
        f"† this detector raised false alarms on more than {NOISY / 10:g} % of the clean "
        "feature-days of the scenario, so its first alarm after the onset is mostly luck.",
        "",
        *_table(
            head,
            [
                [str(s.number), s.key, *(_delay_cell(agg[s.key].get(d)) for d in detectors)]
                for s in scenarios
                if s.is_drift and s.key in agg
            ],
        ),
        "",
        "## False alarms per 1,000 feature-days",
        "",
        *_table(
            head,
            [
                [str(s.number), s.key, *(_rate_cell(agg[s.key].get(d)) for d in detectors)]
                for s in scenarios
                if s.key in agg
            ],
        ),
        "",
        "## Confirmed false incidents (total over seeds)",
        "",
        *_table(
            head,
            [
                [
                    str(s.number),
                    s.key,
                    *(
                        str(agg[s.key][d]["confirmed_false_incidents"]) if d in agg[s.key] else "-"
                        for d in detectors
                    ),
                ]
                for s in scenarios
                if s.key in agg
            ],
        ),
        "",
        *_mv_section(scenarios, agg_mv, meta),
        "## driftwatch: confirmation and severity",
        "",
        *_table(
            [
                "#",
                "scenario",
                "median delay to confirmation (h)",
                "max severity of a confirmed incident",
                "drift events (all seeds)",
            ],
            [
                [
                    str(s.number),
                    s.key,
                    _hours(m["median_confirm_delay_hours"]) if s.is_drift else "-",
                    m["max_confirmed_severity"] or "none confirmed",
                    str(m["alarms"]),
                ]
                for s in scenarios
                if s.key in agg and (m := agg[s.key].get(DRIFTWATCH)) is not None
            ],
        ),
        "",
        f"For comparison, the README's severity examples for a whole daily window: 0.25{S} "
        f"shift MEDIUM, 0.5{S} HIGH, 1{S} CRITICAL. driftwatch's drift events include interim "
        "looks at the open window and its last 1-8 hours, whose effect sizes come from a few "
        "dozen to a few hundred values; an incident keeps the highest severity it has seen.",
        "",
        "## driftwatch against its targets",
        "",
        *_table(
            ["target", "measured", "met"],
            [
                [t, v, "-" if ok is None else ("yes" if ok else "**no**")]
                for t, v, ok in targets(agg)
            ],
        ),
        "",
        "## Reading the peers",
        "",
        "- PageHinkley's default threshold (50) is in the feature's own units, and KSWIN "
        "compares 30 against 30 values at every event: fed 1,500 raw values a day, both alarm "
        "on most feature-days. Tuning them (standardised inputs, a larger threshold or window) "
        "would change that; this benchmark uses river's defaults, as a user would start.",
        "- river's detectors take numbers, so a categorical feature is watched through the "
        "0/1 indicator of its most frequent reference category: mass moving between other "
        "categories, or a new category taking a little from each, barely moves it.",
        "- The alibi-detect procedure compares every day with a fixed reference (days 0-29): "
        "it has no notion of weekly seasonality and no effect-size floor, so a weekly pattern, "
        f"and at 50,000 events/day even a 0.03{S} shift, are significant to it. Its daily "
        "test puts its delay at the end of the onset day at best.",
        "- driftwatch missing the tiny shift is by design: it needs a KS / total-variation "
        "distance of at least 0.05 as well as significance.",
        *([NANNYML_NOTE] if NANNYML in detectors else []),
        *([MV_NOTE] if MMD in detectors else []),
        "",
        "## Run",
        "",
        "`.venv/bin/python -m bench.detection` (about 5 minutes on 2 idle cores; `--quick`: one "
        "seed, 60-day streams, a few minutes; `--scenarios 2,mean-1`: a subset; `--seeds N`; "
        "`--alibi scipy`: skip alibi-detect; `--mmd off`: skip MMD / LSDD, `--mmd-scenarios "
        "all`, `--mmd-rows N`, `--mmd-permutations N`: run them elsewhere or otherwise). "
        "Partial runs print and write "
        "`bench/results/detection-partial.json` only. alibi-detect 0.13 needs numpy < 2, so "
        "it runs in its own venv, `.venv-bench` (from `bench/requirements-detection.txt`, "
        "created on first use, about 1 GB, git-ignored by a `.gitignore` inside it), as a "
        "subprocess fed one stream at a time; river is the project's own pinned dependency. "
        "MMD and LSDD need PyTorch in that venv: `torch==2.13.0` from the same file, a CPU "
        "build of 192 MB (754 MB installed) where pip finds one (on this project's machines "
        "it does); elsewhere the same pin may fetch a CUDA build of several GB, or "
        "`--mmd off` leaves them out. Their permutation tests are the costly part: about 25 "
        "CPU seconds per 90-day stream for the two (60 daily tests each at 500 rows a side), "
        "11 streams by default. "
        "The code: `bench/detection/` (`scenarios.py`, `peers.py`, `metrics.py` with doctests "
        "of every metric, `report.py`).",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in sorted(meta['versions'].items()))}. "
        f"Seconds per stage, summed over jobs (wall time inside the job processes): "
        + ", ".join(f"{k} {v:.0f}" for k, v in meta["stage_seconds"].items())
        + ". Raw numbers per seed: `bench/results/detection.json`.",
        "",
    ]
    return "\n".join(lines)


def finite(x: float) -> float | None:
    """JSON-friendly: NaN/inf become null."""
    return x if math.isfinite(x) else None


def mean_or_none(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None
