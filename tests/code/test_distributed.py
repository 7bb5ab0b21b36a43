"""Several workers, one study: PostgreSQL-backed Optuna and a live MLflow tracking server
(both real, on 127.0.0.1), a worker killed with SIGKILL, and an unreachable server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from helpers import free_port, subprocess_env
from mlflow.tracking import MlflowClient

from tagifai.best_params import read_best_params
from tagifai.workloads.text.params import TextParams

STUDY = """
task: text
study_name: {name}
n_trials: {n_trials}
seed: 5
params: {params}
heartbeat_interval: 1
grace_period: 4
sampler: {{name: Random}}
pruner: {{name: Nop}}
search_space:
  architecture:
    ngram:
      lr: {{type: float, low: 0.001, high: 0.1, log: true}}
      dropout_p: {{type: float, low: 0.0, high: 0.5, step: 0.1}}
"""


def _config(tmp_path: Path, params_file: Path, n_trials: int) -> tuple[Path, str]:
    name = f"dist-{uuid.uuid4().hex[:8]}"
    path = tmp_path / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, n_trials=n_trials, params=params_file))
    return path, name


def _optimize(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tagifai.cli", "optimize", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _runs(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    return client.search_runs([found.experiment_id], max_results=1000)


@pytest.mark.server
@pytest.mark.training
@pytest.mark.slow
def test_two_workers_share_one_study_and_one_parent(servers, tmp_path, tiny_params_file):
    config, name = _config(tmp_path, tiny_params_file, n_trials=8)
    env = subprocess_env(MLFLOW_TRACKING_URI=servers["mlflow"])
    args = ["--config", str(config), "--storage", servers["pg"], "--workers", "2"]
    proc = _optimize(args, env, tmp_path)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name=name, storage=servers["pg"])
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 8
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert all(t.state.is_finished() for t in study.trials)
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2, workers  # both processes ran trials

    client = MlflowClient(tracking_uri=servers["mlflow"], registry_uri=servers["mlflow"])
    runs = _runs(client, name)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 8
    parent = parents[0]
    assert parent.info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.info.run_id for r in children} == {t.system_attrs["mlflow_run_id"] for t in complete}
    assert all(r.info.status in ("FINISHED", "KILLED", "FAILED") for r in runs)
    assert parent.info.status == "FINISHED"

    summary = read_best_params(
        client.download_artifacts(parent.info.run_id, "best_params.json", str(tmp_path))
    )
    assert summary.trial_number == study.best_trial.number
    assert summary.value == pytest.approx(study.best_value)
    assert summary.tuned == study.best_trial.params
    assert summary.parent_run_id == parent.info.run_id
    assert summary.mlflow_run_id == study.best_trial.system_attrs["mlflow_run_id"]
    # one summary, written once: no claim or lock shows up as a study of its own
    assert optuna.get_all_study_names(servers["pg"]).count(name) == 1
    assert not [n for n in optuna.get_all_study_names(servers["pg"]) if n.startswith(name + ".")]

    # What its summary says to run next works as printed: train-best with the study's
    # stores registers the best model against the tracking server.
    assert f"STUDY={name} STORAGE={servers['pg']} MLFLOW_TRACKING_URI={servers['mlflow']}" in output
    command = ["train-best", "--study", name, "--storage", servers["pg"]]
    best = subprocess.run(
        [sys.executable, "-m", "tagifai.cli", *command],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert best.returncode == 0, best.stdout[-3000:] + best.stderr[-3000:]
    run_id = best.stdout.split("run_id: ")[1].split()[0]
    versions = client.search_model_versions("name = 'tagifai'")
    assert [v.run_id for v in versions] == [run_id]
    assert versions[0].source.startswith("models:/m-")  # the logged model, by its id
    assert client.get_model_version_by_alias("tagifai", "champion").run_id == run_id


@pytest.mark.server
@pytest.mark.training
@pytest.mark.slow
def test_killed_worker_trial_fails_and_is_retried(servers, tmp_path, tiny_params):
    slow = tmp_path / "slow_params.json"  # trials long enough to be killed in the middle
    data = tiny_params.model_dump(mode="json")
    data["model"].update(num_epochs=120, patience=120)
    slow.write_text(json.dumps(TextParams.model_validate(data).model_dump(mode="json")))
    config, name = _config(tmp_path, slow, n_trials=4)
    env = subprocess_env(MLFLOW_TRACKING_URI=servers["mlflow"])
    args = ["--config", str(config), "--storage", servers["pg"]]
    victim = _optimize(args, env, tmp_path)
    survivor = _optimize(args, env, tmp_path)
    victim_id = f":{victim.pid}"
    killed_number = None
    deadline = time.monotonic() + 180
    while killed_number is None and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            study = optuna.load_study(study_name=name, storage=servers["pg"])
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # not created yet, or being created
            continue
        for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if trial.user_attrs.get("worker", "").endswith(victim_id) and trial.system_attrs.get(
                "mlflow_run_id"
            ):
                os.kill(victim.pid, signal.SIGKILL)
                killed_number = trial.number
                break
    assert killed_number is not None, "the victim never ran a trial"
    victim.wait(timeout=30)
    output, _ = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name=name, storage=servers["pg"])
    states = {t.number: t.state for t in study.trials}
    assert states[killed_number] == optuna.trial.TrialState.FAIL
    assert sum(s == optuna.trial.TrialState.COMPLETE for s in states.values()) == 4
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].state == optuna.trial.TrialState.COMPLETE
    assert retries[0].params == study.trials[killed_number].params

    client = MlflowClient(tracking_uri=servers["mlflow"])
    killed_run = client.get_run(study.trials[killed_number].system_attrs["mlflow_run_id"])
    assert killed_run.info.status == "FAILED"
    assert all(r.info.status != "RUNNING" for r in _runs(client, name))


def test_unreachable_tracking_server_fails_fast(tmp_path, tiny_params_file):
    config, name = _config(tmp_path, tiny_params_file, n_trials=2)
    dead = f"http://127.0.0.1:{free_port()}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tagifai.cli",
            "optimize",
            "--config",
            str(config),
            "--storage",
            storage,
        ],
        env=subprocess_env(MLFLOW_TRACKING_URI=dead),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,  # the command must give up within 30 s (MLflow alone would retry for minutes)
    )
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and dead in lines[0] and "unreachable" in lines[0], done.stderr
    # the study is left consistent: nothing was created
    assert not (tmp_path / "optuna.db").exists() or name not in optuna.get_all_study_names(storage)


@pytest.mark.server
def test_postgresql_asks_for_the_generated_password(servers, tmp_path):
    import psycopg

    pgpass = Path(servers["root"]) / "pgpass"
    assert pgpass.stat().st_mode & 0o777 == 0o600  # the owner's only
    url = servers["pg"]
    assert url.startswith("postgresql://postgres@")  # no password in the URL
    empty = tmp_path / "empty-pgpass"
    empty.write_text("")
    empty.chmod(0o600)
    env = {"PGPASSFILE": str(empty), "PGPASSWORD": ""}
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(url, connect_timeout=10, **_libpq(env)).close()
    with psycopg.connect(url, connect_timeout=10) as connection:  # PGPASSFILE: the real one
        assert connection.execute("select 1").fetchone() == (1,)


def _libpq(env: dict[str, str]) -> dict[str, str]:
    """libpq connection keywords for what the environment would say."""
    return {"passfile": env["PGPASSFILE"], "password": env["PGPASSWORD"]}


@pytest.mark.server
def test_a_worker_survives_a_postgresql_restart(servers):
    """The storage's pooled connections die with the server; pool_pre_ping replaces them,
    so the next call works instead of failing the trial."""
    from tagifai.search import OptimizeConfig
    from tagifai.study import make_storage

    name = f"restart-{uuid.uuid4().hex[:8]}"
    config = OptimizeConfig(study_name=name)
    storage = make_storage(servers["pg"], config)
    study = optuna.create_study(study_name=name, storage=storage)
    study.set_user_attr("before", 1)
    servers["run"]("pg-stop")
    servers["run"]("pg-start")
    study.set_user_attr("after", 2)  # the same storage object, a fresh connection
    trial = study.ask()
    study.tell(trial, 0.5)
    reloaded = optuna.load_study(study_name=name, storage=servers["pg"])
    assert reloaded.user_attrs == {"before": 1, "after": 2}
    assert len(reloaded.trials) == 1
    # The MLflow server on the same PostgreSQL reconnects too (the other tests use it).
    client = MlflowClient(servers["mlflow"])
    assert client.search_experiments(max_results=1) is not None


@pytest.mark.server
@pytest.mark.training
@pytest.mark.slow
def test_a_study_outlives_a_tracking_server_outage(servers, tmp_path, tiny_params):
    """The MLflow server stops for 30 s mid-study and comes back: the study goes on (MLflow's
    client retries), every trial ends with exactly one complete child run, nothing is left
    RUNNING, and the console says what happened in one line each way."""
    slow = tmp_path / "slow_params.json"  # trials of a few seconds, so the outage hits one
    data = tiny_params.model_dump(mode="json")
    data["model"].update(num_epochs=25, patience=25)
    slow.write_text(json.dumps(TextParams.model_validate(data).model_dump(mode="json")))
    config, name = _config(tmp_path, slow, n_trials=4)
    env = subprocess_env(MLFLOW_TRACKING_URI=servers["mlflow"])
    proc = _optimize(["--config", str(config), "--storage", servers["pg"]], env, tmp_path)
    deadline = time.monotonic() + 300  # a safety net: the loop ends on the study's state
    while time.monotonic() < deadline:
        try:
            study = optuna.load_study(study_name=name, storage=servers["pg"])
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):
            study = None
        if study is not None and any(t.state.is_finished() for t in study.trials):
            break
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.5)
    servers["run"]("mlflow-stop")
    time.sleep(30)  # the outage itself: the scenario's length, not a wait for an event
    servers["run"]("mlflow-start")
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]

    study = optuna.load_study(study_name=name, storage=servers["pg"])
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    client = MlflowClient(tracking_uri=servers["mlflow"])
    runs = _runs(client, name)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.info.run_name for r in children) == [f"trial-{n}" for n in range(4)]
    for trial in study.trials:
        run = client.get_run(trial.system_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert {"lr", "dropout_p"} <= set(run.data.params)
        assert run.data.metrics["val_f1"] == pytest.approx(trial.value)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch_val_f1")]
        assert sorted(steps) == list(range(1, trial.user_attrs["epochs"] + 1))
    assert all(r.info.status != "RUNNING" for r in runs)
    lines = output.splitlines()
    down = [line for line in lines if "is not answering" in line]
    back = [line for line in lines if "answers again" in line]
    assert len(down) == 1 and len(back) == 1, output[-3000:]
    assert not [line for line in lines if "Retrying (Retry(" in line]
