"""The alert notifier's rounds without a broker or an endpoint: a webhook that fails on a
retryable error is tried again later (the pending alert kept in its delivery record, so a
restart or the partition's next owner goes on), not before its ``Retry-After``, a permanent
failure is not, and a pending alert is given up after ``hours``; an incident's alerts arrive
in order, and a slow endpoint holds no other's. The real ones:
tests/integration/test_operating.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agents.api.auth import ApiConfigError
from agents.metrics import WorkerMetrics
from agents.notify import AlertNotifier, delivery_key
from agents.processor import TableStore
from agents.redelivery import PENDING, Pending, Redelivery
from runtime.settings import Settings
from schemas import Severity, format_timestamp
from schemas.alerts import Alert, AlertDelivery, AlertKind, DeliveryStatus
from streams.keyed_state import Write
from tests.unit.test_processor import FakeEvent, FakeMessage, FakeTable

T = 1_767_225_600.0


def alert(
    alert_id: str = "a1", drift_id: str | None = None, tenant: str = "acme", change: str = "opened"
) -> Alert:
    """An incident alert; of no incident (one standing alone) without a ``drift_id``."""
    incident = None if drift_id is None else {"drift_id": drift_id, "feature": "amount"}
    return Alert(alert_id, AlertKind.INCIDENT, change, tenant, "fraud", Severity.HIGH,
                 "[HIGH] acme/fraud: amount drifted", "text", T, T, incident=incident)  # fmt: skip


class ScriptedWebhook:
    """Answers the rounds in order from ``script``: ``ok`` delivered, ``down`` a retryable
    failure (connection refused), ``wait:<s>`` one whose endpoint asked to wait ``s`` seconds
    (503 with ``Retry-After``; the round ended because of it past 30 s), ``bad`` a permanent
    one (HTTP 400); ``ok`` once it ends."""

    def __init__(self, script: list[str], clock: list[float]) -> None:
        self.script, self.clock = list(script), clock
        self.calls: list[str] = []

    def url_for(self, tenant: str) -> str | None:
        return "http://hook.example/x"

    async def deliver(self, a: Alert) -> AlertDelivery:
        self.calls.append(a.alert_id)
        outcome = self.script.pop(0) if self.script else "ok"
        outcome, _, asked = outcome.partition(":")
        error = {"ok": None, "down": "ClientConnectorError", "wait": "HTTP 503",
                 "bad": "HTTP 400"}[outcome]  # fmt: skip
        status = DeliveryStatus.DELIVERED if outcome == "ok" else DeliveryStatus.FAILED
        return AlertDelivery(a.alert_id, a.tenant, a.model, "webhook", "hook.example", status,
                             8, self.clock[0], error, retryable=outcome in ("down", "wait"),
                             retry_after=float(asked) if asked else None,
                             wait_asked=asked != "" and float(asked) > 30.0)  # fmt: skip


class PartitionedStore:
    """A table with one store per partition, as the worker's (a dict would be one store)."""

    def __init__(self) -> None:
        self.parts: dict[int, dict[str, bytes]] = {}
        self.closed: set[int] = set()
        """Partitions whose store is not open yet."""
        self.while_scanning: Callable[[], object] = lambda: None

    def get(self, key: str, partition: int | None = None) -> bytes | None:
        stores = self.parts.values() if partition is None else [self.parts.get(partition, {})]
        return next((store[key] for store in stores if key in store), None)

    async def write_all(self, writes: Iterable[Write]) -> None:
        for w in writes:
            assert w.partition is not None
            if w.value is None:
                del self.parts[w.partition][w.key]
            else:
                self.parts.setdefault(w.partition, {})[w.key] = w.value

    def scan(self, partition: int, marker: bytes) -> list[bytes] | None:
        if partition in self.closed:
            return None
        self.while_scanning()
        return [v for v in self.parts.get(partition, {}).values() if marker in v]

    def scan_keys(self, partition: int, keep: Callable[[bytes], bool]) -> list[str] | None:
        if partition in self.closed:
            return None
        self.while_scanning()
        return [k for k, v in self.parts.get(partition, {}).items() if keep(v)]


class Setup:
    def __init__(
        self, script: list[str], hours: float = 24.0, table: PartitionedStore | None = None
    ) -> None:
        self.clock = [T + 10.0]
        self.registry = CollectorRegistry()
        self.table = PartitionedStore() if table is None else table
        self.sent: list[dict[str, Any]] = []
        self.hook = ScriptedWebhook(script, self.clock)

        async def send(key: bytes, value: bytes) -> None:
            self.sent.append(json.loads(value))

        self.notifier = AlertNotifier(
            self.hook, self.table, WorkerMetrics.create(self.registry),  # type: ignore[arg-type]
            send, "alerts", clock=lambda: self.clock[0], redelivery=Redelivery(hours),
        )  # fmt: skip
        self.offsets: dict[int, int] = {}

    def events(self, *alerts: Alert, partition: int = 0) -> list[FakeEvent]:
        """``alerts`` as the next messages of ``partition`` (offsets go on between calls)."""
        start = self.offsets.get(partition, 0)
        self.offsets[partition] = start + len(alerts)
        return [
            FakeEvent(FakeMessage("alerts", partition, start + k, b"acme:fraud"), a.to_json())
            for k, a in enumerate(alerts)
        ]

    def receive(self, *alerts: Alert, partition: int = 0) -> None:
        asyncio.run(self.notifier.process_batch(self.events(*alerts, partition=partition)))

    def tick(self, seconds: float, owned: frozenset[int] = frozenset({0})) -> None:
        self.clock[0] += seconds
        asyncio.run(self.notifier.redeliver(set(owned)))

    def record(self, alert_id: str = "a1") -> dict[str, Any]:
        return dict(json.loads(self.table.get(delivery_key(alert_id)) or b"null"))

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"channel": "webhook", **labels}) or 0.0

    def deliveries(self) -> list[tuple[str, bool]]:
        """The delivery records sent onto ``alerts``: status, and whether a round follows."""
        return [(r["status"], "retry_at" in r) for r in self.sent]


