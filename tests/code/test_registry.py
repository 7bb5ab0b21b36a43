"""train-best, the registry's champion rule and the predict CLI against a registered model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tagifai import jobs, registry, tracking
from tagifai.best_params import BestParams
from tagifai.cli import app
from tagifai.workloads.base import DecisionRule
from tagifai.workloads.text import WORKLOAD as TEXT
from tagifai.workloads.text.params import TextParams

pytestmark = pytest.mark.training


def _train_best(best: BestParams, **kwargs):
    """train-best on the data the record names."""
    dataset, splits = jobs.load_data(best.run_params(), best.data_source, best.extra_source)
    return jobs.train_best(best, dataset, splits, **kwargs)


def _best(params: TextParams, sample_paths, study: str) -> BestParams:
    """A best_params.json record as `tagifai optimize` writes it (for the sample data)."""
    dataset, _ = jobs.load_data(params, *sample_paths)
    return BestParams(
        task="text",
        study_name=study,
        metric="val_f1",
        direction="maximize",
        value=0.5,
        trial_number=0,
        data_source=sample_paths[0],
        extra_source=sample_paths[1],
        data_digest=dataset.digest,
        tuned={},
        params=params.model_dump(mode="json"),
        decision=DecisionRule(kind="threshold", thresholds=(0.5,)),
    )


def _with(params: TextParams, seed: int | None = None, **model) -> TextParams:
    """``params`` with other model knobs (and seed), validated."""
    data = params.model_dump()
    data["model"] = {**data["model"], **model}
    if seed is not None:
        data["seed"] = seed
    return TextParams.model_validate(data)


def _champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(TEXT.model_name, registry.CHAMPION).version)


def test_champion_moves_only_to_a_better_model(workdir, tiny_params, sample_paths, experiment_name):
    tracking.configure()
    client = MlflowClient()
    good_params = _with(tiny_params, num_epochs=25, patience=6)
    good = _train_best(_best(good_params, sample_paths, experiment_name))
    assert good.promoted and good.champion_score is None and good.version == "1"
    assert _champion(client) == "1"

    # a model that learned nothing: never better, so the alias stays
    weak_params = _with(tiny_params, lr=1e-7, num_epochs=1)
    weak = _train_best(_best(weak_params, sample_paths, experiment_name))
    weak_f1 = weak.test_metrics["overall"]["f1"]
    assert weak_f1 < good.test_metrics["overall"]["f1"]
    assert weak.score == pytest.approx(weak_f1)
    assert not weak.promoted and weak.champion_score == pytest.approx(
        good.test_metrics["overall"]["f1"]
    )
    assert _champion(client) == "1"

    # an identical retrain ties: a tie is not a win
    same = _train_best(_best(good_params, sample_paths, experiment_name))
    assert same.score == pytest.approx(good.score)
    assert not same.promoted and _champion(client) == "1"

    forced = _train_best(_best(weak_params, sample_paths, experiment_name), force=True)
    assert forced.promoted and _champion(client) == forced.version

    # a better model scored on another test split (another seed): F1s on different test
    # rows say nothing about which model is better, so the alias stays without --force
    reseeded = _with(good_params, seed=good_params.seed + 1)
    other = _train_best(_best(reseeded, sample_paths, experiment_name))
    assert other.test_metrics["overall"]["f1"] > forced.test_metrics["overall"]["f1"]
    assert not other.promoted and not other.comparable and _champion(client) == forced.version
    assert same.comparable  # the same split as the champion's

    version = client.get_model_version(TEXT.model_name, good.version)
    assert version.tags["tagifai.study_name"] == experiment_name
    assert float(version.tags["test_f1"]) == pytest.approx(good.test_metrics["overall"]["f1"])
    assert (
        client.get_model_version(TEXT.model_name, other.version).tags["test_split"]
        != (version.tags["test_split"])
    )
    assert experiment_name in version.description
    run = client.get_run(good.run_id)
    assert run.data.tags["tagifai.job"] == "train-best"
    assert run.data.tags["mlflow.runName"] == f"train-best-{experiment_name}"


def test_train_best_refuses_params_tuned_on_other_data(
    workdir, tiny_params, sample_paths, experiment_name
):
    """A record whose data digest is not the data's: refused before anything is logged,
    unless --force."""
    from tagifai.errors import TagifaiError

    tracking.configure()
    best = _best(tiny_params, sample_paths, experiment_name).model_copy(
        update={"data_digest": "0123456789abcdef"}
    )
    dataset, splits = jobs.load_data(tiny_params, *sample_paths)
    with pytest.raises(TagifaiError, match="0123456789abcdef"):
        jobs.train_best(best, dataset, splits)
    assert MlflowClient().get_experiment_by_name(experiment_name) is None
    forced = jobs.train_best(best, dataset, splits, force=True)
    assert forced.promoted and forced.version == "1"


def test_optimize_then_train_best_from_run_then_predict(workdir, tiny_params_file, experiment_name):
    study = workdir / "study.yaml"
    study.write_text(
        f"task: text\nstudy_name: {experiment_name}\nn_trials: 2\nparams: {tiny_params_file}\n"
        "sampler: {name: Random}\npruner: {name: Nop}\n"
        "search_space:\n  architecture:\n"
        "    ngram:\n      dropout_p: {type: float, low: 0.0, high: 0.4, step: 0.2}\n"
    )
    runner = CliRunner()
    optimized = runner.invoke(app, ["optimize", "--config", str(study)])
    assert optimized.exit_code == 0, optimized.output
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
        "import json\n"
        "print(json.dumps(out['probabilities'][0]))\n"
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
