"""The images workload through the same core: a short study on digits, train-best,
predict by CLI, pyfunc and a served model, its decision rule, its bad inputs, and how
predict conforms images saved another way (raw values, inverted) or refuses them."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import copy_project, model_server, post_json, subprocess_env
from PIL import Image
from typer.testing import CliRunner

from tagifai import jobs, tracking
from tagifai.best_params import read_best_params
from tagifai.cli import app
from tagifai.errors import TagifaiError
from tagifai.logged_models import PREDICTOR_DIR, download_model, load_predictor, log_predictor
from tagifai.predict import Predictor
from tagifai.search import load_optimize_config
from tagifai.study import open_study, run_study
from tagifai.training import NullReporter
from tagifai.workloads.images import WORKLOAD
from tagifai.workloads.images.models import ImageEncoder
from tagifai.workloads.images.params import ImagesParams
from tagifai.workloads.images.training import choose_confidence

pytestmark = pytest.mark.training

TINY_STUDY = """
task: images
study_name: {name}
metric: val_accuracy
direction: maximize
n_trials: 3
seed: 3
params: {params}
sampler: {{name: Random, kwargs: {{}}}}
pruner: {{name: Nop, kwargs: {{}}}}
search_space:
  architecture:
    mlp:
      hidden_units: {{type: categorical, choices: [32, 64]}}
      num_epochs: {{type: int, low: 6, high: 6}}
      lr: {{type: float, low: 0.01, high: 0.01}}
    cnn:
      channels: {{type: categorical, choices: [8, 16]}}
