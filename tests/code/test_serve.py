"""`mlflow models serve` on 127.0.0.1 answers /invocations with tags; bad payloads get 400."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
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
        task=tiny_params.task,
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
        decision=DecisionRule(
            kind="threshold" if tiny_params.task == "text" else "confidence", thresholds=(0.5,)
        ),
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


# Every JSON payload form of MLflow's scoring server, one image named by its path.
PATH_PAYLOADS: dict[str, Callable[[str], Any]] = {
    "dataframe_split": lambda path: {"dataframe_split": {"columns": ["path"], "data": [[path]]}},
    "dataframe_records": lambda path: {"dataframe_records": [{"path": path}]},
    "instances": lambda path: {"instances": [{"path": path}]},
    "inputs": lambda path: {"inputs": {"path": [path]}},
}


def test_a_served_model_reads_no_file_of_the_server(workdir):
    """`tagifai serve` of an image model: a payload naming a file on the server (one that
    exists and is an image, one that is not an image, one that does not exist) gets the
    same 400 in every payload form (JSON and CSV), so no file is read and none is told to
    exist; an image sent in the request is answered."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from tagifai.workloads.images.params import ImagesParams

    params = ImagesParams.model_validate(
        {"data": {"image_size": 8}, "model": {"architecture": "mlp", "hidden_units": 16,
         "num_layers": 1, "num_epochs": 1, "patience": 1}}
    )  # fmt: skip
    _train_champion(params, (None, None))
    from sklearn.datasets import load_digits

    digit = np.rint(load_digits().images[0] * 255 / 16).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(digit).save(buffer, format="PNG")  # not blank: predict refuses those
    png = workdir / "digit.png"
    png.write_bytes(buffer.getvalue())
    files = [str(png), "/etc/passwd", str(workdir / "missing.png")]
    with tagifai_server("models:/tagifai-images@champion", workdir) as url:
        sent = base64.b64encode(png.read_bytes()).decode()
        status, body = post_json(url, {"dataframe_split": {"columns": ["image"], "data": [[sent]]}})
        assert status == 200 and body["predictions"][0]["probabilities"], body
        answers = set()
        for form, payload in PATH_PAYLOADS.items():
            for path in files:
                status, body = post_json(url, payload(path))
                assert status == 400, (form, path, body)
                answers.add(body["message"])
        for path in files:
            status, text = _post(url, f"path\n{path}\n".encode(), **{"Content-Type": "text/csv"})
            assert status == 400, (path, text)
            answers.add(json.loads(text)["message"])
    # One answer for all: it says nothing of the files, and never was a prediction.
    assert len(answers) == 1, answers
    (answer,) = answers
    assert "'path' column is not read" in answer and "send 'image'" in answer
    assert not any(word in answer for word in ("no such", "readable", "passwd", "png"))
    # Plain `mlflow models serve` loads the same pyfunc: refused too (its answer quotes
    # the input frame, so only the reason is compared).
    with model_server("models:/tagifai-images@champion", workdir) as url:
        for path in files:
            status, body = post_json(url, PATH_PAYLOADS["dataframe_split"](path))
            assert status == 400 and answer in body["message"], (path, body)
            assert "no such" not in body["message"] and "readable" not in body["message"]


def _slow_client(port: int, head_only: bool) -> socket.socket:
    """A connection that sends a request's headers and half its body (or half its headers)
    and then nothing more."""
    body = json.dumps({"inputs": {"text": ["YOLO finds cars"]}}).encode()
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)  # a safety net
    sock.sendall(head[:30] if head_only else head + body[:10])
    return sock


def _read_to_end(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection."""
    answer = b""
    with sock:
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_tagifai_serve_bounds_slow_clients(workdir, tiny_params, sample_paths):
    """Clients that never finish their body or their headers are answered 408 (body) or
    closed (headers) after --read-timeout; past --max-connections a request gets a 503;
    a normal client is served beside the slow ones and after them."""
    _train_champion(tiny_params, sample_paths)
    good = json.dumps({"inputs": {"text": ["YOLO finds cars"]}}).encode()
    # The timeout outlasts the steps before the slow clients are read, on a busy machine too.
    options = ("--read-timeout", "15", "--max-connections", "4")
    with tagifai_server("models:/tagifai@champion", workdir, *options) as url:
        port = urllib.parse.urlsplit(url).port or 0
        slow = [_slow_client(port, head_only=head_only) for head_only in (False, False, True)]
        assert _post(url, good)[0] == 200  # three slow ones and this: under the cap
        # A fourth connection that never sends its headers (it makes no request that
        # could be refused): the next connection is over the cap, once the server has
        # taken the fourth (until then, answered).
        slow.append(_slow_client(port, head_only=True))
        deadline = time.monotonic() + 120
        while (status := _post(url, good))[0] != 503:
            assert status[0] == 200 and time.monotonic() < deadline, status
        assert "Service Unavailable" in status[1]
        answers = [_read_to_end(sock) for sock in slow]  # each ends: the server closed it
        assert answers[2:] == [b"", b""]  # headers never whole: closed without an answer
        for answer in answers[:2]:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
            message = json.loads(answer.split(b"\r\n\r\n", 1)[1])["message"]
            assert message == "request body: not received whole within 15 seconds"
        status, answer = _post(url, good)
        assert status == 200, answer
        # The access log quotes the path: an escape code in it never reaches the terminal.
        assert _post(url.replace("/invocations", "/%1b[31mred"), good)[0] == 404
        log = (workdir / "tagifai-serve.log").read_text()
        assert "[31mred" in log and "\x1b" not in log, log[-2000:]
