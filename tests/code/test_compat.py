"""What a user of the earlier tagifai meets, and values that change type when validated:
an old study, an old champion, a deleted study made again, a categorical ``0``."""

from __future__ import annotations

import json

import mlflow
import optuna
import pytest
from helpers import TINY
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tagifai import jobs, study, tracking
from tagifai.best_params import read_best_params
from tagifai.cli import app
from tagifai.search import load_optimize_config

pytestmark = pytest.mark.training

STUDY = """
task: text
study_name: {name}
n_trials: 2
seed: 3
params: {params}
sampler: {{name: Random, kwargs: {{}}}}
pruner: {{name: Nop}}
search_space:
  architecture:
    linear:
      weight_decay: {{type: categorical, choices: [0, 1.0e-5]}}
      num_epochs: {{type: int, low: 3, high: 3}}
      max_ngrams: {{type: int, low: 4096, high: 4096}}
"""


def _config(workdir, name: str):
    params = workdir / "tiny.json"
    params.write_text(json.dumps(TINY))
    path = workdir / f"{name}.yaml"
    path.write_text(STUDY.format(name=name, params=params))
    return load_optimize_config(path)


def _run(workdir, name, sample_paths, storage):
    config, base, _ = _config(workdir, name)
    queued = study.open_study(config, storage)
    for value in (0, 1.0e-5):  # the integer 0 validates to the float 0.0
        queued.enqueue_trial({"architecture": "linear", "weight_decay": value})
    tracking.configure()
    dataset, splits = jobs.load_data(base, *sample_paths)
    best = workdir / f"{name}.json"
    return study.run_study(config, base, dataset, splits, storage=storage, best_params_file=best)


def test_a_sampled_value_that_validation_retypes_is_logged_once(workdir, sample_paths):
    result = _run(workdir, "retype", sample_paths, f"sqlite:///{workdir / 'optuna.db'}")
    assert [t.state.name for t in result.study.trials] == ["COMPLETE", "COMPLETE"]
    client = MlflowClient()
    logged = sorted(
        client.get_run(t.system_attrs["mlflow_run_id"]).data.params["weight_decay"]
        for t in result.study.trials
    )
    assert logged == ["0.0", "1e-05"]  # as the model used them (validated), once each


def test_a_study_deleted_and_made_again_gets_its_own_parent(workdir, sample_paths):
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    first = _run(workdir, "again", sample_paths, storage)
    optuna.delete_study(study_name="again", storage=storage)
    second = _run(workdir, "again", sample_paths, storage)
    # The first study's claim on its parent run does not hold for the new one.
    assert second.parent_run_id is not None and second.parent_run_id != first.parent_run_id
    run = MlflowClient().get_run(second.parent_run_id)
    assert run.info.status == "FINISHED"
    assert read_best_params(workdir / "again.json").parent_run_id == second.parent_run_id


def test_summarize_refuses_a_study_of_tagifai_0_1_before_touching_its_run(workdir):
    tracking.configure()
    with mlflow.start_run(run_name="old-parent") as parent:
        pass
    storage = f"sqlite:///{workdir / 'experiments' / 'optuna.db'}"
    (workdir / "experiments").mkdir(exist_ok=True)
    old = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    flat = {"architecture": "linear", "lr": 0.02, "num_epochs": 60}  # 0.1's flat params
    for key, value in {"base_params": flat, "metric": "val_f1", "data_digest": "abc"}.items():
        old.set_user_attr(key, value)
    old.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
    old.optimize(lambda trial: trial.suggest_float("lr", 0.01, 0.1), n_trials=1)
    result = CliRunner().invoke(app, ["summarize", "--study", "old"])
    assert result.exit_code == 2
    assert "made by tagifai 0.1" in result.output and "Traceback" not in result.output
    run = MlflowClient().get_run(parent.info.run_id)
    assert run.info.status == "FINISHED"  # untouched: not adopted, not marked FAILED
    assert "optuna.study_name" not in run.data.tags


def test_an_old_format_champion_is_replaced(workdir, sample_paths):
    result = _run(workdir, "fmt", sample_paths, f"sqlite:///{workdir / 'optuna.db'}")
    assert result.best is not None
    best = read_best_params(workdir / "fmt.json")
    dataset, splits = jobs.load_data(best.run_params(), *sample_paths)
    first = jobs.train_best(best, dataset, splits)
    client = MlflowClient()
    # Make version 1 look like tagifai 0.1's: no format tag, an unbeatable score.
    client.delete_model_version_tag("tagifai", first.version, "model_format")
    client.set_model_version_tag("tagifai", first.version, "test_f1", "0.99")
    second = jobs.train_best(best, dataset, splits)
    assert second.promoted and second.champion_score is None
    assert str(client.get_model_version_by_alias("tagifai", "champion").version) == second.version
    third = jobs.train_best(best, dataset, splits)  # same format, same score: no promotion
    assert not third.promoted and third.champion_score == pytest.approx(second.score)
