"""Prediction: a trained model as plain files, whatever its workload.

A :class:`Predictor` is saved as files, never as a pickled torch module:

- ``predictor.json``: the model format, the workload (``task``), its params, the
  class names in logit order and the decision rule tuned on validation;
- ``encoder.json``: the workload's encoder state (vocabulary, image size, ...);
- ``model.pt``: the network's ``state_dict`` (tensors only, loaded with
  ``weights_only=True``).

Nothing here imports optuna or scikit-learn: this is the serving path.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tagifai.config import validate
from tagifai.errors import ModelTooLarge, TagifaiError
from tagifai.files import write_json_atomic
from tagifai.training import build_bounded
from tagifai.workloads import get_workload
from tagifai.workloads.base import (
    SERVED_INPUTS,
    DecisionRule,
    Encoder,
    InputPolicy,
    RunParams,
)

__all__ = ["MODEL_FORMAT", "PREDICT_BATCH_SIZE", "Predictor"]

MODEL_FORMAT = 2  # 1: tagifai 0.1 (flat text params, no workload); 2: workloads
PREDICT_BATCH_SIZE = 512  # rows per forward pass when predicting
MAX_MODEL_JSON_BYTES = 256 * 1024 * 1024  # an encoder's vocabulary is a few MB
MODEL_FILE_SLACK_BYTES = 1024 * 1024  # model.pt's names and framing, beyond its tensors' bytes


class Predictor:
    """A trained model with everything needed to go from a raw payload to predictions.

    Args:
        params: Params it was trained with (the workload's type).
        classes: Class names in logit order.
        encoder: Fitted encoder of the workload.
        model: The network, with its best-validation weights.
        decision: The decision rule tuned on validation.
    """

    def __init__(
        self,
        params: RunParams,
        classes: list[str],
        encoder: Encoder,
        model: nn.Module,
        decision: DecisionRule,
    ) -> None:
        self.params = params
        self.classes = list(classes)
        self.encoder = encoder
        self.model = model.eval()
        self.decision = decision
        self.workload = get_workload(params.task)

    def predict_proba(self, inputs: list[Any]) -> np.ndarray:
        """Probabilities ``(len(inputs), classes)`` for prepared inputs."""
        device = next(self.model.parameters()).device
        out = []
        with torch.inference_mode():
            for start in range(0, len(inputs), PREDICT_BATCH_SIZE):
                x = torch.from_numpy(
                    self.encoder.encode(inputs[start : start + PREDICT_BATCH_SIZE])
                )
                out.append(self.workload.probabilities(self.model(x.to(device))).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(out)

    def predict(
        self,
        raw: pd.DataFrame,
        threshold: float | None = None,
        policy: InputPolicy = SERVED_INPUTS,
    ) -> list[dict[str, Any]]:
        """Predictions for a payload of raw inputs.

        Args:
            raw: The workload's payload frame (texts, images).
            threshold: One cut-off instead of the tuned rule's (``None``: the tuned one).
            policy: What the payload may ask of this machine; the default is a served
                model's (it names no files here). The entry point that knows who sent
                the payload passes its own.

        Returns:
            One result per row (the workload's shape).

        Raises:
            TagifaiError: If the payload or the threshold is invalid.
        """
        if threshold is not None and not 0.0 <= float(threshold) <= 1.0:  # NaN fails too
            raise TagifaiError(f"threshold: must be within [0, 1], got {threshold!r}")
        probs = self.predict_proba(self.workload.inputs_from_raw(raw, self, policy))
        return self.workload.decide(probs, self.classes, self.decision, threshold)

    def save(self, directory: Path | str) -> Path:
        """Write the three files into ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            directory / "predictor.json",
            {
                "format": MODEL_FORMAT,
                "task": self.params.task,
                "params": self.params.model_dump(mode="json"),
                "classes": self.classes,
                "decision": self.decision.model_dump(mode="json"),
            },
        )
        write_json_atomic(directory / "encoder.json", self.encoder.to_dict(), indent=None)
        state = {key: value.detach().cpu() for key, value in self.model.state_dict().items()}
        torch.save(state, directory / "model.pt")
        return directory

    @classmethod
    def load(cls, directory: Path | str, device: str = "cpu") -> Predictor:
        """Rebuild a predictor from :meth:`save`'s files (no pickled code is run).

        Every value read is checked as training checks it before anything is allocated:
        params within their bounds, the network within training's parameter bound
        (built on the meta device first), distinct class names as many as the decision
        rule's thresholds, and weights of exactly the network's names and shapes.

        Raises:
            TagifaiError: If a file is missing or not as :meth:`save` writes it (one line
                naming the file and the value), or the model was saved in another format.
        """
        directory = Path(directory)
        if not (directory / "predictor.json").is_file() and (directory / "params.json").is_file():
            raise TagifaiError(
                f"{directory}: a model of tagifai 0.1 (model format 1); this tagifai reads "
                f"format {MODEL_FORMAT}: train it again (`make train-best`)"
            )
        stored = _read_json(directory / "predictor.json")
        if stored.get("format") != MODEL_FORMAT:
            raise TagifaiError(
                f"{directory / 'predictor.json'}: model format {stored.get('format')!r:.20}; "
                f"this tagifai reads format {MODEL_FORMAT}"
            )
        workload = get_workload(str(stored.get("task")))
        source = str(directory / "predictor.json")
        params = validate(workload.params_type, stored.get("params"), source)
        decision = validate(DecisionRule, stored.get("decision"), source)
        classes = _check_classes(stored.get("classes"), decision, source)
        try:
            encoder = workload.load_encoder(_read_json(directory / "encoder.json"))
            # The bound training has: no network over MAX_PARAMETERS is ever allocated.
            model = build_bounded(
                lambda: workload.build_model(params, encoder, num_classes=len(classes))
            )
        except ValueError as exc:  # a value no fitted encoder has
            raise TagifaiError(f"{directory / 'encoder.json'}: {exc}") from None
        except (AssertionError, AttributeError, KeyError, TypeError):
            raise TagifaiError(
                f"{directory / 'encoder.json'}: not an encoder for architecture "
                f"{params.model.architecture!r}"
            ) from None
        except ModelTooLarge as exc:
            raise TagifaiError(f"{source}: {exc}") from None
        _load_weights(model, directory / "model.pt", device)
        return cls(params, classes, encoder, model.to(device), decision)


def _check_classes(classes: Any, decision: DecisionRule, source: str) -> list[str]:
    """The class names of a saved predictor: distinct names, as many as the rule needs."""
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise TagifaiError(f"{source}: classes: expected a non-empty list of names")
    seen: set[str] = set()
    for name in classes:
        if name in seen:
            raise TagifaiError(f"{source}: classes: {name!r:.80} appears twice")
        seen.add(name)
    count = len(decision.thresholds)
    if count not in (1, len(classes)):
        raise TagifaiError(
            f"{source}: decision: {count} thresholds for {len(classes)} classes "
            "(one for all, or one per class)"
        )
    return list(classes)


def _load_weights(model: nn.Module, path: Path, device: str) -> None:
    """Load a ``state_dict`` of plain tensors (``weights_only``: no pickled code runs) whose
    names and shapes are exactly the model's."""
    expected = model.state_dict()
    limit = MODEL_FILE_SLACK_BYTES + sum(t.numel() * t.element_size() for t in expected.values())
    try:
        if path.stat().st_size > limit:
            raise TagifaiError(f"{path}: larger than the {limit:,} bytes of its network's weights")
        state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise TagifaiError(f"{path}: model file missing") from None
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        # weights_only refuses anything but tensors and plain containers: no code runs.
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise TagifaiError(f"{path}: not a file of plain weights ({reason})") from None
    if not isinstance(state, dict):
        raise TagifaiError(f"{path}: expected a state_dict, got a {type(state).__name__}")
    for key, tensor in expected.items():
        value = state.get(key)
        if not isinstance(value, torch.Tensor):
            raise TagifaiError(f"{path}: {key!r:.80}: missing")
        if value.shape != tensor.shape:
            raise TagifaiError(
                f"{path}: {key!r:.80}: shape {tuple(value.shape)}, the network's is "
                f"{tuple(tensor.shape)}"
            )
    extra = sorted(str(key) for key in state if key not in expected)
    if extra:
        raise TagifaiError(f"{path}: {extra[0]!r:.80}: not a weight of the network")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # e.g. a dtype torch cannot copy
        raise TagifaiError(f"{path}: {str(exc).strip().splitlines()[0][:200]}") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_MODEL_JSON_BYTES:
            raise TagifaiError(f"{path}: larger than {MAX_MODEL_JSON_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TagifaiError(f"{path}: model file missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TagifaiError(f"{path}: not a JSON model file") from None
    if not isinstance(data, dict):
        raise TagifaiError(f"{path}: expected a JSON object")
    return data