def test_a_round_failed_on_a_retryable_error_is_tried_again_until_delivered() -> None:
    s = Setup(["down", "down", "ok"])
    s.receive(alert())
    assert s.deliveries() == [("failed", True)] and s.sent[0]["retry_at"].endswith("Z")
    assert s.record()["pending"]["rounds"] == 1
    assert s.metric("driftwatch_alerts_undelivered") == 1.0
    s.tick(59.0)  # the next round is a minute after the first failure
    assert s.hook.calls == ["a1"]
    s.tick(1.0)
    assert s.hook.calls == ["a1", "a1"] and s.record()["pending"]["rounds"] == 2
    s.tick(119.0)  # then two minutes
    assert len(s.hook.calls) == 2
    s.tick(1.0)
    assert s.deliveries() == [("failed", True), ("failed", True), ("delivered", False)]
    assert s.record() == {"s": "delivered", "n": 8, "at": s.clock[0]}
    assert s.metric("driftwatch_alerts_undelivered") == 0.0
    assert s.metric("driftwatch_alert_deliveries_total", result="deferred") == 2.0
    assert s.metric("driftwatch_alert_deliveries_total", result="failed") == 0.0
    s.tick(3600.0)
    assert len(s.hook.calls) == 3  # delivered: never again


def test_a_permanent_failure_is_not_tried_again() -> None:
    s = Setup(["bad"])
    s.receive(alert())
    assert s.deliveries() == [("failed", False)] and "pending" not in s.record()
    assert s.metric("driftwatch_alert_deliveries_total", result="failed") == 1.0
    s.tick(3600.0)
    assert s.hook.calls == ["a1"] and s.metric("driftwatch_alerts_undelivered") == 0.0


def test_a_pending_alert_is_given_up_after_the_hours() -> None:
    s = Setup(["down"] * 100, hours=1.0)
    s.receive(alert())
    for _ in range(12):  # rounds at 1, 2, 4, 8, then every 15 minutes: past the hour
        s.tick(900.0)
    rounds = len(s.hook.calls)
    assert 5 <= rounds <= 7 and s.deliveries()[-1] == ("failed", False)
    assert all(retry for _, retry in s.deliveries()[:-1])
    assert "pending" not in s.record() and len(s.notifier.redelivery) == 0
    assert s.metric("driftwatch_alert_deliveries_total", result="failed") == 1.0
    assert s.metric("driftwatch_alert_deliveries_total", result="deferred") == rounds - 1


def test_without_redelivery_a_retryable_failure_is_final() -> None:
    s = Setup(["down"], hours=0.0)
    s.receive(alert())
    s.tick(3600.0)
    assert s.hook.calls == ["a1"] and s.deliveries() == [("failed", False)]


def test_a_pending_alert_survives_a_restart_and_goes_to_its_partition_s_owner() -> None:
    """Kept in its record: a new notifier over the same table (a restart, or the worker
    that owns the partition next) reads it when it owns the partition, and delivers it."""
    first = Setup(["down", "down"])
    first.receive(alert("p0"), partition=0)
    first.receive(alert("p1"), partition=1)
    assert len(first.notifier.redelivery) == 2
    first.notifier.forget({1})  # partition 1 revoked: its alert is the next owner's
    assert [p.alert.alert_id for p in first.notifier.redelivery.pending.values()] == ["p0"]
    first.tick(60.0, owned=frozenset({0}))
    assert first.hook.calls == ["p0", "p1", "p0"]

    other = Setup([], table=first.table)
    other.clock[0] = first.clock[0]
    other.tick(0.0, owned=frozenset({0}))  # owns partition 0 only: p0 is delivered already
    assert other.hook.calls == []
    other.tick(0.0, owned=frozenset({0, 1}))  # takes partition 1 over: p1 was due
    assert other.hook.calls == ["p1"] and other.deliveries() == [("delivered", False)]
    assert "pending" not in other.record("p1")


def test_a_table_store_scan_finds_the_records_that_hold_the_marker() -> None:
    store = TableStore(FakeTable({b"a": b'{"s":"failed","pending":{}}', b"b": b'{"s":"x"}'}))
    assert store.scan(0, PENDING) == [b'{"s":"failed","pending":{}}']


@pytest.mark.parametrize(("hours", "first"), [(-1.0, 60.0), (float("nan"), 60.0), (1.0, 0.0)])
def test_redelivery_settings_are_checked(hours: float, first: float) -> None:
    with pytest.raises(ValueError, match="DRIFTWATCH_ALERT_REDELIVERY_"):
        Redelivery(hours, first)


def test_the_worker_s_local_settings_are_checked_before_any_broker_work(tmp_path: Path) -> None:
    """A wrong path or value is one line naming the setting, before topics are created."""
    from driftwatch.worker import check_local_config

    base = Settings(api_port=0)
    check_local_config(base)
    with pytest.raises(ApiConfigError, match="DRIFTWATCH_API_TOKENS_FILE"):
        check_local_config(replace(base, api_port=6066, api_tokens_file=""))
    gone = str(tmp_path / "nope")
    with pytest.raises(ValueError, match=f"DRIFTWATCH_ALERT_WEBHOOK_SECRET_FILE: {gone}: No such"):
        check_local_config(replace(base, alert_webhook_url="http://hook.example/x",
                                   alert_webhook_secret_file=gone))  # fmt: skip
    with pytest.raises(ValueError, match="DRIFTWATCH_ALERT_REDELIVERY_HOURS"):
        check_local_config(replace(base, alert_redelivery_hours=-1.0))


