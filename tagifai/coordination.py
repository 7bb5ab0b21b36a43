"""Coordination between the workers of one study, through the study's own storage.

Any number of ``tagifai optimize`` processes, on one machine or many, can work on
one study: Optuna's storage hands out trial numbers atomically, and this module
adds the little the pipeline needs on top of it:

- :func:`claim`: exactly one process wins a name (the study's MLflow parent run, a
  summary). With a database storage it is a row in a small ``tagifai_claims``
  table next to Optuna's own, made through Optuna's engine: no lock shows up as a
  study to Optuna's clients or optuna-dashboard.
- :func:`next_trial`: the next trial this worker runs (queued ones first), or ``None``
  once the study holds ``n_trials`` done ones; a trial asked for after others filled the
  study is told FAIL (``surplus``) before any work; an idle worker waits for the others'
  trials, which may die and need a retry;
- :func:`heartbeat`: a running trial's heartbeats, so a dead worker's trial is failed
  and queued again (the retry of :func:`tagifai.study.make_storage`) by the next worker that looks;
- :func:`requeue`: an interrupted trial is failed and queued again at once, to go on
  from its checkpoint;
- :class:`Failures`: when a worker stops: at once on a config/data error or a full
  disk, after ``MAX_FAILURES_IN_A_ROW`` other failures.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import Any

import optuna
import sqlalchemy as sa
import sqlalchemy.exc

from tagifai.errors import ModelTooLarge, TagifaiError, disk_full

__all__ = [
    "DONE_STATES",
    "Failures",
    "claim",
    "heartbeat",
    "next_trial",
    "remaining_trials",
    "requeue",
    "study_is_complete",
    "worker_id",
    "worker_seed",
]

DONE_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
CLAIMED_STATES = (*DONE_STATES, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
POLL_SECONDS = 1.0  # how often an idle worker looks for trials to retry or the study's end
MAX_FAILURES_IN_A_ROW = 3  # a worker gives up when its trials keep failing

_CLAIMS = sa.Table(
    "tagifai_claims",
    sa.MetaData(),
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("worker", sa.String(300), nullable=False),
    sa.Column("claimed_at", sa.DateTime, nullable=False),
)
# Claims of storages that live in one process (in-memory): a set per storage object.
_LOCAL_CLAIMS: weakref.WeakKeyDictionary[object, set[str]] = weakref.WeakKeyDictionary()


def worker_id() -> str:
    """``host:pid`` of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(storage: optuna.storages.BaseStorage, name: str) -> bool:
    """Atomically claim ``name`` in the study storage: exactly one caller gets ``True``.

    Args:
        storage: The study's storage: an ``RDBStorage`` (claims are rows of
            ``tagifai_claims``, unique by name) or a storage of one process.
        name: What is claimed, e.g. ``<study>.mlflow-parent``.

    Returns:
        Whether this call made the claim.
    """
    engine = getattr(storage, "engine", None)
    if engine is None:
        claims = _LOCAL_CLAIMS.setdefault(storage, set())
        if name in claims:
            return False
        claims.add(name)
        return True
    row = {"name": name, "worker": worker_id(), "claimed_at": datetime.datetime.now()}
    for attempt in range(3):
        try:
            _CLAIMS.metadata.create_all(engine, checkfirst=True)
            with engine.begin() as connection:
                connection.execute(_CLAIMS.insert().values(**row))
            return True
        except sqlalchemy.exc.IntegrityError:
            return False  # the name's row exists: another process has it
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError):
            # Two processes creating the table at once: the loser finds it on the next try.
            if attempt == 2:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


MAX_SEED_SLOTS = 10_000  # invocations of one study that get a seed of their own


def worker_seed(storage: optuna.storages.BaseStorage, study_id: int, seed: int) -> int:
    """This invocation's sampler seed: the config's for the study's first, then seed + 1,
    seed + 2, ... one per worker or resume, in the order they arrive.

    Workers started with the same command would otherwise sample the same start-up
    trials, and a resumed study would repeat its first run's random suggestions.
    Each trial records the seed it was sampled with (``sampler_seed``).

    Raises:
        TagifaiError: After ``MAX_SEED_SLOTS`` invocations of one study.
    """
    for slot in range(MAX_SEED_SLOTS):
        if claim(storage, f"{study_id}:sampler-seed-{slot}"):
            return (seed + slot) % 2**32
    raise TagifaiError(f"study {study_id}: more than {MAX_SEED_SLOTS} invocations; start a new one")


