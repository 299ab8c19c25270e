"""The retrain consumer's logic with real training and a real registry, Kafka replaced by
lists: safeguards, idempotency, the validation gate, rollback, and crash recovery."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftwatch.simulate import DriftSpec, DriftType, SimulationConfig, generate, generate_outcomes
from retrain.policy import Action, RetrainPolicy, RetrainState, decide, request_id
from retrain.registry import ModelRegistry
from retrain.service import STEPS, RetrainConfig, RetrainService
from retrain.training import Dataset, TrainedModel, TrainingFailed, TrainingLimits, train
from schemas import (
    DriftEvent,
    DriftKind,
    InvalidEvent,
    ModelAction,
    ModelEvent,
    PredictionEvent,
    RetrainEvent,
    RetrainStatus,
    Severity,
    parse_timestamp,
)
from schemas.alerts import Alert, AlertKind
from streams.config import DAY
from streams.join import LabeledPrediction

T0 = 1_767_225_600.0
ONSET = 12
DAYS = 20


class Published:
    def __init__(self) -> None:
        self.retrain: list[RetrainEvent] = []
        self.models: list[ModelEvent] = []
        self.alerts: list[Alert] = []

    def retrain_event(self, event: RetrainEvent) -> None:
        self.retrain.append(event)

    def model_event(self, event: ModelEvent) -> None:
        self.models.append(event)

    def alert(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def statuses(self) -> list[RetrainStatus]:
        return [e.status for e in self.retrain]


class Rows:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.all = rows

    def rows(self, tenant: str, model: str, start: float, end: float) -> list[dict[str, Any]]:
        return [
            r
            for r in self.all
            if (r["tenant"], r["model"]) == (tenant, model)
            and start <= parse_timestamp(r["prediction_timestamp"]) <= end
        ]


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """fraud traffic whose labels follow a new rule from day 12 (learnable concept drift)."""
    cfg = SimulationConfig(
        seed=8, tenants=("acme",), models=("fraud",), days=DAYS, events_per_day=1_000,
        start=T0, label_rate=1.0, outcome_delay_hours=(2.0, 20.0),
        drifts=(DriftSpec(DriftType.RELATION, ONSET, 1.0),),
    )  # fmt: skip
    preds = {p.event_id: p for p in generate(cfg)}
    return [
        LabeledPrediction(preds[o.event_id], o.label, o.timestamp).to_dict()
        for o in generate_outcomes(cfg)
    ]


def in_process(
    model: str, data: Dataset, _: TrainingLimits, share: float, seed: int
) -> TrainedModel:
    return train(model, data, share, seed)


def drift(
    day: float = DAYS - 0.5,
    severity: Severity = Severity.HIGH,
    confirmed: bool = True,
    drift_id: str = "incident-1",
    persistence: int = 7,
) -> DriftEvent:
    return DriftEvent(
        drift_id, DriftKind.PERFORMANCE, "acme", "fraud", "v1", None, "accuracy_drop", -9.0,
        1e-20, 0.1, T0 + (DAYS - 1) * DAY, T0 + DAYS * DAY, T0, T0 + 7 * DAY, severity,
        confirmed, T0 + day * DAY, persistence=persistence,
    )  # fmt: skip


def of_new_version(out: Published, drift_id: str, day: float) -> DriftEvent:
    """A confirmed performance drift of the version promoted last, in a window after its
    post-deploy check's 24 h (one inside them rolls it back) and before the check's verdict
    (3 days later)."""
    version = [e for e in out.retrain if e.status is RetrainStatus.PROMOTED][-1].details
    return replace(
        drift(day=day + 0.5, drift_id=drift_id), model_version=version["version"],
        window_start=T0 + day * DAY, window_end=T0 + (day + 1) * DAY,
    )  # fmt: skip


def service(
    tmp_path: Path, rows: list[dict[str, Any]], published: Published | None = None, **policy: Any
) -> tuple[RetrainService, Published]:
    published = published or Published()
    cfg = RetrainConfig(
        policy=RetrainPolicy(**{"min_new_labels": 500, **policy}), training_days=6.0
    )
    svc = RetrainService(
        cfg, ModelRegistry(tmp_path / "registry"), published, Rows(rows), trainer=in_process
    )
    return svc, published


def test_flag_off_waits_then_a_flag_switch_retrains_and_promotes(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows)
    svc.on_drift(drift())
    assert (
        out.statuses() == [RetrainStatus.WAITING] and "auto-retrain is off" in out.retrain[0].reason
    )
    svc.on_control("flag:tenant:acme", {"auto_retrain": True})
    svc.on_drift(drift(day=DAYS - 0.4))  # the incident's next DriftEvent
    svc.wait_idle()
    assert out.statuses()[-2:] == [RetrainStatus.TRAINING, RetrainStatus.PROMOTED]
    promoted = out.retrain[-1].details
    assert promoted["challenger"]["pr_auc"] >= 0.70 > promoted["champion"]["pr_auc"]
    active = svc.registry.active("acme", "fraud")
    assert active is not None and active.version == promoted["version"] and active.parent == "v1"
    assert [m.action for m in out.models] == [ModelAction.PROMOTED]
    assert svc.registry.load("acme", "fraud", active.version) is not None  # checksum verified
    # Training measured the features' importances; the registry keeps them and the
    # announcement carries them (the workers rank incidents by them).
    importances = active.extra["feature_importances"]
    assert importances and sum(importances.values()) == pytest.approx(1.0, abs=1e-5)
    assert out.models[-1].feature_importances == importances


def test_the_same_drift_event_twice_never_trains_twice(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift())
    svc.on_drift(drift())  # redelivered while training
    svc.wait_idle()
    svc.on_drift(drift())  # and after
    assert out.statuses().count(RetrainStatus.TRAINING) == 1
    # A restarted consumer rebuilt from retrain-events decides the same.
    again, out2 = service(tmp_path, rows, auto_retrain=True)
    again.replay(out.retrain, [])
    again.on_drift(drift())
    again.wait_idle()
    assert RetrainStatus.TRAINING not in out2.statuses()


def test_critical_drift_waits_for_approval_and_a_rejection_stops_it(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift(severity=Severity.CRITICAL))
    assert out.statuses() == [RetrainStatus.AWAITING_APPROVAL]
    rid = request_id(drift())
    svc.on_control(f"approval:{rid}", {"decision": "reject", "by": "ops"})
    svc.on_drift(drift(severity=Severity.CRITICAL, day=DAYS - 0.3))
    assert out.statuses() == [RetrainStatus.AWAITING_APPROVAL, RetrainStatus.REJECTED]

    svc2, out2 = service(tmp_path / "b", rows, auto_retrain=True)
    svc2.on_drift(drift(severity=Severity.CRITICAL, drift_id="incident-2"))
    svc2.on_control(f"approval:{request_id(drift(drift_id='incident-2'))}", {"decision": "approve"})
    svc2.wait_idle()
    assert out2.statuses() == [
        RetrainStatus.AWAITING_APPROVAL,
        RetrainStatus.APPROVED,
        RetrainStatus.TRAINING,
        RetrainStatus.PROMOTED,
    ]


def test_drift_of_a_version_a_promotion_replaced_trains_nothing(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """v1's incidents go on closing windows of its traffic after r1 replaced it: another of
    them, past the cooldown, said nothing about r1 and trained again. One of a version the
    registry does not know (deployed elsewhere) is taken as serving."""
    svc, out = service(tmp_path, rows, auto_retrain=True, cooldown_days=0.0, min_new_labels=0)
    svc.on_drift(drift(day=DAYS - 1.0))
    svc.wait_idle()
    new = out.retrain[-1].details["version"]
    svc.on_drift(drift(day=DAYS - 0.5, drift_id="incident-2"))  # of v1
    svc.wait_idle()
    last = out.retrain[-1]
    assert last.status is RetrainStatus.IGNORED and last.drift_id == "incident-2"
    assert last.reason == (
        f"drift on v1, which {new} has replaced: it says nothing about the model serving now"
    )
    assert [m.action for m in out.models] == [ModelAction.PROMOTED]
    elsewhere = replace(drift(day=DAYS - 0.4, drift_id="incident-3"), model_version="v9")
    svc.on_drift(elsewhere)
    svc.wait_idle()
    assert RetrainStatus.TRAINING in [e.status for e in out.retrain if e.drift_id == "incident-3"]


def test_a_replaced_version_still_serving_a_day_after_the_switch_raises_an_alert(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Serving never switched (``model-events`` lost): v1's drift on traffic that began a
    day after the registry made v2 active is not v1's old traffic. Retraining on it would
    promote over a version serving never loaded: it is ignored, and people are told, once.
    The switch's time is the registry's last one: after a rollback to v1, v2's old traffic
    is v2's old traffic."""
    svc, out = service(tmp_path, rows, auto_retrain=True, cooldown_days=0.0, min_new_labels=0)
    for version in ("v1", "v2"):
        svc.registry.register_external("acme", "fraud", version)
    svc.registry.activate("acme", "fraud", "v1", reason="deployed", at=T0)
    switch = T0 + 10 * DAY
    svc.registry.activate("acme", "fraud", "v2", reason="deployed", at=switch)

    def of(version: str, drift_id: str, start: float) -> DriftEvent:
        return replace(drift(drift_id=drift_id), model_version=version, window_start=start,
                       window_end=start + DAY, detected_at=start + DAY)  # fmt: skip

    svc.on_drift(of("v1", "old-traffic", switch + DAY - 1))  # within the day serving may take
    assert out.retrain[-1].status is RetrainStatus.IGNORED and out.alerts == []
    svc.on_drift(of("v1", "still", switch + DAY))
    ignored = out.retrain[-1]
    assert ignored.status is RetrainStatus.IGNORED and ignored.drift_id == "still"
    assert "v1 still serves" in ignored.reason and "rollback --to v1" in ignored.reason
    [alert] = out.alerts
    assert alert.change == "serving_mismatch" and alert.severity is Severity.HIGH
    assert "v1 still serves" in alert.text and alert.model_version == "v1"
    svc.on_drift(of("v1", "still", switch + 2 * DAY))  # the incident's next window
    svc.on_drift(of("v1", "another", switch + 3 * DAY))
    assert len(out.alerts) == 1 and RetrainStatus.TRAINING not in out.statuses()
    back = switch + 20 * DAY
    svc.registry.activate("acme", "fraud", "v1", reason="manual rollback by ops", at=back)
    svc.on_drift(of("v2", "v2-old", back - DAY))
    assert out.retrain[-1].reason.startswith("drift on v2, which v1 has replaced")
    assert len(out.alerts) == 1


