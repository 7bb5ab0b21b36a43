"""Tests for image data reading, validation and splitting.

Every file is written by the test into ``tmp_path``: tiny IDX files (plain and gzipped) and
tiny PNG/JPEG images. Nothing reads shared data or the network.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import subprocess_env
from PIL import Image

from tagifai.errors import TagifaiError
from tagifai.workloads.images import data as image_data
from tagifai.workloads.images.data import (
    DIGITS_SOURCE,
    FASHION_MNIST_CLASSES,
    ImageData,
    ImageSet,
    decode_image,
    load_images,
    read_idx,
    split_images,
)
from tagifai.workloads.images.payload import images_from_frame

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


# ---------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray, *, header: bytes | None = None) -> bytes:
    """IDX encoding of a uint8 array; ``header`` replaces the 4 magic bytes."""
    magic = header if header is not None else bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(struct.pack(">I", extent) for extent in array.shape)
    return magic + dims + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, raw: bytes | None = None) -> Path:
    """Write ``array`` (or ``raw`` bytes) as an IDX file, gzipped when the name ends .gz."""
    content = idx_bytes(array) if raw is None else raw
    path.write_bytes(gzip.compress(content, mtime=0) if path.name.endswith(".gz") else content)
    return path


def tiny_set(n_classes: int = 3, per_class: int = 4, height: int = 5, width: int = 4) -> ImageSet:
    """Images whose every pixel is the row number, so rows can be traced through splits."""
    n = n_classes * per_class
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None], (n, height, width))
    labels = np.tile(np.arange(n_classes, dtype=np.int64), per_class)  # interleaved classes
    return ImageSet(images=images.copy(), labels=labels)


def write_idx_folder(
    folder: Path, train: ImageSet, test: ImageSet | None = None, *, gz: bool = False
) -> Path:
    """An MNIST-style folder holding ``train`` (and ``test`` as t10k)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(folder / (TRAIN_IMAGES + suffix), train.images)
    write_idx(folder / (TRAIN_LABELS + suffix), train.labels.astype(np.uint8))
    if test is not None:
        write_idx(folder / (TEST_IMAGES + suffix), test.images)
        write_idx(folder / (TEST_LABELS + suffix), test.labels.astype(np.uint8))
    return folder


def png_bytes(color: object, size: tuple[int, int] = (6, 6), mode: str = "RGB") -> bytes:
    """A solid PNG of PIL ``size`` (width, height)."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")  # type: ignore[arg-type]
    return buffer.getvalue()


def save_image(path: Path, color: object, size: tuple[int, int], mode: str = "RGB") -> Path:
    """Save a solid image; the format follows the file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)  # type: ignore[arg-type]
    return path


def in_memory(train: ImageSet, test: ImageSet | None = None, n_classes: int = 3) -> ImageData:
    """ImageData built directly, for split tests."""
    return ImageData(
        train=train,
        test=test,
        classes=[str(i) for i in range(n_classes)],
        source="memory",
        digest="0" * 16,
        counts={},
    )


