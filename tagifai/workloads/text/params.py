"""Text params: data preparation, and one typed model per architecture.

Each class is the one source of its defaults (``config/params.json`` only picks
the architecture). A trial of the study logs exactly its architecture's fields.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from tagifai.workloads.base import ArchitectureParams, RunParams

__all__ = [
    "CnnParams",
    "LinearParams",
    "MinibatchParams",
    "NgramParams",
    "TextData",
    "TextParams",
]

# Tags too general to say anything about a project (as in the original pipeline).
GENERAL_TAGS = (
    "machine-learning",
    "deep-learning",
    "data-science",
    "neural-networks",
    "python",
    "r",
    "visualization",
)
Probability = Annotated[StrictFloat, Field(gt=0, lt=1, allow_inf_nan=False)]


class TextData(BaseModel):
    """Preparation and split, applied once per study (a trial cannot change them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lower: StrictBool = True  # lowercase the text
    stopwords: StrictBool = False  # drop English stopwords (scikit-learn's list)
    exclude_tags: tuple[str, ...] = Field(GENERAL_TAGS, max_length=10_000)  # too general
    min_tag_freq: StrictInt = Field(30, ge=1, le=1_000_000)  # tags on fewer projects are dropped
    add_parent_tags: StrictBool = False  # also tag a project with its tags' parents
    train_size: Probability = 0.7  # fraction of projects for training
    val_size: Probability = 0.15  # for early stopping, tuning and the threshold
    short_text_words: StrictInt = Field(8, ge=1, le=10_000)  # texts this short form a test slice

    @model_validator(mode="after")
    def _check_split(self) -> TextData:
        if self.train_size + self.val_size >= 1:
            raise ValueError(
                f"train_size + val_size must leave room for a test split, "
                f"got {self.train_size} + {self.val_size}"
            )
        return self


class LinearParams(ArchitectureParams):
    """One-vs-rest logistic regression on TF-IDF n-grams, fitted full-batch by L-BFGS.

    L-BFGS has no learning rate or batch size: ``weight_decay`` (its L2 penalty) is
    the one knob worth searching.
    """

    architecture: Literal["linear"] = "linear"
    max_ngrams: StrictInt = Field(2**17, ge=1, le=2**22)  # n-grams kept per family, most frequent
    # Scale each tag's features by their naive-Bayes log-count ratio while fitting (NBSVM,
    # Wang & Manning 2012): n-grams that tell a tag apart are penalised less.
    nb_scale: StrictBool = True
    weight_decay: StrictFloat = Field(1e-5, ge=0, le=10, allow_inf_nan=False)  # L2 penalty
    num_epochs: StrictInt = Field(60, ge=1, le=10_000)  # L-BFGS calls of 20 steps; converges sooner
    patience: StrictInt = Field(10, ge=1, le=1_000)


class MinibatchParams(ArchitectureParams):
    """Minibatch training with Adam(W), the lr cut when validation F1 stalls."""

    optimizer: Literal["adam", "adamw"] = "adam"
    lr: StrictFloat = Field(0.02, gt=0, le=1, allow_inf_nan=False)
    weight_decay: StrictFloat = Field(1e-5, ge=0, le=10, allow_inf_nan=False)
    batch_size: StrictInt = Field(64, ge=1, le=65_536)
    dropout_p: StrictFloat = Field(0.1, ge=0, lt=1, allow_inf_nan=False)
    hidden_dim: StrictInt = Field(128, ge=1, le=16_384)
    embedding_dim: StrictInt = Field(64, ge=1, le=4_096)
    num_epochs: StrictInt = Field(60, ge=1, le=10_000)  # upper bound; early stopping ends sooner
    patience: StrictInt = Field(10, ge=1, le=1_000)  # epochs without val F1 improvement
    lr_patience: StrictInt = Field(2, ge=1, le=1_000)  # epochs without improvement before lr cut
    lr_factor: StrictFloat = Field(0.5, gt=0, lt=1, allow_inf_nan=False)


class NgramParams(MinibatchParams):
    """fastText-style: the mean of n-gram embeddings and a hidden layer."""

    architecture: Literal["ngram"] = "ngram"
    max_ngrams: StrictInt = Field(2**17, ge=1, le=2**22)


class CnnParams(MinibatchParams):
    """The original course project's text CNN over word (or character) tokens."""

    architecture: Literal["cnn"] = "cnn"
    char_level: StrictBool = False  # characters instead of words as tokens
    max_length: StrictInt = Field(256, ge=8, le=100_000)  # tokens kept per text
    min_token_freq: StrictInt = Field(1, ge=1, le=1_000_000)  # rarer tokens map to <unk>
    num_filters: StrictInt = Field(128, ge=1, le=4_096)  # per filter size
    max_filter_size: StrictInt = Field(4, ge=1, le=16)  # filter sizes 1..max

    @property
    def filter_sizes(self) -> tuple[int, ...]:
        """Convolution widths: 1, 2, ..., max_filter_size."""
        return tuple(range(1, self.max_filter_size + 1))


TextModel = Annotated[LinearParams | NgramParams | CnnParams, Field(discriminator="architecture")]


class TextParams(RunParams):
    """Everything needed to prepare the text data, build a model and train it."""

    task: Literal["text"] = "text"
    data: TextData = TextData()
    model: TextModel = LinearParams()
    # Weigh each tag's positives and negatives equally (scikit-learn's class_weight=
    # "balanced"), so rare tags are not drowned by their negatives.
    class_weights: StrictBool = True
    # One cut-off for every tag: per-tag cut-offs tuned on ~200 validation rows overfit
    # them (real data: val F1 0.714 -> test 0.620, vs 0.667 -> 0.653 global).
    threshold_mode: Literal["global", "per_class"] = "global"
