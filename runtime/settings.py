"""All configuration, read once from environment variables (documented per field).

The worker's own settings (Kafka, API, alerts, retraining ...) are fields of ``Settings`` here.
The detection settings are the fields of ``streams.config.EngineConfig`` and
``PerformanceConfig`` that declare an environment variable (``streams.config.setting``): their
variable, default and doc are written there only, and ``Settings`` holds the two configs
(``Settings.engine``, ``Settings.performance``). ``env_settings()`` lists every variable;
each has a *name* too, for config files and ``from_env`` overrides: the field name for
``Settings``' own, the variable without ``DRIFTWATCH_``, lower-cased, for the detection ones
(so ``perf_alpha`` is ``PerformanceConfig.alpha``, and ``alpha`` is ``EngineConfig.alpha``).
Read them as ``settings.engine.alpha`` / ``settings.performance.alpha``; ``as_dict()`` has
them all by name.

``driftwatch config`` prints the table in the README from these fields, so the docs cannot
drift from the code.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any

from runtime.gc_tuning import BACKTEST_THRESHOLD, DEFAULT_THRESHOLD, MAX_GC_THRESHOLD
from runtime.malloc_arenas import MAX_MMAP_THRESHOLD_KB, MIN_MMAP_THRESHOLD_KB, MIN_TRIM_SECONDS
from streams.config import EngineConfig, PerformanceConfig
from streams.join import JoinConfig

MIN_FETCH_TIMEOUT_SECONDS = 5.0
"""A shorter fetch timeout would give up idle fetches, which wait up to 1.5 s for records."""
MIN_ROCKSDB_WORKER_MEMORY_MB = 4
"""2 MiB of cache and 2 of memtables at the least: the first 64 KiB arena blocks of 32 stores."""


def _env(name: str, default: Any, doc: str, *, secret: bool = False) -> Any:
    return field(
        default=default, repr=not secret, metadata={"env": name, "doc": doc, "secret": secret}
    )


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str | None = _env(
        "KAFKA_BOOTSTRAP_SERVERS",
        None,
        "Kafka bootstrap servers (host:port,...). Unset: `demo` starts the embedded broker and "
        "other commands use 127.0.0.1:9092.",
    )
    # Connection security (runtime/kafka_connection.py builds every client's from these)
    security_protocol: str = _env(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        "`PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` or `SASL_SSL` (SASL over TLS), for every "
        "Kafka client (the worker, the retrain worker, the CLI). Checked at start-up.",
    )
    sasl_mechanism: str = _env(
        "KAFKA_SASL_MECHANISM",
        "",
        "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with the SASL protocols.",
    )
    sasl_username: str = _env(
        "KAFKA_SASL_USERNAME", "", "SASL user name (an API key on Confluent Cloud)."
    )
    sasl_password: str = _env(
        "KAFKA_SASL_PASSWORD",
        "",
        "SASL password. Prefer `KAFKA_SASL_PASSWORD_FILE`: a variable shows in environment "
        "listings. Never printed (`driftwatch config` shows `***`).",
        secret=True,
    )
    sasl_password_file: str = _env(
        "KAFKA_SASL_PASSWORD_FILE",
        "",
        "File holding the SASL password (one line; a trailing newline is ignored), read at "
        "start-up. Set this or `KAFKA_SASL_PASSWORD`, not both.",
    )
    ssl_ca_location: str = _env(
        "KAFKA_SSL_CA_LOCATION",
        "",
        "PEM file of the CA certificate(s) that signed the brokers' certificates. Empty: the "
        "system's trust store (enough for Confluent Cloud and MSK).",
    )
    ssl_certificate_location: str = _env(
        "KAFKA_SSL_CERTIFICATE_LOCATION",
        "",
        "PEM client certificate, for brokers that authenticate clients by TLS (mutual TLS, "
        "e.g. MSK's TLS client authentication); needs `KAFKA_SSL_KEY_LOCATION`.",
    )
    ssl_key_location: str = _env(
        "KAFKA_SSL_KEY_LOCATION", "", "PEM private key of the client certificate."
    )
    ssl_key_password_file: str = _env(
        "KAFKA_SSL_KEY_PASSWORD_FILE",
        "",
        "File holding the password of an encrypted `KAFKA_SSL_KEY_LOCATION`.",
    )
    ssl_check_hostname: bool = _env(
        "KAFKA_SSL_CHECK_HOSTNAME",
        True,
        "Check that the broker's certificate names the host connected to. Turn off only for "
        "brokers reached by an address their certificate does not name.",
    )
    kafka_connect_timeout: float = _env(
        "DRIFTWATCH_KAFKA_CONNECT_TIMEOUT",
        10.0,
        "Seconds each command waits at start-up for the brokers to answer. A refused password "
        "or an untrusted certificate is reported at once, with the broker's reason.",
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
        "DRIFTWATCH_REPLICATION",
        1,
        "Replication factor of the topics driftwatch creates (its outputs, internal topics and "
        "table changelogs; 3 on a production cluster).",
    )
    min_insync_replicas: int = _env(
        "DRIFTWATCH_MIN_INSYNC_REPLICAS",
        0,
        "`min.insync.replicas` of the topics driftwatch creates (2 with replication 3); 0 leaves "
        "the broker's default.",
    )
    create_topics: bool = _env(
        "DRIFTWATCH_CREATE_TOPICS",
        True,
        "Create missing topics at start-up. `false` where topics are managed elsewhere: then "
        "the commands only check that every topic exists with the expected partition count, "
        "and stop with the list of what is missing or different.",
    )
    topic_retention_ms: str = _env(
        "DRIFTWATCH_TOPIC_RETENTION_MS",
        "",
        "`retention.ms` of the topics driftwatch creates, `topic=ms,...` by topic name without "
        "the prefix (e.g. `dead-letters=2592000000,drift-events=-1`; -1 keeps for ever); `*=ms` "
        "for all of them. Unset: the broker's default. Input topics (`predictions`, `outcomes`) "
        "get none (their owners decide); compacted topics (table changelogs, `retrain-control`) "
        "are never deleted by age; `retrain-events`, the retrain worker's state (read whole at "
        "each start), keeps everything (-1) unless named here itself (`*` does not reach it). A "
        "topic created before keeps its settings: `kafka-configs --alter --entity-type topics "
        "--entity-name retrain-events --add-config retention.ms=-1`.",
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
    state_flush_seconds: float = _env(
        "DRIFTWATCH_STATE_FLUSH_SECONDS",
        5.0,
        "Most seconds the drift agent keeps window state changes in memory before writing "
        "them to its table and changelog (also written after a batch that emitted drift "
        "events or alerts, when the decoded windows fill half the cache, a rebalance and a "
        "clean stop, and once the interval has passed without a batch: checked every second); "
        "commits wait for the write, so a crash re-reads, never loses, what was not written. "
        "0 writes after every batch.",
    )
    metrics_port: int = _env(
        "DRIFTWATCH_METRICS_PORT", 9108, "Port of the Prometheus /metrics endpoint; 0 turns it off."
    )
    metrics_bind: str = _env(
        "DRIFTWATCH_METRICS_BIND",
        "0.0.0.0",
        "Address the worker's and the retrain worker's /metrics endpoints listen on "
        "(127.0.0.1: this host only, as the API's DRIFTWATCH_API_BIND).",
    )
    max_message_bytes: int = _env(
        "DRIFTWATCH_MAX_MESSAGE_BYTES",
        256 * 1024,
        "Larger input messages are dead-lettered as `oversized`.",
    )
    max_batch_bytes: int = _env(
        "DRIFTWATCH_MAX_BATCH_BYTES",
        1024 * 1024,
        "Limit of a prediction batch envelope (larger ones are dead-lettered as `oversized`); "
        "1 MiB is about Kafka's default `max.message.bytes`.",
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
    stall_seconds: float = _env(
        "DRIFTWATCH_STALL_SECONDS",
        60.0,
        "Watchdog: a source partition with records past its committed offset whose commit has "
        "not moved for this long (or an event loop that has not turned for this long) is a "
        "stall: the worker logs what it saw, turns /readyz to failing and exits with code 75 "
        "for its supervisor to restart it. 0 turns the watchdog off.",
    )
    stall_batch_seconds: float = _env(
        "DRIFTWATCH_STALL_BATCH_SECONDS",
        300.0,
        "Watchdog: a batch still running after this many seconds is a stall; a shorter one "
        "holds the stall verdict back (a slow batch is not a stuck worker).",
    )
    stall_recovery_seconds: float = _env(
        "DRIFTWATCH_STALL_RECOVERY_SECONDS",
        1800.0,
        "Watchdog: a rebalance or table recovery still running after this many seconds is a "
        "stall (Faust can hang in one). Set it above the longest changelog restore you expect.",
    )
    fetch_timeout_seconds: float = _env(
        "DRIFTWATCH_FETCH_TIMEOUT_SECONDS",
        20.0,
        "A fetch the broker has not answered in this many seconds is given up: its connection "
        "is closed and the fetch sent again on a new one (counted as "
        '`driftwatch_consumer_guard_total{what="fetch_unanswered"}`). The client\'s own '
        "request timeout (Faust's, 90 s) is longer than the stall time, so without this an "
        "unanswered fetch ends in a watchdog restart. At least 5 (a fetch may wait 1.5 s for "
        "records by design); keep it under DRIFTWATCH_STALL_SECONDS; 0: the client's own "
        "timeout only.",
    )
    stop_timeout_seconds: float = _env(
        "DRIFTWATCH_STOP_TIMEOUT_SECONDS",
        60.0,
        "A worker that has begun to stop (SIGTERM) and has not finished after this many "
        "seconds ends itself with code 70 (with the broker gone, Faust's stop waits for it for "
        "good). Keep it under your supervisor's kill timeout only if you want the log line; "
        "0: no deadline.",
    )
    test_stall: str = _env(
        "DRIFTWATCH_TEST_STALL",
        "",
        "Testing only: `fetch:N` or `commit:N` makes the worker stop fetching (or stop "
        "committing) after N processed events, once per data directory, so tests can watch "
        "the watchdog recover it; `unanswered:N` leaves the next fetch after N events without "
        "an answer, as a broker that never answers would; `lose:N`, after N events, lets 100 "
        "more input records through and drops those fetched in the 2 s after on their way "
        "to the agents, as Faust's races do (`lose:N:P`: partition P's records only, the "
        "100 let through and those dropped; `lose:N:P:K`: K let through, not 100). Empty in "
        "production.",
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
        512 << 10,
        "Producer record batch size, for every topic the worker writes (the tables' "
        "changelogs too, unless `DRIFTWATCH_CHANGELOG_MAX_BATCH_BYTES` is set). The producer "
        "has one request in flight per broker, with at most one batch per partition in it, "
        "so the batch size bounds what a round trip carries: at Kafka's 16 KiB, the join's "
        "state and forwarded predictions took a round trip per 16 KiB, and a worker of "
        "1,000 features ran 1.3-1.5x slower on the embedded broker (docs/benchmarks.md). Keep "
        "it under the brokers' `message.max.bytes` and the topics' `max.message.bytes` (1 MiB "
        "by default): a batch is not split to fit.",
    )
    changelog_max_batch_bytes: int = _env(
        "DRIFTWATCH_CHANGELOG_MAX_BATCH_BYTES",
        0,
        "Record batch size of the tables' changelogs (0: the producer's).",
    )
    changelog_last_record_alone: bool = _env(
        "DRIFTWATCH_CHANGELOG_LAST_RECORD_ALONE",
        False,
        "Send the last record of each table write (per partition) in a changelog batch of its "
        "own. The embedded broker reports a partition's end as its last batch's first offset "
        "+ 1, so Faust's changelog recovery on it would skip the rest of that batch; with "
        "this on, the last batch holds one record and the end is exact. The tests that "
        "restore from the changelog there and `make demo` turn it on; Apache Kafka does not "
        "need it.",
    )
    standby_replicas: int = _env(
        "DRIFTWATCH_STANDBY_REPLICAS",
        0,
        "Standby copies of each table partition kept by the other workers of the app (Faust's "
        "default is 1). A standby is promoted when its owner dies, which spares replaying the "
        "changelog at a failover, but Faust's standby-to-active path is where its recovery "
        "races live; with 0 the new owner replays the changelog from its own offsets "
        "(docs/runbook.md, 'Failover').",
    )
    stream_buffer_size: int = _env(
        "DRIFTWATCH_STREAM_BUFFER_SIZE",
        0,
        "Most input messages an agent holds read but not yet processed (Faust's "
        "stream_buffer_maxsize; fetching a partition pauses at four fifths of it); 0: Faust's "
        "4,096. DRIFTWATCH_READ_AHEAD_MB bounds the same buffers by bytes, which is what "
        "keeps a backlog of envelopes from filling memory; a smaller count (twice the batch, "
        "join-input 30) once saw a fetch stall in a test under load.",
    )
    gather_ahead: bool = _env(
        "DRIFTWATCH_GATHER_AHEAD",
        True,
        "Let the input agents (predictions, outcomes, join, performance) gather their next "
        "batch, up to DRIFTWATCH_BATCH_SIZE messages and DRIFTWATCH_READ_AHEAD_MB of them, "
        "while a batch is processed, so Faust's per-message work fills the time a batch waits "
        "for the broker (bench.throughput: envelopes 1.09x; single events 1.05-1.1x, within "
        "the benchmark's spread). Those messages are acked only after their own batch, so a "
        "rebalance also waits for them: up to two batches instead of one. false: Faust's "
        "take_events, which reads nothing while a batch is out. With "
        "DRIFTWATCH_BULK_DELIVERY (which gathers ahead by itself) an agent's sink is bounded "
        "at twice its stream buffer's messages and bytes; false: once.",
    )
    bulk_delivery: bool = _env(
        "DRIFTWATCH_BULK_DELIVERY",
        True,
        "Hand the input agents' messages (predictions, outcomes, join, performance) from the "
        "fetch loop to their batches in bulk, past Faust's per-message path (its conductor, "
        "events, stream buffers and acks one by one: half a worker's interpreter time on "
        "single-event messages), with Faust's flow control, the offset guards and acks "
        "after each batch (agents.faust_compat.bulk_delivery). The messages wait in a sink "
        "per topic bounded as a stream buffer is (DRIFTWATCH_STREAM_BUFFER_SIZE, "
        "DRIFTWATCH_READ_AHEAD_MB), twice over with DRIFTWATCH_GATHER_AHEAD; a rebalance "
        "waits for the batch in flight only. false: Faust's path.",
    )
    read_ahead_mb: int = _env(
        "DRIFTWATCH_READ_AHEAD_MB",
        8,
        "Most MiB of message values an agent holds read but not yet processed (each agent's "
        "stream buffer; fetching pauses as it fills, as with DRIFTWATCH_STREAM_BUFFER_SIZE, "
        "which still bounds the messages). A message counts as its share of the buffer's "
        "places: single predictions as one, an envelope of 500 as 40-150. Without it, 4,096 "
        "envelopes (two million predictions) could wait in memory; at 64 a worker held ~90 MiB "
        "more and, through a backlog of envelopes, ran 1.5-1.9x slower (bench.throughput). "
        "With DRIFTWATCH_GATHER_AHEAD an agent also holds up to this much (and at least one "
        "message) gathered for its next batch while one is processed: twice this in all. "
        "0: messages only.",
    )
    downstream_backlog: int = _env(
        "DRIFTWATCH_DOWNSTREAM_BACKLOG",
        32,
        "Most unprocessed messages a partition of join-input or performance-input this worker "
        "owns may hold before the agents feeding it wait, before a batch and between its "
        "parts (up to DRIFTWATCH_DOWNSTREAM_MAX_WAIT_SECONDS each time): a backlog then stays "
        "in predictions and outcomes, where the consumer lag shows it, and the join and the "
        "performance monitor keep pace with the features. Keep it above a join batch "
        "(DRIFTWATCH_BATCH_SIZE / 64 messages): at 8 a model of 1,000 features ran at less "
        "than half the rate, the join waiting for batches the gate held back. 0: no agent "
        "waits (the later stages can fall behind without bound under a sustained load).",
    )
    downstream_max_wait_seconds: float = _env(
        "DRIFTWATCH_DOWNSTREAM_MAX_WAIT_SECONDS",
        10.0,
        "Longest wait, seconds, of an agent before a batch for the stages after it "
        "(DRIFTWATCH_DOWNSTREAM_BACKLOG): a stage that stopped does not stop the others.",
    )
    max_fetch_kb: int = _env(
        "DRIFTWATCH_MAX_FETCH_KB",
        1024,
        "Most KiB of messages one fetch brings per partition (Faust's consumer_max_fetch_size, "
        "aiokafka's max_partition_fetch_bytes). Fetched messages wait in the consumer until "
        "an agent's stream buffer (DRIFTWATCH_READ_AHEAD_MB) takes them, so this bounds the "
        "input held in memory beside the read-ahead: about this much per partition the "
        "worker reads. A message larger than this is still fetched, one at a time.",
    )
    max_poll_records: int = _env(
        "DRIFTWATCH_MAX_POLL_RECORDS",
        0,
        "Most records one fetch hands the worker (Faust's broker_max_poll_records); 0: no "
        "limit (Faust's default).",
    )
    recovery_delay_seconds: float = _env(
        "DRIFTWATCH_RECOVERY_DELAY_SECONDS",
        0.0,
        "Seconds a worker waits after a rebalance before restoring tables and resuming "
        "(Faust's stream_recovery_delay): with more than the session timeout, workers that "
        "join or leave at about the same time make one rebalance instead of several, at the "
        "cost of that much more takeover time.",
    )
    rocksdb_memory_mb: int = _env(
        "DRIFTWATCH_ROCKSDB_MEMORY_MB",
        16,
        "Memory of each RocksDB partition store (there are 4 tables x the partitions a worker "
        "holds), MiB: two write buffers of a quarter each and, only when "
        "DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB is 0, a block cache of half. Faust's defaults "
        "(3 x 64 MiB buffers and a 2 GiB cache each) let a worker's memory grow with its input.",
    )
    rocksdb_worker_memory_mb: int = _env(
        "DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB",
        32,
        "RocksDB memory of the whole worker, MiB, however many partitions it holds: one block "
        "cache of half, shared by every partition store, and a memtable budget of half (a "
        "soft bound: past it the stores being written flush early; one not written keeps "
        "what it holds). Index and filter blocks of the files on disk are outside it. 0: each "
        "store has its own cache (DRIFTWATCH_ROCKSDB_MEMORY_MB), so memory grows with the "
        "partitions.",
    )
    malloc_arenas: int = _env(
        "DRIFTWATCH_MALLOC_ARENAS",
        1,
        "The worker's C allocator arenas (glibc; set at start): each compute thread otherwise "
        "gets its own and keeps what it once held, and RSS grew for millions of events before "
        "it levelled off. One, shared by every thread: over 10M events RSS read 323-348 MiB in "
        "two runs, 323-362 in two with two arenas (the default until 2026-12-07), measured on "
        "2 cores; with many cores, 2 or more (docs/runbook.md). 0 leaves glibc's default (8 "
        "per core).",
    )
    malloc_mmap_threshold_kb: int = _env(
        "DRIFTWATCH_MALLOC_MMAP_THRESHOLD_KB",
        128,
        "Allocations of this many KiB or more get their own mapping in the worker, returned to "
        "the system when freed (glibc; set at start). glibc otherwise raises the threshold as "
        "large blocks are freed, and large transient buffers (envelopes, fetches) then grow a "
        "fragmented heap. 0 leaves glibc's adjusting threshold.",
    )
    malloc_trim_seconds: float = _env(
        "DRIFTWATCH_MALLOC_TRIM_SECONDS",
        30.0,
        "How often the worker hands the C allocator's free pages back to the system "
        "(glibc's malloc_trim, in a thread): freed batches otherwise leave the resident set at "
        "its high-water mark. 0: never.",
    )
    gc_threshold: int = _env(
        "DRIFTWATCH_GC_THRESHOLD",
        DEFAULT_THRESHOLD,
        "Net allocations between the garbage collector's young collections in the worker "
        "(CPython's default, 700, made full collections walk the "
        "engine's decoded windows often: a third of a 1,000-feature model's time; at 10,000, "
        "the default until the thirty-sixth round, a worker on envelopes collected for "
        "2.2-2.7 s of a 30 s run, 0.2-0.4 s at 100,000). Lower holds less cyclic garbage "
        "(a wide model's peak RSS) at more collections. 0 leaves CPython's.",
    )
    backtest_gc_threshold: int = _env(
        "DRIFTWATCH_BACKTEST_GC_THRESHOLD",
        BACKTEST_THRESHOLD,
        "The same for `driftwatch backtest` and `driftwatch report`, which run one input to "
        "its end: most of what a wide model's batch allocates outlives 10,000 allocations, "
        "and young collections then walk it all (a 1,000-feature backtest collected for 3.1 "
        "s of 31 at 10,000, 0.7 s at 100,000). 0 leaves CPython's.",
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
        '"tenants", "scopes"}]} (`driftwatch token` makes one). Re-read within 2 s of any '
        "change of its content (compared by hash: a rewrite its modification time does not "
        "show is read too).",
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
    api_stale_seconds: float = _env(
        "DRIFTWATCH_API_STALE_SECONDS",
        30.0,
        "After that, an answer is still served for this long while one fresh one is asked for "
        "in the background, so no request waits for a recomputation.",
    )
    api_max_body_bytes: int = _env(
        "DRIFTWATCH_API_MAX_BODY_BYTES", 65536, "Larger request bodies are refused (413)."
    )
    api_internal_port: int = _env(
        "DRIFTWATCH_API_INTERNAL_PORT",
        0,
        "Port on 127.0.0.1 of the worker's own API server. The public port is served by the "
        "API front, a child process that authenticates, rate-limits and caches without "
        "waiting for the worker, and forwards the rest here (only it may: a per-start "
        "secret). 0: a free port at each start.",
    )
    api_health_timeout: float = _env(
        "DRIFTWATCH_API_HEALTH_TIMEOUT_SECONDS",
        3.0,
        "/healthz and /readyz on the public port fail (503) when the worker does not answer "
        "the front within this many seconds.",
    )
    # Alerts (agents/alerts, agents/notify)
    alert_webhook_url: str = _env(
        "DRIFTWATCH_ALERT_WEBHOOK_URL",
        "",
        "Webhook that receives every alert (JSON POST, Slack-compatible `text`); empty = none. "
        "A secret (a Slack webhook URL is its own credential): `driftwatch config` shows `***`.",
        secret=True,
    )
    alert_webhook_tenant_urls: str = _env(
        "DRIFTWATCH_ALERT_WEBHOOK_TENANT_URLS",
        "",
        "Per-tenant webhooks, `tenant=url,tenant=url` (`off` for none), overriding the default. "
        "A secret: `driftwatch config` shows `***`.",
        secret=True,
    )
    alert_webhook_secret_file: str = _env(
        "DRIFTWATCH_ALERT_WEBHOOK_SECRET_FILE",
        "",
        "File holding the HMAC-SHA256 key that signs each POST (`X-Driftwatch-Signature`).",
    )
    alert_webhook_max_attempts: int = _env(
        "DRIFTWATCH_ALERT_WEBHOOK_MAX_ATTEMPTS",
        8,
        "Delivery attempts per alert in one round (full-jitter backoff from 0.5 s, doubling, "
        "or the endpoint's Retry-After; a round waits 30 s at most in all, so that it never "
        "holds the worker near its stall limit) before the round gives up. A round that fails "
        "on a retryable "
        "error (connection, timeout, 429, 5xx) is tried again later "
        "(DRIFTWATCH_ALERT_REDELIVERY_HOURS).",
    )
    alert_delivery_retention_days: float = _env(
        "DRIFTWATCH_ALERT_DELIVERY_RETENTION_DAYS",
        30.0,
        "Days an alert's delivery record is kept (what stops a message of `alerts` read "
        "again from being sent again); older ones are deleted every few hours, so the "
        "`alert-deliveries` table and the scan of a partition taken over stay bounded. Keep "
        "it above the `alerts` topic's retention if the notifier's offsets may be reset to "
        "its start. Pending alerts are never deleted. 0: kept for ever.",
    )
    alert_redelivery_hours: float = _env(
        "DRIFTWATCH_ALERT_REDELIVERY_HOURS",
        24.0,
        "An alert whose delivery round failed on a retryable error is tried again, a round "
        "every 1, 2, 4, 8 then 15 minutes, never before the endpoint's Retry-After asked (an "
        "hour at most), until delivered or this many hours after its first failure; then it "
        "is recorded as failed for good (`driftwatch_alert_deliveries_total"
        '{result="failed"}`). Pending alerts survive restarts and move with their partition; '
        "the later alerts of an incident wait behind one pending, in order. 0: no redelivery, "
        "but for a round ended by an endpoint's Retry-After longer than a round waits (30 s), "
        "honoured for an hour at most.",
    )
    alert_redelivery_first_seconds: float = _env(
        "DRIFTWATCH_ALERT_REDELIVERY_FIRST_SECONDS",
        60.0,
        "Wait before an alert's second delivery round; it doubles each round, up to 15 minutes.",
    )
    # Detection: one DRIFTWATCH_* variable per EngineConfig field that declares one
    # (streams/config.py `setting(...)`: variable, default and doc are written there only).
    engine: EngineConfig = field(default_factory=EngineConfig)
    # --- performance drift (outcomes)
    join_outcomes: bool = _env(
        "DRIFTWATCH_JOIN_OUTCOMES",
        True,
        "Join outcomes to predictions and keep the performance history. Off for models that "
        "never get labels: the worker then does feature drift only (about 1.35x the "
        "predictions a second with single events, 2.3x with envelopes of 500).",
    )
    join_stall_grace_seconds: float = _env(
        "DRIFTWATCH_JOIN_STALL_GRACE_SECONDS",
        JoinConfig().stall_grace_seconds,
        "Wall seconds a join partition waits without any outcome before its stored "
        "predictions expire by the predictions' clock alone (3 retentions behind it) rather "
        "than by the outcomes' too: until then a backlog of predictions read far ahead of "
        "its outcomes keeps its records for them, on disk (the join table grows by what "
        "the worker reads in this time). 0: at once, where outcomes never fall more than "
        "three retentions of event time behind the predictions (a backlog of predictions "
        "read after an outage can). The grace ends early where no outcome is on its way "
        "(DRIFTWATCH_JOIN_DRAIN_CHECK_SECONDS).",
    )
    join_drain_check_seconds: float = _env(
        "DRIFTWATCH_JOIN_DRAIN_CHECK_SECONDS",
        15.0,
        "Wall seconds between the worker's checks (on the broker) that no outcome is on its "
        "way to the join: the group has read every partition of outcomes to its end. A join "
        "partition then read past what was routed to it by that time ends its stall grace "
        "until an outcome comes (a model without labels need not keep the grace's worth of "
        "predictions). 0: no check, every partition waits out the whole grace.",
    )
    join_cache_mb: float = _env(
        "DRIFTWATCH_JOIN_CACHE_MB",
        JoinConfig().cache_mb,
        "Most MiB of decoded join records a worker keeps between batches, shared by the "
        "join partitions it holds (estimated at 5x their stored JSON): a record touched "
        "again soon (its outcome, a redelivery) is read back from RocksDB beyond it. "
        "Records of wide models are large (~90 KB decoded at 1,000 features); the count "
        "bound alone (16,384 a partition) let the cache reach gigabytes.",
    )
    # Performance drift: PerformanceConfig's settings, the same way. Its ``engine`` is always
    # the one above (__post_init__).
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)

    # --- retraining (driftwatch retrain-worker)
    test_crash_at: str = _env(
        "DRIFTWATCH_TEST_CRASH_AT",
        "",
        "Testing only: the retrain worker dies (as if killed) at this step of its first "
        "request (`decided`, `trained`, `validated`, `registered`, `activated`, `announced`, "
        "`promoted`, `watching`), once per registry directory. Empty in production.",
    )
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
    retrain_retry_seconds: float = _env(
        "DRIFTWATCH_RETRAIN_RETRY_SECONDS",
        60.0,
        "Wait before a person's retrain request left `waiting` (its training data could not "
        "be read) is tried again by the running retrain worker; it doubles each try, up to 15 "
        "minutes (or this, if longer); one request of a model at a time, the others of the "
        "model waiting with it. A start tries such requests at once, one a poll. Not while "
        "auto-retrain is off for everyone (tried once it is on). 0: only at a start.",
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

    def __post_init__(self) -> None:
        if 0 < self.fetch_timeout_seconds < MIN_FETCH_TIMEOUT_SECONDS:
            raise ValueError(
                f"DRIFTWATCH_FETCH_TIMEOUT_SECONDS={self.fetch_timeout_seconds:g}: at least "
                f"{MIN_FETCH_TIMEOUT_SECONDS:g} (a fetch may wait 1.5 s for records by design), "
                "or 0 for the client's own timeout"
            )
        kb = self.malloc_mmap_threshold_kb
        if kb and not MIN_MMAP_THRESHOLD_KB <= kb <= MAX_MMAP_THRESHOLD_KB:
            raise ValueError(
                f"DRIFTWATCH_MALLOC_MMAP_THRESHOLD_KB={kb}: from {MIN_MMAP_THRESHOLD_KB} to "
                f"{MAX_MMAP_THRESHOLD_KB} KiB (glibc's documented limit), or 0 for glibc's own"
            )
        trim = self.malloc_trim_seconds
        if trim and not trim >= MIN_TRIM_SECONDS:
            raise ValueError(
                f"DRIFTWATCH_MALLOC_TRIM_SECONDS={trim:g}: at least {MIN_TRIM_SECONDS:g} "
                "(a trim holds the allocator's locks while it walks the free memory), or 0 "
                "for never"
            )
        worker_mb = self.rocksdb_worker_memory_mb
        if worker_mb and not worker_mb >= MIN_ROCKSDB_WORKER_MEMORY_MB:
            raise ValueError(
                f"DRIFTWATCH_ROCKSDB_WORKER_MEMORY_MB={self.rocksdb_worker_memory_mb}: at least "
                f"{MIN_ROCKSDB_WORKER_MEMORY_MB} (the memtable budget is half of it), or 0 "
                "for a cache per partition store"
            )
        if self.max_fetch_kb < 1:
            raise ValueError(f"DRIFTWATCH_MAX_FETCH_KB={self.max_fetch_kb}: at least 1")
        if self.producer_max_batch_bytes < 1:
            raise ValueError(
                f"DRIFTWATCH_PRODUCER_MAX_BATCH_BYTES={self.producer_max_batch_bytes}: at least 1"
            )
        if self.changelog_max_batch_bytes < 0:
            raise ValueError(
                f"DRIFTWATCH_CHANGELOG_MAX_BATCH_BYTES={self.changelog_max_batch_bytes}: "
                "0 (the producer's) or more"
            )
        if not self.join_cache_mb >= 0:
            raise ValueError(f"DRIFTWATCH_JOIN_CACHE_MB={self.join_cache_mb:g}: 0 or more")
        if not self.alert_delivery_retention_days >= 0:  # (NaN too)
            raise ValueError(
                "DRIFTWATCH_ALERT_DELIVERY_RETENTION_DAYS="
                f"{self.alert_delivery_retention_days:g}: 0 (kept for ever) or more"
            )
        if not 0 <= self.state_flush_seconds <= 300:
            raise ValueError(
                f"DRIFTWATCH_STATE_FLUSH_SECONDS={self.state_flush_seconds:g}: 0 to 300"
            )
        if not self.join_drain_check_seconds >= 0:
            raise ValueError(
                f"DRIFTWATCH_JOIN_DRAIN_CHECK_SECONDS={self.join_drain_check_seconds:g}: 0 or more"
            )
        if not self.join_stall_grace_seconds >= 0:
            raise ValueError(
                f"DRIFTWATCH_JOIN_STALL_GRACE_SECONDS={self.join_stall_grace_seconds:g}: 0 or more"
            )
        for name, threshold in (
            ("DRIFTWATCH_GC_THRESHOLD", self.gc_threshold),
            ("DRIFTWATCH_BACKTEST_GC_THRESHOLD", self.backtest_gc_threshold),
        ):
            if not 0 <= threshold <= MAX_GC_THRESHOLD:
                raise ValueError(
                    f"{name}={threshold}: from 1 to {MAX_GC_THRESHOLD} allocations, or 0 for "
                    "CPython's own pace"
                )
        if self.performance.engine != self.engine:
            object.__setattr__(self, "performance", replace(self.performance, engine=self.engine))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from the environment; ``overrides`` by setting name (see ``env_settings``).
        Invalid detection settings raise ValueError here."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in env_settings():
            raw = env.get(spec.env)
            if raw is None or raw == "":
                continue
            values[spec.name] = _coerce(spec.env, spec.default, raw)
        values.update(overrides)
        return cls().updated(values)

    def with_file(self, path: Path) -> Settings:
        """Overlay a TOML (``.toml``) or JSON file of setting names (field names or env var
        names). Each value is checked as the environment's is (see ``_file_value``); any
        mistake is one ValueError line naming the file (and the setting)."""
        text = path.read_text()
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except ValueError as exc:  # TOMLDecodeError, JSONDecodeError
            raise ValueError(f"{path}: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{path}: expected a table of settings (name = value), got {_kind(data)}"
            )
        by_key = {spec.env: spec for spec in env_settings()}
        by_key.update({spec.name: spec for spec in env_settings()})
        updates: dict[str, Any] = {}
        for key, value in data.items():
            spec = by_key.get(key)
            if spec is None:
                raise ValueError(f"unknown setting {key!r} in {path}")
            if spec.name in updates:
                raise ValueError(f"setting {spec.env} given twice in {path}")
            updates[spec.name] = _file_value(spec, key, value, path)
        try:
            return self.updated(updates)
        except ValueError as exc:  # a value of the right type out of its range
            raise ValueError(f"{exc} (in {path})") from None

    def updated(self, values: Mapping[str, Any]) -> Settings:
        """A copy with ``values`` (by setting name, or ``engine`` / ``performance``) changed."""
        specs = {spec.name: spec for spec in env_settings()}
        own: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {group: {} for group in CONFIGS}
        for name, value in values.items():
            spec = specs.get(name)
            if spec is not None and spec.config is not None:
                nested[spec.config][spec.field] = value
            elif spec is not None or name in CONFIGS:
                own[name] = value
            else:
                raise ValueError(f"unknown setting {name!r}")
        new = replace(self, **own) if own else self
        engine = replace(new.engine, **nested["engine"])
        performance = replace(new.performance, engine=engine, **nested["performance"])
        return replace(new, engine=engine, performance=performance)

    def as_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """Every setting's value by name, in the order of the README's table; ``redact``
        shows a secret that is set as ``***``."""
        return {
            spec.name: "***" if redact and spec.secret and spec.value(self) else spec.value(self)
            for spec in env_settings()
        }

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or "127.0.0.1:9092"

    @property
    def tenant_allowlist(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.tenants.split(",") if t.strip())

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def engine_config(self) -> EngineConfig:
        return self.engine

    def performance_config(self) -> PerformanceConfig:
        return self.performance


CONFIGS: dict[str, type[EngineConfig] | type[PerformanceConfig]] = {
    "engine": EngineConfig,
    "performance": PerformanceConfig,
}
"""The ``Settings`` fields that hold a detection config, whose own fields carry the settings."""


@dataclass(frozen=True)
class EnvSetting:
    """One environment variable: a ``Settings`` field, or a field of one of its ``CONFIGS``."""

    name: str
    """Name in config files and ``from_env`` overrides (unique across all settings)."""
    env: str
    doc: str
    default: Any
    config: str | None
    """``engine`` / ``performance`` for a detection setting, None for ``Settings``' own."""
    field: str
    """The field holding it: of ``Settings``, or of the config."""
    secret: bool = False
    """A password, or a URL that is its own credential (a Slack webhook): never printed
    (``as_dict(redact=True)``, ``repr``)."""

    def value(self, settings: Settings) -> Any:
        holder = settings if self.config is None else getattr(settings, self.config)
        return getattr(holder, self.field)


