"""Image metrics (reported on test) and the confusion-matrix picture of a trained model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from sklearn.metrics import confusion_matrix, f1_score

from tagifai.workloads.images.data import ImageSet

logger = logging.getLogger(__name__)

__all__ = ["MAX_PICTURE_CLASSES", "confusion_png", "evaluate_predictor", "get_metrics"]

# 36-pixel cells with a 120-pixel margin: 50 classes make a 1,930-pixel square (11 MB of RGB),
# and past that the cells are too many to read anyway; performance.json keeps every count.
MAX_PICTURE_CLASSES = 50
_CELL, _MARGIN = 36, 120  # pixels per cell; room for the class names


def get_metrics(
    labels: np.ndarray, probs: np.ndarray, classes: list[str], cut: float
) -> dict[str, Any]:
    """Accuracy (argmax), macro F1, per-class accuracy, the confusion matrix, and how the
    abstaining rule does: the share of images it answers and its accuracy on them.

    Args:
        labels: True classes.
        probs: Predicted probabilities ``(n, classes)``.
        classes: Class names.
        cut: The decision rule's confidence threshold.

    Returns:
        ``{"overall": {...}, "class": {name: {...}}, "confusion": [[...]]}``.
    """
    predicted = probs.argmax(axis=1)
    correct = predicted == labels
    kept = probs.max(axis=1) >= cut
    matrix = confusion_matrix(labels, predicted, labels=list(range(len(classes))))
    overall = {
        "accuracy": float(correct.mean()),
        "macro_f1": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "coverage": float(kept.mean()),
        "accuracy_answered": float(correct[kept].mean()) if kept.any() else 0.0,
        "num_samples": len(labels),
    }
    per_class = {}
    for j, name in enumerate(classes):
        total = int(matrix[j].sum())
        per_class[name] = {
            "accuracy": float(matrix[j, j] / total) if total else 0.0,
            "num_samples": total,
        }
    return {"overall": overall, "class": per_class, "confusion": matrix.tolist()}


def evaluate_predictor(predictor: Any, images: ImageSet) -> dict[str, Any]:
    """Metrics of a trained predictor on a split (the test split, for reporting)."""
    probs = predictor.predict_proba(list(images.images))
    return get_metrics(images.labels, probs, predictor.classes, predictor.decision.thresholds[0])


def confusion_png(matrix: list[list[int]], classes: list[str], path: Path) -> bool:
    """Draw the confusion matrix (rows: true class, columns: predicted) as a PNG.

    Args:
        matrix: Counts, ``len(classes)`` rows of ``len(classes)``.
        classes: Class names, in label order.
        path: Where the PNG goes.

    Returns:
        Whether it was drawn: not over :data:`MAX_PICTURE_CLASSES` classes, so the picture
        is at most 1,930 pixels a side whatever the class count.
    """
    n = len(classes)
    if n > MAX_PICTURE_CLASSES:
        logger.info(
            "%s not drawn: %d classes is over %d (performance.json has the counts)",
            path.name,
            n,
            MAX_PICTURE_CLASSES,
        )
        return False
    cell, margin = _CELL, _MARGIN
    size = (margin + n * cell + 10, margin + n * cell + 10)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    counts = np.asarray(matrix, dtype=np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    draw.text((margin, 8), "predicted ->", fill="black")
    draw.text((8, margin - 24), "true", fill="black")
    for i, name in enumerate(classes):
        draw.text((8, margin + i * cell + cell // 3), name[:18], fill="black")
        draw.text((margin + i * cell + 4, margin - 16), name[:5], fill="black")
        for j in range(n):
            shade = int(255 * (1 - share[i, j]))
            box = (
                margin + j * cell,
                margin + i * cell,
                margin + (j + 1) * cell - 1,
                margin + (i + 1) * cell - 1,
            )
            draw.rectangle(box, fill=(shade, shade, 255), outline="grey")
            text = "black" if share[i, j] < 0.5 else "white"
            draw.text((box[0] + 4, box[1] + cell // 3), str(int(counts[i, j])), fill=text)
    image.save(path, format="PNG")
    return True