def switched_back_outside(svc: RetrainService, reason: str) -> None:
    """The registry switched back to v1 with ``reason`` behind the service's back, and the
    model's next labelled row arrives."""
    svc.registry.activate("acme", "fraud", "v1", reason=reason)
    svc.on_labeled(
        {"event_id": "x", "tenant": "acme", "model": "fraud", "model_version": "v1",
         "score": 0.9, "label": 1, "prediction_timestamp": drift().detected_at,
         "outcome_timestamp": drift().detected_at + 60}
    )  # fmt: skip


def test_a_rollback_made_outside_the_worker_ends_the_watched_request_rolled_back(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """``driftwatch rollback`` edits the registry only: the next labelled row finds the
    watched version gone, and its request ends rolled back with the registry's reason (not
    "validated, inconclusive")."""
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift())
    svc.wait_idle()
    version = out.retrain[-1].details["version"]
    switched_back_outside(svc, reason="manual rollback by ops: complaints")
    ended = out.retrain[-1]
    assert ended.status is RetrainStatus.ROLLED_BACK and ended.details["manual"] is True
    assert ended.reason == "manual rollback by ops: complaints" and version != "v1"
    assert ended.details["by"] == "ops" and ("acme", "fraud") not in svc.checks


def test_the_worker_s_own_rollback_cut_short_by_a_crash_is_finished_not_called_manual(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Killed after the registry switched back and before the announcement: the watch a
    restart rebuilds finds its version gone by the worker's own hand, and finishes the
    rollback (model-events, then the request), at HIGH, not as a person's."""
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift())
    svc.wait_idle()
    switched_back_outside(svc, reason="rollback: accuracy 0.61 vs 0.90")
    ended = out.retrain[-1]
    assert ended.status is RetrainStatus.ROLLED_BACK and "manual" not in ended.details
    assert ended.reason == "accuracy 0.61 vs 0.90"
    assert [m.action for m in out.models] == [ModelAction.PROMOTED, ModelAction.ROLLED_BACK]


def test_an_approval_of_a_replaced_version_s_incident_trains_nothing(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True, cooldown_days=0.0, min_new_labels=0)
    svc.on_drift(drift(severity=Severity.CRITICAL, drift_id="critical", day=DAYS - 1.0))
    assert out.statuses() == [RetrainStatus.AWAITING_APPROVAL]
    for version in ("v1", "v2"):  # meanwhile v2 replaced v1 (a rollout, or a rollback)
        svc.registry.register_external("acme", "fraud", version)
        svc.registry.activate("acme", "fraud", version, reason="deployed")
    rid = request_id(drift(drift_id="critical"))
    svc.on_control(f"approval:{rid}", {"decision": "approve", "by": "ops"})
    svc.wait_idle()
    last = out.retrain[-1]
    assert last.status is RetrainStatus.REJECTED and last.drift_id == "critical"
    assert last.reason.startswith("approved by ops, but drift on v1, which v2 has replaced")
    assert out.models == [] and RetrainStatus.TRAINING not in out.statuses()


def test_an_unreadable_registry_does_not_stop_deciding(
    tmp_path: Path, rows: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift())
    svc.wait_idle()
    for active in (tmp_path / "registry").rglob("active.json"):
        active.write_text('{"version": "gone"}')  # points at a version with no metadata
    with caplog.at_level("WARNING", logger="retrain.service"):
        svc.on_drift(drift(drift_id="incident-2", confirmed=False, persistence=1))
    assert out.statuses()[-1] is RetrainStatus.IGNORED
    assert "could not tell whether v1 was replaced" in caplog.text


