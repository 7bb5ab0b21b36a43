"""Training: one model from params and splits, with early stopping on validation.

The loop reads top to bottom: seed, encode the splits once, build the model,
then per epoch train, validate, choose the threshold on validation, report,
and keep the best-validation weights. Tracking and pruning reach in through a
:class:`Reporter`, so training also runs with no tracking at all.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tagifai import data, evaluate
from tagifai.config import Params
from tagifai.predict import Predictor
from tagifai.task import get_task

__all__ = ["NullReporter", "Reporter", "TrainResult", "get_device", "set_seeds", "train"]

logger = logging.getLogger(__name__)


class Reporter(Protocol):
    """Receives each epoch's metrics; may raise to stop training (e.g. pruning)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after every epoch with train/val loss, val F1 and the lr."""
        ...


class NullReporter:
    """A reporter that records nothing."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Ignore the metrics."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        predictor: The model with its best-validation weights and threshold.
        best_epoch: Epoch (1-based) whose weights were kept.
        epochs_run: Epochs trained before stopping.
        val_metrics: Validation loss and F1 of the kept weights at the kept threshold.
        history: One metrics dict per epoch.
        seconds: Wall time of the loop.
    """

    predictor: Predictor
    best_epoch: int
    epochs_run: int
    val_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def set_seeds(seed: int) -> None:
    """Seed Python, numpy and torch so CPU training is repeatable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

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


def _make_optimizers(params: Params, model: nn.Module) -> list[torch.optim.Optimizer]:
    """The configured optimizer, plus SparseAdam for embeddings with sparse gradients."""
    sparse = [
        module.weight
        for module in model.modules()
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and module.sparse
    ]
    dense = [p for p in model.parameters() if all(p is not q for q in sparse)]
    optimizers: dict[str, Callable[..., torch.optim.Optimizer]] = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
    }
    chosen = [optimizers[params.optimizer](dense, lr=params.lr, weight_decay=params.weight_decay)]
    if sparse:
        chosen.append(torch.optim.SparseAdam(sparse, lr=params.lr))
    return chosen


def _lbfgs(model: nn.Module) -> torch.optim.Optimizer:
    """L-BFGS with a line search: no learning rate to tune for a convex loss."""
    return torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=20, history_size=10, line_search_fn="strong_wolfe"
    )


def _full_batch_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    weight_decay: float,
) -> float:
    """One L-BFGS step on the whole training set; the L2 penalty spares biases.

    Returns:
        The training loss (without the penalty) before the step.
    """
    penalised = [p for p in model.parameters() if p.dim() > 1]
    losses: list[float] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        losses.append(loss.item())
        objective = loss + 0.5 * weight_decay * sum((p**2).sum() for p in penalised)
        objective.backward()
        return objective

    optimizer.step(closure)  # type: ignore[arg-type]
    return losses[0]


def _converged(history: list[dict[str, float]]) -> bool:
    """Whether the last full-batch step left the training loss (all but) unchanged."""
    if len(history) < 2:
        return False
    before, after = history[-2]["train_loss"], history[-1]["train_loss"]
    return abs(before - after) <= CONVERGED_RTOL * abs(before)


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator else torch.arange(n)
    return list(order.split(batch_size))


def _trim(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Cut a padded batch to its longest row (padding is trailing zeros)."""
    return ids[:, : max(int(lengths.max()), 1)]