def one_line(exc: pytest.ExceptionInfo[TagifaiError]) -> str:
    """The error message, asserting it is a single line."""
    message = str(exc.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------- digits


def test_digits_default() -> None:
    data = load_images(None)
    assert data.train.images.shape == (1797, 8, 8)
    assert data.train.images.dtype == np.uint8
    assert data.train.labels.dtype == np.int64
    assert int(data.train.images.max()) == 255
    assert int(data.train.images.min()) == 0
    assert data.classes == [str(i) for i in range(10)]
    assert set(np.unique(data.train.labels)) == set(range(10))
    assert data.test is None
    assert data.source == DIGITS_SOURCE
    assert re.fullmatch(r"[0-9a-f]{16}", data.digest)
    assert load_images(None, image_size=64).digest == data.digest  # stable; size ignored
    assert data.counts == {
        "train_images": 1797,
        "test_images": 0,
        "classes": 10,
        "height": 8,
        "width": 8,
    }


def test_digits_scaling_matches_rounded_sixteenths() -> None:
    from sklearn.datasets import load_digits

    raw = load_digits().images[0]
    expected = np.array([[round(v * 255 / 16) for v in row] for row in raw], dtype=np.uint8)
    np.testing.assert_array_equal(load_images(None).train.images[0], expected)


# ---------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_train_only(tmp_path: Path, gz: bool) -> None:
    train = tiny_set()
    folder = write_idx_folder(tmp_path / "mnist", train, gz=gz)
    data = load_images(str(folder))
    np.testing.assert_array_equal(data.train.images, train.images)
    np.testing.assert_array_equal(data.train.labels, train.labels)
    assert data.train.labels.dtype == np.int64
    assert data.test is None
    assert data.classes == ["0", "1", "2"]
    assert data.source == str(folder)
    assert data.counts["height"] == 5 and data.counts["width"] == 4


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_with_t10k(tmp_path: Path, gz: bool) -> None:
    train, test = tiny_set(), tiny_set(per_class=2)
    folder = write_idx_folder(tmp_path / "mnist", train, test, gz=gz)
    data = load_images(str(folder), image_size=16)  # ignored: IDX keeps its native size
    assert data.test is not None
    np.testing.assert_array_equal(data.test.images, test.images)
    np.testing.assert_array_equal(data.test.labels, test.labels)
    assert data.train.images.shape == (12, 5, 4)
    assert data.counts["test_images"] == 6
    # The official test set is part of what the digest identifies.
    without = load_images(str(write_idx_folder(tmp_path / "train-only", train, gz=gz)))
    assert without.digest != data.digest


def test_idx_plain_file_wins_over_gz(tmp_path: Path) -> None:
    train = tiny_set()
    folder = write_idx_folder(tmp_path / "mnist", train)
    write_idx(folder / (TRAIN_IMAGES + ".gz"), 255 - train.images)
    data = load_images(str(folder))
    np.testing.assert_array_equal(data.train.images, train.images)


def test_idx_classes_txt(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "shapes", tiny_set())
    (folder / "classes.txt").write_text("circle\n\nsquare\n  \ntriangle\n")
    assert load_images(str(folder)).classes == ["circle", "square", "triangle"]


def test_idx_classes_txt_too_short(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "shapes", tiny_set())
    (folder / "classes.txt").write_text("circle\nsquare\n")
    labels = re.escape(str(folder / TRAIN_LABELS))
    with pytest.raises(
        TagifaiError,
        match=labels + r": label 2 at index 2 is outside 0\.\.1 \(classes\.txt names 2 classes\)$",
    ) as exc:
        load_images(str(folder))
    one_line(exc)


def test_idx_fashion_folder_gets_fashion_names(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "Fashion-MNIST", tiny_set(n_classes=10, per_class=3))
    assert load_images(str(folder)).classes == FASHION_MNIST_CLASSES
    plain = write_idx_folder(tmp_path / "other", tiny_set(n_classes=10, per_class=3))
    assert load_images(str(plain)).classes == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("bad-magic", bytes([1, 0, 8, 1, 0, 0, 0, 2, 7, 7]), r"bad magic 0x01000801"),
        ("float-code", bytes([0, 0, 0x0D, 1, 0, 0, 0, 2, 7, 7]), r"element type code 0x0d"),
        ("two-dims", bytes([0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 1, 7]), r"2 dimensions"),
        ("short-header", bytes([0, 0]), r"truncated: header is 2 bytes"),
        ("truncated", bytes([0, 0, 8, 1, 0, 0, 0, 5, 7, 7]), r"expected 5 bytes of data, got 2"),
        ("trailing", bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 7, 7]), r"trailing bytes"),
        ("zero-dim", bytes([0, 0, 8, 1, 0, 0, 0, 0]), r"dimension 0 is 0"),
        ("huge", bytes([0, 0, 8, 3]) + b"\xff\xff\xff\xff" * 3, r"over the \d+ limit"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_bad_files(
    tmp_path: Path, name: str, content: bytes, problem: str, gz: bool
) -> None:
    path = write_idx(tmp_path / (name + (".gz" if gz else "")), np.zeros(0), raw=content)
    with pytest.raises(TagifaiError, match=re.escape(str(path)) + ": .*" + problem) as exc:
        read_idx(path)
    one_line(exc)


def test_read_idx_returns_writable_uint8(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    result = read_idx(write_idx(tmp_path / "x.gz", array))
    np.testing.assert_array_equal(result, array)
    assert result.dtype == np.uint8 and result.flags.writeable


@pytest.mark.parametrize(
    "content",
    [
        b"this is not gzip at all",
        gzip.compress(idx_bytes(np.arange(50, dtype=np.uint8)))[:-12],  # cut mid-stream
    ],
    ids=["garbage", "cut"],
)
def test_read_idx_corrupt_gzip(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / (TRAIN_LABELS + ".gz")
    path.write_bytes(content)
    with pytest.raises(TagifaiError, match=re.escape(str(path)) + ": not a valid gzip file") as exc:
        read_idx(path)
    one_line(exc)


def test_read_idx_gzip_bad_crc(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(idx_bytes(np.arange(50, dtype=np.uint8))))
    packed[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path = tmp_path / "labels.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(TagifaiError, match=re.escape(str(path)) + ": not a valid gzip file"):
        read_idx(path)


def test_read_idx_gzip_over_size_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_data, "MAX_IDX_COMPRESSED_BYTES", 10)
    path = write_idx(tmp_path / "x.gz", np.arange(50, dtype=np.uint8))
    with pytest.raises(TagifaiError, match=r"over the 10 byte limit for a compressed IDX file"):
        read_idx(path)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    train = tiny_set()
    folder = write_idx_folder(tmp_path / "mnist", train, gz=True)
    labels = write_idx(folder / (TRAIN_LABELS + ".gz"), train.labels[:-1].astype(np.uint8))
    with pytest.raises(TagifaiError, match=re.escape(str(labels)) + ": 11 labels for 12 images"):
        load_images(str(folder))


def test_idx_labels_file_with_image_dims(tmp_path: Path) -> None:
    train = tiny_set()
    folder = write_idx_folder(tmp_path / "mnist", train)
    labels = write_idx(folder / TRAIN_LABELS, train.images)
    with pytest.raises(TagifaiError, match=re.escape(str(labels)) + r": 3 dimensions; labels"):
        load_images(str(folder))


def test_idx_t10k_images_without_labels(tmp_path: Path) -> None:
    train = tiny_set()
    folder = write_idx_folder(tmp_path / "mnist", train)
    write_idx(folder / TEST_IMAGES, train.images)
    with pytest.raises(
        TagifaiError, match=re.escape(str(folder / TEST_LABELS)) + r"\[\.gz\]: missing"
    ):
        load_images(str(folder))


def test_idx_train_images_missing(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / TRAIN_LABELS, tiny_set().labels.astype(np.uint8))
    with pytest.raises(
        TagifaiError, match=re.escape(str(folder / TRAIN_IMAGES)) + r"\[\.gz\]: missing"
    ):
        load_images(str(folder))


def test_idx_t10k_image_size_must_match(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "mnist", tiny_set(), tiny_set(height=6, width=6))
    with pytest.raises(TagifaiError, match=r"images are 6x6 but train images are 5x4"):
        load_images(str(folder))


def test_idx_too_many_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_data, "MAX_IMAGES", 10)
    folder = write_idx_folder(tmp_path / "mnist", tiny_set())
    with pytest.raises(TagifaiError, match=r"12 images is over the 10 image limit"):
        load_images(str(folder))


def test_idx_class_with_too_few_images(tmp_path: Path) -> None:
    train = tiny_set(per_class=3)
    assert train.labels[7] == 1
    keep = np.array([i for i in range(len(train)) if i != 7])  # class 1 keeps 2 images
    folder = write_idx_folder(tmp_path / "mnist", train.take(keep))
    with pytest.raises(TagifaiError, match=r"class '1' has 2 images; need at least 3"):
        load_images(str(folder))


def test_idx_single_class_refused(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "mnist", tiny_set(n_classes=1))
    with pytest.raises(TagifaiError, match=r"need at least 2"):
        load_images(str(folder))


# ---------------------------------------------------------------------------- locations


def test_location_not_a_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(TagifaiError, match=re.escape(f"{missing}: not a folder")):
        load_images(str(missing))
    a_file = tmp_path / "file.png"
    a_file.write_bytes(png_bytes((1, 2, 3)))
    with pytest.raises(TagifaiError, match=re.escape(f"{a_file}: not a folder")):
        load_images(str(a_file))


def test_location_empty_is_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_idx_folder(tmp_path, tiny_set())
    monkeypatch.chdir(tmp_path)
    assert len(load_images(".").train) == 12
    with pytest.raises(TagifaiError, match=r"^location: '' is empty"):
        load_images("")


def test_location_url_refused() -> None:
    with pytest.raises(TagifaiError, match=r"URLs are not supported for images yet"):
        load_images("https://example.com/mnist")


@pytest.mark.parametrize("size", [0, -1, 513, True, 2.5])
def test_image_size_out_of_range(tmp_path: Path, size: object) -> None:
    with pytest.raises(TagifaiError, match=r"image_size: .* must be an integer in 1\.\.512"):
        load_images(str(tmp_path), image_size=size)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- ImageFolder


def make_image_folder(root: Path, per_class: int = 3) -> Path:
    """Classes ``b``, ``a``, ``C`` (created out of order) of differently sized RGB PNGs."""
    colors = {"b": (255, 255, 255), "a": (255, 0, 0), "C": (0, 0, 0)}
    for name, color in colors.items():
        for i in range(per_class):
            save_image(root / name / f"img{i}.png", color, (5 + i * 7, 9 + i))
    return root


def test_image_folder_reads_grey_resized_sorted(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "folder")
    data = load_images(str(root), image_size=6)
    assert data.classes == ["C", "a", "b"]  # sorted by code point, like torchvision
    assert data.train.images.shape == (9, 6, 6)
    assert data.train.images.dtype == np.uint8
    assert data.test is None
    by_class = {
        name: data.train.images[data.train.labels == label]
        for label, name in enumerate(data.classes)
    }
    assert (by_class["C"] == 0).all()
    assert (by_class["b"] == 255).all()
    assert (by_class["a"] == 76).all()  # PIL's L = 0.299 R + 0.587 G + 0.114 B for pure red
    assert data.counts["height"] == 6 and data.counts["classes"] == 3


def test_image_folder_default_size_is_28(tmp_path: Path) -> None:
    data = load_images(str(make_image_folder(tmp_path / "folder")))
    assert data.train.images.shape[1:] == (28, 28)


def test_image_folder_jpeg_and_skipped_files(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    for name, level in (("dark", 20), ("light", 200)):
        for i, ext in enumerate([".jpg", ".JPEG", ".png"]):
            save_image(root / name / f"x{i}{ext}", level, (8, 8), mode="L")
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".hidden.png").write_bytes(b"garbage that would fail to decode")
    (root / ".cache").mkdir()  # a hidden folder is not a class
    data = load_images(str(root), image_size=8)
    assert data.classes == ["dark", "light"]
    assert len(data.train) == 6
    dark = data.train.images[data.train.labels == 0].astype(int)
    light = data.train.images[data.train.labels == 1].astype(int)
    assert np.abs(dark - 20).max() <= 3  # JPEG is lossy
    assert np.abs(light - 200).max() <= 3


def test_image_folder_empty_class(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "folder")
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(
        TagifaiError, match=re.escape(str(root / "empty")) + ": class folder has no"
    ):
        load_images(str(root))


def test_image_folder_corrupt_image(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "folder")
    bad = root / "a" / "broken.png"
    bad.write_bytes(png_bytes((1, 2, 3))[:30])
    with pytest.raises(TagifaiError, match=re.escape(f"{bad}: not a readable image")) as exc:
        load_images(str(root))
    one_line(exc)


def test_image_folder_oversized_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_data, "MAX_IMAGE_BYTES", 10)
    root = make_image_folder(tmp_path / "folder")
    with pytest.raises(TagifaiError, match=r"bytes is over the 10 byte limit for one image"):
        load_images(str(root))


def test_image_folder_no_classes(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    root.mkdir()
    (root / "loose.png").write_bytes(png_bytes((1, 2, 3)))
    with pytest.raises(TagifaiError, match=r"no IDX files .* and no class subfolders"):
        load_images(str(root))


def test_image_folder_too_few_images(tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "folder")
    (root / "a" / "img2.png").unlink()
    with pytest.raises(TagifaiError, match=r"class 'a' has 2 images; need at least 3"):
        load_images(str(root))


def test_image_folder_too_many_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_data, "MAX_IMAGES", 5)
    with pytest.raises(TagifaiError, match=r"over the 5 image limit"):
        load_images(str(make_image_folder(tmp_path / "folder")))


# ---------------------------------------------------------------------------- decode_image


def test_decode_image_too_many_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_data, "MAX_IMAGE_BYTES", 16)
    content = png_bytes((1, 2, 3))
    with pytest.raises(TagifaiError, match=rf"upload: {len(content)} bytes is over the 16 byte"):
        decode_image(content, (6, 6), where="upload")


