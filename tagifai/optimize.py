"""Optimize: an Optuna study over training params, resumable, one MLflow parent run.

The objective trains on the train split and returns a **validation** metric;
pruning reports that same metric, in the study's direction, every epoch; each
trial's threshold is chosen on validation. The test split is never read here.
Every MLflow call goes through :mod:`tagifai.tracking`.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy.exc

from tagifai import data, tracking
from tagifai.config import (
    BEST_PARAMS_FILE,
    EXPERIMENTS_DIR,
    OptimizeConfig,
    Params,
    PrunerConfig,
    SamplerConfig,
    SearchSpace,
)
from tagifai.errors import TagifaiError
from tagifai.faults import failpoint
from tagifai.files import write_json_atomic
from tagifai.train import train

__all__ = [
    "DEFAULT_STORAGE",
    "OptimizeResult",
    "SurplusTrial",
    "best_params_payload",
    "claim",
    "create_pruner",
    "create_sampler",
    "make_figures",
    "make_storage",
    "open_study",
    "run_study",
    "study_is_complete",
    "suggest",
    "summarize",
    "write_summary",
]

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = f"sqlite:///{EXPERIMENTS_DIR}/optuna.db"  # separate from MLflow's database
DONE_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class OptimizeResult:
    """What one ``tagifai optimize`` invocation did.

    Attributes:
        study: The study (all trials, this and earlier invocations).
        parent_run_id: The MLflow parent run.
        trials_run: Trials started by this invocation.
        best_params: The content written to ``best_params.json``.
        seconds: Wall time of this invocation.
    """

    study: optuna.Study
    parent_run_id: str | None
    trials_run: int
    best_params: dict[str, Any] | None
    seconds: float


def create_sampler(
    config: SamplerConfig, seed: int, search_space: dict[str, SearchSpace]
) -> optuna.samplers.BaseSampler:
    """Build the configured sampler, seeded.

    Raises:
        TagifaiError: If the kwargs do not fit the sampler.
    """
    samplers: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
        "TPE": optuna.samplers.TPESampler,
        "Random": optuna.samplers.RandomSampler,
        "CMA-ES": optuna.samplers.CmaEsSampler,
        "QMC": optuna.samplers.QMCSampler,
        "NSGAII": optuna.samplers.NSGAIISampler,
        "GP": optuna.samplers.GPSampler,
    }
    kwargs = {"seed": seed, **config.kwargs}
    try:
        if config.name == "Grid":
            grid = {name: space.grid() for name, space in search_space.items()}
            return optuna.samplers.GridSampler(grid, **kwargs)
        return samplers[config.name](**kwargs)
    except (TypeError, ValueError, ImportError) as exc:
        raise TagifaiError(f"sampler {config.name}: {exc}") from None


def create_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner:
    """Build the configured pruner.

    Raises:
        TagifaiError: If the kwargs do not fit the pruner.
    """
    pruners: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
        "Median": optuna.pruners.MedianPruner,
        "Percentile": optuna.pruners.PercentilePruner,
        "SuccessiveHalving": optuna.pruners.SuccessiveHalvingPruner,
        "Hyperband": optuna.pruners.HyperbandPruner,
        "Patient": optuna.pruners.PatientPruner,
        "Threshold": optuna.pruners.ThresholdPruner,
        "Nop": optuna.pruners.NopPruner,
    }
    kwargs = dict(config.kwargs)
    if config.name == "Patient":
        kwargs.setdefault("wrapped_pruner", None)
    try:
        return pruners[config.name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise TagifaiError(f"pruner {config.name}: {exc}") from None


def suggest(trial: optuna.Trial, search_space: dict[str, SearchSpace]) -> dict[str, Any]:
    """Ask the trial for one value per searched param."""
    values: dict[str, Any] = {}
    for name, space in search_space.items():
        if space.type == "int":
            values[name] = trial.suggest_int(
                name, space.low, space.high, step=space.step, log=space.log
            )
        elif space.type == "float":
            values[name] = trial.suggest_float(
                name, space.low, space.high, step=space.step, log=space.log
            )
        else:
            values[name] = trial.suggest_categorical(name, list(space.choices))
    return values


def make_storage(
    url: str,
    config: OptimizeConfig,
    on_stale_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """Optuna storage for a URL; database storages get heartbeats and retries.

    A trial whose process stops sending heartbeats for ``grace_period`` seconds
    (a killed worker) is marked FAIL by the next worker that looks, its MLflow run
    is closed FAILED (``on_stale_trial``) and a copy is queued to run again. With
    SQLite, writers wait up to a minute for the file lock instead of failing: that
    is what makes one SQLite file safe for a few local worker processes.
    """
    if not url.startswith(("sqlite", "postgresql", "mysql")):
        return optuna.storages.get_storage(url)  # e.g. an in-memory or journal storage
    with warnings.catch_warnings():
        # Optuna 4.9 renamed RetryFailedTrialCallback to this (still "experimental") name.
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=config.max_retry)

    def failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if on_stale_trial is not None:
            on_stale_trial(study, trial)
        retry(study, trial)

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=config.heartbeat_interval,
                    grace_period=config.grace_period,
                    heartbeat_stale_trial_callback=failed,
                )
        except sqlalchemy.exc.IntegrityError:
            # Two processes created a fresh database's schema at once; the loser
            # finds it made on the next try.
            if attempt == 4:
                raise
            time.sleep(0.2 + random.random())
    raise AssertionError("unreachable")


def storage_url(config: OptimizeConfig, storage: str | None = None) -> str:
    """The study's storage URL: the argument, the config's, or sqlite under experiments/."""
    url = storage or config.storage or DEFAULT_STORAGE
    if url == DEFAULT_STORAGE:
        EXPERIMENTS_DIR.mkdir(parents=True, exist_ok=True)
    return url


def open_study(
    config: OptimizeConfig, storage: str | optuna.storages.BaseStorage | None = None
) -> optuna.Study:
    """Create the study, or load it if it exists in the storage (resume / join).

    Args:
        config: Study settings.
        storage: Optuna storage (URL or object); default sqlite under ``experiments/``.

    Returns:
        The study with the configured sampler and pruner.
    """
    if storage is None or isinstance(storage, str):
        storage = make_storage(storage_url(config, storage), config)
    return optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        direction=config.direction,
        sampler=create_sampler(config.sampler, config.seed, config.search_space),
        pruner=create_pruner(config.pruner),
        load_if_exists=True,
    )


class _TrialReporter:
    """Per epoch: log metrics to the child run, report the study metric, maybe prune."""

    def __init__(self, trial: optuna.Trial, metric: str, track: bool) -> None:
        self.trial = trial
        self.metric = metric
        self.mlflow = tracking.MlflowReporter() if track else None

    def __enter__(self) -> _TrialReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.mlflow is not None:
            self.mlflow.flush()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        failpoint("trial")
        if self.mlflow is not None:
            self.mlflow.on_epoch_end(epoch, metrics)
        self.trial.report(metrics[self.metric], step=epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("epochs", epoch)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


def make_objective(
    config: OptimizeConfig,
    base: Params,
    dataset: data.Dataset,
    splits: data.Splits,
    track: bool = True,
) -> Callable[[optuna.Trial], float]:
    """The objective: train with the trial's params, return the validation metric.

    Args:
        config: Study settings (metric and search space).
        base: Params every trial starts from.
        dataset: Prepared data.
        splits: Train/val/test; only train and val are read.
        track: Log params, epochs, threshold and model to the trial's MLflow run.

    Returns:
        A function of one trial.
    """
    base_values = base.model_dump()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        params = Params.model_validate({**base_values, **suggest(trial, config.search_space)})
        if track:
            tracking.log_params(params)
        # Leaving the reporter writes its queued epochs: pruned, failed or interrupted
        # trials keep their curves too.
        with _TrialReporter(trial, config.metric, track) as reporter:
            result = train(params, dataset, splits, reporter=reporter)
        trial.set_user_attr("epochs", result.epochs_run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        if track:
            tracking.StudyTracker.log_trial(trial, result.predictor.threshold)
            tracking.log_trial_model(result.predictor, result.val_metrics, config.metric)
        else:
            trial.set_user_attr("threshold", tracking.threshold_value(result.predictor.threshold))
        return float(result.val_metrics[config.metric])

    return objective


def record_study_inputs(
    study: optuna.Study,
    config: OptimizeConfig,
    base: Params,
    dataset: data.Dataset,
    tags_location: str | None,
) -> None:
    """Keep what the summary needs in the study itself, so any worker (or
    ``tagifai summarize``) can write it; refuse to mix data sets in one study.

    Raises:
        TagifaiError: If the study was started on other data.
    """
    recorded = study.user_attrs.get("data_digest")
    if recorded is not None and recorded != dataset.digest:
        raise TagifaiError(
            f"study {config.study_name!r} was run on data with digest {recorded}; "
            f"{dataset.source} has digest {dataset.digest}: use another --study-name"
        )
    fixed: dict[str, Any] = {"metric": config.metric, "base_params": base.model_dump(mode="json")}
    for key, value in fixed.items():
        if recorded is not None and study.user_attrs.get(key) not in (None, value):
            raise TagifaiError(
                f"study {config.study_name!r} was run with another {key}; trials would not "
                "be comparable: use another --study-name"
            )
    if recorded is None:
        inputs = {
            "data_digest": dataset.digest,
            "data_source": dataset.source,
            "tags_source": tags_location,
            "metric": config.metric,
            "base_params": base.model_dump(mode="json"),
        }
        for key, value in inputs.items():
            study.set_user_attr(key, value)


def best_params_payload(study: optuna.Study) -> dict[str, Any]:
    """Everything needed to retrain the best trial, plus where it came from."""
    best = study.best_trial
    attrs = study.user_attrs
    params = Params.model_validate({**attrs["base_params"], **best.params})
    return {
        "study_name": study.study_name,
        "metric": attrs["metric"],
        "direction": study.direction.name.lower(),
        "value": best.value,
        "trial_number": best.number,
        "mlflow_run_id": best.system_attrs.get(tracking.TRIAL_RUN_ATTR),
        "parent_run_id": attrs.get(tracking.PARENT_RUN_ATTR),
        "data_source": attrs["data_source"],
        "tags_source": attrs.get("tags_source"),
        "data_digest": attrs["data_digest"],
        "threshold": best.user_attrs.get("threshold"),
        "tuned": best.params,
        "params": params.model_dump(mode="json"),
    }


def make_figures(study: optuna.Study, max_contour_params: int = 4) -> dict[str, Any]:
    """Optuna's interactive (plotly) plots; plots that need more trials are skipped.

    Args:
        study: A study with at least one completed trial.
        max_contour_params: Contour plots grow quadratically: limit them to the
            most important params.

    Returns:
        Name -> plotly figure.
    """
    import optuna.visualization as vis

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    important: list[str] | None = None
    figures: dict[str, Any] = {}
    if len(completed) >= 2 and len(study.best_trial.params) >= 2:
        try:
            importances = optuna.importance.get_param_importances(study)
            important = list(importances)[:max_contour_params]
        except (RuntimeError, ValueError) as exc:
            logger.info("no param importances: %s", exc)
    plots: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
        "optimization_history": (vis.plot_optimization_history, {}),
        "param_importances": (vis.plot_param_importances, {}),
        "parallel_coordinate": (vis.plot_parallel_coordinate, {}),
        "contour": (vis.plot_contour, {"params": important}),
        "slice": (vis.plot_slice, {}),
    }
    for name, (plot, kwargs) in plots.items():
        if name in ("param_importances", "contour") and important is None:
            continue
        try:
            figures[name] = plot(study, **kwargs)
        except (ValueError, RuntimeError, IndexError) as exc:
            logger.info("skipped plot %s: %s", name, exc)
    return figures


CLAIMED_STATES = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.WAITING,
)
SUMMARY_ATTR = "summary_trials"  # done trials the last written summary covered
POLL_SECONDS = 1.0  # how often an idle worker looks for trials to retry or the study's end
MAX_FAILURES_IN_A_ROW = 3  # a worker gives up when its trials keep failing


def worker_id() -> str:
    """``host:pid`` of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


