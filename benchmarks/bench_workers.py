"""Workers: trials per hour of ``tagifai optimize`` with 1 and with 2 worker processes.

What is measured: the CLI as a user runs it, ``tagifai optimize --config C --data D
--tags T --n-trials N --study-name S --storage sqlite:///... --workers K``, for K=1
and K=2, each a fresh study in a fresh Optuna storage and sqlite MLflow store
(``MLFLOW_TRACKING_URI``; its schema is created before the clock starts, as for
a store already in use). ``C`` is a temporary copy of ``config/optimize.yaml`` with
the Nop pruner, so every trial trains until early stopping and the two runs do
comparable work. Wall time is the whole command (start-up, data loading, trials,
summary), so trials/hour is what a user gets; the target is a speed-up of at
least 1.7x with 2 workers on this machine.

Both runs train the *same* trials: before each command the study is created in
its storage and N param sets, drawn once from the search space by a seeded
random sampler, are queued in it (``study.enqueue_trial``); workers run queued
trials first. Otherwise parallel TPE would suggest other params than sequential
TPE, and trial lengths vary several-fold with params.

Run: ``python -m benchmarks.bench_workers [--trials 6] [--smoke] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml

from benchmarks.common import (
    OPTIMIZE_CONFIG,
    PARAMS_FILE,
    Inputs,
    Report,
    Row,
    Target,
    add_common_args,
    child_env,
    epochs_trained,
    measured,
    mlflow_store,
    optuna_url,
    progress,
    reset_mlflow_state,
    run_script,
    smoke_space,
    stop_process_group,
    train_params,
    trial_states,
    workspace,
)
from tagifai.search import OptimizeConfig, load_optimize_config, suggest_params
from tagifai.workloads.base import RunParams

__all__ = ["main", "run"]

KEY = "workers"
TITLE = "5. Trials per hour, 1 vs 2 workers (bench_workers)"
TRIALS = 6  # ~40 s a trial on 2 cores: the two commands take about 7 min together
SMOKE_TRIALS = 2
WORKERS = (1, 2)
SPEEDUP_TARGET = Target(">=", 1.7, ">= 1.7x")
COMMAND_TIMEOUT = 30 * 60  # seconds; a stuck study is stopped, not waited on forever
DRAW_SEED = 7  # the queued param sets: the same in both runs


def _queued_params(config: OptimizeConfig, base: RunParams, n_trials: int) -> list[dict[str, Any]]:
    """``n_trials`` param sets from the study's search space, by a seeded random sampler.

    Each is a trial's sampled values (the architecture, then its knobs), as
    ``study.enqueue_trial`` takes them.
    """
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=DRAW_SEED))
    queued = []
    for _ in range(n_trials):
        trial = draw.ask()
        suggest_params(trial, config, base)
        queued.append(dict(trial.params))
    return queued


def _study_file(folder: Path, inputs: Inputs) -> Path:
    """A copy of ``config/optimize.yaml`` with the Nop pruner and absolute params path
    (in a smoke run, shrunk params and every architecture's epochs pinned)."""
    config = yaml.safe_load(OPTIMIZE_CONFIG.read_text(encoding="utf-8"))
    config["pruner"] = {"name": "Nop"}
    params_file = PARAMS_FILE
    if inputs.smoke:
        params_file = folder / "smoke_params.json"
        params_file.write_text(json.dumps(train_params(inputs).model_dump(mode="json")))
        config["search_space"] = smoke_space(config.get("search_space") or {})
    config["params"] = str(params_file)
    path = folder / "optimize.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class WorkerRun:
    """One ``tagifai optimize --workers K`` command.

    Attributes:
        seconds: Wall time of the whole command.
        done: Complete + pruned trials in the study.
        failed: Failed trials (a surplus trial refused by the study counts here).
        epochs: Epochs trained over the study.
        distinct: Distinct parameter sets among the done trials.
        trial_seconds: Sum of the done trials' durations (start to finish).
    """

    seconds: float
    done: int
    failed: int
    epochs: int
    distinct: int
    trial_seconds: float

    def per_hour(self, count: float) -> float:
        """``count`` per hour of this command's wall time."""
        return 3600 * count / self.seconds


def _optimize(
    folder: Path,
    config_file: Path,
    inputs: Inputs,
    direction: Literal["maximize", "minimize"],
    queued: list[dict[str, Any]],
    workers: int,
) -> WorkerRun:
    """Run ``tagifai optimize --workers K`` in ``folder`` on a study holding the queued
    trials; its wall time and study record."""
    folder.mkdir(parents=True)
    uri = mlflow_store(folder)  # schema made here, outside the clock
    reset_mlflow_state()
    storage = optuna_url(folder)
    study_name = f"bench-workers-{uuid.uuid4().hex[:8]}-{workers}"
    n_trials = len(queued)
    study = optuna.create_study(study_name=study_name, storage=storage, direction=direction)
    for params in queued:
        study.enqueue_trial(params)
    command = [
        sys.executable, "-m", "tagifai.cli", "optimize", "--config", str(config_file),
        "--data", inputs.data, *(("--tags", inputs.tags) if inputs.tags else ()),
        "--n-trials", str(n_trials), "--study-name", study_name, "--storage", storage,
        "--workers", str(workers),
    ]  # fmt: skip
    log_file = folder / "optimize.log"
    started = time.perf_counter()
    with log_file.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=folder,  # experiments/ and config/best_params.json land here
            env=child_env(MLFLOW_TRACKING_URI=uri),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # one process group: the helpers stop with it
        )
        try:
            code: int | None = process.wait(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        finally:  # also on Ctrl-C: the workers are in their own session, stop them here
            stop_process_group(process, grace=60)
    seconds = time.perf_counter() - started
    if code is None:
        raise RuntimeError(f"--workers {workers}: no result in {COMMAND_TIMEOUT} s")
    if code != 0:
        raise RuntimeError(f"--workers {workers} exited {code}: {log_file.read_text()[-2000:]}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    states = trial_states(study)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    return WorkerRun(
        seconds=seconds,
        done=states["COMPLETE"] + states["PRUNED"],
        failed=states["FAIL"],
        epochs=epochs_trained(study),
        distinct=len({json.dumps(t.params, sort_keys=True) for t in done}),
        trial_seconds=sum(
            (t.datetime_complete - t.datetime_start).total_seconds()
            for t in done
            if t.datetime_complete is not None and t.datetime_start is not None
        ),
    )


def run(inputs: Inputs, trials: int | None = None) -> Report:
    """Run the same study with 1 and with 2 workers; compare trials per hour.

    Args:
        inputs: Data (``--smoke``: the sample, 2 trials of 3 epochs).
        trials: Trials per study (default 6).

    Returns:
        The report: trials/hour of each, the speed-up vs target, epochs/hour.
    """
    started = time.perf_counter()
    n_trials = trials or (SMOKE_TRIALS if inputs.smoke else TRIALS)
    runs: dict[int, WorkerRun] = {}
    with workspace(KEY) as folder:
        config_file = _study_file(folder, inputs)
        config, base, _ = load_optimize_config(config_file)
        queued = _queued_params(config, base, n_trials)
        for workers in WORKERS:
            progress(KEY, f"tagifai optimize --workers {workers} --n-trials {n_trials}")
            runs[workers] = _optimize(
                folder / f"workers-{workers}", config_file, inputs, config.direction, queued,
                workers,
            )  # fmt: skip
            progress(KEY, f"--workers {workers}: {runs[workers].seconds:.0f} s")

    one, two = (runs[k].per_hour(runs[k].done) for k in WORKERS)
    rows: list[Row] = [
        measured(
            "speed-up of 2 workers (trials/hour ratio)",
            two / one,
            fmt="{:.2f}x",
            target=SPEEDUP_TARGET,
            note=(
                f"{os.cpu_count()} cores; the same {n_trials} queued trials in both runs, "
                "Nop pruner"
            ),
        ),
    ]
    for workers in WORKERS:
        entry = runs[workers]
        rows.append(
            measured(
                f"trials/hour, {workers} worker{'s' if workers > 1 else ''}",
                entry.per_hour(entry.done),
                fmt="{:.0f}",
                note=(
                    f"{entry.done} trials in {entry.seconds:.0f} s (whole command); "
                    f"{entry.failed} failed/surplus; {entry.epochs} epochs; "
                    f"{entry.distinct} distinct param sets"
                ),
            )
        )
    rows.append(
        measured(
            "epochs/hour ratio, 2 vs 1 worker",
            runs[2].per_hour(runs[2].epochs) / runs[1].per_hour(runs[1].epochs),
            fmt="{:.2f}x",
            note="the same comparison per epoch trained",
        )
    )
    slowdown = runs[2].trial_seconds / runs[1].trial_seconds if runs[1].trial_seconds else None
    rows.append(
        measured(
            "time per trial, 2 workers vs 1 (sum of trial durations)",
            slowdown,
            fmt="{:.2f}x",
            note=(
                f"{runs[2].trial_seconds:.0f} s vs {runs[1].trial_seconds:.0f} s: two workers "
                "share the cores (1 torch thread each, vs 2 for one worker), so the speed-up "
                f"cannot pass 2 / this = {2 / slowdown:.2f}x"
                if slowdown
                else "no trial durations"
            ),
        )
    )
    return Report(
        KEY,
        TITLE,
        "`tagifai optimize --workers K` as a subprocess, K = 1 and 2, same study config "
        "(Nop pruner) and the same queued trials, each with a fresh Optuna storage and "
        "MLflow store.",
        rows,
        seconds=time.perf_counter() - started,
        smoke=inputs.smoke,
    )


def build_parser() -> argparse.ArgumentParser:
    """Flags: ``--data``, ``--tags``, ``--smoke``, ``--out``, ``--trials``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_workers",
        description="Trials per hour of `tagifai optimize` with 1 and 2 worker processes.",
    )
    add_common_args(parser, trials=TRIALS)
    return parser


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the benchmark from the command line; returns its rows."""
    return run_script(
        "benchmarks.bench_workers",
        build_parser(),
        lambda inputs, args: run(inputs, trials=args.trials),
        argv,
    )


if __name__ == "__main__":
    main()
