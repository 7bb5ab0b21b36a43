"""The Optuna study: its loop, storage, resume, and the summary of its best trial.

:func:`run_study` is the whole loop, read top to bottom: ask for a trial, suggest its
params, train with the epoch callbacks (MLflow, pruning, checkpoint, progress), log,
tell. Each trial trains on the train split and returns a **validation** metric;
pruning reports that same metric every epoch; each trial's decision threshold is
chosen on validation. The test split is never read here. The study's MLflow runs
belong to :mod:`tagifai.study_runs`, coordination between workers to
:mod:`tagifai.coordination`, checkpoints to :mod:`tagifai.checkpoints`; nothing here
knows which workload it runs.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import sqlalchemy.exc
from pydantic import ValidationError

from tagifai import coordination, plots
from tagifai.best_params import BestParams, write_best_params
from tagifai.checkpoints import TrialCheckpoint
from tagifai.config import EXPERIMENTS_DIR
from tagifai.errors import TagifaiError
from tagifai.faults import failpoint
from tagifai.predict import Predictor
from tagifai.progress import EpochProgress
from tagifai.search import (
    OptimizeConfig,
    create_pruner,
    create_sampler,
    initial_trials,
    params_for,
    suggest_params,
)
from tagifai.study_runs import (
    PARENT_RUN_ATTR,
    TRIAL_RUN_ATTR,
    NullStudyRuns,
    NullTrialRun,
    Resumed,
    StudyRuns,
    TrialRun,
)
from tagifai.workloads import get_workload
from tagifai.workloads.base import DataSet, DecisionRule, RunParams, Splits, TrainResult, Workload

__all__ = [
    "DEFAULT_STORAGE",
    "OptimizeResult",
    "TrialProgress",
    "best_params_of",
    "make_storage",
    "open_study",
    "run_study",
    "storage_url",
    "summarize",
    "write_summary",
]

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = f"sqlite:///{EXPERIMENTS_DIR}/optuna.db"  # separate from MLflow's database
SUMMARY_ATTR = "summary_trials"  # done trials the last written summary covered
Runs = StudyRuns | NullStudyRuns
EpochCallback = Callable[[EpochProgress], None]


@dataclass(frozen=True)
class TrialProgress:
    """Where a study stands after one of its trials finished.

    Attributes:
        done: Completed and pruned trials of the study (all workers).
        total: The study's ``n_trials``.
        trial: The trial that just finished.
        best_value: The best objective value so far (``None``: none completed).
        best_number: The trial that holds it.
    """

    done: int
    total: int
    trial: optuna.trial.FrozenTrial
    best_value: float | None
    best_number: int | None

    @classmethod
    def of(cls, study: optuna.Study, trial: optuna.trial.FrozenTrial, total: int) -> TrialProgress:
        """The progress of ``study`` as ``trial`` ends."""
        done = len(study.get_trials(deepcopy=False, states=coordination.DONE_STATES))
        try:
            best = study.best_trial
        except ValueError:  # no completed trial yet
            return cls(done, total, trial, None, None)
        return cls(done, total, trial, best.value, best.number)


@dataclass
class OptimizeResult:
    """What one ``tagifai optimize`` invocation did.

    Attributes:
        study: The study (all trials, this and earlier invocations).
        parent_run_id: The MLflow parent run.
        trials_run: Trials started by this invocation.
        best: The best-params record written, if a trial completed.
        seconds: Wall time of this invocation.
    """

    study: optuna.Study
    parent_run_id: str | None
    trials_run: int
    best: BestParams | None
    seconds: float


# Connections per worker to a server database (PostgreSQL, MySQL): the study's session and
# the heartbeat thread need two; one more absorbs a burst. 32 workers hold at most 96; with
# the MLflow server of `make servers-start` (at most 40) that fits the 200 connections
# scripts/servers.sh gives PostgreSQL (benchmarks/bench_scale.py measures the peak).
POOL_SIZE = 2
POOL_MAX_OVERFLOW = 1
POOL_RECYCLE_SECONDS = 1800  # before servers and proxies drop idle connections (~1 h)


def _engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy settings for the study storage: SQLite writers wait for the file lock;
    server databases get a small pool whose connections are checked before use (Optuna
    turns ``pool_pre_ping`` on only for MySQL), so a database restart or a dropped idle
    connection costs a reconnect, not a failed trial."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {
        "pool_pre_ping": True,
        "pool_size": POOL_SIZE,
        "max_overflow": POOL_MAX_OVERFLOW,
        "pool_recycle": POOL_RECYCLE_SECONDS,
    }


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

    engine_kwargs = _engine_kwargs(url)
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
    config: OptimizeConfig,
    storage: str | optuna.storages.BaseStorage | None = None,
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
        sampler=create_sampler(config),
        pruner=create_pruner(config.pruner),
        load_if_exists=True,
    )


def _study_id(storage: optuna.storages.BaseStorage, config: OptimizeConfig) -> int:
    """The id of the study named in ``config``, made first if there is none."""
    direction = optuna.study.StudyDirection[config.direction.upper()]
    try:
        return storage.create_new_study([direction], config.study_name)
    except optuna.exceptions.DuplicatedStudyError:
        return storage.get_study_id_from_name(config.study_name)


class _EpochCallbacks:
    """What a trial does after each epoch, in order: log it (MLflow), show it (progress),
    report it to the pruner (which may stop the trial), keep the training state (the
    checkpoint a retry goes on from). Training sees one reporter."""

    def __init__(
        self,
        trial: optuna.Trial,
        metric: str,
        run: TrialRun | NullTrialRun,
        checkpoint: TrialCheckpoint,
        restored: dict[str, Any] | None,
        on_epoch: EpochCallback | None,
        where: tuple[int, int],
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.run = run
        self.checkpoint = checkpoint
        self.restored = restored
        self.on_epoch = on_epoch
        self.where = where  # (done trials when this one started, the study's n_trials)
        self.epochs = 0  # at most, once the trial's params are known
        self.epoch = 0 if restored is None else int(restored["epoch"])  # the last finished

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log, show and report the epoch; raise ``TrialPruned`` if the pruner says so."""
        failpoint("trial")
        self.epoch = epoch
        shown = ", ".join(f"{key}={value:.4g}" for key, value in metrics.items())
        logger.info("trial %d epoch %d: %s", self.trial.number, epoch, shown)  # --verbose
        self.run.epochs.on_epoch_end(epoch, metrics)
        if self.on_epoch is not None:
            done, total = self.where
            self.on_epoch(
                EpochProgress(self.trial.number, epoch, self.epochs, metrics, done, total)
            )
        self.trial.report(metrics[self.metric], step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    def restore(self) -> dict[str, Any] | None:
        """The failed or interrupted attempt's last state (a retry), else ``None``."""
        return self.restored

    def save(self, state: dict[str, Any]) -> None:
        """Checkpoint the epoch just finished."""
        self.checkpoint.save(state)
        failpoint(f"checkpoint:{state['epoch']}")  # a worker dying right after it


def _resume_point(
    study: optuna.Study, trial: optuna.Trial, checkpoint: TrialCheckpoint
) -> tuple[dict[str, Any] | None, Resumed | None]:
    """A retried trial's state to go on from, and where it came from (both ``None`` for a
    first attempt or a retry without a checkpoint)."""
    state = checkpoint.restore()
    if state is None or checkpoint.previous is None:
        return None, None
    previous, epoch = checkpoint.previous, checkpoint.resumed_epoch
    trial.set_user_attr("resumed_from", {"trial": previous, "epoch": epoch})
    earlier = next(t for t in study.get_trials(deepcopy=False) if t.number == previous)
    return state, Resumed(previous, earlier.system_attrs.get(TRIAL_RUN_ATTR), epoch)


def _record_result(trial: optuna.Trial, result: TrainResult, resumed: Resumed | None) -> None:
    """What the trial's training did, kept on the trial (the summary reads ``decision``)."""
    trial.set_user_attr("epochs", result.epochs_run)
    trial.set_user_attr("epochs_trained", result.epochs_run - (resumed.epoch if resumed else 0))
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("decision", result.decision.model_dump(mode="json"))


@dataclass(frozen=True)
class _Job:
    """What every trial of one invocation shares."""

    config: OptimizeConfig
    base: RunParams
    workload: Workload
    dataset: DataSet
    splits: Splits
    runs: Runs
    checkpoints: Path
    on_epoch: EpochCallback | None


def run_trial(
    job: _Job, study: optuna.Study, trial: optuna.Trial
) -> tuple[optuna.trial.FrozenTrial, Exception | None]:
    """One trial, top to bottom: suggest its params, train with the epoch callbacks,
    log its metrics and model, tell the study; its MLflow run ends once, with its state.

    An interrupt (Ctrl-C, SIGTERM) fails the trial and queues a copy that goes on from
    its checkpoint when the same command runs again, then propagates.

    Returns:
        The told trial, and the error that failed it (``None`` otherwise).
    """
    config = job.config
    error: Exception | None = None
    with coordination.heartbeat(trial):  # first: a trial never runs without heartbeats
        try:
            trial.set_user_attr("worker", coordination.worker_id())
            trial.set_user_attr("sampler_seed", config.seed)
            checkpoint = TrialCheckpoint.of(trial, job.checkpoints)
            state, resumed = _resume_point(study, trial, checkpoint)
            done = len(study.get_trials(deepcopy=False, states=coordination.DONE_STATES))
            with job.runs.trial(trial, resumed) as run:
                where = (done, config.n_trials)
                callbacks = _EpochCallbacks(
                    trial, config.metric, run, checkpoint, state, job.on_epoch, where
                )
                try:
                    params = suggest_params(trial, config, job.base)
                    callbacks.epochs = params.model.num_epochs
                    run.log_params(params.run_params())
                    result = job.workload.train(params, job.dataset, job.splits, callbacks)
                    _record_result(trial, result, resumed)
                    classes = job.dataset.classes
                    predictor = Predictor(
                        params, classes, result.encoder, result.model, result.decision
                    )
                    run.log_model(predictor, result.val_metrics)
                    frozen = study.tell(trial, float(result.val_metrics[config.metric]))
                except optuna.TrialPruned:
                    trial.set_user_attr("epochs", callbacks.epoch)
                    frozen = study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                except KeyboardInterrupt:
                    run.interrupted(callbacks.epoch, coordination.requeue(study, trial))
                    raise
                except Exception as exc:
                    error = exc
                    trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc)[:500]}")
                    frozen = study.tell(trial, state=optuna.trial.TrialState.FAIL)
                run.finish(study, frozen)
        except KeyboardInterrupt:
            coordination.requeue(study, trial)  # interrupted before its run opened: no-op after
            raise
    checkpoint.remove()  # the trial ended here; a killed process leaves its file to a retry
    return frozen, error


