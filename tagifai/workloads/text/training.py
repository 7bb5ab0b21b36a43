"""Text training: two methods, chosen by the architecture's params class.

- :func:`fit_full_batch`: L-BFGS on the whole training set (``linear``), until the
  loss stops changing or validation F1 stops improving;
- :func:`fit_minibatch`: minibatch Adam(W) with the lr cut when validation F1
  stalls (``ngram``, ``cnn``).

Both read the train and validation splits only, choose the decision threshold on
validation every epoch, and keep the best-validation weights
(:func:`tagifai.training.fit_epochs`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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
from tagifai.workloads.text import data, evaluate
from tagifai.workloads.text.encoders import fit_encoder
from tagifai.workloads.text.models import TfidfLinear, build_model
from tagifai.workloads.text.params import LinearParams, MinibatchParams, TextParams

__all__ = ["CONVERGED_RTOL", "fit_full_batch", "fit_minibatch", "train"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PREDICT_BATCH_SIZE = 512  # rows per forward pass when validating the full-batch model

# A full-batch (L-BFGS) epoch that changes the training loss by less than this fraction
# has converged: the next epochs would repeat the same weights, so training stops.
CONVERGED_RTOL = 1e-4


def _loss_fn(labels: np.ndarray, balanced: bool, device: torch.device) -> LossFn:
    """Mean binary cross-entropy, optionally with balanced per-tag weights.

    Balanced, as scikit-learn's ``class_weight="balanced"`` for each one-vs-rest
    problem: a tag's positives weigh ``n / (2 n_pos)`` and its negatives
    ``n / (2 n_neg)``, so both sides of a rare tag count equally.
    """
    if not balanced:
        return nn.BCEWithLogitsLoss()
    n = len(labels)
    positives = torch.tensor(labels.sum(axis=0), dtype=torch.float32).clamp(1, n - 1)
    pos_weight = (n / (2 * positives)).to(device)
    neg_weight = (n / (2 * (n - positives))).to(device)

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = targets * pos_weight + (1 - targets) * neg_weight
        return F.binary_cross_entropy_with_logits(logits, targets, weight=weight)

    return loss


@dataclass
class _Encoded:
    """The train and validation splits as tensors, and what validating needs."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: np.ndarray
    loss_fn: LossFn
    device: torch.device


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator else torch.arange(n)
    return list(order.split(batch_size))


def _trim(ids: torch.Tensor) -> torch.Tensor:
    """Cut a padded batch to its longest row (padding is trailing zeros)."""
    return ids[:, : max(int((ids != 0).sum(dim=1).max()), 1)]


def _validator(
    model: nn.Module, params: TextParams, enc: _Encoded, batch_size: int
) -> Callable[[], tuple[dict[str, float], np.ndarray]]:
    """Validation loss and F1 at the threshold chosen on validation.

    Batches are padded to their longest text: the CNN's max-pool sees the padding, so
    its scores depend on the batch size, which is the training one.
    """

    def validate() -> tuple[dict[str, float], np.ndarray]:
        model.eval()
        with torch.inference_mode():
            logits = torch.cat(
                [
                    model(_trim(enc.x_val[index]).to(enc.device)).cpu()
                    for index in _batches(len(enc.x_val), batch_size, None)
                ]
            )
        probs = torch.sigmoid(logits).numpy()
        threshold = evaluate.choose_threshold(enc.y_val, probs, params.threshold_mode)
        pred = evaluate.apply_threshold(probs, threshold)
        y_val = torch.from_numpy(enc.y_val).to(enc.device)
        metrics = {
            "val_loss": enc.loss_fn(logits.to(enc.device), y_val).item(),
            "val_f1": evaluate.f1_at(enc.y_val, pred, "weighted"),
            "val_f1_micro": evaluate.f1_at(enc.y_val, pred, "micro"),
        }
        return metrics, threshold

    return validate


def fit_full_batch(
    model: TfidfLinear, params: TextParams, enc: _Encoded, reporter: Reporter
) -> tuple[int, int, list[dict[str, float]]]:
    """L-BFGS on the whole training set, one call of up to 20 steps per epoch.

    L-BFGS's line search needs no learning rate for this convex loss; the L2 penalty
    (``weight_decay``) spares the bias. Returns (best epoch, epochs run, history).
    """
    arch = params.model
    assert isinstance(arch, LinearParams)
    x, y = enc.x_train.to(enc.device), enc.y_train.to(enc.device)  # moved once
    model.begin_fit(x, y)  # the naive-Bayes scale, when on
    optimizer = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=20, history_size=10, line_search_fn="strong_wolfe"
    )
    penalised = [p for p in model.parameters() if p.dim() > 1]
    validate = _validator(model, params, enc, PREDICT_BATCH_SIZE)

    def train_epoch() -> float:
        losses: list[float] = []

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = enc.loss_fn(model(x), y)
            losses.append(loss.item())
            objective = loss + 0.5 * arch.weight_decay * sum((p**2).sum() for p in penalised)
            objective.backward()
            return objective

        optimizer.step(closure)
        return losses[0]  # the loss before the step, without the penalty

    def converged(history: list[dict[str, float]]) -> bool:
        if len(history) < 2:
            return False
        before, after = history[-2]["train_loss"], history[-1]["train_loss"]
        return abs(before - after) <= CONVERGED_RTOL * abs(before)

    loop = fit_epochs(
        model,
        train_epoch,
        lambda: validate()[0],
        monitor="val_f1",
        num_epochs=arch.num_epochs,
        patience=arch.patience,
        reporter=reporter,
        lr=lambda: 1.0,  # L-BFGS's line search picks each step
        converged=converged,
        resumable={"optimizer": optimizer},
    )
    model.end_fit()  # folds the scale into the weights: a plain linear model is saved
    return loop.best_epoch, loop.epochs_run, loop.history


