"""The registry stays consistent when promotions race and when train-best is killed.

A real sqlite MLflow store in ``tmp_path``; two real processes promote at the same
moment (both wait on a file the test creates), round after round; a real
``tagifai train-best`` is killed by SIGKILL right after it registers its version.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY, subprocess_env
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tagifai import jobs, registry, tracking
from tagifai.best_params import BestParams, write_best_params
from tagifai.cli import app
from tagifai.workloads.base import DecisionRule
from tagifai.workloads.text.params import TextParams

NAME = "tagifai"
SPLIT = "split-1"
ROUNDS = 8

# One promoter: for each round, wait for the round's go file, register a version with its
# score and try to promote it, then say it is done.
PROMOTER = """
import contextlib, sys, time
from pathlib import Path
import mlflow
from tagifai import registry

folder, uri, model_uri, run_id, score, rounds, mode = sys.argv[1:]
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
if mode == "settle":  # as against a tracking server: no lock, settle after writing
    registry.promotion_lock = lambda *a: contextlib.nullcontext(False)
for r in range(int(rounds)):
    go = Path(folder, f"go-{r}")
    while not go.exists():
        time.sleep(0.001)
    registry.register_version(
        "tagifai", model_uri, run_id, "champion", "test_f1", float(score), "split-1",
        False, {}, "", "2",
    )
    Path(folder, f"done-{r}-{score}").touch()
"""


@pytest.fixture
def logged_model(workdir: Path) -> tuple[str, str]:
    """One tiny logged model (its URI and run): every version in these tests points at it."""
    tracking.configure()
    params = TextParams.model_validate(TINY)
    dataset, splits = jobs.load_data(params, None, None)
    outcome = jobs.train_and_log(params, dataset, splits, "races")
    return outcome.model_uri, outcome.run_id


def _register(model_uri: str, run_id: str, score: float, force: bool = False) -> str:
    version, *_ = registry.register_version(
        NAME, model_uri, run_id, registry.CHAMPION, "test_f1", score, SPLIT, force, {}, "", "2"
    )
    return version


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    """Wait until ``path`` exists (or the process died: then fail with its output)."""
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"promoter exited {process.returncode}: {process.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        time.sleep(0.005)


@pytest.mark.parametrize("mode", ["lock", "settle"])
def test_racing_promotions_leave_the_better_model_champion(
    workdir: Path, logged_model: tuple[str, str], mode: str
) -> None:
    """0.9 and 0.5 promoted at the same moment over a 0.1 champion: 0.9 wins every round
    (under the store's lock, and, without one, by settling after the write)."""
    model_uri, run_id = logged_model
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient()
    common = [str(workdir), uri, model_uri, run_id]
    promoters = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, *common, score, str(ROUNDS), mode],
            env=subprocess_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        for score in ("0.9", "0.5")
    ]
    try:
        for r in range(ROUNDS):
            base = _register(model_uri, run_id, 0.1, force=True)  # a fresh 0.1 champion
            assert str(client.get_model_version_by_alias(NAME, "champion").version) == base
            (workdir / f"go-{r}").touch()  # both start at once
            for score, process in zip(("0.9", "0.5"), promoters, strict=True):
                _wait_for(workdir / f"done-{r}-{score}", process)
            champion = client.get_model_version_by_alias(NAME, "champion")
            assert champion.tags["test_f1"] == "0.9", f"round {r}: {champion.tags}"
            assert int(champion.version) > int(base)
    except BaseException:
        for process in promoters:
            process.kill()
        raise
    for process in promoters:
        assert process.wait(timeout=120) == 0


def _best_file(folder: Path, params: TextParams, study: str) -> Path:
    dataset, _ = jobs.load_data(params, None, None)
    best = BestParams(
        task="text",
        study_name=study,
        metric="val_f1",
        direction="maximize",
        value=0.5,
        trial_number=0,
        data_source=dataset.source,
        extra_source=dataset.extra_source,
        data_digest=dataset.digest,
        tuned={},
        params=params.model_dump(mode="json"),
        decision=DecisionRule(kind="threshold", thresholds=(0.5,)),
    )
    path = folder / "best_params.json"
    write_best_params(path, best)
    return path


def test_a_train_best_killed_after_registering_leaves_a_whole_version(workdir: Path) -> None:
    """SIGKILL right after registration: the version has all its tags (it was created with
    them), the champion is untouched, and the next train-best goes on normally."""
    tracking.configure()
    best = _best_file(workdir, TextParams.model_validate(TINY), "killed")
    args = [sys.executable, "-m", "tagifai.cli", "train-best", "--params", str(best)]
    env = subprocess_env(
        MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}", TAGIFAI_FAILPOINT="registered"
    )
    killed = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-3000:]

    client = MlflowClient()
    (version,) = client.search_model_versions(f"name = '{NAME}'")
    assert registry.is_complete(version)
    assert {"test_f1", "test_split", "model_format"} <= set(version.tags)
    assert not version.aliases  # killed before it could be promoted

    env.pop("TAGIFAI_FAILPOINT")
    done = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == "2" and registry.is_complete(champion)


def test_an_incomplete_version_is_refused_then_removed(
    workdir: Path, logged_model: tuple[str, str]
) -> None:
    """A version without its tags (registered by hand, or cut off inside MLflow): never
    loaded (one line), never compared with, and deleted by the next train-best."""
    model_uri, run_id = logged_model
    client = MlflowClient()
    client.create_registered_model(NAME)
    bare = str(client.create_model_version(NAME, model_uri, run_id=run_id).version)
    client.set_registered_model_alias(NAME, "champion", bare)  # even as champion

    for args in (
        ["check-model", f"models:/{NAME}/{bare}"],
        ["predict", "a text", "--model-uri", f"models:/{NAME}@champion"],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and f"version {bare} is incomplete" in lines[0], result.stderr

    version = _register(model_uri, run_id, 0.01)  # a poor score, but the only complete one
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == version

    best = _best_file(workdir, TextParams.model_validate(TINY), "cleanup")
    result = CliRunner().invoke(app, ["train-best", "--params", str(best)])
    assert result.exit_code == 0, result.output
    remaining = {str(v.version) for v in client.search_model_versions(f"name = '{NAME}'")}
    assert bare not in remaining and version in remaining
    assert json.loads(json.dumps(sorted(remaining)))  # the new train-best's version is there
    assert len(remaining) == 2
