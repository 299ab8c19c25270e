"""Schemathesis against the OpenAPI document, on the API over real detection state: generated
valid and invalid requests on every operation, with and without a token. No 5xx, ever; and
every response conforms to the document (status codes, content types, schemas)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from tests.api_fixtures import Harness, api_client

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    ]
)


def _st() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    assert found, "schemathesis (st) is a dev dependency"
    return found


def test_schemathesis_finds_no_server_error_and_no_nonconformance(tmp_path: Path) -> None:
    async def fuzz(h: Harness, token: str | None, examples: int) -> tuple[int, str]:
        schema_url = str(h.client.make_url("/v1/openapi.json"))
        base = str(h.client.make_url("/"))
        args = [
            _st(), "run", schema_url, "--url", base, "--checks", CHECKS,
            "--max-examples", str(examples), "--seed", "1", "--workers", "1",
            "--exclude-operation-id", "alert_stream",  # a WebSocket, not a request-response
            "--request-timeout", "20", "--generation-deterministic",
        ]  # fmt: skip
        if token is not None:
            args += ["--header", f"Authorization: Bearer {token}"]
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            cwd=tmp_path,  # its cache directory goes there, not into the repository
        )  # fmt: skip
        out, _ = await proc.communicate()
        return proc.returncode or 0, out.decode(errors="replace")

    async def main() -> None:
        async with api_client(tmp_path, rate=10_000.0, burst=10_000) as h:
            for token, examples in (("tok-admin", 40), ("tok-acme-read", 15), (None, 10)):
                code, out = await fuzz(h, token, examples)
                assert code == 0, out[-6000:]
                assert "passed" in out.lower() or "no issues found" in out.lower(), out[-3000:]
            # and it really exercised the operations
            assert h.api.metrics.api_requests._metrics  # requests were counted

    asyncio.run(main())