class SurplusTrial(Exception):
    """A worker started a trial after others had already filled the study."""


def remaining_trials(study: optuna.Study, n_trials: int) -> int:
    """Trials still to run for the study to hold ``n_trials`` completed or pruned ones."""
    done = len(study.get_trials(deepcopy=False, states=DONE_STATES))
    return max(0, n_trials - done)


def _guard(
    objective: Callable[[optuna.Trial], float], n_trials: int
) -> Callable[[optuna.Trial], float]:
    """Refuse a trial numbered after the study's ``n_trials`` live slots are taken.

    Two workers can both see one free slot and both start a trial; the later one
    (by trial number, which the storage hands out atomically) stops here, before
    any training or MLflow run, and is recorded as FAIL with ``surplus=True``.
    """

    def guarded(trial: optuna.Trial) -> float:
        earlier = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=CLAIMED_STATES)
            if t.number < trial.number or t.state == optuna.trial.TrialState.WAITING
        ]
        if len(earlier) >= n_trials:
            trial.set_user_attr("worker", worker_id())
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"trial {trial.number}: the study already has {n_trials} trials")
        return objective(trial)

    return guarded


def _work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    timeout: float | None,
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]],
) -> int:
    """Run trials until the study holds ``n_trials`` done ones; return how many ran here.

    Failed trials do not count (a retry is queued for trials of dead workers); a
    worker with nothing to start waits while other workers' trials run, since
    one of them may die and need a retry. Queued retries run first.

    Raises:
        TagifaiError: After ``MAX_FAILURES_IN_A_ROW`` trials of this worker failed
            in a row: the objective cannot succeed, and retrying would loop forever.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = failures = 0
    guarded = _guard(objective, n_trials)
    while deadline is None or time.monotonic() < deadline:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9: not news to users
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # no-op without heartbeats
        claimed = study.get_trials(deepcopy=False, states=CLAIMED_STATES)
        waiting = any(t.state == optuna.trial.TrialState.WAITING for t in claimed)
        if len(claimed) >= n_trials and not waiting:
            if all(t.state.is_finished() for t in claimed):
                break
            time.sleep(POLL_SECONDS)
            continue
        study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=callbacks)
        ran += 1
        mine = [
            t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker_id()
        ]
        last = mine[-1] if mine else None
        if last is not None and last.state == optuna.trial.TrialState.FAIL:
            if last.user_attrs.get("surplus"):
                continue
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                reason = last.system_attrs.get("fail_reason", "see the log")
                raise TagifaiError(
                    f"study {study.study_name!r}: {failures} trials failed in a row, giving up; "
                    f"last: {str(reason).splitlines()[-1][:200]}"
                )
        else:
            failures = 0
    return ran


def study_is_complete(study: optuna.Study, n_trials: int) -> bool:
    """Whether the study holds ``n_trials`` done trials and no trial is still running."""
    busy = study.get_trials(
        deepcopy=False,
        states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING),
    )
    return remaining_trials(study, n_trials) == 0 and not busy


def claim(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Atomically claim ``name`` in the storage: exactly one caller gets ``True``.

    Creating a study is the one write Optuna's storages make unique by name, so
    it serves as a lock between processes on any number of machines.
    """
    try:
        optuna.create_study(study_name=name, storage=storage)
    except optuna.exceptions.DuplicatedStudyError:
        return False
    return True


