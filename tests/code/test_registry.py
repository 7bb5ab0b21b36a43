"""train-best, the registry's champion rule and the predict CLI against a registered model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tagifai import jobs, tracking
from tagifai.cli import app
from tagifai.config import Params

pytestmark = pytest.mark.training


def _train_best(payload: dict, **kwargs):
    """train-best on the data the payload names."""
    return jobs.train_best(payload, *jobs.load_best_data(payload), **kwargs)


def _payload(params: Params, sample_paths, study: str) -> dict:
    """A best_params.json as `tagifai optimize` writes it."""
    return {
        "study_name": study,
        "metric": "val_f1",
        "value": 0.5,
        "trial_number": 0,
        "parent_run_id": None,
        "data_source": sample_paths[0],
        "tags_source": sample_paths[1],
        "threshold": 0.5,
        "params": params.model_dump(mode="json"),
    }


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(jobs.MODEL_NAME, jobs.CHAMPION).version)


def test_champion_moves_only_to_a_better_model(workdir, tiny_params, sample_paths, experiment_name):
    tracking.configure()
    client = MlflowClient()
    good_params = tiny_params.model_copy(update={"num_epochs": 25, "patience": 6})
    good = _train_best(_payload(good_params, sample_paths, experiment_name))
    assert good.promoted and good.champion_f1 is None and good.version == "1"
    assert _champion(client) == "1"

    # a model that learned nothing: never better, so the alias stays
    weak_params = tiny_params.model_copy(update={"lr": 1e-7, "num_epochs": 1})
    weak = _train_best(_payload(weak_params, sample_paths, experiment_name))
    weak_f1 = weak.test_metrics["overall"]["f1"]
    assert weak_f1 < good.test_metrics["overall"]["f1"]
    assert not weak.promoted and weak.champion_f1 == pytest.approx(
        good.test_metrics["overall"]["f1"]
    )
    assert _champion(client) == "1"

    # an identical retrain ties: a tie is not a win
    same = _train_best(_payload(good_params, sample_paths, experiment_name))
    assert not same.promoted and _champion(client) == "1"

    forced = _train_best(_payload(weak_params, sample_paths, experiment_name), force=True)
    assert forced.promoted and _champion(client) == forced.version

    # a better model scored on another test split (another seed): F1s on different test
    # rows say nothing about which model is better, so the alias stays without --force
    reseeded = good_params.model_copy(update={"seed": good_params.seed + 1})
    other = _train_best(_payload(reseeded, sample_paths, experiment_name))
    assert other.test_metrics["overall"]["f1"] > forced.test_metrics["overall"]["f1"]
    assert not other.promoted and not other.comparable and _champion(client) == forced.version
    assert same.comparable  # the same split as the champion's

    version = client.get_model_version(jobs.MODEL_NAME, good.version)
    assert version.tags["tagifai.study_name"] == experiment_name
    assert float(version.tags["test_f1"]) == pytest.approx(good.test_metrics["overall"]["f1"])
    assert (
        client.get_model_version(jobs.MODEL_NAME, other.version).tags["test_split"]
        != (version.tags["test_split"])
    )
    assert experiment_name in version.description
    run = client.get_run(good.run_id)
    assert run.data.tags["tagifai.job"] == "train-best"


def test_optimize_then_train_best_from_run_then_predict(workdir, tiny_params_file, experiment_name):
    study = workdir / "study.yaml"
    study.write_text(
        f"study_name: {experiment_name}\nn_trials: 2\nparams: {tiny_params_file}\n"
        "sampler: {name: Random}\npruner: {name: Nop}\n"
        "search_space:\n  dropout_p: {type: float, low: 0.0, high: 0.4, step: 0.2}\n"
    )
    runner = CliRunner()
    assert runner.invoke(app, ["optimize", "--config", str(study)]).exit_code == 0
    best = json.loads((workdir / "config" / "best_params.json").read_text())

    result = runner.invoke(app, ["train-best", "--from-run", best["parent_run_id"]])
    assert result.exit_code == 0, result.output
    assert "is now @champion" in result.output
    client = MlflowClient()
    version = client.get_model_version_by_alias("tagifai", "champion")
    assert (
        client.get_run(version.run_id).data.tags["tagifai.parent_run_id"] == best["parent_run_id"]
    )

    # a fresh Python process loads the champion and predicts
    script = (
        "import mlflow, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/tagifai@champion')\n"
        "out = m.predict(pd.DataFrame({'title': ['YOLO'], 'description': ['finds cars']}))\n"
        "print(out['probabilities'][0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    probabilities = json.loads(done.stdout.strip().splitlines()[-1])
    assert "computer-vision" in probabilities

    # the CLI: default model is the champion; the threshold overrides the tuned cut-off
    low = runner.invoke(app, ["predict", "bert for text", "--threshold", "0"])
    high = runner.invoke(app, ["predict", "bert for text", "--threshold", "1"])
    assert low.exit_code == 0 and high.exit_code == 0, low.output + high.output
    low_tags = json.loads(low.output[low.output.index("{") :])["tags"]
    high_tags = json.loads(high.output[high.output.index("{") :])["tags"]
    assert len(low_tags) == len(probabilities) and high_tags == []

    # a batch file in, a JSONL file out
    batch = workdir / "batch.csv"
    batch.write_text("title,description\nYOLO,finds cars\nBERT,reads text\n")
    output = workdir / "out" / "tags.jsonl"
    done_batch = runner.invoke(app, ["predict", "--file", str(batch), "--output", str(output)])
    assert done_batch.exit_code == 0, done_batch.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 2 and all(set(row) == {"tags", "probabilities"} for row in rows)
