"""Tests of the text workload's encoders (tokenizers, raw input checks) and its networks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import TINY_CNN

from tagifai.errors import TagifaiError
from tagifai.workloads.text import WORKLOAD
from tagifai.workloads.text.encoders import (
    MAX_TEXT_CHARS,
    NgramVocab,
    Tokenizer,
    clean_payload,
    fit_encoder,
    load_encoder,
)
from tagifai.workloads.text.models import NgramBag, TextCNN, TfidfLinear, build_model
from tagifai.workloads.text.params import TextData, TextParams

TEXTS = ["deep image model", "image segmentation model", "text model"]


# --- Tokenizer -----------------------------------------------------------------------


def test_tokenizer_fit_orders_by_frequency_then_alphabet():
    tokenizer = Tokenizer(char_level=False, max_length=16).fit(TEXTS)
    assert tokenizer.token_to_index == {
        "<pad>": 0,
        "<unk>": 1,
        "model": 2,  # 3 occurrences
        "image": 3,  # 2
        "deep": 4,  # 1 each, alphabetical
        "segmentation": 5,
        "text": 6,
    }
    assert len(tokenizer) == 7


def test_tokenizer_min_freq():
    tokenizer = Tokenizer(char_level=False, max_length=16).fit(TEXTS, min_freq=2)
    assert set(tokenizer.token_to_index) == {"<pad>", "<unk>", "model", "image"}


def test_tokenizer_encode_decode_round_trip():
    tokenizer = Tokenizer(char_level=False, max_length=16).fit(TEXTS)
    ids = tokenizer.encode(TEXTS)
    assert ids.dtype == np.int64
    assert ids.tolist() == [[4, 3, 2], [3, 5, 2], [6, 2, 0]]  # padded to the longest
    assert tokenizer.decode(ids) == TEXTS


def test_tokenizer_unknown_tokens():
    tokenizer = Tokenizer(char_level=False, max_length=16).fit(TEXTS)
    ids = tokenizer.encode(["graph model zebra"])
    assert ids.tolist() == [[1, 2, 1]]
    assert tokenizer.decode(ids) == ["<unk> model <unk>"]


def test_tokenizer_max_length_truncates():
    tokenizer = Tokenizer(char_level=False, max_length=2).fit(TEXTS)
    ids = tokenizer.encode(["image segmentation model", "text"])
    assert ids.shape == (2, 2)
    assert ids.tolist() == [[3, 5], [6, 0]]


def test_tokenizer_empty_inputs():
    tokenizer = Tokenizer(char_level=False, max_length=8).fit(TEXTS)
    assert tokenizer.encode([""]).tolist() == [[0]]
    assert tokenizer.encode([]).shape == (0, 1)


def test_tokenizer_char_level():
    tokenizer = Tokenizer(char_level=True, max_length=8).fit(["abba", "cab"])
    # a: 3, b: 3, c: 1 -> a, b by alphabet on the tie, then c.
    assert tokenizer.token_to_index == {"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, "c": 4}
    ids = tokenizer.encode(["cab", "abz"])
    assert ids.tolist() == [[4, 2, 3], [2, 3, 1]]
    assert tokenizer.decode(tokenizer.encode(["abc ba"])) == ["abc<unk>ba"]
    assert tokenizer.encode(["abcabcabcabc"]).shape == (1, 8)


@pytest.mark.parametrize("char_level", [False, True])
def test_tokenizer_state_round_trip(char_level):
    tokenizer = Tokenizer(char_level=char_level, max_length=5).fit(TEXTS)
    state = json.loads(json.dumps(tokenizer.to_dict()))  # as written to encoder.json
    assert state["kind"] == "tokenizer"
    restored = WORKLOAD.load_encoder(state)
    assert isinstance(restored, Tokenizer)
    assert restored.char_level == char_level and restored.max_length == 5
    probe = [*TEXTS, "unseen words here", "model"]
    np.testing.assert_array_equal(restored.encode(probe), tokenizer.encode(probe))


# --- NgramVocab ----------------------------------------------------------------------

NGRAM_TEXTS = ["graph neural networks for molecules", "a tiny cnn on mnist", "x", "text qa x"]


def test_ngram_vocab_matches_scikit_learn_tfidf():
    """Same n-grams and idf as TfidfVectorizer (word 1-2 + char_wb 2-5, binary), and
    TfidfLinear's weights equal its L2-normalised rows, family by family."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    vocab = NgramVocab.fit(NGRAM_TEXTS, max_size=10_000)
    common = {"binary": True, "lowercase": False}
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), **common).fit(NGRAM_TEXTS)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common).fit(NGRAM_TEXTS)
    assert set(vocab.words) == set(word.vocabulary_)
    assert set(vocab.chars) == set(char.vocabulary_)
    for grams, fitted in ((vocab.words, word), (vocab.chars, char)):
        for gram, index in grams.items():
            assert vocab.idf[index] == pytest.approx(fitted.idf_[fitted.vocabulary_[gram]])

    probe = [*NGRAM_TEXTS, "unseen graph words"]
    expected = sparse.hstack([word.transform(probe), char.transform(probe)]).toarray()
    column = {i: word.vocabulary_[g] for g, i in vocab.words.items()}
    column |= {i: len(word.vocabulary_) + char.vocabulary_[g] for g, i in vocab.chars.items()}
    ids = torch.from_numpy(vocab.encode(probe))
    weights = TfidfLinear(vocab.idf, vocab.num_word_features, num_classes=2).features(ids)
    ours = np.zeros_like(expected)
    for row, (row_ids, row_weights) in enumerate(zip(ids.tolist(), weights.tolist(), strict=True)):
        for index, weight in zip(row_ids, row_weights, strict=True):
            if index:
                ours[row, column[index]] += weight
    np.testing.assert_allclose(ours, expected, atol=1e-6)


