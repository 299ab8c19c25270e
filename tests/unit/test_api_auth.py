"""The token store's reloads: any change of the tokens file's content is read, whatever its
modification time says."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from agents.api.auth import TokenStore, hash_token
from tests.api_fixtures import TOKENS, tokens_file


def _rewrite(path: Path, replace: dict[str, str]) -> None:
    """The file again with some tokens' hashes replaced (``name -> new token``): the same
    size, written in place (the same inode), its modification time put back as it was."""
    before = os.stat(path)
    data = json.loads(path.read_text())
    for entry in data["tokens"]:
        if entry["name"] in replace:
            entry["sha256"] = hash_token(replace[entry["name"]])
    path.write_text(json.dumps(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_mtime_ns, after.st_size, after.st_ino) == (
        before.st_mtime_ns, before.st_size, before.st_ino,
    )  # fmt: skip


def test_a_rewrite_the_modification_time_does_not_show_is_read(tmp_path: Path) -> None:
    """A token revoked (replaced) by a rewrite within the same tick of the filesystem's clock,
    or by a file that keeps an older modification time, was valid until the next change the
    clock showed: the content is what is compared now."""
    path = tokens_file(tmp_path)
    now = [0.0]
    store = TokenStore.load(path)
    store.clock = lambda: now[0]
    old = TOKENS["acme-read"][0]
    assert store.authenticate(old) is not None
    _rewrite(path, {"acme-read": "tok-acme-read-2"})
    now[0] += 1.0  # within check_every: not looked at yet
    assert store.authenticate(old) is not None
    now[0] += 2.0
    assert store.authenticate(old) is None, "the revoked token still let in"
    found = store.authenticate("tok-acme-read-2")
    assert found is not None and found.name == "acme-read"


def test_an_invalid_rewrite_keeps_the_tokens_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tokens_file(tmp_path)
    now = [0.0]
    store = TokenStore.load(path)
    store.clock = lambda: now[0]
    good = path.read_text()
    path.write_bytes(b'{"tokens": [\xff')
    with caplog.at_level(logging.ERROR, logger="agents.api.auth"):
        for _ in range(3):
            now[0] += 3.0
            assert store.authenticate(TOKENS["admin"][0]) is not None
    assert sum("is invalid" in r.getMessage() for r in caplog.records) == 1
    path.write_text(good.replace(hash_token(TOKENS["admin"][0]), hash_token("tok-admin-2")))
    now[0] += 3.0
    assert store.authenticate(TOKENS["admin"][0]) is None
    assert store.authenticate("tok-admin-2") is not None
