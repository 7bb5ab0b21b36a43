"""Image classification with torchvision: a grey image in, its class out (single-label).

Data: scikit-learn's bundled 8x8 digits by default (no files), MNIST-style IDX
folders (FashionMNIST, MNIST) or an ImageFolder tree. Three architectures (an MLP,
a small CNN, torchvision's ResNet-18), validation accuracy as the study's metric,
and a confidence threshold tuned on validation below which predict abstains.
Training and evaluation modules are imported only when used: predicting imports
neither optuna nor scikit-learn.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from tagifai.config import CONFIG_DIR
from tagifai.errors import TagifaiError
from tagifai.workloads.base import (
    SERVED_INPUTS,
    DecisionRule,
    Encoder,
    InputPolicy,
    TrainResult,
)
from tagifai.workloads.images import data, models, payload
from tagifai.workloads.images.params import ImagesParams

__all__ = ["WORKLOAD", "ImagesWorkload"]


class ImagesWorkload:
    """Single-label image classification (see :class:`~tagifai.workloads.base.Workload`)."""

    name = "images"
    model_name = "tagifai-images"
    params_type = ImagesParams
    params_file = CONFIG_DIR / "params-images.json"
    optimize_file = CONFIG_DIR / "optimize-images.yaml"
    best_params_file = CONFIG_DIR / "best_params-images.json"
    metrics: ClassVar[dict[str, str]] = {"val_accuracy": "maximize", "val_loss": "minimize"}
    score_metric = "accuracy"  # test accuracy of the argmax
    extra_option = None

    def default_data(self) -> tuple[str | None, str | None]:
        """scikit-learn's bundled digits: no files needed."""
        return None, None

    def load_data(self, location: str | None, extra: str | None, params: Any) -> data.ImageData:
        """Read and check the images (digits when ``location`` is ``None``)."""
        if extra:
            raise TagifaiError(f"{extra}: the images task takes no second input (--tags)")
        if location == data.DIGITS_SOURCE:
            location = None
        return data.load_images(location, params.data.image_size)

    def split(self, dataset: Any, params: Any) -> data.ImageSplits:
        """Stratified validation (and test, without an official one) carved from training."""
        return data.split_images(dataset, params.data.val_size, params.data.test_size, params.seed)

    def train(self, params: Any, dataset: Any, splits: Any, reporter: Any) -> TrainResult:
        """Minibatch training with the architecture's network."""
        from tagifai.workloads.images import training

        return training.train(params, dataset, splits, reporter)

    def evaluate(self, predictor: Any, rows: data.ImageSet) -> dict[str, Any]:
        """Accuracy, macro F1, per-class accuracy, confusion matrix, abstention."""
        from tagifai.workloads.images import evaluate

        return evaluate.evaluate_predictor(predictor, rows)

    def load_encoder(self, state: dict[str, Any]) -> Encoder:
        """The pixel encoder (input size and normalisation)."""
        return models.ImageEncoder.from_dict(state)

    def build_model(self, params: Any, encoder: Encoder, num_classes: int) -> nn.Module:
        """The network of ``params.model.architecture``."""
        return models.build_model(params, encoder, num_classes)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes."""
        return models.probabilities(logits)

    def inputs_from_raw(
        self, raw: pd.DataFrame, predictor: Any, policy: InputPolicy = SERVED_INPUTS
    ) -> list[Any]:
        """Grey images at the model's size from an ``image`` payload, or a ``path`` one
        where ``policy`` lets the payload name files, conformed to the training images
        (blank ones refused, low-contrast ones stretched, polarity matched)."""
        encoder = predictor.encoder
        return payload.images_from_frame(
            raw,
            (encoder.height, encoder.width),
            allow_paths=policy.read_files,
            background=encoder.background,
        )

    def decide(
        self, probs: np.ndarray, classes: list[str], rule: DecisionRule, threshold: float | None
    ) -> list[dict[str, Any]]:
        """The most probable class, or ``None`` (abstain) below the confidence cut-off."""
        cut = rule.thresholds[0] if threshold is None else threshold
        results = []
        for row in probs:
            best = int(np.argmax(row))
            confident = bool(row[best] >= cut)
            results.append(
                {
                    "class": classes[best] if confident else None,
                    "probability": round(float(row[best]), 6),
                    "probabilities": {
                        classes[j]: round(float(row[j]), 6) for j in np.argsort(-row)
                    },
                }
            )
        return results

    def format_results(self, results: list[dict[str, Any]]) -> pd.DataFrame:
        """``class`` (None when abstaining), its ``probability``, and ``probabilities`` as
        an object of class -> probability."""
        return pd.DataFrame(
            {
                "class": [result["class"] for result in results],
                "probability": [result["probability"] for result in results],
                "probabilities": [result["probabilities"] for result in results],
            }
        )

    def frame_from_input(self, model_input: Any) -> pd.DataFrame:
        """Image bytes or base64, one grey image ``(H, W)`` or a stack ``(N, H, W)`` of
        uint8, or a list of any of these, as an ``image`` column."""
        if isinstance(model_input, str | bytes):
            return pd.DataFrame({"image": [model_input]})
        if isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8:
            images = model_input[None] if model_input.ndim == 2 else model_input
            return pd.DataFrame({"image": list(images)})
        if isinstance(model_input, list | tuple | pd.Series):
            return pd.DataFrame({"image": list(model_input)})
        raise TagifaiError(f"input: expected images, got {type(model_input).__name__}")

    def pip_requirements(self, params: Any) -> list[str]:
        """torchvision (ResNet-18) and Pillow (decoding images)."""
        return ["torchvision==0.29.1", "pillow"]

    def raw_from_cli(self, inputs: list[str]) -> pd.DataFrame:
        """Image files given on the command line."""
        return pd.DataFrame({"path": inputs})

    def read_batch(self, path: Path) -> pd.DataFrame:
        """A text file of image paths, one a line."""
        return payload.read_path_list(path)

    def signature(self, default_threshold: float) -> tuple[Any, Any]:
        """Image bytes (base64 in JSON) or paths in; class and probabilities out."""
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, DataType, Map, ParamSchema, ParamSpec, Schema

        signature = ModelSignature(
            inputs=Schema(
                [
                    ColSpec(DataType.binary, "image", required=False),
                    ColSpec(DataType.string, "path", required=False),
                ]
            ),
            outputs=Schema(
                [
                    ColSpec(DataType.string, "class", required=False),  # None: abstained
                    ColSpec(DataType.double, "probability"),
                    ColSpec(Map(DataType.double), "probabilities"),
                ]
            ),
            # No default: an absent threshold means the tuned confidence cut-off.
            params=ParamSchema([ParamSpec("threshold", DataType.double, None)]),
        )
        return signature, None

    def mlflow_dataset(self, dataset: data.ImageData) -> Any:
        """The training images, with their digest and source."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource

        source: Any = str(Path(dataset.source).resolve())
        if dataset.source == data.DIGITS_SOURCE:  # made by code, not read from a file
            source = CodeDatasetSource(tags={"loader": "sklearn.datasets.load_digits"})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return mlflow.data.from_numpy(  # type: ignore[attr-defined]
                dataset.train.images,
                targets=dataset.train.labels,
                source=source,
                name=Path(dataset.source).name or "images",
                digest=dataset.digest,
            )

    def report(self, predictor: Any, metrics: dict[str, Any], folder: Path) -> None:
        """The test confusion matrix as a PNG."""
        from tagifai.workloads.images import evaluate

        evaluate.confusion_png(metrics["confusion"], predictor.classes, folder / "confusion.png")


WORKLOAD = ImagesWorkload()
