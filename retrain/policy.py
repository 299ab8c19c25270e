"""When to retrain: the seed plan's safeguards as one pure function, and the state it reads.

Everything here is pure and event-sourced: :class:`RetrainState` is rebuilt by replaying the
``retrain-events`` topic (every decision the consumer ever published) and the
``retrain-control`` topic (flags and approvals), so a restarted consumer decides exactly as the
one before it, and a DriftEvent delivered twice finds its request already in flight.

A request is one per drift incident (``drift_id``): the incident re-emits its DriftEvent every
window while it lasts, so a request that had to *wait* (cooldown, too few labels, flag off) is
simply decided again on the next one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from schemas import DriftEvent, RetrainEvent, RetrainStatus, Severity, format_timestamp
from streams.config import DAY

_NAMESPACE = uuid.UUID("5d2f6a1c-3b7e-4e0a-9c8d-1f2e3a4b5c6d")


class Action(StrEnum):
    IGNORE = "ignore"
    WAIT = "wait"
    REQUEST_APPROVAL = "request_approval"
    RETRAIN = "retrain"
    REJECT = "reject"
    """A person's request the safeguards refuse (terminal: nothing re-decides it)."""


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str

    @property
    def status(self) -> RetrainStatus:
        return {
            Action.IGNORE: RetrainStatus.IGNORED,
            Action.WAIT: RetrainStatus.WAITING,
            Action.REQUEST_APPROVAL: RetrainStatus.AWAITING_APPROVAL,
            Action.RETRAIN: RetrainStatus.TRAINING,
            Action.REJECT: RetrainStatus.REJECTED,
        }[self.action]


@dataclass(frozen=True)
class RetrainPolicy:
    """The safeguards, each a setting (see ``runtime.settings``)."""

    auto_retrain: bool = False
    """The global feature flag's value until ``retrain-control`` says otherwise."""
    kinds: frozenset[str] = frozenset({"performance", "statistical"})
    """Drift kinds that may start a retraining (estimated performance never does)."""
    min_persistence: int = 7
    """Only confirmed drift that persisted this many windows acts (the seed plan's 7 days)."""
    approval_severity: Severity = Severity.CRITICAL
    """Drift this severe waits for a person (``driftwatch approve``)."""
    cooldown_days: float = 7.0
    """At most one training per (tenant, model) per this much event time."""
    min_new_labels: int = 1_000
    """Labelled rows newer than the last training's data needed before training again."""


SWITCH_GRACE: Final = DAY
"""How long serving may take to load a promoted version (it switches when it hears of the
promotion on ``model-events``): drift of the replaced version on traffic that began later than
this after the switch says serving never switched."""


@dataclass(frozen=True)
class Serving:
    """What the registry says of a drift's model: the ``active`` version, and (``since``) when
    it last became active (the registry's switch: a promotion, or a rollback), if known. Only
    made for a drift of another version the registry knows (one it does not know was
    deployed elsewhere and is taken as serving)."""

    active: str
    since: float | None = None

    def still_serves(self, drift: DriftEvent) -> bool:
        """Did ``drift``'s version serve traffic a day or more after the switch? Then serving
        never loaded the active version (``model-events`` lost, a deploy that pins it): the
        registry and serving disagree, which people must hear of.

        >>> from schemas import DriftKind
        >>> d = DriftEvent("d", DriftKind.PERFORMANCE, "a", "m", "v1", None, "accuracy_drop",
        ...                0.0, None, None, 10 * DAY, 11 * DAY, 0.0, DAY, Severity.HIGH, True,
        ...                11 * DAY)
        >>> Serving("r1", 9.5 * DAY).still_serves(d), Serving("r1", 8 * DAY).still_serves(d)
        (False, True)
        >>> Serving("r1").still_serves(d)  # when the switch was is not known
        False
        """
        return self.since is not None and drift.window_start >= self.since + SWITCH_GRACE

    def verdict(self, drift: DriftEvent) -> Decision:
        """Drift of a version the registry replaced is ignored: its incidents go on closing
        windows of its old traffic after a promotion (labels come days late), and acted on,
        a second training cut the new version's check short. Where it still serves, the
        reason says so (and the caller alerts): retraining on its traffic would promote over
        a version serving never loaded.

        >>> from schemas import DriftKind
        >>> d = DriftEvent("d", DriftKind.PERFORMANCE, "a", "m", "v1", None, "accuracy_drop",
        ...                0.0, None, None, 10 * DAY, 11 * DAY, 0.0, DAY, Severity.HIGH, True,
        ...                11 * DAY)
        >>> Serving("r1", 9.5 * DAY).verdict(d).reason
        'drift on v1, which r1 has replaced: it says nothing about the model serving now'
        """
        old = drift.model_version
        if self.still_serves(drift):
            return Decision(Action.IGNORE, f"drift on {old}, which {self.active} replaced at "
                            f"{format_timestamp(self.since or 0.0)}, on its traffic from "
                            f"{format_timestamp(drift.window_start)}: {old} still serves; make "
                            f"serving and the registry agree (driftwatch rollback --to {old}, "
                            f"or have serving load {self.active})")  # fmt: skip
        return Decision(
            Action.IGNORE,
            f"drift on {old}, which {self.active} has replaced: "
            "it says nothing about the model serving now",
        )