class GatedWebhook(ScriptedWebhook):
    """A round that waits for ``gate`` (made in the test's loop) before answering."""

    gate: asyncio.Event | None = None
    started: asyncio.Event | None = None

    async def deliver(self, a: Alert) -> AlertDelivery:
        if self.started is not None and self.gate is not None:
            self.started.set()
            await self.gate.wait()
        return await super().deliver(a)


def test_a_partition_revoked_while_its_round_runs_is_left_to_its_new_owner() -> None:
    """The round's outcome is reported, but neither kept nor written: the new owner has
    the record (an older pending one) and goes on from it. The gauge counts the alert
    once while its round runs."""
    s = Setup(["down", "down"])
    s.receive(alert())
    before = s.record()
    hook = GatedWebhook([], s.clock)
    s.notifier.webhook = hook  # type: ignore[assignment]
    s.clock[0] += 60.0

    async def revoked_mid_round() -> None:
        hook.gate, hook.started = asyncio.Event(), asyncio.Event()
        hook.script = ["down"]
        round_ = asyncio.ensure_future(s.notifier.redeliver({0}))
        await asyncio.wait_for(hook.started.wait(), 5)
        assert s.metric("driftwatch_alerts_undelivered") == 1.0  # in a round and pending
        s.notifier.forget({0})
        hook.gate.set()
        await round_

    asyncio.run(revoked_mid_round())
    assert s.record() == before and len(s.notifier.redelivery) == 0
    assert s.deliveries()[-1] == ("failed", True)
    assert s.metric("driftwatch_alerts_undelivered") == 0.0


def test_pending_alerts_are_given_up_when_there_is_nothing_to_send_them_to() -> None:
    """A restart after an outage with redelivery off (or no webhook any more): the pending
    records are settled as failed, said and counted, not left pending for good."""
    first = Setup(["down"])
    first.receive(alert())
    off = Setup([], hours=0.0, table=first.table)
    off.clock[0] = first.clock[0] + 60.0
    off.tick(0.0)
    assert off.hook.calls == [] and off.deliveries() == [("failed", False)]
    assert off.sent[0]["error"] == "redelivery is off" and "pending" not in off.record()
    assert off.metric("driftwatch_alert_deliveries_total", result="failed") == 1.0
    none = Setup([], table=PartitionedStore())
    none.receive(alert())  # delivered: nothing pending
    none.notifier.webhook = None
    none.tick(3600.0)
    assert none.deliveries() == [("delivered", False)]


def test_a_store_not_open_yet_is_read_at_a_later_check() -> None:
    first = Setup(["down"])
    first.receive(alert())
    later = Setup([], table=first.table)
    later.clock[0] = first.clock[0] + 60.0
    later.table.closed = {0}
    later.tick(0.0)
    assert later.hook.calls == [] and 0 not in later.notifier.redelivery.loaded
    later.table.closed = set()
    # revoked while its records are read: what was read is the new owner's
    later.table.while_scanning = lambda: later.notifier.forget({0})
    later.tick(0.0)
    assert later.hook.calls == [] and not later.notifier.redelivery.pending
    later.table.while_scanning = lambda: None
    later.tick(0.0)
    assert later.hook.calls == ["a1"]


def test_a_backlog_is_sent_in_steps_oldest_first() -> None:
    s = Setup(["down"] * 70)
    for k in range(70):
        s.clock[0] += 1.0
        s.receive(alert(f"a{k:02d}"))
    s.tick(60.0)
    assert s.hook.calls[70:] == [f"a{k:02d}" for k in range(64)]
    s.tick(10.0)
    assert s.hook.calls[134:] == [f"a{k:02d}" for k in range(64, 70)]


def test_a_pending_alert_with_no_webhook_any_more_is_given_up() -> None:
    first = Setup(["down"])
    first.receive(alert())
    other = Setup([], table=first.table)
    other.notifier.webhook = None  # a restart without DRIFTWATCH_ALERT_WEBHOOK_URL
    # the series a rule reads exist at 0 before the first loss, webhook or not
    for result in ("failed", "deferred", "delivered"):
        assert (
            other.registry.get_sample_value(
                "driftwatch_alert_deliveries_total", {"channel": "webhook", "result": result}
            )
            == 0.0
        )
    other.clock[0] = first.clock[0] + 60.0
    other.tick(0.0)
    assert other.deliveries() == [("failed", False)]
    assert other.sent[0]["error"] == "no webhook configured" and "pending" not in other.record()


def test_a_report_that_cannot_be_published_leaves_the_table_right() -> None:
    """The outcome is written before it is reported: a failing producer neither stops the
    agent nor leaves a delivered alert pending (to be sent again)."""
    s = Setup(["ok"])

    async def broken(key: bytes, value: bytes) -> None:
        raise RuntimeError("alerts topic unreachable")

    s.notifier.send_alert = broken
    s.receive(alert())
    assert s.record()["s"] == "delivered" and len(s.notifier.redelivery) == 0


DAY = 86400.0


