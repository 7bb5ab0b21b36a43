"""Runs: the shape of every MLflow run tagifai makes, with one owner per study.

- :func:`train_run` and :func:`log_training` record one training job;
- :class:`StudyTracker` owns an optimize study's MLflow lifecycle: one parent run,
  and the ``optuna_integration.MLflowCallback`` that nests one child run per trial;
  :class:`NullTracker` is the same interface doing nothing (studies run untracked in
  benchmarks), so the study code has no ``if track`` branches;
- :class:`MlflowReporter` sends each epoch's metrics to the active run in batches.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tagifai.errors import TagifaiError
from tagifai.faults import failpoint
from tagifai.files import write_json_atomic
from tagifai.logged_models import log_predictor
from tagifai.predict import Predictor
from tagifai.tracking import ensure_experiment, git_commit, note_reachable, store_uri
from tagifai.training import NullReporter, Reporter
from tagifai.workloads.base import DataSet, RunParams, Splits, Workload

__all__ = [
    "PARENT_RUN_ATTR",
    "STORE_ATTR",
    "TRIAL_RUN_ATTR",
    "MlflowReporter",
    "NullTracker",
    "StudyTracker",
    "close_stale_runs",
    "log_dataset",
    "log_run_params",
    "log_training",
    "train_run",
]

logger = logging.getLogger(__name__)

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attribute holding the parent run id
STORE_ATTR = "mlflow_tracking_uri"  # and the tracking store that holds it
TRIAL_RUN_ATTR = "mlflow_run_id"  # trial system attribute the MLflowCallback sets
# Which process holds a run open: a run of a process that is gone is closed FAILED by
# the next command on that host (a killed `train` would leave it RUNNING for good).
HOST_TAG = "tagifai.host"
PID_TAG = "tagifai.pid"
# "<boot id>:<PID namespace>:<start time>" of the process (Linux; empty elsewhere): a PID
# alone can be reused after a reboot, and a container on the host's network shares its
# host name but not its PIDs.
PROCESS_TAG = "tagifai.process"
STALE_SEARCH_LIMIT = 1000  # RUNNING runs looked at per command


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot), ``""`` without /proc, or
    ``None`` if there is no such process."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name may hold spaces
    if not Path("/proc/self/stat").exists():  # no /proc: only the PID tells
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # another user's process
            return ""
        return ""
    return None


def _machine() -> str:
    """This boot of this kernel, and this PID namespace (``":"`` without /proc)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{_read('/proc/sys/kernel/random/boot_id')}:{namespace}"


def _owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PROCESS_TAG: f"{_machine()}:{_start_time(pid) or ''}",
    }


def _is_gone(tags: dict[str, str]) -> bool:
    """Whether the process a run's owner tags name has certainly ended."""
    pid = tags.get(PID_TAG, "")
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    boot, _, rest = tags.get(PROCESS_TAG, "").partition(":")
    namespace, _, started = rest.rpartition(":")
    here_boot, _, here_namespace = _machine().partition(":")
    if boot and here_boot and boot != here_boot:
        return True  # the machine rebooted since: every process of that boot is gone
    if namespace != here_namespace:
        return False  # another PID namespace (a container): its processes are not visible
    now = _start_time(int(pid))
    return now is None or bool(started and now and now != started)  # gone, or PID reused