@dataclass
class RequestState:
    request_id: str
    tenant: str
    model: str
    drift_id: str
    status: RetrainStatus
    attempts: int = 0
    approved: bool = False
    severity: str = "LOW"
    event_time: float = 0.0
    drift: dict[str, object] | None = None
    """The DriftEvent that last moved it (to decide again when a person approves)."""


@dataclass
class RetrainState:
    """What the consumer knows, rebuilt from its own topics."""

    requests: dict[str, RequestState] = field(default_factory=dict)
    last_training: dict[tuple[str, str], float] = field(default_factory=dict)
    """Event time each (tenant, model) last started training."""
    trained_until: dict[tuple[str, str], float] = field(default_factory=dict)
    """Newest prediction time in the data of the last training."""
    last_request: dict[tuple[str, str], str] = field(default_factory=dict)
    """Id of the request each (tenant, model) last started training for (the last
    ``training`` event): a request left waiting carries on as its retry only while no other
    request of the model has trained since its own training."""
    global_flag: bool | None = None
    tenant_flags: dict[str, bool] = field(default_factory=dict)
    decisions: dict[str, str] = field(default_factory=dict)
    """Approvals and rejections by request id, from ``retrain-control``."""
    manual: dict[str, dict[str, object]] = field(default_factory=dict)
    """Retrain requests made by people (``retrain:<id>`` on ``retrain-control``), by id."""

    def auto_retrain(self, tenant: str, policy: RetrainPolicy) -> bool:
        """The global flag off stops every tenant's automatic trainings, whatever their own
        flags say (the runbook's "off for everyone" while an incident is looked at); else a
        tenant's own flag, else the global flag, else the policy's default.

        >>> state, policy = RetrainState(tenant_flags={"acme": True}), RetrainPolicy()
        >>> state.auto_retrain("acme", policy), state.auto_retrain("globex", policy)
        (True, False)
        >>> state.global_flag = False
        >>> state.auto_retrain("acme", policy)
        False
        >>> state.global_flag, state.tenant_flags["acme"] = True, False
        >>> state.auto_retrain("acme", policy), state.auto_retrain("globex", policy)
        (False, True)
        """
        if self.global_flag is False:
            return False
        if tenant in self.tenant_flags:
            return self.tenant_flags[tenant]
        return policy.auto_retrain if self.global_flag is None else self.global_flag

    def apply(self, event: RetrainEvent) -> None:
        """Fold one published decision into the state (replay and live alike)."""
        req = self.requests.get(event.request_id)
        if req is None:
            req = self.requests[event.request_id] = RequestState(
                event.request_id, event.tenant, event.model, event.drift_id, event.status
            )
        if (
            req.status.terminal
            and not event.status.terminal
            and event.status
            not in (
                RetrainStatus.VALIDATED,
                RetrainStatus.ROLLED_BACK,
            )
        ):
            return  # a late "ignored"/"waiting" never reopens a finished request
        req.status = event.status
        req.event_time = event.event_time
        req.severity = str(event.details.get("severity", req.severity))
        drift = event.details.get("drift")
        if isinstance(drift, dict):
            req.drift = drift
        if event.status is RetrainStatus.TRAINING:
            req.attempts = max(req.attempts, event.attempt)
            # Never moved back: a training whose event time is older than the last one's (a
            # stale retry) would shorten the cooldown and count old labels as new.
            key = (event.tenant, event.model)
            self.last_training[key] = max(self.last_training.get(key, event.event_time),
                                          event.event_time)  # fmt: skip
            self.last_request[key] = event.request_id
        if event.status is RetrainStatus.APPROVED:
            req.approved = True
        if event.status is RetrainStatus.PROMOTED and "trained_until" in event.details:
            key, until = (event.tenant, event.model), float(event.details["trained_until"])
            self.trained_until[key] = max(self.trained_until.get(key, until), until)

    def control(self, key: str, value: dict[str, object]) -> None:
        """Fold one ``retrain-control`` message (latest per key wins)."""
        # A flag set to null, or deleted (a tombstone: the value {}), is cleared: the global
        # flag's off is the stop for every tenant, and clearing it is how a deployment that
        # used it as a default (tenants switched on one by one) gets back (by review). A
        # tombstone had set the global flag off.
        flag = value.get("auto_retrain")
        on = None if flag is None else bool(flag)
        if key == "flag:global":
            self.global_flag = on
        elif key.startswith("flag:tenant:"):
            tenant = key.removeprefix("flag:tenant:")
            if on is None:
                self.tenant_flags.pop(tenant, None)
            else:
                self.tenant_flags[tenant] = on
        elif key.startswith("approval:"):
            decision = str(value.get("decision", ""))
            if decision in ("approve", "reject"):
                self.decisions[key.removeprefix("approval:")] = decision
        elif key.startswith("retrain:") and value.get("action") == "retrain":
            self.manual[key.removeprefix("retrain:")] = dict(value)

    def in_flight(self, tenant: str, model: str) -> RequestState | None:
        """A request of this stream that is training or waiting for a person."""
        busy = (RetrainStatus.TRAINING, RetrainStatus.AWAITING_APPROVAL, RetrainStatus.APPROVED)
        for req in self.requests.values():
            if (req.tenant, req.model) == (tenant, model) and req.status in busy:
                return req
        return None