def test_delivery_records_older_than_the_retention_are_pruned_pending_ones_never() -> None:
    """The table kept a record per alert for ever, and a takeover scanned them all."""
    s = Setup(["down", "ok", "ok"], table=PartitionedStore())
    s.notifier.retention_seconds = 30 * DAY
    s.receive(alert("pending"), partition=0)  # its round fails: pending (until a round ends it)
    s.receive(alert("old0"), partition=0)
    s.receive(alert("old1"), partition=1)
    s.clock[0] += 31 * DAY  # every record's last round is 31 days old
    removed = asyncio.run(s.notifier.prune({0, 1}))
    assert removed == 2
    assert s.table.get(delivery_key("old0")) is None and s.table.get(delivery_key("old1")) is None
    assert "pending" in s.record("pending")
    # A partition is scanned every 6 hours at most: one written meanwhile waits.
    old = {"s": "delivered", "n": 1, "at": s.clock[0] - 40 * DAY}
    s.table.parts[0][delivery_key("late")] = json.dumps(old).encode()
    assert asyncio.run(s.notifier.prune({0})) == 0
    s.clock[0] += 6 * 3600.0 - 1.0
    assert asyncio.run(s.notifier.prune({0})) == 0
    s.clock[0] += 1.0
    assert asyncio.run(s.notifier.prune({0})) == 1
    assert set(s.table.parts[0]) == {delivery_key("pending")}


def test_pruning_waits_for_a_store_not_open_and_skips_a_partition_revoked_meanwhile() -> None:
    s = Setup(["ok", "ok"], table=PartitionedStore())
    s.notifier.retention_seconds = DAY
    s.receive(alert("a0"), partition=0)
    s.receive(alert("a1"), partition=1)
    s.clock[0] += 2 * DAY
    s.table.closed = {0}
    s.table.while_scanning = lambda: s.notifier.forget({1})  # revoked while its scan runs
    assert asyncio.run(s.notifier.prune({0, 1})) == 0
    assert set(s.table.parts[1]) == {delivery_key("a1")}  # the new owner's to prune
    s.table.closed = set()
    s.table.while_scanning = lambda: None
    assert asyncio.run(s.notifier.prune({0, 1})) == 2  # 0 now open; 1 (owned again) redone