def remaining_trials(study: optuna.Study, n_trials: int) -> int:
    """Trials still to run for the study to hold ``n_trials`` completed or pruned ones."""
    done = len(study.get_trials(deepcopy=False, states=DONE_STATES))
    return max(0, n_trials - done)


def study_is_complete(study: optuna.Study, n_trials: int) -> bool:
    """Whether the study holds ``n_trials`` done trials and no trial is still running."""
    busy = study.get_trials(
        deepcopy=False,
        states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING),
    )
    return remaining_trials(study, n_trials) == 0 and not busy


def next_trial(study: optuna.Study, n_trials: int, deadline: float | None) -> optuna.Trial | None:
    """The next trial for this worker to run, or ``None``: the study holds ``n_trials``
    done trials and none is running, or ``deadline`` (``time.monotonic()``) has passed.

    Queued trials (retries, initial trials) come first. While the study is full of
    running trials, this waits: one of them may die and be queued again. Two workers
    can both see one free slot; the later trial (the storage numbers trials atomically)
    is told FAIL with ``surplus=True`` before any work, and the loop looks again.
    """
    while deadline is None or time.monotonic() < deadline:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9: not news to users
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # no-op without heartbeats
        claimed = study.get_trials(deepcopy=False, states=CLAIMED_STATES)
        waiting = any(t.state == optuna.trial.TrialState.WAITING for t in claimed)
        if len(claimed) >= n_trials and not waiting:
            if all(t.state.is_finished() for t in claimed):
                return None
            time.sleep(POLL_SECONDS)
            continue
        with warnings.catch_warnings():  # :func:`heartbeat` sends them, as optimize would
            warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
            trial = study.ask()
        earlier = [
            t
            for t in study.get_trials(deepcopy=False, states=CLAIMED_STATES)
            if t.number < trial.number or t.state == optuna.trial.TrialState.WAITING
        ]
        if len(earlier) < n_trials:
            return trial
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return None


@contextlib.contextmanager
def heartbeat(trial: optuna.Trial) -> Iterator[None]:
    """Send the trial's heartbeats while inside (what ``study.optimize`` does for its own
    trials), when the storage has them turned on."""
    storage: Any = trial.storage  # RDBStorage (behind Optuna's cache) has heartbeats
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        yield
        return
    stop = threading.Event()
    storage.record_heartbeat(trial._trial_id)  # now, or a failure here leaves no orphan

    def beat() -> None:
        while not stop.wait(interval):
            storage.record_heartbeat(trial._trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def requeue(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """Fail an interrupted trial and queue a copy that goes on from its checkpoint, as a
    dead worker's trial is (the same retry record); return the copy's number (``None``:
    the trial had already ended). An interrupt never counts against ``max_retry``."""

    def frozen(number: int) -> optuna.trial.FrozenTrial:
        return next(t for t in study.get_trials(deepcopy=False) if t.number == number)

    if frozen(trial.number).state != optuna.trial.TrialState.RUNNING:
        return None
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8: not news to users
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)(
            study, frozen(trial.number)
        )
    queued = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    return next(
        (
            t.number
            for t in queued
            if t.system_attrs.get("retry_history", [])[-1:] == [trial.number]
        ),
        None,
    )


class Failures:
    """When a worker stops: at once on a failure the next trial would meet too (a
    config or data error, a full disk), else after ``MAX_FAILURES_IN_A_ROW`` failed
    trials in a row (the objective cannot succeed; retrying would loop for ever)."""

    def __init__(self, study_name: str) -> None:
        self.study_name = study_name
        self.in_a_row = 0

    def count(self, trial: optuna.trial.FrozenTrial, error: BaseException | None) -> None:
        """Count a told trial.

        Raises:
            TagifaiError: After ``MAX_FAILURES_IN_A_ROW`` failures, naming the last;
                the trial's own error at once when it is a config/data error.
            OSError: Or whatever error found the disk full, at once.
        """
        if trial.state != optuna.trial.TrialState.FAIL:
            self.in_a_row = 0
            return
        if error is not None and (
            (isinstance(error, TagifaiError) and not isinstance(error, ModelTooLarge))
            or disk_full(error)
        ):
            raise error
        self.in_a_row += 1
        if self.in_a_row >= MAX_FAILURES_IN_A_ROW:
            why = (
                f"{type(error).__name__}: {str(error).strip()}"
                if error is not None
                else f"the objective returned {trial.values}"
            )
            raise TagifaiError(
                f"study {self.study_name!r}: {self.in_a_row} trials failed in a row, giving up; "
                f"last: {why.splitlines()[0][:200]}"
            )
