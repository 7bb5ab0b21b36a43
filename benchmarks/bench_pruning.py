"""Pruning savings: epochs the configured pruner saves, and the validation F1 it keeps.

What is measured: the same seeded study (``config/optimize.yaml``, ``--trials``
trials, untracked) run twice: with the configured pruner (Median, from the first
finished trial on, after 3 warm-up epochs) and with the Nop pruner, which lets every trial run
until early stopping. The work a study does is its total epochs trained: the sum
of each complete or pruned trial's ``epochs`` user attribute. Pruning is worth
having if it cuts that work a lot (target >= 40% fewer epochs) without losing the
study's result (target: best validation F1 within 0.01 of the Nop study's).

Both arms draw the same first trials (same sampler seed); TPE's later suggestions
can differ, since pruned trials feed it different values.

Run: ``python -m benchmarks.bench_pruning [--trials 10] [--smoke] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from benchmarks.common import (
    Inputs,
    Report,
    Row,
    Target,
    add_common_args,
    epochs_trained,
    load_inputs_data,
    measured,
    optuna_url,
    progress,
    run_script,
    study_config,
    trial_states,
    warm_up,
    workspace,
)
from tagifai.search import PrunerConfig
from tagifai.study import TrialProgress, run_study

__all__ = ["main", "run"]

KEY = "pruning"
TITLE = "3. Pruning savings (bench_pruning)"
TRIALS = 10  # 9 of them prunable (Median waits for 1 finished trial): ~4 min for both
SMOKE_TRIALS = 4
EPOCHS_TARGET = Target(">=", 40.0, ">= 40% fewer epochs")
F1_TARGET = Target("<=", 0.01, "within 0.01")


@dataclass(frozen=True)
class Arm:
    """One study of the comparison.

    Attributes:
        seconds: Wall time of ``run_study``.
        epochs: Epochs trained over the study.
        best: The study's best validation F1.
        states: Trial counts by state.
    """

    seconds: float
    epochs: int
    best: float
    states: dict[str, int]


def _progress(arm: str) -> Callable[[TrialProgress], None]:
    return lambda now: progress(KEY, f"{arm}: trial {now.done}/{now.total}")


def run(inputs: Inputs, trials: int | None = None) -> Report:
    """Run the study with the configured pruner and with none; compare epochs and best F1.

    Args:
        inputs: Data (``--smoke``: the sample, 4 trials of 3 epochs: nothing is pruned).
        trials: Trials per study (default 10).

    Returns:
        The report: epochs saved and best-F1 shortfall vs targets, wall times.
    """
    started = time.perf_counter()
    n_trials = trials or (SMOKE_TRIALS if inputs.smoke else TRIALS)
    run_id = uuid.uuid4().hex[:8]
    arms: dict[str, Arm] = {}
    with workspace(KEY) as folder:
        configured, base = study_config(inputs, "template", optuna_url(folder), n_trials)
        dataset, splits = load_inputs_data(base, inputs)
        warm_up(configured, base, dataset, splits)
        pruners = {"configured": configured.pruner, "nop": PrunerConfig(name="Nop")}
        for arm, pruner in pruners.items():
            config = configured.model_copy(
                update={
                    "study_name": f"bench-pruning-{run_id}-{arm}",
                    "storage": optuna_url(folder / arm),
                    "pruner": pruner,
                }
            )
            arm_started = time.perf_counter()
            result = run_study(
                config, base, dataset, splits, storage=config.storage,
                best_params_file=None, track=False,
                on_trial=_progress(arm),
            )  # fmt: skip
            arms[arm] = Arm(
                seconds=time.perf_counter() - arm_started,
                epochs=epochs_trained(result.study),
                best=float(result.study.best_value),
                states=trial_states(result.study),
            )

    pruned, nop = arms["configured"], arms["nop"]
    saved = 100 * (1 - pruned.epochs / nop.epochs) if nop.epochs else None
    shortfall = nop.best - pruned.best
    name = configured.pruner.name
    kwargs = ", ".join(f"{key}={value}" for key, value in configured.pruner.kwargs.items())
    rows: list[Row] = [
        measured(
            "epochs saved by pruning",
            saved,
            fmt="{:.0f}% fewer",
            target=EPOCHS_TARGET,
            note=(
                f"{pruned.epochs} epochs with {name}({kwargs}) vs {nop.epochs} with Nop; "
                f"{pruned.states['PRUNED']} of {n_trials} trials pruned"
            ),
        ),
        measured(
            "best val F1: Nop minus pruned",
            shortfall,
            fmt="{:+.4f}",
            target=F1_TARGET,
            note=f"{name} {pruned.best:.4f} vs Nop {nop.best:.4f} (study.best_value)",
        ),
        measured(
            "study wall time, pruned",
            pruned.seconds,
            fmt="{:,.0f} s",
            note=(
                f"{100 * (pruned.seconds / nop.seconds - 1):+.0f}% vs Nop; "
                f"{pruned.states['FAIL']} failed trials"
            ),
        ),
        measured(
            "study wall time, Nop",
            nop.seconds,
            fmt="{:,.0f} s",
            note=f"{nop.states['FAIL']} failed trials",
        ),
    ]
    return Report(
        KEY,
        TITLE,
        f"The same seeded study ({n_trials} trials, untracked) with the configured pruner "
        "and with the Nop pruner: epochs trained (sum of each trial's `epochs`), wall time "
        "and best validation F1.",
        rows,
        seconds=time.perf_counter() - started,
        smoke=inputs.smoke,
    )


def build_parser() -> argparse.ArgumentParser:
    """Flags: ``--data``, ``--tags``, ``--smoke``, ``--out``, ``--trials``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_pruning",
        description="Epochs and best validation F1 with the configured pruner vs none.",
    )
    add_common_args(parser, trials=TRIALS)
    return parser


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the benchmark from the command line; returns its rows."""
    return run_script(
        "benchmarks.bench_pruning",
        build_parser(),
        lambda inputs, args: run(inputs, trials=args.trials),
        argv,
    )


if __name__ == "__main__":
    main()
