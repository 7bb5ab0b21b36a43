"""optimize: one parent run, one nested child per trial with truthful statuses,
best_params.json equal to the best trial, resume, seeded suggestions, config errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import optuna
import pytest
from helpers import REPO, copy_project, subprocess_env
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tagifai import jobs, optimize, tracking
from tagifai.cli import app
from tagifai.config import load_optimize_config

TINY_STUDY = """
study_name: {name}
n_trials: {n_trials}
seed: 3
params: {params}
sampler: {{name: Random}}
pruner: {{name: Median, kwargs: {{n_startup_trials: 2, n_warmup_steps: 0}}}}
search_space:
  lr: {{type: float, low: 0.00001, high: 0.05, log: true}}
  dropout_p: {{type: float, low: 0.0, high: 0.5, step: 0.1}}
"""


def _study_config(path: Path, params_file: Path, name: str, n_trials: int = 4) -> Path:
    path.write_text(TINY_STUDY.format(name=name, n_trials=n_trials, params=params_file))
    return path


def _runs(experiment_name: str) -> list[mlflow.entities.Run]:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id], max_results=1000)


STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


@pytest.mark.training
def test_study_is_one_parent_with_truthful_children(
    workdir, tiny_params_file, sample_paths, experiment_name, monkeypatch
):
    config_file = _study_config(workdir / "study.yaml", tiny_params_file, experiment_name, 5)
    config, base = load_optimize_config(config_file)

    # Fault injection: the trial that draws dropout 0.1 crashes; the study must go on.
    real_train = optimize.train

    def flaky_train(params, *args, **kwargs):
        if params.dropout_p == pytest.approx(0.1):
            raise RuntimeError("injected failure")
        return real_train(params, *args, **kwargs)

    monkeypatch.setattr(optimize, "train", flaky_train)
    tracking.configure()
    dataset, splits = jobs.load_data(base, *sample_paths)
    result = optimize.run_study(config, base, dataset, splits, sample_paths[1])
    study = result.study
    states = [trial.state.name for trial in study.trials]
    # n_trials counts completed and pruned trials: the failed one is made up for
    assert len(states) == 6 and states.count("FAIL") == 1
    assert {"COMPLETE", "PRUNED", "FAIL"} <= set(states)

    runs = _runs(experiment_name)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert [run.info.run_id for run in parents] == [result.parent_run_id]
    assert parents[0].info.status == "FINISHED"
    assert len(children) == len(study.trials)
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {result.parent_run_id}

    by_id = {run.info.run_id: run for run in children}
    client = MlflowClient()
    for trial in study.trials:
        run = by_id[trial.system_attrs["mlflow_run_id"]]
        assert run.info.status == STATUS[trial.state.name], trial.number
        assert run.data.tags["state"] == trial.state.name
        if trial.state.name != "FAIL":
            steps = [p.step for p in client.get_metric_history(run.info.run_id, "epoch_val_f1")]
            assert steps == list(range(1, len(steps) + 1)) and steps
            assert run.data.params["lr"] == str(trial.params["lr"])
        if trial.state.name == "COMPLETE":
            assert run.data.metrics["val_f1"] == pytest.approx(trial.value)
            assert 0.0 < run.data.metrics["threshold"] < 1.0
            assert "threshold" in trial.user_attrs

    best = study.best_trial
    written = json.loads((workdir / "config" / "best_params.json").read_text())
    assert written["trial_number"] == best.number
    assert written["value"] == pytest.approx(best.value)
    assert written["threshold"] == best.user_attrs["threshold"]
    assert written["tuned"] == best.params
    assert written["params"]["lr"] == best.params["lr"]
    assert written["mlflow_run_id"] == best.system_attrs["mlflow_run_id"]
    assert written["parent_run_id"] == result.parent_run_id

    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["best_run_id"] == best.system_attrs["mlflow_run_id"]
    assert parent.data.metrics["best_val_f1"] == pytest.approx(best.value)
    names = {item.path for item in client.list_artifacts(result.parent_run_id)}
    assert {"best_params.json", "trials.csv", "plots"} <= names
    plots = {item.path for item in client.list_artifacts(result.parent_run_id, "plots")}
    for plot in ("optimization_history", "param_importances", "parallel_coordinate", "contour"):
        assert f"plots/{plot}.html" in plots
    local = Path(mlflow.artifacts.download_artifacts(run_id=result.parent_run_id))
    # The offline page carries plotly.js once and every plot.
    offline = (local / "plots" / "all_offline.html").read_text(encoding="utf-8")
    assert offline.count("Plotly.newPlot") == len(plots) - 1
    assert 'src="https://cdn.plot.ly' not in offline and len(offline) > 1_000_000
    assert json.loads((local / "best_params.json").read_text()) == written


@pytest.mark.training
def test_rerun_resumes_the_same_study_and_parent(workdir, tiny_params_file, experiment_name):
    config_file = _study_config(workdir / "study.yaml", tiny_params_file, experiment_name, 2)
    runner = CliRunner()
    first = runner.invoke(app, ["optimize", "--config", str(config_file)])
    assert first.exit_code == 0, first.output
    runs_after_first = _runs(experiment_name)
    assert len(runs_after_first) == 3  # parent + 2 children

    again = runner.invoke(app, ["optimize", "--config", str(config_file)])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    assert len(_runs(experiment_name)) == 3

    more = runner.invoke(app, ["optimize", "--config", str(config_file), "--n-trials", "3"])
    assert more.exit_code == 0, more.output
    runs = _runs(experiment_name)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}
    study = optuna.load_study(study_name=experiment_name, storage=optimize.DEFAULT_STORAGE)
    assert [trial.number for trial in study.trials] == [0, 1, 2]
    first_ids = {run.info.run_id for run in runs_after_first}
    assert first_ids <= {run.info.run_id for run in runs}  # nothing lost or re-run
    assert all(run.info.status != "RUNNING" for run in runs)


def test_same_seed_same_suggestions(workdir, tiny_params_file):
    sequences = []
    for name in ("a", "b"):
        config, _ = load_optimize_config(
            _study_config(workdir / f"{name}.yaml", tiny_params_file, name), seed=7
        )
        config = config.model_copy(
            update={"sampler": config.sampler.model_copy(update={"name": "TPE"})}
        )
        study = optimize.open_study(config, storage=f"sqlite:///{workdir / 'seed.db'}")
        values = []
        for i in range(6):
            trial = study.ask()
            values.append(optimize.suggest(trial, config.search_space))
            study.tell(trial, float(i % 3))
        sequences.append(values)
    assert sequences[0] == sequences[1]


def test_config_error_exits_2_and_logs_nothing(workdir, tiny_params_file):
    bad = workdir / "bad.yaml"
    bad.write_text(
        f"params: {tiny_params_file}\nsearch_space:\n  lr: {{type: float, low: 0.1, high: 0.01}}\n"
    )
    result = CliRunner().invoke(app, ["optimize", "--config", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "bad.yaml" in lines[0] and "search_space.lr" in lines[0] and "low" in lines[0]
    assert not (workdir / "mlflow.db").exists()
    assert not (workdir / "experiments").exists()
    assert not (workdir / "config" / "best_params.json").exists()


@pytest.mark.slow
@pytest.mark.training
def test_mlflow_run_entry_point_adopts_its_run_as_parent(tmp_path, tiny_params_file):
    project = copy_project(tmp_path / "project")
    config_file = _study_config(tmp_path / "study.yaml", tiny_params_file, "viaproject", 2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        str(REPO / ".venv" / "bin" / "mlflow"), "run", str(project), "-e", "optimize",
        "--env-manager", "local", "--experiment-name", "viaproject",
        "-P", f"config={config_file}", "-P", f"storage=sqlite:///{tmp_path / 'optuna.db'}",
    ]  # fmt: skip
    done = subprocess.run(
        command, env=subprocess_env(MLFLOW_TRACKING_URI=uri), capture_output=True, text=True,
        timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    mlflow.set_tracking_uri(uri)
    runs = _runs("viaproject")
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.tags.get("mlflow.project.entryPoint") == "optimize"
    assert parent.info.status == "FINISHED"
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    assert (project / "config" / "best_params.json").is_file()
