"""What the core (study, tracking, registry, serving, CLI) needs from a workload.

A workload is one kind of data and task: text tagging, image classification. It
lives in its own subpackage and registers one object that satisfies
:class:`Workload`. The core calls only these methods and never branches on a
workload's or an architecture's name.

Each workload's params are a frozen pydantic model shaped like :class:`RunParams`:
study-fixed data preparation under ``data``, and the network with its training
method under ``model``, a union discriminated by ``architecture``. Each
architecture declares its own fields (one source of defaults) and its own search
space in the study config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, model_validator
from torch import nn

__all__ = [
    "SERVED_INPUTS",
    "ArchitectureParams",
    "DataSet",
    "DecisionRule",
    "Encoder",
    "InputPolicy",
    "RunParams",
    "Splits",
    "TrainResult",
    "Workload",
]


class ArchitectureParams(BaseModel):
    """One architecture's knobs: its network and its training method.

    Subclasses set ``architecture`` to a ``Literal`` of their name; the study's
    search space for the architecture is checked against their fields.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Every architecture sets these with its own defaults (and bounds).
    architecture: str
    num_epochs: int  # upper bound; early stopping ends sooner
    patience: int  # epochs without validation improvement before stopping


class RunParams(BaseModel):
    """The shape every workload's params share (the core reads only these fields)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    seed: StrictInt = Field(1234, ge=0, lt=2**32)  # numpy's seed range: split and initial weights
    data: BaseModel
    model: ArchitectureParams

    def run_params(self) -> dict[str, Any]:
        """What a trained model used, flat, for an MLflow run: model knobs and the rest,
        without the data preparation (which the study's parent run records once)."""
        top = self.model_dump(mode="json", exclude={"data", "model"})
        return {**top, **self.model.model_dump(mode="json")}

    def data_params(self) -> dict[str, Any]:
        """Data preparation, flat, prefixed ``data.``."""
        return {f"data.{key}": value for key, value in self.data.model_dump(mode="json").items()}


class DecisionRule(BaseModel):
    """How probabilities become a prediction, with the cut-off tuned on validation.

    - ``threshold``: multi-label; a class is predicted when its probability reaches its
      cut-off (``thresholds`` holds one value for all classes, or one per class);
    - ``confidence``: single-label argmax; below the one cut-off the model abstains.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["threshold", "confidence"]
    thresholds: tuple[StrictFloat, ...] = Field(min_length=1)  # "0.5" is not a number

    @model_validator(mode="after")
    def _check(self) -> DecisionRule:
        for value in self.thresholds:
            if not 0.0 <= value <= 1.0:  # also refuses NaN
                raise ValueError(f"thresholds must be within [0, 1], got {value!r}")
        if self.kind == "confidence" and len(self.thresholds) != 1:
            raise ValueError("a confidence rule has one threshold")
        return self

    def cutoffs(self, num_classes: int) -> np.ndarray:
        """One cut-off per class."""
        values = np.asarray(self.thresholds, dtype=np.float64)
        return np.full(num_classes, values[0]) if len(values) == 1 else values

    @property
    def summary(self) -> float:
        """One number for the record: the cut-off, or the mean of per-class ones."""
        return float(np.mean(self.thresholds))


@dataclass(frozen=True)
class InputPolicy:
    """What a prediction payload may ask of the machine that predicts.

    The entry point that knows who sent the payload passes it down: ``tagifai
    predict`` reads files its own user names (``InputPolicy(read_files=True)``); a
    served model (``tagifai serve``, ``mlflow models serve``, any pyfunc load)
    answers anyone who can reach it, so it gets the default and a payload naming a
    file on the server is refused before any file is looked at.
    """

    read_files: bool = False  # a payload may name files of this machine (a `path` column)


SERVED_INPUTS = InputPolicy()  # a request from anyone who can connect: no files of this machine


class DataSet(Protocol):
    """A prepared data set, whatever its rows are."""

    source: str  # path or URL it was read from
    extra_source: str | None  # a second input (the text taxonomy), if any
    digest: str  # same digest, same prepared data
    classes: list[str]
    counts: dict[str, int]  # sizes from preparation, for the record


class Splits(Protocol):
    """Train / validation / test, split once, seeded and stratified."""

    @property
    def train(self) -> Any: ...
    @property
    def val(self) -> Any: ...
    @property
    def test(self) -> Any: ...
    @property
    def test_digest(self) -> str: ...


class Encoder(Protocol):
    """Turns prepared inputs into the array the network reads; JSON round trip."""

    def encode(self, inputs: list[Any]) -> np.ndarray:
        """Encode a batch of prepared inputs."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable state :meth:`Workload.load_encoder` restores."""
        ...


@dataclass
class TrainResult:
    """What a workload's training returns.

    Attributes:
        encoder: Fitted on the training split.
        model: The network with its best-validation weights, on the CPU.
        decision: The decision rule, tuned on validation.
        best_epoch: Epoch (1-based) whose weights were kept.
        epochs_run: Epochs trained before stopping.
        val_metrics: Validation metrics of the kept weights under ``decision``.
        history: One metrics dict per epoch.
        seconds: Wall time.
    """

    encoder: Encoder
    model: nn.Module
    decision: DecisionRule
    best_epoch: int
    epochs_run: int
    val_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


class Workload(Protocol):
    """One kind of data and task, from raw files to served predictions."""

    name: str  # --task value, and the name in saved models
    model_name: str  # registered model name
    params_type: type[RunParams]
    params_file: Path  # default params (config/)
    optimize_file: Path  # default study config (config/)
    best_params_file: Path  # where optimize writes the best params (config/)
    metrics: dict[str, str]  # validation metric -> direction; the first is the default
    score_metric: str  # the test metric the registry promotes on (higher is better)
    extra_option: str | None  # a second data input's CLI option (e.g. "--tags"), if any

    def default_data(self) -> tuple[str | None, str | None]:
        """The embedded sample: (data, extra) locations (``None`` for built-in data)."""
        ...

    def load_data(self, data: str | None, extra: str | None, params: RunParams) -> DataSet:
        """Read, validate and prepare a data set (raises ``TagifaiError``)."""
        ...

    def split(self, dataset: DataSet, params: RunParams) -> Splits:
        """Split once, seeded and stratified."""
        ...

    def train(
        self, params: RunParams, dataset: DataSet, splits: Splits, reporter: Any
    ) -> TrainResult:
        """Train with the architecture's method; read train and validation only."""
        ...

    def evaluate(self, predictor: Any, rows: Any) -> dict[str, Any]:
        """Metrics of a predictor on a split: ``{"overall": {...}, ...}``."""
        ...

    def load_encoder(self, state: dict[str, Any]) -> Encoder:
        """Restore an encoder from its JSON state."""
        ...

    def build_model(self, params: RunParams, encoder: Encoder, num_classes: int) -> nn.Module:
        """A fresh, untrained network for these params."""
        ...

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits to probabilities (sigmoid for multi-label, softmax for single-label)."""
        ...

    def inputs_from_raw(
        self, raw: pd.DataFrame, predictor: Any, policy: InputPolicy = SERVED_INPUTS
    ) -> list[Any]:
        """A payload's inputs, prepared for ``predictor`` within ``policy`` (the default:
        a served model's); raises ``TagifaiError`` if invalid."""
        ...

    def decide(
        self, probs: np.ndarray, classes: list[str], rule: DecisionRule, threshold: float | None
    ) -> list[dict[str, Any]]:
        """One result per row; ``threshold`` replaces the rule's cut-off(s) if given."""
        ...

    def format_results(self, results: list[dict[str, Any]]) -> pd.DataFrame:
        """The pyfunc output frame."""
        ...

    def frame_from_input(self, model_input: Any) -> pd.DataFrame:
        """A payload frame from what ``pyfunc.predict`` got instead of a frame."""
        ...

    def pip_requirements(self, params: RunParams) -> list[str]:
        """What loading and predicting a model of these params needs beyond the core's."""
        ...

    def raw_from_cli(self, inputs: list[str]) -> pd.DataFrame:
        """A payload from ``tagifai predict`` arguments (texts, image paths)."""
        ...

    def read_batch(self, path: Path) -> pd.DataFrame:
        """A payload from ``tagifai predict --file``."""
        ...

    def signature(self, default_threshold: float) -> tuple[Any, Any]:
        """The pyfunc ``ModelSignature`` and an input example (or ``None``)."""
        ...

    def mlflow_dataset(self, dataset: DataSet) -> Any:
        """The data set as an MLflow dataset (for ``mlflow.log_input``)."""
        ...

    def report(self, predictor: Any, metrics: dict[str, Any], folder: Path) -> None:
        """Write extra report files of a trained model (plots) into ``folder``."""
        ...
