"""Processes of the benchmarks: one job per (task, method, seed), thread limits."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import os
import time
from typing import Any


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process once ``parent_pid`` is no longer its parent.

    A benchmark killed from outside (``pkill -f benchmarks.pruning`` matches only the
    parent: the workers' command line is ``multiprocessing.spawn``) would otherwise leave
    its workers running, and they keep appending to a results log the user may already
    have replaced.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def run_jobs(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], n_jobs: int) -> None:
    """Run ``fn(*job)`` for every job, in ``n_jobs`` spawned processes (1 = in this process).

    A failing job is reported and does not stop the others. The workers end within a second
    of this process if it is killed.
    """
    if n_jobs <= 1:
        for job in jobs:
            fn(*job)
        return
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=n_jobs,
        mp_context=ctx,
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        futures = {pool.submit(fn, *job): job for job in jobs}
        for fut in concurrent.futures.as_completed(futures):
            exc = fut.exception()
            if exc is not None:
                print(f"job {futures[fut]} failed: {exc!r}", flush=True)


def limit_threads(n: int) -> None:
    """Limit torch (and BLAS through env vars for child processes) to ``n`` threads."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