"""
# About 3 s on 2 cores, ~0.95 validation accuracy on the digits.
TINY_PARAMS = {
    "task": "images",
    "model": {"architecture": "cnn", "num_blocks": 1, "channels": 8, "num_epochs": 6, "lr": 0.01},
}
# One trial of each architecture first, whatever the sampler draws.
FIRST_TRIALS = ({"architecture": "mlp", "hidden_units": 32}, {"architecture": "cnn", "channels": 8})


def _run_tiny_study(config_path: Path, best_file: Path) -> tuple[object, object, object]:
    """The tiny study on digits, an mlp and a cnn trial enqueued first."""
    config, base, _ = load_optimize_config(config_path)
    tracking.configure()
    dataset = WORKLOAD.load_data(None, None, base)
    splits = WORKLOAD.split(dataset, base)
    study = open_study(config)
    for values in FIRST_TRIALS:
        study.enqueue_trial(values)
    result = run_study(config, base, dataset, splits, best_params_file=best_file)
    return result, dataset, splits


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(image: np.ndarray) -> str:
    return base64.b64encode(_png(image.astype(np.uint8))).decode()


def _digit(index: int) -> tuple[np.ndarray, str]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    image = np.round(digits.images[index] * 255 / 16).astype(np.uint8)
    return image, str(digits.target[index])


def _raw_digit(index: int) -> np.ndarray:
    """A digit with its raw 0..16 values, as ``load_digits`` holds it."""
    from sklearn.datasets import load_digits

    return load_digits().images[index].astype(np.uint8)


def _on_grey_paper(image: np.ndarray) -> np.ndarray:
    """A digit whose background is mid-grey (128) instead of black."""
    return np.where(image == 0, 128, image).astype(np.uint8)


def _write_study_files(folder: Path, name: str) -> tuple[Path, Path]:
    """A tiny images study config (mlp and cnn) and its params file in ``folder``."""
    params = folder / "params-images.json"
    params.write_text(json.dumps(TINY_PARAMS))
    config = folder / "optimize-images.yaml"
    config.write_text(TINY_STUDY.format(name=name, params=params))
    return config, params


@pytest.fixture
def study_files(workdir: Path) -> tuple[Path, Path]:
    """The tiny study's files in the test's own folder."""
    return _write_study_files(workdir, "digits")


@dataclass
class ImageStore:
    """One tiny study on the digits and its registered champion, shared by a module."""

    root: Path
    uri: str
    study: Any
    parent_run_id: str | None
    best_file: Path


@pytest.fixture(scope="module")
def image_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageStore]:
    """Study, train-best and registration once, in a private store and folder."""
    root = tmp_path_factory.mktemp("images")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        best_file = root / "best.json"
        config, _ = _write_study_files(root, "digits")
        result, dataset, splits = _run_tiny_study(config, best_file)
        outcome = jobs.train_best(read_best_params(best_file), dataset, splits)
        assert outcome.promoted and outcome.version == "1"
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        mlflow.tracking.fluent._active_experiment_id = None
        yield ImageStore(root, uri, result.study, result.parent_run_id, best_file)


@pytest.fixture
def champion(image_store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The module's champion, with its store as this test's tracking store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", image_store.uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(image_store.uri)
    yield "models:/tagifai-images@champion"
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    mlflow.tracking.fluent._active_experiment_id = None


def test_study_on_digits_logs_only_each_architectures_knobs(champion, image_store):
    study = image_store.study
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3
    best = read_best_params(image_store.best_file)
    assert best.task == "images" and best.metric == "val_accuracy"
    assert best.decision.kind == "confidence" and 0.0 <= best.decision.thresholds[0] <= 1.0
    assert best.value == max(t.value for t in study.trials)

    client = mlflow.MlflowClient()
    children = client.search_runs(
        [client.get_experiment_by_name("digits").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{image_store.parent_run_id}'",
    )
    assert len(children) == 3
    kinds = {child.data.params["architecture"] for child in children}
    for child in children:
        params = child.data.params
        if params["architecture"] == "mlp":
            assert "hidden_units" in params and "channels" not in params
            assert "batch_norm" not in params and "augment" not in params
        else:
            assert "channels" in params and "hidden_units" not in params
        assert not any(key.startswith("data.") for key in params)
        assert child.data.metrics["val_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert kinds == {"mlp", "cnn"}


def test_train_best_predict_pyfunc_and_abstain(tmp_path, champion):
    image, label = _digit(0)
    png = _png(np.array(Image.fromarray(image).resize((32, 32))))  # another size: resized
    model = mlflow.pyfunc.load_model(champion)

    keep_all = {"threshold": 0.0}  # never abstain: the class itself is checked
    by_bytes = model.predict(pd.DataFrame({"image": [png]}), params=keep_all)
    assert list(by_bytes.columns) == ["class", "probability", "probabilities"]
    assert by_bytes["class"][0] == label
    probabilities = by_bytes["probabilities"][0]
    assert isinstance(probabilities, dict) and set(probabilities) == {str(i) for i in range(10)}
    assert abs(sum(probabilities.values()) - 1.0) < 1e-3

    by_base64 = model.predict(
        pd.DataFrame({"image": [base64.b64encode(png).decode()]}), params=keep_all
    )
    assert by_base64["class"][0] == label
    path = tmp_path / "digit.png"
    path.write_bytes(png)
    # A pyfunc model is what servers load: it reads no file its payload names.
    with pytest.raises(mlflow.exceptions.MlflowException, match="'path' column is not read"):
        model.predict(pd.DataFrame({"path": [str(path)]}), params=keep_all)
    by_array = model.predict(pd.DataFrame({"image": [image, image]}), params=keep_all)
    assert list(by_array["class"]) == [label, label]

    # A cut-off above every probability: the model abstains (class None) but still answers.
    abstained = model.predict(pd.DataFrame({"image": [png]}), params={"threshold": 1.0})
    if by_bytes["probability"][0] < 1.0:
        assert abstained["class"][0] is None
    assert abstained["probability"][0] == by_bytes["probability"][0]


def test_cli_train_best_and_predict(workdir, study_files):
    runner = CliRunner()
    config, _ = study_files
    result = runner.invoke(app, ["optimize", "--task", "images", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert Path("config/best_params-images.json").is_file()
    result = runner.invoke(app, ["train-best", "--task", "images"])
    assert result.exit_code == 0, result.output
    assert "tagifai-images version 1 is now @champion" in result.output
    assert "decision threshold re-tuned on validation" in result.output
    client = mlflow.MlflowClient()
    version = client.get_model_version_by_alias("tagifai-images", "champion")
    run = client.get_run(version.run_id)
    assert run.info.run_name == "train-best-digits"
    artifacts = {item.path for item in client.list_artifacts(version.run_id)}
    assert {"confusion.png", "performance.json", "predictor.json"} <= artifacts
    assert "test_accuracy" in run.data.metrics

    image, _ = _digit(5)
    path = workdir / "five.png"
    path.write_bytes(_png(image))
    result = runner.invoke(app, ["predict", "--task", "images", str(path), "--threshold", "0"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    # The CLI says what the registered model says (its accuracy is tested elsewhere).
    model = mlflow.pyfunc.load_model("models:/tagifai-images@champion")
    expected = model.predict(pd.DataFrame({"image": [image]}), params={"threshold": 0.0})
    assert printed["class"] == expected["class"][0]
    # It shows the classes of probability >= 0.05 (the model's accuracy is tested elsewhere).
    shown = {k: p for k, p in expected["probabilities"][0].items() if p >= 0.05}
    assert printed["probabilities"] == pytest.approx(shown, abs=1e-6)
    assert printed["probability"] == pytest.approx(expected["probability"][0], abs=1e-6)
    # The text champion does not exist: a text predict says so in one line.
    result = runner.invoke(app, ["predict", "some text"])
    assert result.exit_code == 2
    assert "tagifai@champion" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not an image at all", "not a readable image"),
        (b"", "not a readable image"),
    ],
)
def test_predict_bad_image_is_one_line(tmp_path, champion, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    result = CliRunner().invoke(app, ["predict", "--task", "images", str(path)])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_image_inputs_are_refused(champion, tmp_path):
    predictor = WORKLOAD  # the payload rules live in the workload
    model = mlflow.pyfunc.load_model(champion)
    with pytest.raises(mlflow.exceptions.MlflowException, match="expected an 'image' column"):
        model.predict(pd.DataFrame({"text": ["a"]}))
    with pytest.raises(mlflow.exceptions.MlflowException, match="base64"):
        model.predict(pd.DataFrame({"image": ["***not base64***"]}))
    with pytest.raises(mlflow.exceptions.MlflowException, match="'path' column is not read"):
        model.predict(pd.DataFrame({"path": [str(tmp_path / "missing.png")]}))
    with pytest.raises(mlflow.exceptions.MlflowException, match="grey uint8"):
        model.predict(pd.DataFrame({"image": [np.zeros((8, 8, 3), dtype=np.uint8)]}))
    with pytest.raises(mlflow.exceptions.MlflowException, match="threshold"):
        model.predict(pd.DataFrame({"image": [_png(_digit(0)[0])]}), params={"threshold": 2.0})
    assert predictor.name == "images"


def test_cli_refuses_bad_image_data_and_options(workdir):
    copy_project(workdir)  # the default study configs under config/
    runner = CliRunner()
    result = runner.invoke(app, ["optimize", "--task", "images", "--data", "nowhere"])
    assert result.exit_code == 2 and "nowhere: not a folder" in result.output
    result = runner.invoke(app, ["optimize", "--task", "images", "--tags", "tags.json"])
    assert result.exit_code == 2 and "takes no taxonomy" in result.output
    result = runner.invoke(app, ["optimize", "--task", "sound"])
    assert result.exit_code == 2 and "unknown task 'sound'" in result.output
    assert not Path("mlflow.db").exists()  # refused before any store was made


def test_confidence_threshold_is_tuned_for_the_target():
    labels = np.array([0, 0, 1, 1])
    # Two confident right answers, one unsure right, one unsure wrong.
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    assert choose_confidence(labels, probs, 0.99) == pytest.approx(0.9)
    assert choose_confidence(labels, probs, 0.0) == 0.0
    assert choose_confidence(labels, probs, 0.7) == 0.0  # 3/4 right overall: keep all
    # Ties: a cut at 0.6 keeps both 0.6 rows (one wrong), so 0.8 needs 0.9.
    assert choose_confidence(labels, probs, 0.8) == pytest.approx(0.9)
    wrong = np.array([[0.1, 0.9], [0.2, 0.8]])
    assert choose_confidence(np.array([0, 0]), wrong, 0.5) == 1.0  # never right: abstain


def test_image_params_are_strict_and_bounded():
    with pytest.raises(ValueError, match="architecture"):
        ImagesParams.model_validate({"model": {"architecture": "vgg"}})
    with pytest.raises(ValueError, match="hidden_units"):
        ImagesParams.model_validate({"model": {"architecture": "mlp", "hidden_units": 10**9}})
    with pytest.raises(ValueError, match="batch_norm"):
        ImagesParams.model_validate({"model": {"architecture": "cnn", "batch_norm": "yes"}})
    with pytest.raises(ValueError, match="val_size"):
        ImagesParams.model_validate({"data": {"val_size": 0.5, "test_size": 0.5}})
    assert ImagesParams().model.architecture == "cnn"
    with pytest.raises(ValueError, match="convs_per_block"):
        ImagesParams.model_validate({"model": {"architecture": "cnn", "convs_per_block": 4}})


def test_a_vgg_style_cnn_stacks_its_convs_in_each_block_and_learns_the_digits():
    params = ImagesParams.model_validate(
        {"model": {**TINY_PARAMS["model"], "num_blocks": 2, "convs_per_block": 2}}
    )
    dataset = WORKLOAD.load_data(None, None, params)
    splits = WORKLOAD.split(dataset, params)
    result = WORKLOAD.train(params, dataset, splits, NullReporter())
    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 8), (8, 16), (16, 16)]
    assert result.val_metrics["val_accuracy"] > 0.9


def test_predict_path_imports_neither_optuna_nor_sklearn(tmp_path, champion):
    image, label = _digit(3)
    path = tmp_path / "three.png"
    path.write_bytes(_png(image))
    code = (
        "import sys, json\n"
        "from tagifai import tracking\n"
        "from tagifai.logged_models import load_predictor\n"
        "import pandas as pd\n"
        "tracking.configure(read_only=True)\n"
        f"p = load_predictor({champion!r})\n"
        "from tagifai.workloads.base import InputPolicy\n"
        f"r = p.predict(pd.DataFrame({{'path': [{str(path)!r}]}}), threshold=0.0,\n"
        "    policy=InputPolicy(read_files=True))\n"
        "print(json.dumps({'class': r[0]['class'], 'mods': sorted(m for m in sys.modules\n"
        "    if m.split('.')[0] in ('optuna', 'sklearn', 'optuna_integration'))}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"class": label, "mods": []}


@pytest.fixture
def served(tmp_path: Path, champion: str) -> Iterator[str]:
    with model_server(champion, tmp_path) as url:
        yield url


@pytest.mark.server
def test_served_model_answers_base64_png(served, tmp_path):
    image, label = _digit(7)
    b64 = base64.b64encode(_png(image)).decode()
    status, body = post_json(
        served,
        {"dataframe_split": {"columns": ["image"], "data": [[b64]]}, "params": {"threshold": 0.0}},
    )
    assert status == 200, body
    prediction = body["predictions"][0]
    assert prediction["class"] == label
    assert isinstance(prediction["probabilities"], dict)  # a JSON object, not a string
    # Dark ink on white with its raw 0..16 values: conformed to the same digit.
    b64_raw_inverted = base64.b64encode(_png(16 - _raw_digit(7))).decode()
    status, body = post_json(
        served,
        {
            "dataframe_split": {"columns": ["image"], "data": [[b64_raw_inverted]]},
            "params": {"threshold": 0.0},
        },
    )
    assert status == 200 and body["predictions"][0]["class"] == label, body
    status, body = post_json(
        served,
        {"dataframe_split": {"columns": ["image"], "data": [[b64]]}, "params": {"threshold": 1.0}},
    )
    assert status == 200 and "class" in body["predictions"][0]
    if prediction["probability"] < 1.0:
        assert body["predictions"][0]["class"] is None
    # Bad payloads: 400 with one line, never a 500.
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(image))
    for payload, message in (
        ({"dataframe_split": {"columns": ["path"], "data": [[str(secret)]]}}, "served model"),
        ({"dataframe_split": {"columns": ["image"], "data": [["aGVsbG8="]]}}, "readable image"),
        ({"dataframe_split": {"columns": ["text"], "data": [["hi"]]}}, "image"),
        (
            {"dataframe_split": {"columns": ["image"], "data": [[_b64(np.full((8, 8), 9))]]}},
            "row 1: every pixel is 9: a blank image",
        ),
    ):
        status, body = post_json(served, payload)
        assert status == 400, body
        assert message in body["message"] and "Traceback" not in body["message"]


def test_load_data_refuses_a_second_input():
    with pytest.raises(TagifaiError, match="no second input"):
        WORKLOAD.load_data(None, "tags.json", ImagesParams())


# How a digit may be saved, each from its raw 0..16 values (issue 25: the raw one came back
# "1" at 0.754, the inverted one "4" at 0.897, both above the abstain cut-off).
DIGIT_FORMS: dict[str, Any] = {
    "scaled": lambda raw: np.rint(raw * 255.0 / 16),  # what the model was trained on
    "raw": lambda raw: raw,
    "inverted": lambda raw: 255 - np.rint(raw * 255.0 / 16),  # dark ink on white paper
    "raw-inverted": lambda raw: 16 - raw,
}


def test_predict_conforms_raw_and_inverted_digits(tmp_path, champion):
    """``tagifai predict --file``: each digit saved raw, inverted or both gets the class
    of its scaled image; inverted back, it is that image, so the same probability too."""
    names = []
    for index in range(10):
        raw = _raw_digit(index)
        for form, make in DIGIT_FORMS.items():
            (tmp_path / f"{index}-{form}.png").write_bytes(_png(make(raw).astype(np.uint8)))
            names.append(f"{index}-{form}")
    listing = tmp_path / "images.txt"
    listing.write_text("\n".join(f"{name}.png" for name in names))
    output = tmp_path / "predictions.jsonl"
    command = ["predict", "--task", "images", "--file", str(listing), "--output", str(output)]
    result = CliRunner().invoke(app, [*command, "--threshold", "0"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    answers = dict(zip(names, rows, strict=True))
    for index in range(10):
        scaled = answers[f"{index}-scaled"]
        for form in ("raw", "inverted", "raw-inverted"):
            assert answers[f"{index}-{form}"]["class"] == scaled["class"], (index, form)
        assert answers[f"{index}-inverted"]["probability"] == scaled["probability"]
    # Agreeing with a model that says one class to everything would prove nothing.
    right = sum(answers[f"{index}-scaled"]["class"] == str(index) for index in range(10))
    assert right >= 8, answers


@pytest.mark.parametrize(
    ("name", "image", "message"),
    [
        ("blank.png", np.full((8, 8), 200, dtype=np.uint8), "every pixel is 200: a blank image"),
        ("grey-paper.png", _on_grey_paper(_digit(4)[0]), "background unclear"),
        (
            "half-white.png",  # the border half black, half white: no one background
            np.hstack([np.zeros((8, 4)), np.full((8, 4), 255)]).astype(np.uint8),
            "background unclear",
        ),
    ],
)
def test_predict_refuses_blank_and_unclear_images_in_one_line(
    tmp_path, champion, name, image, message
):
    path = tmp_path / name
    path.write_bytes(_png(image))
    result = CliRunner().invoke(app, ["predict", "--task", "images", str(path)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert f"input: row 1: {path}: {message}" in line, line
    if message == "background unclear":
        assert "this model expects a dark background" in line, line


def test_pyfunc_refuses_a_blank_row_by_its_number(champion):
    model = mlflow.pyfunc.load_model(champion)
    image, _ = _digit(0)
    blank = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"^input: row 2: every pixel is 0"):
        model.predict(pd.DataFrame({"image": [image, blank]}))


class _EncoderBeforeBackground(ImageEncoder):
    """The encoder as tagifai saved it before the training background was recorded."""

    def to_dict(self) -> dict[str, Any]:
        state = super().to_dict()
        del state["background"]
        return state


def test_a_model_logged_without_a_background_still_predicts(tmp_path, champion):
    """A model logged before the background was recorded loads and predicts: its
    polarity is left alone (a grey-paper digit, refused by the champion, is answered)
    while a raw 0..16 digit is still stretched."""
    current = load_predictor(champion)
    encoder = current.encoder
    assert encoder.background == "dark"  # the digits: light ink on black
    before = _EncoderBeforeBackground(encoder.height, encoder.width, encoder.mean, encoder.std)
    old = Predictor(current.params, current.classes, before, current.model, current.decision)
    with mlflow.start_run():
        info = log_predictor(old, input_example=False)
    saved = download_model(info.model_uri, tmp_path) / PREDICTOR_DIR / "encoder.json"
    assert "background" not in json.loads(saved.read_text())

    image, label = _digit(0)
    grey_paper = _on_grey_paper(image)
    with pytest.raises(mlflow.exceptions.MlflowException, match="background unclear"):
        mlflow.pyfunc.load_model(champion).predict(pd.DataFrame({"image": [grey_paper]}))
    model = mlflow.pyfunc.load_model(info.model_uri)
    frame = pd.DataFrame({"image": [image, _raw_digit(0), grey_paper]})
    answers = model.predict(frame, params={"threshold": 0.0})
    assert list(answers["class"][:2]) == [label, label]
    assert answers["probability"][2] > 0  # answered, not refused