def manual_drift(
    rid: str, tenant: str, model: str, version: str, event_time: float, reason: str, by: str
) -> DriftEvent:
    """A retrain request made by a person, in the shape the service acts on: one incident of
    its own (``drift_id`` ``manual:<id>``), so everything downstream is the same."""
    from schemas import DriftKind

    return DriftEvent(
        f"manual:{rid}", DriftKind.PERFORMANCE, tenant, model, version, None, "manual", 0.0,
        None, None, event_time, event_time, event_time, event_time, Severity.LOW, True,
        event_time, persistence=0,
        extra={"manual": True, "requested_by": by, "request_reason": reason},
    )  # fmt: skip


def decide_manual(
    drift: DriftEvent, policy: RetrainPolicy, state: RetrainState, new_labels: int | None = None
) -> Decision:
    """A person asked: no flag, confirmation or approval needed (they are the approval), but
    the same safeguards on the model: one training at a time, the cooldown, enough new labels
    (and then the validation gate and the post-deploy watch, like any training). A request
    the safeguards refuse is rejected, with the reason, rather than left waiting."""
    req = state.requests.get(request_id(drift))
    if req is not None and req.status.terminal:
        return Decision(Action.IGNORE, f"this request already ended ({req.status})")
    busy = state.in_flight(drift.tenant, drift.model)
    if busy is not None and busy.request_id != request_id(drift):
        return Decision(
            Action.REJECT, f"request {busy.request_id[:8]} for this model is {busy.status.value}"
        )
    last = state.last_training.get((drift.tenant, drift.model))
    if last is not None and drift.detected_at < last + policy.cooldown_days * DAY:
        hours = (last + policy.cooldown_days * DAY - drift.detected_at) / 3600
        return Decision(Action.REJECT, f"cooldown: last training {hours:.0f} h too recent")
    if new_labels is not None and new_labels < policy.min_new_labels:
        return Decision(
            Action.REJECT,
            f"{new_labels} labelled rows since the last training, {policy.min_new_labels} needed",
        )
    by = drift.extra.get("requested_by", "someone")
    return Decision(Action.RETRAIN, f"asked by {by}: {drift.extra.get('request_reason', '')}")


