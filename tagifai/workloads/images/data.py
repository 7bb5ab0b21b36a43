"""Image data: read grey image-classification sets into numpy arrays, validate them, split.

Three sources are understood, chosen by ``location``:

* ``None``: scikit-learn's bundled 8x8 digits (no network), the default for quick runs.
* A folder of IDX files (the MNIST / Fashion-MNIST format): ``train-images-idx3-ubyte`` and
  ``train-labels-idx1-ubyte``, optionally ``t10k-images-idx3-ubyte`` and
  ``t10k-labels-idx1-ubyte`` as an official test set, each plain or gzipped (``.gz``).
* A folder with one subfolder per class (torchvision's ImageFolder layout) holding
  PNG/JPEG/BMP/GIF files, decoded to grey and resized to ``image_size``.

Every problem with the data raises :class:`~tagifai.errors.TagifaiError` with one line naming
the file or folder, the field and the value. Sizes are bounded before anything is allocated
(IDX headers, image headers, gzip output, the number of classes), so a hostile or corrupt
file fails fast instead of exhausting memory. Nothing outside the data folder is read: a link
whose target leaves it is refused, and links to folders are refused wherever they point (no
cycles, no image in two classes). This module only reads: raw data is never modified.

scikit-learn is imported inside the functions that need it, so the predict path can use
:func:`decode_image` without pulling it in.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tagifai.errors import TagifaiError

__all__ = [
    "DIGITS_SOURCE",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "MAX_CLASSES",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_IMAGE_SIDE",
    "ImageData",
    "ImageSet",
    "ImageSplits",
    "decode_image",
    "load_images",
    "read_idx",
    "split_images",
]

DIGITS_SOURCE = "sklearn:digits"
MAX_IMAGES = 2_000_000  # refuse more images than this in one data set
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # one image file / payload
MAX_IMAGE_PIXELS = 40_000_000  # decoded width*height; stops decompression bombs
MAX_IMAGE_SIDE = 512  # largest image_size allowed
# ImageNet-1k, the largest common single-label benchmark, has 1,000; what grows with the class
# count (the confusion matrix, per-class metrics, the output layer) stays small up to here.
MAX_CLASSES = 1_000
DEFAULT_IMAGE_SIZE = 28  # ImageFolder images are resized to this when no size is given
MIN_IMAGES_PER_CLASS = 3  # one each for train, val and test

MAX_IDX_COMPRESSED_BYTES = 200 * 1024 * 1024  # a .gz IDX file bigger than this is refused
# Declared payload bound, checked before allocating: 2.7 M images of 28x28 (FashionMNIST's
# training file holds 47 MB); a 20 MB .gz of zeros could otherwise ask for tens of GB.
MAX_IDX_DATA_BYTES = 2 * 1024**3
MAX_CLASSES_FILE_BYTES = 1024 * 1024  # classes.txt is a short list of names

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_PIL_FORMATS = ["PNG", "JPEG", "BMP", "GIF"]  # decoders PIL may use; the rest are not tried
# Pillow modes with a grey rule in _to_grey; any other decoded mode is refused.
_GREY_RULE_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK"})
_WIDE_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I"})

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_TRAIN_IMAGES = "train-images-idx3-ubyte"
_TRAIN_LABELS = "train-labels-idx1-ubyte"
_TEST_IMAGES = "t10k-images-idx3-ubyte"
_TEST_LABELS = "t10k-labels-idx1-ubyte"
_CLASSES_FILE = "classes.txt"

_IDX_UBYTE = 0x08  # the only IDX element type MNIST-style data uses
_READ_CHUNK = 16 * 1024 * 1024  # bounded reads keep gzip's temporary buffers small


@dataclass(frozen=True)
class ImageSet:
    """Grey images and their integer labels, row-aligned.

    Attributes:
        images: ``uint8`` array of shape ``(N, H, W)``; 0 is the black background.
        labels: ``int64`` array of shape ``(N,)`` with values in ``0..len(classes) - 1``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        # Programmer errors, not data errors: loaders validate data before building a set.
        if self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.ndim != 1 or self.labels.dtype != np.int64:
            raise ValueError(
                f"labels must be int64 (N,), got {self.labels.dtype} {self.labels.shape}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels for {len(self.images)} images")

    def __len__(self) -> int:
        """Number of images."""
        return len(self.labels)

    def take(self, index: np.ndarray) -> ImageSet:
        """Select rows by integer position.

        Args:
            index: Integer positions, in the order wanted.

        Returns:
            A new set holding copies of those rows.

        Raises:
            TypeError: If ``index`` is not an integer array (a boolean mask would be misread).
        """
        index = np.asarray(index)
        if index.dtype.kind not in "iu":
            raise TypeError(f"take() needs integer positions, got dtype {index.dtype}")
        return ImageSet(images=self.images[index], labels=self.labels[index])