def summarize(
    study: optuna.Study,
    tracker: tracking.StudyTracker | None,
    best_params_file: Path | None = BEST_PARAMS_FILE,
) -> dict[str, Any] | None:
    """Write the study's result: ``best_params.json`` (file and artifact), plots, trials.

    Safe to call more than once (each call writes the same content).

    Returns:
        The ``best_params.json`` content, or ``None`` if no trial completed.
    """
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return None
    payload = best_params_payload(study)
    failpoint("summary")
    if tracker is not None:
        tracker.log_summary(study, payload, make_figures(study), trials_table(study))
    if best_params_file is not None:
        write_json_atomic(best_params_file, payload)
    return payload


def write_summary(study: optuna.Study) -> dict[str, Any] | None:
    """``tagifai summarize``: adopt the study's parent run and (re)write its summary.

    Raises:
        TagifaiError: If the study was not made by ``tagifai optimize`` (checked
            before any MLflow run is touched).
    """
    missing = [
        key for key in ("base_params", "metric", "data_digest") if key not in study.user_attrs
    ]
    if missing:
        raise TagifaiError(
            f"study {study.study_name!r} was not made by tagifai optimize "
            f"(no {', '.join(missing)} in its user attributes)"
        )
    tracker = tracking.StudyTracker(study.user_attrs["metric"])
    tracker.start(study, experiment_name=study.study_name)
    try:
        payload = summarize(study, tracker)
    except BaseException:
        tracker.abort(interrupted=False)
        raise
    n_trials = len(study.get_trials(deepcopy=False, states=DONE_STATES))
    tracker.end("FINISHED" if study_is_complete(study, n_trials) else "RUNNING")
    return payload