def test_a_year_of_records_is_pruned_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each chunk under the lock on its own (the rounds' writes go in between), all of them."""
    monkeypatch.setattr("agents.notify.PRUNE_CHUNK", 2)
    s = Setup([], table=PartitionedStore())
    s.notifier.retention_seconds = DAY
    old = json.dumps({"s": "delivered", "n": 1, "at": s.clock[0] - 2 * DAY}).encode()
    s.table.parts[0] = {delivery_key(f"a{k}"): old for k in range(5)}
    writes: list[int] = []
    write_all = s.table.write_all

    async def counted(batch: Iterable[Write]) -> None:
        batch = list(batch)
        writes.append(len(batch))
        await write_all(batch)

    s.table.write_all = counted  # type: ignore[method-assign,assignment]
    assert asyncio.run(s.notifier.prune({0})) == 5
    assert writes == [2, 2, 1] and s.table.parts[0] == {}


def test_without_a_retention_nothing_is_pruned_and_records_not_understood_stay() -> None:
    s = Setup(["ok"], table=PartitionedStore())
    s.receive(alert("a0"), partition=0)
    s.table.parts[0]["other"] = b"not json"
    s.clock[0] += 3650 * DAY
    assert asyncio.run(s.notifier.prune({0})) == 0
    s.notifier.retention_seconds = DAY
    assert asyncio.run(s.notifier.prune({0})) == 1
    assert set(s.table.parts[0]) == {"other"}


def test_a_table_store_scan_for_keys_reads_every_record() -> None:
    store = TableStore(FakeTable({b"a": b"1", b"b": b"2"}))
    assert store.scan_keys(0, b"2".__eq__) == ["b"]


class RebalancingWebhook(ScriptedWebhook):
    """A round during which a rebalance, and the recovery of the tables, begins."""

    def __init__(self, script: list[str], clock: list[float], recovering: list[bool]) -> None:
        super().__init__(script, clock)
        self.recovering = recovering

    async def deliver(self, a: Alert) -> AlertDelivery:
        self.recovering[0] = True
        return await super().deliver(a)


def test_no_prune_after_the_rounds_while_a_recovery_begun_meanwhile_runs() -> None:
    """The timer's check looked for a recovery before the rounds only: they can take
    minutes, and a rebalance begun meanwhile restores its partitions' stores from their
    changelogs. The prune after them read such a store half restored (and marked it pruned
    for 6 hours) and deleted while the restore wrote: it waits for a check after it."""
    s = Setup(["down"], table=PartitionedStore())
    s.notifier.retention_seconds = DAY
    s.receive(alert("late"))  # its round fails: pending
    old = json.dumps({"s": "delivered", "n": 1, "at": s.clock[0] - 2 * DAY}).encode()
    s.table.parts[0][delivery_key("old")] = old
    recovering = [False]
    s.notifier.webhook = RebalancingWebhook([], s.clock, recovering)  # type: ignore[assignment]
    s.clock[0] += 60.0

    def check() -> None:
        asyncio.run(s.notifier.check(lambda: {0}, lambda: recovering[0]))

    check()
    assert s.record("late")["s"] == "delivered"  # the round ran (begun before the recovery)
    assert s.table.get(delivery_key("old")) == old  # not pruned while the store is restored
    check()
    assert s.table.get(delivery_key("old")) == old  # nor while it goes on
    recovering[0] = False
    s.clock[0] += 10.0
    check()
    assert s.table.get(delivery_key("old")) is None  # at the first check after it


def test_a_partition_taken_over_is_scanned_once_for_its_pending_and_its_expired_records() -> None:
    """A takeover's check read the whole partition for its pending records, then at once
    again to prune it (never pruned by its new owner): one scan serves both."""
    first = Setup(["down"], table=PartitionedStore())
    first.receive(alert("late"))  # its round fails: pending
    old = json.dumps({"s": "delivered", "n": 1, "at": first.clock[0] - 40 * DAY}).encode()
    first.table.parts[0][delivery_key("old")] = old
    other = Setup([], table=first.table)  # the partition's next owner (or a restart)
    other.notifier.retention_seconds = 30 * DAY
    other.clock[0] = first.clock[0] + 60.0
    scans: list[int] = []
    other.table.while_scanning = lambda: scans.append(0)

    def check() -> None:
        asyncio.run(other.notifier.check(lambda: {0}, lambda: False))

    check()
    assert other.hook.calls == ["late"] and other.record("late")["s"] == "delivered"
    assert set(other.table.parts[0]) == {delivery_key("late")}  # "old" pruned
    assert len(scans) == 1
    other.clock[0] += 10.0
    check()
    assert len(scans) == 1  # loaded and pruned: not read again for 6 hours
    other.notifier.forget({0})  # revoked, and taken over again within the 6 hours
    check()
    assert len(scans) == 2  # its pending records read again (a prune was not due)
    other.notifier.forget({0})
    other.clock[0] += 6 * 3600.0
    other.table.parts[0][delivery_key("old")] = old
    check()
    assert len(scans) == 3 and set(other.table.parts[0]) == {delivery_key("late")}


# --- order within an incident -----------------------------------------------------------


def test_an_incident_s_later_alerts_wait_behind_one_pending_and_arrive_in_order() -> None:
    """A model's alerts of one batch were sent at once, and one that failed went to
    redelivery while the next were sent: the receiver saw ``resolved`` before a redelivered
    ``opened``. Now they are sent one at a time, and those after one pending wait behind it
    (held in their records, in order), in this batch or a later one; other incidents do not."""
    s = Setup(["down"])
    s.receive(alert("opened", "d1"), alert("confirmed", "d1", change="confirmed"),
              alert("other", "d2"))  # fmt: skip
    assert s.hook.calls == ["opened", "other"]  # "confirmed" not sent past "opened"
    assert s.record("confirmed")["pending"]["rounds"] == 0  # held, in the table
    assert s.deliveries() == [("failed", True), ("delivered", False)]
    assert s.metric("driftwatch_alerts_undelivered") == 2.0
    s.receive(alert("resolved", "d1", change="resolved"))  # a later batch: behind them too
    s.tick(30.0)
    assert s.hook.calls == ["opened", "other"]
    s.tick(30.0)  # "opened"'s round is due: it, then those behind it, one after the other
    assert s.hook.calls == ["opened", "other", "opened", "confirmed", "resolved"]
    assert all(s.record(a)["s"] == "delivered" for a in ("opened", "confirmed", "resolved"))
    assert s.metric("driftwatch_alerts_undelivered") == 0.0


def test_the_order_holds_across_a_restart_and_a_failure_for_good_lets_the_next_go() -> None:
    """A restarted worker (or the partition's next owner) reads the pending alerts before
    it sends a new one of their incident: ``resolved`` read first after the restart still
    waits behind the ``opened`` held in the table. One given up does not hold the rest."""
    first = Setup(["down"])
    first.receive(alert("opened", "d1"), alert("confirmed", "d1", change="confirmed"))
    after = Setup(["bad"], table=first.table)  # a restart: nothing in memory
    after.offsets = dict(first.offsets)
    after.clock[0] = first.clock[0] + 1.0
    after.receive(alert("resolved", "d1", change="resolved"))
    assert after.hook.calls == []  # "opened" waits for its next round: "resolved" behind it
    assert after.record("resolved")["pending"]["rounds"] == 0
    after.tick(60.0)  # "opened" fails for good (HTTP 400): the rest go, in order
    assert after.hook.calls == ["opened", "confirmed", "resolved"]
    assert after.deliveries() == [("failed", False), ("delivered", False), ("delivered", False)]


# --- Retry-After ----------------------------------------------------------------------------


def test_the_next_round_is_not_before_the_endpoint_s_retry_after() -> None:
    """Redelivery's schedule (1 minute, then 2, ...) ignored the endpoint's ``Retry-After``:
    an endpoint asking for 10 minutes was tried again after one. A wait asked for longer
    than an hour is waited an hour."""
    s = Setup(["wait:600", "wait:864000"])
    s.receive(alert())
    assert s.record()["pending"]["due"] == s.clock[0] + 600.0 and s.record()["pending"]["asked"]
    s.tick(599.0)
    assert s.hook.calls == ["a1"]
    s.tick(1.0)
    assert s.hook.calls == ["a1", "a1"]
    assert s.sent[-1]["retry_at"] == format_timestamp(s.clock[0] + 3600.0)  # capped
    s.tick(3599.0)
    assert len(s.hook.calls) == 2
    s.tick(1.0)
    assert s.deliveries()[-1] == ("delivered", False)


def test_without_redelivery_a_wait_the_endpoint_asked_for_is_honoured() -> None:
    """With redelivery off, an endpoint's ``Retry-After`` past what a round waits (30 s)
    failed the alert for good. The endpoint only asked to wait: it is tried again then (for
    an hour at most, and only while the endpoint keeps asking); another failure is final."""
    s = Setup(["wait:120", "down"], hours=0.0)
    s.receive(alert())
    assert s.deliveries() == [("failed", True)]
    s.tick(120.0)
    assert s.hook.calls == ["a1", "a1"] and s.deliveries()[-1] == ("failed", False)
    late = Setup(["wait:120", "wait:7200", "wait:60"], hours=0.0)
    late.receive(alert())
    late.tick(120.0)  # asked again, for two hours: waited one
    assert late.sent[-1]["retry_at"] == format_timestamp(late.clock[0] + 3600.0)
    late.tick(3600.0)  # asked once more, an hour after the first: given up
    assert late.deliveries() == [("failed", True), ("failed", True), ("failed", False)]
    assert late.metric("driftwatch_alert_deliveries_total", result="failed") == 1.0


@pytest.mark.parametrize("asked", ["0", "1", "30"])
def test_without_redelivery_a_retry_after_the_round_could_wait_earns_no_later_round(
    asked: str,
) -> None:
    """Review: any ``Retry-After`` counted as a wait asked, so ``Retry-After: 0`` every round
    earned an hour of rounds with redelivery off. Only one that ended its round does."""
    s = Setup([f"wait:{asked}"] * 5, hours=0.0)
    s.receive(alert())
    assert s.deliveries() == [("failed", False)] and "pending" not in s.record()
    s.tick(60.0)
    assert s.hook.calls == ["a1"]


# --- endpoints independent ------------------------------------------------------------------


class SlowTenantWebhook(ScriptedWebhook):
    """Tenant ``slow``'s endpoint answers once ``gate`` is set (made in the test's loop)."""

    gate: asyncio.Event | None = None

    async def deliver(self, a: Alert) -> AlertDelivery:
        if a.tenant == "slow" and self.gate is not None:
            await self.gate.wait()
        return await super().deliver(a)


def test_a_slow_endpoint_holds_neither_its_batch_nor_the_other_tenants_alerts() -> None:
    """The agent waited for every round of its batch (up to ~70 s for a slow endpoint)
    before its next batch: one tenant's slow endpoint delayed the others' alerts. Now the
    batch writes its alerts' records (held) before their rounds and waits for them a second
    at most: the offset may be committed while a round runs, the table has the alert (a
    restart, or the partition's next owner, sends it)."""
    s = Setup([])
    hook = SlowTenantWebhook([], s.clock)
    s.notifier.webhook = hook  # type: ignore[assignment]
    s.notifier.wait_seconds = 0.05

    async def scenario() -> None:
        hook.gate = asyncio.Event()
        batch = s.notifier.process_batch(s.events(alert("s1", "d1", tenant="slow")))
        await asyncio.wait_for(batch, 2.0)  # returns while the slow round runs
        assert s.record("s1")["pending"]["rounds"] == 0  # held in the table meanwhile
        restarted = Setup([], table=s.table)  # (a crash now: a restart sends it)
        restarted.clock[0] = s.clock[0]
        await restarted.notifier.redeliver({0})
        assert restarted.hook.calls == ["s1"]
        await asyncio.wait_for(s.notifier.process_batch(s.events(alert("f1", tenant="fast"))), 2.0)
        assert hook.calls == ["f1"] and s.record("f1")["s"] == "delivered"
        hook.gate.set()
        await asyncio.wait_for(asyncio.gather(*s.notifier._tasks), 2.0)  # the slow round

    asyncio.run(scenario())
    assert hook.calls == ["f1", "s1"] and s.record("s1")["s"] == "delivered"
    assert s.metric("driftwatch_alerts_undelivered") == 0.0


def test_stopping_cancels_the_rounds_under_way_and_leaves_their_alerts_held() -> None:
    s = Setup([])
    hook = SlowTenantWebhook([], s.clock)
    s.notifier.webhook = hook  # type: ignore[assignment]
    s.notifier.wait_seconds = 0.01

    async def scenario() -> None:
        hook.gate = asyncio.Event()  # never set
        await s.notifier.process_batch(s.events(alert("s1", tenant="slow")))
        assert s.notifier._tasks
        await s.notifier.stop(grace_seconds=0.01)
        assert not s.notifier._tasks

    asyncio.run(scenario())
    assert s.record("s1")["pending"]["rounds"] == 0 and hook.calls == []


# --- review fixes ---------------------------------------------------------------------------


class FailingOnceStore(PartitionedStore):
    """Its first ``fail`` writes raise (a broker timeout), having taken ``taken`` records."""

    def __init__(self, fail: int = 1, taken: int = 0) -> None:
        super().__init__()
        self.fail, self.taken = fail, taken

    async def write_all(self, writes: Iterable[Write]) -> None:
        if self.fail:
            self.fail -= 1
            await super().write_all(list(writes)[: self.taken])
            raise RuntimeError("broker: request timed out")
        await super().write_all(writes)


@pytest.mark.parametrize("taken", [0, 1])
def test_an_alert_whose_queued_record_was_not_written_is_not_taken_for_a_duplicate(
    taken: int,
) -> None:
    """The alert was held in memory before its record was written: the write failed, the
    batch was read again, the alert taken for a duplicate (held), its offset committed with
    no record; a revoke before the timer lost it. Now written, then held; a record the
    failed write did take is held at once (the alert is sent, not left in the table only)."""
    table = FailingOnceStore(taken=taken)
    s = Setup([], table=table)
    events = s.events(alert("a1", "d1"), alert("a2", "d2"))
    with pytest.raises(RuntimeError):
        asyncio.run(s.notifier.process_batch(events))
    assert sorted(s.notifier.redelivery.pending) == ["a1"][:taken] and s.hook.calls == []
    asyncio.run(s.notifier.process_batch(events))  # the batch read again
    assert s.metric("driftwatch_alert_deliveries_total", result="duplicate") == taken
    assert len(s.notifier.redelivery) + len(s.hook.calls) == 2  # held, or sent
    s.tick(10.0)  # (a record taken by the failed write: read back, sent by the timer)
    assert sorted(s.hook.calls) == ["a1", "a2"]
    assert s.record("a1")["s"] == s.record("a2")["s"] == "delivered"


class RevokedMidWrite(PartitionedStore):
    """Stores the writes, then (a rebalance while the write was awaited) runs ``revoke`` and
    fails, once."""

    revoke: Callable[[], None] | None = None

    async def write_all(self, writes: Iterable[Write]) -> None:
        writes = list(writes)
        await super().write_all(writes)
        if self.revoke is not None:
            revoke, self.revoke = self.revoke, None
            revoke()
            raise RuntimeError("changelog: request timed out")


def test_a_failed_write_during_a_revoke_holds_nothing_of_the_partition_lost() -> None:
    """Review: the records a failed write took were held with no check of the partition's
    generation: revoked while the write was awaited, their stale 'queued' copies stayed in
    memory; the new owner sent them, and when the partition came back before the timer the
    old owner sent them again, after the incident's 'resolved'. Each alert reaches the
    receiver once, in order."""
    table = RevokedMidWrite()
    old = Setup([], table=table)
    table.revoke = lambda: old.notifier.forget({0})
    events = old.events(alert("a1", "d1", change="opened"), alert("a2", "d1", change="resolved"))
    with pytest.raises(RuntimeError):
        asyncio.run(old.notifier.process_batch(events))
    assert len(old.notifier.redelivery) == 0
    new = Setup([], table=table)  # the partition's new owner
    new.clock[0] = old.clock[0] + 1
    new.tick(0.0)
    assert new.hook.calls == ["a1", "a2"]
    old.clock[0] += 10  # the partition assigned back to the old owner
    old.tick(0.0)
    assert old.hook.calls == []


class UnreadableAfterFailure(FailingOnceStore):
    """A failed write that took every record, after which a lookup of one partition's key
    raises once (the store unreadable for a moment)."""

    unreadable = False

    async def write_all(self, writes: Iterable[Write]) -> None:
        failing = bool(self.fail)
        try:
            await super().write_all(writes)
        finally:
            self.unreadable = failing

    def get(self, key: str, partition: int | None = None) -> bytes | None:
        if self.unreadable and partition is not None:
            self.unreadable = False
            raise OSError("store unreadable")
        return super().get(key, partition)


def test_a_record_a_failed_write_took_but_could_not_be_looked_up_is_read_with_its_partition() -> (
    None
):
    """A lookup after a failed write that itself fails leaves the partition to be read
    again: the record the write took is sent, not left in the table only (the batch read
    again takes it for a duplicate)."""
    table = UnreadableAfterFailure(taken=2)
    s = Setup([], table=table)
    events = s.events(alert("a1", "d1"), alert("a2", "d2"))
    with pytest.raises(RuntimeError):
        asyncio.run(s.notifier.process_batch(events))
    assert 0 not in s.notifier.redelivery.loaded
    asyncio.run(s.notifier.process_batch(events))  # read again: duplicates, the table read
    s.tick(10.0)
    assert sorted(s.hook.calls) == ["a1", "a2"]


def test_the_rounds_under_way_are_capped_and_the_alerts_over_the_cap_wait_for_the_timer() -> None:
    """Review: one task per chain without limit (a slow endpoint and many incidents made tens
    of thousands). At most ``max_rounds`` run; the others are held and the timer starts
    them once rounds end."""
    s = Setup([])
    hook = SlowTenantWebhook([], s.clock)
    s.notifier.webhook = hook  # type: ignore[assignment]
    s.notifier.wait_seconds = 0.01
    s.notifier.max_rounds = 3

    async def scenario() -> None:
        hook.gate = asyncio.Event()
        for b in range(3):
            batch = [alert(f"a{b}{k}", f"d{b}{k}", tenant="slow") for k in range(4)]
            await s.notifier.process_batch(s.events(*batch))
            assert len(s.notifier._tasks) == 3
        assert len(s.notifier.redelivery) == 12 and s.record("a23")["pending"]["rounds"] == 0
        hook.gate.set()
        for _ in range(5):
            await asyncio.gather(*s.notifier._tasks)
            await s.notifier.redeliver({0})
            assert len(s.notifier._tasks) <= 3

    asyncio.run(scenario())
    assert sorted(hook.calls) == sorted(f"a{b}{k}" for b in range(3) for k in range(4))
    assert not s.notifier.redelivery and s.metric("driftwatch_alerts_undelivered") == 0.0


class NoWalk(dict[str, Any]):
    """The pending alerts, refusing to be walked while ``walled``."""

    walled = False

    def _walk(self) -> None:
        if self.walled:
            raise AssertionError("every pending alert walked")

    def values(self) -> Any:
        self._walk()
        return super().values()

    def keys(self) -> Any:
        self._walk()
        return super().keys()

    def items(self) -> Any:
        self._walk()
        return super().items()


def test_a_chain_step_does_not_walk_every_pending_alert() -> None:
    """Review: each step of a chain (its next alert, the undelivered count) walked every
    pending alert: a backlog of 20,000 took minutes of the event loop to drain. Each
    chain's alerts are indexed, and the count kept from the pending and in-flight ones."""
    s = Setup(["down"] * 300)
    r = s.notifier.redelivery
    r.pending = NoWalk()
    s.receive(*[alert(f"a{i}-{k}", f"d{i}", change=f"c{k}") for i in range(300) for k in range(3)])
    r.done("a7-0")  # the index follows each change
    r.failed(alert("a8-0", "d8"), 0, s.clock[0])
    r.forget({1})
    r.load(0, [])
    assert len(r) == 899
    r.pending.walled = True
    assert r.first_of(r.pending["a7-2"]) is r.pending["a7-1"]
    assert r.first_of(r.pending["a9-1"]) is r.pending["a9-0"]
    assert r.first_of(r.pending["a8-2"]) is r.pending["a8-0"]
    s.notifier._in_flight.add("gone")
    s.notifier._count_undelivered()
    assert s.metric("driftwatch_alerts_undelivered") == 900.0
    r.pending.walled = False
    s.notifier._in_flight.clear()
    for _ in range(100):
        s.tick(900.0)
    assert not r and s.metric("driftwatch_alerts_undelivered") == 0.0
    assert s.hook.calls.count("a5-2") == 1 and s.record("a5-2")["s"] == "delivered"


def test_after_a_failed_write_the_table_is_not_read_again() -> None:
    """Review: a failed 'queued' write marked its partitions to be read again; the next
    batch rescanned the table outside the lock while this worker's rounds went on, and a
    round settled between the scan and the load was put back from its stale 'queued'
    record (sent again, after its chain's later alert). Now the failed batch's alerts are
    looked up one by one, and those the write took are held."""
    table = FailingOnceStore(fail=0, taken=1)
    s = Setup([], table=table)
    scans: list[int] = []
    table.while_scanning = lambda: scans.append(1)
    hook = SlowTenantWebhook([], s.clock)
    s.notifier.webhook = hook  # type: ignore[assignment]
    s.notifier.wait_seconds = 0.01

    async def scenario() -> None:
        hook.gate = asyncio.Event()
        first = s.events(
            alert("x", "d1", tenant="slow"), alert("y", "d1", tenant="slow", change="resolved")
        )
        await s.notifier.process_batch(first)  # x's round runs (slow), y waits behind it
        assert scans == [1]
        table.fail = 1
        events = s.events(alert("z", "d2"))
        with pytest.raises(RuntimeError):
            await s.notifier.process_batch(events)
        assert "z" in s.notifier.redelivery.pending  # the write took it: held
        await s.notifier.process_batch(events)  # read again: z a duplicate, no rescan
        assert scans == [1]
        hook.gate.set()
        await asyncio.gather(*s.notifier._tasks)
        s.clock[0] += 10.0
        await s.notifier.redeliver({0})
        await asyncio.gather(*s.notifier._tasks)

    asyncio.run(scenario())
    assert sorted(hook.calls) == ["x", "y", "z"] and hook.calls.index("x") < hook.calls.index("y")
    assert not s.notifier.redelivery and s.metric("driftwatch_alerts_undelivered") == 0.0


def test_a_round_that_ends_starts_the_oldest_alert_held_by_the_cap() -> None:
    """Review: under the cap, a freed slot went to the next batch's new alerts (or the
    timer, every 10 s): under a steady flow of new incidents with a slow endpoint the older
    alerts held waited for good. A round that ends starts the oldest held at once, and a
    batch starts no new alert while an older one held is due."""
    s = Setup([])
    hook = PerAlertGateWebhook([], s.clock)
    s.notifier.webhook = hook  # type: ignore[assignment]
    s.notifier.wait_seconds = 0.001
    s.notifier.max_rounds = 2

    async def scenario() -> None:
        await s.notifier.process_batch(
            s.events(alert("old1", "d1"), alert("old2", "d2"), alert("old3", "d3"))
        )
        assert hook.started == ["old1", "old2"]
        for k in range(1, 4):  # one round ends, then a new incident's alert comes
            s.clock[0] += 30.0
            hook.release(hook.started[k - 1])
            await asyncio.sleep(0.01)
            await s.notifier.process_batch(s.events(alert(f"new{k}", f"dn{k}")))
        # old3 took old1's slot as that round ended; new1 waited for a slot (old2's)
        assert hook.started[:5] == ["old1", "old2", "old3", "new1", "new2"]
        for name in list(hook.started):
            hook.release(name)
        while s.notifier._tasks:
            await asyncio.gather(*s.notifier._tasks)
            for name in list(hook.started):
                hook.release(name)

    asyncio.run(scenario())
    assert sorted(hook.calls) == ["new1", "new2", "new3", "old1", "old2", "old3"]
    assert not s.notifier.redelivery


class PerAlertGateWebhook(ScriptedWebhook):
    """Each alert's round waits until :meth:`release` d; :attr:`started`: in the order begun."""

    def __init__(self, script: list[str], clock: list[float]) -> None:
        super().__init__(script, clock)
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    def release(self, alert_id: str) -> None:
        self.gates.setdefault(alert_id, asyncio.Event()).set()

    async def deliver(self, a: Alert) -> AlertDelivery:
        self.started.append(a.alert_id)
        await self.gates.setdefault(a.alert_id, asyncio.Event()).wait()
        return await super().deliver(a)


def test_the_hours_of_redelivery_count_from_the_first_round_not_the_queueing() -> None:
    """Review: an alert held (the cap, its chain) for longer than the hours of redelivery
    was given up at its first failed round: ``since`` counted from its queueing. Old
    records (queued, or failed) still load as they were."""
    s = Setup(["down"], hours=1.0)
    r = s.notifier.redelivery
    queued = Redelivery.queued(alert("a1"), 0, T, 0)
    old_failed = Pending(alert("a2"), 0, T, 2, T + 100.0, 1)
    r.load(0, [queued.record("queued", 0, T), old_failed.record("failed", 8, T)])
    assert r.pending["a1"].since == T and r.pending["a2"].rounds == 2
    later = T + 2 * 3600.0  # its first round, two hours after its queueing, fails
    again = r.failed(alert("a1"), 0, later)
    assert again is not None and again.since == later and again.rounds == 1
    assert r.failed(alert("a2"), 0, later) is None  # failed first 2 h ago: given up
    off = Redelivery(0.0)  # redelivery off: a Retry-After asked still honoured
    off.queue(Redelivery.queued(alert("a3"), 0, T, 0))
    asked = off.failed(alert("a3"), 0, later, retry_after=120.0, asked=True)
    assert asked is not None and asked.due == later + 120.0