def test_ngram_vocab_ids_families_and_padding():
    vocab = NgramVocab.fit(NGRAM_TEXTS, max_size=10_000)
    ids = vocab.encode(["graph neural networks", "zzz qqq"])  # row 2: only " q" is known
    assert ids.dtype == np.int64
    lengths = (ids != 0).sum(axis=1)
    assert ids.shape[1] == lengths[0] > lengths[1]
    row = ids[0, : lengths[0]]
    assert (np.diff(row) > 0).all()  # distinct, sorted, then padding
    assert (ids[0, lengths[0] :] == 0).all()
    assert row.min() >= 1 and row.max() < vocab.vocab_size
    assert (row <= vocab.num_word_features).any() and (row > vocab.num_word_features).any()
    assert vocab.words["graph neural"] in row  # a word bigram


def test_ngram_vocab_word_order_features():
    vocab = NgramVocab.fit(["alpha beta", "beta alpha"], max_size=100)
    forward, backward = (set(vocab.encode([text])[0]) for text in ("alpha beta", "beta alpha"))
    # Same unigrams and character n-grams, different bigram.
    assert forward ^ backward == {vocab.words["alpha beta"], vocab.words["beta alpha"]}


def test_ngram_vocab_max_size_keeps_most_frequent():
    vocab = NgramVocab.fit(["common rare", "common word", "common"], max_size=2)
    assert list(vocab.words) == ["common", "common rare"]  # df 3, then df 1 alphabetical
    assert len(vocab.chars) == 2


def test_ngram_vocab_max_features():
    vocab = NgramVocab.fit(NGRAM_TEXTS, max_size=10_000)
    vocab.max_features = 5
    ids = vocab.encode(["graph neural networks for molecules"])
    assert ids.shape == (1, 5) and (ids != 0).all()


