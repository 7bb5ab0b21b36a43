"""Local worker processes for ``tagifai optimize --workers N``.

The first process is a worker itself; it starts N - 1 more with the same resolved
settings (each then samples with a seed of its own, claimed in the study's storage).
Workers share the machine: each gets cores / N torch threads, and, with GPUs, one GPU
each in turn, so one trial runs per GPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tagifai.errors import TagifaiError
from tagifai.training import DEVICE_ENV, THREADS_ENV

__all__ = ["MAX_LOCAL_WORKERS", "WORKER_ENV", "is_helper", "local_workers"]

WORKER_ENV = "TAGIFAI_WORKER"  # set for the helper processes
MAX_LOCAL_WORKERS = 32  # each worker holds a copy of the data and a model: bound them


def is_helper() -> bool:
    """Whether this process was started by another as a helper worker."""
    return os.environ.get(WORKER_ENV) == "1"


def _devices(workers: int) -> list[str | None]:
    """A device per worker: GPUs in turn when there are any, else none (the default)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i % count}" if count else None for i in range(workers)]


@contextmanager
def local_workers(workers: int, command: list[str], seed: int) -> Iterator[None]:
    """Start ``workers - 1`` helpers running ``command`` and share the machine with them.

    Leaving the block waits for them; an exception inside (Ctrl-C, SIGTERM, an
    error) stops them first.

    Args:
        workers: Worker processes in all, this one included.
        command: ``tagifai optimize`` arguments (without ``--seed`` and ``--workers``).
        seed: The study's seed, passed to every helper (each invocation of a study
            samples with a seed of its own: ``coordination.worker_seed``).

    Raises:
        TagifaiError: If ``workers`` is out of bounds, or a helper failed.
    """
    if not 1 <= workers <= MAX_LOCAL_WORKERS:
        raise TagifaiError(f"--workers: {workers} is out of range 1..{MAX_LOCAL_WORKERS}")
    if workers == 1:
        yield
        return
    import torch

    threads = max(1, (os.cpu_count() or 1) // workers)
    torch.set_num_threads(threads)
    devices = _devices(workers)
    if devices[0] is not None:
        os.environ[DEVICE_ENV] = str(devices[0])
    helpers = []
    for i in range(1, workers):
        env = {**os.environ, WORKER_ENV: "1", THREADS_ENV: str(threads)}
        if devices[i] is not None:
            env[DEVICE_ENV] = str(devices[i])
        args = [sys.executable, "-m", "tagifai.cli", *command, "--seed", str(seed)]
        helpers.append(subprocess.Popen(args, env=env))
    try:
        yield
    except BaseException:
        for helper in helpers:
            helper.send_signal(signal.SIGTERM)
        raise
    finally:
        codes = [helper.wait() for helper in helpers]
    if any(codes):
        raise TagifaiError(f"optimize: {sum(1 for c in codes if c)} worker(s) failed: exit {codes}")
