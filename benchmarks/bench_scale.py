"""Coordination at scale: N worker processes on one study, PostgreSQL + an MLflow server.

The script starts a real PostgreSQL 15 and a real ``mlflow server`` backed by it
(``scripts/servers.sh``, 127.0.0.1, a temporary folder), then for each N runs N
worker processes on one fresh study. A worker is tagifai's own study machinery
(the storage settings of :func:`tagifai.study.make_storage`, the claims, next trial
and heartbeats of :mod:`tagifai.coordination`, the parent run and one nested child run
per trial of :class:`tagifai.study_runs.StudyRuns`, per-epoch metrics in batches, the
MLflowCallback's value and tags) around a trial that does no CPU work and logs no model:
each epoch sleeps a fixed time and reports an intermediate value. So the figure is
the pipeline's coordination cost, not the two cores' training speed.

For each N it reports trials/s against the ideal N / (epochs x sleep), the p50/p95
time per call spent in Optuna storage calls and in MLflow HTTP calls (timed inside
the workers), the peak of PostgreSQL connections (``pg_stat_activity``, polled), and
the integrity of the record: completed trials without a child run (lost), trials
with more than one (duplicates), runs left RUNNING.

N = 1, 4, 8, 16 on this 2-core, 24 GiB machine: a worker process holds ~350 MB
(torch, MLflow, Optuna imported), so 16 fit in memory several times over; more
would measure the two cores' scheduling more than the storage.

Run: ``python -m benchmarks.bench_scale [--workers 1,4,8,16] [--trials-per-worker 4]
[--epochs 5] [--sleep 0.5] [--out FILE]`` (needs PostgreSQL 15: ``make system-deps``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    Inputs,
    Report,
    Row,
    Target,
    child_env,
    measured,
    note,
    progress,
    quiet,
    write_results,
)

__all__ = ["TITLE", "build_parser", "main", "run"]

KEY = "scale"
TITLE = "Scale: N workers on one study (PostgreSQL + MLflow server)"
WORKERS = (1, 4, 8, 16)
TRIALS_PER_WORKER = 4
EPOCHS = 5
SLEEP = 0.5  # seconds per epoch: a trial is EPOCHS x SLEEP of waiting, no CPU
TARGET_RATIO = 0.8  # of the ideal N / trial time, at the largest N
SERVERS = REPO / "scripts" / "servers.sh"
# Optuna storage calls a trial makes (timed in the workers).
STORAGE_CALLS = (
    "create_new_trial",
    "set_trial_param",
    "set_trial_intermediate_value",
    "set_trial_state_values",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
    "get_study_id_from_name",
    "record_heartbeat",
)


# --- the worker (a subprocess) ---------------------------------------------------------


def _timed(function: Callable[..., Any], times: list[float]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times.append(time.perf_counter() - started)

    return call


def worker(args: argparse.Namespace) -> None:
    """One worker: wait for the start signal, run trials until the study is full, write
    the call times as JSON."""
    import mlflow.utils.rest_utils as rest
    import optuna

    from tagifai import coordination, tracking
    from tagifai.search import OptimizeConfig
    from tagifai.study import make_storage
    from tagifai.study_runs import StudyRuns

    quiet()
    storage_times: list[float] = []
    mlflow_times: list[float] = []
    tracking.configure()
    config = OptimizeConfig(study_name=args.study, n_trials=args.trials)
    store = make_storage(args.storage, config)
    for name in STORAGE_CALLS:
        setattr(store, name, _timed(getattr(store, name), storage_times))
    # Every MLflow client call to the server goes through this one function.
    rest.http_request = _timed(rest.http_request, mlflow_times)
    study = optuna.load_study(
        study_name=args.study, storage=store, sampler=optuna.samplers.RandomSampler()
    )
    study_id = store.get_study_id_from_name(args.study)
    runs = StudyRuns("value")
    ran = 0
    with runs.parent(
        study,
        experiment_name=args.study,
        claim=lambda name: coordination.claim(store, f"{study_id}:{name}"),
        storage=store,
    ) as parent:
        storage_times.clear()
        mlflow_times.clear()
        go = Path(args.go)
        while not go.exists():  # all workers start trials together
            time.sleep(0.05)
        # The loop of tagifai.study.run_trial, around a trial that only waits.
        while (trial := coordination.next_trial(study, args.trials, None)) is not None:
            with coordination.heartbeat(trial), runs.trial(trial) as run:
                x = trial.suggest_float("x", 0.0, 1.0)
                run.log_params({"x": x})
                for epoch in range(1, args.epochs + 1):
                    time.sleep(args.sleep)
                    run.epochs.on_epoch_end(epoch, {"val_value": x * epoch})
                    trial.report(x * epoch, epoch)
                run.finish(study, study.tell(trial, x))
            ran += 1
        # The last worker out finishes the shared parent; the others leave it running.
        complete = coordination.study_is_complete(study, args.trials)
        parent.status = "FINISHED" if complete else "RUNNING"
    Path(args.result).write_text(
        json.dumps({"ran": ran, "storage": storage_times, "mlflow": mlflow_times})
    )


# --- the benchmark ---------------------------------------------------------------------


def _servers(action: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", str(SERVERS), action], env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"servers.sh {action}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ConnectionPeak:
    """Polls ``pg_stat_activity`` while running; keeps the peak count."""

    def __init__(self, pg_url: str) -> None:
        self.url = pg_url.rsplit("/", 1)[0] + "/postgres"
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self._stop.is_set():
                row = connection.execute(
                    "select count(*) from pg_stat_activity where datname in ('optuna', 'mlflow')"
                ).fetchone()
                self.peak = max(self.peak, int(row[0]) if row else 0)
                self._stop.wait(0.2)

    def __enter__(self) -> _ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _one_scale(
    n: int, args: argparse.Namespace, env: dict[str, str], pg: str, folder: Path
) -> dict[str, Any]:
    """N workers on a fresh study; what they measured and what the record holds."""
    import optuna
    from mlflow.tracking import MlflowClient

    name = f"scale-{n}-{uuid.uuid4().hex[:6]}"
    total = n * args.trials_per_worker
    storage = optuna.storages.RDBStorage(pg)  # one pool for this process's own reads
    optuna.create_study(study_name=name, storage=storage, direction="maximize")
    go = folder / f"{name}.go"
    results = [folder / f"{name}-{i}.json" for i in range(n)]
    command = [sys.executable, "-m", "benchmarks.bench_scale", "--worker", "--study", name]
    command += ["--storage", pg, "--trials", str(total), "--epochs", str(args.epochs)]
    command += ["--sleep", str(args.sleep), "--go", str(go)]
    processes = [
        subprocess.Popen([*command, "--result", str(result)], env=env, cwd=REPO)
        for result in results
    ]
    # Start the trials once every worker has its parent run (they poll for the go file).
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        study = optuna.load_study(study_name=name, storage=pg)
        if study.user_attrs.get("mlflow_parent_run_id") and all(
            p.poll() is None for p in processes
        ):
            break
        time.sleep(0.5)
    time.sleep(max(5.0, n * 1.0))  # every worker past its imports and its parent lookup
    with _ConnectionPeak(pg) as connections:
        go.touch()
        codes = [process.wait(timeout=1800) for process in processes]
    if any(codes):
        raise RuntimeError(f"N={n}: worker exit codes {codes}")
    measured_calls = [json.loads(result.read_text()) for result in results]
    study = optuna.load_study(study_name=name, storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    starts = [t.datetime_start.timestamp() for t in complete if t.datetime_start]
    ends = [t.datetime_complete.timestamp() for t in complete if t.datetime_complete]
    span = max(ends) - min(starts)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    by_trial: dict[str, int] = {}
    for run in children:
        number = run.data.tags.get("trial_number", run.info.run_name.removeprefix("trial-"))
        by_trial[number] = by_trial.get(number, 0) + 1
    storage.engine.dispose()
    storage_calls = [s for m in measured_calls for s in m["storage"]]
    mlflow_calls = [s for m in measured_calls for s in m["mlflow"]]
    trial_seconds = args.epochs * args.sleep
    return {
        "n": n,
        "trials": len(complete),
        "expected": total,
        "throughput": len(complete) / span,
        "ideal": n / trial_seconds,
        "storage_p50": _percentile(storage_calls, 0.5) * 1000,
        "storage_p95": _percentile(storage_calls, 0.95) * 1000,
        "storage_calls": len(storage_calls) / max(1, len(complete)),
        "mlflow_p50": _percentile(mlflow_calls, 0.5) * 1000,
        "mlflow_p95": _percentile(mlflow_calls, 0.95) * 1000,
        "mlflow_calls": len(mlflow_calls) / max(1, len(complete)),
        "connections": connections.peak,
        "lost": sum(1 for t in complete if by_trial.get(str(t.number), 0) == 0),
        "duplicates": sum(1 for count in by_trial.values() if count > 1),
        "running": sum(1 for r in runs if r.info.status == "RUNNING"),
    }


def run(inputs: Inputs, args: argparse.Namespace | None = None) -> Report:
    """Start the servers, run each N, stop the servers; one row per N."""
    smoke = ["--workers", "1,2", "--trials-per-worker", "2", "--epochs", "2", "--sleep", "0.2"]
    args = args or build_parser().parse_args(smoke if inputs.smoke else [])
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="tagifai-scale-", dir="/tmp"))
    env = child_env(
        TAGIFAI_SERVERS_DIR=str(root), PG_PORT=str(_free_port()), MLFLOW_PORT=str(_free_port())
    )
    env["PGPASSFILE"] = str(root / "pgpass")
    os.environ["PGPASSFILE"] = env["PGPASSFILE"]
    outcomes = []
    try:
        pg = _servers("pg-start", env)
        server = _servers("mlflow-start", env)
        env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"] = server
        import mlflow

        mlflow.set_tracking_uri(server)
        for n in args.workers:
            progress(KEY, f"N={n}: {n * args.trials_per_worker} trials")
            outcome = _one_scale(n, args, env, pg, root)
            progress(KEY, f"N={n}: {outcome['throughput']:.2f} trials/s of {outcome['ideal']:.2f}")
            outcomes.append(outcome)
    finally:
        for action in ("mlflow-stop", "pg-stop"):
            subprocess.run(["bash", str(SERVERS), action], env=env, timeout=120, check=False)
    rows: list[Row] = []
    largest = max(args.workers)
    for outcome in outcomes:
        ratio = outcome["throughput"] / outcome["ideal"]
        target = (
            Target(">=", TARGET_RATIO, f">= {TARGET_RATIO} x ideal")
            if outcome["n"] == largest
            else None
        )
        rows.append(
            measured(
                f"N={outcome['n']}: trials/s vs ideal",
                ratio,
                "{:.2f}",
                target,
                f"{outcome['throughput']:.2f} trials/s, ideal {outcome['ideal']:.2f}; "
                f"{outcome['trials']}/{outcome['expected']} trials complete",
            )
        )
        rows.append(
            note(
                f"N={outcome['n']}: call times",
                f"storage p50 {outcome['storage_p50']:.1f} ms / "
                f"p95 {outcome['storage_p95']:.1f} ms",
                f"{outcome['storage_calls']:.0f} storage calls per trial; MLflow HTTP p50 "
                f"{outcome['mlflow_p50']:.1f} ms / p95 {outcome['mlflow_p95']:.1f} ms, "
                f"{outcome['mlflow_calls']:.0f} calls per trial",
            )
        )
        integrity = outcome["lost"] + outcome["duplicates"] + outcome["running"]
        rows.append(
            measured(
                f"N={outcome['n']}: lost + duplicate child runs + RUNNING leftovers",
                integrity,
                "{:.0f}",
                Target("<=", 0, "0"),
                f"lost {outcome['lost']}, duplicates {outcome['duplicates']}, RUNNING "
                f"{outcome['running']}; peak PostgreSQL connections {outcome['connections']}",
            )
        )
    about = (
        f"N worker processes on one study, each trial {args.epochs} epochs of a "
        f"{args.sleep:g} s sleep (no CPU work) reporting intermediate values and per-epoch "
        f"metrics, {args.trials_per_worker} trials per worker; a real PostgreSQL 15 (Optuna "
        "storage and the MLflow server's store) and a real `mlflow server` (2 workers), both "
        "started by the script on 127.0.0.1. Ideal = N / trial time."
    )
    return Report(
        KEY, TITLE, about, rows, seconds=time.perf_counter() - started, smoke=inputs.smoke
    )


def build_parser() -> argparse.ArgumentParser:
    """Flags of the benchmark (and of its ``--worker`` mode)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_scale", description=TITLE)
    parser.add_argument(
        "--workers",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=WORKERS,
        help="comma-separated worker counts [default: 1,4,8,16]",
    )
    parser.add_argument("--trials-per-worker", type=int, default=TRIALS_PER_WORKER)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--sleep", type=float, default=SLEEP)
    parser.add_argument("--out", type=Path, help="also write the results as markdown here")
    # Worker mode (the benchmark starts itself with these).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    parser.add_argument("--storage", help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the benchmark (or, with ``--worker``, one worker of it)."""
    args = build_parser().parse_args(argv)
    if args.worker:
        worker(args)
        return []
    quiet()
    inputs = Inputs(data="", tags=None)
    report = run(inputs, args)
    print(report.markdown())
    if args.out is not None:
        command = " ".join(["python -m benchmarks.bench_scale", *(argv or sys.argv[1:])])
        write_results([report], args.out, command, inputs, report.seconds)
    return report.rows


if __name__ == "__main__":
    main()
