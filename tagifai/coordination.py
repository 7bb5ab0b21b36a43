"""Coordination between the workers of one study, through the study's own storage.

Any number of ``tagifai optimize`` processes, on one machine or many, can work on
one study: Optuna's storage hands out trial numbers atomically, and this module
adds the little the pipeline needs on top of it:

- :func:`claim`: exactly one process wins a name (the study's MLflow parent run, a
  summary). With a database storage it is a row in a small ``tagifai_claims``
  table next to Optuna's own, made through Optuna's engine: no lock shows up as a
  study to Optuna's clients or optuna-dashboard.
- :func:`work`: run trials until the study holds ``n_trials`` done ones; a trial
  started after others filled the study stops before training (:class:`SurplusTrial`);
  an idle worker waits for the others' trials, which may die and need a retry.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import warnings
import weakref
from collections.abc import Callable

import optuna
import sqlalchemy as sa
import sqlalchemy.exc

from tagifai.errors import ModelTooLarge, TagifaiError, disk_full

__all__ = [
    "DONE_STATES",
    "SurplusTrial",
    "claim",
    "remaining_trials",
    "study_is_complete",
    "work",
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

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


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


class SurplusTrial(Exception):
    """A worker started a trial after others had already filled the study."""


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


class _Guarded:
    """The objective as one worker runs it: surplus trials refused, failures remembered.

    Two workers can both see one free slot and both start a trial; the later one
    (by trial number, which the storage hands out atomically) stops before any
    training or MLflow run, and is recorded as FAIL with ``surplus=True``.

    Optuna records a failed trial and goes on to the next; a failure that the next
    trial would meet too is kept in ``stop`` so that :func:`work` ends the study's
    run here: a full disk, or a config/data problem (``TagifaiError``).
    """

    def __init__(self, objective: Callable[[optuna.Trial], float], n_trials: int) -> None:
        self.objective = objective
        self.n_trials = n_trials
        self.stop: BaseException | None = None
        self.number: int | None = None  # the last trial run here
        self.error: str | None = None  # what it raised, if anything

    def __call__(self, trial: optuna.Trial) -> float:
        self.number, self.error = trial.number, None
        earlier = [
            t
            for t in trial.study.get_trials(deepcopy=False, states=CLAIMED_STATES)
            if t.number < trial.number or t.state == optuna.trial.TrialState.WAITING
        ]
        if len(earlier) >= self.n_trials:
            trial.set_user_attr("worker", worker_id())
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(
                f"trial {trial.number}: the study already has {self.n_trials} trials"
            )
        try:
            return self.objective(trial)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {str(exc).strip()}"
            if (isinstance(exc, TagifaiError) and not isinstance(exc, ModelTooLarge)) or disk_full(
                exc
            ):
                self.stop = exc
            raise


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    timeout: float | None,
    callbacks: list[Callback],
) -> int:
    """Run trials until the study holds ``n_trials`` done ones; return how many ran here.

    Failed trials do not count (a retry is queued for trials of dead workers); a
    worker with nothing to start waits while other workers' trials run, since
    one of them may die and need a retry. Queued retries run first.

    Raises:
        TagifaiError: After ``MAX_FAILURES_IN_A_ROW`` trials of this worker failed
            in a row: the objective cannot succeed, and retrying would loop forever.
            A trial's own ``TagifaiError`` (config or data) is raised at once.
        OSError: Or whatever error found the disk full, at once.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    ran = failures = 0
    guarded = _Guarded(objective, n_trials)
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
        if guarded.stop is not None:
            raise guarded.stop
        # Optuna also fails a trial whose objective returned (a NaN value): read its state.
        last = next(
            (t for t in study.get_trials(deepcopy=False) if t.number == guarded.number), None
        )
        if (
            last is None
            or last.state != optuna.trial.TrialState.FAIL
            or last.user_attrs.get("surplus")
        ):
            failures = 0
            continue
        failures += 1
        if failures >= MAX_FAILURES_IN_A_ROW:
            why = guarded.error or f"the objective returned {last.values}"
            raise TagifaiError(
                f"study {study.study_name!r}: {failures} trials failed in a row, giving up; "
                f"last: {why.splitlines()[0][:200]}"
            )
    return ran
