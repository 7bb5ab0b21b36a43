"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Text params that train in about a second on the sample data.
TINY = {
    "task": "text",
    "model": {
        "architecture": "ngram",
        "max_ngrams": 4096,
        "embedding_dim": 32,
        "hidden_dim": 32,
        "dropout_p": 0.0,
        "lr": 0.05,
        "num_epochs": 3,
        "patience": 2,
        "batch_size": 64,
    },
}
# The same size for the CNN.
TINY_CNN = {
    "architecture": "cnn",
    "embedding_dim": 32,
    "hidden_dim": 32,
    "num_filters": 8,
    "max_filter_size": 2,
    "dropout_p": 0.0,
    "lr": 0.05,
    "num_epochs": 3,
    "patience": 2,
}


def copy_project(target: Path) -> Path:
    """A copy of the project's MLproject, env files and config (for `mlflow run` in isolation)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("MLproject", "conda.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, target / name)
    shutil.copytree(REPO / "config", target / "config", ignore=shutil.ignore_patterns("best_*"))
    return target


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process, with the venv's bin first on PATH."""
    inherited = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    env = {key: value for key, value in os.environ.items() if key not in inherited}
    env["PATH"] = f"{REPO / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


SERVERS = REPO / "scripts" / "servers.sh"


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