def test_decode_image_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_data, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(TagifaiError, match=r"x\.png: 20x10 is 200 pixels, over the 100 pixel"):
        decode_image(png_bytes(0, (20, 10), mode="L"), (4, 4), where="x.png")


def test_decode_image_declared_bomb() -> None:
    """A small PNG whose header declares 100000x100000 pixels is refused before decoding."""
    content = bytearray(png_bytes(0, (4, 4), mode="L"))
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    content[ihdr : ihdr + 8] = struct.pack(">II", 100_000, 100_000)
    crc = zlib.crc32(bytes(content[ihdr - 4 : ihdr + 13]))
    content[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    with pytest.raises(TagifaiError, match=r"bomb\.png: .*pixel") as exc:
        decode_image(bytes(content), (4, 4), where="bomb.png")
    one_line(exc)


def noise_png() -> bytes:
    """A 32x32 PNG of noise, so cutting it loses pixel data."""
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"", b"\x89PNG\r\n\x1a\n garbage", b"GIF89a" + b"\x00" * 3, noise_png()[:500]],
    ids=["empty", "png-garbage", "gif-stub", "truncated-png"],
)
def test_decode_image_unreadable(content: bytes) -> None:
    with pytest.raises(TagifaiError, match=r"^up\.bin: not a readable image \(PNG/JPEG/BMP/GIF\)$"):
        decode_image(content, (4, 4), where="up.bin")


