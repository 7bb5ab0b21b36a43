"""Coordination between workers on one sqlite study, with real processes: the claim,
surplus trials, and one parent run and one summary for a study run by two workers."""

from __future__ import annotations

import errno
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from helpers import TINY, copy_project, subprocess_env
from typer.testing import CliRunner

from tagifai import coordination
from tagifai.best_params import read_best_params
from tagifai.cli import app
from tagifai.errors import ModelTooLarge, TagifaiError

pytestmark = pytest.mark.slow


def _claim_in_process(url: str, name: str, start: multiprocessing.synchronize.Event) -> bool:
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    start.wait(timeout=60)  # every process claims at once
    return coordination.claim(storage, name)


def test_exactly_one_process_wins_a_claim_and_no_study_appears(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(study_name="real", storage=url)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(4) as pool:
            pending = [
                pool.apply_async(_claim_in_process, (url, "real.mlflow-parent", start))
                for _ in range(4)
            ]
            start.set()
            results = [job.get(timeout=120) for job in pending]
    assert sorted(results) == [False, False, False, True]
    storage = optuna.storages.RDBStorage(url)
    assert coordination.claim(storage, "real.mlflow-parent") is False  # still taken
    assert coordination.claim(storage, "real.summary-1") is True  # another name is free
    # Claims live beside Optuna's tables, not as studies Optuna's clients would list.
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["real"]


def test_in_memory_claims_are_per_storage():
    first, second = optuna.storages.InMemoryStorage(), optuna.storages.InMemoryStorage()
    assert coordination.claim(first, "x") and not coordination.claim(first, "x")
    assert coordination.claim(second, "x")


WORKER = """
import sys, optuna
from tagifai import coordination
optuna.logging.set_verbosity(optuna.logging.ERROR)
url, n_trials = sys.argv[1], int(sys.argv[2])
study = optuna.load_study(study_name="surplus", storage=url)
ran = 0
while (trial := coordination.next_trial(study, n_trials, deadline=None)) is not None:
    study.tell(trial, trial.suggest_float("x", 0, 1))
    ran += 1
print(ran)
"""


def test_workers_never_run_more_than_n_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    optuna.create_study(study_name="surplus", storage=storage)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), url, "5"],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    ran = []
    for worker in workers:
        out, _ = worker.communicate(timeout=300)
        assert worker.returncode == 0
        ran.append(int(out.strip().splitlines()[-1]))
    study = optuna.load_study(study_name="surplus", storage=url)
    done = study.get_trials(states=coordination.DONE_STATES)
    assert len(done) == 5
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    # Every started trial is done or refused as surplus; none runs past the total.
    assert len(study.trials) == len(done) + len(surplus)
    assert sum(ran) == len(done)  # each done trial was run by exactly one worker
    assert all(t.state == optuna.trial.TrialState.FAIL for t in surplus)


def test_two_workers_share_one_parent_run_and_write_one_summary(workdir):
    copy_project(workdir)
    config = yaml.safe_load((workdir / "config" / "optimize.yaml").read_text())
    params = workdir / "tiny.json"
    params.write_text(json.dumps(TINY))
    config.update(
        study_name="pair",
        n_trials=4,
        params=str(params),
        sampler={"name": "Random", "kwargs": {}},
        pruner={"name": "Nop", "kwargs": {}},
        search_space={
            "architecture": {"ngram": {"lr": {"type": "float", "low": 0.01, "high": 0.1}}}
        },
    )
    (workdir / "pair.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "tagifai"),
            *("optimize", "--config", "pair.yaml", "--workers", "2"),
        ],
        env=subprocess_env(),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    url = f"sqlite:///{workdir / 'experiments' / 'optuna.db'}"
    study = optuna.load_study(study_name="pair", storage=url)
    assert len(study.get_trials(states=coordination.DONE_STATES)) == 4
    # Which worker ran which trial depends on timing (the helper starts seconds later);
    # every trial records one, and the helper exited 0 (checked above).
    assert all("worker" in t.user_attrs for t in study.trials)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["pair"]

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("pair")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == "pair"
    assert len(children) == 4
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert parents[0].info.status == "FINISHED"
    # The summary: written once, on the parent, and under config/.
    artifacts = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"best_params.json", "trials.csv", "plots"} <= artifacts
    best = read_best_params(workdir / "config" / "best_params.json")
    assert best.parent_run_id == parents[0].info.run_id
    assert best.value == study.best_value
    assert study.user_attrs["summary_trials"] == 4


