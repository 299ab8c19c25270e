"""The operators' side of retraining: ``retrain-worker``, ``approve``/``reject``, ``models``,
``rollback`` and ``flags``. Approvals and flags go through the compacted ``retrain-control``
topic (the worker acts on them without a restart); ``models`` and ``rollback`` work on the
registry directly, so a rollback needs nothing else to be running."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from driftwatch import argtypes
from runtime.settings import Settings


def _deliver(producer: Any, topic: str, key: bytes, value: bytes, timeout: float) -> str | None:
    """Produce one message and wait for its delivery report: None when delivered, else why
    not (``flush()`` is 0 also for a message that timed out and was dropped)."""
    failures: list[str] = []

    def delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err.str() if hasattr(err, "str") else err))

    producer.produce(topic, key=key, value=value, on_delivery=delivery)
    if producer.flush(timeout) != 0:
        return failures[0] if failures else "no delivery report"
    return failures[0] if failures else None


def _control(settings: Settings, key: str, value: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    from runtime.kafka_connection import check_connection, confluent_config
    from runtime.topics import RETRAIN_CONTROL, prepare_topics, topic_specs
    from schemas import ControlMessage

    topic = settings.topic(RETRAIN_CONTROL)
    kafka = confluent_config(settings)
    check_connection(kafka, timeout=settings.kafka_connect_timeout)
    prepare_topics(settings, topic_specs(settings, [RETRAIN_CONTROL]), kafka)
    message = ControlMessage(key, value, time.time()).to_json()
    why = _deliver(Producer(kafka), topic, key.encode(), message, 30)
    if why is not None:
        raise SystemExit(f"driftwatch: could not deliver to {topic} ({why})")


def cmd_retrain_worker(args: argparse.Namespace, settings: Settings) -> int:
    from retrain.worker import run_retrain_worker

    return run_retrain_worker(settings)


def cmd_approve(args: argparse.Namespace, settings: Settings) -> int:
    decision = "approve" if args.command == "approve" else "reject"
    _control(
        settings,
        f"approval:{args.request_id}",
        {"decision": decision, "by": args.by, "note": args.note},
    )
    print(
        f"asked to {decision} {args.request_id}: the retrain worker acts on it from "
        "retrain-control if that request is awaiting approval (GET /v1/approvals lists them; "
        "its decision shows on retrain-events, anything else in its log)"
    )
    return 0


def cmd_flags(args: argparse.Namespace, settings: Settings) -> int:
    allowed = settings.tenant_allowlist
    if args.tenant and allowed and args.tenant not in allowed:  # a typo would switch nothing
        print(f"driftwatch: no tenant {args.tenant!r} in DRIFTWATCH_TENANTS "
              f"({', '.join(sorted(allowed))})", file=sys.stderr)  # fmt: skip
        return 2
    key = f"flag:tenant:{args.tenant}" if args.tenant else "flag:global"
    on = None if args.auto_retrain == "default" else args.auto_retrain == "on"
    _control(settings, key, {"auto_retrain": on, "by": args.by})
    print(f"{key}: auto_retrain={args.auto_retrain}")
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from retrain.registry import ModelRegistry

    registry = ModelRegistry(settings.registry_dir)
    out = []
    for tenant, model in registry.streams():
        if (args.tenant and tenant != args.tenant) or (args.model and model != args.model):
            continue
        active = registry.active(tenant, model)
        out.append(
            {
                "tenant": tenant,
                "model": model,
                "active": None if active is None else active.version,
                "versions": [v.to_dict() for v in registry.versions(tenant, model)],
                "history": registry.history(tenant, model),
            }
        )
    print(json.dumps(out, indent=2, default=str))
    return 0


ROLLBACK_DELIVERY_MS = 10_000
"""How long ``driftwatch rollback`` tries to announce the rollback on ``model-events``."""


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from confluent_kafka import Producer

    from retrain.registry import ModelRegistry, RegistryError
    from runtime.kafka_connection import ErrorWatch, confluent_config
    from runtime.topics import MODEL_EVENTS
    from schemas import MANUAL_ROLLBACK, ModelAction, ModelEvent

    # Bad Kafka settings stop it here, before the registry changes.
    kafka = confluent_config(settings, **{"message.timeout.ms": ROLLBACK_DELIVERY_MS})
    registry = ModelRegistry(settings.registry_dir)
    current = registry.active(args.tenant, args.model)
    target = args.to
    if target is None:
        prev = registry.previous_active(args.tenant, args.model)
        target = None if prev is None else prev.version
    if current is None or target is None:
        print("driftwatch: nothing to roll back to", file=sys.stderr)
        return 1
    if target == current.version:  # as the API refuses it: no switch, nothing to announce
        print(f"driftwatch: {target} is already the active version", file=sys.stderr)
        return 1
    reason = f"{MANUAL_ROLLBACK}{args.by}" + (f": {args.reason}" if args.reason else "")
    try:
        registry.activate(args.tenant, args.model, target, reason=reason)
    except RegistryError as exc:
        print(f"driftwatch: {exc}", file=sys.stderr)
        return 1
    event = ModelEvent(
        ModelAction.ROLLED_BACK, args.tenant, args.model, target, current.version, reason,
        time.time(), time.time(),
    )  # fmt: skip
    watch = ErrorWatch()  # librdkafka's lines: one reason, not a hundred lines on stderr
    try:
        producer = Producer({**kafka, "error_cb": watch, "logger": watch, "log.queue": True})
        why = _deliver(producer, settings.topic(MODEL_EVENTS), event.stream_key.encode(),
                       event.to_json(), 15)  # fmt: skip
    except Exception as exc:
        why = str(exc)
    print(f"{args.tenant}/{args.model}: {current.version} -> {target}")
    if why is not None:
        if why == "no delivery report":
            why = watch.fatal or watch.last or why
        print(
            f"driftwatch: rolled back, but model-events was not reachable ({why}): tell serving",
            file=sys.stderr,
        )
        return 3
    return 0


def add_commands(sub: Any) -> None:
    sub.add_parser(
        "retrain-worker", help="consume drift-events and retrain, validate, promote, roll back"
    ).set_defaults(func=cmd_retrain_worker)
    for name, what in (("approve", "approve"), ("reject", "reject")):
        p = sub.add_parser(name, help=f"{what} a retrain request awaiting approval")
        p.add_argument("request_id", type=argtypes.name)
        p.add_argument("--by", default="cli")
        p.add_argument("--note", default="")
        p.set_defaults(func=cmd_approve)
    p = sub.add_parser("flags", help="switch auto-retraining on or off, globally or per tenant")
    p.add_argument(
        "--auto-retrain", choices=["on", "off", "default"], required=True,
        help="default: clear the flag (a tenant's: the global one applies; the global one: "
        "each tenant's own flag, else DRIFTWATCH_AUTO_RETRAIN)",
    )  # fmt: skip
    p.add_argument(
        "--tenant",
        default=None,
        type=argtypes.name,
        help="only this tenant (default: the global flag)",
    )
    p.add_argument("--by", default="cli")
    p.set_defaults(func=cmd_flags)
    p = sub.add_parser("models", help="list model versions, the active one and the history")
    p.add_argument("--tenant", default=None, type=argtypes.name)
    p.add_argument("--model", default=None, type=argtypes.name)
    p.set_defaults(func=cmd_models)
    p = sub.add_parser("rollback", help="make the previous (or a given) version active")
    p.add_argument("--tenant", required=True, type=argtypes.name)
    p.add_argument("--model", required=True, type=argtypes.name)
    p.add_argument(
        "--to", default=None, type=argtypes.name, help="version (default: the one active before)"
    )
    p.add_argument("--by", default="cli")
    p.add_argument("--reason", default="")
    p.set_defaults(func=cmd_rollback)