def test_decode_image_refuses_other_formats() -> None:
    buffer = io.BytesIO()
    Image.new("L", (4, 4), 9).save(buffer, format="TIFF")
    with pytest.raises(TagifaiError, match=r"not a readable image"):
        decode_image(buffer.getvalue(), (4, 4))


def test_decode_image_keeps_native_pixels_and_resizes() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    same = decode_image(buffer.getvalue(), (3, 4))
    np.testing.assert_array_equal(same, pixels)  # no resize when the size already fits
    assert same.flags.writeable
    assert decode_image(buffer.getvalue(), (7, 2)).shape == (7, 2)  # (height, width)


def test_decode_image_transparent_background_is_black() -> None:
    image = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    image.putpixel((1, 1), (255, 255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    grey = decode_image(buffer.getvalue(), (4, 4))
    assert grey[1, 1] == 255
    assert grey.sum() == 255  # every transparent pixel reads as black


def test_decode_image_bad_size() -> None:
    with pytest.raises(TagifaiError, match=r"size \(0, 4\) must be two sides in 1\.\.512"):
        decode_image(png_bytes(0), (0, 4))


# ---------------------------------------------------------------------------- ImageSet


def test_image_set_take_copies_in_order() -> None:
    pool = tiny_set()
    part = pool.take(np.array([5, 2]))
    assert part.images[:, 0, 0].tolist() == [5, 2]
    assert part.labels.tolist() == [pool.labels[5], pool.labels[2]]
    part.images[0] = 99
    assert pool.images[5, 0, 0] == 5  # the pool is untouched
    with pytest.raises(TypeError):
        pool.take(pool.labels == 0)


# ---------------------------------------------------------------------------- split_images


def test_split_is_stratified_ordered_and_complete() -> None:
    pool = tiny_set(n_classes=3, per_class=10)
    splits = split_images(in_memory(pool), val_size=0.2, test_size=0.2, seed=7)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 6)
    rows = [part.images[:, 0, 0].astype(int) for part in (splits.train, splits.val, splits.test)]
    assert sorted(np.concatenate(rows).tolist()) == list(range(30))  # disjoint and complete
    for part, index in zip((splits.train, splits.val, splits.test), rows, strict=True):
        assert (np.diff(index) > 0).all()  # original relative order kept
        np.testing.assert_array_equal(part.labels, pool.labels[index])
        assert np.bincount(part.labels, minlength=3).min() >= 2  # every class in every split


def test_split_is_reproducible() -> None:
    data = in_memory(tiny_set(n_classes=3, per_class=10))
    first = split_images(data, 0.2, 0.2, seed=1)
    again = split_images(data, 0.2, 0.2, seed=1)
    other = split_images(data, 0.2, 0.2, seed=2)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, name).images, getattr(again, name).images)
        np.testing.assert_array_equal(getattr(first, name).labels, getattr(again, name).labels)
    assert first.test_digest == again.test_digest
    assert re.fullmatch(r"[0-9a-f]{16}", first.test_digest)
    assert not np.array_equal(first.test.images, other.test.images)
    assert first.test_digest != other.test_digest


