"""The text-tagging task: tokenizers and the glue from project text to tensors."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import HashingVectorizer
from torch import nn

from tagifai import data
from tagifai.config import Params
from tagifai.errors import TagifaiError
from tagifai.models import NgramBag, TextCNN

__all__ = ["MAX_TEXT_CHARS", "NgramHasher", "TextTask", "Tokenizer"]

PAD, UNK = "<pad>", "<unk>"
# Prediction inputs longer than this are cut: a documented limit that keeps a
# single request from costing seconds (the longest real description is ~1,700 chars).
MAX_TEXT_CHARS = 10_000


class Tokenizer:
    """Word- or character-level vocabulary with ``<pad>`` = 0 and ``<unk>`` = 1.

    Args:
        char_level: Characters instead of whitespace-separated words.
        max_length: Tokens kept per text.
        token_to_index: An existing vocabulary (from :meth:`to_dict`).
    """

    def __init__(
        self,
        char_level: bool,
        max_length: int,
        token_to_index: dict[str, int] | None = None,
    ) -> None:
        self.char_level = char_level
        self.max_length = max_length
        self.token_to_index = token_to_index or {PAD: 0, UNK: 1}

    def __len__(self) -> int:
        return len(self.token_to_index)

    def tokens(self, text: str) -> list[str]:
        """Split one text into tokens."""
        return list(text) if self.char_level else text.split()

    def fit(self, texts: list[str], min_freq: int = 1) -> Tokenizer:
        """Build the vocabulary from training texts (most frequent first)."""
        counts = Counter(token for text in texts for token in self.tokens(text))
        for token, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            if count >= min_freq:
                self.token_to_index.setdefault(token, len(self.token_to_index))
        return self

    def encode(self, inputs: list[Any]) -> np.ndarray:
        """Padded ``(len(inputs), L)`` int64 ids, L = longest text up to ``max_length``."""
        rows = [
            [self.token_to_index.get(token, 1) for token in self.tokens(text)][: self.max_length]
            for text in inputs
        ]
        width = max([len(row) for row in rows] + [1])
        ids = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return ids

    def decode(self, ids: np.ndarray) -> list[str]:
        """Texts back from ids (padding dropped), for inspection and tests."""
        index_to_token = {index: token for token, index in self.token_to_index.items()}
        sep = "" if self.char_level else " "
        return [sep.join(index_to_token[int(i)] for i in row if i != 0) for row in ids]

    def to_dict(self) -> dict[str, Any]:
        """JSON state."""
        return {
            "kind": "tokenizer",
            "char_level": self.char_level,
            "max_length": self.max_length,
            "token_to_index": self.token_to_index,
        }


class NgramHasher:
    """Hashed word 1-2-grams and character 3-5-grams (within word boundaries).

    Ids ``1..buckets`` are word n-grams and ``buckets+1..2*buckets`` character
    n-grams; 0 pads. Hashing needs no fitting, so unseen words still get
    character n-gram features.

    Args:
        buckets: Hash buckets per feature family.
        max_features: Distinct features kept per text.
    """

    def __init__(self, buckets: int, max_features: int = 1024) -> None:
        self.buckets = buckets
        self.max_features = max_features
        common = {"n_features": buckets, "alternate_sign": False, "norm": None}
        self._words = HashingVectorizer(analyzer="word", ngram_range=(1, 2), **common)
        self._chars = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common)

    @property
    def vocab_size(self) -> int:
        """Embedding rows the model needs."""
        return 2 * self.buckets + 1

    def encode(self, inputs: list[Any]) -> np.ndarray:
        """Padded ``(len(inputs), F)`` int64 feature ids, F = most features in a text."""
        words = self._words.transform(inputs)
        chars = self._chars.transform(inputs)
        rows = []
        for i in range(len(inputs)):
            word_ids = words.indices[words.indptr[i] : words.indptr[i + 1]] + 1
            char_ids = chars.indices[chars.indptr[i] : chars.indptr[i + 1]] + 1 + self.buckets
            rows.append(np.concatenate([word_ids, char_ids])[: self.max_features])
        width = max([len(row) for row in rows] + [1])
        ids = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return ids

    def to_dict(self) -> dict[str, Any]:
        """JSON state."""
        return {"kind": "ngram_hasher", "buckets": self.buckets, "max_features": self.max_features}


class TextTask:
    """Project title + description in, tags out."""

    name = "text"

    def load(self, data_location: str, tags: str | None, params: Params) -> data.Dataset:
        """Read projects (and the optional taxonomy) and prepare them."""
        projects = data.load_projects(data_location)
        taxonomy = data.load_taxonomy(tags, strict_parents=params.add_parent_tags) if tags else None
        dataset = data.prepare(projects, taxonomy, params, source=str(data_location))
        return dataclasses.replace(dataset, tags_source=tags)

    def inputs(self, frame: pd.DataFrame) -> list[Any]:
        """The cleaned texts of a prepared frame."""
        return frame["text"].tolist()

    def inputs_from_raw(self, raw: pd.DataFrame, params: Params) -> list[Any]:
        """Clean a payload with a ``text`` column or ``title`` + ``description`` columns."""
        if "text" in raw.columns:
            texts = raw["text"]
        elif "title" in raw.columns or "description" in raw.columns:
            title = raw["title"] if "title" in raw.columns else pd.Series([""] * len(raw))
            desc = (
                raw["description"] if "description" in raw.columns else pd.Series([""] * len(raw))
            )
            for name, column in (("title", title), ("description", desc)):
                _check_strings(column, name)
            texts = title.fillna("").str.cat(desc.fillna(""), sep=" ")
        else:
            raise TagifaiError(
                f"input: expected a 'text' column or 'title'/'description' columns, "
                f"got {list(raw.columns)}"
            )
        if len(texts) == 0:
            raise TagifaiError("input: empty list of texts")
        _check_strings(texts, "text")
        return [
            data.clean_text(text[:MAX_TEXT_CHARS], lower=params.lower, stopwords=params.stopwords)
            for text in texts
        ]

    def fit_encoder(self, inputs: list[Any], params: Params) -> Tokenizer | NgramHasher:
        """A vocabulary tokenizer (cnn) or an n-gram hasher (ngram)."""
        if params.architecture == "ngram":
            return NgramHasher(buckets=params.ngram_buckets)
        tokenizer = Tokenizer(char_level=params.char_level, max_length=params.max_length)
        return tokenizer.fit(inputs, min_freq=params.min_token_freq)

    def load_encoder(self, state: dict[str, Any]) -> Tokenizer | NgramHasher:
        """Restore an encoder from its JSON state."""
        if state["kind"] == "ngram_hasher":
            return NgramHasher(buckets=state["buckets"], max_features=state["max_features"])
        return Tokenizer(state["char_level"], state["max_length"], dict(state["token_to_index"]))

    def build_model(self, params: Params, encoder: Any, num_classes: int) -> nn.Module:
        """The network named by ``params.architecture``."""
        if params.architecture == "ngram":
            return NgramBag(
                vocab_size=encoder.vocab_size,
                embedding_dim=params.embedding_dim,
                hidden_dim=params.hidden_dim,
                dropout_p=params.dropout_p,
                num_classes=num_classes,
            )
        return TextCNN(
            vocab_size=len(encoder),
            embedding_dim=params.embedding_dim,
            filter_sizes=params.filter_sizes,
            num_filters=params.num_filters,
            hidden_dim=params.hidden_dim,
            dropout_p=params.dropout_p,
            num_classes=num_classes,
        )


def _check_strings(column: pd.Series, name: str) -> None:
    for row, value in enumerate(column, start=1):
        if isinstance(value, float) and np.isnan(value):
            value = None  # a missing cell in a frame
        if value is not None and not isinstance(value, str):
            raise TagifaiError(f"input: row {row}: {name}: expected a string, got {value!r:.40}")
        if name == "text" and (value is None or not value.strip()):
            raise TagifaiError(f"input: row {row}: {name}: empty text")