@pytest.mark.training
def test_each_invocation_samples_with_its_own_seed(workdir, tiny_params_file):
    """The same command run twice on one study (two workers, or a resume) with one seed
    would repeat the random start-up trials; each invocation claims a seed of its own."""
    config = workdir / "twins.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "task": "text",
                "study_name": "twins",
                "n_trials": 3,
                "seed": 11,
                "params": str(tiny_params_file),
                "sampler": {"name": "Random"},
                "pruner": {"name": "Nop"},
                "search_space": {
                    "architecture": {
                        "ngram": {"dropout_p": {"type": "float", "low": 0.0, "high": 0.5}}
                    }
                },
            }
        )
    )
    runner = CliRunner()
    assert runner.invoke(app, ["optimize", "--config", str(config)]).exit_code == 0
    again = runner.invoke(app, ["optimize", "--config", str(config), "--n-trials", "6"])
    assert again.exit_code == 0, again.output
    study = optuna.load_study(
        study_name="twins", storage=f"sqlite:///{workdir}/experiments/optuna.db"
    )
    values = [t.params["dropout_p"] for t in study.trials]
    assert len(values) == 6 and len(set(values)) == 6  # no trial sampled twice
    assert [t.user_attrs["sampler_seed"] for t in study.trials] == [11, 11, 11, 12, 12, 12]


def _failing(error: Exception):
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0.0, 1.0)
        raise error

    return objective


def _work(study: optuna.Study, objective, n_trials: int) -> None:
    """The study loop's coordination pieces around a plain objective: next trial, tell,
    count failures (tagifai.study.run_study does the same around a workload)."""
    failures = coordination.Failures(study.study_name)
    while (trial := coordination.next_trial(study, n_trials, deadline=None)) is not None:
        error = None
        try:
            frozen = study.tell(trial, objective(trial))
        except Exception as exc:
            error = exc
            frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
        failures.count(frozen, error)


@pytest.mark.parametrize(
    ("error", "trials_run", "expected"),
    [
        # a bug or a fluke: three tries, then one line with the last error
        (
            RuntimeError("loss is nan"),
            3,
            "3 trials failed in a row, giving up; last: RuntimeError: loss is nan",
        ),
        # a problem of the config or data: every trial would meet it, so the first says it
        (TagifaiError("params.model.lr: must be finite"), 1, "params.model.lr: must be finite"),
        # sizes sampled too large together: that trial's problem, not the study's
        (ModelTooLarge("model: 3,365,851,148 parameters"), 3, "3 trials failed in a row"),
        # a full disk: stop at once (the CLI turns it into one line)
        (OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
    ],
    ids=["runtime-error", "config-error", "model-too-large", "disk-full"],
)
def test_failing_trials_stop_the_worker(error, trials_run, expected):
    study = optuna.create_study(direction="maximize")
    gives_up = trials_run == coordination.MAX_FAILURES_IN_A_ROW
    with pytest.raises(TagifaiError if gives_up else type(error)) as raised:
        _work(study, _failing(error), n_trials=10)
    assert expected in str(raised.value)
    assert len(study.trials) == trials_run
    assert all(t.state == optuna.trial.TrialState.FAIL for t in study.trials)


def test_trials_that_return_nan_stop_the_worker():
    """Optuna fails a trial whose value is NaN (a diverged loss) after the objective
    returned: three in a row stop the worker too, instead of a study that never fills."""
    study = optuna.create_study(direction="minimize")
    with pytest.raises(TagifaiError, match="3 trials failed in a row") as raised:
        _work(study, lambda trial: float("nan"), n_trials=5)
    assert "returned" in str(raised.value)
    assert len(study.trials) == 3