def test_split_keeps_official_test(tmp_path: Path) -> None:
    train, test = tiny_set(per_class=10), tiny_set(per_class=2)
    data = load_images(str(write_idx_folder(tmp_path / "mnist", train, test, gz=True)))
    splits = split_images(data, val_size=0.2, test_size=0.3, seed=0)
    assert splits.test is data.test
    assert (len(splits.train), len(splits.val)) == (24, 6)  # val is 20% of train only
    assert np.bincount(splits.val.labels, minlength=3).tolist() == [2, 2, 2]
    other = split_images(data, val_size=0.2, test_size=0.3, seed=5)
    assert other.test_digest == splits.test_digest  # the official test never moves


@pytest.mark.parametrize(
    ("val_size", "test_size", "problem"),
    [
        (0.0, 0.2, r"val_size: 0\.0 must be between 0 and 1"),
        (0.2, 0.0, r"test_size: 0\.0 must be between 0 and 1"),
        (-0.1, 0.2, r"val_size: -0\.1"),
        (1.2, 0.1, r"val_size: 1\.2"),
        (0.5, 0.5, r"val_size \+ test_size: 0\.5 \+ 0\.5 must be below 1"),
    ],
)
def test_split_bad_fractions(val_size: float, test_size: float, problem: str) -> None:
    with pytest.raises(TagifaiError, match=problem):
        split_images(in_memory(tiny_set()), val_size, test_size, seed=0)


def test_split_too_small_for_stratification() -> None:
    data = in_memory(tiny_set(n_classes=3, per_class=3))
    with pytest.raises(TagifaiError, match=r"^memory: cannot split 9 images") as exc:
        split_images(data, val_size=0.1, test_size=0.1, seed=0)
    one_line(exc)


# ---------------------------------------------------------------------------- modes and bit depths


def test_decode_16bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """A real 16-bit PNG (Pillow mode I;16) keeps its contrast: value >> 8, not min(v, 255)."""
    wide = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16"  # the file really is 16-bit grey
    grey = decode_image(path.read_bytes(), (8, 8), where=str(path))
    np.testing.assert_array_equal(grey, (wide >> 8).astype(np.uint8))
    assert (grey == 255).mean() < 0.05  # clipping made 63 of 64 pixels white


def test_decode_16bit_grey_transparent_value_is_black(tmp_path: Path) -> None:
    wide = np.full((4, 4), 0xF000, dtype=np.uint16)
    wide[0, 0] = 0x8000
    path = tmp_path / "trns.png"
    Image.fromarray(wide).save(path, transparency=0xF000)
    grey = decode_image(path.read_bytes(), (4, 4))
    assert grey[0, 0] == 0x80
    assert grey.sum() == 0x80  # every pixel of the tRNS value reads as black background


def png16(pixels: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit colour)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)  # type: ignore[arg-type]
    return buffer.getvalue()


