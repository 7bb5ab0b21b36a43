"""Image training: minibatch cross-entropy, validation accuracy, best weights kept.

Reads the train and validation splits only. After training, the confidence
threshold of the decision rule is tuned on validation: the lowest confidence at
which the kept predictions are at least ``confidence_target`` accurate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tagifai.training import (
    GeneratorState,
    Reporter,
    build_bounded,
    fit_epochs,
    get_device,
    set_seeds,
)
from tagifai.workloads.base import DecisionRule, TrainResult
from tagifai.workloads.images.data import ImageData as ImageDataSet
from tagifai.workloads.images.data import ImageSplits
from tagifai.workloads.images.models import ImageEncoder, build_model
from tagifai.workloads.images.params import ImagesParams, MinibatchParams

__all__ = ["choose_confidence", "predict_logits", "train"]

EVAL_BATCH_SIZE = 1024  # images per forward pass when validating
MAX_SHIFT = 0.1  # augmentation: random shifts of up to this fraction of the image
MAX_ROTATION_DEGREES = 10.0  # and rotations of up to this many degrees


def _optimizer(arch: MinibatchParams, model: nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer; SGD and RMSprop take the momentum."""
    parameters = model.parameters()
    if arch.optimizer == "sgd":
        return torch.optim.SGD(
            parameters, lr=arch.lr, momentum=arch.momentum, weight_decay=arch.weight_decay
        )
    if arch.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            parameters, lr=arch.lr, momentum=arch.momentum, weight_decay=arch.weight_decay
        )
    choice = torch.optim.Adam if arch.optimizer == "adam" else torch.optim.AdamW
    return choice(parameters, lr=arch.lr, weight_decay=arch.weight_decay)


def _scheduler(arch: MinibatchParams, optimizer: torch.optim.Optimizer) -> Any:
    """The lr schedule: cosine over ``num_epochs``, or a cut when validation stalls."""
    if arch.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=arch.num_epochs)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=arch.lr_factor, patience=arch.lr_patience
    )


def _step(scheduler: Any) -> Callable[[dict[str, float]], None]:
    """Step the schedule after an epoch's validation (a plateau one reads the accuracy)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return lambda metrics: scheduler.step(metrics["val_accuracy"])
    return lambda metrics: scheduler.step()


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random shift and small rotation per image (one affine warp for the batch)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(MAX_ROTATION_DEGREES)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * 2 * MAX_SHIFT
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    ).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # Pixels moved in from outside are the background (the encoded value of black).
    background = x.amin()
    return F.grid_sample(x - background, grid, align_corners=False) + background


def predict_logits(model: nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits of ``x`` in batches, on the CPU."""
    model.eval()
    with torch.inference_mode():
        return torch.cat(
            [model(batch.to(device)).cpu() for batch in x.split(EVAL_BATCH_SIZE)]
            or [torch.zeros(0)]
        )


def choose_confidence(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The lowest confidence at which predictions at or above it are ``target`` accurate.

    Args:
        labels: True classes of the **validation** images.
        probs: Their predicted probabilities ``(n, classes)``.
        target: Accuracy wanted on the predictions kept (0: keep all).

    Returns:
        The cut-off in [0, 1] (0 keeps every prediction; 1 when no cut-off reaches the
        target, so predict abstains unless the model is certain).
    """
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    if target <= 0 or correct.mean() >= target:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    accuracy = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    # A cut-off keeps every prediction as confident as it: only the last of tied
    # confidences is a real choice.
    last_of_ties = np.append(ranked[1:] != ranked[:-1], True)
    reached = np.nonzero((accuracy >= target) & last_of_ties)[0]
    if len(reached) == 0:
        return 1.0
    return float(ranked[reached[-1]])


def train(
    params: ImagesParams, dataset: ImageDataSet, splits: ImageSplits, reporter: Reporter
) -> TrainResult:
    """Train one image classifier (train and validation splits only).

    Args:
        params: Every setting of the run.
        dataset: The images (for their classes).
        splits: Train / validation / test (test is not touched).
        reporter: Receives each epoch's metrics; may raise to stop.

    Returns:
        The network with its best-validation weights, its encoder, the tuned rule.
    """
    started = time.perf_counter()
    set_seeds(params.seed)
    device = get_device()
    arch = params.model
    encoder = ImageEncoder.fit(splits.train.images)
    x_train = torch.from_numpy(encoder.encode(splits.train.images))
    y_train = torch.from_numpy(splits.train.labels)
    x_val = torch.from_numpy(encoder.encode(splits.val.images))
    y_val = splits.val.labels
    model = build_bounded(
        lambda: build_model(params, encoder, num_classes=len(dataset.classes))
    ).to(device)
    optimizer = _optimizer(arch, model)
    scheduler = _scheduler(arch, optimizer)
    generator = torch.Generator().manual_seed(params.seed)
    augment = bool(getattr(arch, "augment", False))

    def train_epoch() -> float:
        model.train()
        total, seen = 0.0, 0
        batches = list(torch.randperm(len(x_train), generator=generator).split(arch.batch_size))
        if len(batches) > 1 and len(batches[-1]) == 1:
            # Batch norm cannot train on one image: that one waits for the next epoch's order.
            batches.pop()
        for index in batches:
            x = x_train[index]
            if augment:
                x = _augment(x, generator)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x.to(device)), y_train[index].to(device))
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(index), seen + len(index)
        return total / seen

    def validate() -> dict[str, float]:
        logits = predict_logits(model, x_val, device)
        return {
            "val_loss": F.cross_entropy(logits, torch.from_numpy(y_val)).item(),
            "val_accuracy": float((logits.argmax(1).numpy() == y_val).mean()),
        }

    loop = fit_epochs(
        model,
        train_epoch,
        validate,
        monitor="val_accuracy",
        num_epochs=arch.num_epochs,
        patience=arch.patience,
        reporter=reporter,
        lr=lambda: float(optimizer.param_groups[0]["lr"]),
        after_validate=_step(scheduler),
        resumable={
            "optimizer": optimizer,
            "scheduler": scheduler,
            "generator": GeneratorState(generator),
        },
    )
    val_metrics = validate()
    probs = torch.softmax(predict_logits(model, x_val, device), dim=1).numpy()
    cut = choose_confidence(y_val, probs, params.confidence_target)
    kept = probs.max(axis=1) >= cut
    val_metrics["val_coverage"] = float(kept.mean())
    return TrainResult(
        encoder=encoder,
        model=model.cpu().eval(),
        decision=DecisionRule(kind="confidence", thresholds=(cut,)),
        best_epoch=loop.best_epoch,
        epochs_run=loop.epochs_run,
        val_metrics=val_metrics,
        history=loop.history,
        seconds=time.perf_counter() - started,
    )
