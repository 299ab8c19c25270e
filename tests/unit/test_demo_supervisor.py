"""The demo restarts a process that ended itself on a stall, as a supervisor would."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from driftwatch import demo


class Scripted(demo.Supervised):
    """Runs short Python scripts instead of driftwatch commands."""

    def start(self, name: str, command: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", command])
        self.stack.callback(proc.kill)
        self[name], self.commands[name] = proc, command
        return proc


def wait(proc: subprocess.Popen[bytes]) -> None:
    proc.wait(timeout=30)


def test_stall_exit_is_restarted_other_exits_fail(tmp_path: Path) -> None:
    with ExitStack() as stack:
        procs = Scripted(tmp_path, {}, stack)
        first = procs.start("worker", "import sys; sys.exit(75)")
        wait(first)
        assert procs.failed() is None
        assert procs["worker"] is not first  # started again
        wait(procs["worker"])
        procs.start("retrain", "import sys; sys.exit(3)")
        wait(procs["retrain"])
        time.sleep(0.1)
        failure = procs.failed()
        assert failure == "retrain exited with code 3"
