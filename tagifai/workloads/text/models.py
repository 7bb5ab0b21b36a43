"""Networks for the text task: the original text CNN, a bag of n-gram embeddings and a
logistic regression on TF-IDF n-grams."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tagifai.workloads.base import Encoder
from tagifai.workloads.text.encoders import NgramVocab, Tokenizer
from tagifai.workloads.text.params import TextParams

__all__ = ["NgramBag", "TextCNN", "TfidfLinear", "build_model"]


class TextCNN(nn.Module):
    """The tagifai text CNN: embedding, one Conv1d per filter size, global max-pool,
    a hidden layer, dropout and one logit per class.

    Args:
        vocab_size: Rows of the embedding (token 0 pads).
        embedding_dim: Size of a token vector.
        filter_sizes: Convolution widths, one Conv1d each.
        num_filters: Output channels of every Conv1d.
        hidden_dim: Width of the hidden layer.
        dropout_p: Dropout before the hidden and output layers.
        num_classes: Logits out.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        filter_sizes: Sequence[int],
        num_filters: int,
        hidden_dim: int,
        dropout_p: float,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.filter_sizes = tuple(filter_sizes)
        self.embeddings = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.conv = nn.ModuleList(
            nn.Conv1d(embedding_dim, num_filters, kernel_size=size) for size in self.filter_sizes
        )
        self.dropout = nn.Dropout(dropout_p)
        self.fc1 = nn.Linear(num_filters * len(self.filter_sizes), hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for token ids ``(batch, length)``."""
        # Pad short batches so the widest filter always fits.
        if ids.shape[1] < max(self.filter_sizes):
            ids = F.pad(ids, (0, max(self.filter_sizes) - ids.shape[1]))
        x = self.embeddings(ids).transpose(1, 2)  # (batch, embedding_dim, length)
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.conv]
        z = self.dropout(torch.cat(pooled, dim=1))
        z = self.dropout(F.relu(self.fc1(z)))
        return self.fc2(z)


class NgramBag(nn.Module):
    """A fastText-style model: the mean of n-gram embeddings, a hidden layer
    and one logit per class. Fast to train, and unseen words still have n-grams.

    Args:
        vocab_size: Rows of the embedding bag (feature 0 pads).
        embedding_dim: Size of a feature vector.
        hidden_dim: Width of the hidden layer.
        dropout_p: Dropout on the pooled vector and the hidden layer.
        num_classes: Logits out.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_dim: int,
        dropout_p: float,
        num_classes: int,
    ) -> None:
        super().__init__()
        # Sparse gradients: an update touches only the rows of the batch's n-grams.
        self.embeddings = nn.EmbeddingBag(
            vocab_size, embedding_dim, mode="mean", padding_idx=0, sparse=True
        )
        self.dropout = nn.Dropout(dropout_p)
        self.fc1 = nn.Linear(embedding_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for feature ids ``(batch, features)``."""
        z = self.dropout(self.embeddings(ids))
        z = self.dropout(F.relu(self.fc1(z)))
        return self.fc2(z)


class TfidfLinear(nn.Module):
    """One-vs-rest logistic regression on TF-IDF n-gram features.

    Each text's n-grams are weighted by their idf and L2-normalised per family
    (word and character n-grams separately), then one weight per n-gram and class
    is summed: the classic strong baseline for short texts, as a PyTorch module.
    It is fitted full-batch with L-BFGS (``fit_full_batch`` in
    :mod:`tagifai.workloads.text.training`); ``weight_decay`` is its L2 penalty.

    With ``nb_scale`` (NBSVM, Wang & Manning 2012) each class sees its features
    scaled by their naive-Bayes log-count ratio while it is fitted (:meth:`begin_fit`):
    the effective weight is ``weight * scale``, so the L2 penalty falls less on n-grams
    that tell the class apart. :meth:`end_fit` multiplies the scale into the weights,
    so the saved model is a plain linear model and predicts at the same cost.

    Args:
        idf: Inverse document frequency per feature id (``idf[0]`` pads).
        num_word_features: Ids ``1..num_word_features`` are word n-grams.
        num_classes: Logits out.
        nb_scale: Fit with the naive-Bayes class scale.
    """

    def __init__(
        self,
        idf: Sequence[float],
        num_word_features: int,
        num_classes: int,
        nb_scale: bool = False,
    ) -> None:
        super().__init__()
        self.num_word_features = num_word_features
        self.nb_scale = nb_scale
        self.idf: torch.Tensor
        # Not a learned weight, and rebuilt from the encoder on load: kept out of the state_dict.
        self.register_buffer("idf", torch.tensor(list(idf), dtype=torch.float32), persistent=False)
        self.weights = nn.EmbeddingBag(len(idf), num_classes, mode="sum", padding_idx=0)
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.zeros_(self.weights.weight)
        self.class_scale: torch.Tensor | None = None  # (features, classes) while fitting

    @torch.no_grad()
    def begin_fit(self, ids: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0) -> None:
        """With ``nb_scale``, set each class's feature scale ``|log(p / q)|`` from training data.

        ``p`` (``q``) is the smoothed share of the class's positive (negative) texts'
        n-gram occurrences that fall on each n-gram.

        Args:
            ids: Training feature ids ``(texts, features)``, 0 pads; each n-gram once a text.
            labels: Multi-hot training labels ``(texts, classes)``.
            alpha: Additive smoothing of the counts (1 is the paper's choice).
        """
        if not self.nb_scale:
            return
        vocab_size = self.weights.weight.shape[0]
        rows = torch.arange(len(ids), device=ids.device).repeat_interleave(ids.shape[1])
        present = ids.flatten() != 0
        presence = torch.sparse_coo_tensor(
            torch.stack([ids.flatten()[present], rows[present]]),
            torch.ones(int(present.sum()), device=ids.device),
            (vocab_size, len(ids)),
            check_invariants=True,
        )
        # Row 0 (padding) is not an n-gram: it keeps scale 0.
        positive = torch.sparse.mm(presence, labels)[1:] + alpha  # (features, classes)
        negative = torch.sparse.mm(presence, 1 - labels)[1:] + alpha
        ratio = torch.log(positive / positive.sum(0)) - torch.log(negative / negative.sum(0))
        self.class_scale = F.pad(ratio.abs(), (0, 0, 1, 0)).to(self.weights.weight.device)

    @torch.no_grad()
    def end_fit(self) -> None:
        """Multiply the class scale into the weights and drop it (no-op without one)."""
        if self.class_scale is not None:
            self.weights.weight.mul_(self.class_scale)
            self.class_scale = None

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-id TF-IDF weights ``(batch, features)``: idf, L2-normalised per family."""
        weights = self.idf[ids]
        is_word = ids <= self.num_word_features  # padding (0) has idf 0 either way
        word = torch.where(is_word, weights, 0.0)
        char = weights - word
        norm = torch.where(
            is_word,
            word.norm(dim=1, keepdim=True),
            char.norm(dim=1, keepdim=True),
        )
        return weights / norm.clamp_min(1e-12)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for feature ids ``(batch, features)``."""
        if self.class_scale is None:
            return self.weights(ids, per_sample_weights=self.features(ids)) + self.bias
        weight = self.weights.weight * self.class_scale
        bag = F.embedding_bag(
            ids, weight, per_sample_weights=self.features(ids), mode="sum", padding_idx=0
        )
        return bag + self.bias


def build_model(params: TextParams, encoder: Encoder, num_classes: int) -> nn.Module:
    """The untrained network of ``params.model``."""
    model = params.model
    if model.architecture == "linear":
        assert isinstance(encoder, NgramVocab)
        return TfidfLinear(encoder.idf, encoder.num_word_features, num_classes, model.nb_scale)
    if model.architecture == "ngram":
        assert isinstance(encoder, NgramVocab)
        return NgramBag(
            encoder.vocab_size, model.embedding_dim, model.hidden_dim, model.dropout_p, num_classes
        )
    assert isinstance(encoder, Tokenizer)
    return TextCNN(
        vocab_size=len(encoder),
        embedding_dim=model.embedding_dim,
        filter_sizes=model.filter_sizes,
        num_filters=model.num_filters,
        hidden_dim=model.hidden_dim,
        dropout_p=model.dropout_p,
        num_classes=num_classes,
    )
