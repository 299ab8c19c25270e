"""What the engine memoises at module level is bounded by what is asked for again, not by how
long a worker runs. ``bench.worker_memory`` found caches of 16,384-65,536 entries (window keys,
missing-rate and KS p-values) filling at ~2.5 MiB of RSS every million events: full only after
8-70M events, ~56 MiB in all, nearly every entry never asked for again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from scipy import stats

from streams import perf_state, state
from streams.drift_tests import ks, missing_rate

BOUNDED: list[Callable[..., Any]] = [
    state.stream_key,
    state.window_key,
    perf_state.perf_window_key,
    missing_rate._binomial_p,
    missing_rate._fisher_p,
    ks._exact_ks_p,
]


@pytest.mark.parametrize("memo", BOUNDED, ids=lambda f: f.__name__)
def test_a_memo_holds_a_few_thousand_entries_at_most(memo: Any) -> None:
    info = memo.cache_info()
    assert info.maxsize is not None and info.maxsize <= 4096, info


def test_only_the_exact_ks_p_is_remembered() -> None:
    """Above n = 60 the asymptotic p costs microseconds and its (d, n) pairs seldom repeat
    (19 hits in 21,201 calls over 10M events): not worth an entry each."""
    ks._exact_ks_p.cache_clear()
    ks.ks_pvalue(0.05, 1500)
    ks.ks_pvalue(0.07, 40_000)
    assert ks._exact_ks_p.cache_info().currsize == 0
    exact = ks.ks_pvalue(0.3, 40)
    assert ks._exact_ks_p.cache_info().currsize == 1
    assert exact == pytest.approx(float(stats.kstwo.sf(0.3, 40)), rel=1e-12)
    assert ks.ks_pvalue(0.3, 40) == exact and ks._exact_ks_p.cache_info().hits == 1