def test_ngram_vocab_state_round_trip():
    vocab = NgramVocab.fit(NGRAM_TEXTS, max_size=10_000)
    state = json.loads(json.dumps(vocab.to_dict()))
    assert state["kind"] == "ngram_vocab"
    restored = WORKLOAD.load_encoder(state)
    assert isinstance(restored, NgramVocab)
    probe = [*NGRAM_TEXTS, "unseen graph words"]
    np.testing.assert_array_equal(restored.encode(probe), vocab.encode(probe))
    assert restored.idf == pytest.approx(vocab.idf, abs=1e-6)


# --- WORKLOAD.inputs_from_raw -------------------------------------------------------

PARAMS = TextParams()


def for_params(params: TextParams) -> SimpleNamespace:
    """What inputs_from_raw reads of a predictor: its params."""
    return SimpleNamespace(params=params)


PREDICTOR = for_params(PARAMS)


def test_inputs_from_raw_text_column():
    raw = pd.DataFrame({"text": ["Hello, World!", "GPT-2 rocks"]})
    assert WORKLOAD.inputs_from_raw(raw, PREDICTOR) == ["hello world", "gpt 2 rocks"]


def test_inputs_from_raw_title_and_description():
    raw = pd.DataFrame({"title": ["Chat Bot", "Detector"], "description": ["Talks.", None]})
    assert WORKLOAD.inputs_from_raw(raw, PREDICTOR) == ["chat bot talks", "detector"]


@pytest.mark.parametrize("column", ["title", "description"])
def test_inputs_from_raw_one_of_title_description(column):
    raw = pd.DataFrame({column: ["Graph Nets"]})
    assert WORKLOAD.inputs_from_raw(raw, PREDICTOR) == ["graph nets"]


def test_inputs_from_raw_follows_params():
    raw = pd.DataFrame({"text": ["The Best Model"]})
    params = TextParams(data=TextData(lower=False, stopwords=True))
    assert WORKLOAD.inputs_from_raw(raw, for_params(params)) == ["Best Model"]
    # The workload reads only the params' data preparation.
    assert clean_payload(raw, params.data) == ["Best Model"]
    assert clean_payload(raw, TextData()) == ["the best model"]


def test_inputs_from_raw_missing_columns():
    raw = pd.DataFrame({"body": ["text"]})
    with pytest.raises(TagifaiError) as info:
        WORKLOAD.inputs_from_raw(raw, PREDICTOR)
    assert str(info.value) == (
        "input: expected a 'text' column or 'title'/'description' columns, got ['body']"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (pd.DataFrame({"text": ["fine", 42]}), "input: row 2: text: expected a string, got 42"),
        (
            pd.DataFrame({"title": ["ok", 3.5], "description": ["a", "b"]}),
            "input: row 2: title: expected a string, got 3.5",
        ),
        (pd.DataFrame({"text": ["fine", "   "]}), "input: row 2: text: empty text"),
        (pd.DataFrame({"text": [None]}), "input: row 1: text: empty text"),
        (pd.DataFrame({"title": [""], "description": [""]}), "input: row 1: text: empty text"),
        (pd.DataFrame({"text": []}), "input: empty list of texts"),
    ],
)
def test_inputs_from_raw_bad_values(raw, expected):
    with pytest.raises(TagifaiError) as info:
        WORKLOAD.inputs_from_raw(raw, PREDICTOR)
    assert str(info.value) == expected