def close_stale_runs(experiment_id: str) -> list[str]:
    """Close FAILED the RUNNING runs that a process on this host left open when it died.

    A SIGKILL (or the OOM killer, or a power cut) gives a process no chance to end
    its run. Runs tagged with this host's name whose process has ended (by its PID
    and start time, in this PID namespace; or any process of an earlier boot) are
    closed here, with a ``tagifai.closed_by`` tag saying so. Runs of other hosts and
    other containers are left alone: their processes cannot be seen from here.
    Best effort: a store that cannot be written now (a full disk) leaves them for the
    next command.

    Returns:
        The ids of the runs closed.
    """
    host = socket.gethostname()
    client = MlflowClient()
    closed = []
    try:
        running = client.search_runs(
            [experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
            max_results=STALE_SEARCH_LIMIT,
        )
        for run in running:
            if not _is_gone(run.data.tags):
                continue
            client.set_tag(
                run.info.run_id,
                "tagifai.closed_by",
                f"process {run.data.tags[PID_TAG]} on {host} ended without closing this run; "
                f"closed FAILED by process {os.getpid()}",
            )
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
            closed.append(run.info.run_id)
    except MlflowException as exc:
        logger.debug("could not close stale runs: %s", exc)
    if closed:
        logger.warning(
            "closed %d run(s) FAILED that killed processes left RUNNING: %s",
            len(closed),
            ", ".join(closed),
        )
    return closed


class MlflowReporter:
    """Logs each epoch's metrics to the active run as ``epoch_<name>``, with the epoch as step.

    The plain names (``val_f1``, ``val_loss``) are kept for the kept weights'
    final values, which is also what an optimize trial's objective reports.

    Epochs are sent in batches, at most every :attr:`flush_seconds`, so the UI's
    curves lag by that much; one write per epoch cost ~9 ms on sqlite, a few percent
    of a study of fast trials. MLflow's asynchronous logging (``synchronous=False``)
    was the other way out, but its background thread slowed training itself (30 ngram
    epochs 7.6 s -> 10.1 s). Use it as a context manager: leaving it flushes the queue,
    however training ended.

    Args:
        also: Another reporter to forward every epoch to (a progress bar, a pruner).
        flush_seconds: Longest time an epoch's metrics wait before they are written.
    """

    def __init__(self, also: Any = None, flush_seconds: float = 5.0) -> None:
        self.also = also
        self.flush_seconds = flush_seconds
        self.run_id = _active_run_id()
        self._pending: list[Metric] = []
        self._flushed_at = time.monotonic()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Queue ``metrics`` at ``step=epoch`` (written if the last write is old), then
        forward them."""
        failpoint("epoch")  # a process killed mid-training
        timestamp = int(time.time() * 1000)
        self._pending.extend(
            Metric(f"epoch_{key}", float(value), timestamp, epoch) for key, value in metrics.items()
        )
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()
        if self.also is not None:
            self.also.on_epoch_end(epoch, metrics)

    def __enter__(self) -> MlflowReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def flush(self) -> None:
        """Write the queued metrics to the run."""
        if self._pending:
            MlflowClient().log_batch(self.run_id, metrics=self._pending)
            self._pending = []
        self._flushed_at = time.monotonic()


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("MlflowReporter needs an active MLflow run")
    return run.info.run_id


@contextlib.contextmanager
def train_run(
    experiment_name: str, run_name: str | None = None, tags: dict[str, str] | None = None
) -> Iterator[str]:
    """Start one MLflow run for a training job and yield its id.

    An exception inside ends the run FAILED (KILLED on Ctrl-C), never RUNNING.

    Args:
        experiment_name: Experiment to log into (created if missing).
        run_name: Display name.
        tags: Extra tags.

    Yields:
        The run id.
    """
    experiment_id = ensure_experiment(experiment_name)
    close_stale_runs(experiment_id)
    run = mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags={**(tags or {}), **_owner_tags()}
    )
    status = RunStatus.FINISHED
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        status = RunStatus.KILLED
        raise
    except BaseException:
        status = RunStatus.FAILED
        raise
    finally:
        try:
            mlflow.end_run(RunStatus.to_string(status))
        except Exception as exc:
            if status == RunStatus.FINISHED:
                raise
            # The error that ended the run is what the user sees, not a failed close.
            logger.debug("could not close run %s: %s", run.info.run_id, exc)


def log_run_params(
    params: RunParams, with_data: bool = True, sampled: dict[str, Any] | None = None
) -> None:
    """Log what a model used on the active run: its architecture's knobs and the
    run-wide ones (and the data preparation, ``data.*``, unless a parent run has it).

    ``sampled``: a trial's values as Optuna sampled them, logged as they are: Optuna's
    MLflowCallback logs them again when the trial ends, and ``0`` there against the
    validated ``0.0`` here would be refused as a changed param.
    """
    values = {**params.run_params(), **(params.data_params() if with_data else {})}
    values.update(sampled or {})
    flat = {
        key: json.dumps(value) if isinstance(value, list | tuple | dict) else value
        for key, value in values.items()
    }
    mlflow.log_params(flat)


def log_dataset(workload: Workload, dataset: DataSet, splits: Splits) -> None:
    """Record the input data (with its digest) and the split sizes on the active run."""
    mlflow.log_input(workload.mlflow_dataset(dataset), context="training")
    commit = git_commit()
    mlflow.set_tags(
        {
            "data_digest": dataset.digest,
            "test_split": splits.test_digest,
            "git_commit": commit,
            "mlflow.source.git.commit": commit,
            # A tag, not a param: `mlflow run` logs its own `task` param ("" when not given).
            "tagifai.task": workload.name,
        }
    )
    mlflow.log_params(
        {
            "data_source": dataset.source,
            "extra_source": dataset.extra_source or "",
            "num_classes": len(dataset.classes),
            "train_rows": len(splits.train),
            "val_rows": len(splits.val),
            "test_rows": len(splits.test),
            **{f"prep_{key}": value for key, value in dataset.counts.items()},
        }
    )


def log_training(
    predictor: Predictor, test_metrics: dict[str, Any], extra_metrics: dict[str, float]
) -> None:
    """Log a finished training job's results and report files to the active run.

    Artifacts: ``predictor.json`` (params, classes, decision rule), ``performance.json``
    (test metrics) and the workload's report files (e.g. a confusion matrix).

    Args:
        predictor: The trained model.
        test_metrics: The workload's metrics on the test split.
        extra_metrics: Validation metrics, best epoch and the like.
    """
    overall = test_metrics["overall"]
    mlflow.log_metrics(
        {
            **{f"test_{key}": float(value) for key, value in overall.items()},
            **{key: float(value) for key, value in extra_metrics.items()},
            "threshold": predictor.decision.summary,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_json_atomic(
            folder / "predictor.json",
            {
                "task": predictor.params.task,
                "params": predictor.params.model_dump(mode="json"),
                "classes": predictor.classes,
                "decision": predictor.decision.model_dump(mode="json"),
            },
        )
        write_json_atomic(folder / "performance.json", test_metrics)
        predictor.workload.report(predictor, test_metrics, folder)
        mlflow.log_artifacts(str(folder))


def _mlflow_callback(metric_name: str, experiment_id: str) -> Any:
    """The Optuna MLflowCallback, configured to nest trials under the active run.

    optuna-integration deprecated ``MLflowCallback`` in 4.9 and plans its removal
    in 6.0; tagifai pins ``optuna-integration<6`` and touches it only here, so
    its deprecation warning is silenced here rather than shown on every run.
    """
    from optuna_integration import MLflowCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        return MLflowCallback(
            metric_name=metric_name,
            create_experiment=False,  # the experiment is ours (or `mlflow run`'s)
            mlflow_kwargs={"nested": True, "experiment_id": experiment_id},
            tag_trial_user_attrs=True,
        )


TRIAL_STATUS = {
    optuna.trial.TrialState.COMPLETE: RunStatus.FINISHED,
    optuna.trial.TrialState.PRUNED: RunStatus.KILLED,
    optuna.trial.TrialState.FAIL: RunStatus.FAILED,
}


def _file_launcher_run(client: MlflowClient, launched: str, parent: str, study: str) -> None:
    """File the run ``mlflow run`` made under the study's parent, and give the parent
    its lineage (entry point, source, git commit) when it has none yet."""
    try:
        tags = client.get_run(launched).data.tags
    except MlflowException:  # not in this store: nothing to file
        logger.warning("MLFLOW_RUN_ID %s is not a run of this tracking store; ignored", launched)
        return
    if "mlflow.project.entryPoint" not in client.get_run(parent).data.tags:
        for key, value in tags.items():
            if key.startswith(("mlflow.source.", "mlflow.project.", "mlflow.user")):
                client.set_tag(parent, key, value)
    client.set_tag(launched, "mlflow.parentRunId", parent)
    client.set_tag(launched, "mlflow.runName", f"mlflow-run-{time.strftime('%Y%m%d-%H%M%S')}")
    client.set_tag(launched, "tagifai.study_parent_run_id", parent)
    client.set_tag(
        launched,
        "mlflow.note.content",
        f"One `mlflow run` of study {study}: its params are the entry point's -P values as "
        f"given (0, -1 and empty mean 'the config's'); the study's trials and resolved "
        f"settings are on the parent run {parent}.",
    )


class StudyTracker:
    """An Optuna study's MLflow side: one parent run, one nested child per trial.

    The parent is the one recorded in the study's user attributes (a resumed or
    joined study), else a new run in the experiment named after the study. The
    study records the tracking store of its parent too: a recorded parent missing
    from the store in use (another store, or a store that was reset) is an error,
    never a new parent. A run ``mlflow run`` made for the invocation (``MLFLOW_RUN_ID``)
    is filed under the parent as ``mlflow-run-<time>``: its params are the entry
    point's raw ``-P`` values, the parent's are the study's resolved ones.

    Args:
        metric_name: Name of the objective value in the child runs.
    """

    def __init__(self, metric_name: str) -> None:
        self.metric_name = metric_name
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.trial_run_id: str | None = None
        self._callback: Any = None

    def start(
        self,
        study: optuna.Study,
        experiment_name: str,
        claim: Callable[[str], bool] | None = None,
        storage: optuna.storages.BaseStorage | None = None,
    ) -> str:
        """Start, resume or join the study's parent run, created once for all workers.

        The one process that claims ``<study>.mlflow-parent`` creates the parent run
        and records its id in the study; every other process waits for that id and
        adopts the run.

        Args:
            study: The Optuna study.
            experiment_name: Experiment for a new parent (usually the study name).
            claim: Atomic claim of a name across processes (``coordination.claim``).
            storage: The study's storage, to re-read the recorded parent.

        Returns:
            The parent run id.
        """
        client = MlflowClient()
        launched = os.environ.pop("MLFLOW_RUN_ID", None)  # set by `mlflow run`
        recorded = self._recorded_parent(study)
        if (
            recorded is None
            and claim is not None
            and storage is not None
            and not claim(f"{study.study_name}.mlflow-parent")
        ):
            recorded = self._wait_for_parent(study, storage)
        if recorded is not None:
            self.experiment_id = client.get_run(recorded).info.experiment_id
            mlflow.set_experiment(experiment_id=self.experiment_id)
            run = mlflow.start_run(run_id=recorded)
        else:
            self.experiment_id = ensure_experiment(experiment_name)
            mlflow.set_experiment(experiment_id=self.experiment_id)
            run = mlflow.start_run(run_name=study.study_name)
        close_stale_runs(self.experiment_id)
        if launched:
            _file_launcher_run(client, launched, run.info.run_id, study.study_name)
        self.parent_run_id = run.info.run_id
        if recorded is None:
            study.set_user_attr(STORE_ATTR, store_uri())
            study.set_user_attr(PARENT_RUN_ATTR, self.parent_run_id)
        commit = git_commit()
        mlflow.set_tags(
            {
                "optuna.study_name": study.study_name,
                "mlflow.runName": study.study_name,
                "git_commit": commit,
                "mlflow.source.git.commit": commit,
            }
        )
        self._callback = _mlflow_callback(self.metric_name, self.experiment_id)
        return self.parent_run_id

    @staticmethod
    def _recorded_parent(study: optuna.Study) -> str | None:
        """The study's parent run, which must be in the store in use.

        Raises:
            TagifaiError: If the study has a parent run that this store does not hold.
        """
        recorded = study.user_attrs.get(PARENT_RUN_ATTR)
        if recorded is None:
            return None
        try:
            MlflowClient().get_run(recorded)
        except MlflowException:
            # Another store (or this one reset): a new parent here would split the
            # study's trials across two parents, so say where the runs are instead.
            where = study.user_attrs.get(STORE_ATTR, "another MLflow store")
            raise TagifaiError(
                f"study {study.study_name!r}: its parent run {recorded} is in {where}, "
                f"not in the tracking store in use ({store_uri()}): set "
                f"MLFLOW_TRACKING_URI to that store, or start a new study (--study-name)"
            ) from None
        return str(recorded)

    def _wait_for_parent(
        self, study: optuna.Study, storage: optuna.storages.BaseStorage, seconds: float = 30.0
    ) -> str | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            fresh = optuna.load_study(study_name=study.study_name, storage=storage)
            if fresh.user_attrs.get(PARENT_RUN_ATTR):
                return self._recorded_parent(fresh)
            time.sleep(0.5)
        # The claimant died before recording a parent: make one (and record it).
        logger.warning(
            "study %s: no parent run recorded %.0fs after another worker claimed it; creating one",
            study.study_name,
            seconds,
        )
        return None

    def track(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        """Wrap the objective so everything it logs lands in the trial's child run."""

        def remember_run(trial: optuna.Trial) -> float:
            active = mlflow.active_run()
            self.trial_run_id = active.info.run_id if active is not None else None
            return objective(trial)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            return self._callback.track_in_mlflow()(remember_run)

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: log the trial, then set its run's true status.

        MLflowCallback reopens the child run to log the value and params and ends
        it FINISHED whatever the trial's state; pruned trials become KILLED and
        failed ones FAILED here. A trial that never started a run (refused as
        surplus) gets none.
        """
        self.trial_run_id = None  # the trial is over: an interrupt now is not in it
        run_id = trial.system_attrs.get(TRIAL_RUN_ATTR)
        if run_id is None:
            return
        self._callback(study, trial)
        client = MlflowClient()
        client.set_tag(run_id, "mlflow.runName", f"trial-{trial.number}")
        # The callback tags each param's distribution: noise in the UI's run table.
        for name in trial.distributions:
            with contextlib.suppress(MlflowException):
                client.delete_tag(run_id, f"{name}_distribution")
        if trial.state == optuna.trial.TrialState.PRUNED:
            note = f"Pruned at epoch {trial.last_step} by the study's pruner (not a crash)."
            client.set_tag(run_id, "mlflow.note.content", note)
        status = TRIAL_STATUS.get(trial.state, RunStatus.FAILED)
        client.set_terminated(run_id, RunStatus.to_string(status))
        note_reachable()  # this trial's writes went through, after an outage or not

    @staticmethod
    def close_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A dead worker's trial was marked FAIL: close its child run FAILED too."""
        run_id = trial.system_attrs.get(TRIAL_RUN_ATTR)
        if run_id is None:
            return
        client = MlflowClient()
        client.set_tag(run_id, "state", "FAIL")
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))

    def abort(self, interrupted: bool) -> None:
        """After Ctrl-C/SIGTERM or an error: the open trial's run is KILLED
        (interrupted) or FAILED, the parent is left KILLED/FAILED and resumable.

        Best effort: when the store cannot be written (a full disk, a server gone),
        the runs stay RUNNING for :func:`close_stale_runs` in the next command, and
        the error that stopped the study is the one the user sees.
        """
        status = "KILLED" if interrupted else "FAILED"
        try:
            active = mlflow.active_run()
            if active is not None and active.info.run_id != self.parent_run_id:
                mlflow.end_run(status)
            elif interrupted and self.trial_run_id is not None:
                # The child's `with start_run()` already ended it FAILED on the way out.
                MlflowClient().set_terminated(self.trial_run_id, status)
            self.end(status)
        except Exception as exc:
            logger.debug("could not close the study's runs: %s", exc)
            while mlflow.active_run() is not None:  # end_run pops before it writes
                with contextlib.suppress(Exception):
                    mlflow.end_run(status)

    def end(self, status: str = "FINISHED") -> None:
        """End this process's hold on the parent run with ``status``.

        ``RUNNING`` leaves it open for other workers: the one that sees the study
        complete ends it FINISHED.
        """
        while mlflow.active_run() is not None:
            active = mlflow.active_run()
            assert active is not None
            mlflow.end_run("KILLED" if active.info.run_id != self.parent_run_id else status)

    def log_study(
        self, config: Any, base: RunParams, workload: Workload, dataset: DataSet, splits: Splits
    ) -> None:
        """On the parent run: the data searched over, its preparation, the study config.

        Params are immutable in MLflow and a resumed study may change ``n_trials``,
        so the config goes in an artifact and tags rather than params.
        """
        log_dataset(workload, dataset, splits)
        with contextlib.suppress(MlflowException):  # a resumed parent has them already
            mlflow.log_params(base.data_params())
        mlflow.set_tags(
            {
                "optuna.metric": config.metric,
                "optuna.direction": config.direction,
                "optuna.sampler": config.sampler.name,
                "optuna.pruner": config.pruner.name,
                "optuna.n_trials": str(config.n_trials),
            }
        )
        mlflow.log_dict(
            {"config": config.model_dump(mode="json"), "base_params": base.model_dump(mode="json")},
            "optimize_config.json",
        )

    def epochs(self) -> contextlib.AbstractContextManager[Reporter]:
        """The trial's epoch reporter: to its child run (flushed on leaving)."""
        return MlflowReporter()

    def trial_started(self, params: RunParams, sampled: dict[str, Any]) -> None:
        """Inside a trial's child run: exactly the knobs its model uses, the ``sampled``
        ones as Optuna sampled them."""
        mlflow.set_tags(_owner_tags())
        log_run_params(params, with_data=False, sampled=sampled)

    def trial_resumed(self, previous: int | None, previous_run: str | None, epoch: int) -> None:
        """Inside a retried trial's child run: which attempt it goes on from, and where."""
        mlflow.set_tags(
            {
                "tagifai.retry_of_trial": str(previous),
                "tagifai.retry_of_run": str(previous_run or ""),
                "tagifai.resumed_after_epoch": str(epoch),
                "mlflow.note.content": (
                    f"A retry of trial {previous} (run {previous_run}), whose worker died: "
                    f"it went on from that attempt's checkpoint after epoch {epoch}; epochs "
                    f"1-{epoch} are that attempt's, reported again here."
                ),
            }
        )

    def trial_finished(
        self, predictor: Predictor, val_metrics: dict[str, float], objective: str
    ) -> None:
        """Inside a trial's child run: its validation metrics, threshold and model.

        The objective metric itself is left to the MLflowCallback, which logs it
        under the same name once the trial is over.
        """
        mlflow.log_metrics(
            {
                **{key: value for key, value in val_metrics.items() if key != objective},
                "threshold": predictor.decision.summary,
            }
        )
        log_predictor(predictor, input_example=False)

    def log_summary(
        self,
        study: optuna.Study,
        best_params: dict[str, Any],
        write_plots: Callable[[Path], list[str]],
        make_trials: Callable[[], pd.DataFrame],
    ) -> None:
        """Log the study's result on the parent run.

        Args:
            study: The study (its best trial is summarised).
            best_params: The content of ``best_params.json``.
            write_plots: Writes the plots into a folder (PNGs and one offline page).
            make_trials: Makes the trials table (``study.trials_dataframe()``).
        """
        best = study.best_trial
        finished = [t for t in study.trials if t.state.is_finished()]
        mlflow.log_metrics(
            {
                f"best_{self.metric_name}": float(best.value or 0.0),
                "best_trial_number": best.number,
                "trials_complete": sum(t.state.name == "COMPLETE" for t in finished),
                "trials_pruned": sum(t.state.name == "PRUNED" for t in finished),
                "trials_failed": sum(t.state.name == "FAIL" for t in finished),
            },
            step=len(finished),
        )
        self._mark_best(best)
        mlflow.set_tags(
            {
                "best_trial_number": str(best.number),
                "best_run_id": str(best.system_attrs.get(TRIAL_RUN_ATTR, "")),
                f"best_{self.metric_name}": f"{best.value:.6f}",
                **{f"best.{key}": str(value) for key, value in best.params.items()},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_json_atomic(folder / "best_params.json", best_params)
            make_trials().to_csv(folder / "trials.csv", index=False)
            write_plots(folder / "plots")
            mlflow.log_artifacts(str(folder))

    def _mark_best(self, best: optuna.trial.FrozenTrial) -> None:
        """Tag and describe the best trial's child run as best (and the one before, no more)."""
        run_id = best.system_attrs.get(TRIAL_RUN_ATTR)
        if run_id is None or self.parent_run_id is None:
            return
        client = MlflowClient()
        before = client.get_run(self.parent_run_id).data.tags.get("best_run_id")
        if before and before != run_id:
            with contextlib.suppress(MlflowException):
                client.delete_tag(before, "tagifai.best")
                client.delete_tag(before, "mlflow.note.content")
        client.set_tag(run_id, "tagifai.best", "true")
        client.set_tag(
            run_id,
            "mlflow.note.content",
            f"The best trial of the study so far: {self.metric_name} = {best.value:.4f}. "
            "train-best trains these params again.",
        )


class _NoEpochs(contextlib.AbstractContextManager[Reporter]):
    def __enter__(self) -> Reporter:
        return NullReporter()

    def __exit__(self, *exc_info: object) -> None:
        return None


class NullTracker:
    """A study tracker that records nothing (benchmarks run studies untracked)."""

    parent_run_id: str | None = None

    def start(self, study: optuna.Study, experiment_name: str, **_: Any) -> str | None:
        """No parent run."""
        return None

    def track(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        """The objective as it is."""
        return objective

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Nothing to log."""

    @staticmethod
    def close_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """No run to close."""

    def abort(self, interrupted: bool) -> None:
        """No run to end."""

    def end(self, status: str = "FINISHED") -> None:
        """No run to end."""

    def log_study(self, *args: Any) -> None:
        """Nothing to log."""

    def epochs(self) -> contextlib.AbstractContextManager[Reporter]:
        """A reporter that records nothing."""
        return _NoEpochs()

    def trial_started(self, params: RunParams, sampled: dict[str, Any]) -> None:
        """Nothing to log."""

    def trial_resumed(self, *args: Any) -> None:
        """Nothing to log."""

    def trial_finished(self, *args: Any) -> None:
        """Nothing to log."""

    def log_summary(self, *args: Any) -> None:
        """Nothing to log."""
