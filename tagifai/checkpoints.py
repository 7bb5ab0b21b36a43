"""Checkpoints of a study's trials: a retried trial goes on from the epoch its failed
attempt last finished, instead of from epoch 0.

After every epoch a trial writes its whole training state (weights, optimizer,
schedules, random generators, history, best weights) to one file per attempt,
``experiments/checkpoints/<study>-<study id>/<trial>.pt``: written whole (temporary
file and rename), plain tensors and numbers only, read back with
``torch.load(weights_only=True)``. When a worker dies mid-trial, Optuna's heartbeat
callback queues a copy of the trial and records the attempts in its
``retry_history``; the copy reads the last attempt's file, reports the epochs it
restores to its own trial (no reported step is lost) and trains the rest. A trial
that ends, however it ends, removes its file and its predecessor's.

Workers on several machines need the folder on shared storage for a retry on another
machine to find it; without it the retry starts from epoch 0, as it would without
checkpoints.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch

from tagifai.config import EXPERIMENTS_DIR
from tagifai.files import write_bytes_atomic

__all__ = ["CHECKPOINTS_DIR", "TrialCheckpoint"]

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = EXPERIMENTS_DIR / "checkpoints"


class TrialCheckpoint:
    """The checkpoint file of one trial attempt, and the one it resumes from.

    Args:
        folder: The study's checkpoint folder.
        number: This attempt's trial number.
        previous: The number of the attempt it retries (``None``: a first attempt).
    """

    def __init__(self, folder: Path, number: int, previous: int | None) -> None:
        self.folder = folder
        self.path = folder / f"{number}.pt"
        self.previous = previous
        self.resumed_epoch = 0  # the epoch restored from the previous attempt (0: none)

    @classmethod
    def of(cls, trial: optuna.Trial, folder: Path) -> TrialCheckpoint:
        """The checkpoint of a running trial in the study's ``folder`` (a retry knows the
        attempt before it)."""
        trials = trial.study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        with warnings.catch_warnings():  # "experimental" since Optuna 3.0: not news to users
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen)
        return cls(folder, trial.number, history[-1] if history else None)

    @staticmethod
    def folder_of(study_name: str, study_id: int, root: Path = CHECKPOINTS_DIR) -> Path:
        """The checkpoint folder of a study (its id keeps a re-made study's apart)."""
        return root / f"{study_name}-{study_id}"

    def restore(self) -> dict[str, Any] | None:
        """The previous attempt's last state, or ``None`` (a first attempt, or no file)."""
        if self.previous is None:
            return None
        source = self.folder / f"{self.previous}.pt"
        try:
            content = source.read_bytes()
        except FileNotFoundError:
            logger.info("trial %s: no checkpoint at %s; starting at epoch 1", self.path, source)
            return None
        state: dict[str, Any] = torch.load(io.BytesIO(content), weights_only=True)
        self.resumed_epoch = int(state["epoch"])
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Keep this attempt's state after an epoch (replacing the one before)."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_bytes_atomic(self.path, buffer.getvalue())

    def remove(self) -> None:
        """The trial is over: its file and its predecessor's go."""
        self.path.unlink(missing_ok=True)
        if self.previous is not None:
            (self.folder / f"{self.previous}.pt").unlink(missing_ok=True)