def test_inputs_from_raw_truncates_long_text():
    raw = pd.DataFrame({"text": ["ab " * MAX_TEXT_CHARS]})  # 30,000 characters
    (text,) = WORKLOAD.inputs_from_raw(raw, PREDICTOR)
    words = text.split()
    assert len(words) == -(-MAX_TEXT_CHARS // 3)  # ceil: the cut may halve the last word
    assert len(text) <= MAX_TEXT_CHARS


# --- models --------------------------------------------------------------------------


def make_cnn(num_classes: int = 5, max_filter_size: int = 4) -> TextCNN:
    return TextCNN(
        vocab_size=30,
        embedding_dim=8,
        filter_sizes=range(1, max_filter_size + 1),
        num_filters=6,
        hidden_dim=10,
        dropout_p=0.1,
        num_classes=num_classes,
    )


@pytest.mark.parametrize(("batch", "length"), [(3, 12), (1, 4), (2, 1), (4, 3)])
def test_text_cnn_output_shape(batch, length):
    torch.manual_seed(0)
    model = make_cnn().eval()
    ids = torch.randint(1, 30, (batch, length))
    logits = model(ids)
    assert logits.shape == (batch, 5)
    assert torch.isfinite(logits).all()


def test_text_cnn_short_input_matches_zero_padded():
    torch.manual_seed(0)
    model = make_cnn(max_filter_size=5).eval()
    short = torch.tensor([[3, 7]])
    padded = torch.tensor([[3, 7, 0, 0, 0]])
    torch.testing.assert_close(model(short), model(padded))


def test_ngram_bag_output_shape_and_padding():
    torch.manual_seed(0)
    model = NgramBag(vocab_size=50, embedding_dim=8, hidden_dim=10, dropout_p=0.1, num_classes=4)
    model.eval()
    ids = torch.tensor([[5, 9, 0, 0], [7, 8, 11, 12]])
    logits = model(ids)
    assert logits.shape == (2, 4)
    # Padding is ignored by the mean: trailing zeros do not change the output.
    torch.testing.assert_close(model(torch.tensor([[5, 9]])), logits[:1])


def test_tfidf_linear_nb_scale_is_the_naive_bayes_log_count_ratio():
    """begin_fit's scale equals |log(p/|p|_1) - log(q/|q|_1)| computed by hand (NBSVM)."""
    vocab = NgramVocab.fit(NGRAM_TEXTS, max_size=10_000)
    ids = torch.from_numpy(vocab.encode(NGRAM_TEXTS))
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])[: len(NGRAM_TEXTS)]
    model = TfidfLinear(vocab.idf, vocab.num_word_features, num_classes=2, nb_scale=True)
    model.begin_fit(ids, labels)
    assert model.class_scale is not None

    presence = np.zeros((len(NGRAM_TEXTS), vocab.vocab_size))
    for row, row_ids in enumerate(ids.tolist()):
        presence[row, [i for i in row_ids if i]] = 1
    presence = presence[:, 1:]  # column 0 pads
    for cls in range(2):
        positive = 1 + presence[labels[:, cls].numpy() == 1].sum(axis=0)
        negative = 1 + presence[labels[:, cls].numpy() == 0].sum(axis=0)
        ratio = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
        np.testing.assert_allclose(model.class_scale[1:, cls].numpy(), np.abs(ratio), rtol=1e-5)


def test_tfidf_linear_end_fit_folds_the_scale_into_the_weights():
    """After end_fit the module has no scale, the same logits, and a plain state_dict."""
    torch.manual_seed(0)
    vocab = NgramVocab.fit(NGRAM_TEXTS, max_size=10_000)
    ids = torch.from_numpy(vocab.encode(NGRAM_TEXTS))
    labels = (torch.rand(len(NGRAM_TEXTS), 3) > 0.5).float()
    model = TfidfLinear(vocab.idf, vocab.num_word_features, num_classes=3, nb_scale=True)
    model.begin_fit(ids, labels)
    torch.nn.init.normal_(model.weights.weight)
    scaled = model(ids)
    assert not torch.allclose(scaled, model.weights(ids, per_sample_weights=model.features(ids)))
    model.end_fit()
    assert model.class_scale is None
    torch.testing.assert_close(model(ids), scaled)
    plain = TfidfLinear(vocab.idf, vocab.num_word_features, num_classes=3)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain(ids), scaled)