@dataclass(frozen=True)
class ImageData:
    """A loaded image data set, before splitting.

    Attributes:
        train: The pool that train and validation (and test, without an official one) are
            carved from.
        test: The official test set (IDX ``t10k`` files), else ``None``.
        classes: Class names in label order.
        source: Where the data came from: :data:`DIGITS_SOURCE` or the folder path.
        digest: 16 hex chars of sha256 over images and labels (train, then test), shapes
            included: same digest, same data.
        counts: Sizes for logging: ``train_images``, ``test_images``, ``classes``, ``height``,
            ``width``.
        extra_source: Always ``None``: image data is one input (the core's data protocol).
    """

    train: ImageSet
    test: ImageSet | None
    classes: list[str]
    source: str
    digest: str
    counts: dict[str, int]
    extra_source: str | None = None


@dataclass(frozen=True)
class ImageSplits:
    """Train, validation and test sets, split once, seeded and stratified."""

    train: ImageSet
    val: ImageSet
    test: ImageSet

    @property
    def test_digest(self) -> str:
        """Digest of the test rows: models scored on the same digest are comparable."""
        return _digest([self.test])


def load_images(location: str | None, image_size: int | None = None) -> ImageData:
    """Read an image-classification data set.

    Args:
        location: ``None`` for scikit-learn's digits; else a folder holding IDX files or one
            subfolder per class. URLs are not supported yet.
        image_size: Side in pixels that ImageFolder images are resized to (square), 1 to
            :data:`MAX_IMAGE_SIDE`; defaults to 28. Digits and IDX data keep their native
            size and ignore it (a given value is still range-checked, since it is a config
            error either way).

    Returns:
        The images, labels, class names, source, digest and counts.

    Raises:
        TagifaiError: If the location, a file in it, or the data it holds is invalid.
    """
    if image_size is not None:
        _check_image_size(image_size)
    if location is None:
        train, test, classes, source = _load_digits()
    else:
        if location.startswith(("http://", "https://")):
            raise TagifaiError(
                f"{location}: URLs are not supported for images yet; download to a folder first"
            )
        if not location.strip():
            # Path("") is the working directory; an empty setting must not read what is there.
            raise TagifaiError(
                f"location: {location!r} is empty; give a folder, or none for {DIGITS_SOURCE}"
            )
        folder = Path(location)
        if not folder.is_dir():
            raise TagifaiError(
                f"{location}: not a folder (expected IDX files or one subfolder per class)"
            )
        source = str(folder)
        root = folder.resolve()  # what every file and link must stay inside
        if _has_idx_files(folder, root):
            train, test, classes = _load_idx_folder(folder, root)
        else:
            size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
            train, test, classes = _load_image_folder(folder, root, size)
    _check_class_counts(source, train, classes)
    return ImageData(
        train=train,
        test=test,
        classes=classes,
        source=source,
        digest=_digest([train] if test is None else [train, test]),
        counts={
            "train_images": len(train),
            "test_images": 0 if test is None else len(test),
            "classes": len(classes),
            "height": int(train.images.shape[1]),
            "width": int(train.images.shape[2]),
        },
    )


