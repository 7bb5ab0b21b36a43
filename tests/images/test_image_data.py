"""Tests for image data reading, validation and splitting.

Every file is written by the test into ``tmp_path``: tiny IDX files (plain and gzipped) and
tiny PNG/JPEG images. Nothing reads shared data or the network.
"""

from __future__ import annotations

import gzip
import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
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
    with pytest.raises(TagifaiError, match=r"classes\.txt: 2 class names do not cover label 2"):
        load_images(str(folder))


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
