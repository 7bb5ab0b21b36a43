"""Prediction: a trained model as files, and the MLflow pyfunc wrapper around it.

A :class:`Predictor` is saved as plain files, never as a pickled torch module:

- ``params.json``: the training params plus the decision threshold(s);
- ``encoder.json``: the tokenizer or n-gram vocabulary state;
- ``label_encoder.json``: class names in logit order;
- ``model.pt``: the network's ``state_dict`` (tensors only, loaded with
  ``weights_only=True``).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from torch import nn

from tagifai.config import Params
from tagifai.errors import TagifaiError
from tagifai.files import write_json_atomic
from tagifai.task import Encoder, get_task

__all__ = [
    "PREDICT_BATCH_SIZE",
    "Predictor",
    "TagifaiPyfunc",
    "read_batch",
]

PREDICT_BATCH_SIZE = 512  # rows per forward pass when predicting


def read_batch(path: Path) -> pd.DataFrame:
    """Read a CSV or JSONL batch of inputs (``text`` or ``title``/``description``).

    Raises:
        TagifaiError: If the file is missing, not UTF-8 or not valid CSV/JSONL.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TagifaiError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise TagifaiError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if path.suffix.lower() == ".csv":
        try:
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise TagifaiError(f"{path}: invalid CSV ({str(exc).splitlines()[0]})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TagifaiError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
        if isinstance(row, str):
            row = {"text": row}
        if not isinstance(row, dict):
            raise TagifaiError(f"{path}: line {number}: expected an object or a string")
        rows.append(row)
    if not rows:
        raise TagifaiError(f"{path}: no inputs in file")
    return pd.DataFrame(rows)


class Predictor:
    """A trained model with everything needed to go from raw input to tags.

    Args:
        params: Params it was trained with.
        classes: Class names in logit order.
        encoder: Fitted encoder of the task.
        model: The network, with its best-validation weights.
        threshold: Decision threshold per class, chosen on validation.
    """

    def __init__(
        self,
        params: Params,
        classes: list[str],
        encoder: Encoder,
        model: nn.Module,
        threshold: np.ndarray,
    ) -> None:
        self.params = params
        self.classes = list(classes)
        self.encoder = encoder
        self.model = model.eval()
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.task = get_task(params.task)

    @property
    def default_threshold(self) -> float:
        """One number for the tuned threshold (the mean of per-class ones)."""
        return float(self.threshold.mean())

    def predict_proba(self, inputs: list[Any]) -> np.ndarray:
        """Probabilities ``(len(inputs), classes)`` for prepared inputs."""
        device = next(self.model.parameters()).device
        out = []
        with torch.inference_mode():
            for start in range(0, len(inputs), PREDICT_BATCH_SIZE):
                ids = torch.from_numpy(
                    self.encoder.encode(inputs[start : start + PREDICT_BATCH_SIZE])
                )
                out.append(torch.sigmoid(self.model(ids.to(device))).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(out)

    def predict(self, raw: pd.DataFrame, threshold: float | None = None) -> list[dict[str, Any]]:
        """Tags and per-tag probabilities for a payload of raw inputs.

        Args:
            raw: Rows with a ``text`` column or ``title``/``description`` columns.
            threshold: One cut-off for every tag instead of the tuned one(s).

        Returns:
            One ``{"tags": [...], "probabilities": {tag: p}}`` per row, tags
            sorted by probability.

        Raises:
            TagifaiError: If the payload or the threshold is invalid.
        """
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
            raise TagifaiError(f"threshold: must be within [0, 1], got {threshold!r}")
        probs = self.predict_proba(self.task.inputs_from_raw(raw, self.params))
        cut = self.threshold if threshold is None else np.full(len(self.classes), float(threshold))
        results = []
        for row in probs:
            order = np.argsort(-row)
            results.append(
                {
                    "tags": [self.classes[j] for j in order if row[j] >= cut[j]],
                    "probabilities": {self.classes[j]: round(float(row[j]), 6) for j in order},
                }
            )
        return results

    def save(self, directory: Path | str) -> Path:
        """Write the four files into ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            directory / "params.json",
            {"params": self.params.model_dump(mode="json"), "threshold": self.threshold.tolist()},
        )
        write_json_atomic(directory / "encoder.json", self.encoder.to_dict(), indent=None)
        write_json_atomic(directory / "label_encoder.json", {"classes": self.classes})
        state = {key: value.detach().cpu() for key, value in self.model.state_dict().items()}
        torch.save(state, directory / "model.pt")
        return directory

    @classmethod
    def load(cls, directory: Path | str, device: str = "cpu") -> Predictor:
        """Rebuild a predictor from :meth:`save`'s files (no pickled code is run)."""
        directory = Path(directory)
        try:
            stored = json.loads((directory / "params.json").read_text(encoding="utf-8"))
            encoder_state = json.loads((directory / "encoder.json").read_text(encoding="utf-8"))
            labels = json.loads((directory / "label_encoder.json").read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise TagifaiError(f"{exc.filename}: model file missing") from None
        params = Params.model_validate(stored["params"])
        task = get_task(params.task)
        encoder = task.load_encoder(encoder_state)
        model = task.build_model(params, encoder, num_classes=len(labels["classes"]))
        state = torch.load(directory / "model.pt", map_location=device, weights_only=True)
        model.load_state_dict(state)
        return cls(
            params, labels["classes"], encoder, model.to(device), np.asarray(stored["threshold"])
        )


class TagifaiPyfunc(PythonModel):
    """MLflow pyfunc flavour: loads the files of a :class:`Predictor` in ``load_context``.

    Input: a frame with a ``text`` column or ``title``/``description`` columns
    (or a list of strings). Output: a frame with ``tags`` (list of str) and
    ``probabilities`` (JSON object string of tag -> probability). The
    ``threshold`` param overrides the tuned cut-off per request. A bad payload
    raises ``MlflowException``: the model server answers 400 with MLflow's
    "Failed to predict data '<the rows>'" and this project's one-line reason.
    """

    def load_context(self, context: Any) -> None:
        """Load the predictor from the model's ``predictor`` artifact folder."""
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        self.predictor = Predictor.load(context.artifacts["predictor"])

    # A DataFrame hint: MLflow then validates against the logged signature only.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Tags for each input row."""
        if isinstance(model_input, list | tuple | np.ndarray | pd.Series):
            model_input = pd.DataFrame({"text": list(model_input)})
        elif isinstance(model_input, str):
            model_input = pd.DataFrame({"text": [model_input]})
        threshold = (params or {}).get("threshold")
        if (
            threshold is not None
            and abs(float(threshold) - self.predictor.default_threshold) < 1e-9
        ):
            threshold = None  # the signature's default: keep the tuned (per-class) cut-offs
        try:
            results = self.predictor.predict(model_input, threshold=threshold)
        except TagifaiError as exc:
            # MLflow's scoring server answers an MlflowException with its message and a
            # 400; any other exception becomes a generic message and a stack trace.
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        return self.format_results(results)

    @staticmethod
    def format_results(results: list[dict[str, Any]]) -> pd.DataFrame:
        """The output frame: ``tags`` lists and ``probabilities`` as JSON strings."""
        return pd.DataFrame(
            {
                "tags": [result["tags"] for result in results],
                "probabilities": [json.dumps(result["probabilities"]) for result in results],
            }
        )
