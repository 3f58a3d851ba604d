"""The benchmarks' process pool: its workers do not outlive a killed benchmark."""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import pytest

ROOT = Path(__file__).resolve().parents[2]

_PARENT = """
import sys, time
from benchmarks import _jobs
_jobs.run_jobs(time.sleep, [(600,), (600,)], n_jobs=2)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as ended.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_workers_end_when_the_benchmark_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], cwd=ROOT)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
            pids = [int(p) for p in children.read_text().split()] if children.exists() else []
            workers = [p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(workers) == 2, "the pool did not start its 2 workers within 120 s"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # A worker still importing when its parent dies ends once its initializer runs:
        # on a loaded machine that can take tens of seconds.
        deadline = time.monotonic() + 90
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in workers), "a worker outlived the killed benchmark"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
