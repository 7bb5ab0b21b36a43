"""One `tagifai train` = one MLflow run with params, step metrics, artifacts and a model
that reloads in a fresh process; same seed, same metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from packaging.requirements import Requirement
from typer.testing import CliRunner

from tagifai import jobs, runs, tracking
from tagifai.cli import app
from tagifai.errors import TagifaiError
from tagifai.logged_models import PIP_REQUIREMENTS
from tagifai.predict import Predictor
from tagifai.training import NullReporter
from tagifai.workloads.text import WORKLOAD as TEXT
from tagifai.workloads.text.params import TextParams

pytestmark = pytest.mark.training


def _with_model(params: TextParams, **model: Any) -> TextParams:
    """``params`` with its model's knobs replaced (validated: a typo fails here)."""
    knobs = {**params.model.model_dump(), **model}
    return TextParams.model_validate({**params.model_dump(), "model": knobs})


def _linear(params: TextParams, **knobs: Any) -> TextParams:
    """``params`` with a small linear model (the tiny n-gram vocabulary size)."""
    model = {"architecture": "linear", "max_ngrams": params.model.max_ngrams, **knobs}
    return TextParams.model_validate({**params.model_dump(), "model": model})


def _train(params: TextParams, sample_paths: tuple[str, str], experiment: str) -> jobs.TrainOutcome:
    tracking.configure()
    dataset, splits = jobs.load_data(params, *sample_paths)
    return jobs.train_and_log(params, dataset, splits, experiment_name=experiment)


def test_train_logs_one_complete_run(workdir, tiny_params, sample_paths, experiment_name):
    outcome = _train(tiny_params, sample_paths, experiment_name)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    found = client.search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in found] == [outcome.run_id]
    run = found[0]
    assert run.info.status == "FINISHED"

    # every param, as logged: the model's knobs, flat, and the data preparation as data.*
    assert run.data.params["lr"] == str(tiny_params.model.lr)
    assert run.data.params["architecture"] == "ngram"
    assert run.data.params["task"] == "text"
    assert run.data.params["data.min_tag_freq"] == str(tiny_params.data.min_tag_freq)
    assert "nb_scale" not in run.data.params  # a linear-only knob: not this model's
    assert int(run.data.params["train_rows"]) > int(run.data.params["test_rows"]) > 0
    assert int(run.data.params["prep_projects_dropped"]) > 0

    # per-epoch step metrics, one point per epoch trained
    epochs = int(run.data.metrics["epochs_run"])
    for key in ("epoch_train_loss", "epoch_val_loss", "epoch_val_f1"):
        history = client.get_metric_history(outcome.run_id, key)
        assert [point.step for point in history] == list(range(1, epochs + 1))

    # final test metrics and the threshold
    assert run.data.metrics["test_f1"] == pytest.approx(outcome.test_metrics["overall"]["f1"])
    assert 0.0 < run.data.metrics["threshold"] < 1.0
    assert outcome.decision is not None
    assert run.data.metrics["threshold"] == pytest.approx(outcome.decision.summary)

    # artifacts: predictor.json (params, classes, decision rule) replaces the 0.1 files
    names = {item.path for item in client.list_artifacts(outcome.run_id)}
    assert {"predictor.json", "performance.json"} <= names
    assert not names & {"params.json", "encoder.json", "label_encoder.json"}
    local = Path(mlflow.artifacts.download_artifacts(run_id=outcome.run_id))
    predictor_json = json.loads((local / "predictor.json").read_text())
    assert predictor_json["task"] == "text"
    assert predictor_json["params"]["model"]["lr"] == tiny_params.model.lr
    assert TextParams.model_validate(predictor_json["params"]) == tiny_params
    assert predictor_json["decision"]["kind"] == "threshold"
    assert predictor_json["decision"] == outcome.decision.model_dump(mode="json")
    performance = json.loads((local / "performance.json").read_text())
    assert set(performance) == {"overall", "class", "slices"}
    assert {"short_text", "long_text", "multi_tag"} == set(performance["slices"])
    assert set(performance["class"]) == set(predictor_json["classes"])

    # data digest and git commit are recorded
    assert run.data.tags["data_digest"] == run.inputs.dataset_inputs[0].dataset.digest
    assert run.data.tags["git_commit"]

    # `tagifai evaluate` re-scores the run on the same test rows, found by the digests
    again = jobs.evaluate_run(outcome.run_id, None, None)
    assert again["overall"]["f1"] == pytest.approx(outcome.test_metrics["overall"]["f1"])
    client.set_tag(outcome.run_id, "test_split", "0123456789abcdef")
    with pytest.raises(TagifaiError, match="0123456789abcdef"):
        jobs.evaluate_run(outcome.run_id, None, None)