def request_id(drift: DriftEvent) -> str:
    """One request per incident: the same DriftEvent (or the incident's next one) maps to it.

    >>> from schemas import DriftKind, Severity
    >>> d = DriftEvent("d1", DriftKind.PERFORMANCE, "acme", "fraud", "v1", None, "accuracy_drop",
    ...                0.0, None, None, 0.0, 1.0, 0.0, 1.0, Severity.HIGH, True, 1.0)
    >>> request_id(d) == request_id(d), len(request_id(d))
    (True, 36)
    """
    return str(uuid.uuid5(_NAMESPACE, f"{drift.tenant}\x1f{drift.model}\x1f{drift.drift_id}"))


def decide(
    drift: DriftEvent,
    policy: RetrainPolicy,
    state: RetrainState,
    new_labels: int | None = None,
    serving: Serving | None = None,
) -> Decision:
    """Ignore, wait, ask a person, or retrain. ``new_labels`` is None until the caller has
    counted the labelled rows newer than the last training (it does so only when every other
    safeguard already says yes). ``serving``: what the registry says of a drift of a version
    it replaced (None: the drift is of the serving model; see :meth:`Serving.verdict`).

    >>> from schemas import DriftKind, Severity
    >>> d = DriftEvent("d1", DriftKind.PERFORMANCE, "acme", "fraud", "v1", None, "accuracy_drop",
    ...                0.0, None, None, 0.0, 1.0, 0.0, 1.0, Severity.HIGH, True, 1.0, persistence=7)
    >>> decide(d, RetrainPolicy(), RetrainState()).reason
    'auto-retrain is off for tenant acme'
    >>> decide(d, RetrainPolicy(auto_retrain=True), RetrainState(), new_labels=5_000).action
    <Action.RETRAIN: 'retrain'>
    """
    if serving is not None:
        return serving.verdict(drift)
    if drift.extra.get("estimated"):
        return Decision(Action.IGNORE, "a label-free estimate: retraining waits for real labels")
    if drift.kind.value not in policy.kinds:
        return Decision(Action.IGNORE, f"{drift.kind.value} drift does not trigger retraining")
    if not drift.confirmed or drift.persistence < policy.min_persistence:
        return Decision(
            Action.IGNORE,
            f"not confirmed yet (persistence {drift.persistence}/{policy.min_persistence})",
        )
    req = state.requests.get(request_id(drift))
    if req is not None and req.status.terminal:
        return Decision(Action.IGNORE, f"this incident's request already ended ({req.status})")
    busy = state.in_flight(drift.tenant, drift.model)
    if busy is not None and busy.request_id != request_id(drift):
        return Decision(
            Action.IGNORE, f"request {busy.request_id[:8]} for this model is {busy.status.value}"
        )
    if req is not None and req.status is RetrainStatus.TRAINING:
        return Decision(Action.IGNORE, "already training")
    if state.decisions.get(request_id(drift)) == "reject":
        return Decision(Action.IGNORE, "rejected by a person")
    if not state.auto_retrain(drift.tenant, policy):
        who = "every tenant" if state.global_flag is False else f"tenant {drift.tenant}"
        return Decision(Action.WAIT, f"auto-retrain is off for {who}")
    last = state.last_training.get((drift.tenant, drift.model))
    if last is not None and drift.detected_at < last + policy.cooldown_days * DAY:
        hours = (last + policy.cooldown_days * DAY - drift.detected_at) / 3600
        return Decision(Action.WAIT, f"cooldown: last training {hours:.0f} h too recent")
    approved = state.decisions.get(request_id(drift)) == "approve"
    # The incident's worst, not only this detection's: a CRITICAL incident confirmed by a
    # milder look still needs a person (found by review).
    severity = drift.incident_severity
    if severity.rank >= policy.approval_severity.rank and not approved:
        return Decision(
            Action.REQUEST_APPROVAL,
            f"{severity.value} drift needs a person: driftwatch approve {request_id(drift)}",
        )
    if new_labels is not None and new_labels < policy.min_new_labels:
        return Decision(
            Action.WAIT,
            f"{new_labels} labelled rows since the last training, {policy.min_new_labels} needed",
        )
    return Decision(Action.RETRAIN, f"confirmed {severity.value} {drift.kind.value} drift")
