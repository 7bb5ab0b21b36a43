"""Behavioral tests of a model trained here, on the shipped sample, with the default params.

Minimum functionality (clear-cut texts get their tag), invariance (edits that should
not matter do not change the tags) and directional expectations (adding evidence for a
tag raises its probability). Each assertion names the text, so a failure says what the
model got wrong.
"""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import REPO

from tagifai.predict import Predictor
from tagifai.search import load_params_file
from tagifai.training import NullReporter
from tagifai.workloads.text import WORKLOAD

pytestmark = pytest.mark.training


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    params = load_params_file(WORKLOAD, REPO / "config" / "params.json")
    dataset = WORKLOAD.load_data(None, None, params)  # the shipped sample and its taxonomy
    result = WORKLOAD.train(params, dataset, WORKLOAD.split(dataset, params), NullReporter())
    return Predictor(params, dataset.classes, result.encoder, result.model, result.decision)


def _tags(predictor: Predictor, text: str) -> list[str]:
    return predictor.predict(pd.DataFrame({"text": [text]}))[0]["tags"]


def _prob(predictor: Predictor, text: str, tag: str) -> float:
    return predictor.predict(pd.DataFrame({"text": [text]}))[0]["probabilities"][tag]


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        ("YOLO detector that draws bounding boxes around cars and pedestrians", "object-detection"),
        (
            "An agent learns to play Atari games from rewards with deep Q-learning",
            "reinforcement-learning",
        ),
        ("Forecasting daily electricity demand with an LSTM over past time steps", "time-series"),
        ("Speech recognition: transcribe spoken audio clips into text", "speech"),
        (
            "Generative adversarial network that generates realistic faces",
            "generative-adversarial-networks",
        ),
        ("Serving models in production with monitoring, CI/CD and a feature store", "mlops"),
        ("Node classification on citation graphs with graph neural networks", "graph-learning"),
    ],
)
def test_minimum_functionality(predictor, text, tag):
    assert tag in _tags(predictor, text), f"{tag!r} missing for {text!r}"


@pytest.mark.parametrize(
    ("original", "edited"),
    [
        (
            "A YOLO detector that draws bounding boxes around cars",
            "The YOLO detector that draws bounding boxes around cars",
        ),
        (
            "Alice built an agent that learns to play Atari games from rewards",
            "Bob built an agent that learns to play Atari games from rewards",
        ),
        (
            "Forecasting daily electricity demand with an LSTM",
            "Forecasting daily electricity demand using an LSTM",
        ),
    ],
)
def test_invariance(predictor, original, edited):
    before, after = predictor.predict(pd.DataFrame({"text": [original, edited]}))
    # Tags near their cut-off may flip; no tag's probability may move by much.
    shifts = {
        tag: abs(before["probabilities"][tag] - after["probabilities"][tag])
        for tag in before["probabilities"]
    }
    worst = max(shifts, key=lambda tag: shifts[tag])
    assert shifts[worst] < 0.25, f"{worst} moved by {shifts[worst]:.3f}: {original!r} -> {edited!r}"
    confident = {tag for tag, p in before["probabilities"].items() if p >= 0.9}
    assert confident <= set(after["tags"]), f"lost confident tags {confident - set(after['tags'])}"


@pytest.mark.parametrize(
    ("text", "evidence", "tag"),
    [
        (
            "A library for experiments",
            "that detects objects with bounding boxes",
            "object-detection",
        ),
        (
            "A library for experiments",
            "that trains an agent with rewards in an environment",
            "reinforcement-learning",
        ),
        ("A library for experiments", "on forecasting sales time series", "time-series"),
    ],
)
def test_directional(predictor, text, evidence, tag):
    before = _prob(predictor, text, tag)
    after = _prob(predictor, f"{text} {evidence}", tag)
    assert after > before + 0.2, f"{tag}: {before:.3f} -> {after:.3f} after adding {evidence!r}"
    assert tag not in _tags(predictor, text) and tag in _tags(predictor, f"{text} {evidence}")