def test_tfidf_linear_without_nb_scale_has_no_class_scale():
    vocab = NgramVocab.fit(NGRAM_TEXTS, max_size=10_000)
    ids = torch.from_numpy(vocab.encode(NGRAM_TEXTS))
    model = TfidfLinear(vocab.idf, vocab.num_word_features, num_classes=2)
    model.begin_fit(ids, torch.ones(len(NGRAM_TEXTS), 2))
    assert model.class_scale is None


# Small layers per architecture: each declares only its own knobs.
SMALL = {
    "linear": {"architecture": "linear", "max_ngrams": 500},
    "ngram": {"architecture": "ngram", "embedding_dim": 8, "hidden_dim": 8, "max_ngrams": 500},
    "cnn": {"architecture": "cnn", "embedding_dim": 8, "hidden_dim": 8, "num_filters": 4},
}


@pytest.mark.parametrize("architecture", ["cnn", "ngram", "linear"])
def test_build_model_from_params(architecture):
    params = TextParams.model_validate({"model": SMALL[architecture]})
    encoder = fit_encoder(params, TEXTS)
    expected_encoder = Tokenizer if architecture == "cnn" else NgramVocab
    assert isinstance(encoder, expected_encoder)
    model = WORKLOAD.build_model(params, encoder, num_classes=3).eval()
    expected = {"ngram": NgramBag, "cnn": TextCNN, "linear": TfidfLinear}[architecture]
    assert isinstance(model, expected)
    ids = torch.from_numpy(encoder.encode(TEXTS))
    assert model(ids).shape == (3, 3)
    # A fresh model each call, built the same way as the workload's.
    assert type(build_model(params, encoder, num_classes=3)) is expected


def test_build_model_follows_the_architecture_params():
    cnn = TextParams.model_validate({"model": TINY_CNN})
    tokenizer = fit_encoder(cnn, TEXTS)
    assert isinstance(tokenizer, Tokenizer)
    assert tokenizer.max_length == cnn.model.max_length
    assert tokenizer.char_level is False
    model = build_model(cnn, tokenizer, num_classes=4)
    assert isinstance(model, TextCNN)
    assert model.embeddings.weight.shape == (len(tokenizer), TINY_CNN["embedding_dim"])
    assert model.filter_sizes == (1, 2)  # max_filter_size 2
    assert [conv.out_channels for conv in model.conv] == [TINY_CNN["num_filters"]] * 2
    assert model.fc1.out_features == TINY_CNN["hidden_dim"]
    assert model.fc2.out_features == 4

    chars = cnn.model_copy(
        update={"model": cnn.model.model_copy(update={"char_level": True, "min_token_freq": 2})}
    )
    char_tokenizer = fit_encoder(chars, TEXTS)
    assert isinstance(char_tokenizer, Tokenizer) and char_tokenizer.char_level
    # Characters seen at least twice in TEXTS, plus <pad> and <unk>.
    counts = pd.Series(list("".join(TEXTS))).value_counts()
    assert len(char_tokenizer) == 2 + int((counts >= 2).sum())

    linear = TextParams.model_validate({"model": {"architecture": "linear", "max_ngrams": 3}})
    vocab = fit_encoder(linear, TEXTS)
    assert isinstance(vocab, NgramVocab)
    assert len(vocab.words) == 3 and len(vocab.chars) == 3
    tfidf = build_model(linear, vocab, num_classes=2)
    assert isinstance(tfidf, TfidfLinear)
    assert tfidf.nb_scale is linear.model.nb_scale is True
    assert tfidf.weights.weight.shape == (vocab.vocab_size, 2)


def test_load_encoder_restores_either_kind():
    tokenizer = Tokenizer(char_level=False, max_length=4).fit(TEXTS)
    vocab = NgramVocab.fit(TEXTS, max_size=50)
    assert isinstance(load_encoder(tokenizer.to_dict()), Tokenizer)
    assert isinstance(load_encoder(vocab.to_dict()), NgramVocab)
