"""The retrain consumer's logic: decide, train, validate, promote, watch, roll back.

No Kafka here: messages come in through ``on_*`` methods and go out through a
:class:`Publisher`; training data comes from a :class:`TrainingData`. ``retrain/worker.py``
wires these to Kafka; tests wire them to lists. Training runs in a child process with time
and memory limits (``retrain.training.train_with_limits``), driven from a thread so the
consumer keeps reading (a flag switched off, an approval) while a model trains.

Crash safety: every step is published to ``retrain-events`` *before* the next one starts, and
the state is rebuilt from that topic at start (:meth:`RetrainService.replay`). A request found
``training`` at start was interrupted: it is retried once (attempt 2), then ``failed``. The
registry writes versions atomically and is idempotent per request; a request interrupted
after its version was registered is finished with that version, not trained again, and a crash
between activating, announcing (``model-events``) and recording ``promoted`` repeats the
missing steps and nothing else (a repeated model event carries the same request id).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from retrain.policy import (
    Action,
    RequestState,
    RetrainPolicy,
    RetrainState,
    Serving,
    decide,
    decide_manual,
    manual_drift,
    request_id,
)
from retrain.registry import ModelRegistry, ModelVersion, RegistryError, importances_of
from retrain.training import Dataset, TrainedModel, TrainingFailed, TrainingLimits
from retrain.training import train_with_limits as default_trainer
from retrain.validation import (
    GatePolicy,
    PostDeployCheck,
    PostDeployPolicy,
    Verdict,
    gate,
    holdout_metrics,
)
from schemas import (
    AUTO_ROLLBACK,
    MANUAL_ROLLBACK,
    DriftEvent,
    DriftKind,
    ModelAction,
    ModelEvent,
    RetrainEvent,
    RetrainStatus,
    Severity,
    parse_timestamp,
)
from schemas.alerts import ROLLBACK_REFUSED, SERVING_MISMATCH, Alert, AlertKind, alert_id
from streams.config import DAY

log = logging.getLogger(__name__)

STEPS = ("decided", "trained", "validated", "registered", "activated", "announced", "promoted",
         "watching")  # fmt: skip
"""A request's steps, in order, as :attr:`RetrainService.step` names them."""
MAX_ATTEMPTS = 2
"""A request interrupted (crash) or failed (error, timeout) is tried once more, then failed."""
RETRY_MAX_SECONDS = 900.0
"""The longest wait between tries of a person's waiting request (the first, if longer)."""
RESUME_FIGURES = frozenset({"champion", "trained_until"})
"""What a registered version keeps beside it so that a request interrupted after registering
it is finished without reading its training data again."""

Trainer = Callable[[str, Dataset, TrainingLimits, float, int], TrainedModel]


class Publisher(Protocol):
    def retrain_event(self, event: RetrainEvent) -> None: ...
    def model_event(self, event: ModelEvent) -> None: ...
    def alert(self, alert: Alert) -> None:
        """Onto ``alerts`` (what people must hear of and no other topic tells)."""


class TrainingData(Protocol):
    def rows(self, tenant: str, model: str, start: float, end: float) -> list[dict[str, Any]]:
        """``labeled-predictions`` rows of (tenant, model) predicted in [start, end]."""
        ...


@dataclass(frozen=True)
class RetrainConfig:
    policy: RetrainPolicy = field(default_factory=RetrainPolicy)
    gate: GatePolicy = field(default_factory=GatePolicy)
    post_deploy: PostDeployPolicy = field(default_factory=PostDeployPolicy)
    limits: TrainingLimits = field(default_factory=TrainingLimits)
    training_days: float = 30.0
    """Training data: labelled predictions of this many days (event time) up to the drift."""
    validation_share: float = 0.2
    """The newest share of them is the holdout for the challenger *and* the champion."""
    seed: int = 0
    retry_seconds: float = 60.0
    """Wait before a person's request left waiting (its training data could not be read) is
    tried again; it doubles each try, up to :data:`RETRY_MAX_SECONDS`. 0: only at a start."""


@dataclass
class _Job:
    drift: DriftEvent
    attempt: int
    data: Dataset
    future: Future[TrainedModel] | None = None
    started: float = 0.0

    @property
    def request_id(self) -> str:
        """The id its drift maps to: derived, not stored beside the drift, so that no
        ``replace`` of the drift can make the two disagree."""
        return request_id(self.drift)


