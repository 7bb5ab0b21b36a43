"""The small interface between the generic pipeline and one kind of data.

Training, optimisation, tracking, registration and serving only ever talk to a
:class:`Task`: it reads and prepares a data set, fits an encoder on the training
split, turns raw inputs into tensors and builds the network. Text tagging is the
one task today (:mod:`tagifai.text`); an image task joins by adding a module
that implements this protocol and an entry in :func:`get_task`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import pandas as pd
from torch import nn

from tagifai.config import Params
from tagifai.data import Dataset

__all__ = ["Encoder", "Task", "get_task"]


class Encoder(Protocol):
    """Turns prepared inputs into an integer array the model reads; JSON round trip."""

    def encode(self, inputs: list[Any]) -> np.ndarray:
        """Encode a batch of prepared inputs."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable state that :meth:`Task.load_encoder` restores."""
        ...


class Task(Protocol):
    """One kind of input data, from raw files to model inputs."""

    name: str

    def load(self, data: str, tags: str | None, params: Params) -> Dataset:
        """Read, validate and prepare a data set."""
        ...

    def inputs(self, frame: pd.DataFrame) -> list[Any]:
        """Prepared inputs of a :class:`~tagifai.data.Dataset` frame (or a split of it)."""
        ...

    def inputs_from_raw(self, raw: pd.DataFrame, params: Params) -> list[Any]:
        """Prepared inputs from a prediction payload (raises ``TagifaiError`` if invalid)."""
        ...

    def fit_encoder(self, inputs: list[Any], params: Params) -> Encoder:
        """Fit an encoder on training inputs only."""
        ...

    def load_encoder(self, state: dict[str, Any]) -> Encoder:
        """Restore an encoder from :meth:`Encoder.to_dict`."""
        ...

    def build_model(self, params: Params, encoder: Encoder, num_classes: int) -> nn.Module:
        """A fresh, untrained network for these params."""
        ...


def get_task(name: str) -> Task:
    """Return the task registered under ``name``.

    Args:
        name: ``params.task``.

    Returns:
        The task object.
    """
    if name == "text":
        from tagifai.text import TextTask

        return TextTask()
    raise ValueError(f"unknown task {name!r}")
