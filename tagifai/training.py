"""What every training method shares: seeds, the device, the reporter and the epoch loop.

A workload's training method (full-batch L-BFGS, minibatch Adam, ...) supplies one
function that trains an epoch and one that validates; :func:`fit_epochs` runs them
with early stopping and gives back the best-validation weights. Tracking and
pruning reach in through a :class:`Reporter`, so training also runs with none. A
reporter that is also :class:`Checkpointing` (a study's trial) gets the whole training
state after every epoch, and gives it back when a retried trial starts, so the retry
goes on from the last finished epoch of the attempt that died.
"""

from __future__ import annotations

import copy
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from tagifai.errors import ModelTooLarge

__all__ = [
    "MAX_PARAMETERS",
    "THREADS_ENV",
    "Checkpointing",
    "EpochLoop",
    "GeneratorState",
    "NullReporter",
    "Reporter",
    "build_bounded",
    "fit_epochs",
    "get_device",
    "set_seeds",
]

logger = logging.getLogger(__name__)

# Weights of one model: 400 MB in float32, ~1.6 GB with gradients and Adam's state. The
# largest default network (ResNet-18) has 11 M; each size knob has a bound, their product
# is bounded here.
MAX_PARAMETERS = 100_000_000


def build_bounded(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()``, after a dry run on the meta device (no memory) counted its parameters.

    Raises:
        ModelTooLarge: If the model would have more than :data:`MAX_PARAMETERS`.
    """
    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in build().parameters())
    except Exception as exc:  # a model that needs real tensors to be built: build it
        logger.debug("no dry run of the model: %s", exc)
        return build()
    if count > MAX_PARAMETERS:
        raise ModelTooLarge(
            f"model: {count:,} parameters, over the limit of {MAX_PARAMETERS:,}: "
            "choose smaller sizes (units, filters, embedding, channels)"
        )
    return build()


THREADS_ENV = "TAGIFAI_TORCH_THREADS"  # torch threads of a worker sharing the machine
DEVICE_ENV = "TAGIFAI_DEVICE"  # a worker's device, e.g. cuda:1 (one trial per GPU)


class Reporter(Protocol):
    """Receives each epoch's metrics; may raise to stop training (e.g. pruning)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after every epoch with the train loss, validation metrics and the lr."""
        ...


class NullReporter:
    """A reporter that records nothing."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Ignore the metrics."""


@runtime_checkable
class Checkpointing(Protocol):
    """A reporter that also keeps the training state between epochs."""

    def restore(self) -> dict[str, Any] | None:
        """The state to go on from (a failed attempt's last epoch), or ``None``."""
        ...

    def save(self, state: dict[str, Any]) -> None:
        """Keep the state after an epoch (plain tensors and numbers: ``weights_only``)."""
        ...


class GeneratorState:
    """A ``torch.Generator`` seen as an object with ``state_dict`` / ``load_state_dict``."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        """The generator's state."""
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put a saved state back."""
        self.generator.set_state(state["state"])


def set_seeds(seed: int) -> None:
    """Seed Python, numpy and torch so CPU training is repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device() -> torch.device:
    """``TAGIFAI_DEVICE`` if set (a worker's GPU), else CUDA when present, else CPU."""
    if os.environ.get(DEVICE_ENV):
        return torch.device(os.environ[DEVICE_ENV])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class EpochLoop:
    """What :func:`fit_epochs` did.

    Attributes:
        best_epoch: Epoch (1-based) whose weights were kept (0: none improved).
        epochs_run: Epochs trained.
        history: One metrics dict per epoch.
    """

    best_epoch: int = 0
    epochs_run: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def fit_epochs(
    model: nn.Module,
    train_epoch: Callable[[], float],
    validate: Callable[[], dict[str, float]],
    monitor: str,
    num_epochs: int,
    patience: int,
    reporter: Reporter,
    lr: Callable[[], float] | None = None,
    after_validate: Callable[[dict[str, float]], None] | None = None,
    converged: Callable[[list[dict[str, float]]], bool] | None = None,
    resumable: dict[str, Any] | None = None,
) -> EpochLoop:
    """Train epoch by epoch; keep and restore the weights with the best ``monitor``.

    Args:
        model: The network; its best-validation weights are loaded back at the end.
        train_epoch: Trains one epoch, returns the training loss.
        validate: Validation metrics of the current weights (``monitor`` among them).
        monitor: Validation metric to maximise (early stopping and the kept weights).
        num_epochs: Most epochs to train.
        patience: Stop after this many epochs without improvement.
        reporter: Gets every epoch's metrics; may raise (pruning).
        lr: The learning rate the epoch trained with, reported as ``lr``.
        after_validate: Called with each epoch's metrics (an lr scheduler step).
        converged: Whether training has stopped changing (stops early).
        resumable: Everything else that changes while training and has
            ``state_dict``/``load_state_dict`` (the optimizer, lr schedulers, the
            batch order's generator), for a reporter that checkpoints.

    Returns:
        The loop's record.
    """
    loop = EpochLoop()
    best_value, best_state = -np.inf, copy.deepcopy(model.state_dict())
    resumable = resumable or {}
    checkpoint = reporter if isinstance(reporter, Checkpointing) else None
    start = 1
    saved = checkpoint.restore() if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        for name, part in resumable.items():
            part.load_state_dict(saved["resumable"][name])
        torch.set_rng_state(saved["rng"])  # dropout draws go on where they were
        loop.history, loop.best_epoch = list(saved["history"]), int(saved["best_epoch"])
        loop.epochs_run = start = int(saved["epoch"])
        best_value, best_state = float(saved["best_value"]), saved["best_state"]
        logger.info("resumed after epoch %d (best %d)", start, loop.best_epoch)
        for epoch, metrics in enumerate(loop.history, start=1):
            reporter.on_epoch_end(epoch, metrics)  # the retry reports every epoch, once
        start += 1
    for epoch in range(start, num_epochs + 1):
        model.train()
        metrics = {"train_loss": train_epoch(), **validate()}
        if lr is not None:  # read before after_validate, which may cut it for the next epoch
            metrics["lr"] = lr()
        loop.history.append(metrics)
        loop.epochs_run = epoch
        if after_validate is not None:
            after_validate(metrics)
        if metrics[monitor] > best_value:
            best_value, loop.best_epoch = metrics[monitor], epoch
            best_state = copy.deepcopy(model.state_dict())
        reporter.on_epoch_end(epoch, metrics)  # may raise (pruning)
        if epoch - loop.best_epoch >= patience:
            logger.info("early stop at epoch %d (best %d)", epoch, loop.best_epoch)
            break
        if converged is not None and converged(loop.history):
            logger.info("converged at epoch %d (best %d)", epoch, loop.best_epoch)
            break
        if checkpoint is not None and epoch < num_epochs:
            checkpoint.save(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "resumable": {name: part.state_dict() for name, part in resumable.items()},
                    "rng": torch.get_rng_state(),
                    "history": loop.history,
                    "best_epoch": loop.best_epoch,
                    "best_value": float(best_value),
                    "best_state": best_state,
                }
            )
    model.load_state_dict(best_state)
    return loop