class RetrainService:
    def __init__(
        self,
        config: RetrainConfig,
        registry: ModelRegistry,
        publisher: Publisher,
        data: TrainingData,
        trainer: Trainer | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = registry
        self.publisher = publisher
        self.data = data
        self.trainer: Trainer = trainer or _limited_trainer
        self.clock = clock
        self.monotonic = monotonic
        """Times the retries of people's waiting requests (a wall clock set back stalls none)."""
        self.state = RetrainState()
        self.checks: dict[tuple[str, str], PostDeployCheck] = {}
        self.log_clock: dict[tuple[str, str], float] = {}
        self._told: set[str] = set()
        """Ids of the serving-mismatch alerts published (:meth:`_tell_still_serving`)."""
        self._queue: deque[_Job] = deque()
        self._job: _Job | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training")
        self._last: dict[str, tuple[RetrainStatus, str]] = {}
        self._retries: dict[str, tuple[float, float]] = {}
        """People's requests left waiting, by control id: when to try each again
        (:attr:`monotonic`) and the wait that led there (:meth:`_manual`). Not kept across
        a restart: :meth:`replay` makes each due at once (tried one a poll), then waits from
        the first wait."""
        self._retrying = False
        self.step: Callable[[str], None] = lambda _name: None
        """Called at each step of a request (:data:`STEPS`): the fault tests' crash hook."""

    # ------------------------------------------------------------------ start

    def replay(
        self, events: Iterable[RetrainEvent], controls: Iterable[tuple[str, dict[str, Any]]]
    ) -> None:
        """Rebuild the state from ``retrain-events`` and ``retrain-control``, then resume what
        a crash interrupted: trainings (retried once) and post-deploy checks."""
        promoted: dict[str, RetrainEvent] = {}
        for key, value in controls:
            self.state.control(key, value)
        for event in events:
            self.state.apply(event)
            self._last[event.request_id] = (event.status, event.reason)
            if event.status is RetrainStatus.PROMOTED:
                promoted[event.request_id] = event
            elif event.status in (RetrainStatus.VALIDATED, RetrainStatus.ROLLED_BACK):
                promoted.pop(event.request_id, None)
        for event in promoted.values():
            self._watch(event)
        for req in list(self.state.requests.values()):
            if req.status is not RetrainStatus.TRAINING or req.drift is None:
                continue
            drift = DriftEvent.from_dict(dict(req.drift))
            if req.attempts >= MAX_ATTEMPTS and self._registered(drift) is None:
                self._publish(drift, RetrainStatus.FAILED, "interrupted twice", req.attempts)
            else:
                log.warning("request %s was interrupted while training: retrying", req.request_id)
                # At the model's log clock if known (a watched model's labels were read
                # above): the wall clock would read no data in a replay of past traffic.
                now = self.log_clock.get((drift.tenant, drift.model), drift.detected_at)
                self._start(self._refreshed(drift, now), attempt=req.attempts + 1,
                            reason="retry after an interruption")  # fmt: skip
        for rid in list(self.state.manual):
            # Asked for while this worker was down (or before it decided), or left waiting;
            # one whose retry above has just failed to read its data waits for its turn. One
            # left waiting is due now in the timed retry: :meth:`poll` tries one at a time
            # (tried here, every one read its data at once, each blocking with the broker
            # down), and none while the flag is off for everyone.
            if rid in self._retries:
                continue
            asked = self._manual_request(rid)
            if asked is not None and asked.status is RetrainStatus.WAITING:
                self._retries[rid] = (self.monotonic(), 0.0)
                continue
            self._manual(rid)

    # ------------------------------------------------------------------ inputs

    def on_drift(self, drift: DriftEvent) -> None:
        key = (drift.tenant, drift.model)
        check = self.checks.get(key)
        watched = (
            check is not None
            and drift.kind is DriftKind.PERFORMANCE
            and drift.model_version == check.version
            and check.window_start - DAY <= drift.window_start < check.window_end
            and self._still_active(check)
        )
        if watched and check is not None and drift.extra.get("estimated"):
            # A label-free warning on the new version: on record (it shows in the check's
            # verdict); only its labels can decide a rollback.
            check.warnings.append(f"{drift.test} on window {drift.window_start:.0f}")
            log.warning("%s/%s %s: label-free warning %s", *key, check.version, drift.test)
        elif watched and check is not None:
            self._rollback(
                check, f"performance drift on {check.version}: {drift.test}", drift.detected_at
            )
            return
        serving = self._serving(drift)
        if serving is not None and serving.still_serves(drift):
            self._tell_still_serving(drift, serving)  # whatever became of its request
        req = self.state.requests.get(request_id(drift))
        if req is not None and req.status.terminal:
            return  # this incident's request is over (the incident still re-emits daily)
        if req is not None and req.status is RetrainStatus.TRAINING:
            # Its training decides it. Published here, "ignored: already training" took the
            # request out of training: a crash then left its version active, unannounced and
            # unwatched, and a second incident could start a training beside it.
            return
        decision = decide(drift, self.config.policy, self.state, serving=serving)
        if decision.action is Action.RETRAIN:
            self._start(drift, attempt=1, reason=decision.reason)
            return
        self._publish(drift, decision.status, decision.reason, 0)

    def _serving(self, drift: DriftEvent) -> Serving | None:
        """What the registry says of ``drift``, if it is of a version the registry knows and
        has replaced (:class:`Serving`); None when it is of the serving model (the active
        version, or one deployed elsewhere) or the registry cannot say."""
        if drift.model_version is None:
            return None
        try:
            active = self.registry.active(drift.tenant, drift.model)
            if active is None or active.version == drift.model_version:
                return None
            try:
                self.registry.get(drift.tenant, drift.model, drift.model_version)
            except RegistryError:
                return None  # a version the registry does not know: deployed elsewhere
            switch = self.registry.last_switch(drift.tenant, drift.model) or {}
            at = switch.get("at") if switch.get("version") == active.version else None
            since = None if at is None else float(at)
        except (RegistryError, OSError, ValueError, TypeError) as exc:
            # The registry unreadable: the drift is decided as before (a registry fault must
            # not stop the worker on every drift event, as an uncaught one would).
            log.warning("%s/%s: could not tell whether %s was replaced: %s", drift.tenant,
                        drift.model, drift.model_version, exc)  # fmt: skip
            return None
        return Serving(active.version, since)

    def _tell_still_serving(self, drift: DriftEvent, serving: Serving) -> None:
        """A replaced version still serving (:meth:`Serving.still_serves`): an alert, once
        per switch and version (a restart may say it once more; the notifier sends an alert
        id once)."""
        tenant, model, old = drift.tenant, drift.model, drift.model_version
        aid = alert_id(f"{tenant}\x1f{model}\x1f{old}\x1f{serving.active}\x1f{serving.since}",
                       SERVING_MISMATCH)  # fmt: skip
        if aid in self._told:
            return
        self._told.add(aid)
        reason = serving.verdict(drift).reason
        log.warning("%s/%s: %s", tenant, model, reason)
        self.publisher.alert(Alert(
            alert_id=aid, kind=AlertKind.MODEL, change=SERVING_MISMATCH, tenant=tenant,
            model=model, severity=Severity.HIGH,
            title=f"[HIGH] {tenant}/{model}: {old} still serves, the registry says "
                  f"{serving.active}",
            text=f"*{tenant}/{model}* {reason}. Its drift is not acted on meanwhile.",
            event_time=drift.detected_at, created_at=self.clock(), model_version=old,
            retrain={"version": serving.active, "previous": old, "reason": reason,
                     "drift_id": drift.drift_id},
        ))  # fmt: skip

    def on_control(self, key: str, value: dict[str, Any]) -> None:
        self.state.control(key, value)
        if key.startswith("flag:"):
            log.info("flag %s = %s", key, value)
            return
        if key.startswith("retrain:"):
            self._manual(key.removeprefix("retrain:"))
            return
        if key.startswith("rollback:") and value.get("action") == "rollback":
            self._manual_rollback(value)
            return
        if not key.startswith("approval:"):
            return
        rid = key.removeprefix("approval:")
        req = self.state.requests.get(rid)
        if req is None or req.status is not RetrainStatus.AWAITING_APPROVAL or req.drift is None:
            # Said, not silently dropped: a mistyped id, or a request decided already.
            why = "no such request" if req is None else f"it is {req.status}"
            log.warning("%s of retrain request %s ignored: %s",
                        value.get("decision", "approval"), rid, why)  # fmt: skip
            return
        drift = DriftEvent.from_dict(dict(req.drift))
        who = str(value.get("by", "someone"))
        if value.get("decision") == "reject":
            self._publish(drift, RetrainStatus.REJECTED, f"rejected by {who}", 0)
            return
        serving = self._serving(drift)
        if serving is not None:  # asked about a version the registry has replaced
            why = serving.verdict(drift).reason
            self._publish(drift, RetrainStatus.REJECTED, f"approved by {who}, but {why}", 0)
            return
        self._publish(drift, RetrainStatus.APPROVED, f"approved by {who}", 0)
        decision = decide(drift, self.config.policy, self.state)
        if decision.action is Action.RETRAIN:
            self._start(drift, attempt=1, reason=f"approved by {who}")
        else:
            self._publish(drift, decision.status, decision.reason, 0)

    def _manual(self, rid: str) -> None:
        """A person asked for a retraining (API ``POST .../retrain``): same safeguards. One
        left waiting (its training data could not be read) is tried again by :meth:`poll`,
        the wait doubling up to :data:`RETRY_MAX_SECONDS`, and at every start."""
        rid_of_request = self._ask(rid)
        req = None if rid_of_request is None else self.state.requests.get(rid_of_request)
        if req is None or req.status is not RetrainStatus.WAITING:
            self._retries.pop(rid, None)
        elif rid not in self._retries or self._retries[rid][0] <= self.monotonic():
            self._wait_again(rid)  # tried now and still waiting: the next, longer wait

    def _wait_again(self, rid: str) -> None:
        """Schedule the next try of the person's request ``rid``: the first wait, then twice
        the last one, up to the bound (a broker down for hours is tried every 15 minutes,
        not every minute: each try may read up to 30 days of data)."""
        first = self.config.retry_seconds
        if first <= 0:
            self._retries.pop(rid, None)
            return
        _, last = self._retries.get(rid, (0.0, 0.0))
        wait = first if last <= 0 else min(2 * last, max(first, RETRY_MAX_SECONDS))
        self._retries[rid] = (self.monotonic() + wait, wait)

    def _ask(self, rid: str) -> str | None:
        """Decide (or carry on with) the person's request ``rid``; its request id."""
        value = self.state.manual.get(rid)
        if value is None:
            return None
        tenant, model = str(value.get("tenant", "")), str(value.get("model", ""))
        if not tenant or not model:
            return None
        active = self.registry.active(tenant, model)
        event_time = self._now(tenant, model)
        # No active version in the registry (no training yet): the version serving is read
        # off the training data (:meth:`_start`), never made up (a "v1" that never existed
        # became the rollback target, found by review).
        drift = manual_drift(
            rid, tenant, model, active.version if active is not None else "", event_time,
            str(value.get("reason", "")), str(value.get("by", "someone")),
        )  # fmt: skip
        req = self.state.requests.get(request_id(drift))
        if req is not None and req.status is not RetrainStatus.WAITING:
            return req.request_id  # already decided (a replayed control message)
        if (
            req is not None
            and req.attempts
            and req.drift is not None
            and self.state.last_request.get((tenant, model)) == req.request_id
        ):
            # Decided and trained once already, then interrupted or failed, and the retry
            # could not read its data: that retry, carried on. Decided anew, the cooldown its
            # own first training set rejected it. Not when another request of the model has
            # trained since (and maybe been promoted): carried on, it trained on its old data,
            # was gated against the old champion and replaced that request's version; it is
            # decided anew (the cooldown of that training, the request in flight).
            self._carry_on(req)
            return req.request_id
        self._start(drift, attempt=1, reason=f"asked by {value.get('by', 'someone')}")
        return request_id(drift)

    def _carry_on(self, req: RequestState) -> None:
        """Start the next attempt of a decided request left waiting (:meth:`_ask`), unless
        another request of the model is in flight now: then one training of a model at a
        time refuses it, as it would refuse a new request."""
        # At the time it carries on, not its first attempt's: promoted with those, its
        # post-deploy watch ended at once and the cooldown was cut short.
        drift = DriftEvent.from_dict(dict(req.drift or {}))
        drift = self._refreshed(drift, self._now(drift.tenant, drift.model))
        busy = self.state.in_flight(drift.tenant, drift.model)
        if busy is not None and busy.request_id != req.request_id:
            why = f"request {busy.request_id[:8]} for this model is {busy.status.value}"
            self._publish(drift, RetrainStatus.REJECTED, why, req.attempts)
            return
        if req.attempts >= MAX_ATTEMPTS and self._registered(drift) is None:
            self._publish(drift, RetrainStatus.FAILED, "tried twice", req.attempts)
            return
        self._start(drift, attempt=req.attempts + 1, reason="retry after its data could be read")

    def _retry_waiting(self) -> None:
        """Try again one of the people's waiting requests whose wait is over (:meth:`_manual`),
        the one due first: each try may read up to 30 days of data in the consumer's loop
        (every due request at once: ten of one model, ten reads of up to two minutes each).
        The others of its model, if it still waits, wait with it; the rest, for later polls."""
        now = self.monotonic()
        due = sorted((at, rid) for rid, (at, _) in self._retries.items() if at <= now)
        if not due:
            return
        rid = due[0][1]
        try:
            self._manual(rid)
        except (RegistryError, OSError, ValueError) as exc:
            # The registry unreadable: said, and tried again after the next wait (raised
            # here, it stopped the worker's loop).
            log.warning("retrain request %s: could not try it again: %s", rid, exc)
            self._wait_again(rid)
        still = self._retries.get(rid)
        if still is None:
            return
        model = self._model_of(rid)
        for _, other in due[1:]:
            if other in self._retries and self._model_of(other) == model:
                at, wait = self._retries[other]
                self._retries[other] = (max(at, still[0]), wait)

    def _model_of(self, rid: str) -> tuple[str, str]:
        value = self.state.manual.get(rid, {})
        return str(value.get("tenant", "")), str(value.get("model", ""))

    def _manual_request(self, rid: str) -> RequestState | None:
        """The request of the person's ask ``rid``, if decided (its id is the drift id's)."""
        tenant, model = self._model_of(rid)
        drift = manual_drift(rid, tenant, model, "", 0.0, "", "")
        return self.state.requests.get(request_id(drift))

    def _now(self, tenant: str, model: str) -> float:
        """The time decisions on (tenant, model) are taken at: its log clock (the newest
        outcome time seen), else the wall clock."""
        return self.log_clock.get((tenant, model), self.clock())

    @staticmethod
    def _refreshed(drift: DriftEvent, now: float) -> DriftEvent:
        """``drift`` moved to ``now`` (its detection time and its window, by the same amount;
        never back), for a request that trains again after a wait: its data end there, and
        its promotion and post-deploy watch start there. The drift id (the request id) stays."""
        shift = now - drift.detected_at
        if shift <= 0:
            return drift
        return replace(drift, detected_at=drift.detected_at + shift,
                       window_start=drift.window_start + shift,
                       window_end=drift.window_end + shift)  # fmt: skip

    def _manual_rollback(self, value: dict[str, Any]) -> None:
        """A person asked for a rollback (API ``POST .../rollback``). One that cannot be done
        (no such version, nothing to roll back to, the registry failing) is refused with an
        alert: the API said "accepted", and a rollback that silently did nothing mid-incident
        is worse than none."""
        tenant, model = str(value.get("tenant", "")), str(value.get("model", ""))
        who = str(value.get("by", "someone"))
        target = value.get("to")
        rid = value.get("request_id")
        reason = f"{MANUAL_ROLLBACK}{who}: {value.get('reason', '')}"
        try:
            done = None if rid is None else self.registry.switch_for(tenant, model, str(rid))
            if done is not None:
                # Read again (a restart before the commit): switched already, not again
                # (without ``to`` it would flip back) nor refused (already active); announced
                # again, as the crash may have come before (serving dedupes by request id).
                log.info("rollback %s of %s/%s: switched already; announced again", rid,
                         tenant, model)  # fmt: skip
                self._announce_rollback(value, str(done["version"]), done.get("previous"))
                return
            current = self.registry.active(tenant, model)
            if target is None:
                prev = self.registry.previous_active(tenant, model)
                target = None if prev is None else prev.version
            if current is None:
                why = f"{tenant}/{model} has no active version in the registry"
            elif target is None:
                why = f"{current.version} has no previous version to roll back to"
            elif str(target) == current.version:
                why = f"{target} is already the active version"
            else:
                self.registry.get(tenant, model, str(target))  # RegistryError: no such version
                why = ""
        except (RegistryError, OSError, ValueError) as exc:
            current, why = None, str(exc)
        if why:
            self._refuse_rollback(value, target, why)
            return
        assert current is not None and target is not None
        try:
            self.registry.activate(
                tenant, model, str(target), reason=reason,
                request_id=None if rid is None else str(rid),
            )  # fmt: skip
        except Exception as exc:
            self._refuse_rollback(value, target, f"the registry switch failed: {exc}")
            return
        self._announce_rollback(value, str(target), current.version)

    def _announce_rollback(self, value: dict[str, Any], target: str, previous: object) -> None:
        """A person's rollback, switched in the registry: on ``model-events`` (serving loads
        ``target``), and the request of the version under its post-deploy check ends rolled
        back, by a person."""
        tenant, model = str(value.get("tenant", "")), str(value.get("model", ""))
        who = str(value.get("by", "someone"))
        reason = f"{MANUAL_ROLLBACK}{who}: {value.get('reason', '')}"
        gone = None if previous is None else str(previous)
        check = self.checks.pop((tenant, model), None)
        self.publisher.model_event(
            ModelEvent(
                ModelAction.ROLLED_BACK, tenant, model, target, gone, reason, self.clock(),
                self.log_clock.get((tenant, model), self.clock()), value.get("request_id"),
                feature_importances=self._importances(tenant, model, target),
            )
        )  # fmt: skip
        req = None if check is None or check.version != gone else self._request_of(check)
        if req is not None:
            self._publish_raw(req, RetrainStatus.ROLLED_BACK, reason, {"manual": True, "by": who})
        log.warning("rolled back %s/%s %s -> %s: %s", tenant, model, gone, target, reason)

    def _refuse_rollback(self, value: dict[str, Any], target: object, why: str) -> None:
        """A person's rollback that was not done, said where people hear it (an alert)."""
        tenant, model = str(value.get("tenant", "")), str(value.get("model", ""))
        who, rid = str(value.get("by", "someone")), value.get("request_id")
        log.warning("rollback of %s/%s asked by %s refused: %s", tenant, model, who, why)
        to = "the previous version" if target is None else str(target)
        at = self.clock()
        self.publisher.alert(Alert(
            alert_id=alert_id(f"{tenant}\x1f{model}\x1f{rid or at}", ROLLBACK_REFUSED),
            kind=AlertKind.MODEL, change=ROLLBACK_REFUSED, tenant=tenant, model=model,
            severity=Severity.HIGH,
            title=f"[HIGH] {tenant}/{model}: rollback to {to} refused",
            text=f"*{tenant}/{model}* rollback to `{to}` asked by {who} was not done: {why}. "
                 "The active version is unchanged.",
            event_time=self.log_clock.get((tenant, model), at), created_at=at,
            retrain={"request_id": rid, "version": None if target is None else str(target),
                     "reason": why, "by": who},
        ))  # fmt: skip

    def on_labeled(self, row: dict[str, Any]) -> None:
        """A row of ``labeled-predictions``: evidence for a post-deploy check."""
        key = (str(row.get("tenant")), str(row.get("model")))
        check = self.checks.get(key)
        try:
            outcome_ts = parse_timestamp(row["outcome_timestamp"], "outcome_timestamp")
        except (KeyError, ValueError):
            return
        self.log_clock[key] = max(self.log_clock.get(key, outcome_ts), outcome_ts)
        if check is None:
            return
        try:
            check.observe(row)
        except (KeyError, ValueError, TypeError):
            return
        self._judge(check)

    def poll(self) -> bool:
        """Advance training: finish a done job, start the next queued one. True if busy."""
        job = self._job
        if job is not None and job.future is not None and job.future.done():
            self._job = None
            self._finish(job)
        if self._job is None and self._queue:
            nxt = self._queue.popleft()
            manual = bool(nxt.drift.extra.get("manual"))  # a person asked: no flag needed
            if not manual and not self.state.auto_retrain(nxt.drift.tenant, self.config.policy):
                self._publish(
                    nxt.drift, RetrainStatus.WAITING, "auto-retrain was switched off", nxt.attempt
                )
            else:
                self._run(nxt)
        if self._retries and not self._retrying and self.state.global_flag is not False:
            # With the flag off for everyone (the runbook's stop), a person's request left
            # waiting is not started: it waits, and is tried at the first poll with it on.
            self._retrying = True  # not again from the poll a retry's start calls
            try:
                self._retry_waiting()
            finally:
                self._retrying = False
        return self._job is not None or bool(self._queue)

    def wait_idle(self, timeout: float = 600.0) -> None:
        """Block until no training is running or queued (CLI one-shots and tests)."""
        deadline = time.monotonic() + timeout
        while self.poll():
            if time.monotonic() > deadline:
                raise TimeoutError("training still running")
            time.sleep(0.05)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ training

    def _start(self, drift: DriftEvent, attempt: int, reason: str) -> None:
        cfg = self.config
        registered = self._registered(drift) if attempt > 1 else None
        if registered is not None and registered.extra.keys() >= RESUME_FIGURES:
            # Interrupted after its version was validated and registered: finished with the
            # figures recorded beside it, reading nothing (a failed read here once left the
            # version active and unwatched, the request "waiting" for good).
            self._resume_registered(drift, attempt, None, registered)
            return
        end = drift.detected_at
        try:
            rows = self.data.rows(drift.tenant, drift.model, end - cfg.training_days * DAY, end)
        except Exception as exc:  # Kafka slow or down: never train on a partial read
            log.warning("could not read the training data: %r", exc)
            self._publish(
                drift, RetrainStatus.WAITING, f"could not read the training data: {exc}"[:300],
                attempt,
            )  # fmt: skip
            return
        data = Dataset.from_rows(rows)
        if not drift.model_version and rows:  # a person's request, no version registered
            drift = replace(drift, model_version=_newest_version(rows))
        if registered is not None:  # registered by a version that kept no figures beside it
            # Interrupted after its version was validated and registered: finish with it.
            rid, version = request_id(drift)[:8], registered.version
            log.warning("request %s: %s was registered before the interruption; finishing "
                        "without training again", rid, version)  # fmt: skip
            self._resume_registered(drift, attempt, data, registered)
            return
        since = self.state.trained_until.get((drift.tenant, drift.model), float("-inf"))
        new_labels = int((data.timestamps > since).sum()) if len(data) else 0
        if attempt == 1:
            decide_fn = decide_manual if drift.extra.get("manual") else decide
            decision = decide_fn(drift, cfg.policy, self.state, new_labels=new_labels)
            if decision.action is not Action.RETRAIN:
                self._publish(drift, decision.status, decision.reason, 0)
                return
        self._publish(
            drift,
            RetrainStatus.TRAINING,
            f"{reason}; {len(data)} labelled rows ({new_labels} new) from "
            f"{cfg.training_days:g} days",
            attempt,
            rows=len(data),
        )
        self.step("decided")
        self._queue.append(_Job(drift, attempt, data))
        self.poll()

    def _run(self, job: _Job) -> None:
        cfg = self.config
        job.started = time.perf_counter()
        job.future = self._executor.submit(
            self.trainer, job.drift.model, job.data, cfg.limits, cfg.validation_share, cfg.seed
        )
        self._job = job

    def _finish(self, job: _Job) -> None:
        drift, cfg = job.drift, self.config
        assert job.future is not None
        seconds = time.perf_counter() - job.started
        try:
            trained = job.future.result()
        except TrainingFailed as exc:
            if job.attempt < MAX_ATTEMPTS:
                self._start(drift, job.attempt + 1, f"retry after {exc.reason}: {exc}")
            else:
                self._publish(drift, RetrainStatus.FAILED, f"{exc.reason}: {exc}", job.attempt)
            return
        except Exception as exc:  # a bug in training must not kill the consumer
            log.exception("training crashed")
            self._publish(drift, RetrainStatus.FAILED, f"error: {exc!r}"[:500], job.attempt)
            return
        self.step("trained")
        _, holdout = job.data.split_by_time(cfg.validation_share)
        champion = holdout_metrics(holdout.scores, holdout.labels)
        challenger = {k: float(v) for k, v in trained.metrics.items()}
        verdict = gate(challenger, champion, cfg.gate)
        figures = {"challenger": challenger, "champion": champion, "train_seconds": seconds}
        if not verdict.passed:
            self._publish(
                drift, RetrainStatus.CHALLENGER_REJECTED, verdict.reason, job.attempt, **figures
            )
            return
        tenant, model = drift.tenant, drift.model
        if not drift.extra.get("manual") and not self.state.auto_retrain(tenant, cfg.policy):
            self._publish(
                drift, RetrainStatus.WAITING,
                "auto-retrain was switched off during training: not promoted", job.attempt,
                **figures,
            )  # fmt: skip
            return
        self.step("validated")
        registered = self._registered(drift)
        if registered is not None:
            # Registered for this request already, by a run this state does not know of (a
            # second worker on the registry, a history lost): that version is the one
            # promoted, so its own figures are the ones recorded, as :meth:`_start` does (this
            # training's were recorded beside it, and its data end moved the new-label count).
            log.warning("request %s: %s was registered for it already; promoting that one",
                        job.request_id[:8], registered.version)  # fmt: skip
            self._resume_registered(drift, job.attempt, job.data, registered)
            return
        active = self.registry.active(tenant, model)
        previous = active.version if active is not None else drift.model_version
        if active is None:
            self._ensure_external(tenant, model, previous)
        version = self.registry.register(
            tenant,
            model,
            trained,
            parent=previous,
            training_window=trained.train_window,
            rows=len(job.data),
            metrics=challenger,
            request_id=job.request_id,
            extra={
                "champion": champion,
                "trained_until": _trained_until(job.data, drift),
                **(
                    {"feature_importances": trained.importances}
                    if getattr(trained, "importances", None)
                    else {}
                ),
            },
        )
        self._promote(
            drift, job.attempt, _trained_until(job.data, drift), version, verdict.reason,
            champion, figures,
        )  # fmt: skip

    def _registered(self, drift: DriftEvent) -> ModelVersion | None:
        """The version a request's training registered (validated) before an interruption."""
        return self.registry.find_request(drift.tenant, drift.model, request_id(drift))

    def _resume_registered(
        self, drift: DriftEvent, attempt: int, data: Dataset | None, version: ModelVersion
    ) -> None:
        """Finish a request whose version passed the gate and was registered before a crash:
        activate and announce it, without training it again. Its champion figures and data
        end are those recorded beside it; ``data``'s for a version registered without them."""
        if data is None or version.extra.keys() >= RESUME_FIGURES:
            champion = {k: float(v) for k, v in dict(version.extra["champion"]).items()}
            trained_until = float(version.extra["trained_until"])
        else:
            _, holdout = data.split_by_time(self.config.validation_share)
            champion = holdout_metrics(holdout.scores, holdout.labels)
            trained_until = _trained_until(data, drift)
        figures = {"challenger": dict(version.metrics), "champion": champion, "resumed": True}
        reason = f"validated and registered before an interruption (attempt {attempt})"
        self._promote(drift, attempt, trained_until, version, reason, champion, figures)

    def _promote(
        self,
        drift: DriftEvent,
        attempt: int,
        trained_until: float,
        version: ModelVersion,
        reason: str,
        champion: dict[str, float],
        figures: dict[str, Any],
    ) -> None:
        """Activate, announce on ``model-events``, then record ``promoted``: a crash at any
        point repeats what is missing (activation is idempotent; a repeated model event has
        the same request id), never a training."""
        tenant, model, rid = drift.tenant, drift.model, request_id(drift)
        # the predecessor it was trained to replace, even when resumed after activating
        previous = version.parent or drift.model_version
        self.step("registered")
        self.registry.activate(tenant, model, version.version, reason=reason)
        self.step("activated")
        self.publisher.model_event(
            ModelEvent(
                ModelAction.PROMOTED,
                tenant,
                model,
                version.version,
                previous,
                reason,
                self.clock(),
                drift.detected_at,
                rid,
                dict(version.metrics),
                importances_of(version),
            )
        )
        self.step("announced")
        self._publish(
            drift,
            RetrainStatus.PROMOTED,
            f"{version.version} promoted over {previous}: {reason}",
            attempt,
            version=version.version,
            previous=previous,
            trained_until=trained_until,
            promoted_at=drift.detected_at,
            baseline=champion,
            **figures,
        )
        self._begin_watch(PostDeployCheck(
            tenant, model, version.version, previous, drift.detected_at, champion,
            self.config.post_deploy, rid,
        ))  # fmt: skip
        self.step("promoted")

    def _ensure_external(self, tenant: str, model: str, version: str) -> None:
        """The version serving before driftwatch's first training (trained elsewhere) is
        recorded so that it can be rolled back to."""
        try:
            self.registry.get(tenant, model, version)
        except RegistryError:
            self.registry.register_external(tenant, model, version)
        self.registry.activate(tenant, model, version, reason="serving before the first retrain")

    # ------------------------------------------------------------------ post-deploy

    def _watch(self, promoted: RetrainEvent) -> None:
        d = promoted.details
        check = PostDeployCheck(
            promoted.tenant,
            promoted.model,
            str(d["version"]),
            None if d.get("previous") is None else str(d["previous"]),
            float(d["promoted_at"]),
            {k: float(v) for k, v in dict(d.get("baseline") or {}).items()},
            self.config.post_deploy,
            promoted.request_id,
        )
        self._begin_watch(check)
        horizon = check.promoted_at + 30 * DAY  # serving may have switched later
        key = (promoted.tenant, promoted.model)
        for row in self.data.rows(promoted.tenant, promoted.model, check.promoted_at, horizon):
            # Read as :meth:`on_labeled` reads it: a row the check cannot use (a label that
            # is not binary, a score out of range) stopped the worker here, at every start.
            try:
                ts = parse_timestamp(row["outcome_timestamp"], "outcome_timestamp")
            except (KeyError, ValueError, TypeError):
                continue
            self.log_clock[key] = max(self.log_clock.get(key, ts), ts)
            with contextlib.suppress(KeyError, ValueError, TypeError):
                check.observe(row)

    def _last_switch(self, check: PostDeployCheck) -> dict[str, Any] | None:
        """The registry's last activation of the model, if it replaced ``check``'s version."""
        try:
            last = self.registry.last_switch(check.tenant, check.model)
        except (OSError, ValueError):
            return None
        return last if last is not None and last.get("previous") == check.version else None

    def _begin_watch(self, check: PostDeployCheck) -> None:
        """A promotion's watch begins. One still running on the model (its version replaced
        by this one, promoted again after the cooldown before its check ended) ends without
        a verdict on quality, and says so on its request: silently dropped, that request
        stayed ``promoted`` for good, its post-deploy check never told."""
        key = (check.tenant, check.model)
        old = self.checks.get(key)
        if old is not None and old.version != check.version:
            req = self._request_of(old)
            if req is not None:
                reason = f"{old.version} was replaced by {check.version} before its check ended"
                self._publish_raw(req, RetrainStatus.VALIDATED, reason, {"inconclusive": True})
        self.checks[key] = check

    def _still_active(self, check: PostDeployCheck) -> bool:
        active = self.registry.active(check.tenant, check.model)
        return active is not None and active.version == check.version

    def _judge(self, check: PostDeployCheck) -> None:
        self.step("watching")
        key = (check.tenant, check.model)
        if not self._still_active(check):
            del self.checks[key]  # rolled back by hand, or replaced: the watch is over
            req = self._request_of(check)
            if req is None:
                return
            switch = self._last_switch(check)
            why = "" if switch is None else str(switch.get("reason") or "")
            if why.startswith(MANUAL_ROLLBACK):
                # A person rolled it back outside this worker (``driftwatch rollback`` edits
                # the registry, to the predecessor or ``--to`` any version): the request ends
                # rolled back, with the registry's reason.
                by = why.removeprefix(MANUAL_ROLLBACK).split(":", 1)[0].strip() or "someone"
                self._publish_raw(req, RetrainStatus.ROLLED_BACK, why, {"manual": True, "by": by})
                return
            if switch is not None and why.startswith(AUTO_ROLLBACK):
                # This worker's own rollback, interrupted after the registry switched (a
                # restart rebuilt the watch): finish it, announcement and status.
                self._rollback(check, why.removeprefix(AUTO_ROLLBACK), self.log_clock.get(
                    key, check.promoted_at))  # fmt: skip
                return
            reason = f"{check.version} is no longer active: the watch ended"
            self._publish_raw(req, RetrainStatus.VALIDATED, reason, {"inconclusive": True})
            return
        verdict, reason, figures = check.verdict(self.log_clock.get(key, check.promoted_at))
        if verdict is Verdict.ROLLBACK:
            self._rollback(check, reason, self.log_clock.get(key, check.promoted_at), figures)
        elif verdict in (Verdict.PASSED, Verdict.INCONCLUSIVE):
            del self.checks[key]
            req = self._request_of(check)
            details: dict[str, Any] = dict(figures)
            if verdict is Verdict.INCONCLUSIVE:
                details["inconclusive"] = True
            if req is not None:
                self._publish_raw(req, RetrainStatus.VALIDATED, reason, details)

    def _rollback(
        self,
        check: PostDeployCheck,
        reason: str,
        event_time: float,
        figures: dict[str, float] | None = None,
    ) -> None:
        key = (check.tenant, check.model)
        self.checks.pop(key, None)
        target = check.previous
        if target is None:
            log.error("cannot roll back %s/%s: no previous version", *key)
            return
        self.registry.activate(check.tenant, check.model, target, reason=AUTO_ROLLBACK + reason)
        self.publisher.model_event(
            ModelEvent(
                ModelAction.ROLLED_BACK,
                check.tenant,
                check.model,
                target,
                check.version,
                reason,
                self.clock(),
                event_time,
                None,
                dict(figures or {}),
                self._importances(check.tenant, check.model, target),
            )
        )
        req = self._request_of(check)
        if req is not None:
            self._publish_raw(req, RetrainStatus.ROLLED_BACK, reason, dict(figures or {}))
        log.warning("rolled back %s/%s %s -> %s: %s", *key, check.version, target, reason)

    def _importances(self, tenant: str, model: str, version: str) -> dict[str, float]:
        """The feature importances the registry holds for ``version`` (empty: none, or an
        unknown version)."""
        try:
            return importances_of(self.registry.get(tenant, model, version))
        except (RegistryError, OSError, ValueError, KeyError):
            return {}

    def _request_of(self, check: PostDeployCheck) -> RetrainEvent | None:
        req = None if check.request_id is None else self.state.requests.get(check.request_id)
        if req is None or req.drift is None or req.status is not RetrainStatus.PROMOTED:
            return None
        drift = DriftEvent.from_dict(dict(req.drift))
        return RetrainEvent(
            req.request_id, req.tenant, req.model, req.drift_id, req.status, "",
            drift.detected_at, self.clock(), drift.model_version,
        )  # fmt: skip

    # ------------------------------------------------------------------ publishing

    def _publish(
        self, drift: DriftEvent, status: RetrainStatus, reason: str, attempt: int, **details: Any
    ) -> None:
        rid = request_id(drift)
        if self._last.get(rid) == (status, reason) and not details:
            return  # the same decision again (a redelivered DriftEvent): say it once
        details.setdefault("severity", drift.incident_severity.value)  # what approval read
        details["drift"] = drift.to_dict()
        event = RetrainEvent(
            rid, drift.tenant, drift.model, drift.drift_id, status, reason, drift.detected_at,
            self.clock(), drift.model_version, attempt, details,
        )  # fmt: skip
        self._emit(event)

    def _publish_raw(
        self, base: RetrainEvent, status: RetrainStatus, reason: str, details: dict[str, Any]
    ) -> None:
        req = self.state.requests[base.request_id]
        event = RetrainEvent(
            base.request_id, base.tenant, base.model, base.drift_id, status, reason,
            base.event_time, self.clock(), base.model_version, req.attempts,
            {**details, "drift": req.drift},
        )  # fmt: skip
        self._emit(event)

    def _emit(self, event: RetrainEvent) -> None:
        self.publisher.retrain_event(event)
        self.state.apply(event)
        self._last[event.request_id] = (event.status, event.reason)
        rid = event.drift_id.removeprefix("manual:")
        if rid != event.drift_id and rid in self.state.manual:
            # A person's request gone to waiting, by whichever path (its retry after a failed
            # training could not read the data either): tried again after the first wait.
            if self.state.requests[event.request_id].status is not RetrainStatus.WAITING:
                self._retries.pop(rid, None)
            elif rid not in self._retries:
                self._wait_again(rid)
        log.info(
            "retrain %s %s/%s %s: %s",
            event.request_id[:8], event.tenant, event.model, event.status.value, event.reason,
        )  # fmt: skip


def _limited_trainer(
    model: str, data: Dataset, limits: TrainingLimits, validation_share: float, seed: int
) -> TrainedModel:
    return default_trainer(model, data, limits, validation_share=validation_share, seed=seed)


def _trained_until(data: Dataset, drift: DriftEvent) -> float:
    """The newest prediction time in a training's data (the drift's time without any)."""
    return float(data.timestamps.max()) if len(data) else drift.detected_at


def _newest_version(rows: list[dict[str, Any]]) -> str:
    """The model version of the newest labelled prediction: the one serving now."""
    newest = max(rows, key=lambda r: parse_timestamp(r["prediction_timestamp"]))
    return str(newest.get("model_version") or "")