def test_logged_model_reloads_in_a_fresh_process(
    workdir, tiny_params, sample_paths, experiment_name
):
    outcome = _train(tiny_params, sample_paths, experiment_name)
    script = (
        "import mlflow, pandas as pd, json, sys\n"
        f"m = mlflow.pyfunc.load_model('runs:/{outcome.run_id}/model')\n"
        "out = m.predict(pd.DataFrame({'text': ['object detection with yolo', 'bert for nlp']}))\n"
        "tags, probs = out['tags'].tolist(), out['probabilities'].tolist()\n"
        "training_only = [n for n in ('optuna', 'iterstrat', 'sklearn') if n in sys.modules]\n"
        "print(json.dumps({'tags': tags, 'probs': probs, 'training_only': training_only}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    classes = json.loads(
        (
            Path(mlflow.artifacts.download_artifacts(run_id=outcome.run_id)) / "predictor.json"
        ).read_text()
    )["classes"]
    assert len(payload["tags"]) == 2
    # The model's requirements are what loading and predicting import, nothing more.
    assert payload["training_only"] == []
    model_dir = Path(mlflow.artifacts.download_artifacts(f"runs:/{outcome.run_id}/model"))
    logged = (model_dir / "requirements.txt").read_text().split()
    assert [Requirement(line) for line in logged] == [
        Requirement(line) for line in PIP_REQUIREMENTS
    ]
    # The model carries the package's modules, not its sample data nor caches.
    package = model_dir / "code" / "tagifai"
    code = sorted(str(path.relative_to(package)) for path in package.rglob("*") if path.is_file())
    assert {"predict.py", "pyfunc_model.py", "workloads/text/__init__.py"} <= set(code)
    assert all(name.endswith(".py") or name == "py.typed" for name in code), code
    for tags, probs in zip(payload["tags"], payload["probs"], strict=True):
        probabilities = probs  # an object of tag -> probability, not a JSON string
        assert isinstance(probabilities, dict) and set(probabilities) == set(classes)
        assert all(0.0 <= p <= 1.0 for p in probabilities.values())
        assert set(tags) <= set(classes)


def test_same_seed_same_metrics(workdir, tiny_params, sample_paths, experiment_name):
    first = _train(tiny_params, sample_paths, experiment_name)
    second = _train(tiny_params, sample_paths, experiment_name)
    assert first.run_id != second.run_id
    assert first.test_metrics == second.test_metrics
    client = MlflowClient()
    history = [
        [point.value for point in client.get_metric_history(run_id, "epoch_val_loss")]
        for run_id in (first.run_id, second.run_id)
    ]
    assert history[0] == history[1]


def test_early_stopping_keeps_best_validation_weights(tiny_params, sample_paths):
    params = _with_model(tiny_params, num_epochs=60, patience=3, lr=0.05)
    dataset = TEXT.load_data(*sample_paths, params)
    splits = TEXT.split(dataset, params)
    result = TEXT.train(params, dataset, splits, NullReporter())
    best = max(range(len(result.history)), key=lambda i: result.history[i]["val_f1"])
    assert result.best_epoch == best + 1
    assert result.best_epoch < result.epochs_run  # it trained past the best, then went back
    # the kept weights reproduce the best epoch's validation F1, not the last epoch's
    assert result.val_metrics["val_f1"] == pytest.approx(result.history[best]["val_f1"])