def fit_minibatch(
    model: nn.Module, params: TextParams, enc: _Encoded, reporter: Reporter
) -> tuple[int, int, list[dict[str, float]]]:
    """Minibatch Adam(W) (SparseAdam for sparse embeddings), lr cut on a val F1 plateau.

    Returns (best epoch, epochs run, history).
    """
    arch = params.model
    assert isinstance(arch, MinibatchParams)
    sparse = [
        module.weight
        for module in model.modules()
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and module.sparse
    ]
    dense = [p for p in model.parameters() if all(p is not q for q in sparse)]
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[arch.optimizer]
    optimizers: list[torch.optim.Optimizer] = [
        optimizer_class(dense, lr=arch.lr, weight_decay=arch.weight_decay)
    ]
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=arch.lr))
    schedulers = [
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=arch.lr_factor, patience=arch.lr_patience
        )
        for optimizer in optimizers
    ]
    generator = torch.Generator().manual_seed(params.seed)
    validate = _validator(model, params, enc, arch.batch_size)

    def train_epoch() -> float:
        total = 0.0
        for index in _batches(len(enc.x_train), arch.batch_size, generator):
            for optimizer in optimizers:
                optimizer.zero_grad()
            logits = model(_trim(enc.x_train[index]).to(enc.device))
            loss = enc.loss_fn(logits, enc.y_train[index].to(enc.device))
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            total += loss.item() * len(index)
        return total / len(enc.x_train)

    def step_schedulers(metrics: dict[str, float]) -> None:
        for scheduler in schedulers:
            scheduler.step(metrics["val_f1"])

    loop = fit_epochs(
        model,
        train_epoch,
        lambda: validate()[0],
        monitor="val_f1",
        num_epochs=arch.num_epochs,
        patience=arch.patience,
        reporter=reporter,
        lr=lambda: float(optimizers[0].param_groups[0]["lr"]),
        after_validate=step_schedulers,
        resumable={
            **{f"optimizer{i}": optimizer for i, optimizer in enumerate(optimizers)},
            **{f"scheduler{i}": scheduler for i, scheduler in enumerate(schedulers)},
            "generator": GeneratorState(generator),
        },
    )
    return loop.best_epoch, loop.epochs_run, loop.history


def train(
    params: TextParams, dataset: data.Dataset, splits: data.Splits, reporter: Reporter
) -> TrainResult:
    """Train one text model with its architecture's method (train and validation only).

    Args:
        params: Every setting of the run.
        dataset: The prepared data (for its classes).
        splits: Train / validation / test frames (test is not touched).
        reporter: Receives each epoch's metrics; may raise to stop.

    Returns:
        The trained model, its encoder, the threshold chosen on validation, the record.
    """
    started = time.perf_counter()
    set_seeds(params.seed)
    device = get_device()
    train_texts = splits.train["text"].tolist()
    encoder = fit_encoder(params, train_texts)
    y_train = data.label_matrix(splits.train["tags"].tolist(), dataset.classes)
    enc = _Encoded(
        x_train=torch.from_numpy(encoder.encode(train_texts)),
        y_train=torch.from_numpy(y_train),
        x_val=torch.from_numpy(encoder.encode(splits.val["text"].tolist())),
        y_val=data.label_matrix(splits.val["tags"].tolist(), dataset.classes),
        loss_fn=_loss_fn(y_train, params.class_weights, device),
        device=device,
    )
    model = build_bounded(
        lambda: build_model(params, encoder, num_classes=len(dataset.classes))
    ).to(device)
    if isinstance(params.model, LinearParams):
        assert isinstance(model, TfidfLinear)
        best_epoch, epochs_run, history = fit_full_batch(model, params, enc, reporter)
        batch_size = PREDICT_BATCH_SIZE
    else:
        best_epoch, epochs_run, history = fit_minibatch(model, params, enc, reporter)
        batch_size = params.model.batch_size
    val_metrics, threshold = _validator(model, params, enc, batch_size)()
    return TrainResult(
        encoder=encoder,
        model=model.cpu().eval(),
        decision=DecisionRule(kind="threshold", thresholds=tuple(_unique(threshold))),
        best_epoch=best_epoch,
        epochs_run=epochs_run,
        val_metrics=val_metrics,
        history=history,
        seconds=time.perf_counter() - started,
    )


def _unique(threshold: np.ndarray) -> list[float]:
    """One value when every class shares the cut-off (global mode), else one per class."""
    values = [float(value) for value in threshold]
    return values[:1] if len(set(values)) == 1 else values
