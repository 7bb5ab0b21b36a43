"""`mlflow models serve` on 127.0.0.1 answers /invocations with tags; bad payloads get 400."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import model_server, post_json, tagifai_server

from tagifai import jobs, serving, tracking
from tagifai.best_params import BestParams
from tagifai.workloads.base import DecisionRule

pytestmark = [pytest.mark.server, pytest.mark.training]


def _train_champion(tiny_params, sample_paths) -> jobs.TrainOutcome:
    """Train the tiny params as the text champion (models:/tagifai@champion)."""
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
    return outcome


@pytest.fixture
def served_model(workdir, tiny_params, sample_paths) -> Iterator[tuple[str, float]]:
    """The champion served on 127.0.0.1: (its /invocations URL, its tuned threshold)."""
    outcome = _train_champion(tiny_params, sample_paths)
    assert outcome.decision is not None
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


def _post(url: str, body: bytes | Iterator[bytes], **headers: str) -> tuple[int, str]:
    """POST raw ``body`` (an iterator: chunked) with ``headers``; status and answer text."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=120)
    try:
        connection.request(
            "POST",
            parts.path,
            body=body,
            headers={"Content-Type": "application/json", **headers},
            encode_chunked=not isinstance(body, bytes),
        )
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_tagifai_serve_checks_the_host_and_bounds_requests(workdir, tiny_params, sample_paths):
    """`tagifai serve`: MLflow's scoring server, answering only its own host names, with
    request bodies read up to a limit and unparsable JSON a 400 (never a 500)."""
    _train_champion(tiny_params, sample_paths)
    good = json.dumps({"inputs": {"text": ["YOLO finds cars"]}}).encode()
    with tagifai_server("models:/tagifai@champion", workdir) as url:
        port = urllib.parse.urlsplit(url).port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            status, answer = _post(url, good, Host=host)
            assert status == 200, (host, answer)
            assert json.loads(answer)["predictions"][0]["probabilities"]
        # DNS rebinding: a page on another name that resolves to 127.0.0.1
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            status, answer = _post(url, good, Host=host)
            assert status == 400, (host, answer)

        limit = serving.MAX_REQUEST_BYTES
        big = b'{"inputs": {"text": ["' + b"a" * limit + b'"]}}'
        chunks = iter([big[i : i + (1 << 20)] for i in range(0, len(big), 1 << 20)])
        refusals: dict[str, tuple[Any, dict[str, str], int, str]] = {
            "declared too big": (big, {}, 413, f"over the limit of {limit:,} bytes"),
            "chunked too big": (chunks, {}, 413, "over the limit"),
            "deep": (b"[" * 100_000 + b"]" * 100_000, {}, 400, "JSON nested too deeply"),
            "huge integer": (b'{"inputs": {"text": [' + b"9" * 5000 + b"]}}", {}, 400, "JSON"),
            "truncated": (good[:-3], {}, 400, "not valid JSON"),
            "bad utf-8": (b'{"inputs": {"text": ["\xff\xfe"]}}', {}, 400, "not valid JSON"),
            # uvicorn's own parser answers this one, in plain text
            "bad length": (good, {"Content-Length": "ten"}, 400, "Invalid HTTP request"),
        }
        for name, (body, headers, code, expected) in refusals.items():
            status, answer = _post(url, body, **headers)
            assert status == code, (name, status, answer[:300])
            message = json.loads(answer)["message"] if answer.startswith("{") else answer
            assert expected in message and len(message) < 300, (name, message)
        # an error that quotes its input (MLflow repeats a column name) comes back cut
        huge_column = json.dumps(
            {"dataframe_split": {"columns": ["c" * 1_000_000], "data": [["x"]]}}
        )
        status, answer = _post(url, huge_column.encode())
        assert status == 400 and len(answer) < 2_000, (status, answer[:300])
        assert "stack_trace" not in json.loads(answer)
        assert _post(url, good)[0] == 200  # still serving after all of that