def test_an_approval_of_no_such_request_is_logged_not_dropped_silently(
    tmp_path: Path, rows: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift(severity=Severity.CRITICAL))
    rid = request_id(drift())
    with caplog.at_level("WARNING", logger="retrain.service"):
        svc.on_control("approval:nosuch", {"decision": "approve", "by": "ops"})
        svc.on_control(f"approval:{rid}", {"decision": "reject", "by": "ops"})
        svc.on_control(f"approval:{rid}", {"decision": "approve", "by": "ops"})  # too late
    assert [r.getMessage() for r in caplog.records] == [
        "approve of retrain request nosuch ignored: no such request",
        f"approve of retrain request {rid} ignored: it is rejected",
    ]
    assert out.statuses() == [RetrainStatus.AWAITING_APPROVAL, RetrainStatus.REJECTED]


def test_unconfirmed_drift_is_ignored_and_cooldown_holds_a_second_incident(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift(confirmed=False, persistence=2))
    assert out.statuses() == [RetrainStatus.IGNORED] and "not confirmed" in out.retrain[0].reason
    svc.on_drift(drift())
    svc.wait_idle()
    svc.on_drift(of_new_version(out, "incident-2", DAYS + 1))
    assert out.statuses()[-1] is RetrainStatus.WAITING and "cooldown" in out.retrain[-1].reason