def record_study_inputs(
    study: optuna.Study, config: OptimizeConfig, base: RunParams, dataset: DataSet
) -> None:
    """Keep what the summary needs in the study itself, so any worker (or
    ``tagifai summarize``) can write it; refuse to mix data sets in one study.

    Raises:
        TagifaiError: If the study was started on other data or settings.
    """
    recorded = study.user_attrs.get("data_digest")
    if recorded is not None and recorded != dataset.digest:
        raise TagifaiError(
            f"study {config.study_name!r} was run on data with digest {recorded}; "
            f"{dataset.source} has digest {dataset.digest}: use another --study-name"
        )
    fixed: dict[str, Any] = {
        "task": config.task,
        "metric": config.metric,
        "base_params": base.model_dump(mode="json"),
    }
    for key, value in fixed.items():
        if recorded is not None and study.user_attrs.get(key) not in (None, value):
            raise TagifaiError(
                f"study {config.study_name!r} was run with another {key}; trials would not "
                "be comparable: use another --study-name"
            )
    if recorded is None:
        inputs = {
            **fixed,
            "data_digest": dataset.digest,
            "data_source": dataset.source,
            "extra_source": dataset.extra_source,
        }
        for key, value in inputs.items():
            study.set_user_attr(key, value)


def best_params_of(study: optuna.Study) -> BestParams:
    """The best trial as a typed record: what retraining and inference need."""
    best = study.best_trial
    attrs = study.user_attrs
    workload = get_workload(attrs.get("task", "text"))
    base = workload.params_type.model_validate(attrs["base_params"])
    params = params_for(base, best.params)
    return BestParams(
        task=workload.name,
        study_name=study.study_name,
        metric=attrs["metric"],
        direction="maximize" if study.direction.name == "MAXIMIZE" else "minimize",
        value=float(best.value or 0.0),
        trial_number=best.number,
        mlflow_run_id=best.system_attrs.get(TRIAL_RUN_ATTR),
        parent_run_id=attrs.get(PARENT_RUN_ATTR),
        data_source=attrs.get("data_source"),
        extra_source=attrs.get("extra_source"),
        data_digest=attrs["data_digest"],
        tuned=dict(best.params),
        params=params.model_dump(mode="json"),
        decision=DecisionRule.model_validate(best.user_attrs["decision"]),
    )


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """The study's trials, one row each (number, state, value, params)."""
    return study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))


