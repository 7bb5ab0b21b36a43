"""Text encoders: the token and n-gram vocabularies, and cleaning a prediction payload."""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from tagifai.errors import TagifaiError
from tagifai.workloads.text import data
from tagifai.workloads.text.params import TextData, TextParams

__all__ = [
    "MAX_PREDICT_TEXTS",
    "MAX_TEXT_CHARS",
    "NgramVocab",
    "Tokenizer",
    "clean_payload",
    "fit_encoder",
    "load_encoder",
]

PAD, UNK = "<pad>", "<unk>"
# Prediction inputs longer than this are cut: a documented limit that keeps a
# single request from costing seconds (the longest real description is ~1,700 chars).
MAX_TEXT_CHARS = 10_000  # a text to tag is cut here
MAX_PREDICT_TEXTS = 10_000  # texts in one request or --file, as for images
MAX_TOKENS = 100_000  # a tokenizer's max_length: CnnParams.max_length's bound
# Word tokens as scikit-learn splits them: runs of 2+ word characters.
_WORD_TOKEN = re.compile(r"(?u)\b\w\w+\b")


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


class NgramVocab:
    """Word 1-2-grams and character 2-5-grams (inside word boundaries) seen in training.

    The same features as scikit-learn's ``TfidfVectorizer(analyzer="word",
    ngram_range=(1, 2))`` plus ``TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5))``
    with ``binary=True`` (a test checks this), written out here so that loading a
    model for prediction does not import scikit-learn (about 1.5 s of a 2 s budget).

    Ids ``1..len(words)`` are word n-grams, the rest character n-grams; 0 pads.
    Each text becomes its *distinct* known n-grams; unseen n-grams are dropped.

    Args:
        words: Word n-gram -> id.
        chars: Character n-gram -> id.
        idf: Smoothed inverse document frequency per id (``idf[0]`` = 0 for padding).
        max_features: Distinct n-grams kept per text.
    """

    def __init__(
        self,
        words: dict[str, int],
        chars: dict[str, int],
        idf: list[float],
        max_features: int = 4096,
    ) -> None:
        self.words = words
        self.chars = chars
        self.idf = idf
        self.max_features = max_features

    @property
    def vocab_size(self) -> int:
        """Embedding rows the model needs (n-grams + padding)."""
        return len(self.words) + len(self.chars) + 1

    @property
    def num_word_features(self) -> int:
        """How many ids (after padding) are word n-grams."""
        return len(self.words)

    @staticmethod
    def ngrams(text: str) -> tuple[set[str], set[str]]:
        """The distinct word and character n-grams of one cleaned text."""
        tokens = _WORD_TOKEN.findall(text)
        words = {*tokens, *(f"{a} {b}" for a, b in pairwise(tokens))}
        chars: set[str] = set()
        for word in text.split():
            padded = f" {word} "  # n-grams at the edges of a word are their own features
            for n in range(2, 6):
                chars.update(padded[i : i + n] for i in range(len(padded) - n + 1))
        return words, chars

    @classmethod
    def fit(cls, texts: list[str], max_size: int) -> NgramVocab:
        """Collect the n-grams of the training texts with their document frequencies.

        Args:
            texts: Cleaned training texts.
            max_size: Most n-grams kept per family (the most frequent; ties alphabetical).
        """
        word_df: Counter[str] = Counter()
        char_df: Counter[str] = Counter()
        for text in texts:
            text_words, text_chars = cls.ngrams(text)
            word_df.update(text_words)
            char_df.update(text_chars)
        kept_words = _most_frequent(word_df, max_size)
        kept_chars = _most_frequent(char_df, max_size)
        words = {gram: i for i, gram in enumerate(kept_words, start=1)}
        chars = {gram: i for i, gram in enumerate(kept_chars, start=len(words) + 1)}
        n = len(texts)
        # scikit-learn's smoothed idf: ln((1 + n) / (1 + df)) + 1.
        idf = [0.0] + [
            math.log((1 + n) / (1 + counts[gram])) + 1.0
            for counts, kept in ((word_df, kept_words), (char_df, kept_chars))
            for gram in kept
        ]
        return cls(words, chars, idf)

    def encode(self, inputs: list[Any]) -> np.ndarray:
        """Padded ``(len(inputs), F)`` int64 ids of each text's known n-grams, sorted."""
        rows = []
        for text in inputs:
            words, chars = self.ngrams(text)
            ids = [self.words[g] for g in words if g in self.words]
            ids += [self.chars[g] for g in chars if g in self.chars]
            rows.append(sorted(ids)[: self.max_features])
        width = max([len(row) for row in rows] + [1])
        ids_array = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids_array[i, : len(row)] = row
        return ids_array

    def to_dict(self) -> dict[str, Any]:
        """JSON state (the vocabulary in id order, and the idf)."""
        return {
            "kind": "ngram_vocab",
            "words": list(self.words),
            "chars": list(self.chars),
            "idf": [round(value, 6) for value in self.idf],
            "max_features": self.max_features,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> NgramVocab:
        """Restore from :meth:`to_dict`."""
        words = {gram: i for i, gram in enumerate(state["words"], start=1)}
        chars = {gram: i for i, gram in enumerate(state["chars"], start=len(words) + 1)}
        return cls(words, chars, list(state["idf"]), state["max_features"])


def _most_frequent(counts: Counter[str], limit: int) -> list[str]:
    return sorted(counts, key=lambda gram: (-counts[gram], gram))[:limit]


def clean_payload(raw: pd.DataFrame, prep: TextData) -> list[str]:
    """Cleaned texts of a payload with a ``text`` column or ``title`` + ``description`` columns.

    Raises:
        TagifaiError: Naming the row and column of the first bad value.
    """
    if "text" in raw.columns:
        texts = raw["text"]
    elif "title" in raw.columns or "description" in raw.columns:
        title = raw["title"] if "title" in raw.columns else pd.Series([""] * len(raw))
        desc = raw["description"] if "description" in raw.columns else pd.Series([""] * len(raw))
        for name, column in (("title", title), ("description", desc)):
            _check_strings(column, name)
        texts = title.fillna("").str.cat(desc.fillna(""), sep=" ")
    else:
        raise TagifaiError(
            f"input: expected a 'text' column or 'title'/'description' columns, "
            f"got {list(raw.columns)!r:.200}"
        )
    if len(texts) == 0:
        raise TagifaiError("input: empty list of texts")
    if len(texts) > MAX_PREDICT_TEXTS:
        raise TagifaiError(f"input: {len(texts):,} texts; at most {MAX_PREDICT_TEXTS:,} at once")
    _check_strings(texts, "text")
    return [
        data.clean_text(text[:MAX_TEXT_CHARS], lower=prep.lower, stopwords=prep.stopwords)
        for text in texts
    ]


def _check_strings(column: pd.Series, name: str) -> None:
    for row, value in enumerate(column, start=1):
        if isinstance(value, float) and np.isnan(value):
            value = None  # a missing cell in a frame
        if value is not None and not isinstance(value, str):
            raise TagifaiError(f"input: row {row}: {name}: expected a string, got {value!r:.40}")
        if name == "text" and (value is None or not value.strip()):
            raise TagifaiError(f"input: row {row}: {name}: empty text")


def load_encoder(state: dict[str, Any]) -> Tokenizer | NgramVocab:
    """Restore an encoder from its JSON state, checked as :meth:`Tokenizer.fit` or
    :meth:`NgramVocab.fit` would have made it (ids in range, one idf per id).

    Raises:
        ValueError: If a value is not one a fitted encoder has.
    """
    if state.get("kind") == "ngram_vocab":
        for family in ("words", "chars"):
            grams = state.get(family)
            if not isinstance(grams, list) or not all(isinstance(g, str) for g in grams):
                raise ValueError(f"{family}: expected a list of n-grams")
            if len(set(grams)) != len(grams):
                raise ValueError(f"{family}: an n-gram appears twice")
        idf, size = state.get("idf"), len(state["words"]) + len(state["chars"]) + 1
        if not isinstance(idf, list) or len(idf) != size:
            raise ValueError(f"idf: expected {size} numbers, one per n-gram and padding")
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in idf):
            raise ValueError("idf: expected finite numbers")
        if not isinstance(state.get("max_features"), int) or state["max_features"] < 1:
            raise ValueError(f"max_features: {state.get('max_features')!r:.40}")
        return NgramVocab.from_dict(state)
    if state.get("kind") != "tokenizer":
        raise ValueError(f"kind: {state.get('kind')!r:.40} is not tokenizer or ngram_vocab")
    vocabulary, max_length = state.get("token_to_index"), state.get("max_length")
    if not isinstance(state.get("char_level"), bool):
        raise ValueError("char_level: expected true or false")
    if not isinstance(max_length, int) or not 1 <= max_length <= MAX_TOKENS:
        raise ValueError(f"max_length: {max_length!r:.40} is not in 1..{MAX_TOKENS}")
    if not isinstance(vocabulary, dict) or sorted(
        index if isinstance(index, int) and not isinstance(index, bool) else -1
        for index in vocabulary.values()
    ) != list(range(len(vocabulary))):
        raise ValueError("token_to_index: ids must be 0 .. size - 1, each once")
    return Tokenizer(state["char_level"], max_length, dict(vocabulary))


def fit_encoder(params: TextParams, texts: list[str]) -> Tokenizer | NgramVocab:
    """An n-gram vocabulary (linear, ngram) or a token vocabulary (cnn), from training texts."""
    model = params.model
    if model.architecture == "cnn":
        tokenizer = Tokenizer(char_level=model.char_level, max_length=model.max_length)
        return tokenizer.fit(texts, min_freq=model.min_token_freq)
    return NgramVocab.fit(texts, max_size=model.max_ngrams)