def palette_with_transparency() -> bytes:
    image = Image.new("P", (2, 2), 1)
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.putpixel((0, 0), 0)
    return encoded(image, transparency=1)  # palette entry 1 (white) is transparent


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (encoded(Image.new("1", (2, 2), 1)), 255),
        (encoded(Image.new("L", (2, 2), 77)), 77),
        (encoded(Image.new("RGB", (2, 2), (255, 0, 0))), 76),  # luma of pure red
        (encoded(Image.new("P", (2, 2), 0).convert("P")), 0),
        (palette_with_transparency(), 0),
        (encoded(Image.new("LA", (2, 2), (200, 0))), 0),  # fully transparent: black
        (encoded(Image.new("LA", (2, 2), (200, 255))), 200),
        (encoded(Image.new("RGBA", (2, 2), (255, 255, 255, 128))), 128),  # half over black
        (encoded(Image.new("CMYK", (2, 2), (0, 0, 0, 0)), "JPEG", quality=100), 255),
        (encoded(Image.new("CMYK", (2, 2), (0, 0, 0, 255)), "JPEG", quality=100), 0),
        (png16(np.full((2, 2, 3), 0x9234, dtype=np.uint16), color_type=2), 0x92),
        (png16(np.full((2, 2, 4), 0xFFFF, dtype=np.uint16), color_type=6), 255),
        (png16(np.full((2, 2), 0x9234, dtype=np.uint16), color_type=0), 0x92),
    ],
    ids=[
        "1-bit",
        "grey",
        "rgb",
        "palette",
        "palette-trns",
        "la-clear",
        "la-opaque",
        "rgba-half",
        "cmyk-white",
        "cmyk-black",
        "rgb-16bit",
        "rgba-16bit",
        "grey-16bit",
    ],
)
def test_decode_every_mode_by_its_rule(content: bytes, expected: int) -> None:
    grey = decode_image(content, (2, 2))
    assert abs(int(grey.max()) - expected) <= 1 and abs(int(grey.min()) - expected) <= 1


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        (Image.new("F", (2, 2), 0.5), r"^x\.png: image mode 'F' is not supported"),
        (Image.new("YCbCr", (2, 2)), r"^x\.png: image mode 'YCbCr' is not supported"),
        (
            Image.fromarray(np.array([[70_000, 0]], dtype=np.int32)),
            r"^x\.png: mode 'I' values 0\.\.70000 are outside the 16-bit range 0\.\.65535$",
        ),
    ],
    ids=["float", "ycbcr", "wide-int"],
)
def test_modes_without_a_rule_are_refused(image: Image.Image, problem: str) -> None:
    """PNG/JPEG/BMP/GIF decode to the modes with rules; anything else is one line."""
    with pytest.raises(TagifaiError, match=problem) as exc:
        image_data._to_grey(image, "x.png")
    one_line(exc)


def test_wide_int_mode_in_16_bits_is_scaled() -> None:
    image = Image.fromarray(np.array([[0x1200, 0xFFFF]], dtype=np.int32))
    assert image.mode == "I"
    np.testing.assert_array_equal(np.asarray(image_data._to_grey(image, "x")), [[0x12, 0xFF]])


def test_image_folder_of_16bit_pngs_keeps_its_classes_apart(tmp_path: Path) -> None:
    """Clipped, both classes were all white (one image); scaled, they stay 16 and 240."""
    root = tmp_path / "scans"
    for name, level in (("dim", 0x1000), ("bright", 0xF000)):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 6), level, dtype=np.uint16)).save(root / name / f"{i}.png")
    data = load_images(str(root), image_size=6)
    assert data.classes == ["bright", "dim"]
    assert (data.train.images[data.train.labels == 0] == 0xF0).all()
    assert (data.train.images[data.train.labels == 1] == 0x10).all()


def test_predict_decodes_like_training(tmp_path: Path) -> None:
    """One decoder: the predict payload of a 16-bit PNG is the training pixels."""
    wide = (np.arange(36, dtype=np.uint16).reshape(6, 6) * 1800).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    (from_bytes,) = images_from_frame(pd.DataFrame({"image": [path.read_bytes()]}), (6, 6))
    np.testing.assert_array_equal(from_bytes, decode_image(path.read_bytes(), (6, 6)))
    np.testing.assert_array_equal(from_bytes, (wide >> 8).astype(np.uint8))


# ---------------------------------------------------------------------------- links


def tiny_classes(root: Path, names: tuple[str, ...] = ("a", "b"), per_class: int = 3) -> Path:
    """Class folders of tiny grey PNGs (a different level per class)."""
    for label, name in enumerate(names):
        for i in range(per_class):
            save_image(root / name / f"{i}.png", (40 + 80 * label) % 256, (4, 4), mode="L")
    return root


def test_class_folder_linked_outside_is_refused_before_walking(tmp_path: Path) -> None:
    outside = tiny_classes(tmp_path / "elsewhere", names=("x",))
    root = tiny_classes(tmp_path / "data")
    (root / "stolen").symlink_to(outside / "x", target_is_directory=True)
    with pytest.raises(TagifaiError, match=r"^.*/data/stolen: a link to .*/elsewhere/x, outside"):
        load_images(str(root))


def test_class_folder_linked_to_the_filesystem_root_is_refused(tmp_path: Path) -> None:
    root = tiny_classes(tmp_path / "data")
    (root / "everything").symlink_to("/", target_is_directory=True)
    with pytest.raises(
        TagifaiError, match=r"data/everything: a link to /, outside the data"
    ) as exc:
        load_images(str(root))
    one_line(exc)


