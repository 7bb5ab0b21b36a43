"""A study's MLflow runs, with one owner: this module opens, writes and ends the study's
parent run and every trial's child run, and sets each run's status once.

- :meth:`StudyRuns.parent`: the study's one parent run, made by the first worker and
  adopted by the others and by every resume; the run ``mlflow run`` makes for an
  invocation is folded into it (lineage and ``-P`` values), so no run of the study
  lives outside the study's experiment.
- :meth:`StudyRuns.trial`: a trial's child run ``trial-<n>``: the knobs its model used
  (logged once, at the start), its epochs in batches, its validation metrics and model;
  then optuna-integration's ``MLflowCallback`` logs the trial's value and tags, and the
  run ends with the trial's state: FINISHED (complete, or pruned: the ``state`` tag and
  the description say so, since the pruner stopping a trial is no crash), KILLED
  (interrupted: the next invocation resumes it), FAILED.
- :meth:`StudyRuns.log_summary`: the study's best value on the parent under the
  objective's own name, the ``best_trial`` tag and a description naming it; the best
  child's description says it is the best.
- :func:`save_view`: the experiment's shared run-table view (an MLflow UI "view" kept
  in an experiment tag) that opens the study's runs sorted best first, with the
  objective, ``state`` and Description columns; :func:`view_link` is its address.
- :class:`NullStudyRuns`: the same calls, recording nothing (benchmarks run untracked).

A completed trial costs 6 tracking requests besides its model: the run, its params,
its epochs with the final metrics, the callback's value and tags, the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow.entities import Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna_integration import MLflowCallback

from tagifai.errors import TagifaiError
from tagifai.files import write_json_atomic
from tagifai.logged_models import log_predictor
from tagifai.predict import Predictor
from tagifai.runs import MlflowReporter, close_stale_runs, flat_params, log_dataset, owner_tags
from tagifai.tracking import configure, ensure_experiment, git_commit, note_reachable, store_uri
from tagifai.training import NullReporter, Reporter
from tagifai.workloads.base import DataSet, RunParams, Splits, Workload

__all__ = [
    "PARENT_RUN_ATTR",
    "STORE_ATTR",
    "TRIAL_RUN_ATTR",
    "NullStudyRuns",
    "NullTrialRun",
    "ParentRun",
    "Resumed",
    "StudyRuns",
    "TrialRun",
    "save_view",
    "view_link",
]

logger = logging.getLogger(__name__)

PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attribute holding the parent run id
STORE_ATTR = "mlflow_tracking_uri"  # and the tracking store that holds it
TRIAL_RUN_ATTR = "mlflow_run_id"  # trial system attribute (MLflowCallback's own key)
PARENT_WAIT_SECONDS = 30.0  # a worker waits this long for another to make the parent
# The MLflow UI keeps a saved run-table view in the experiment tag ``<prefix><key>`` and
# opens it from ``#/experiments/<id>/runs?viewStateShareKey=<key>`` (3.17's own names).
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_URL_PARAM = "viewStateShareKey"
TRAINING_VIEW = "workflowType=machine_learning"  # the UI's model-training view, not GenAI's

TRIAL_STATUS = {
    optuna.trial.TrialState.COMPLETE: "FINISHED",
    optuna.trial.TrialState.PRUNED: "FINISHED",  # the pruner's decision, not a crash
    optuna.trial.TrialState.FAIL: "FAILED",
}


class _TrialLogger(MLflowCallback):
    """optuna-integration's ``MLflowCallback``, logging a finished trial's value and tags
    (number, state, times, distributions, user attributes) into the trial's run.

    The base class's ``__call__`` reopens the run by id (a RUNNING write) and ends it
    FINISHED whatever the trial's state; here :class:`StudyRuns` holds the run open and
    ends it once, with the trial's true state. A pruned trial's value is only its last
    epoch's (Optuna's rule), not a trained model's: it stays in the epoch curve, so the
    objective's column (and a sort by it) holds complete trials only. The callback is
    deprecated since optuna-integration 4.9 and removed in 6.0: tagifai pins ``<6`` and
    uses it only here.
    """

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            self._log_metrics(trial.values)
        self._set_tags(trial, study)


def _trial_logger(metric_name: str) -> _TrialLogger:
    with warnings.catch_warnings():  # the deprecation is handled by the pin, not news
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        return _TrialLogger(metric_name=metric_name, create_experiment=False)


@dataclass(frozen=True)
class Resumed:
    """Where a retried trial goes on from: the attempt before it and its last epoch."""

    trial: int
    run_id: str | None
    epoch: int


@dataclass
class ParentRun:
    """The study's parent run as one process holds it; ``status`` is what it is left
    with when this process lets go (RUNNING: other workers still hold it)."""

    run_id: str | None
    status: str = "KILLED"


class TrialRun:
    """A trial's open child run: what the trial writes to it, batched."""

    def __init__(self, run_id: str, metric_name: str, logger_: _TrialLogger) -> None:
        self.run_id = run_id
        self.metric_name = metric_name
        self.status = "FAILED"  # until the trial is told
        self.epochs: Reporter = MlflowReporter(run_id=run_id)
        self._logger = logger_
        self._final_tags: dict[str, str] = {}

    def log_params(self, values: dict[str, Any]) -> None:
        """Exactly the knobs that shaped the trial's model (``RunParams.run_params()``; the
        data's are on the parent), in one request."""
        flat = flat_params(values)
        MlflowClient().log_batch(self.run_id, params=[Param(k, str(v)) for k, v in flat.items()])

    def log_model(self, predictor: Predictor, val_metrics: dict[str, float]) -> None:
        """The trial's validation metrics (with its last epochs) and its model. The
        objective itself is left to the callback, which logs it under the metric's name."""
        assert isinstance(self.epochs, MlflowReporter)
        self.epochs.flush(
            metrics={
                **{k: v for k, v in val_metrics.items() if k != self.metric_name},
                "threshold": predictor.decision.summary,
            }
        )
        log_predictor(predictor, input_example=False)

    def finish(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """The trial was told: the callback logs its value and tags, and the run will end
        with the trial's state."""
        self.status = TRIAL_STATUS.get(trial.state, "FAILED")
        if trial.state == optuna.trial.TrialState.PRUNED:
            epoch = trial.last_step
            if epoch is None:
                epoch = trial.user_attrs.get("epochs", 0)
            self._final_tags["mlflow.note.content"] = (
                f"Pruned after epoch {epoch} (not a crash): the study's pruner stopped it "
                f"early, its {self.metric_name} at that epoch not promising enough."
            )
        self.close_epochs()
        self._logger(study, trial)

    def interrupted(self, epoch: int, retry: int | None) -> None:
        """Ctrl-C or SIGTERM stopped the trial; ``retry`` is the queued trial that goes on
        from its checkpoint."""
        self.status = "KILLED"
        then = f"trial {retry} goes on from its checkpoint" if retry is not None else "not retried"
        self._final_tags.update(
            {
                "state": "INTERRUPTED",
                "mlflow.note.content": (
                    f"Interrupted (Ctrl-C or SIGTERM) after epoch {epoch}: {then} when the "
                    "same command runs again."
                ),
            }
        )

    def close_epochs(self) -> None:
        """Write the queued epochs and final tags (pruned, failed or interrupted trials
        keep their curves too)."""
        if isinstance(self.epochs, MlflowReporter):
            self.epochs.flush(tags=self._final_tags)
            self._final_tags = {}


class StudyRuns:
    """An Optuna study's MLflow runs: one parent, one nested child per trial.

    The parent is the one recorded in the study's user attributes (a resumed or
    joined study), else a new run in the experiment named after the study. The
    study records the tracking store of its parent too: a recorded parent missing
    from the store in use (another store, or a store that was reset) is an error,
    never a new parent.

    Args:
        metric_name: Name of the objective value in the child runs.
    """

    def __init__(self, metric_name: str) -> None:
        self.metric_name = metric_name
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self._logger = _trial_logger(metric_name)

    @contextlib.contextmanager
    def parent(
        self,
        study: optuna.Study,
        experiment_name: str,
        claim: Callable[[str], bool] | None = None,
        storage: optuna.storages.BaseStorage | None = None,
    ) -> Iterator[ParentRun]:
        """Hold the study's parent run: made once for all workers, adopted by the rest.

        The one process that claims ``<study>.mlflow-parent`` makes the parent run and
        records its id in the study; every other process waits for that id and adopts
        the run. Leaving the block ends this process's hold with the yielded
        ``status`` (KILLED after Ctrl-C, FAILED after an error), best effort: a store
        that cannot be written leaves it to the next command.

        Args:
            study: The Optuna study.
            experiment_name: Experiment for a new parent (the study's name).
            claim: Atomic claim of a name across processes (``coordination.claim``).
            storage: The study's storage, to re-read the recorded parent.
        """
        run_id = self._start_parent(study, experiment_name, claim, storage)
        held = ParentRun(run_id)
        try:
            yield held
        except KeyboardInterrupt:
            held.status = "KILLED"
            raise
        except BaseException:
            held.status = "FAILED"
            raise
        finally:
            self._end_parent(held.status)

    def _start_parent(
        self,
        study: optuna.Study,
        experiment_name: str,
        claim: Callable[[str], bool] | None,
        storage: optuna.storages.BaseStorage | None,
    ) -> str:
        client = MlflowClient()
        launched = os.environ.pop("MLFLOW_RUN_ID", None)  # set by `mlflow run`
        recorded = _recorded_parent(study)
        if (
            recorded is None
            and claim is not None
            and storage is not None
            and not claim(f"{study.study_name}.mlflow-parent")
        ):
            recorded = _wait_for_parent(study, storage)
        if recorded is not None:
            self.experiment_id = client.get_run(recorded).info.experiment_id
            mlflow.set_experiment(experiment_id=self.experiment_id)
            run = mlflow.start_run(run_id=recorded)
        else:
            self.experiment_id = ensure_experiment(experiment_name)
            mlflow.set_experiment(experiment_id=self.experiment_id)
            run = mlflow.start_run(run_name=study.study_name)
            study.set_user_attr(STORE_ATTR, store_uri())
            study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
        self.parent_run_id = run.info.run_id
        close_stale_runs(self.experiment_id)
        commit = git_commit()
        tags = {
            "optuna.study_name": study.study_name,
            "mlflow.runName": study.study_name,
            "git_commit": commit,
            "mlflow.source.git.commit": commit,
        }
        if launched:
            tags.update(_fold_launcher_run(client, launched, self.parent_run_id))
        mlflow.set_tags(tags)
        return self.parent_run_id

    def _end_parent(self, status: str) -> None:
        """End this process's hold on the parent (``RUNNING`` leaves it open for others)."""
        try:
            while (active := mlflow.active_run()) is not None:
                mlflow.end_run("KILLED" if active.info.run_id != self.parent_run_id else status)
        except Exception as exc:  # the error that stopped the study is the one to show
            logger.debug("could not end the parent run: %s", exc)
            while mlflow.active_run() is not None:  # end_run pops before it writes
                with contextlib.suppress(Exception):
                    mlflow.end_run(status)

    @contextlib.contextmanager
    def trial(self, trial: optuna.Trial, resumed: Resumed | None = None) -> Iterator[TrialRun]:
        """A trial's child run ``trial-<n>``, open while inside; it ends with the status
        :meth:`TrialRun.finish` or :meth:`TrialRun.interrupted` set (FAILED otherwise).

        A retry's run names the attempt it goes on from and where.
        """
        tags = {
            **owner_tags(),
            "optuna.study_name": trial.study.study_name,  # the run-table view filters on it
            "optuna.trial_number": str(trial.number),
        }
        if resumed is not None:
            tags.update(
                {
                    "tagifai.retry_of_trial": str(resumed.trial),
                    "tagifai.retry_of_run": resumed.run_id or "",
                    "tagifai.resumed_after_epoch": str(resumed.epoch),
                    "mlflow.note.content": (
                        f"A retry of trial {resumed.trial} (run {resumed.run_id}), which did "
                        f"not finish: it went on from that attempt's checkpoint after epoch "
                        f"{resumed.epoch}; epochs 1-{resumed.epoch} are that attempt's, "
                        "reported again here."
                    ),
                }
            )
        run = mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=f"trial-{trial.number}",
            nested=True,
            tags=tags,
        )
        trial.storage.set_trial_system_attr(trial._trial_id, TRIAL_RUN_ATTR, run.info.run_id)
        opened = TrialRun(run.info.run_id, self.metric_name, self._logger)
        try:
            yield opened
        except KeyboardInterrupt:
            opened.status = "KILLED"
            raise
        finally:
            try:
                opened.close_epochs()
                mlflow.end_run(opened.status)
            except Exception as exc:
                if opened.status == "FINISHED":
                    raise
                # A store that cannot be written: the next command closes the run, and
                # the error that ended the trial is the one the user sees.
                logger.debug("could not close trial run %s: %s", run.info.run_id, exc)
                if (active := mlflow.active_run()) and active.info.run_id == run.info.run_id:
                    with contextlib.suppress(Exception):
                        mlflow.end_run(opened.status)
            else:
                note_reachable()  # this trial's writes went through, after an outage or not

    @staticmethod
    def close_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A dead worker's trial was marked FAIL: close its child run FAILED too."""
        run_id = trial.system_attrs.get(TRIAL_RUN_ATTR)
        if run_id is None:
            return
        client = MlflowClient()
        client.log_batch(run_id, tags=[RunTag("state", "FAIL")])
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))

    def log_study(
        self, config: Any, base: RunParams, workload: Workload, dataset: DataSet, splits: Splits
    ) -> None:
        """On the parent run: the data searched over, its preparation, the study config;
        on the experiment: the run-table view of the study (:func:`save_view`).

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
        if self.experiment_id is not None:
            save_view(self.experiment_id, config.study_name, self.metric_name, config.direction)

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
        counts = {
            state: sum(t.state.name == state for t in finished)
            for state in ("COMPLETE", "PRUNED", "FAIL")
        }
        value = float(best.value or 0.0)
        mlflow.log_metrics(
            {
                # Under the objective's own name: the parent's row in the run table sits
                # in the trials' column, and a sort by it puts the study beside its best.
                self.metric_name: value,
                f"best_{self.metric_name}": value,
                "best_trial_number": best.number,
                "trials_complete": counts["COMPLETE"],
                "trials_pruned": counts["PRUNED"],
                "trials_failed": counts["FAIL"],
            },
            step=len(finished),
        )
        self._mark_best(best, len(finished))
        mlflow.set_tags(
            {
                "best_trial": f"trial-{best.number}",
                # The run table shows a description's first 50 characters: the best first.
                "mlflow.note.content": (
                    f"The study's best: trial-{best.number}, {self.metric_name} = {value:.4f} "
                    f"({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
                    f"{counts['FAIL']} failed trials); its params are in best_params.json."
                ),
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

    def _mark_best(self, best: optuna.trial.FrozenTrial, done: int) -> None:
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
        note = (
            f"Best trial of the study: {self.metric_name} = {best.value:.4f} after {done} "
            "trials; train-best trains its params again."
        )
        client.log_batch(
            run_id, tags=[RunTag("tagifai.best", "true"), RunTag("mlflow.note.content", note)]
        )


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
        # Another store (or this one reset): a new parent here would split the study's
        # trials across two parents, so say where the runs are instead.
        where = study.user_attrs.get(STORE_ATTR, "another MLflow store")
        raise TagifaiError(
            f"study {study.study_name!r}: its parent run {recorded} is in {where}, "
            f"not in the tracking store in use ({store_uri()}): set "
            f"MLFLOW_TRACKING_URI to that store, or start a new study (--study-name)"
        ) from None
    return str(recorded)


def _wait_for_parent(study: optuna.Study, storage: optuna.storages.BaseStorage) -> str | None:
    """The parent another worker claimed to make, once it is recorded (``None``: that
    worker died first, and this one makes it)."""
    deadline = time.monotonic() + PARENT_WAIT_SECONDS
    while time.monotonic() < deadline:
        fresh = optuna.load_study(study_name=study.study_name, storage=storage)
        if fresh.user_attrs.get(PARENT_RUN_ATTR):
            return _recorded_parent(fresh)
        time.sleep(0.5)
    logger.warning(
        "study %s: no parent run recorded %.0fs after another worker claimed it; creating one",
        study.study_name,
        PARENT_WAIT_SECONDS,
    )
    return None


def _fold_launcher_run(client: MlflowClient, launched: str, parent: str) -> dict[str, str]:
    """Fold the run ``mlflow run`` made for this invocation into the study's parent.

    ``mlflow run`` makes its run before tagifai knows the study, in the experiment it
    is given (Default unless ``--experiment-name``), and closes it itself when the
    command ends. Its lineage (entry point, source, git commit, user) and its ``-P``
    values become tags of the parent; the run is deleted as soon as ``mlflow run`` has
    closed it (MLflow refuses to close a deleted run), by a small process that waits
    for this one to end (:func:`_forget_when_closed`). So every run of the study stays
    in the study's experiment.

    Returns:
        The parent's new tags.
    """
    try:
        run = client.get_run(launched)
    except MlflowException:  # not in this store: nothing to fold
        logger.warning("MLFLOW_RUN_ID %s is not a run of this tracking store; ignored", launched)
        return {}
    had = client.get_run(parent).data.tags
    tags = {
        key: value
        for key, value in run.data.tags.items()
        if key.startswith(("mlflow.source.", "mlflow.project.", "mlflow.user")) and key not in had
    }
    # MLflow records an empty -P value as the shell's ''.
    given = " ".join(
        f"-P {k}={v}" for k, v in sorted(run.data.params.items()) if v not in ("", "''")
    )
    entry = run.data.tags.get("mlflow.project.entryPoint", "")
    tags["tagifai.mlflow_run"] = f"mlflow run -e {entry} {given}".strip()
    note = f"Folded into the study's parent run {parent}; deleted once `mlflow run` closes it."
    client.log_batch(launched, tags=[RunTag("mlflow.note.content", note)])
    _forget_when_closed(launched)
    return tags


_FORGET_PIPES: list[int] = []  # write ends held open until this process ends
FORGET_WAIT_SECONDS = 300.0  # for `mlflow run` to close its run after this process ended


def _forget_when_closed(run_id: str) -> None:
    """Start a small process that deletes ``run_id`` once this process has ended and
    ``mlflow run`` has closed the run: it waits for the end of a pipe that only this
    process holds, then for the run's status to leave RUNNING (bounded)."""
    read, write = os.pipe()
    subprocess.Popen(
        [sys.executable, "-m", "tagifai.study_runs", "forget", run_id],
        stdin=read,
        env={**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()},
        start_new_session=True,  # outlives this process (and a Ctrl-C of its group)
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(read)
    _FORGET_PIPES.append(write)


def _forget(run_id: str) -> None:
    sys.stdin.buffer.read()  # EOF: the process that folded the run has ended
    client = MlflowClient()
    deadline = time.monotonic() + FORGET_WAIT_SECONDS
    while time.monotonic() < deadline:
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            client.delete_run(run_id)
            return
        time.sleep(0.2)


def _view_key(study_name: str) -> str:
    return f"trials.{study_name}"  # study names are URL- and tag-safe (config.check_name)


def save_view(experiment_id: str, study_name: str, metric: str, direction: str) -> None:
    """Save the study's run-table view in its experiment, as the MLflow UI's own "Save
    view" does: the study's runs (parent and trials) sorted by the objective, best first
    (runs without it, pruned and failed trials, last), with the objective, ``state`` and
    Description columns. Saving it again keeps its creation time.

    Args:
        experiment_id: The experiment of the study's runs.
        study_name: The study (its runs carry the ``optuna.study_name`` tag).
        metric: The objective's metric name.
        direction: ``maximize`` or ``minimize``.
    """
    columns = [f"metrics.`{metric}`", "tags.`state`", "attributes.`Description`"]
    state = {
        "searchFilter": f"tags.`optuna.study_name` = '{study_name}'",
        "orderByKey": f"metrics.`{metric}`",  # a sort other than by time lists runs flat
        "orderByAsc": direction == "minimize",
        "selectedColumns": columns,
        "columnOrder": columns,  # else the UI orders them by name
        "columnWidths": {f"metrics.`{metric}`": 170},  # the whole value, not 0.4538252...
        "runsHiddenMode": "SHOW_ALL",
    }
    client = MlflowClient()
    key = VIEW_TAG_PREFIX + _view_key(study_name)
    now = int(time.time() * 1000)
    created = now
    with contextlib.suppress(ValueError, KeyError, TypeError):
        created = int(json.loads(client.get_experiment(experiment_id).tags[key])["createdAt"])
    view = {
        "name": f"{study_name}: trials, best {metric} first",
        "createdAt": created,
        "updatedAt": now,
        "state": json.dumps(state),
    }
    client.set_experiment_tag(experiment_id, key, json.dumps(view))


def view_link(study_name: str, ui_url: str) -> str | None:
    """The MLflow UI address of the study's run-table view (``None``: no such view in the
    tracking store in use, e.g. no study yet).

    Args:
        study_name: The study (and experiment) name.
        ui_url: Where the MLflow UI answers, e.g. ``http://127.0.0.1:5000``.
    """
    experiment = MlflowClient().get_experiment_by_name(study_name)
    key = _view_key(study_name)
    if experiment is None or VIEW_TAG_PREFIX + key not in experiment.tags:
        return None
    return (
        f"{ui_url.rstrip('/')}/#/experiments/{experiment.experiment_id}/runs"
        f"?{VIEW_URL_PARAM}={key}&{TRAINING_VIEW}"
    )


class NullTrialRun:
    """A trial run that records nothing."""

    epochs: Reporter = NullReporter()
    status = "FAILED"

    def log_params(self, values: dict[str, Any]) -> None:
        """Nothing to log."""

    def log_model(self, predictor: Predictor, val_metrics: dict[str, float]) -> None:
        """Nothing to log."""

    def finish(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Nothing to log."""

    def interrupted(self, epoch: int, retry: int | None) -> None:
        """Nothing to log."""


class NullStudyRuns:
    """Study runs that record nothing (benchmarks run studies untracked)."""

    parent_run_id: str | None = None

    @contextlib.contextmanager
    def parent(self, study: optuna.Study, experiment_name: str, **_: Any) -> Iterator[ParentRun]:
        """No parent run."""
        yield ParentRun(None)

    @contextlib.contextmanager
    def trial(self, trial: optuna.Trial, resumed: Resumed | None = None) -> Iterator[NullTrialRun]:
        """No trial run."""
        yield NullTrialRun()

    @staticmethod
    def close_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """No run to close."""

    def log_study(self, *args: Any) -> None:
        """Nothing to log."""

    def log_summary(self, *args: Any) -> None:
        """Nothing to log."""


def _print_link(study_name: str, ui_url: str) -> None:
    """Print the study's view link for `make ui`, or say why there is none (exit 0: the
    UI starts either way)."""
    try:
        configure(read_only=True)
        link = view_link(study_name, ui_url)
    except (TagifaiError, MlflowException) as exc:
        print(f"No run-table view of study {study_name!r}: {exc}")
        return
    if link is None:
        print(f"No run-table view of study {study_name!r} yet: run make optimize first")
    else:
        print(f"Study {study_name}, trials best first: {link}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["forget"] and len(sys.argv) == 3:  # forget RUN_ID
        _forget(sys.argv[2])
    elif sys.argv[1:2] == ["link"] and len(sys.argv) == 4:  # link STUDY UI_URL
        _print_link(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: python -m tagifai.study_runs forget RUN_ID | link STUDY UI_URL")