def test_cli_train_prints_run_id_and_metrics(workdir, tiny_params_file, monkeypatch):
    elsewhere = f"sqlite:///{workdir / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    result = CliRunner().invoke(app, ["train", "--params", str(tiny_params_file)])
    assert result.exit_code == 0, result.output
    run_id = result.output.split("run_id:")[1].split()[0]
    run = MlflowClient(elsewhere).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "f1" in result.output
    # the task's default experiment
    experiment = MlflowClient(elsewhere).get_experiment(run.info.experiment_id)
    assert experiment.name == "tagifai-train"
    # the default store would be ./mlflow.db: MLFLOW_TRACKING_URI won
    assert (workdir / "elsewhere.db").is_file() and not (workdir / "mlflow.db").exists()


def test_linear_with_nb_scale_saves_a_plain_model_that_predicts_the_same(
    tmp_path, tiny_params, sample_paths
):
    """train() folds the naive-Bayes scale into the weights before the model is saved;
    the reloaded model gives the trained one's probabilities, and they differ from a
    model fitted without the scale."""
    params = _linear(tiny_params, nb_scale=True, num_epochs=3)
    dataset = TEXT.load_data(*sample_paths, params)
    splits = TEXT.split(dataset, params)
    inputs = splits.val["text"].tolist()

    def fit(params: TextParams) -> Predictor:
        result = TEXT.train(params, dataset, splits, NullReporter())
        return Predictor(params, dataset.classes, result.encoder, result.model, result.decision)

    trained = fit(params)
    assert trained.model.class_scale is None  # folded
    reloaded = Predictor.load(trained.save(tmp_path / "predictor"))
    np.testing.assert_allclose(
        reloaded.predict_proba(inputs), trained.predict_proba(inputs), rtol=1e-5, atol=1e-6
    )
    plain = fit(_linear(tiny_params, nb_scale=False, num_epochs=3))
    assert not np.allclose(plain.predict_proba(inputs), trained.predict_proba(inputs))


def test_full_batch_training_stops_when_converged(tiny_params, sample_paths):
    """L-BFGS epochs after convergence would repeat the same weights: training stops
    long before a patience that never runs out."""
    from tagifai.workloads.text.training import CONVERGED_RTOL

    params = _linear(tiny_params, num_epochs=200, patience=200)
    dataset = TEXT.load_data(*sample_paths, params)
    splits = TEXT.split(dataset, params)
    result = TEXT.train(params, dataset, splits, NullReporter())
    assert result.epochs_run < params.model.num_epochs
    before, after = (entry["train_loss"] for entry in result.history[-2:])
    assert abs(before - after) <= CONVERGED_RTOL * before


def test_mlflow_reporter_writes_queued_epochs_on_flush(workdir, experiment_name):
    tracking.configure()
    client = MlflowClient()
    with runs.train_run(experiment_name) as run_id:
        reporter = runs.MlflowReporter(flush_seconds=3600)
        for epoch in (1, 2, 3):
            reporter.on_epoch_end(epoch, {"val_f1": epoch / 10})
        assert client.get_metric_history(run_id, "epoch_val_f1") == []  # still queued
        reporter.flush()
    history = client.get_metric_history(run_id, "epoch_val_f1")
    assert [(point.step, point.value) for point in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]


def test_failed_training_run_keeps_the_epochs_it_ran(
    workdir, tiny_params, sample_paths, experiment_name
):
    """A run that dies at epoch 2 ends FAILED with epochs 1 and 2 logged."""

    class Boom:
        def on_epoch_end(self, epoch, metrics):
            if epoch == 2:
                raise RuntimeError("boom")

    tracking.configure()
    dataset, splits = jobs.load_data(tiny_params, *sample_paths)
    with pytest.raises(RuntimeError, match="boom"):
        jobs.train_and_log(
            tiny_params, dataset, splits, experiment_name=experiment_name, reporter=Boom()
        )
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
    steps = [point.step for point in client.get_metric_history(run.info.run_id, "epoch_val_f1")]
    assert steps == [1, 2]
