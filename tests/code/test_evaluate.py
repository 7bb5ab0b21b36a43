"""Tests of tagifai.workloads.text.evaluate against small examples computed by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tagifai.workloads.base import DecisionRule
from tagifai.workloads.text import evaluate
from tagifai.workloads.text.params import TextData, TextParams

# Thresholds: 4 rows x 3 classes; class 2 has no positive example.
Y_VAL = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 0, 0]])
P_VAL = np.array(
    [
        [0.9, 0.2, 0.5],
        [0.6, 0.8, 0.5],
        [0.7, 0.3, 0.5],
        [0.1, 0.4, 0.5],
    ]
)

# Metrics: 4 rows x 3 classes.
#   class 0: true {0, 2}, pred {0, 2}     -> TP 2, FP 0, FN 0: P 1,   R 1,   F1 1
#   class 1: true {1, 2}, pred {1}        -> TP 1, FP 0, FN 1: P 1,   R 1/2, F1 2/3
#   class 2: true {0, 1, 3}, pred {1,2,3} -> TP 2, FP 1, FN 1: P 2/3, R 2/3, F1 2/3
Y_TRUE = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
Y_PRED = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1], [0, 0, 1]])
CLASSES = ["cv", "nlp", "rl"]


def test_choose_threshold_global():
    # Micro curve over all 12 cells, scores high to low:
    #   0.9 P | 0.8 P | 0.7 N | 0.6 P | 0.5 N x4 | ...
    #   cut 0.9: F1 1/2; 0.8: 4/5; 0.7: 2/3; 0.6: P 3/4, R 1 -> 6/7 (best); 0.5: 6/11
    cuts = evaluate.choose_threshold(Y_VAL, P_VAL, mode="global")
    assert cuts.shape == (3,)
    np.testing.assert_allclose(cuts, [0.6, 0.6, 0.6])


def test_choose_threshold_per_class():
    # class 0: cut 0.9 F1 2/3, 0.7 F1 1/2, 0.6 F1 4/5 (best), 0.1 F1 2/3
    # class 1: cut 0.8 catches the only positive alone: F1 1
    # class 2: no positives -> the global cut-off (0.6), not the neutral 0.5
    cuts = evaluate.choose_threshold(Y_VAL, P_VAL, mode="per_class")
    np.testing.assert_allclose(cuts, [0.6, 0.8, 0.6])


def test_choose_threshold_no_positives_at_all():
    y = np.zeros((3, 2))
    probs = np.array([[0.1, 0.9], [0.4, 0.2], [0.3, 0.3]])
    for mode in ("global", "per_class"):
        np.testing.assert_allclose(evaluate.choose_threshold(y, probs, mode=mode), [0.5, 0.5])


def test_chosen_threshold_gives_best_f1():
    cuts = evaluate.choose_threshold(Y_VAL, P_VAL, mode="per_class")
    pred = evaluate.apply_threshold(P_VAL, cuts)
    assert pred[:, :2].tolist() == [[1, 0], [1, 1], [1, 0], [0, 0]]
    assert evaluate.f1_at(Y_VAL[:, 0], pred[:, 0], average="binary") == pytest.approx(0.8)
    assert evaluate.f1_at(Y_VAL[:, 1], pred[:, 1], average="binary") == pytest.approx(1.0)


def test_apply_threshold_scalar_and_per_class():
    probs = np.array([[0.2, 0.5, 0.9], [0.7, 0.49, 0.1]])
    assert evaluate.apply_threshold(probs, 0.5).tolist() == [[0, 1, 1], [1, 0, 0]]
    per_class = np.array([0.1, 0.6, 0.95])
    assert evaluate.apply_threshold(probs, per_class).tolist() == [[1, 0, 0], [1, 0, 0]]
    assert evaluate.apply_threshold(probs, 0.5).dtype == np.int64


def test_get_metrics_overall():
    overall = evaluate.get_metrics(Y_TRUE, Y_PRED, CLASSES)["overall"]
    # Weighted by support (2, 2, 3 of 7).
    assert overall["precision"] == pytest.approx((2 * 1 + 2 * 1 + 3 * 2 / 3) / 7)  # 6/7
    assert overall["recall"] == pytest.approx((2 * 1 + 2 * 0.5 + 3 * 2 / 3) / 7)  # 5/7
    assert overall["f1"] == pytest.approx((2 * 1 + 2 * 2 / 3 + 3 * 2 / 3) / 7)  # 16/21
    # Micro: TP 5, FP 1, FN 2.
    assert overall["micro_precision"] == pytest.approx(5 / 6)
    assert overall["micro_recall"] == pytest.approx(5 / 7)
    assert overall["micro_f1"] == pytest.approx(10 / 13)
    assert overall["num_samples"] == 4


def test_f1_at_matches_overall():
    assert evaluate.f1_at(Y_TRUE, Y_PRED) == pytest.approx(16 / 21)
    assert evaluate.f1_at(Y_TRUE, Y_PRED, average="micro") == pytest.approx(10 / 13)
    assert evaluate.f1_at(np.zeros((2, 2)), np.zeros((2, 2))) == 0.0


def test_get_metrics_per_class():
    per_class = evaluate.get_metrics(Y_TRUE, Y_PRED, CLASSES)["class"]
    assert list(per_class) == CLASSES
    expected = {
        "cv": (1.0, 1.0, 1.0, 2),
        "nlp": (1.0, 0.5, 2 / 3, 2),
        "rl": (2 / 3, 2 / 3, 2 / 3, 3),
    }
    for name, (precision, recall, f1, support) in expected.items():
        assert per_class[name]["precision"] == pytest.approx(precision)
        assert per_class[name]["recall"] == pytest.approx(recall)
        assert per_class[name]["f1"] == pytest.approx(f1)
        assert per_class[name]["num_samples"] == support


def test_slice_masks():
    texts = [
        "one two",  # 2 words: short
        "a b c",  # 3 words: neither
        " ".join(["w"] * 9),  # 9 words > 4 * 2: long
        " ".join(["w"] * 8),  # 8 words: not over 4x, so not long
    ]
    y_true = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [1, 1, 0]])
    masks = evaluate.slice_masks(texts, y_true, short_words=2)
    assert set(masks) == {"short_text", "long_text", "multi_tag"}
    assert masks["short_text"].tolist() == [True, False, False, False]
    assert masks["long_text"].tolist() == [False, False, True, False]
    assert masks["multi_tag"].tolist() == [True, False, False, False]


def test_get_metrics_slices():
    slices = {
        "ends": np.array([True, False, False, True]),
        "none": np.zeros(4, dtype=bool),
    }
    metrics = evaluate.get_metrics(Y_TRUE, Y_PRED, CLASSES, slices)
    assert set(metrics["slices"]) == {"ends", "none"}
    # Rows 0 and 3: cv TP 1 (support 1); nlp no support; rl TP 1, FN 1 (support 2).
    ends = metrics["slices"]["ends"]
    assert ends["num_samples"] == 2
    assert ends["precision"] == pytest.approx(1.0)
    assert ends["recall"] == pytest.approx((1 * 1 + 2 * 0.5) / 3)
    assert ends["f1"] == pytest.approx((1 * 1 + 2 * 2 / 3) / 3)
    assert ends["micro_precision"] == pytest.approx(1.0)
    assert ends["micro_recall"] == pytest.approx(2 / 3)
    assert ends["micro_f1"] == pytest.approx(0.8)
    assert metrics["slices"]["none"] == {"num_samples": 0}


def test_get_metrics_without_slices():
    assert evaluate.get_metrics(Y_TRUE, Y_PRED, CLASSES)["slices"] == {}


def test_evaluate_predictor_uses_the_predictors_rule_and_slices():
    """Test rows are scored at the predictor's tuned cut-offs, with slices from its params."""
    frame = pd.DataFrame(
        {
            "text": ["one two", "a b c", " ".join(["w"] * 9), "x y"],
            "tags": [["cv", "rl"], ["nlp", "rl"], ["cv", "nlp"], ["rl"]],  # Y_TRUE
        }
    )
    probs = np.array(
        [[0.9, 0.1, 0.3], [0.2, 0.7, 0.8], [0.6, 0.3, 0.9], [0.1, 0.2, 0.55]],
        dtype=np.float32,
    )
    cut = (0.5, 0.6, 0.5)  # per class: gives Y_PRED
    params = TextParams(data=TextData(short_text_words=2))
    predictor = SimpleNamespace(
        classes=CLASSES,
        params=params,
        decision=DecisionRule(kind="threshold", thresholds=cut),
        predict_proba=lambda texts: probs[: len(texts)],
    )
    np.testing.assert_array_equal(evaluate.apply_threshold(probs, np.array(cut)), Y_PRED)
    metrics = evaluate.evaluate_predictor(predictor, frame)
    masks = evaluate.slice_masks(frame["text"].tolist(), Y_TRUE, short_words=2)
    assert metrics == evaluate.get_metrics(Y_TRUE, Y_PRED, CLASSES, masks)
    assert metrics["overall"]["f1"] == pytest.approx(16 / 21)
    assert metrics["slices"]["short_text"]["num_samples"] == 2  # "one two", "x y"
    assert metrics["slices"]["long_text"]["num_samples"] == 1

    # One global cut-off of 0.95 predicts nothing: every score falls to 0.
    strict = SimpleNamespace(
        **{**vars(predictor), "decision": DecisionRule(kind="threshold", thresholds=(0.95,))}
    )
    assert evaluate.evaluate_predictor(strict, frame)["overall"]["f1"] == 0.0
