"""What predict does to an incoming grey image before the model's own transforms.

A model learns its training images' conventions: the digits and Fashion-MNIST are a light
object on a dark (0) background, spread over 0..255. An image saved another way (a digit
with its raw 0..16 values, dark ink on white paper) is not refused by the network: it is
answered, confidently and wrongly. :func:`conform` brings a reasonable image to the
model's conventions, or refuses it with one line:

1. a constant image (every pixel the same) is refused: it holds nothing to classify;
2. an image whose brightest and darkest pixels differ by less than
   :data:`MIN_GREY_LEVELS` is stretched linearly to 0..255;
3. its background is read from its outer ring of pixels (:func:`image_background`); where
   the model knows its training background (:func:`training_background`), an image of
   the opposite one is inverted and one whose background cannot be told is refused.
   Models logged before the background was recorded skip this step.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from tagifai.errors import TagifaiError

__all__ = [
    "BACKGROUNDS",
    "MIN_GREY_LEVELS",
    "Background",
    "conform",
    "image_background",
    "training_background",
]

Background = Literal["dark", "light"]
BACKGROUNDS: tuple[Background, ...] = ("dark", "light")
# Max - min below this is stretched: raw 0..16 digits span 16; a scanned or photographed
# image spans far more.
MIN_GREY_LEVELS = 32
# The ring's median must be clearly on one side of mid-grey (128): a ring that is mostly
# grey, or half dark and half light, tells no background.
DARK_BELOW = 96
LIGHT_FROM = 160
# Share of training images that must agree on a background for the model to record one:
# a few objects fill their frame (Fashion-MNIST's bags and shirts) and still read dark,
# but a set with a tenth of each kind has no one background to conform to.
TRAINING_AGREEMENT = 0.9


def _ring(images: np.ndarray) -> np.ndarray:
    """The outer ring of pixels (one pixel wide) of each image ``(..., H, W)``."""
    height, width = images.shape[-2:]
    inner = np.zeros((height, width), dtype=bool)
    inner[1:-1, 1:-1] = True
    return images[..., ~inner]


def _ring_medians(images: np.ndarray) -> np.ndarray:
    """The median of each image's outer ring, for a stack ``(N, H, W)`` or one image."""
    return np.median(_ring(images).astype(np.float64), axis=-1)


def _background_of(median: float) -> Background | None:
    if median < DARK_BELOW:
        return "dark"
    if median >= LIGHT_FROM:
        return "light"
    return None


def image_background(image: np.ndarray) -> Background | None:
    """Whether a grey image's background is dark or light, or ``None`` when unclear.

    The background is read from the outer ring of pixels, where objects of the usual
    data sets seldom reach: its median below :data:`DARK_BELOW` is dark, at or above
    :data:`LIGHT_FROM` light; between (mid-grey, or a ring half dark and half light) it
    cannot be told.

    Args:
        image: ``uint8`` array ``(H, W)``.

    Returns:
        ``"dark"``, ``"light"`` or ``None``.
    """
    return _background_of(float(_ring_medians(image)))


def training_background(images: np.ndarray) -> Background | None:
    """The background that at least :data:`TRAINING_AGREEMENT` of the images share.

    Args:
        images: Training images, ``uint8`` array ``(N, H, W)``.

    Returns:
        ``"dark"``, ``"light"``, or ``None`` when no background is that common (predict
        then leaves polarity alone).
    """
    if len(images) == 0:
        return None
    medians = _ring_medians(images)
    for background in BACKGROUNDS:
        share = (medians < DARK_BELOW) if background == "dark" else (medians >= LIGHT_FROM)
        if share.mean() >= TRAINING_AGREEMENT:
            return background
    return None


def conform(image: np.ndarray, expected: Background | None, where: str) -> np.ndarray:
    """An incoming grey image brought to the model's conventions (see the module).

    Args:
        image: ``uint8`` array ``(H, W)``, already at the model's size.
        expected: The background of the model's training images; ``None`` skips the
            polarity step (a model logged before it was recorded, or trained on mixed
            backgrounds).
        where: What to call the image in errors (its row, and file when read from one).

    Returns:
        A ``uint8`` array ``(H, W)``: the image itself when nothing needed changing.

    Raises:
        TagifaiError: One line naming ``where``, when the image is constant or its
            background cannot be told.
    """
    low, high = int(image.min()), int(image.max())
    if low == high:
        raise TagifaiError(f"{where}: every pixel is {low}: a blank image has nothing to classify")
    if high - low < MIN_GREY_LEVELS:
        # Low-contrast values (raw 0..16 digits) to the 0..255 the model was trained on.
        stretched = (image.astype(np.float64) - low) * (255.0 / (high - low))
        image = np.rint(stretched).astype(np.uint8)
    if expected is None:
        return image
    median = float(_ring_medians(image))
    background = _background_of(median)
    if background is None:
        other = "light" if expected == "dark" else "dark"
        raise TagifaiError(
            f"{where}: background unclear: its border's median grey {median:g} is near "
            f"mid-grey; this model expects a {expected} background ({other} ones are "
            f"inverted): send an image whose border is plainly dark or light"
        )
    if background != expected:
        image = 255 - image
    return image