@pytest.mark.parametrize("name", ["0.png", "notes.txt"])
def test_file_linked_outside_is_refused(tmp_path: Path, name: str) -> None:
    """Whatever its name, read or not: no link under --data may leave it."""
    secret = save_image(tmp_path / "private" / "secret.png", 200, (4, 4), mode="L")
    root = tiny_classes(tmp_path / "data")
    (root / "a" / name).unlink(missing_ok=True)
    (root / "a" / name).symlink_to(secret)
    with pytest.raises(TagifaiError, match=rf"data/a/{re.escape(name)}: a link to .*secret\.png"):
        load_images(str(root))


def test_links_inside_the_tree_policy(tmp_path: Path) -> None:
    """A link to a file inside --data is read; a link to a folder is refused, even inside
    (no cycles, no image counted twice)."""
    root = tiny_classes(tmp_path / "data")
    (root / "b" / "3.png").symlink_to(root / "a" / "0.png")
    data = load_images(str(root), image_size=4)
    assert len(data.train) == 7
    assert (data.train.images[data.train.labels == 1] == 40).sum() == 16  # a's pixels, in b
    (root / "b" / "loop").symlink_to(root / "b", target_is_directory=True)
    with pytest.raises(TagifaiError, match=r"data/b/loop: a link to the folder .*/data/b; "):
        load_images(str(root))
    (root / "b" / "loop").unlink()
    (root / "c").symlink_to(root / "a", target_is_directory=True)
    with pytest.raises(TagifaiError, match=r"data/c: a link to the folder .*/data/a; "):
        load_images(str(root))


def test_dangling_image_link_is_refused(tmp_path: Path) -> None:
    root = tiny_classes(tmp_path / "data")
    (root / "a" / "gone.png").symlink_to(root / "a" / "missing.png")
    with pytest.raises(
        TagifaiError, match=r"data/a/gone\.png: a link to .*missing\.png, not a file"
    ):
        load_images(str(root))


def test_hidden_links_are_neither_walked_nor_followed(tmp_path: Path) -> None:
    root = tiny_classes(tmp_path / "data")
    (root / ".everything").symlink_to("/", target_is_directory=True)
    (root / "a" / ".secret.png").symlink_to("/etc/hostname")
    assert len(load_images(str(root), image_size=4).train) == 6


def test_data_folder_given_through_a_link_is_its_target(tmp_path: Path) -> None:
    real = tiny_classes(tmp_path / "real")
    (real / "b" / "3.png").symlink_to(real / "a" / "0.png")  # inside the resolved root
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    assert len(load_images(str(tmp_path / "alias"), image_size=4).train) == 7


@pytest.mark.parametrize("name", [TRAIN_LABELS, "classes.txt"])
def test_idx_file_linked_outside_is_refused(tmp_path: Path, name: str) -> None:
    folder = write_idx_folder(tmp_path / "mnist", tiny_set())
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / name).write_bytes((folder / TRAIN_LABELS).read_bytes())
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(outside / name)
    with pytest.raises(TagifaiError, match=rf"mnist/{re.escape(name)}: a link to .*, outside"):
        load_images(str(folder))


# ---------------------------------------------------------------------------- class count


def test_class_count_is_bounded_while_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(image_data, "MAX_CLASSES", 3)
    root = tiny_classes(tmp_path / "data", names=("a", "b", "c"))
    assert len(load_images(str(root), image_size=4).classes) == 3  # at the bound: fine
    (root / "d").mkdir()  # empty: the bound is met before any class is walked
    with pytest.raises(TagifaiError, match=r"data: more than 3 class folders; at most 3 classes$"):
        load_images(str(root))


def test_idx_class_names_are_bounded(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "shapes", tiny_set())
    (folder / "classes.txt").write_text(
        "\n".join(f"c{i}" for i in range(image_data.MAX_CLASSES + 1))
    )
    with pytest.raises(TagifaiError, match=r"classes\.txt: 1,001 class names is over the 1,000"):
        load_images(str(folder))


# ---------------------------------------------------------------------------- IDX labels


def test_idx_label_past_a_gap_is_named(tmp_path: Path) -> None:
    """Labels 0..2 and one 12: label 12 is named, not class '3' reported as empty."""
    train = tiny_set()
    train.labels[7] = 12  # class 1 keeps 3 images
    folder = write_idx_folder(tmp_path / "mnist", train, gz=True)
    path = re.escape(str(folder / (TRAIN_LABELS + ".gz")))
    with pytest.raises(
        TagifaiError,
        match=path + r": label 12 at index 7 is outside 0\.\.2 \(no image has label 3; list",
    ) as exc:
        load_images(str(folder))
    one_line(exc)


def test_idx_bad_label_in_the_test_file_is_named(tmp_path: Path) -> None:
    test = tiny_set(per_class=2)
    test.labels[4] = 10
    folder = write_idx_folder(tmp_path / "Fashion-MNIST", tiny_set(n_classes=10), test)
    with pytest.raises(
        TagifaiError,
        match=re.escape(str(folder / TEST_LABELS))
        + r": label 10 at index 4 is outside 0\.\.9 \(Fashion-MNIST has 10 classes\)$",
    ):
        load_images(str(folder))