def split_images(data: ImageData, val_size: float, test_size: float, seed: int) -> ImageSplits:
    """Split into train, validation and test, seeded and stratified by label.

    With an official test set (``data.test``), it is the test split as is and validation is a
    ``val_size`` fraction of ``data.train``. Otherwise test and validation are ``test_size``
    and ``val_size`` fractions of the whole pool. Both fractions are validated either way, so
    a config that works with one source works with the other. Rows keep their original
    relative order within each split.

    Args:
        data: The loaded data.
        val_size: Validation fraction, in (0, 1).
        test_size: Test fraction, in (0, 1); ``val_size + test_size`` must be below 1.
        seed: Seed for the shuffles: same seed, same splits.

    Returns:
        The three splits.

    Raises:
        TagifaiError: If a fraction is out of range, or too small/large to give every class
            a row in every split.
    """
    for name, value in (("val_size", val_size), ("test_size", test_size)):
        if not 0 < value < 1:
            raise TagifaiError(f"{name}: {value} must be between 0 and 1 (exclusive)")
    if val_size + test_size >= 1:
        raise TagifaiError(
            f"val_size + test_size: {val_size} + {test_size} must be below 1 to leave training rows"
        )
    pool = data.train
    everything = np.arange(len(pool))
    if data.test is not None:
        test = data.test
        rest = everything
        val_fraction = val_size
    else:
        rest, test_index = _stratified_split(data.source, pool.labels, everything, test_size, seed)
        test = pool.take(test_index)
        # val_size is a fraction of the whole pool, so rescale it to the remainder.
        val_fraction = val_size / (1 - test_size)
    train_index, val_index = _stratified_split(data.source, pool.labels, rest, val_fraction, seed)
    return ImageSplits(train=pool.take(train_index), val=pool.take(val_index), test=test)


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain, or gzipped when the name ends with ``.gz``).

    The header is two zero bytes, an element-type byte (only ``0x08``, unsigned byte, is
    accepted), a dimension-count byte (1 for labels, 3 for images) and one big-endian uint32
    per dimension. The payload must hold exactly the product of the dimensions.

    Args:
        path: The file.

    Returns:
        A writable ``uint8`` array of the declared shape.

    Raises:
        TagifaiError: If the file is missing, too big, not gzip when named ``.gz``, or its
            header or length is wrong.
    """
    path = Path(path)
    compressed = path.name.endswith(".gz")
    try:
        size_on_disk = path.stat().st_size
        if compressed and size_on_disk > MAX_IDX_COMPRESSED_BYTES:
            raise TagifaiError(
                f"{path}: {size_on_disk} bytes is over the {MAX_IDX_COMPRESSED_BYTES} byte limit "
                "for a compressed IDX file"
            )
        with _open_idx(path, compressed) as stream:
            return _parse_idx(path, stream)
    except TagifaiError:
        raise
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise TagifaiError(f"{path}: not a valid gzip file ({_one_line(exc)})") from exc
    except OSError as exc:
        raise TagifaiError(f"{path}: cannot read ({_one_line(exc)})") from exc


def decode_image(content: bytes, size: tuple[int, int], where: str = "image") -> np.ndarray:
    """Decode PNG/JPEG/BMP/GIF bytes into a grey image of a given size.

    Training and predict both decode through here, so they see the same pixels. Each
    mode has one rule (:func:`_to_grey`): 16-bit grey is scaled to 8 bits (``value >> 8``,
    as Pillow does for 16-bit colour), colour goes through Pillow's luma, and transparent
    images are composited on black first, so transparent background reads as the black (0)
    background the data sets use. Any other mode is refused. The image is resized
    (bilinear, antialiased by PIL when shrinking) only when its size differs.

    Args:
        content: The encoded file's bytes.
        size: ``(height, width)`` of the result, each 1 to :data:`MAX_IMAGE_SIDE`.
        where: What to call the image in errors (usually its path).

    Returns:
        A writable ``uint8`` array of shape ``size``.

    Raises:
        TagifaiError: If the content is too big, declares too many pixels, or is not a
            readable image of an accepted format.
    """
    height, width = size
    for side in (height, width):
        if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_IMAGE_SIDE:
            raise TagifaiError(f"{where}: size {size} must be two sides in 1..{MAX_IMAGE_SIDE}")
    if len(content) > MAX_IMAGE_BYTES:
        raise TagifaiError(
            f"{where}: {len(content)} bytes is over the {MAX_IMAGE_BYTES} byte limit for one image"
        )
    unreadable = f"{where}: not a readable image (PNG/JPEG/BMP/GIF)"
    with warnings.catch_warnings():
        # PIL only warns between its own limit and twice it; a bomb must fail, not warn.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(content), formats=_PIL_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TagifaiError(f"{where}: too many pixels ({_one_line(exc)})") from exc
        except Exception as exc:  # PIL raises many types for bad input; all mean unreadable
            raise TagifaiError(unreadable) from exc
        with img:
            img_width, img_height = img.size
            # Checked on the header, before load() allocates the decoded pixels.
            if img_width * img_height > MAX_IMAGE_PIXELS:
                raise TagifaiError(
                    f"{where}: {img_width}x{img_height} is {img_width * img_height} pixels, over "
                    f"the {MAX_IMAGE_PIXELS} pixel limit"
                )
            try:
                img.load()
                grey = _to_grey(img, where)
            except TagifaiError:
                raise
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise TagifaiError(f"{where}: too many pixels ({_one_line(exc)})") from exc
            except Exception as exc:  # truncated or corrupt pixel data
                raise TagifaiError(unreadable) from exc
    if grey.size != (width, height):
        grey = grey.resize((width, height), Image.Resampling.BILINEAR)
    return np.array(grey, dtype=np.uint8)


def _to_grey(img: Image.Image, where: str) -> Image.Image:
    """Convert to mode ``L`` by the rule of the image's mode; refuse modes with none.

    - ``L``, and ``1`` (0 or 255): as is.
    - 16-bit grey (``I;16*``, or ``I`` holding 0..65535): the high byte, ``value >> 8``
      (Pillow's own ``convert("L")`` would clip every value over 255 to white).
    - ``RGB``, ``P`` (through its palette), ``CMYK`` (Pillow's profile-free conversion to
      RGB): ITU-R 601-2 luma, ``L = 0.299 R + 0.587 G + 0.114 B``.
    - Any transparency (``RGBA``, ``LA``, ``PA``, a ``tRNS`` colour): composited on black
      first, then as above.
    """
    mode = img.mode
    if mode in _WIDE_GREY_MODES:
        return _wide_grey_to_l(img, where)
    if mode not in _GREY_RULE_MODES:
        raise TagifaiError(
            f"{where}: image mode {mode!r} is not supported (grey, RGB, palette, CMYK, "
            "16-bit grey, with or without alpha)"
        )
    if mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("L")
    return img.convert("L")


def _wide_grey_to_l(img: Image.Image, where: str) -> Image.Image:
    """16-bit grey to 8 bits by its high byte; a ``tRNS`` grey value reads as black."""
    values = np.asarray(img).astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 0xFFFF:
        # Only a 16-bit range has a rule; a wider "I" image would need a range to be declared.
        raise TagifaiError(
            f"{where}: mode {img.mode!r} values {low}..{high} are outside the 16-bit range 0..65535"
        )
    transparent = img.info.get("transparency")
    eight = (values >> 8).astype(np.uint8)
    if isinstance(transparent, int):
        eight[values == transparent] = 0
    return Image.fromarray(eight)


def _check_image_size(image_size: int) -> None:
    """Reject an ``image_size`` that is not an int in ``1..MAX_IMAGE_SIDE``."""
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or not 1 <= image_size <= MAX_IMAGE_SIDE
    ):
        raise TagifaiError(f"image_size: {image_size!r} must be an integer in 1..{MAX_IMAGE_SIDE}")


def _load_digits() -> tuple[ImageSet, None, list[str], str]:
    """scikit-learn's bundled 8x8 digits, scaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits  # training path only; see the module docstring

    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * 255 / 16).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return ImageSet(images=images, labels=labels), None, [str(i) for i in range(10)], DIGITS_SOURCE


