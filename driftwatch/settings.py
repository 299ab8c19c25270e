"""All configuration, read once from environment variables (documented per field).

``driftwatch config`` prints the table in the README from these fields, so the docs cannot
drift from the code.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from streams.config import EngineConfig, PerformanceConfig


def _env(name: str, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"env": name, "doc": doc})


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str | None = _env(
        "KAFKA_BOOTSTRAP_SERVERS",
        None,
        "Kafka bootstrap servers (host:port,...). Unset: `demo` starts the embedded broker and "
        "other commands use 127.0.0.1:9092.",
    )
    app_id: str = _env(
        "DRIFTWATCH_APP_ID", "driftwatch", "Faust app id: consumer group and table-topic prefix."
    )
    topic_prefix: str = _env(
        "DRIFTWATCH_TOPIC_PREFIX",
        "",
        "Prefix for every topic name (isolates test runs on a shared cluster).",
    )
    data_dir: str = _env(
        "DRIFTWATCH_DATA_DIR", "var/driftwatch", "Where the worker keeps its RocksDB tables."
    )
    partitions: int = _env(
        "DRIFTWATCH_PARTITIONS", 4, "Partitions of the topics the worker creates."
    )
    replication: int = _env(
        "DRIFTWATCH_REPLICATION", 1, "Replication factor of the topics the worker creates."
    )
    session_timeout: float = _env(
        "DRIFTWATCH_SESSION_TIMEOUT",
        10.0,
        "Consumer-group session timeout, seconds (joins take about half).",
    )
    heartbeat_interval: float = _env(
        "DRIFTWATCH_HEARTBEAT_INTERVAL", 2.0, "Consumer heartbeat interval, seconds."
    )
    commit_interval: float = _env(
        "DRIFTWATCH_COMMIT_INTERVAL", 2.0, "Seconds between offset commits."
    )
    batch_size: int = _env(
        "DRIFTWATCH_BATCH_SIZE", 1000, "Most events the worker applies per batch."
    )
    batch_within: float = _env(
        "DRIFTWATCH_BATCH_WITHIN", 0.5, "Longest wait, seconds, to fill a batch."
    )
    metrics_port: int = _env(
        "DRIFTWATCH_METRICS_PORT", 9108, "Port of the Prometheus /metrics endpoint; 0 turns it off."
    )
    max_message_bytes: int = _env(
        "DRIFTWATCH_MAX_MESSAGE_BYTES",
        256 * 1024,
        "Larger input messages are dead-lettered as `oversized`.",
    )
    tenants: str = _env(
        "DRIFTWATCH_TENANTS", "", "Comma-separated tenant allow-list; empty accepts any tenant."
    )
    max_future_seconds: float = _env(
        "DRIFTWATCH_MAX_FUTURE_SECONDS",
        3600.0,
        "Events stamped further than this ahead of the wall clock are dead-lettered "
        "(`future_timestamp`).",
    )
    idle_timeout: float = _env(
        "DRIFTWATCH_IDLE_TIMEOUT_SECONDS",
        300.0,
        "A stream with no events for this many wall seconds has its event-time clock advanced by "
        "the wall time that passed, so its last windows still get tested.",
    )
    recovery_consistency_check: bool = _env(
        "DRIFTWATCH_RECOVERY_CONSISTENCY_CHECK",
        True,
        "Refuse to start when local table offsets are ahead of the changelog. Keep on with "
        "Apache Kafka; the embedded broker under-reports high watermarks, so the demo and "
        "tests on it turn this off.",
    )
    producer_max_batch_bytes: int = _env(
        "DRIFTWATCH_PRODUCER_MAX_BATCH_BYTES",
        16384,
        "Producer batch size. The embedded broker reports a partition's end as the start of "
        "its last batch, so Faust's changelog recovery on it skips the rest of that batch; "
        "tests that restore from the changelog there set 1 (one record per batch).",
    )
    log_level: str = _env("DRIFTWATCH_LOG_LEVEL", "INFO", "Log level.")
    # The HTTP API (agents/api)
    api_port: int = _env(
        "DRIFTWATCH_API_PORT",
        6066,
        "Port of the worker's HTTP API (/v1, /healthz, /readyz); 0 turns it off.",
    )
    api_bind: str = _env("DRIFTWATCH_API_BIND", "0.0.0.0", "Address the API listens on.")
    api_advertised_url: str = _env(
        "DRIFTWATCH_API_ADVERTISED_URL",
        "",
        "URL other workers reach this one's API at (requests for partitions it owns are "
        "forwarded there). Empty: http://<host name>:<port>.",
    )
    api_tokens_file: str = _env(
        "DRIFTWATCH_API_TOKENS_FILE",
        "",
        'JSON file of API tokens, SHA-256 hashes only: {"tokens": [{"name", "sha256", '
        '"tenants", "scopes"}]} (`driftwatch token` makes one). Re-read when it changes.',
    )
    api_auth: str = _env(
        "DRIFTWATCH_API_AUTH",
        "on",
        "`off` runs the API without tokens (every caller sees every tenant; logged at every "
        "start). Without it, the API refuses to start when no tokens file is set.",
    )
    api_rate_limit: float = _env(
        "DRIFTWATCH_API_RATE_LIMIT", 50.0, "Requests per second allowed per token (sustained)."
    )
    api_rate_burst: int = _env(
        "DRIFTWATCH_API_RATE_BURST", 100, "Requests a token may send at once above the rate."
    )
    api_cache_seconds: float = _env(
        "DRIFTWATCH_API_CACHE_SECONDS",
        1.0,
        "Answers computed from state are reused this long (state changes once per batch).",
    )
    api_max_body_bytes: int = _env(
        "DRIFTWATCH_API_MAX_BODY_BYTES", 65536, "Larger request bodies are refused (413)."
    )
    # Alerts (agents/alerts, agents/notify)
    alert_webhook_url: str = _env(
        "DRIFTWATCH_ALERT_WEBHOOK_URL",
        "",
        "Webhook that receives every alert (JSON POST, Slack-compatible `text`); empty = none.",
    )
    alert_webhook_tenant_urls: str = _env(
        "DRIFTWATCH_ALERT_WEBHOOK_TENANT_URLS",
        "",
        "Per-tenant webhooks, `tenant=url,tenant=url` (`off` for none), overriding the default.",
    )
    alert_webhook_secret_file: str = _env(
        "DRIFTWATCH_ALERT_WEBHOOK_SECRET_FILE",
        "",
        "File holding the HMAC-SHA256 key that signs each POST (`X-Driftwatch-Signature`).",
    )
    alert_webhook_max_attempts: int = _env(
        "DRIFTWATCH_ALERT_WEBHOOK_MAX_ATTEMPTS",
        8,
        "Delivery attempts per alert (exponential backoff up to 60 s) before it is recorded as "
        "failed on the alerts topic.",
    )
    # Detection (EngineConfig)
    window_seconds: float = _env(
        "DRIFTWATCH_WINDOW_SECONDS", 86400.0, "Event-time window length, seconds."
    )
    allowed_lateness_seconds: float = _env(
        "DRIFTWATCH_ALLOWED_LATENESS_SECONDS",
        3600.0,
        "A window is tested once event time passes its end by this much.",
    )
    baseline_start_days: float = _env(
        "DRIFTWATCH_BASELINE_START_DAYS",
        60.0,
        "Baseline: windows from this many days before the tested one ...",
    )
    baseline_end_days: float = _env(
        "DRIFTWATCH_BASELINE_END_DAYS", 30.0, "... to this many days before it."
    )
    min_baseline_windows: int = _env(
        "DRIFTWATCH_MIN_BASELINE_WINDOWS",
        3,
        "Baseline windows with data (of the same weekly phase) needed before testing.",
    )
    seasonal_period_days: float = _env(
        "DRIFTWATCH_SEASONAL_PERIOD_DAYS",
        7.0,
        "Compare a window only with baseline windows at the same phase of this period "
        "(daily windows: the same weekday); 0 turns it off.",
    )
    interim_seconds: float = _env(
        "DRIFTWATCH_INTERIM_SECONDS",
        3600.0,
        "Also test the still-open window every this many seconds of event time; 0 turns it off.",
    )
    interim_alpha_share: float = _env(
        "DRIFTWATCH_INTERIM_ALPHA_SHARE",
        0.5,
        "Share of alpha spent on the interim looks (split evenly); the final test keeps the rest.",
    )
    alpha: float = _env(
        "DRIFTWATCH_ALPHA", 0.01, "Significance level (false-discovery rate per model-window)."
    )
    min_effect_size: float = _env(
        "DRIFTWATCH_MIN_EFFECT_SIZE",
        0.05,
        "Smallest KS / total-variation distance that counts as drift.",
    )
    min_missing_rate_change: float = _env(
        "DRIFTWATCH_MIN_MISSING_RATE_CHANGE",
        0.05,
        "Smallest absolute change of a feature's missing rate that counts as drift.",
    )
    max_features_per_stream: int = _env(
        "DRIFTWATCH_MAX_FEATURES_PER_STREAM",
        500,
        "Events that would add features to a (tenant, model) beyond this are dead-lettered.",
    )
    min_window_count: int = _env(
        "DRIFTWATCH_MIN_WINDOW_COUNT", 50, "Features with fewer values in a window are not tested."
    )
    confirm_windows: int = _env(
        "DRIFTWATCH_CONFIRM_WINDOWS", 7, "Windows of persistence before an incident is confirmed."
    )
    resolve_windows: int = _env(
        "DRIFTWATCH_RESOLVE_WINDOWS", 2, "Consecutive clean windows that close an incident."
    )
    retention_days: float = _env(
        "DRIFTWATCH_RETENTION_DAYS", 62.0, "Window summaries older than this are deleted."
    )
    # --- performance drift (outcomes)
    join_outcomes: bool = _env(
        "DRIFTWATCH_JOIN_OUTCOMES",
        True,
        "Join outcomes to predictions and keep the performance history. Off for models that "
        "never get labels: the worker then does feature drift only (about 30 % faster).",
    )
    join_retention_days: float = _env(
        "DRIFTWATCH_JOIN_RETENTION_DAYS",
        30.0,
        "Days (event time) a prediction waits for its outcome, and an outcome for its "
        "prediction; later ones are dead-lettered (`expired`, `unknown_prediction`).",
    )
    perf_alpha: float = _env(
        "DRIFTWATCH_PERF_ALPHA",
        0.001,
        "False-alarm rate of performance drift per window and model version (all looks).",
    )
    perf_min_labels: int = _env(
        "DRIFTWATCH_PERF_MIN_LABELS",
        100,
        "Labels a window (per model version) needs before its performance is tested; it is "
        "tested again at each doubling.",
    )
    perf_max_looks: int = _env(
        "DRIFTWATCH_PERF_MAX_LOOKS", 6, "Performance tests per window before the final one."
    )
    label_horizon_days: float = _env(
        "DRIFTWATCH_LABEL_HORIZON_DAYS",
        7.0,
        "Days after a window's end before its final performance test (late labels).",
    )
    min_accuracy_drop: float = _env(
        "DRIFTWATCH_MIN_ACCURACY_DROP", 0.05, "Smallest accuracy drop that counts (absolute)."
    )
    min_pr_auc_drop: float = _env(
        "DRIFTWATCH_MIN_PR_AUC_DROP", 0.05, "Smallest PR-AUC drop that counts (absolute)."
    )
    pr_auc_floor: float = _env(
        "DRIFTWATCH_PR_AUC_FLOOR",
        0.70,
        "PR-AUC significantly below this is a CRITICAL performance drift (seed plan).",
    )
    perf_sequential_alpha_share: float = _env(
        "DRIFTWATCH_PERF_SEQUENTIAL_ALPHA_SHARE",
        0.25,
        "Share of the performance alpha spent on the sequential test of each window's error "
        "rate at every label (anytime-valid); the label-count looks share the rest. 0 turns "
        "it off.",
    )
    estimate_max_label_rate: float = _env(
        "DRIFTWATCH_ESTIMATE_MAX_LABEL_RATE",
        0.5,
        "Closed windows labelled less than this share get label-free (CBPE) estimates.",
    )

    # --- retraining (driftwatch retrain-worker)
    registry_dir: str = _env(
        "DRIFTWATCH_REGISTRY_DIR", "var/registry", "Model registry root (versions, active.json)."
    )
    auto_retrain: bool = _env(
        "DRIFTWATCH_AUTO_RETRAIN",
        False,
        "Initial global auto-retrain flag; switch it at runtime with `driftwatch flags`.",
    )
    retrain_kinds: str = _env(
        "DRIFTWATCH_RETRAIN_KINDS",
        "performance,statistical",
        "Drift kinds that may start a retraining (comma-separated).",
    )
    retrain_min_persistence: int = _env(
        "DRIFTWATCH_RETRAIN_MIN_PERSISTENCE",
        7,
        "Windows a confirmed incident must have persisted before it can trigger a retraining.",
    )
    approval_severity: str = _env(
        "DRIFTWATCH_APPROVAL_SEVERITY",
        "CRITICAL",
        "Drift of this severity or worse waits for `driftwatch approve`.",
    )
    retrain_cooldown_days: float = _env(
        "DRIFTWATCH_RETRAIN_COOLDOWN_DAYS",
        7.0,
        "At most one training per (tenant, model) per this many days of event time.",
    )
    retrain_min_new_labels: int = _env(
        "DRIFTWATCH_RETRAIN_MIN_NEW_LABELS",
        1000,
        "Labelled rows newer than the last training's data needed to train again.",
    )
    training_days: float = _env(
        "DRIFTWATCH_TRAINING_DAYS", 30.0, "Days of labelled predictions a training reads."
    )
    validation_share: float = _env(
        "DRIFTWATCH_VALIDATION_SHARE",
        0.2,
        "Newest share of the training data held out for the challenger and the champion.",
    )
    min_pr_auc: float = _env(
        "DRIFTWATCH_MIN_PR_AUC", 0.70, "A challenger needs at least this validation PR-AUC."
    )
    champion_margin: float = _env(
        "DRIFTWATCH_CHAMPION_MARGIN",
        0.01,
        "A challenger may be at most this much PR-AUC below the champion on the holdout.",
    )
    training_max_seconds: float = _env(
        "DRIFTWATCH_TRAINING_MAX_SECONDS", 600.0, "Wall-clock limit of one training."
    )
    training_max_memory_mb: int = _env(
        "DRIFTWATCH_TRAINING_MAX_MEMORY_MB", 4096, "Address-space limit of the training process."
    )
    post_deploy_hours: float = _env(
        "DRIFTWATCH_POST_DEPLOY_HOURS",
        24.0,
        "Hours of event time after a promotion whose predictions are checked.",
    )
    post_deploy_settle_days: float = _env(
        "DRIFTWATCH_POST_DEPLOY_SETTLE_DAYS",
        3.0,
        "Days after that window for its labels to arrive before the check passes.",
    )
    rollback_max_drop: float = _env(
        "DRIFTWATCH_ROLLBACK_MAX_DROP",
        0.05,
        "Roll back when the new version's accuracy is this much below its predecessor's.",
    )
    retrain_metrics_port: int = _env(
        "DRIFTWATCH_RETRAIN_METRICS_PORT", 9109, "Prometheus port of the retrain worker (0 = off)."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.name, f.default, raw)
        values.update(overrides)
        settings = cls(**values)
        settings.performance_config()  # validate early
        return settings

    def with_file(self, path: Path) -> Settings:
        """Overlay a TOML or JSON file of setting names (field names or env var names)."""
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        by_env = {f.metadata["env"]: f.name for f in fields(self)}
        names = {f.name for f in fields(self)}
        updates: dict[str, Any] = {}
        for key, value in data.items():
            name = by_env.get(key, key)
            if name not in names:
                raise ValueError(f"unknown setting {key!r} in {path}")
            updates[name] = value
        return replace(self, **updates)

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or "127.0.0.1:9092"

    @property
    def tenant_allowlist(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.tenants.split(",") if t.strip())

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            window_seconds=self.window_seconds,
            allowed_lateness_seconds=self.allowed_lateness_seconds,
            baseline_start_days=self.baseline_start_days,
            baseline_end_days=self.baseline_end_days,
            min_baseline_windows=self.min_baseline_windows,
            seasonal_period_days=self.seasonal_period_days,
            interim_seconds=self.interim_seconds,
            interim_alpha_share=self.interim_alpha_share,
            alpha=self.alpha,
            min_effect_size=self.min_effect_size,
            min_missing_rate_change=self.min_missing_rate_change,
            max_features_per_stream=self.max_features_per_stream,
            min_window_count=self.min_window_count,
            confirm_windows=self.confirm_windows,
            resolve_windows=self.resolve_windows,
            retention_days=self.retention_days,
        )

    def performance_config(self) -> PerformanceConfig:
        return PerformanceConfig(
            engine=self.engine_config(),
            alpha=self.perf_alpha,
            min_labels=self.perf_min_labels,
            max_looks=self.perf_max_looks,
            label_horizon_days=self.label_horizon_days,
            min_accuracy_drop=self.min_accuracy_drop,
            min_pr_auc_drop=self.min_pr_auc_drop,
            pr_auc_floor=self.pr_auc_floor,
            sequential_alpha_share=self.perf_sequential_alpha_share,
            estimate_max_label_rate=self.estimate_max_label_rate,
            join_retention_days=self.join_retention_days,
        )


def _coerce(name: str, default: Any, raw: str) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"setting {name}: cannot parse {raw!r}") from None
    return raw


def settings_markdown() -> str:
    """The configuration table for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = "" if f.default is MISSING or f.default is None else f"`{f.default}`"
        default = "(empty)" if f.default == "" else default
        rows.append(f"| `{f.metadata['env']}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)


README_TABLE = re.compile(
    r"(<!-- settings-table:start -->\n).*?(\n<!-- settings-table:end -->)", re.S
)


def update_readme(path: Path) -> bool:
    """Rewrite the README's settings table; True when it changed."""
    text = path.read_text()
    new = README_TABLE.sub(lambda m: m.group(1) + settings_markdown() + m.group(2), text)
    if new != text:
        path.write_text(new)
    return new != text
