"""`mlflow models serve` on 127.0.0.1 answers /invocations with tags; bad payloads get 400."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from helpers import REPO, subprocess_env

from tagifai import jobs, tracking

pytestmark = [pytest.mark.server, pytest.mark.training]


def _train_best(payload: dict, **kwargs):
    """train-best on the data the payload names."""
    return jobs.train_best(payload, *jobs.load_best_data(payload), **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, payload: object) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture
def served_model(workdir, tiny_params, sample_paths) -> Iterator[str]:
    tracking.configure()
    payload = {
        "study_name": "serve",
        "data_source": sample_paths[0],
        "tags_source": sample_paths[1],
        "params": tiny_params.model_dump(mode="json"),
    }
    _train_best(payload)
    port = _free_port()
    command = [
        str(REPO / ".venv" / "bin" / "mlflow"), "models", "serve",
        "-m", "models:/tagifai@champion", "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log = (workdir / "serve.log").open("w")
    server = subprocess.Popen(
        command, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT, cwd=workdir
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert server.poll() is None, (workdir / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not come up in 120 s"
            time.sleep(0.5)
        yield f"{base}/invocations"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_served_model_answers_and_rejects_bad_payloads(served_model):
    status, body = _post(
        served_model,
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
    assert all(set(json.loads(row["probabilities"])) for row in rows)

    # the threshold is a request param
    status, body = _post(
        served_model,
        {
            "dataframe_records": [{"title": "YOLO", "description": "finds cars"}],
            "params": {"threshold": 0.0},
        },
    )
    assert status == 200, body
    row = body["predictions"][0]
    assert len(row["tags"]) == len(json.loads(row["probabilities"]))

    # a 1 MB text is answered (the text is cut to the documented limit), not refused
    status, body = _post(served_model, {"inputs": {"text": ["graph " * 200_000]}})
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
        status, body = _post(served_model, payload)
        assert status == 400, (name, status, body)
        assert body.get("message") and expected in body["message"], (name, body)
        assert not body.get("stack_trace"), (name, body)
