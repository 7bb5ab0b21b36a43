"""Helpers shared by the tests (importable as ``helpers``: pytest puts tests/ on the path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


# A cheap text study over the tiny params: ngram only, lr and dropout searched, no pruner.
TINY_STUDY_YAML = """
task: text
study_name: {name}
n_trials: {n_trials}
seed: 3
params: {params}
sampler: {{name: Random}}
pruner: {{name: Nop}}
search_space:
  architecture:
    ngram:
      lr: {{type: float, low: 0.01, high: 0.05, log: true}}
      dropout_p: {{type: float, low: 0.0, high: 0.5, step: 0.1}}
"""


@contextmanager
def private_store(folder: Path) -> Iterator[str]:
    """Work in ``folder`` with its own sqlite MLflow store (for module-scoped fixtures, which
    cannot use the ``workdir`` fixture); yields the store's URI."""
    import mlflow

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            mlflow.tracking.fluent._active_experiment_id = None
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


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


@contextmanager
def http_server(command: list[str], folder: Path, ready_url: str, name: str) -> Iterator[None]:
    """Run ``command`` (a server on 127.0.0.1) until the block ends.

    Waits until ``ready_url`` answers 200 (the deadline is a safety net for a busy
    machine) and stops the server on leaving; its log is ``folder/<name>.log``.
    """
    log_path = folder / f"{name}.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            command, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    with urllib.request.urlopen(ready_url, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError):
                    pass
                assert server.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"{name} did not come up in 180 s"
                time.sleep(0.5)
            yield
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


@contextmanager
def model_server(model_uri: str, folder: Path) -> Iterator[str]:
    """``mlflow models serve`` for ``model_uri`` on 127.0.0.1; yields its /invocations URL.

    Its log is ``folder/serve.log``.
    """
    port = free_port()
    command = [
        str(REPO / ".venv" / "bin" / "mlflow"), "models", "serve", "-m", model_uri,
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with http_server(command, folder, f"{base}/ping", "serve"):
        yield f"{base}/invocations"


@contextmanager
def tagifai_server(model_uri: str, folder: Path, *options: str) -> Iterator[str]:
    """``tagifai serve`` for ``model_uri`` on 127.0.0.1; yields its /invocations URL.

    Its log is ``folder/tagifai-serve.log``.
    """
    port = free_port()
    command = [
        str(REPO / ".venv" / "bin" / "tagifai"), "serve", "--model-uri", model_uri,
        "--port", str(port), *options,
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with http_server(command, folder, f"{base}/ping", "tagifai-serve"):
        yield f"{base}/invocations"


def post_json(url: str, payload: object) -> tuple[int, dict]:
    """POST ``payload`` as JSON; the status and the decoded answer (errors included)."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
