"""Text tagging: a project's title + description in, its tags out (multi-label).

The Made-With-ML ``tagifai`` project: read and prepare ``projects.json`` (and a
``tags.json`` taxonomy), three architectures (``linear``, ``ngram``, ``cnn``), a
decision threshold tuned on validation, weighted F1. Training and evaluation
modules are imported only when used: predicting imports neither optuna nor
scikit-learn.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from tagifai.config import CONFIG_DIR, SAMPLE_DATA_DIR
from tagifai.errors import TagifaiError
from tagifai.workloads.base import (
    SERVED_INPUTS,
    DecisionRule,
    Encoder,
    InputPolicy,
    TrainResult,
)
from tagifai.workloads.text import data, encoders, models
from tagifai.workloads.text.params import TextParams

__all__ = ["WORKLOAD", "TextWorkload"]

INPUT_COLUMNS = ("text", "title", "description")


class TextWorkload:
    """Multi-label tagging of project texts (see :class:`~tagifai.workloads.base.Workload`)."""

    name = "text"
    model_name = "tagifai"
    params_type = TextParams
    params_file = CONFIG_DIR / "params.json"
    optimize_file = CONFIG_DIR / "optimize.yaml"
    best_params_file = CONFIG_DIR / "best_params.json"
    # Weighted F1 at the threshold tuned on validation, micro F1, and the loss.
    metrics: ClassVar[dict[str, str]] = {
        "val_f1": "maximize",
        "val_f1_micro": "maximize",
        "val_loss": "minimize",
    }
    score_metric = "f1"  # weighted test F1
    extra_option = "--tags"

    def default_data(self) -> tuple[str | None, str | None]:
        """The shipped sample: 420 projects written for this project, and its taxonomy."""
        return str(SAMPLE_DATA_DIR / "projects.json"), str(SAMPLE_DATA_DIR / "tags.json")

    def load_data(self, location: str | None, extra: str | None, params: Any) -> data.Dataset:
        """Read projects (and the optional taxonomy) and prepare them."""
        if location is None:
            location, extra = self.default_data()
        assert location is not None
        prep = params.data
        projects = data.load_projects(location)
        taxonomy = data.load_taxonomy(extra, strict_parents=prep.add_parent_tags) if extra else None
        dataset = data.prepare(projects, taxonomy, prep, source=str(location))
        return data.Dataset(**{**dataset.__dict__, "extra_source": extra})

    def split(self, dataset: Any, params: Any) -> data.Splits:
        """Multi-label stratified train / validation / test split."""
        return data.split(dataset, params.data, params.seed)

    def train(self, params: Any, dataset: Any, splits: Any, reporter: Any) -> TrainResult:
        """Fit with the architecture's method (L-BFGS for linear, minibatch otherwise)."""
        from tagifai.workloads.text import training

        return training.train(params, dataset, splits, reporter)

    def evaluate(self, predictor: Any, rows: pd.DataFrame) -> dict[str, Any]:
        """Weighted and micro scores, per tag and per slice, at the tuned threshold."""
        from tagifai.workloads.text import evaluate

        return evaluate.evaluate_predictor(predictor, rows)

    def load_encoder(self, state: dict[str, Any]) -> Encoder:
        """A tokenizer or an n-gram vocabulary."""
        return encoders.load_encoder(state)

    def build_model(self, params: Any, encoder: Encoder, num_classes: int) -> nn.Module:
        """The network of ``params.model.architecture``."""
        return models.build_model(params, encoder, num_classes)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """One independent probability per tag."""
        return torch.sigmoid(logits)

    def inputs_from_raw(
        self, raw: pd.DataFrame, predictor: Any, policy: InputPolicy = SERVED_INPUTS
    ) -> list[Any]:
        """Cleaned texts of a ``text`` or ``title``/``description`` payload (no payload
        names a file, whatever ``policy`` allows)."""
        return encoders.clean_payload(raw, predictor.params.data)

    def decide(
        self, probs: np.ndarray, classes: list[str], rule: DecisionRule, threshold: float | None
    ) -> list[dict[str, Any]]:
        """Tags at or over their cut-off, sorted by probability, and every probability."""
        cut = rule.cutoffs(len(classes)) if threshold is None else np.full(len(classes), threshold)
        results = []
        for row in probs:
            order = np.argsort(-row)
            results.append(
                {
                    "tags": [classes[j] for j in order if row[j] >= cut[j]],
                    "probabilities": {classes[j]: round(float(row[j]), 6) for j in order},
                }
            )
        return results

    def format_results(self, results: list[dict[str, Any]]) -> pd.DataFrame:
        """``tags`` lists and ``probabilities`` as objects of tag -> probability."""
        return pd.DataFrame(
            {
                "tags": [result["tags"] for result in results],
                "probabilities": [result["probabilities"] for result in results],
            }
        )

    def frame_from_input(self, model_input: Any) -> pd.DataFrame:
        """A string, or a list, array or series of strings, as a ``text`` column."""
        if isinstance(model_input, str):
            return pd.DataFrame({"text": [model_input]})
        if isinstance(model_input, list | tuple | np.ndarray | pd.Series):
            return pd.DataFrame({"text": list(model_input)})
        raise TagifaiError(f"input: expected texts, got {type(model_input).__name__}")

    def pip_requirements(self, params: Any) -> list[str]:
        """scikit-learn for its stopword list, when the model drops stopwords."""
        return ["scikit-learn"] if params.data.stopwords else []

    def raw_from_cli(self, inputs: list[str]) -> pd.DataFrame:
        """Texts given on the command line."""
        return pd.DataFrame({"text": inputs})

    def read_batch(self, path: Path) -> pd.DataFrame:
        """A CSV or JSONL file of ``text`` or ``title``/``description`` rows."""
        return data.read_batch(path)

    def signature(self, default_threshold: float) -> tuple[Any, Any]:
        """Text columns in; tags and a JSON object of probabilities out; a threshold param."""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import (
            Array,
            ColSpec,
            DataType,
            Map,
            ParamSchema,
            ParamSpec,
            Schema,
        )

        signature = ModelSignature(
            # Either a text column, or title and/or description columns.
            inputs=Schema(
                [ColSpec(DataType.string, name, required=False) for name in INPUT_COLUMNS]
            ),
            outputs=Schema(
                [
                    ColSpec(Array(DataType.string), "tags"),
                    ColSpec(Map(DataType.double), "probabilities"),  # tag -> probability
                ]
            ),
            # No default: an absent threshold means the tuned cut-off(s).
            params=ParamSchema([ParamSpec("threshold", DataType.double, None)]),
        )
        example = pd.DataFrame(
            {"text": ["Transformers for text classification with PyTorch", "Detecting objects"]}
        )
        return signature, example

    def mlflow_dataset(self, dataset: Any) -> Any:
        """The prepared projects, with their digest and source."""
        import mlflow.data

        frame = dataset.frame.assign(
            id=dataset.frame["id"].astype("float64"),  # MLflow schemas want nullable numbers
            tags=dataset.frame["tags"].map(json.dumps),
        )
        source = dataset.source if "://" in dataset.source else str(Path(dataset.source).resolve())
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice and warns the path is ambiguous.
            warnings.filterwarnings("ignore", message="The specified dataset source")
            return mlflow.data.from_pandas(  # type: ignore[attr-defined]
                frame, source=source, targets="tags", name="projects", digest=dataset.digest
            )

    def report(self, predictor: Any, metrics: dict[str, Any], folder: Path) -> None:
        """Nothing beyond ``performance.json`` (per-tag and per-slice scores are in it)."""


WORKLOAD = TextWorkload()