@cache
def env_settings() -> tuple[EnvSetting, ...]:
    """Every setting, in the order of the README's table (a config's where it sits in
    ``Settings``).

    >>> [s.name for s in env_settings() if s.config == "performance"][:3]
    ['join_retention_days', 'perf_alpha', 'perf_min_labels']
    """
    out: list[EnvSetting] = []
    for f in fields(Settings):
        if f.name in CONFIGS:
            for cf in fields(CONFIGS[f.name]):
                if "env" in cf.metadata:
                    out.append(_spec(cf, _detection_name(cf.metadata["env"]), f.name))
        else:
            out.append(_spec(f, f.name, None))
    return tuple(out)


def _spec(f: Field[Any], name: str, config: str | None) -> EnvSetting:
    return EnvSetting(
        name,
        f.metadata["env"],
        f.metadata["doc"],
        f.default,
        config,
        f.name,
        bool(f.metadata.get("secret", False)),
    )


def _detection_name(env: str) -> str:
    if not env.startswith("DRIFTWATCH_"):
        raise ValueError(f"detection setting {env} must start with DRIFTWATCH_")
    return env.removeprefix("DRIFTWATCH_").lower()


def _coerce(env: str, default: Any, raw: str) -> Any:
    try:
        if isinstance(default, bool):
            return raw.strip().lower() in {"1", "true", "yes", "on"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ValueError(f"setting {env}: cannot parse {raw!r}") from None
    return raw


def _file_value(spec: EnvSetting, key: str, value: object, path: Path) -> Any:
    """A config file's ``value`` for ``spec``: a string parsed as the environment's would be
    (``_coerce``), or a TOML/JSON value of the setting's own type (an integer for a float
    setting too); anything else is a ValueError naming the setting and the file.

    >>> spec = next(s for s in env_settings() if s.name == "partitions")
    >>> _file_value(spec, "partitions", "3", Path("c.toml")), _file_value(spec, "p", 3, Path())
    (3, 3)
    >>> _file_value(spec, "partitions", 2.5, Path("c.toml"))
    Traceback (most recent call last):
    ...
    ValueError: setting partitions (DRIFTWATCH_PARTITIONS) in c.toml: expected an integer, ...
    """
    default = spec.default
    where = key if key == spec.env else f"{key} ({spec.env})"
    secret = spec.secret  # a secret's value is never repeated in a message
    if isinstance(value, str):
        try:
            return _coerce(spec.env, default, value)
        except ValueError:
            shown = "its value" if secret else repr(value)
            raise ValueError(f"setting {where} in {path}: cannot parse {shown}") from None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, bool):
        expected, ok = "true or false", isinstance(value, bool)
    elif isinstance(default, int):
        # a whole float too (JSON writers write 86400 as 86400.0)
        whole = isinstance(value, float) and value.is_integer()
        expected, ok = "an integer", number and (isinstance(value, int) or whole)
    elif isinstance(default, float):
        expected, ok = "a number", number
    else:  # text (also a setting whose default is None): only a string is unambiguous
        expected, ok = "a string", False
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
        shown = "a value" if secret else shown
        raise ValueError(
            f"setting {where} in {path}: expected {expected}, got {shown} ({_kind(value)})"
        )
    if isinstance(default, float):
        return float(value)  # type: ignore[arg-type]
    if isinstance(default, int) and not isinstance(default, bool):
        return int(value)  # type: ignore[call-overload]
    return value


def _kind(value: object) -> str:
    """What a TOML/JSON value is, in words.

    >>> _kind([1]), _kind(True), _kind(None)
    ('a list', 'a boolean', 'null')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {int: "an integer", float: "a float", str: "a string", list: "a list"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a table" if isinstance(value, dict) else f"a {type(value).__name__}"


def settings_markdown() -> str:
    """The configuration table for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for spec in env_settings():
        default = "" if spec.default is MISSING or spec.default is None else f"`{spec.default}`"
        default = "(empty)" if spec.default == "" else default
        rows.append(f"| `{spec.env}` | {default} | {spec.doc} |")
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