def summarize(study: optuna.Study, runs: Runs, best_params_file: Path | None) -> BestParams | None:
    """Write the study's result: the best-params record (file and artifact), plots, trials.

    Safe to call more than once (each call writes the same content).

    Returns:
        The record, or ``None`` if no trial completed.
    """
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return None
    best = best_params_of(study)
    failpoint("summary")
    # Plots and the table are made only by runs that log them.
    runs.log_summary(
        study,
        best.model_dump(mode="json"),
        lambda folder: plots.write_plots(study, folder),
        lambda: trials_table(study),
    )
    if best_params_file is not None:
        write_best_params(best_params_file, best)
    return best


def write_summary(study: optuna.Study, best_params_file: Path | None) -> BestParams | None:
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
    if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        try:  # before any MLflow run is touched
            best_params_of(study)
        except (ValidationError, KeyError):
            raise TagifaiError(
                f"study {study.study_name!r} was made by tagifai 0.1 (flat params, no decision "
                "rule per trial); this tagifai cannot summarise it: run a new study"
            ) from None
    runs = StudyRuns(study.user_attrs["metric"])
    with runs.parent(study, experiment_name=study.study_name) as parent:
        best = summarize(study, runs, best_params_file)
        n_trials = len(study.get_trials(deepcopy=False, states=coordination.DONE_STATES))
        complete = coordination.study_is_complete(study, n_trials)
        parent.status = "FINISHED" if complete else "RUNNING"
    return best