def test_idx_labels_not_from_zero_are_named(tmp_path: Path) -> None:
    train = tiny_set()
    folder = write_idx_folder(tmp_path / "mnist", ImageSet(train.images, train.labels + 1))
    with pytest.raises(
        TagifaiError,
        match=r": label 1 at index 0, but no image has label 0 \(labels count from 0\)$",
    ):
        load_images(str(folder))


# ---------------------------------------------------------------------------- confusion picture


def test_confusion_picture_is_bounded_whatever_the_class_count(tmp_path: Path) -> None:
    from tagifai.workloads.images.evaluate import MAX_PICTURE_CLASSES, confusion_png

    n = MAX_PICTURE_CLASSES
    names = [f"class-{i}" for i in range(n + 1)]
    matrix = np.eye(n + 1, dtype=int).tolist()
    assert confusion_png([row[:n] for row in matrix[:n]], names[:n], tmp_path / "at.png")
    with Image.open(tmp_path / "at.png") as picture:
        assert max(picture.size) <= 1930
    assert not confusion_png(matrix, names, tmp_path / "over.png")
    assert not (tmp_path / "over.png").exists()


# ---------------------------------------------------------------------------- through the CLI


TRAIN_IMAGES_ARGS = ("train", "--task", "images", "--params", "p.json")


def tagifai_train(workdir: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """``tagifai train --task images --data DATA`` as a user runs it, in ``workdir``."""
    workdir.mkdir(exist_ok=True)
    (workdir / "p.json").write_text(json.dumps({"task": "images"}))
    return subprocess.run(
        [sys.executable, "-m", "tagifai.cli", *TRAIN_IMAGES_ARGS, "--data", str(data)],
        cwd=workdir,
        env=subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_refused(result: subprocess.CompletedProcess[str], workdir: Path, *expected: str) -> None:
    """Exit 2, one ``error:`` line holding ``expected``, no traceback, nothing written."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[:3000]
    for part in expected:
        assert part in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(path.name for path in workdir.iterdir()) == ["p.json"]  # no mlflow.db


@pytest.mark.parametrize("target", ["tree", "/"])
def test_cli_refuses_a_class_folder_linked_outside(tmp_path: Path, target: str) -> None:
    outside = tiny_classes(tmp_path / "elsewhere", names=("x",)) / "x"
    root = tiny_classes(tmp_path / "data")
    link = root / "c"
    link.symlink_to(outside if target == "tree" else Path("/"), target_is_directory=True)
    result = tagifai_train(tmp_path / "work", root)
    shown = str(outside.resolve()) if target == "tree" else "/"
    assert_refused(result, tmp_path / "work", f"{link}: a link to {shown}, outside the data folder")


def test_cli_refuses_more_class_folders_than_the_bound(tmp_path: Path) -> None:
    """One tiny image in each of MAX_CLASSES + 1 folders: refused while listing, one line."""
    root = tmp_path / "data"
    content = png_bytes(0, (1, 1), mode="L")
    for i in range(image_data.MAX_CLASSES + 1):
        (root / f"c{i:04d}").mkdir(parents=True)
        (root / f"c{i:04d}" / "0.png").write_bytes(content)
    result = tagifai_train(tmp_path / "work", root)
    assert_refused(result, tmp_path / "work", f"{root}: more than 1,000 class folders")


@pytest.mark.training
def test_cli_trains_past_the_picture_bound_with_links_inside(
    workdir: Path, experiment_name: str
) -> None:
    """51 classes (over the picture's 50) and a link inside the tree: the run finishes,
    keeps its model and counts, and has no confusion.png."""
    import mlflow
    from typer.testing import CliRunner

    from tagifai.cli import app
    from tagifai.workloads.images.evaluate import MAX_PICTURE_CLASSES

    n = MAX_PICTURE_CLASSES + 1
    names = tuple(f"c{i:02d}" for i in range(n))
    root = tiny_classes(workdir / "data", names=names, per_class=6)
    (root / "c00" / "linked.png").symlink_to(root / "c01" / "0.png")
    params = {
        "task": "images",
        "data": {"image_size": 4, "val_size": 0.25, "test_size": 0.25},
        "model": {"architecture": "mlp", "num_layers": 1, "hidden_units": 8, "num_epochs": 1},
    }
    (workdir / "p.json").write_text(json.dumps(params))
    result = CliRunner().invoke(
        app,
        [*TRAIN_IMAGES_ARGS, "--data", str(root), "--experiment-name", experiment_name],
    )
    assert result.exit_code == 0, result.output
    run_id = result.stdout.split("run_id: ", 1)[1].split()[0]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["num_classes"] == str(n)
    assert run.data.params["prep_train_images"] == str(n * 6 + 1)  # the linked image counted
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(run_id)}
    assert "performance.json" in artifacts and "confusion.png" not in artifacts
    performance = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="performance.json")
        ).read_text()
    )
    assert len(performance["confusion"]) == n
    assert sum(map(sum, performance["confusion"])) == performance["overall"]["num_samples"]
