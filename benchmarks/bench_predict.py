"""Prediction: model load time, batch throughput and served latency of a logged model.

What is measured, on one model trained with ``config/params.json`` on the real data
and logged with ``jobs.train_and_log`` into a temporary sqlite MLflow store:

(a) Load time: the ``mlflow.pyfunc.load_model(path)`` call on the model's files
    (downloaded once beforehand, as ``mlflow models serve`` and a deployed container
    have them) in a *fresh* Python process that has imported ``mlflow.pyfunc`` and
    nothing else, so torch and the model code are imported inside the call; the
    median of 3 processes. Target <= 2 s. ``import mlflow.pyfunc`` itself is not
    in the target row: it is timed in the same processes and reported beside it,
    with the sum (a new server worker or batch job pays both). Also beside it, the
    load by the tracking-store URI (``models:/...``), which adds MLflow's store
    connection and artifact lookup.
(b) Batch throughput: the loaded pyfunc model's ``predict`` on a DataFrame of 1,000
    texts (the real titles + descriptions, cycled), the median of 3 calls after one
    warm-up call. Target >= 2,000 texts/s.
(c) Served latency: ``mlflow models serve --env-manager local`` on 127.0.0.1 and a
    free port, 10 warm-up requests, then 200 sequential POSTs of one text each to
    ``/invocations`` (a new connection per request, as a simple client makes):
    p50 (target <= 20 ms) and p95. The server is always stopped.

Run: ``python -m benchmarks.bench_predict [--requests 200] [--smoke] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import (
    Inputs,
    Report,
    Row,
    Target,
    add_common_args,
    child_env,
    load_inputs_data,
    measured,
    median,
    mlflow_store,
    progress,
    run_script,
    stop_process_group,
    train_params,
    workspace,
)
from tagifai import jobs

__all__ = ["free_port", "main", "post", "run", "serve"]

KEY = "predict"
TITLE = "4. Prediction: load, batch, serve (bench_predict)"
LOAD_TARGET = Target("<=", 2.0, "<= 2 s")
THROUGHPUT_TARGET = Target(">=", 2000.0, ">= 2,000 texts/s")
P50_TARGET = Target("<=", 20.0, "<= 20 ms")
REPEATS = 3  # fresh-process loads and batch calls; the median is reported
BATCH = 1000  # texts per batch call
REQUESTS = 200  # timed sequential requests to the server
WARMUP_REQUESTS = 10
SERVER_START_SECONDS = 180  # give up waiting for /ping after this long
REQUEST_TIMEOUT = 30  # seconds per request

# Runs in a fresh interpreter: times the import and the load separately.
LOAD_SNIPPET = """
import json, sys, time
started = time.perf_counter()
import mlflow.pyfunc
imported = time.perf_counter()
mlflow.pyfunc.load_model(sys.argv[1])
loaded = time.perf_counter()
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported}))
"""


def _texts(projects_file: str, count: int) -> list[str]:
    """``count`` raw texts (title + description) of the projects file, cycled."""
    projects = json.loads(Path(projects_file).read_text(encoding="utf-8"))
    texts = [f"{p.get('title') or ''} {p.get('description') or ''}".strip() for p in projects]
    return list(itertools.islice(itertools.cycle(t for t in texts if t), count))


def _load_in_fresh_process(model_uri: str, env: dict[str, str]) -> dict[str, float]:
    """Seconds to import ``mlflow.pyfunc`` and to load the model, in a new interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_SNIPPET, model_uri],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"loading {model_uri} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def post(port: int, body: bytes) -> float:
    """One POST to /invocations on a new connection; its latency in ms."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(
            "POST", "/invocations", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    elapsed = 1000 * (time.perf_counter() - started)
    if response.status != 200:
        raise RuntimeError(f"/invocations answered {response.status}: {payload[:300]!r}")
    return elapsed


def _ping(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/ping")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@contextmanager
def serve(model_uri: str, env: dict[str, str], log_file: Path) -> Iterator[tuple[int, float]]:
    """Serve the model on 127.0.0.1; yield (port, seconds to the first /ping); always stop it.

    The server runs in its own process group, so stopping it also stops the
    workers it starts.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    started = time.perf_counter()
    with log_file.open("w") as log:
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while not _ping(port):
                if server.poll() is not None:
                    raise RuntimeError(
                        f"server exited with {server.returncode}: {log_file.read_text()[-2000:]}"
                    )
                if time.perf_counter() - started > SERVER_START_SECONDS:
                    raise RuntimeError(f"server did not answer /ping in {SERVER_START_SECONDS} s")
                time.sleep(0.25)
            yield port, time.perf_counter() - started
        finally:
            stop_process_group(server)