def _summarize_once(
    study: optuna.Study,
    runs: Runs,
    claim: Callable[[str], bool],
    complete: bool,
    ran: int,
    best_params_file: Path | None,
) -> BestParams | None:
    """Write the summary once per study state, however many workers see it; a re-run also
    writes it when the process that claimed it died before finishing."""
    done = len(study.get_trials(deepcopy=False, states=coordination.DONE_STATES))
    written = study.user_attrs.get(SUMMARY_ATTR) == done
    if (complete or ran) and (
        claim(f"{study.study_name}.summary-{done}") or (complete and not written)
    ):
        best = summarize(study, runs, best_params_file)
        study.set_user_attr(SUMMARY_ATTR, done)
        return best
    if complete and any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return best_params_of(study)
    return None


def run_study(
    config: OptimizeConfig,
    base: RunParams,
    dataset: DataSet,
    splits: Splits,
    storage: str | None = None,
    best_params_file: Path | None = None,
    track: bool = True,
    on_trial: Callable[[TrialProgress], None] | None = None,
    on_epoch: EpochCallback | None = None,
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
        storage: Optuna storage URL (overrides ``config.storage``).
        best_params_file: Where to write the best params (``None``: don't).
        track: Log to MLflow (nothing is logged otherwise, for benchmarks).
        on_trial: Called after each trial this process ran, with the study's progress.
        on_epoch: Called after each epoch of a trial this process runs.

    Returns:
        What this invocation did.
    """
    started = time.perf_counter()
    runs: Runs = StudyRuns(config.metric) if track else NullStudyRuns()
    store = make_storage(storage_url(config, storage), config, on_stale_trial=runs.close_failed)
    # Claims are keyed by the study's id: a study made again under the same name starts
    # with none. Each invocation (worker or resume) samples with a seed of its own.
    study_id = _study_id(store, config)
    config = config.model_copy(
        update={"seed": coordination.worker_seed(store, study_id, config.seed)}
    )
    study = open_study(config, store)
    record_study_inputs(study, config, base, dataset)
    if config.initial_trials and coordination.claim(store, f"{study_id}:initial-trials"):
        for params in initial_trials(config, base):
            study.enqueue_trial(params, skip_if_exists=True)
    checkpoints = TrialCheckpoint.folder_of(study.study_name, study_id)
    job = _Job(
        config, base, get_workload(config.task), dataset, splits, runs, checkpoints, on_epoch
    )
    failures = coordination.Failures(study.study_name)
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    ran = 0

    def claim(name: str) -> bool:
        return coordination.claim(store, f"{study_id}:{name}")

    with runs.parent(study, config.study_name, claim=claim, storage=store) as parent:
        runs.log_study(config, base, job.workload, dataset, splits)
        while (trial := coordination.next_trial(study, config.n_trials, deadline)) is not None:
            frozen, error = run_trial(job, study, trial)
            ran += 1
            failures.count(frozen, error)  # raises when the worker should stop
            if on_trial is not None:
                on_trial(TrialProgress.of(study, frozen, config.n_trials))
        complete = coordination.study_is_complete(study, config.n_trials)
        best = _summarize_once(study, runs, claim, complete, ran, best_params_file)
        # Incomplete (a --timeout): leave the parent RUNNING for workers still at it,
        # else KILLED, to be reopened by the next run of the study.
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        parent.status = "FINISHED" if complete else "RUNNING" if running else "KILLED"
    return OptimizeResult(
        study=study,
        parent_run_id=parent.run_id,
        trials_run=ran,
        best=best,
        seconds=time.perf_counter() - started,
    )
