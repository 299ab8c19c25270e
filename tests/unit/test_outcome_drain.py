"""The worker's drain check as the join sees it: which marks it holds after each check."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from agents.metrics import WorkerMetrics
from agents.outcome_drain import refresh_marks
from streams.join import JoinConfig
from tests.unit.test_processor import join_processor


def test_the_join_holds_the_first_marks_of_a_run_of_drained_checks() -> None:
    """A run of checks that found no outcome on its way keeps its first marks (the join far
    behind its input reaches them; it would never reach marks renewed every check). A check
    that finds outcomes on their way, or that fails, drops them: the grace applies."""

    async def nothing(*_: Any) -> None:
        pass

    joins = join_processor(JoinConfig(), WorkerMetrics.create(CollectorRegistry()), nothing,
                           nothing)  # fmt: skip
    answers: list[Any] = [{0: 5, 1: 3}, {0: 9, 1: 8}, None, {0: 12, 1: 10}, OSError("away"),
                          {0: 20, 1: 20}]  # fmt: skip

    def check() -> dict[int, int] | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    held = []
    for _ in range(6):
        asyncio.run(refresh_marks(joins, check))
        held.append(joins.outcome_marks)
    assert held == [{0: 5, 1: 3}, {0: 5, 1: 3}, None, {0: 12, 1: 10}, None, {0: 20, 1: 20}]