def run_study(
    config: OptimizeConfig,
    base: Params,
    dataset: data.Dataset,
    splits: data.Splits,
    tags_location: str | None = None,
    storage: str | None = None,
    best_params_file: Path | None = BEST_PARAMS_FILE,
    track: bool = True,
    on_trial: Callable[[int, int], None] | None = None,
) -> OptimizeResult:
    """Run (or resume, or join) a study until it holds ``config.n_trials`` done trials.

    Any number of processes, on one machine or many, can run this against the
    same study storage: they share the MLflow parent run and each trial is run by
    exactly one of them. The one that sees the study complete writes the summary.

    Args:
        config: Study settings, CLI overrides applied.
        base: Params every trial starts from.
        dataset: Prepared data (read and validated before anything is logged).
        splits: Its split; trials read train and validation only.
        tags_location: The taxonomy file, recorded in ``best_params.json``.
        storage: Optuna storage URL (overrides ``config.storage``).
        best_params_file: Where to write ``best_params.json`` (``None``: don't).
        track: Log to MLflow (nothing is logged otherwise, for benchmarks).
        on_trial: Called after each trial with (done trials, ``n_trials``).

    Returns:
        What this invocation did.
    """
    started = time.perf_counter()
    tracker = tracking.StudyTracker(config.metric) if track else None
    store = make_storage(
        storage_url(config, storage),
        config,
        on_stale_trial=tracker.close_failed if tracker else None,
    )
    study = open_study(config, store)
    record_study_inputs(study, config, base, dataset, tags_location)
    parent_run_id = None
    if tracker is not None:
        parent_run_id = tracker.start(
            study,
            experiment_name=config.study_name,
            claim=lambda name: claim(store, name),
            storage=store,
        )
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = []
    if tracker is not None:
        callbacks.append(tracker.callback)
    if on_trial is not None:
        callbacks.append(
            lambda study, _: on_trial(len(study.get_trials(states=DONE_STATES)), config.n_trials)
        )
    payload = None
    complete = False
    try:
        if tracker is not None:
            tracking.log_study_config(config, base, dataset, splits)
        objective = make_objective(config, base, dataset, splits, track)
        ran = _work(
            study,
            tracker.track(objective) if tracker else objective,
            config.n_trials,
            config.timeout,
            callbacks,
        )
        complete = study_is_complete(study, config.n_trials)
        done = len(study.get_trials(deepcopy=False, states=DONE_STATES))
        written = study.user_attrs.get(SUMMARY_ATTR) == done
        # One summary per study state, however many workers see it complete; a re-run
        # also writes it when the process that claimed it died before finishing.
        if (complete or ran) and (
            claim(store, f"{study.study_name}.summary-{done}") or (complete and not written)
        ):
            payload = summarize(study, tracker, best_params_file)
            study.set_user_attr(SUMMARY_ATTR, done)
        elif complete and any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            payload = best_params_payload(study)
    except BaseException as exc:
        if tracker is not None:
            tracker.abort(interrupted=isinstance(exc, KeyboardInterrupt))
        raise
    if tracker is not None:
        others = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        # Incomplete (a --timeout): leave the parent RUNNING for workers still at it,
        # else KILLED, to be reopened by the next run of the study.
        tracker.end("FINISHED" if complete else "RUNNING" if others else "KILLED")
    return OptimizeResult(
        study=study,
        parent_run_id=parent_run_id,
        trials_run=ran,
        best_params=payload,
        seconds=time.perf_counter() - started,
    )


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """The study's trials, one row each (number, state, value, params)."""
    return study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
