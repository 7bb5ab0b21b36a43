"""Runs: the MLflow record of one training job, and what every run shares.

- :func:`train_run` and :func:`log_training` record one training job;
- :class:`MlflowReporter` sends each epoch's metrics to a run in batches;
- :func:`owner_tags` and :func:`close_stale_runs`: runs a killed process left open are
  closed by the next command.

A study's runs (its parent and one child per trial) belong to :mod:`tagifai.study_runs`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tagifai.faults import failpoint
from tagifai.files import write_json_atomic
from tagifai.predict import Predictor
from tagifai.tracking import ensure_experiment, git_commit
from tagifai.workloads.base import DataSet, RunParams, Splits, Workload

__all__ = [
    "MlflowReporter",
    "close_stale_runs",
    "log_dataset",
    "log_run_params",
    "log_training",
    "owner_tags",
    "train_run",
]

logger = logging.getLogger(__name__)

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


def owner_tags() -> dict[str, str]:
    """Tags naming this process (host, PID, process identity): a run whose process is
    gone can then be told from a live one (:func:`close_stale_runs`)."""
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
        run_id: The run to log to (default: the active run).
    """

    def __init__(
        self, also: Any = None, flush_seconds: float = 5.0, run_id: str | None = None
    ) -> None:
        self.also = also
        self.flush_seconds = flush_seconds
        self.run_id = run_id or _active_run_id()
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

    def flush(
        self, metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None
    ) -> None:
        """Write the queued metrics to the run, with ``metrics`` (no step) and ``tags``
        in the same request."""
        timestamp = int(time.time() * 1000)
        batch = [
            *self._pending,
            *(Metric(key, float(value), timestamp, 0) for key, value in (metrics or {}).items()),
        ]
        if batch or tags:
            run_tags = [RunTag(key, value) for key, value in (tags or {}).items()]
            MlflowClient().log_batch(self.run_id, metrics=batch, tags=run_tags)
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
        experiment_id=experiment_id, run_name=run_name, tags={**(tags or {}), **owner_tags()}
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


def log_run_params(params: RunParams, with_data: bool = True) -> None:
    """Log what a model used on the active run: its architecture's knobs and the
    run-wide ones (and the data preparation, ``data.*``, unless a parent run has it)."""
    values = {**params.run_params(), **(params.data_params() if with_data else {})}
    mlflow.log_params(flat_params(values))


def flat_params(values: dict[str, Any]) -> dict[str, Any]:
    """Params as MLflow stores them: lists and dicts as JSON text."""
    return {
        key: json.dumps(value) if isinstance(value, list | tuple | dict) else value
        for key, value in values.items()
    }


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
