"""`mlflow models serve` on 127.0.0.1 answers /invocations with tags; bad payloads get 400."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import model_server, post_json

from tagifai import jobs, tracking
from tagifai.best_params import BestParams
from tagifai.workloads.base import DecisionRule

pytestmark = [pytest.mark.server, pytest.mark.training]


@pytest.fixture
def served_model(workdir, tiny_params, sample_paths) -> Iterator[tuple[str, float]]:
    """The champion served on 127.0.0.1: (its /invocations URL, its tuned threshold)."""
    tracking.configure()
    dataset, splits = jobs.load_data(tiny_params, *sample_paths)
    best = BestParams(
        task="text",
        study_name="serve",
        metric="val_f1",
        direction="maximize",
        value=0.5,
        trial_number=0,
        data_source=sample_paths[0],
        extra_source=sample_paths[1],
        data_digest=dataset.digest,
        tuned={},
        params=tiny_params.model_dump(mode="json"),
        decision=DecisionRule(kind="threshold", thresholds=(0.5,)),
    )
    outcome = jobs.train_best(best, dataset, splits)
    assert outcome.promoted and outcome.decision is not None
    with model_server("models:/tagifai@champion", workdir) as url:
        yield url, outcome.decision.summary


def test_served_model_answers_and_rejects_bad_payloads(served_model):
    url, threshold = served_model
    status, body = post_json(
        url,
        {
            "dataframe_split": {
                "columns": ["text"],
                "data": [["YOLO finds cars"], ["BERT for text"]],
            }
        },
    )
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == 2
    assert all(isinstance(row["tags"], list) for row in rows)
    # probabilities are a JSON object (tag -> probability), not a string holding one
    assert all(isinstance(row["probabilities"], dict) and row["probabilities"] for row in rows)
    # without a threshold param, the threshold tuned on validation decides
    for row in rows:
        for tag, p in row["probabilities"].items():
            if abs(p - threshold) > 1e-5:  # probabilities are rounded to 6 decimals
                assert (tag in row["tags"]) == (p >= threshold), (tag, p, threshold)

    # the threshold is a request param
    status, body = post_json(
        url,
        {
            "dataframe_records": [{"title": "YOLO", "description": "finds cars"}],
            "params": {"threshold": 0.0},
        },
    )
    assert status == 200, body
    row = body["predictions"][0]
    assert len(row["tags"]) == len(row["probabilities"])

    # a 1 MB text is answered (the text is cut to the documented limit), not refused
    status, body = post_json(url, {"inputs": {"text": ["graph " * 200_000]}})
    assert status == 200, body

    # Each bad payload: a 400 whose message says what is wrong, and no stack trace.
    bad = {
        "missing text": (
            {"dataframe_split": {"columns": ["body"], "data": [["hello"]]}},
            "expected a 'text' column or 'title'/'description'",
        ),
        "non-string": (
            {"dataframe_split": {"columns": ["text"], "data": [[42]]}},
            "row 1: text: expected a string, got 42",
        ),
        "empty list": (
            {"dataframe_split": {"columns": ["text"], "data": []}},
            "input: empty list of texts",
        ),
        "blank text": (
            {"dataframe_split": {"columns": ["text"], "data": [["   "]]}},
            "row 1: text: empty text",
        ),
        "threshold out of range": (
            {"inputs": {"text": ["x y"]}, "params": {"threshold": 2.0}},
            "threshold: must be within [0, 1], got 2.0",
        ),
        "not json columns": ({"nonsense": 1}, "exactly one of the input fields"),
    }
    for name, (payload, expected) in bad.items():
        status, body = post_json(url, payload)
        assert status == 400, (name, status, body)
        assert body.get("message") and expected in body["message"], (name, body)
        assert not body.get("stack_trace"), (name, body)