def _inside(path: Path, root: Path) -> Path:
    """``path`` with every link resolved; refused when that leaves ``root`` (resolved)."""
    target = Path(os.path.realpath(path))
    if not target.is_relative_to(root):
        raise TagifaiError(
            f"{path}: a link to {target}, outside the data folder {root}; links must stay inside it"
        )
    return target


def _find_idx(folder: Path, stem: str, root: Path) -> Path | None:
    """The plain file if present, else the ``.gz`` one, else ``None``."""
    for name in (stem, stem + ".gz"):
        path = folder / name
        if path.is_symlink():
            _inside(path, root)
        if path.is_file():
            return path
    return None


def _has_idx_files(folder: Path, root: Path) -> bool:
    """Whether any of the four IDX files is in ``folder``."""
    stems = (_TRAIN_IMAGES, _TRAIN_LABELS, _TEST_IMAGES, _TEST_LABELS)
    return any(_find_idx(folder, stem, root) is not None for stem in stems)


def _load_idx_folder(folder: Path, root: Path) -> tuple[ImageSet, ImageSet | None, list[str]]:
    """Read train (required) and t10k (optional, both files or neither) IDX pairs."""
    train = _read_idx_pair(folder, root, _TRAIN_IMAGES, _TRAIN_LABELS, required=True)
    test = _read_idx_pair(folder, root, _TEST_IMAGES, _TEST_LABELS, required=False)
    assert train is not None  # required=True never returns None
    total = len(train) + (0 if test is None else len(test))
    if total > MAX_IMAGES:
        raise TagifaiError(f"{folder}: {total} images is over the {MAX_IMAGES} image limit")
    if test is not None and test.images.shape[1:] != train.images.shape[1:]:
        test_path = _find_idx(folder, _TEST_IMAGES, root)
        raise TagifaiError(
            f"{test_path}: images are {_shape_text(test.images)} but train images are "
            f"{_shape_text(train.images)}"
        )
    parts = [(_find_idx(folder, _TRAIN_LABELS, root), train.labels)]
    if test is not None:
        parts.append((_find_idx(folder, _TEST_LABELS, root), test.labels))
    classes = _idx_class_names(folder, root, parts)
    return train, test, classes


