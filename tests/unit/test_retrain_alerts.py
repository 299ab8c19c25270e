"""Which retraining steps people hear about, and how loudly."""

from __future__ import annotations

from typing import Any

from agents.alerts import model_alert, retrain_alert
from schemas import ModelAction, ModelEvent, RetrainEvent, RetrainStatus, Severity


def event(status: RetrainStatus, **details: Any) -> RetrainEvent:
    return RetrainEvent("req-1", "acme", "fraud", "d1", status, "why", 1.0, 2.0, "r1", 1, details)


def test_a_rollback_is_loud_unless_a_person_made_it() -> None:
    by_worker = retrain_alert(event(RetrainStatus.ROLLED_BACK), now=0.0)
    by_person = retrain_alert(event(RetrainStatus.ROLLED_BACK, manual=True, by="ops"), now=0.0)
    assert by_worker is not None and by_worker.severity is Severity.HIGH
    assert by_person is not None and by_person.severity is Severity.MEDIUM


def test_an_inconclusive_check_is_not_told_as_a_pass() -> None:
    passed = retrain_alert(event(RetrainStatus.VALIDATED), now=0.0)
    unsure = retrain_alert(event(RetrainStatus.VALIDATED, inconclusive=True), now=0.0)
    assert passed is not None and passed.title == "[LOW] acme/fraud: retraining validated"
    assert unsure is not None
    assert unsure.title == "[LOW] acme/fraud: retraining validated (inconclusive)"
    assert retrain_alert(event(RetrainStatus.WAITING), now=0.0) is None


def test_a_person_s_rollback_on_model_events_is_not_paged_as_the_worker_s() -> None:
    def rollback(reason: str) -> ModelEvent:
        return ModelEvent(ModelAction.ROLLED_BACK, "acme", "fraud", "v1", "r1", reason, 1.0, 1.0)

    assert model_alert(rollback("accuracy 0.61 vs 0.90"), now=0.0).severity is Severity.HIGH
    by_person = model_alert(rollback("manual rollback by ops: complaints"), now=0.0)
    assert by_person.severity is Severity.MEDIUM
