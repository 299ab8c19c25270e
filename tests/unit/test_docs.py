"""The README's configuration table is the one the code generates."""

from __future__ import annotations

import re
from pathlib import Path

from runtime.settings import Settings, settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        r"<!-- settings-table:start -->\n(.*)\n<!-- settings-table:end -->", readme, re.S
    )
    assert match, "README lost its settings table markers"
    assert match.group(1) == settings_markdown(), "run: driftwatch config --update-readme README.md"


def test_settings_from_env_and_file(tmp_path: Path) -> None:
    s = Settings.from_env(
        environ={
            "DRIFTWATCH_ALPHA": "0.05",
            "DRIFTWATCH_PARTITIONS": "8",
            "DRIFTWATCH_TENANTS": "a, b",
        }
    )
    assert s.engine.alpha == 0.05 and s.partitions == 8
    assert s.tenant_allowlist == frozenset({"a", "b"})
    config = tmp_path / "c.toml"
    config.write_text("DRIFTWATCH_CONFIRM_WINDOWS = 3\nbaseline_end_days = 10\n")
    s2 = s.with_file(config)
    assert s2.engine_config().confirm_windows == 3
    assert s2.engine_config().baseline_end_days == 10


def test_bad_settings_are_rejected() -> None:
    import pytest

    with pytest.raises(ValueError):
        Settings.from_env(environ={"DRIFTWATCH_ALPHA": "lots"})
    with pytest.raises(ValueError):
        Settings.from_env(environ={"DRIFTWATCH_BASELINE_END_DAYS": "90"})
    with pytest.raises(ValueError, match="FETCH_TIMEOUT"):  # idle fetches wait 1.5 s
        Settings.from_env(environ={"DRIFTWATCH_FETCH_TIMEOUT_SECONDS": "1"})
    off = Settings.from_env(environ={"DRIFTWATCH_FETCH_TIMEOUT_SECONDS": "0"})
    assert off.fetch_timeout_seconds == 0
