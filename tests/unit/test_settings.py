"""The detection settings are the config classes' fields: no default is written twice."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from dataclasses import Field, fields, replace
from pathlib import Path
from typing import Any

import pytest

import runtime.settings
from runtime.settings import CONFIGS, Settings, env_settings, settings_markdown
from streams.config import EngineConfig, PerformanceConfig

CONFIG_CLASSES: dict[str, type[EngineConfig] | type[PerformanceConfig]] = {
    "engine": EngineConfig,
    "performance": PerformanceConfig,
}


def config_settings() -> Iterator[tuple[str, Field[Any]]]:
    """(config, field) of every config field that is a setting."""
    for config, cls in CONFIG_CLASSES.items():
        for f in fields(cls):
            if "env" in f.metadata:
                yield config, f


SETTINGS = list(config_settings())


def other_value(cls: type[EngineConfig] | type[PerformanceConfig], f: Field[Any]) -> Any:
    """A valid value of ``f`` other than its default (the config validates the combination)."""
    d: Any = f.default
    if isinstance(d, bool):
        candidates: list[Any] = [not d]
    elif isinstance(d, str):
        candidates = ["acme:fraud pr_auc>=0.7"]
    elif isinstance(d, int):
        candidates = [d + 1, d * 2, d - 1]
    else:
        candidates = [d / 2, d * 2, d + 1, d * 0.9, d * 1.1]
    for value in candidates:
        try:
            cls(**{f.name: value})
        except ValueError:
            continue
        if value != d:
            return value
    raise AssertionError(f"no other valid value for {cls.__name__}.{f.name}")


def test_settings_cover_the_configs() -> None:
    assert CONFIGS == CONFIG_CLASSES
    assert len(SETTINGS) == 38  # 25 EngineConfig, 13 PerformanceConfig
    # a nested config is not a setting of its own; the wall-clock future limit is the worker's
    assert "env" not in {f.name: f for f in fields(PerformanceConfig)}["engine"].metadata
    assert "env" not in {f.name: f for f in fields(EngineConfig)}["max_future_seconds"].metadata


def test_variables_and_names_are_unique() -> None:
    specs = env_settings()
    assert len({s.env for s in specs}) == len(specs)
    assert len({s.name for s in specs}) == len(specs)
    own = {f.name for f in fields(Settings)}
    detection = {s.name for s in specs if s.config is not None}
    assert not own & detection, "a Settings field repeats a detection setting"


def test_no_detection_default_or_variable_is_written_in_settings() -> None:
    source = inspect.getsource(runtime.settings)
    for config, f in SETTINGS:
        assert f.metadata["env"] not in source, f"{config}.{f.name} is repeated in settings.py"


@pytest.mark.parametrize(("config", "f"), SETTINGS, ids=[f.metadata["env"] for _, f in SETTINGS])
def test_every_config_setting_is_in_the_table_with_its_own_default(
    config: str, f: Field[Any]
) -> None:
    default = "(empty)" if f.default == "" else f"`{f.default}`"
    row = f"| `{f.metadata['env']}` | {default} | {f.metadata['doc']} |"
    assert row in settings_markdown().splitlines()


@pytest.mark.parametrize(("config", "f"), SETTINGS, ids=[f.metadata["env"] for _, f in SETTINGS])
def test_annotation_matches_default_type(config: str, f: Field[Any]) -> None:
    # the environment is parsed by the default's type
    assert f.type == type(f.default).__name__


def test_empty_environment_gives_the_config_defaults() -> None:
    s = Settings.from_env(environ={})
    assert s.engine_config() == EngineConfig()
    assert s.performance_config() == PerformanceConfig()
    assert s.performance_config().engine is s.engine_config()


@pytest.mark.parametrize(("config", "f"), SETTINGS, ids=[f.metadata["env"] for _, f in SETTINGS])
def test_each_variable_changes_exactly_its_field(config: str, f: Field[Any]) -> None:
    value = other_value(CONFIG_CLASSES[config], f)
    s = Settings.from_env(environ={f.metadata["env"]: str(value)})
    engine = replace(EngineConfig(), **{f.name: value}) if config == "engine" else EngineConfig()
    performance = replace(PerformanceConfig(), engine=engine)
    if config == "performance":
        performance = replace(performance, **{f.name: value})
    assert s.engine_config() == engine
    assert s.performance_config() == performance
    # and by its setting name (overrides, config files)
    name = f.metadata["env"].removeprefix("DRIFTWATCH_").lower()
    assert Settings.from_env(environ={}, **{name: value}) == s
    assert s.as_dict()[name] == value


def test_names_kept_from_before() -> None:
    names = {s.name: (s.config, s.field) for s in env_settings()}
    assert names["perf_alpha"] == ("performance", "alpha")
    assert names["perf_min_labels"] == ("performance", "min_labels")
    assert names["perf_max_looks"] == ("performance", "max_looks")
    assert names["perf_sequential_alpha_share"] == ("performance", "sequential_alpha_share")
    assert names["alpha"] == ("engine", "alpha")
    assert names["join_retention_days"] == ("performance", "join_retention_days")
    assert names["max_future_seconds"] == (None, "max_future_seconds")
    assert names["join_outcomes"] == (None, "join_outcomes")


def test_own_settings_still_parse() -> None:
    s = Settings.from_env(
        environ={"DRIFTWATCH_JOIN_OUTCOMES": "off", "DRIFTWATCH_PARTITIONS": "8"},
        app_id="x",
    )
    assert (s.join_outcomes, s.partitions, s.app_id) == (False, 8, "x")
    assert s.engine_config() == EngineConfig()


def test_parse_errors_name_the_variable() -> None:
    with pytest.raises(ValueError, match="DRIFTWATCH_PERF_MIN_LABELS"):
        Settings.from_env(environ={"DRIFTWATCH_PERF_MIN_LABELS": "many"})
    with pytest.raises(ValueError, match="alpha must be"):
        Settings.from_env(environ={"DRIFTWATCH_PERF_ALPHA": "2"})
    with pytest.raises(ValueError, match="unknown setting"):
        Settings.from_env(environ={}, perf_alpah=0.1)
    for name in ("DRIFTWATCH_GC_THRESHOLD", "DRIFTWATCH_BACKTEST_GC_THRESHOLD"):
        for bad in ("-1", str(2**31)):  # gc.set_threshold would fail at the worker's start
            with pytest.raises(ValueError, match=f"^{name}="):
                Settings.from_env(environ={name: bad})
    for bad in ("-1", "8", str(32 * 1024 + 1)):  # outside glibc's documented range
        with pytest.raises(ValueError, match="DRIFTWATCH_MALLOC_MMAP_THRESHOLD_KB"):
            Settings.from_env(environ={"DRIFTWATCH_MALLOC_MMAP_THRESHOLD_KB": bad})
    with pytest.raises(ValueError, match="DRIFTWATCH_MALLOC_TRIM_SECONDS"):
        Settings.from_env(environ={"DRIFTWATCH_MALLOC_TRIM_SECONDS": "-5"})
    with pytest.raises(ValueError, match="DRIFTWATCH_MALLOC_TRIM_SECONDS"):
        Settings.from_env(environ={"DRIFTWATCH_MALLOC_TRIM_SECONDS": "0.01"})


def test_file_overlays_by_name_or_variable(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps(
            {
                "perf_alpha": 0.002,
                "DRIFTWATCH_PERF_MAX_LOOKS": 3,
                "alpha": 0.02,
                "DRIFTWATCH_API_PORT": 0,
            }
        )
    )
    s = Settings.from_env(environ={"DRIFTWATCH_WINDOW_SECONDS": "43200"}).with_file(config)
    assert s.engine_config() == EngineConfig(window_seconds=43200.0, alpha=0.02)
    assert s.performance_config() == PerformanceConfig(
        engine=s.engine_config(), alpha=0.002, max_looks=3
    )
    assert s.api_port == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("window_second = 1.0\n")
    with pytest.raises(ValueError, match="unknown setting 'window_second'"):
        s.with_file(bad)


def test_performance_follows_the_engine() -> None:
    s = Settings.from_env(environ={})
    t = replace(s, engine=EngineConfig(alpha=0.02))
    assert t.performance_config().engine == EngineConfig(alpha=0.02)
    assert t.performance_config().alpha == PerformanceConfig().alpha


def test_no_performance_objective_by_default() -> None:
    """A floor is a per-model objective an operator asks for (issue 12), never a default: a
    model always below 0.70 PR-AUC would otherwise open a breach from its first day."""
    assert PerformanceConfig().pr_auc_floor == 0.0


def _from_file(tmp_path: Path, name: str, text: str) -> Settings:
    path = tmp_path / name
    path.write_text(text)
    return Settings.from_env(environ={}).with_file(path)


def test_file_values_are_parsed_as_the_environment_s(tmp_path: Path) -> None:
    """A string in a config file is read as the same variable's would be; a native TOML/JSON
    value is taken where its type is the setting's (an integer for a float too)."""
    s = _from_file(
        tmp_path,
        "c.toml",
        'DRIFTWATCH_ALPHA = "0.05"\nDRIFTWATCH_MULTIVARIATE = "false"\n'
        'confirm_windows = "3"\nbaseline_end_days = 10\nDRIFTWATCH_PARTITIONS = 8\n'
        "create_topics = false\n",
    )
    assert s.engine.alpha == 0.05 and s.engine.multivariate is False
    assert s.engine.confirm_windows == 3 and s.partitions == 8 and s.create_topics is False
    assert s.engine.baseline_end_days == 10.0 and isinstance(s.engine.baseline_end_days, float)
    env = Settings.from_env(
        environ={"DRIFTWATCH_ALPHA": "0.05", "DRIFTWATCH_MULTIVARIATE": "false",
                 "DRIFTWATCH_CONFIRM_WINDOWS": "3", "DRIFTWATCH_BASELINE_END_DAYS": "10",
                 "DRIFTWATCH_PARTITIONS": "8", "DRIFTWATCH_CREATE_TOPICS": "false"}
    )  # fmt: skip
    assert s == env
    j = _from_file(tmp_path, "c.json", json.dumps({"multivariate": True, "perf_alpha": 0.002}))
    assert j.engine.multivariate is True and j.performance.alpha == 0.002
    whole = _from_file(tmp_path, "w.json", json.dumps({"partitions": 1e3}))  # JSON's 1000.0
    assert whole.partitions == 1000 and isinstance(whole.partitions, int)


