"""Prediction payloads of the image workload: bytes, base64, files or arrays to grey images.

Accepted, one image per row:

- an ``image`` column of PNG/JPEG/BMP/GIF bytes, or of the same bytes base64-encoded
  (what a JSON request to ``mlflow models serve`` carries), or of uint8 arrays;
- a ``path`` column of image files, read only where the caller's input policy allows
  it (``tagifai predict``; never a served model).

Each image is decoded to grey, resized to the model's input size and conformed to its
training images (:mod:`tagifai.workloads.images.conform`: blank images refused,
low-contrast ones stretched, the background inverted or refused). Every limit is
checked before decoding (:mod:`tagifai.workloads.images.data`).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from tagifai.errors import TagifaiError
from tagifai.workloads.images import conform, data

__all__ = [
    "MAX_PREDICT_IMAGES",
    "PATHS_REFUSED",
    "images_from_frame",
    "read_image_file",
    "read_path_list",
]

MAX_PREDICT_IMAGES = 10_000  # images in one request or file
MAX_LIST_BYTES = 10 * 1024 * 1024  # a --file list of image paths
PATHS_REFUSED = (
    "input: a 'path' column is not read here (a served model reads no files); send 'image'"
)


def read_image_file(path: Path | str, where: str) -> bytes:
    """The bytes of an image file, bounded (``TagifaiError`` naming it otherwise)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise TagifaiError(f"{where}: {path}: no such image file")
        if path.stat().st_size > data.MAX_IMAGE_BYTES:
            raise TagifaiError(f"{where}: {path}: larger than {data.MAX_IMAGE_BYTES} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise TagifaiError(f"{where}: {path}: cannot read ({exc.strerror})") from None


def read_path_list(path: Path) -> pd.DataFrame:
    """A text file of image paths, one a line (relative ones from the file's folder)."""
    try:
        if not path.is_file():
            raise TagifaiError(f"{path}: file not found")
        if path.stat().st_size > MAX_LIST_BYTES:
            raise TagifaiError(f"{path}: larger than {MAX_LIST_BYTES} bytes")
        content = path.read_bytes()
    except OSError as exc:
        raise TagifaiError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        lines = [line.strip() for line in content.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise TagifaiError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if not lines:
        raise TagifaiError(f"{path}: no image paths in file")
    return pd.DataFrame({"path": [str(path.parent / line) for line in lines]})


def _decode_array(value: Any, size: tuple[int, int], where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise TagifaiError(
            f"{where}: expected a grey uint8 image (H, W), got {array.dtype} {array.shape!r:.40}"
        )
    if array.shape[0] * array.shape[1] > data.MAX_IMAGE_PIXELS:
        raise TagifaiError(f"{where}: {array.shape} is more than {data.MAX_IMAGE_PIXELS} pixels")
    if array.shape == size:
        return array
    resized = Image.fromarray(array, mode="L").resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def _decode_value(value: Any, size: tuple[int, int], where: str) -> np.ndarray:
    if isinstance(value, bytes | bytearray):
        return data.decode_image(bytes(value), size, where)
    if isinstance(value, str):
        if len(value) > data.MAX_IMAGE_BYTES * 4 // 3 + 4:
            raise TagifaiError(f"{where}: larger than {data.MAX_IMAGE_BYTES} bytes")
        try:
            content = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise TagifaiError(f"{where}: a string image must be base64 (PNG/JPEG bytes)") from None
        return data.decode_image(content, size, where)
    if isinstance(value, np.ndarray | list):
        return _decode_array(value, size, where)
    raise TagifaiError(f"{where}: expected image bytes, base64 or an array, got {type(value)}")


def images_from_frame(
    raw: pd.DataFrame,
    size: tuple[int, int],
    allow_paths: bool = False,
    background: conform.Background | None = None,
) -> list[np.ndarray]:
    """Grey uint8 images at ``size`` (height, width) from a payload frame, each conformed
    to the model's training images (:func:`~tagifai.workloads.images.conform.conform`).

    A ``path`` column is read only with ``allow_paths`` (the CLI's own user names
    files); otherwise it is refused before any file is looked at, with the same answer
    whatever it names: a served model reads no file of its machine for whoever sends a
    request, nor tells which exist.

    Args:
        raw: The payload: an ``image`` or a ``path`` column.
        size: ``(height, width)`` the model takes.
        allow_paths: Whether a ``path`` column may be read.
        background: The model's training background (``None``: polarity left alone).

    Returns:
        One image per row.

    Raises:
        TagifaiError: Naming the row (and file) and what is wrong with it.
    """
    if "path" in raw.columns and not allow_paths:
        if raw["path"].notna().any():
            raise TagifaiError(PATHS_REFUSED)
        raw = raw.drop(columns="path")  # an empty optional column: nothing to read
    if "image" not in raw.columns and "path" not in raw.columns:
        raise TagifaiError(
            f"input: expected an 'image' column (bytes, base64 or arrays) or a 'path' column, "
            f"got {list(raw.columns)!r:.200}"
        )
    if len(raw) == 0:
        raise TagifaiError("input: no images")
    if len(raw) > MAX_PREDICT_IMAGES:
        raise TagifaiError(f"input: {len(raw)} images; at most {MAX_PREDICT_IMAGES} at once")
    images = []
    column = "image" if "image" in raw.columns else "path"
    for row, value in enumerate(raw[column], start=1):
        where = f"input: row {row}"
        if column == "path":
            if not isinstance(value, str):
                raise TagifaiError(f"{where}: path: expected a file path, got {value!r:.40}")
            path = value
            value = read_image_file(path, where)
            where = f"{where}: {path}"  # a file's own errors name it too
        images.append(conform.conform(_decode_value(value, size, where), background, where))
    return images