def _read_idx_pair(
    folder: Path, root: Path, images_stem: str, labels_stem: str, *, required: bool
) -> ImageSet | None:
    """Read one images/labels pair; a half pair is always an error."""
    images_path = _find_idx(folder, images_stem, root)
    labels_path = _find_idx(folder, labels_stem, root)
    if images_path is None and labels_path is None and not required:
        return None
    if images_path is None:
        present = f"{labels_path.name} is there" if labels_path else "it is required"
        raise TagifaiError(f"{folder / images_stem}[.gz]: missing ({present})")
    if labels_path is None:
        raise TagifaiError(
            f"{folder / labels_stem}[.gz]: missing ({images_path.name} is there; "
            "give both or neither)"
        )
    images = read_idx(images_path)
    if images.ndim != 3:
        raise TagifaiError(f"{images_path}: {images.ndim} dimensions; images need 3 (N, H, W)")
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise TagifaiError(f"{labels_path}: {labels.ndim} dimensions; labels need 1 (N,)")
    if len(labels) != len(images):
        raise TagifaiError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    return ImageSet(images=images, labels=labels.astype(np.int64))


def _idx_class_names(
    folder: Path, root: Path, parts: Sequence[tuple[Path | None, np.ndarray]]
) -> list[str]:
    """Class names from ``classes.txt``, Fashion-MNIST's by folder name, or the digits.

    Without names, the classes are ``0..k-1`` where ``k`` is the first label no image has:
    a label past such a gap is far more likely a corrupt byte than a class of its own.
    Every label must name a class; the first that does not is refused with its file and
    index (``parts`` pairs each labels file with its labels).
    """
    names_path = folder / _CLASSES_FILE
    if names_path.is_symlink():
        _inside(names_path, root)
    if names_path.is_file():
        names = _read_classes_file(names_path)
        why = f"{_CLASSES_FILE} names {len(names)} classes"
    elif "fashion" in Path(os.path.abspath(folder)).name.lower():
        names = list(FASHION_MNIST_CLASSES)
        why = f"Fashion-MNIST has {len(names)} classes"
    else:
        present = set(np.unique(np.concatenate([labels for _, labels in parts])).tolist())
        count = 0
        while count in present:
            count += 1
        names = [str(i) for i in range(count)]
        why = f"no image has label {count}; list the class names in {_CLASSES_FILE} for more"
    if len(names) > MAX_CLASSES:
        raise TagifaiError(
            f"{names_path}: {len(names):,} class names is over the {MAX_CLASSES:,} class limit"
        )
    for path, labels in parts:
        outside = np.flatnonzero(labels >= len(names))
        if outside.size:
            index = int(outside[0])
            where = f"{path}: label {int(labels[index])} at index {index}"
            if not names:
                raise TagifaiError(f"{where}, but no image has label 0 (labels count from 0)")
            raise TagifaiError(f"{where} is outside 0..{len(names) - 1} ({why})")
    return names