def test_a_challenger_trained_on_noisy_labels_is_never_promoted(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    rng = np.random.default_rng(3)
    noisy = [
        {**r, "label": 1 - int(r["label"])} if rng.random() < 0.4 else r for r in rows
    ]  # label noise in the training data
    svc, out = service(tmp_path, noisy, auto_retrain=True)
    svc.on_drift(drift())
    svc.wait_idle()
    assert out.statuses()[-1] is RetrainStatus.CHALLENGER_REJECTED
    details = out.retrain[-1].details
    assert details["challenger"]["pr_auc"] < 0.70 and "floor" in out.retrain[-1].reason
    assert svc.registry.active("acme", "fraud") is None and out.models == []


def test_a_promoted_model_that_degrades_is_rolled_back_within_the_check_window(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift())
    svc.wait_idle()
    version = out.retrain[-1].details["version"]
    promoted_at = drift().detected_at
    rng = np.random.default_rng(5)
    for i in range(400):  # the new version's first hours: right only 60 % of the time
        ts = promoted_at + 60.0 * i
        svc.on_labeled(
            {"event_id": f"new-{i}", "tenant": "acme", "model": "fraud", "model_version": version,
             "score": 0.9, "label": int(rng.random() < 0.6),
             "prediction_timestamp": ts, "outcome_timestamp": ts + 3600}
        )  # fmt: skip
    assert out.statuses()[-1] is RetrainStatus.ROLLED_BACK
    assert [m.action for m in out.models] == [ModelAction.PROMOTED, ModelAction.ROLLED_BACK]
    assert out.models[-1].version == "v1" and out.models[-1].event_time < promoted_at + DAY
    assert out.models[-1].feature_importances == {}  # v1 is external: none recorded
    active = svc.registry.active("acme", "fraud")
    assert active is not None and active.version == "v1"


def test_a_crash_mid_training_is_retried_once_and_the_registry_stays_consistent(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    release = threading.Event()

    def never(*_: Any) -> TrainedModel:
        release.wait(10)
        raise SystemExit("crashed")  # stands for the process dying mid-training

    crashed, out = service(tmp_path, rows, auto_retrain=True)
    crashed.trainer = never
    crashed.on_drift(drift())
    assert out.statuses() == [RetrainStatus.TRAINING]
    crashed.close()
    release.set()
    # A new process rebuilds from retrain-events and retries (attempt 2), which succeeds.
    svc, out2 = service(tmp_path, rows, auto_retrain=True)
    svc.replay(out.retrain, [])
    svc.wait_idle()
    assert [(e.status, e.attempt) for e in out2.retrain] == [
        (RetrainStatus.TRAINING, 2),
        (RetrainStatus.PROMOTED, 2),
    ]
    assert [v.version for v in svc.registry.versions("acme", "fraud")] == ["v1", "r1"]
    # Had the retry died too, a third start would give up instead of looping.
    third, out3 = service(tmp_path / "c", rows, auto_retrain=True)
    third.replay([*out.retrain, replace(out2.retrain[0])], [])
    assert [e.status for e in out3.retrain] == [RetrainStatus.FAILED]


def test_switching_the_flag_off_stops_queued_trainings(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    hold = threading.Event()

    def slow(
        model: str, data: Dataset, limits: TrainingLimits, share: float, seed: int
    ) -> TrainedModel:
        hold.wait(10)
        return train(model, data, share, seed)

    both = rows + [{**r, "tenant": "globex"} for r in rows]
    svc, out = service(tmp_path, both, auto_retrain=True)
    svc.trainer = slow
    svc.on_drift(drift())
    other = replace(drift(drift_id="incident-g"), tenant="globex")
    svc.on_drift(other)  # queued behind the first
    svc.on_control("flag:global", {"auto_retrain": False})
    hold.set()
    svc.wait_idle()
    globex = [e for e in out.retrain if e.tenant == "globex"]
    assert [e.status for e in globex] == [RetrainStatus.TRAINING, RetrainStatus.WAITING]
    assert "switched off" in globex[-1].reason


def test_a_realised_performance_drift_on_the_new_version_rolls_back_an_estimate_does_not(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift())
    svc.wait_idle()
    version = out.retrain[-1].details["version"]
    on_new = replace(
        drift(drift_id="after", day=DAYS + 1), model_version=version,
        window_start=T0 + DAYS * DAY, confirmed=False, persistence=1,
    )  # fmt: skip
    svc.on_drift(replace(on_new, extra={"estimated": True}))
    assert [m.action for m in out.models] == [ModelAction.PROMOTED]
    assert svc.checks[("acme", "fraud")].warnings
    svc.on_drift(on_new)
    assert [m.action for m in out.models] == [ModelAction.PROMOTED, ModelAction.ROLLED_BACK]
    assert out.statuses()[-1] is RetrainStatus.ROLLED_BACK
    assert "performance drift" in out.retrain[-1].reason


def test_a_crash_after_activating_keeps_the_true_predecessor_as_the_rollback_target(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    class CrashOnPromoted(Published):
        def retrain_event(self, event: RetrainEvent) -> None:
            if event.status is RetrainStatus.PROMOTED:
                raise SystemExit("killed between activating and announcing")
            super().retrain_event(event)

    crashing, out = service(tmp_path, rows, CrashOnPromoted(), auto_retrain=True)
    crashing.on_drift(drift())
    with pytest.raises(SystemExit):
        crashing.wait_idle()
    crashing.close()
    active = crashing.registry.active("acme", "fraud")
    assert active is not None and active.version == "r1"  # activated, never announced
    svc, out2 = service(tmp_path, rows, auto_retrain=True)
    svc.replay(out.retrain, [])
    svc.wait_idle()
    promoted = out2.retrain[-1]
    assert promoted.status is RetrainStatus.PROMOTED and promoted.details["previous"] == "v1"
    assert [v.version for v in svc.registry.versions("acme", "fraud")] == ["v1", "r1"]
    assert svc.checks[("acme", "fraud")].previous == "v1"


def test_a_person_asks_for_a_retraining_through_the_same_safeguards(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows)  # auto-retrain off: a person's request does not need it
    svc.on_labeled(rows[-1])  # the prediction log's clock: the training window ends there
    ask = {"action": "retrain", "tenant": "acme", "model": "fraud", "reason": "new data",
           "by": "ana"}  # fmt: skip
    svc.on_control("retrain:api-1", ask)
    svc.wait_idle()
    assert out.statuses() == [RetrainStatus.TRAINING, RetrainStatus.PROMOTED]
    first = out.retrain[0]
    assert first.drift_id == "manual:api-1" and "asked by ana" in first.reason
    assert first.details["drift"]["requested_by"] == "ana"
    # The cooldown holds for people too; the refusal is final and says why.
    svc.on_control("retrain:api-2", {**ask, "reason": "again"})
    assert out.retrain[-1].status is RetrainStatus.REJECTED
    assert "cooldown" in out.retrain[-1].reason
    # Replayed (a restarted retrain worker): nothing is decided twice.
    again, out2 = service(tmp_path, rows)
    again.replay(out.retrain, [("retrain:api-1", ask), ("retrain:api-2", ask)])
    again.wait_idle()
    assert out2.retrain == []


def test_a_request_made_while_the_worker_was_down_is_decided_at_start(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows)
    svc.log_clock[("acme", "fraud")] = parse_timestamp(rows[-1]["outcome_timestamp"])
    ask = {"action": "retrain", "tenant": "acme", "model": "fraud", "reason": "x", "by": "ana"}
    svc.replay([], [("retrain:api-9", ask)])
    svc.wait_idle()
    assert out.statuses() == [RetrainStatus.TRAINING, RetrainStatus.PROMOTED]


def ask_rollback(svc: RetrainService, rid: str, to: str | None = None) -> None:
    """A person's rollback through the API, as the retrain worker reads it."""
    svc.on_control(
        f"rollback:{rid}",
        {"action": "rollback", "tenant": "acme", "model": "fraud", "to": to,
         "reason": "complaints", "by": "ops", "request_id": rid},
    )  # fmt: skip


def test_a_person_rolls_back_to_the_previous_version(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift())
    svc.wait_idle()
    active = svc.registry.active("acme", "fraud")
    assert active is not None and active.version != "v1"
    ask_rollback(svc, "api-3")
    now = svc.registry.active("acme", "fraud")
    assert now is not None and now.version == "v1"
    last = out.models[-1]
    assert last.action is ModelAction.ROLLED_BACK and last.previous_version == active.version
    assert "ops" in last.reason and last.request_id == "api-3"
    assert ("acme", "fraud") not in svc.checks  # no post-deploy watch of a version gone
    # The request that promoted it ends rolled back, by a person: not ``promoted`` for good.
    ended = out.retrain[-1]
    assert ended.status is RetrainStatus.ROLLED_BACK and ended.details["manual"] is True
    assert ended.details["by"] == "ops" and "complaints" in ended.reason
    # Read again (a restart before the commit, maybe before the announcement): switched
    # already, so neither flipped back nor refused as "already active"; announced again.
    again = RetrainService(svc.config, ModelRegistry(tmp_path / "registry"), out, Rows(rows),
                           trainer=in_process)  # fmt: skip
    ask_rollback(again, "api-3")
    still = again.registry.active("acme", "fraud")
    assert still is not None and still.version == "v1"
    assert out.alerts == [] and [m.action for m in out.models] == [
        ModelAction.PROMOTED,
        ModelAction.ROLLED_BACK,
        ModelAction.ROLLED_BACK,
    ]
    last, first = out.models[-1], out.models[-2]
    assert last == replace(first, at=last.at, event_time=last.event_time)


@pytest.mark.parametrize(
    ("to", "why"),
    [
        ("v9", "acme/fraud has no version 'v9'"),
        (None, "v1 has no previous version to roll back to"),
        ("v1", "v1 is already the active version"),
    ],
)
def test_a_rollback_that_cannot_be_done_is_refused_with_an_alert(
    tmp_path: Path, rows: list[dict[str, Any]], to: str | None, why: str
) -> None:
    """The API answered "accepted": a rollback that did nothing must not be silent."""
    svc, out = service(tmp_path, rows)
    svc.registry.register_external("acme", "fraud", "v1")
    svc.registry.activate("acme", "fraud", "v1", reason="deployed")
    ask_rollback(svc, "api-4", to)
    active = svc.registry.active("acme", "fraud")
    assert active is not None and active.version == "v1" and out.models == []
    [alert] = out.alerts
    assert alert.kind is AlertKind.MODEL and alert.change == "rollback_refused"
    assert alert.severity is Severity.HIGH and why in alert.text and "ops" in alert.text
    assert alert.retrain is not None and alert.retrain["request_id"] == "api-4"


def test_a_version_promoted_over_one_still_watched_ends_that_one_s_watch_and_says_so(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """After the cooldown, a second incident retrains again before the first version's check
    ended: that request is told (inconclusive, replaced), and a restart watches the newer
    version only."""
    svc, out = service(tmp_path, rows, auto_retrain=True, cooldown_days=0.0, min_new_labels=0)
    svc.on_drift(drift(day=DAYS - 1.0))
    svc.wait_idle()
    first = out.retrain[-1]
    assert first.status is RetrainStatus.PROMOTED
    # A drift of the new version itself (one of the replaced version's is ignored: below).
    svc.on_drift(of_new_version(out, "incident-2", DAYS + 1))
    svc.wait_idle()
    second = [e for e in out.retrain if e.request_id != first.request_id][-1]
    assert second.status is RetrainStatus.PROMOTED
    [told] = [e for e in out.retrain if e.request_id == first.request_id][-1:]
    assert told.status is RetrainStatus.VALIDATED and told.details["inconclusive"] is True
    old, new = first.details["version"], second.details["version"]
    assert told.reason == f"{old} was replaced by {new} before its check ended"
    assert svc.checks[("acme", "fraud")].version == new
    # A restart that replays a history where the first was never told ends it the same way.
    untold = [e for e in out.retrain if e is not told]
    again, replayed = service(tmp_path, rows, auto_retrain=True)
    again.replay(untold, [])
    assert [(e.request_id, e.status) for e in replayed.retrain] == [
        (first.request_id, RetrainStatus.VALIDATED)
    ]
    assert again.checks[("acme", "fraud")].version == new


class Crash(BaseException):
    """Stands for the process dying (SIGKILL) at a step."""


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_every_step_one_training_one_version_the_right_one_active(
    tmp_path: Path, rows: list[dict[str, Any]], step: str
) -> None:
    trainings: list[int] = []

    def counted(model: str, data: Dataset, _: TrainingLimits, share: float, seed: int) -> Any:
        trainings.append(1)
        return train(model, data, share, seed)

    def crash_at(name: str) -> None:
        if name == step:
            raise Crash(name)

    first, out = service(tmp_path, rows, auto_retrain=True)
    first.trainer, first.step = counted, crash_at
    with pytest.raises(Crash):
        first.on_drift(drift())
        first.wait_idle()
        # the post-deploy check's first judgement (what "watching" covers)
        for row in rows:
            first.on_labeled({**row, "model_version": "r1"})
    first.close()
    # The restarted process: state from what was published, the same registry.
    again, out2 = service(tmp_path, rows, auto_retrain=True)
    again.trainer = counted
    again.replay(out.retrain, [])
    again.wait_idle()
    again.on_drift(drift())  # redelivered after the restart: decided once, not again
    again.wait_idle()
    events = [*out.retrain, *out2.retrain]
    promoted = [e for e in events if e.status is RetrainStatus.PROMOTED]
    assert len({e.details["version"] for e in promoted}) == 1, events
    assert promoted[-1].details["previous"] == "v1"
    # Trained once; twice only when a finished training was lost before its version was
    # registered (the registry keeps only validated versions).
    assert len(trainings) == (2 if step in ("trained", "validated") else 1)
    assert [v.version for v in again.registry.versions("acme", "fraud")] == ["v1", "r1"]
    active = again.registry.active("acme", "fraud")
    assert active is not None and active.version == "r1"
    announced = {(m.action, m.version, m.request_id) for m in [*out.models, *out2.models]}
    assert announced == {(ModelAction.PROMOTED, "r1", request_id(drift()))}
    assert again.checks[("acme", "fraud")].version == "r1"


def crash_at(step: str) -> Callable[[str], None]:
    def at(name: str) -> None:
        if name == step:
            raise Crash(name)

    return at


def finished_after_restart(
    tmp_path: Path, rows: list[dict[str, Any]], log: list[RetrainEvent], data: Any = None
) -> tuple[RetrainService, Published]:
    """A restarted process replays ``log``; its promotion is announced, recorded and watched."""
    svc, out = service(tmp_path, rows, auto_retrain=True)
    if data is not None:
        svc.data = data
    svc.replay(log, [])
    svc.wait_idle()
    assert out.statuses()[-1] is RetrainStatus.PROMOTED, out.retrain
    assert [(m.action, m.version) for m in out.models] == [(ModelAction.PROMOTED, "r1")]
    assert svc.checks[("acme", "fraud")].version == "r1"
    assert [v.version for v in svc.registry.versions("acme", "fraud")] == ["v1", "r1"]
    return svc, out


def test_a_drift_redelivered_while_its_request_trains_leaves_it_training(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Found by review: a second DriftEvent of the incident during its training published
    "ignored: already training", which took the request out of training. A crash after
    the activation then left r1 active, unannounced and unwatched, and another incident's
    drift could start a second training of the model."""
    release = threading.Event()

    def gated(model: str, data: Dataset, _: TrainingLimits, share: float, seed: int) -> Any:
        release.wait(60)
        return train(model, data, share, seed)

    first, out = service(tmp_path, rows, auto_retrain=True)
    first.trainer, first.step = gated, crash_at("activated")
    first.on_drift(drift())
    first.on_drift(drift(day=DAYS - 0.4))  # redelivered, or the incident's next window
    first.on_drift(drift(day=DAYS - 0.4, drift_id="incident-2"))
    assert [(e.status, e.request_id) for e in out.retrain] == [
        (RetrainStatus.TRAINING, request_id(drift())),
        (RetrainStatus.IGNORED, request_id(drift(drift_id="incident-2"))),  # its own request
    ]
    assert first.state.requests[request_id(drift())].status is RetrainStatus.TRAINING
    release.set()
    with pytest.raises(Crash):
        first.wait_idle()
    first.close()
    finished_after_restart(tmp_path, rows, out.retrain)


class Unreadable(Rows):
    def rows(self, tenant: str, model: str, start: float, end: float) -> list[dict[str, Any]]:
        raise TimeoutError("the broker is not ready")


@pytest.mark.parametrize("data", ["readable", "unreadable"])
def test_a_version_registered_before_a_second_interruption_is_finished_not_failed(
    tmp_path: Path, rows: list[dict[str, Any]], data: str
) -> None:
    """Found by review: interrupted once while training and again after its retry activated
    r1, a request was "failed: interrupted twice" with r1 active and unwatched; and a resume
    whose read of the training data failed left it "waiting" the same way. A registered
    version keeps the figures a resume needs: nothing is read again."""
    first, out = service(tmp_path, rows, auto_retrain=True)
    first.step = crash_at("trained")
    with pytest.raises(Crash):
        first.on_drift(drift())
        first.wait_idle()
    first.close()
    second, out2 = service(tmp_path, rows, auto_retrain=True)
    second.step = crash_at("activated")
    with pytest.raises(Crash):
        second.replay(out.retrain, [])
        second.wait_idle()
    second.close()
    active = second.registry.active("acme", "fraud")
    assert active is not None and active.version == "r1"
    log = [*out.retrain, *out2.retrain]
    assert [(e.status, e.attempt) for e in log] == [
        (RetrainStatus.TRAINING, 1),
        (RetrainStatus.TRAINING, 2),
    ]
    broken = Unreadable(rows) if data == "unreadable" else None
    svc, out3 = finished_after_restart(tmp_path, rows, log, broken)
    promoted = out3.retrain[-1].details
    assert promoted["previous"] == "v1" and promoted["resumed"] is True
    registered = svc.registry.get("acme", "fraud", "r1").extra
    assert promoted["champion"] == registered["champion"] and registered["champion"]["n"] > 0
    assert promoted["trained_until"] == registered["trained_until"]


def test_a_person_s_request_before_any_training_takes_the_version_from_the_traffic(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Found by review: with no version in the registry, a person's request made up "v1":
    registered as the version serving, the new one promoted over it, and the rollback target
    a version that never existed. The traffic says which version serves. A request whose
    training data could not be read is tried again at the next start, not left waiting."""
    served = [{**r, "model_version": "prod-7"} for r in rows]
    ask = {"action": "retrain", "tenant": "acme", "model": "fraud", "reason": "x", "by": "ana"}
    down, out = service(tmp_path, served)
    down.data = Unreadable(served)
    down.log_clock[("acme", "fraud")] = parse_timestamp(served[-1]["outcome_timestamp"])
    down.on_control("retrain:api-3", ask)
    assert out.statuses() == [RetrainStatus.WAITING]
    svc, out2 = service(tmp_path, served)
    svc.log_clock[("acme", "fraud")] = parse_timestamp(served[-1]["outcome_timestamp"])
    svc.replay(out.retrain, [("retrain:api-3", ask)])
    svc.wait_idle()
    assert out2.statuses() == [RetrainStatus.TRAINING, RetrainStatus.PROMOTED]
    assert out2.retrain[-1].details["previous"] == "prod-7"
    versions = svc.registry.versions("acme", "fraud")
    assert [(v.version, v.external, v.parent) for v in versions] == [
        ("prod-7", True, None),
        ("r1", False, "prod-7"),
    ]
    assert svc.checks[("acme", "fraud")].previous == "prod-7"
    assert [(m.version, m.previous_version) for m in out2.models] == [("r1", "prod-7")]


def test_a_critical_incident_confirmed_by_a_milder_look_still_needs_a_person(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Found by review: a 1-sigma shift opened HIGH, escalated CRITICAL, and was confirmed by
    an interim look's HIGH DriftEvent; the policy read that event's severity and retrained
    with no approval, though CRITICAL drift needs a person. Drift events carry their
    incident's worst severity, and the policy reads it."""
    import numpy as np

    from streams.config import EngineConfig
    from streams.engine import DriftEngine
    from streams.keyed_state import MemoryStore

    rng = np.random.default_rng(7)
    engine = DriftEngine(EngineConfig(), MemoryStore())
    events: list[PredictionEvent] = []
    for d in range(70):
        for t in np.sort(rng.uniform(0, DAY, 1000)) + T0 + d * DAY:
            x = float(rng.normal(1.0 if d >= 60 else 0.0))
            features: dict[str, float | str | None] = {"x": x, "y": float(rng.normal())}
            events.append(PredictionEvent(f"e{len(events)}", "acme", "fraud", "v1", float(t),
                                          features, float(rng.uniform())))  # fmt: skip
    drifts = [d for _, d in engine.observe_many(events).drifts]
    first = next(d for d in drifts if d.confirmed)
    worst = max((Severity(n.severity) for n in engine.take_notices()), key=lambda s: s.rank)
    assert worst is Severity.CRITICAL and first.severity.rank < worst.rank
    assert first.incident_severity is Severity.CRITICAL
    decision = decide(first, RetrainPolicy(auto_retrain=True), RetrainState(), new_labels=10**6)
    assert decision.action is Action.REQUEST_APPROVAL, decision
    # the request shows the severity its approval read
    published = Published()
    svc = RetrainService(RetrainConfig(policy=RetrainPolicy(auto_retrain=True)),
                         ModelRegistry(tmp_path / "registry"), published, Rows(rows))  # fmt: skip
    svc.on_drift(first)
    assert [(e.status, e.details["severity"]) for e in published.retrain] == [
        (RetrainStatus.AWAITING_APPROVAL, "CRITICAL")
    ]


def test_a_flag_cleared_gives_way_to_the_next_one() -> None:
    """The global flag off stops every tenant (found by review: a tenant's own on overrode
    it), so a deployment that used it as a default, switching tenants on one by one, needs a
    way back: a flag set to null (``driftwatch flags --auto-retrain default``), or deleted,
    is cleared (a deleted global flag had read as off)."""
    from schemas import ControlMessage

    policy, state = RetrainPolicy(), RetrainState()
    state.control("flag:global", {"auto_retrain": False})
    state.control("flag:tenant:acme", {"auto_retrain": True})
    assert not state.auto_retrain("acme", policy)
    cleared = ControlMessage.parse(b"flag:global", b'{"auto_retrain": null}')
    state.control(cleared.key, cleared.value)
    assert state.auto_retrain("acme", policy) and not state.auto_retrain("globex", policy)
    state.control("flag:global", {"auto_retrain": True})
    state.control("flag:tenant:acme", ControlMessage.parse(b"flag:tenant:acme", None).value)
    assert state.auto_retrain("acme", policy)  # the global flag again
    state.control("flag:global", {})  # deleted: cleared, not off
    assert state.global_flag is None and not state.auto_retrain("acme", policy)


def test_a_flag_message_without_its_field_is_refused_not_a_clear() -> None:
    """A typo (``auto-retrain``) must not clear a flag: only null or a tombstone does."""
    from schemas import ControlMessage

    with pytest.raises(InvalidEvent) as exc:
        ControlMessage.parse(b"flag:global", b'{"auto-retrain": false}')
    assert exc.value.reason == "missing_field"


class Flaky(Rows):
    """Training data whose reads fail until ``up`` is set (a broker not ready yet)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__(rows)
        self.up = False
        self.reads = 0

    def rows(self, tenant: str, model: str, start: float, end: float) -> list[dict[str, Any]]:
        self.reads += 1
        if not self.up:
            raise TimeoutError("the broker is not ready")
        return super().rows(tenant, model, start, end)


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ASK = {"action": "retrain", "tenant": "acme", "model": "fraud", "reason": "x", "by": "ana"}


def waiting_on_data(
    tmp_path: Path, rows: list[dict[str, Any]], **policy: Any
) -> tuple[RetrainService, Published, Flaky, Ticks]:
    """A person's request whose training data cannot be read yet: left ``waiting``."""
    svc, out = service(tmp_path, rows, **policy)
    svc.data = flaky = Flaky(rows)
    svc.monotonic = ticks = Ticks()
    svc.log_clock[("acme", "fraud")] = parse_timestamp(rows[-1]["outcome_timestamp"])
    svc.on_control("retrain:api-5", ASK)
    assert out.statuses() == [RetrainStatus.WAITING] and flaky.reads == 1
    return svc, out, flaky, ticks


def test_a_person_s_request_left_waiting_is_tried_again_without_a_restart(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Its data could not be read: it was tried again only at the retrain worker's next
    start. A running worker tries it again by itself, the wait doubling up to a bound, and
    says "waiting" once for the same reason."""
    svc, out, flaky, ticks = waiting_on_data(tmp_path, rows)
    assert svc.config.retry_seconds == 60.0
    tries = [ticks.now]
    for _ in range(8):
        before = flaky.reads
        for _ in range(3600):  # a second at a time, an hour at most
            ticks.now += 1.0
            svc.poll()
            if flaky.reads > before:
                break
        assert flaky.reads == before + 1, "not tried again within the hour"
        tries.append(ticks.now)
    waits = [b - a for a, b in itertools.pairwise(tries)]
    assert [round(w) for w in waits] == [60, 120, 240, 480, 900, 900, 900, 900], waits
    assert out.statuses() == [RetrainStatus.WAITING]  # said once
    flaky.up = True
    ticks.now += 900.0
    svc.wait_idle()
    assert out.statuses() == [RetrainStatus.WAITING, RetrainStatus.TRAINING,
                              RetrainStatus.PROMOTED]  # fmt: skip
    reads = flaky.reads
    ticks.now += 10_000.0
    svc.poll()
    assert flaky.reads == reads and svc.registry.versions("acme", "fraud")[-1].version == "r1"


def test_a_waiting_person_s_request_tried_again_never_trains_beside_another_request(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Meanwhile an automatic request of the model started training: the person's, tried
    again, is refused by the same safeguard as a new one (one training of a model at a
    time), not trained beside it."""
    release = threading.Event()

    def gated(model: str, data: Dataset, _: TrainingLimits, share: float, seed: int) -> Any:
        release.wait(60)
        return train(model, data, share, seed)

    svc, out, flaky, ticks = waiting_on_data(tmp_path, rows, auto_retrain=True)
    svc.trainer = gated
    flaky.up = True
    svc.on_drift(drift())
    auto = request_id(drift())
    assert svc.state.requests[auto].status is RetrainStatus.TRAINING
    ticks.now += 3600.0
    svc.poll()
    manual = [e for e in out.retrain if e.request_id != auto]
    assert [e.status for e in manual] == [RetrainStatus.WAITING, RetrainStatus.REJECTED]
    assert f"request {auto[:8]} for this model is training" in manual[-1].reason
    release.set()
    svc.wait_idle()
    assert out.statuses().count(RetrainStatus.TRAINING) == 1
    assert [m.action for m in out.models] == [ModelAction.PROMOTED]


def test_a_person_s_request_whose_retry_could_not_read_its_data_is_not_refused_by_itself(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Its first training failed and the retry (attempt 2) could not read the data: tried
    again, it was decided anew as attempt 1, and the cooldown its own first training had set
    rejected it. It carries on as the retry it was, at a start as in a running worker."""
    flaky, failures = Flaky(rows), [TrainingFailed("timeout", "over the limit")]
    flaky.up = True

    def fails_once(model: str, data: Dataset, _: TrainingLimits, share: float, seed: int) -> Any:
        if failures:
            flaky.up = False  # the broker goes away meanwhile
            raise failures.pop()
        return train(model, data, share, seed)

    svc, out = service(tmp_path, rows)
    ticks = Ticks()
    svc.trainer, svc.data, svc.monotonic = fails_once, flaky, ticks
    svc.log_clock[("acme", "fraud")] = parse_timestamp(rows[-1]["outcome_timestamp"])
    svc.on_control("retrain:api-6", ASK)
    svc.wait_idle()
    log = list(out.retrain)
    assert [(e.status, e.attempt) for e in log] == [
        (RetrainStatus.TRAINING, 1),
        (RetrainStatus.WAITING, 2),
    ]
    # At a start (a new process, the data readable again).
    again, out2 = service(tmp_path / "b", rows)
    again.log_clock[("acme", "fraud")] = parse_timestamp(rows[-1]["outcome_timestamp"])
    again.replay(log, [("retrain:api-6", ASK)])
    again.wait_idle()
    assert [(e.status, e.attempt) for e in out2.retrain] == [
        (RetrainStatus.TRAINING, 2),
        (RetrainStatus.PROMOTED, 2),
    ]
    # In the running worker, when its wait is over.
    flaky.up = True
    ticks.now += 3600.0
    svc.wait_idle()
    assert [(e.status, e.attempt) for e in out.retrain[2:]] == [
        (RetrainStatus.TRAINING, 2),
        (RetrainStatus.PROMOTED, 2),
    ]


def test_a_request_carried_on_never_trains_beside_another_request(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Carried on as its retry (no decision, so no safeguard of :func:`decide_manual`), a
    person's request still checks that no other request of the model is in flight."""
    flaky, release = Flaky(rows), threading.Event()
    flaky.up = True
    calls: list[int] = []

    def first_fails(model: str, data: Dataset, _: TrainingLimits, share: float, seed: int) -> Any:
        calls.append(1)
        if len(calls) == 1:
            flaky.up = False
            raise TrainingFailed("timeout", "over the limit")
        release.wait(60)
        return train(model, data, share, seed)

    svc, out = service(tmp_path, rows, auto_retrain=True, cooldown_days=0.0, min_new_labels=0)
    ticks = Ticks()
    svc.trainer, svc.data, svc.monotonic = first_fails, flaky, ticks
    svc.log_clock[("acme", "fraud")] = parse_timestamp(rows[-1]["outcome_timestamp"])
    svc.on_control("retrain:api-7", ASK)
    svc.wait_idle()
    assert out.statuses() == [RetrainStatus.TRAINING, RetrainStatus.WAITING]
    flaky.up = True
    svc.on_drift(drift(day=DAYS + 1.5))  # an automatic request of the model starts training
    auto = request_id(drift())
    ticks.now += 3600.0
    svc.poll()
    manual = [e for e in out.retrain if e.request_id != auto]
    assert manual[-1].status is RetrainStatus.REJECTED, manual[-1]
    assert f"request {auto[:8]} for this model is training" in manual[-1].reason
    release.set()
    svc.wait_idle()
    assert len(calls) == 2 and [m.action for m in out.models] == [ModelAction.PROMOTED]


def test_a_version_found_registered_for_the_request_after_training_is_promoted_with_its_figures(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """``_finish`` looks the request up in the registry as ``_start`` does (one lookup,
    ``_registered``), and finishes a version it finds the way ``_start`` does: with the
    figures recorded beside that version. It promoted the version found with the figures of
    the model it had just trained and thrown away (challenger, champion, and the data end
    that the next training's new-label count starts from)."""
    svc, out = service(tmp_path, rows, auto_retrain=True)
    # Registered for this request by a run this state does not know of (a second worker on
    # the registry, a lost history).
    earlier = svc.registry.register(
        "acme", "fraud", {"a": "model"}, parent="v1", training_window=(T0, T0 + DAY), rows=10,
        metrics={"pr_auc": 0.91, "accuracy": 0.93}, request_id=request_id(drift()),
        extra={"champion": {"pr_auc": 0.5, "accuracy": 0.8, "n": 9.0}, "trained_until": T0 + DAY},
    )  # fmt: skip
    svc.on_drift(drift())
    svc.wait_idle()
    promoted = out.retrain[-1]
    assert promoted.status is RetrainStatus.PROMOTED and promoted.details["version"] == "r1"
    assert promoted.details["challenger"] == earlier.metrics
    assert promoted.details["champion"] == {"pr_auc": 0.5, "accuracy": 0.8, "n": 9.0}
    assert promoted.details["trained_until"] == T0 + DAY
    assert svc.state.trained_until[("acme", "fraud")] == T0 + DAY
    assert [v.version for v in svc.registry.versions("acme", "fraud")] == ["r1"]
    assert [(m.version, m.metrics) for m in out.models] == [("r1", earlier.metrics)]


def test_a_restart_watches_a_promotion_past_a_labelled_row_it_cannot_use(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """The watch a restart rebuilds reads the new version's labelled rows: one the check
    cannot use (an outcome label 2 is valid on the wire, and not binary) raised out of the
    replay, and the worker stopped at every start while the promotion was watched."""
    svc, out = service(tmp_path, rows, auto_retrain=True)
    svc.on_drift(drift())
    svc.wait_idle()
    version, at = out.retrain[-1].details["version"], drift().detected_at
    row = {"tenant": "acme", "model": "fraud", "model_version": version, "score": 0.9,
           "prediction_timestamp": at + 60, "outcome_timestamp": at + 3600}  # fmt: skip
    odd, fine = {**row, "event_id": "odd", "label": 2}, {**row, "event_id": "fine", "label": 1}
    again, _ = service(tmp_path, [*rows, odd, fine], auto_retrain=True)
    again.replay(out.retrain, [])
    check = again.checks[("acme", "fraud")]
    assert check.version == version and list(check.counted) == ["fine"]


def failed_then_waiting(
    tmp_path: Path, rows: list[dict[str, Any]], day: float, **policy: Any
) -> tuple[RetrainService, Published, Flaky, Ticks]:
    """A person's request asked at ``day`` (log clock) whose first training failed and whose
    retry (attempt 2) could not read its data: ``waiting``, to carry on."""
    flaky, failures = Flaky(rows), [TrainingFailed("timeout", "over the limit")]
    flaky.up = True

    def fails_once(model: str, data: Dataset, _: TrainingLimits, share: float, seed: int) -> Any:
        if failures:
            flaky.up = False
            raise failures.pop()
        return train(model, data, share, seed)

    svc, out = service(tmp_path, rows, **policy)
    ticks = Ticks()
    svc.trainer, svc.data, svc.monotonic = fails_once, flaky, ticks
    svc.log_clock[("acme", "fraud")] = T0 + day * DAY
    svc.on_control("retrain:api-8", ASK)
    svc.wait_idle()
    assert [(e.status, e.attempt) for e in out.retrain] == [
        (RetrainStatus.TRAINING, 1),
        (RetrainStatus.WAITING, 2),
    ]
    return svc, out, flaky, ticks


def test_a_waiting_request_is_decided_anew_once_another_request_of_the_model_has_trained(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Its cooldown over while it waited, an automatic request of the model trained and was
    promoted (r1): the person's request carried on with its old drift, trained on old data,
    replaced r1 (its watch cut short) and moved the last training back. Decided anew, the
    cooldown of r1's training rejects it; the last training never moves back."""
    svc, out, flaky, ticks = failed_then_waiting(tmp_path, rows, 12.0, auto_retrain=True)
    person = out.retrain[0].request_id
    flaky.up = True
    svc.log_clock[("acme", "fraud")] = drift().detected_at
    svc.on_drift(drift())
    svc.wait_idle()
    assert [m.version for m in out.models] == ["r1"]
    ticks.now += 3600.0
    svc.wait_idle()
    assert out.statuses().count(RetrainStatus.TRAINING) == 2
    assert [m.version for m in out.models] == ["r1"] and svc.checks[
        ("acme", "fraud")
    ].version == "r1"
    last = out.retrain[-1]
    assert (last.request_id, last.status) == (person, RetrainStatus.REJECTED)
    assert last.reason.startswith("cooldown")
    assert svc.state.last_training[("acme", "fraud")] == drift().detected_at
    stale = replace(out.retrain[0], event_time=T0)  # an older training applied later
    svc.state.apply(stale)
    assert svc.state.last_training[("acme", "fraud")] == drift().detected_at


def test_a_request_trained_again_after_a_wait_is_promoted_at_the_time_it_trains(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Carried on (and retried after an interruption at a start), a request trained on the
    data and was promoted at the times of its first attempt: its post-deploy watch was over
    at once ("served no traffic to check") and the cooldown short. Now both are at the
    model's log clock when it trains again; the request id stays."""
    svc, out, flaky, ticks = failed_then_waiting(tmp_path, rows, 13.0)
    now = T0 + 19.9 * DAY
    svc.log_clock[("acme", "fraud")] = now
    flaky.up = True
    ticks.now += 3600.0
    svc.wait_idle()
    training, promoted = out.retrain[2:]
    assert (training.status, promoted.status) == (RetrainStatus.TRAINING, RetrainStatus.PROMOTED)
    assert training.request_id == out.retrain[0].request_id
    assert training.event_time == now and promoted.details["promoted_at"] == now
    moved = DriftEvent.from_dict(promoted.details["drift"])
    assert (moved.detected_at, moved.window_start, moved.window_end) == (now, now, now)
    assert svc.checks[("acme", "fraud")].promoted_at == now
    assert svc.state.last_training[("acme", "fraud")] == now
    # Interrupted while training, retried at a start that knows the model's log clock.
    crashed, out2 = service(tmp_path / "b", rows, auto_retrain=True)
    crashed.trainer = lambda *_: (_ for _ in ()).throw(SystemExit("crashed"))
    with pytest.raises(SystemExit):
        crashed.on_drift(drift())
        crashed.wait_idle()
    crashed.close()
    again, out3 = service(tmp_path / "b", rows, auto_retrain=True)
    again.log_clock[("acme", "fraud")] = drift().detected_at + 0.3 * DAY
    again.replay(out2.retrain, [])
    again.wait_idle()
    assert out3.statuses() == [RetrainStatus.TRAINING, RetrainStatus.PROMOTED]
    assert out3.retrain[-1].details["promoted_at"] == drift().detected_at + 0.3 * DAY


def test_with_the_flag_off_for_everyone_a_waiting_request_is_not_started(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """The runbook's stop (auto-retrain off for everyone): "requests already queued will
    not start". A person's request left waiting was started by its timed retry all the same.
    It waits, at a start too, and is tried at the first poll once the flag is on again."""
    svc, out, flaky, ticks = waiting_on_data(tmp_path, rows, auto_retrain=True)
    off = {"auto_retrain": False}
    svc.on_control("flag:global", off)
    flaky.up = True
    ticks.now += 3600.0
    svc.poll()
    assert flaky.reads == 1 and out.statuses() == [RetrainStatus.WAITING]
    again, out2 = service(tmp_path / "b", rows, auto_retrain=True)
    again.data = flaky
    again.replay(out.retrain, [("retrain:api-5", ASK), ("flag:global", off)])
    again.poll()
    assert flaky.reads == 1 and out2.retrain == []
    svc.on_control("flag:global", {"auto_retrain": True})
    svc.wait_idle()
    assert out.statuses() == [RetrainStatus.WAITING, RetrainStatus.TRAINING,
                              RetrainStatus.PROMOTED]  # fmt: skip


def test_a_poll_tries_one_waiting_request_and_the_others_of_its_model_wait_with_it(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Ten people's requests of one model waiting on its data were each tried in the same
    poll: ten reads of up to 30 days, each up to two minutes, in the consumer's loop. One is
    tried; the others of the model wait with it, and take their turn once it is decided."""
    svc, out, flaky, ticks = waiting_on_data(tmp_path, rows)
    for i in range(4):
        svc.on_control(f"retrain:more-{i}", ASK)
    assert flaky.reads == 5 and out.statuses() == [RetrainStatus.WAITING] * 5
    for _ in range(3):
        ticks.now += 3600.0
        before = flaky.reads
        svc.poll()
        svc.poll()
        assert flaky.reads == before + 1
    flaky.up = True
    for _ in range(10):
        ticks.now += 3600.0
        svc.wait_idle()
    assert out.statuses().count(RetrainStatus.PROMOTED) == 1
    assert out.statuses().count(RetrainStatus.REJECTED) == 4


def test_a_start_tries_the_waiting_requests_one_a_poll(
    tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    """Review: at a start, every person's request left waiting was tried in the replay at
    once (a data read each, each blocking with the broker down). They are due now in the
    timed retry: a poll tries one."""
    svc, out, flaky, ticks = waiting_on_data(tmp_path, rows)
    for i in range(3):
        svc.on_control(f"retrain:more-{i}", ASK)
    assert out.statuses() == [RetrainStatus.WAITING] * 4
    again, out2 = service(tmp_path / "b", rows)
    again.data = flaky
    again.monotonic = ticks
    again.log_clock[("acme", "fraud")] = svc.log_clock[("acme", "fraud")]
    controls = [("retrain:api-5", ASK)] + [(f"retrain:more-{i}", ASK) for i in range(3)]
    before = flaky.reads
    again.replay(out.retrain, controls)
    assert flaky.reads == before  # none read in the replay
    again.poll()
    assert flaky.reads == before + 1
    flaky.up = True
    for _ in range(10):
        ticks.now += 3600.0
        again.wait_idle()
    assert out2.statuses().count(RetrainStatus.PROMOTED) == 1
