"""Shared fixtures: a private MLflow store and working directory per test, tiny params.

Every test that touches MLflow runs in its own ``tmp_path``: the tracking store
is ``sqlite:///<tmp>/mlflow.db``, the working directory is ``tmp_path`` (so
``experiments/`` and ``config/`` writes land there), and experiment names are
unique. Training tests use :func:`tiny_params`: a couple of epochs, small layers.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from helpers import TINY

from tagifai.workloads.text import WORKLOAD as TEXT
from tagifai.workloads.text.params import TextParams


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the test from ``tmp_path`` with its own MLflow store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield tmp_path
    while mlflow.active_run() is not None:
        mlflow.end_run()
    # mlflow.set_experiment leaves the experiment in the environment and module state.
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    mlflow.tracking.fluent._active_experiment_id = None


@pytest.fixture
def experiment_name() -> str:
    """A unique experiment name."""
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tiny_params() -> TextParams:
    """Text params that train in about a second on the sample data."""
    return TextParams.model_validate(TINY)


@pytest.fixture
def tiny_params_file(tmp_path: Path, tiny_params: TextParams) -> Path:
    """``tiny_params`` as a JSON file."""
    path = tmp_path / "tiny_params.json"
    path.write_text(json.dumps(tiny_params.model_dump(mode="json")))
    return path


@pytest.fixture
def sample_paths() -> tuple[str, str]:
    """The shipped sample data and taxonomy."""
    data, tags = TEXT.default_data()
    assert data is not None and tags is not None
    return data, tags