def _predict(
    model: nn.Module,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> torch.Tensor:
    model.eval()
    logits = []
    with torch.inference_mode():
        for index in _batches(len(ids), batch_size, None):
            logits.append(model(_trim(ids[index], lengths[index]).to(device)).cpu())
    return torch.cat(logits)


def train(
    params: Params,
    dataset: data.Dataset,
    splits: data.Splits,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train one model; early stopping restores the best-validation weights.

    Only the train and validation splits are read. The monitored metric is the
    validation weighted F1 at the threshold chosen on validation that epoch.

    Args:
        params: Every setting of the run.
        dataset: The prepared data (for its classes).
        splits: Train / validation / test frames (test is not touched).
        reporter: Receives each epoch's metrics; may raise to stop.

    Returns:
        The trained predictor and the training record.
    """
    started = time.perf_counter()
    reporter = reporter or NullReporter()
    set_seeds(params.seed)
    device = get_device()
    task = get_task(params.task)

    encoder = task.fit_encoder(task.inputs(splits.train), params)
    x_train = torch.from_numpy(encoder.encode(task.inputs(splits.train)))
    x_val = torch.from_numpy(encoder.encode(task.inputs(splits.val)))
    len_train, len_val = (x_train != 0).sum(dim=1), (x_val != 0).sum(dim=1)
    y_train_np = data.label_matrix(splits.train["tags"].tolist(), dataset.classes)
    y_val_np = data.label_matrix(splits.val["tags"].tolist(), dataset.classes)
    y_train, y_val = torch.from_numpy(y_train_np), torch.from_numpy(y_val_np)

    model = task.build_model(params, encoder, num_classes=len(dataset.classes)).to(device)
    # Optional hooks: a model that needs the training set before fitting (linear's
    # naive-Bayes scale) or a last step after it (folding that scale into its weights).
    begin_fit, end_fit = getattr(model, "begin_fit", None), getattr(model, "end_fit", None)
    if begin_fit is not None:
        begin_fit(x_train, y_train)
    loss_fn = _loss_fn(y_train_np, params.class_weights, device)
    # A full-batch model (linear) is fitted by L-BFGS, one call of up to 20 iterations per
    # epoch; the others by minibatch Adam(W) with the lr reduced when val F1 stalls.
    full_batch = bool(getattr(model, "full_batch", False))
    optimizers = [_lbfgs(model)] if full_batch else _make_optimizers(params, model)
    schedulers = (
        []
        if full_batch
        else [
            torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=params.lr_factor, patience=params.lr_patience
            )
            for optimizer in optimizers
        ]
    )
    if full_batch:  # the whole training set goes in every step: move it once
        x_full, y_full = x_train.to(device), y_train.to(device)
    generator = torch.Generator().manual_seed(params.seed)

    def validate() -> tuple[dict[str, float], np.ndarray]:
        """Validation loss and F1 at the threshold chosen on validation."""
        logits = _predict(model, x_val, len_val, params.batch_size, device)
        probs = torch.sigmoid(logits).numpy()
        threshold = evaluate.choose_threshold(y_val_np, probs, params.threshold_mode)
        pred = evaluate.apply_threshold(probs, threshold)
        metrics = {
            "val_loss": loss_fn(logits.to(device), y_val.to(device)).item(),
            "val_f1": evaluate.f1_at(y_val_np, pred, "weighted"),
            "val_f1_micro": evaluate.f1_at(y_val_np, pred, "micro"),
        }
        return metrics, threshold

    best_f1, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, params.num_epochs + 1):
        model.train()
        if full_batch:
            train_loss = _full_batch_epoch(
                model, optimizers[0], x_full, y_full, loss_fn, params.weight_decay
            )
        else:
            total = 0.0
            for index in _batches(len(x_train), params.batch_size, generator):
                for optimizer in optimizers:
                    optimizer.zero_grad()
                logits = model(_trim(x_train[index], len_train[index]).to(device))
                loss = loss_fn(logits, y_train[index].to(device))
                loss.backward()
                for optimizer in optimizers:
                    optimizer.step()
                total += loss.item() * len(index)
            train_loss = total / len(x_train)

        metrics, _ = validate()
        metrics = {
            "train_loss": train_loss,
            **metrics,
            "lr": optimizers[0].param_groups[0]["lr"],
        }
        history.append(metrics)
        for scheduler in schedulers:
            scheduler.step(metrics["val_f1"])
        if metrics["val_f1"] > best_f1:
            best_f1, best_epoch = metrics["val_f1"], epoch
            best_state = copy.deepcopy(model.state_dict())
        reporter.on_epoch_end(epoch, metrics)  # may raise (pruning)
        if epoch - best_epoch >= params.patience:
            logger.info("early stop at epoch %d (best %d)", epoch, best_epoch)
            break
        if full_batch and _converged(history):
            logger.info("converged at epoch %d (best %d)", epoch, best_epoch)
            break

    model.load_state_dict(best_state)
    if end_fit is not None:
        end_fit()
    val_metrics, threshold = validate()
    predictor = Predictor(params, dataset.classes, encoder, model.cpu(), threshold)
    return TrainResult(
        predictor=predictor,
        best_epoch=best_epoch,
        epochs_run=epoch,
        val_metrics=val_metrics,
        history=history,
        seconds=time.perf_counter() - started,
    )