def _read_classes_file(path: Path) -> list[str]:
    """One class name per line; blank lines ignored, duplicates refused."""
    try:
        size = path.stat().st_size
        if size > MAX_CLASSES_FILE_BYTES:
            raise TagifaiError(f"{path}: {size} bytes is over the {MAX_CLASSES_FILE_BYTES} limit")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TagifaiError(f"{path}: not UTF-8 text ({_one_line(exc)})") from exc
    except OSError as exc:
        raise TagifaiError(f"{path}: cannot read ({_one_line(exc)})") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    seen: set[str] = set()
    for number, name in enumerate(names, start=1):
        if name in seen:
            raise TagifaiError(f"{path}: class name {name!r} (name {number}) is listed twice")
        seen.add(name)
    return names


def _load_image_folder(
    folder: Path, root: Path, image_size: int
) -> tuple[ImageSet, None, list[str]]:
    """Read an ImageFolder layout: sorted subfolder names are the classes."""
    classes = sorted(_class_folders(folder, root))
    if not classes:
        raise TagifaiError(f"{folder}: no IDX files ({_TRAIN_IMAGES}[.gz]) and no class subfolders")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        found = _image_files(folder / name, root)
        if not found:
            raise TagifaiError(
                f"{folder / name}: class folder has no images ({'/'.join(IMAGE_EXTENSIONS)})"
            )
        files.extend(found)
        labels.extend([label] * len(found))
        # Checked while listing, so a huge tree is refused before any decoding.
        if len(files) > MAX_IMAGES:
            raise TagifaiError(
                f"{folder}: {len(files)}+ images is over the {MAX_IMAGES} image limit"
            )
    images = np.empty((len(files), image_size, image_size), dtype=np.uint8)
    for row, path in enumerate(files):
        images[row] = decode_image(_read_image_file(path), (image_size, image_size), str(path))
    return ImageSet(images=images, labels=np.asarray(labels, dtype=np.int64)), None, classes


def _class_folders(folder: Path, root: Path) -> list[str]:
    """Names of the class subfolders, at most :data:`MAX_CLASSES` (counted while listing)."""
    names = []
    for entry in _entries(folder, root):
        if entry.is_dir(follow_symlinks=False):
            names.append(entry.name)
            if len(names) > MAX_CLASSES:
                raise TagifaiError(
                    f"{folder}: more than {MAX_CLASSES:,} class folders; at most "
                    f"{MAX_CLASSES:,} classes"
                )
    return names


def _image_files(class_dir: Path, root: Path) -> list[Path]:
    """Image files under ``class_dir`` (recursively, like ImageFolder), hidden ones skipped.

    Links to files inside ``root`` are read; links to folders never walked (refused).
    """
    found = []
    pending = [class_dir]
    while pending:
        for entry in _entries(pending.pop(), root):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                pending.append(path)
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                if entry.is_file():  # follows a link (already checked to stay inside)
                    found.append(path)
                elif entry.is_symlink():
                    raise TagifaiError(f"{path}: a link to {os.path.realpath(path)}, not a file")
    return sorted(found)  # a fixed order keeps the digest and the splits reproducible


