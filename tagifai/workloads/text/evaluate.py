"""Evaluation: the decision threshold (validation only) and metrics (reported on test).

All metrics come from scikit-learn. ``choose_threshold`` is only ever called on
validation data; ``get_metrics`` on the test split is for reporting and feeds
nothing back into training or tuning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score, precision_recall_curve, precision_recall_fscore_support

from tagifai.workloads.text.data import label_matrix
from tagifai.workloads.text.params import TextParams

if TYPE_CHECKING:
    from tagifai.predict import Predictor

__all__ = [
    "apply_threshold",
    "choose_threshold",
    "evaluate_predictor",
    "f1_at",
    "get_metrics",
    "slice_masks",
]


def _best_f1_threshold(y_true: np.ndarray, probs: np.ndarray) -> float:
    """The probability cut-off with the highest F1 on a precision-recall curve."""
    if y_true.sum() == 0:
        return 0.5  # no positives: no curve to read, keep the neutral cut-off
    precision, recall, thresholds = precision_recall_curve(y_true, probs)
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return float(thresholds[int(np.argmax(f1[:-1]))])


def choose_threshold(y_true: np.ndarray, probs: np.ndarray, mode: str = "global") -> np.ndarray:
    """Decision threshold(s) that maximise F1 over the precision-recall curve.

    Args:
        y_true: Multi-hot labels ``(n, classes)`` of the **validation** split.
        probs: Predicted probabilities, same shape.
        mode: ``"global"``: one cut-off for every class (micro-averaged curve);
            ``"per_class"``: one cut-off per class, the global one for classes
            with no positive example.

    Returns:
        One threshold per class (all equal in global mode).
    """
    global_cut = _best_f1_threshold(y_true.ravel(), probs.ravel())
    if mode == "global":
        return np.full(y_true.shape[1], global_cut, dtype=np.float64)
    cuts = [
        _best_f1_threshold(y_true[:, j], probs[:, j]) if y_true[:, j].any() else global_cut
        for j in range(y_true.shape[1])
    ]
    return np.asarray(cuts, dtype=np.float64)


def apply_threshold(probs: np.ndarray, threshold: np.ndarray | float) -> np.ndarray:
    """Multi-hot predictions: ``probs >= threshold`` (per class if an array)."""
    return (probs >= np.asarray(threshold)).astype(np.int64)


def f1_at(y_true: np.ndarray, y_pred: np.ndarray, average: str = "weighted") -> float:
    """F1 score of multi-hot predictions (0 where undefined)."""
    return float(f1_score(y_true, y_pred, average=average, zero_division=0))


def _scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    weighted = precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    micro = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    return {
        "precision": float(weighted[0]),
        "recall": float(weighted[1]),
        "f1": float(weighted[2]),
        "micro_precision": float(micro[0]),
        "micro_recall": float(micro[1]),
        "micro_f1": float(micro[2]),
        "num_samples": len(y_true),
    }


def slice_masks(
    texts: Sequence[str], y_true: np.ndarray, short_words: int
) -> dict[str, np.ndarray]:
    """Boolean row masks of the evaluation slices.

    Args:
        texts: Prepared texts of the rows.
        y_true: Multi-hot labels of the rows.
        short_words: Texts with at most this many words are "short".

    Returns:
        ``short_text``, ``long_text`` (over 4x the short length) and
        ``multi_tag`` (3 or more true tags).
    """
    words = np.asarray([len(text.split()) for text in texts])
    return {
        "short_text": words <= short_words,
        "long_text": words > 4 * short_words,
        "multi_tag": y_true.sum(axis=1) >= 3,
    }


def get_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: Sequence[str],
    slices: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Overall (weighted and micro), per-class and per-slice metrics.

    Args:
        y_true: Multi-hot labels.
        y_pred: Multi-hot predictions.
        classes: Class names, in column order.
        slices: Optional name -> row mask; empty slices are reported with 0 samples.

    Returns:
        ``{"overall": {...}, "class": {name: {...}}, "slices": {name: {...}}}``.
    """
    per_class = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    metrics: dict[str, Any] = {"overall": _scores(y_true, y_pred), "class": {}, "slices": {}}
    for j, name in enumerate(classes):
        metrics["class"][name] = {
            "precision": float(per_class[0][j]),
            "recall": float(per_class[1][j]),
            "f1": float(per_class[2][j]),
            "num_samples": int(per_class[3][j]),
        }
    for name, mask in (slices or {}).items():
        if mask.any():
            metrics["slices"][name] = _scores(y_true[mask], y_pred[mask])
        else:
            metrics["slices"][name] = {"num_samples": 0}
    return metrics


def metrics_frame(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per-class metrics as a table (for printing and benchmarks)."""
    return pd.DataFrame.from_dict(metrics["class"], orient="index").sort_values("f1")


def evaluate_predictor(predictor: Predictor, frame: pd.DataFrame) -> dict[str, Any]:
    """Metrics of a trained predictor on a prepared split (the test split, for reporting).

    Args:
        predictor: Trained model with its validation-tuned threshold.
        frame: A prepared split (``text``/``tags`` rows).

    Returns:
        :func:`get_metrics` output, slices included.
    """
    inputs = frame["text"].tolist()
    classes = predictor.classes
    y_true = label_matrix(frame["tags"].tolist(), classes)
    cutoffs = predictor.decision.cutoffs(len(classes))
    y_pred = apply_threshold(predictor.predict_proba(inputs), cutoffs)
    params = predictor.params
    assert isinstance(params, TextParams)
    slices = slice_masks(inputs, y_true, params.data.short_text_words)
    return get_metrics(y_true, y_pred, classes, slices)
