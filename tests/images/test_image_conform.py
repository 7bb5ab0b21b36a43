"""The rules predict conforms an incoming image by, on arrays made in the test (no model:
the entry points are tested with a trained one in ``test_image_workload.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from tagifai.errors import TagifaiError
from tagifai.workloads.images.conform import conform, image_background, training_background
from tagifai.workloads.images.models import ImageEncoder


def _object(background: int, ink: int, size: int = 8) -> np.ndarray:
    """A bar of ``ink`` across the middle of a ``background`` square."""
    image = np.full((size, size), background, dtype=np.uint8)
    image[2:-2, size // 2 - 1 : size // 2 + 1] = ink
    return image


def test_a_low_contrast_image_is_stretched_to_the_full_range():
    raw = _object(0, 16)
    raw[3, 2] = 8
    stretched = conform(raw, "dark", "x")
    assert stretched.dtype == np.uint8
    assert stretched.min() == 0 and stretched.max() == 255 and stretched[3, 2] == 128
    wide = _object(0, 40)  # 41 grey levels: left as it is
    assert np.array_equal(conform(wide, "dark", "x"), wide)


def test_the_opposite_background_is_inverted_and_a_matching_one_kept():
    dark = _object(0, 255)
    assert np.array_equal(conform(255 - dark, "dark", "x"), dark)
    assert np.array_equal(conform(dark, "light", "x"), 255 - dark)
    assert np.array_equal(conform(dark, "dark", "x"), dark)
    assert np.array_equal(conform(255 - dark, None, "x"), 255 - dark)  # no background known


def test_an_object_touching_the_border_leaves_the_background_readable():
    image = _object(0, 255, size=28)
    image[:, 10:18] = 255  # a trouser leg from top to bottom: 16 of 108 border pixels
    assert image_background(image) == "dark"


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((8, 8), 7, dtype=np.uint8), "row 3: every pixel is 7: a blank image"),
        (_object(128, 255), "row 3: background unclear: its border's median grey 128"),
        (
            np.hstack([np.zeros((8, 4)), np.full((8, 4), 255)]).astype(np.uint8),
            "row 3: background unclear: its border's median grey 127.5",
        ),
    ],
)
def test_blank_and_unclear_images_are_refused_in_one_line(image, message):
    with pytest.raises(TagifaiError) as refused:
        conform(image, "dark", "row 3")
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_blank_image_is_refused_even_without_a_background():
    with pytest.raises(TagifaiError, match="blank image"):
        conform(np.zeros((8, 8), dtype=np.uint8), None, "row 1")


def test_the_training_background_is_the_one_nine_in_ten_share():
    dark = np.stack([_object(0, 200 + i) for i in range(10)])
    assert training_background(dark) == "dark"
    assert training_background(255 - dark) == "light"
    assert training_background(np.concatenate([dark[:8], 255 - dark[:2]])) is None
    assert training_background(np.concatenate([dark[:9], 255 - dark[:1]])) == "dark"
    assert training_background(dark[:0]) is None


def test_the_encoder_keeps_its_background_and_reads_models_without_one():
    encoder = ImageEncoder.fit(np.stack([_object(0, 255), _object(0, 200), _object(0, 100)]))
    assert encoder.background == "dark"
    assert ImageEncoder.from_dict(encoder.to_dict()).background == "dark"
    state = {"kind": "image", "height": 8, "width": 8, "mean": 0.1, "std": 0.2}
    assert ImageEncoder.from_dict(state).background is None  # saved before it was recorded
    assert ImageEncoder.from_dict({**state, "background": None}).background is None
    for bad in ("grey", 1, ["dark"]):
        with pytest.raises(ValueError, match=r"background .* must be 'dark', 'light' or null"):
            ImageEncoder.from_dict({**state, "background": bad})