def _entries(folder: Path, root: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of ``folder``, hidden ones left out, each link checked as it is listed.

    A link must stay inside ``root`` (whatever it is named, read or not) and may not point
    to a folder: walking only real folders rules out cycles and an image counted in two
    classes.
    """
    try:
        listing = os.scandir(folder)
    except OSError as exc:
        raise TagifaiError(f"{folder}: cannot list ({_one_line(exc)})") from exc
    with listing:
        for entry in listing:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                target = _inside(Path(entry.path), root)
                if target.is_dir():
                    raise TagifaiError(
                        f"{entry.path}: a link to the folder {target}; class folders and "
                        "their subfolders must be real folders, not links"
                    )
            yield entry


def _read_image_file(path: Path) -> bytes:
    """Read one image file, refusing it before reading when it is too big."""
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise TagifaiError(
                f"{path}: {size} bytes is over the {MAX_IMAGE_BYTES} byte limit for one image"
            )
        with path.open("rb") as stream:
            # Bounded even if the file grows between stat() and read().
            content = stream.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise TagifaiError(f"{path}: cannot read ({_one_line(exc)})") from exc
    return content


def _open_idx(path: Path, compressed: bool) -> io.BufferedIOBase:
    """Open an IDX file as a binary stream, decompressing when gzipped."""
    if compressed:
        return gzip.GzipFile(path, "rb")
    return path.open("rb")


def _parse_idx(path: Path, stream: io.BufferedIOBase) -> np.ndarray:
    """Check the IDX header, then read exactly the declared payload into an array."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise TagifaiError(f"{path}: truncated: header is {len(magic)} bytes, expected 4")
    if magic[0] != 0 or magic[1] != 0:
        raise TagifaiError(
            f"{path}: bad magic 0x{magic.hex()}: the first two bytes must be 0 (not an IDX file)"
        )
    if magic[2] != _IDX_UBYTE:
        raise TagifaiError(
            f"{path}: element type code 0x{magic[2]:02x} is not supported; only 0x08 (uint8)"
        )
    ndim = magic[3]
    if ndim not in (1, 3):
        raise TagifaiError(f"{path}: {ndim} dimensions; expected 1 (labels) or 3 (images)")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise TagifaiError(
            f"{path}: truncated: header has {len(raw_dims)} bytes of dimensions, "
            f"expected {4 * ndim}"
        )
    dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
    for axis, extent in enumerate(dims):
        if extent == 0:
            raise TagifaiError(f"{path}: dimension {axis} is 0 in shape {dims}")
    expected = math.prod(dims)
    if expected > MAX_IDX_DATA_BYTES:
        raise TagifaiError(
            f"{path}: shape {dims} declares {expected} bytes, over the {MAX_IDX_DATA_BYTES} limit"
        )
    if ndim == 3 and max(dims[1:]) > MAX_IMAGE_SIDE:  # what predict accepts: a usable model
        raise TagifaiError(
            f"{path}: images of {dims[1]}x{dims[2]}; each side must be 1..{MAX_IMAGE_SIDE}"
        )
    data = np.empty(expected, dtype=np.uint8)
    view = data.data
    filled = 0
    while filled < expected:
        got = stream.readinto(view[filled : filled + _READ_CHUNK])
        if not got:
            break
        filled += got
    if filled < expected:
        raise TagifaiError(f"{path}: truncated: expected {expected} bytes of data, got {filled}")
    if stream.read(1):
        raise TagifaiError(f"{path}: trailing bytes after the {expected} bytes of data")
    return data.reshape(dims)


def _check_class_counts(source: str, train: ImageSet, classes: Sequence[str]) -> None:
    """Refuse fewer than 2 classes, or a class too small to appear in every split."""
    if len(classes) < 2:
        raise TagifaiError(f"{source}: {len(classes)} class(es) {classes}; need at least 2")
    counts = np.bincount(train.labels, minlength=len(classes))
    for name, count in zip(classes, counts, strict=False):
        if count < MIN_IMAGES_PER_CLASS:
            raise TagifaiError(
                f"{source}: class {name!r} has {count} images; need at least "
                f"{MIN_IMAGES_PER_CLASS} to split train/val/test"
            )


def _stratified_split(
    source: str, labels: np.ndarray, index: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (kept, carved) with ``fraction`` carved, stratified, sorted."""
    from sklearn.model_selection import train_test_split  # training path only

    try:
        kept, carved = train_test_split(
            index, test_size=fraction, stratify=labels[index], random_state=seed
        )
    except ValueError as exc:
        raise TagifaiError(
            f"{source}: cannot split {len(index)} images with a {fraction:.4g} fraction "
            f"stratified by class ({_one_line(exc)})"
        ) from exc
    return np.sort(kept), np.sort(carved)


def _digest(sets: Sequence[ImageSet]) -> str:
    """16 hex chars of sha256 over each set's shapes, images and labels, in order."""
    hasher = hashlib.sha256()
    for part in sets:
        # Shapes first, so the same bytes split into different shapes hash differently.
        hasher.update(f"{part.images.shape}{part.labels.shape};".encode())
        hasher.update(np.ascontiguousarray(part.images).data)
        hasher.update(np.ascontiguousarray(part.labels).data)
    return hasher.hexdigest()[:16]


def _shape_text(images: np.ndarray) -> str:
    """``HxW`` of an image stack."""
    return f"{images.shape[1]}x{images.shape[2]}"


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line, for embedding in a TagifaiError."""
    return " ".join(str(exc).split()) or type(exc).__name__