def test_a_secret_s_value_is_never_repeated_in_a_file_error(tmp_path: Path) -> None:
    for text in ("sasl_password = 12345678\n", 'DRIFTWATCH_ALERT_WEBHOOK_URL = ["https://x/T0"]\n'):
        with pytest.raises(ValueError) as raised:
            _from_file(tmp_path, "c.toml", text)
        assert "12345678" not in str(raised.value) and "x/T0" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "DRIFTWATCH_CONFIRM_WINDOWS = 2.5",
            "DRIFTWATCH_CONFIRM_WINDOWS in {f}: expected an integer, got 2.5",
        ),
        ('DRIFTWATCH_CONFIRM_WINDOWS = "2.5"', "DRIFTWATCH_CONFIRM_WINDOWS in {f}: cannot parse"),
        ("DRIFTWATCH_CONFIRM_WINDOWS = true", "expected an integer, got True (a boolean)"),
        ("DRIFTWATCH_ALPHA = true", "DRIFTWATCH_ALPHA in {f}: expected a number, got True"),
        ('DRIFTWATCH_ALPHA = "lots"', "DRIFTWATCH_ALPHA in {f}: cannot parse 'lots'"),
        ("DRIFTWATCH_ALPHA = [0.05]", "DRIFTWATCH_ALPHA in {f}: expected a number, got [0.05]"),
        ("DRIFTWATCH_MULTIVARIATE = 0", "DRIFTWATCH_MULTIVARIATE in {f}: expected true or false"),
        ("app_id = 7", "app_id (DRIFTWATCH_APP_ID) in {f}: expected a string, got 7"),
        ("bootstrap_servers = 1", "(KAFKA_BOOTSTRAP_SERVERS) in {f}: expected a string"),
        ("DRIFTWATCH_ALPHA = 2.0", "alpha must be"),  # in range: the config's own check
        ("alpha = 0.1\nDRIFTWATCH_ALPHA = 0.2", "DRIFTWATCH_ALPHA given twice in {f}"),
        ("alpha = ", "{f}: "),  # not TOML
    ],
)
def test_file_values_of_the_wrong_type_are_refused(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "c.toml"
    with pytest.raises(ValueError) as raised:
        _from_file(tmp_path, path.name, text + "\n")
    message = str(raised.value)
    assert says.format(f=path) in message and str(path) in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ([1, 2], "expected a table of settings (name = value), got a list"),
        ("alpha", "got a string"),
        ({"DRIFTWATCH_CONFIRM_WINDOWS": 2.5}, "expected an integer, got 2.5"),
        ({"alpha": None}, "expected a number, got None (null)"),
        ({"partitions": 1.5}, "expected an integer"),
        ({"sasl_password": 12345678}, "(KAFKA_SASL_PASSWORD) in"),
        ({"tenants": ["a", "b"]}, "expected a string, got ['a', 'b'] (a list)"),
    ],
)
def test_json_file_values_of_the_wrong_type_are_refused(
    tmp_path: Path, data: object, says: str
) -> None:
    with pytest.raises(ValueError, match=r"c\.json") as raised:
        _from_file(tmp_path, "c.json", json.dumps(data))
    assert says in str(raised.value)


def test_webhook_urls_are_secrets() -> None:
    """A Slack webhook URL is its own credential: `driftwatch config` (and the API front's
    copy of the settings) show it as ``***``, as the SASL password."""
    url = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
    s = Settings.from_env(
        environ={"DRIFTWATCH_ALERT_WEBHOOK_URL": url,
                 "DRIFTWATCH_ALERT_WEBHOOK_TENANT_URLS": f"acme={url}2,globex=off"}
    )  # fmt: skip
    shown = s.as_dict(redact=True)
    assert shown["alert_webhook_url"] == shown["alert_webhook_tenant_urls"] == "***"
    assert url not in repr(s) and url not in json.dumps(shown)
    assert s.as_dict()["alert_webhook_url"] == url  # read as before
    assert Settings.from_env(environ={}).as_dict(redact=True)["alert_webhook_url"] == ""
    assert "`DRIFTWATCH_ALERT_WEBHOOK_URL` | (empty) |" in settings_markdown()