def run(inputs: Inputs, requests: int = REQUESTS) -> Report:
    """Train and log one model, then time its load, batch predict and served requests.

    Args:
        inputs: Data (``--smoke``: the sample, a 3-epoch model).
        requests: Timed sequential requests to the server.

    Returns:
        The report: load time, throughput and p50 latency vs targets, p95.
    """
    import mlflow

    started = time.perf_counter()
    with workspace(KEY) as folder:
        uri = mlflow_store(folder / "mlflow")
        env = child_env(MLFLOW_TRACKING_URI=uri)
        params = train_params(inputs)
        dataset, splits = load_inputs_data(params, inputs)
        architecture = params.model.architecture
        progress(KEY, f"train and log a model ({architecture}, {len(dataset.frame)} rows)")
        outcome = jobs.train_and_log(params, dataset, splits, experiment_name="bench-predict")
        model_uri = outcome.model_uri

        local_model = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder / "m"))
        progress(KEY, f"load {local_model} and {model_uri} in {REPEATS} fresh processes each")
        loads = [_load_in_fresh_process(local_model, env) for _ in range(REPEATS)]
        uri_loads = [_load_in_fresh_process(model_uri, env) for _ in range(REPEATS)]

        progress(KEY, f"batch predict, {BATCH} texts x {REPEATS}")
        model = mlflow.pyfunc.load_model(model_uri)
        frame = pd.DataFrame({"text": _texts(inputs.data, BATCH)})
        model.predict(frame.head(50))  # warm-up
        batch_seconds = []
        for _ in range(REPEATS):
            call_started = time.perf_counter()
            predicted = model.predict(frame)
            batch_seconds.append(time.perf_counter() - call_started)
            if len(predicted) != BATCH:
                raise RuntimeError(f"predict returned {len(predicted)} rows for {BATCH} texts")

        progress(KEY, f"serve; {WARMUP_REQUESTS} warm-up + {requests} timed requests")
        bodies = [
            json.dumps({"dataframe_split": {"columns": ["text"], "data": [[text]]}}).encode()
            for text in _texts(inputs.data, WARMUP_REQUESTS + requests)
        ]
        with serve(model_uri, env, folder / "serve.log") as (port, start_seconds):
            for body in bodies[:WARMUP_REQUESTS]:
                post(port, body)
            latencies = np.asarray([post(port, body) for body in bodies[WARMUP_REQUESTS:]])

    load = median([entry["load_s"] for entry in loads])
    each_load = ", ".join(f"{entry['load_s']:.2f}" for entry in loads)
    imports = median([entry["import_s"] for entry in loads])
    uri_load = median([entry["load_s"] for entry in uri_loads])
    throughput = BATCH / median(batch_seconds)
    p50, p95 = (float(np.percentile(latencies, q)) for q in (50, 95))
    rows: list[Row] = [
        measured(
            "pyfunc load time, fresh process",
            load,
            fmt="{:.2f} s",
            target=LOAD_TARGET,
            note=(
                f"the load_model call on the model's local files (torch and the model code "
                f"imported inside it); median of {REPEATS}: {each_load} s; "
                f"`import mlflow.pyfunc` before it ({imports:.2f} s) not included"
            ),
        ),
        measured(
            "import mlflow.pyfunc + load, fresh process",
            median([entry["import_s"] + entry["load_s"] for entry in loads]),
            fmt="{:.2f} s",
            note="the whole cold start of a process that loads the model's files",
        ),
        measured(
            "pyfunc load time by models:/ URI, fresh process",
            uri_load,
            fmt="{:.2f} s",
            note=(
                f"median of {REPEATS}; adds opening the sqlite tracking store and the artifact "
                "lookup"
            ),
        ),
        measured(
            "batch predict throughput",
            throughput,
            fmt="{:,.0f} texts/s",
            target=THROUGHPUT_TARGET,
            note=f"pyfunc predict on a {BATCH}-row DataFrame, median of {REPEATS} calls",
        ),
        measured(
            "served latency p50",
            p50,
            fmt="{:.1f} ms",
            target=P50_TARGET,
            note=(
                f"{requests} sequential POSTs of one text to /invocations on 127.0.0.1, "
                f"after {WARMUP_REQUESTS} warm-ups; new connection per request"
            ),
        ),
        measured("served latency p95", p95, fmt="{:.1f} ms", note=f"max {latencies.max():.1f} ms"),
        measured("server start to first /ping", start_seconds, fmt="{:.1f} s"),
        measured(
            "model test weighted F1",
            float(outcome.test_metrics["overall"]["f1"]),
            note=f"config/params.json ({architecture}); the model being served",
        ),
    ]
    return Report(
        KEY,
        TITLE,
        "One model trained with `config/params.json` and logged to MLflow: its pyfunc load "
        "time in a fresh process, batch throughput, and latency behind `mlflow models serve`.",
        rows,
        seconds=time.perf_counter() - started,
        smoke=inputs.smoke,
    )


def build_parser() -> argparse.ArgumentParser:
    """Flags: ``--data``, ``--tags``, ``--smoke``, ``--out``, ``--requests``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_predict",
        description="Load time, batch throughput and served latency of a logged model.",
    )
    add_common_args(parser)
    parser.add_argument(
        "--requests",
        type=int,
        default=REQUESTS,
        help=f"timed sequential requests to the server [default: {REQUESTS}]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the benchmark from the command line; returns its rows."""
    return run_script(
        "benchmarks.bench_predict",
        build_parser(),
        lambda inputs, args: run(inputs, requests=args.requests),
        argv,
    )


if __name__ == "__main__":
    main()
