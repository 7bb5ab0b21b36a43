"""Text data: read Made-With-ML project files, validate them, prepare tags and split.

Raw data is never modified: every step returns new frames. Reading accepts
``projects.json`` (a list of ``{id, title, description, tags[]}``), the same as
CSV or a JSON list with a single ``tag`` column (single-label), an optional
``tags.json`` taxonomy (``{tag, aliases[], parents[]}``), and http(s) URLs,
which are cached under ``data/``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tagifai.config import DATA_CACHE_DIR, parse_json
from tagifai.errors import TagifaiError
from tagifai.files import write_bytes_atomic
from tagifai.workloads.text.params import TextData

__all__ = [
    "Dataset",
    "Splits",
    "Taxonomy",
    "clean_text",
    "fetch",
    "load_projects",
    "load_taxonomy",
    "prepare",
    "read_batch",
    "split",
]

logger = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 200 * 1024 * 1024  # refuse to cache anything bigger than this
MAX_DATA_BYTES = MAX_DOWNLOAD_BYTES  # a local data, taxonomy or batch file: the same bound
MAX_PROJECT_ID = 2**63 - 1  # ids are stored as 64-bit integers (MLflow datasets, pandas)


@dataclass(frozen=True)
class Taxonomy:
    """The allowed tags, their aliases and parents (from ``tags.json``)."""

    tags: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> tag
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tag -> parents


@dataclass(frozen=True)
class Dataset:
    """Prepared examples: one row per project with ``id``, ``text`` and ``tags``.

    Attributes:
        frame: The rows; ``tags`` holds lists of kept class names.
        classes: Sorted class names.
        counts: Kept/dropped counts from preparation, for logging.
        source: Where the raw data came from (path or URL).
        digest: Short hash of the prepared rows: same digest, same data.
        extra_source: Where the taxonomy came from, if one was used.
    """

    frame: pd.DataFrame
    classes: list[str]
    counts: dict[str, int]
    source: str
    digest: str
    extra_source: str | None = None


@dataclass(frozen=True)
class Splits:
    """Train / validation / test frames, split once, seeded and stratified."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    @property
    def test_digest(self) -> str:
        """Digest of the test rows: models scored on the same digest are comparable."""
        return digest(self.test)


# --- reading -------------------------------------------------------------------------


def fetch(location: str | Path, cache_dir: Path = DATA_CACHE_DIR) -> Path:
    """Return a local path for a path or an http(s) URL, downloading URLs once.

    Args:
        location: A local path or an ``http://``/``https://`` URL.
        cache_dir: Where downloads are kept, one file per URL.

    Returns:
        The local file.

    Raises:
        TagifaiError: If the file does not exist or the URL cannot be fetched.
    """
    text = str(location)
    if not re.match(r"^https?://", text):
        path = Path(text)
        if path.is_dir():
            raise TagifaiError(f"{path}: a folder, not a file")
        if not path.is_file():
            raise TagifaiError(f"{path}: file not found")
        return path
    name = Path(text.split("?")[0]).name or "download"
    target = cache_dir / f"{hashlib.sha256(text.encode()).hexdigest()[:12]}-{name}"
    if target.is_file():
        return target
    try:
        with urllib.request.urlopen(text, timeout=30) as response:
            body = response.read(MAX_DOWNLOAD_BYTES + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TagifaiError(
            f"{text}: cannot download ({reason}); offline? pass a local path instead"
        ) from None
    if len(body) > MAX_DOWNLOAD_BYTES:
        raise TagifaiError(f"{text}: larger than {MAX_DOWNLOAD_BYTES} bytes, refusing to cache")
    # A killed download never looks complete; workers fetching the URL at once never mix.
    write_bytes_atomic(target, body)
    return target


def _read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_DATA_BYTES:
            raise TagifaiError(f"{path}: larger than {MAX_DATA_BYTES:,} bytes")
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TagifaiError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise TagifaiError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except IsADirectoryError:
        raise TagifaiError(f"{path}: a folder, not a file") from None
    except OSError as exc:
        raise TagifaiError(f"{path}: cannot read ({exc.strerror})") from None


def _read_records(path: Path, label: str) -> list[dict[str, Any]]:
    """Read a JSON list of objects or a CSV file into a list of dicts."""
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        try:
            return list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:
            raise TagifaiError(f"{path}: invalid CSV ({exc})") from None
    records = parse_json(text, str(path))
    if isinstance(records, dict) and label == "taxonomy":
        # The 2020 format: {tag: {aliases, parents}}.
        rows = []
        for key, value in records.items():
            if value is not None and not isinstance(value, dict):
                raise TagifaiError(
                    f"{path}: {key!r:.60}: expected an object with aliases/parents, "
                    f"got {value!r:.40}"
                )
            rows.append({**(value or {}), "tag": key})
        return rows
    if not isinstance(records, list):
        raise TagifaiError(f"{path}: expected a JSON list of {label} objects")
    for row, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise TagifaiError(f"{path}: row {row}: expected an object, got {record!r:.60}")
    return records


def _parse_tags(value: Any, path: Path, where: str) -> list[str]:
    if isinstance(value, str) and path.suffix.lower() == ".csv" and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, too deep, a number too long
            raise TagifaiError(f"{path}: {where}: tags: not a JSON list: {value!r:.60}") from None
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise TagifaiError(f"{path}: {where}: tags: expected a list of strings, got {value!r:.60}")
    return [tag.strip() for tag in value if tag.strip()]


def load_projects(location: str | Path) -> pd.DataFrame:
    """Read and validate projects into a frame of ``id, title, description, tags``.

    Args:
        location: ``projects.json``-style JSON or CSV, local path or URL. A single
            ``tag`` column (single-label data) is read as one-tag lists.

    Returns:
        One row per project, in file order.

    Raises:
        TagifaiError: Naming the file, row and field of the first problem found.
    """
    path = fetch(location)
    records = _read_records(path, "project")
    if not records:
        raise TagifaiError(f"{path}: no projects in file")
    columns = set(records[0])
    tag_field = "tags" if "tags" in columns else "tag"
    for required in ("id", "title", "description", tag_field):
        if required not in columns:
            raise TagifaiError(f"{path}: missing column {required!r}")
    rows = []
    first_seen: dict[int, int] = {}
    for number, record in enumerate(records, start=1):
        where = f"row {number}"
        missing = [name for name in ("id", "title", "description", tag_field) if name not in record]
        if missing:
            raise TagifaiError(f"{path}: {where}: missing field {missing[0]!r}")
        raw_id = record["id"]
        try:
            project_id = int(raw_id) if not isinstance(raw_id, bool | float) else None
        except (TypeError, ValueError):
            project_id = None
        if project_id is None or (isinstance(raw_id, str) and not raw_id.strip().isdigit()):
            raise TagifaiError(f"{path}: {where}: id: expected an integer, got {raw_id!r:.40}")
        if not 0 <= project_id <= MAX_PROJECT_ID:
            raise TagifaiError(
                f"{path}: {where}: id: must be within 0..2**63-1, got {str(project_id)[:40]}"
            )
        where = f"row {number} (id {project_id})"
        if project_id in first_seen:
            first = first_seen[project_id]
            raise TagifaiError(f"{path}: {where}: duplicate id {project_id} (first at row {first})")
        first_seen[project_id] = number
        title, description = record["title"], record["description"]
        for name, value in (("title", title), ("description", description)):
            if value is not None and not isinstance(value, str):
                raise TagifaiError(f"{path}: {where}: {name}: expected text, got {value!r:.40}")
        title, description = (title or "").strip(), (description or "").strip()
        if not title and not description:
            raise TagifaiError(f"{path}: {where}: empty text (title and description are blank)")
        if tag_field == "tags":
            tags = _parse_tags(record["tags"], path, where)
        else:
            single = record["tag"]
            if not isinstance(single, str) or not single.strip():
                raise TagifaiError(f"{path}: {where}: tag: expected a tag name, got {single!r:.40}")
            tags = [single.strip()]
        rows.append({"id": project_id, "title": title, "description": description, "tags": tags})
    return pd.DataFrame(rows, columns=["id", "title", "description", "tags"])


def load_taxonomy(location: str | Path, strict_parents: bool = True) -> Taxonomy:
    """Read and validate a ``tags.json`` taxonomy.

    Args:
        location: Local path or URL of a list of ``{tag, aliases[], parents[]}``.
        strict_parents: A parent that is not a tag of the file is an error; else
            it is dropped with a warning (the public Made-With-ML taxonomy has a
            few, harmless unless parents are added as tags).

    Returns:
        The taxonomy.

    Raises:
        TagifaiError: On duplicate tags, clashing aliases or unknown parents.
    """
    path = fetch(location)
    records = _read_records(path, "taxonomy")
    tags: list[str] = []
    aliases: dict[str, str] = {}
    parents: dict[str, tuple[str, ...]] = {}
    for number, record in enumerate(records, start=1):
        tag = record.get("tag")
        if not isinstance(tag, str) or not tag.strip():
            raise TagifaiError(f"{path}: row {number}: tag: expected a tag name, got {tag!r:.40}")
        where = f"row {number} ({tag:.60})"
        if tag in parents:
            raise TagifaiError(f"{path}: {where}: duplicate tag")
        for name in ("aliases", "parents"):
            value = record.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TagifaiError(
                    f"{path}: {where}: {name}: expected a list of strings, got {value!r:.40}"
                )
        for alias in record.get("aliases", []):
            if alias in aliases and aliases[alias] != tag:
                raise TagifaiError(
                    f"{path}: {where}: alias {alias!r:.60} already belongs to "
                    f"{aliases[alias]!r:.60}"
                )
            aliases[alias] = tag
        tags.append(tag)
        parents[tag] = tuple(record.get("parents", []))
    known = set(tags)
    unknown = {tag: [p for p in ps if p not in known] for tag, ps in parents.items()}
    unknown = {tag: missing for tag, missing in unknown.items() if missing}
    if unknown and strict_parents:
        tag, missing = next(iter(unknown.items()))
        raise TagifaiError(
            f"{path}: tag {tag!r:.60}: parent {missing[0]!r:.60} is not a tag in the file"
        )
    if unknown:
        logger.warning(
            "%s: ignoring %d parent(s) that are not tags of the file (e.g. %r of %r)",
            path,
            sum(len(missing) for missing in unknown.values()),
            *next((missing[0], tag) for tag, missing in unknown.items()),
        )
        parents = {tag: tuple(p for p in ps if p in known) for tag, ps in parents.items()}
    for alias, tag in aliases.items():
        if alias in known and alias != tag:
            raise TagifaiError(f"{path}: alias {alias!r:.60} of {tag!r:.60} is also a tag")
    return Taxonomy(tags=tuple(tags), aliases=aliases, parents=parents)


# --- preparation ---------------------------------------------------------------------


def clean_text(text: str, lower: bool = True, stopwords: bool = False) -> str:
    """Normalise a text: optional lowercase, punctuation to spaces, optional stopwords.

    Args:
        text: Raw text.
        lower: Lowercase first.
        stopwords: Drop English stopwords (scikit-learn's list).

    Returns:
        Space-separated alphanumeric tokens.
    """
    if lower:
        text = text.lower()
    tokens = re.sub(r"[^A-Za-z0-9]+", " ", text).split()
    if stopwords:
        # Imported here: scikit-learn costs ~1.5 s to import, and predicting needs it only
        # for models trained with stopwords removed.
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        tokens = [token for token in tokens if token.lower() not in ENGLISH_STOP_WORDS]
    return " ".join(tokens)


def _map_tags(tags: Iterable[str], taxonomy: Taxonomy | None, params: TextData) -> list[str]:
    """Canonical tags of one project: aliases resolved, unknown/excluded dropped."""
    mapped: list[str] = []
    for tag in tags:
        if taxonomy is not None:
            tag = taxonomy.aliases.get(tag, tag)
            if tag not in taxonomy.parents:
                continue
            if params.add_parent_tags:
                mapped.extend(taxonomy.parents[tag])
        mapped.append(tag)
    excluded = set(params.exclude_tags)
    return list(dict.fromkeys(tag for tag in mapped if tag not in excluded))


def prepare(
    projects: pd.DataFrame,
    taxonomy: Taxonomy | None,
    params: TextData,
    source: str = "",
) -> Dataset:
    """Clean texts and filter tags as the original pipeline did.

    Steps: text = title + description, cleaned; aliases mapped to their tag;
    tags outside the taxonomy and excluded tags dropped; tags on fewer than
    ``min_tag_freq`` projects dropped; projects left with no tag dropped.

    Args:
        projects: Output of :func:`load_projects`.
        taxonomy: Allowed tags, or ``None`` to keep every tag.
        params: Preparation settings.
        source: Where the data came from, for messages and the record.

    Returns:
        The prepared data set.

    Raises:
        TagifaiError: If fewer than two classes survive the filters.
    """
    texts = (projects["title"] + " " + projects["description"]).map(
        lambda text: clean_text(text, lower=params.lower, stopwords=params.stopwords)
    )
    tags = projects["tags"].map(lambda raw: _map_tags(raw, taxonomy, params))
    has_text = texts.str.len().gt(0)  # e.g. a title of only punctuation
    frequency = Counter(tag for row in tags[has_text] for tag in row)
    kept = {tag for tag, count in frequency.items() if count >= params.min_tag_freq}
    tags = tags.map(lambda row: [tag for tag in row if tag in kept])
    frame = pd.DataFrame({"id": projects["id"], "text": texts, "tags": tags})
    keep = frame["tags"].map(bool) & has_text
    frame = frame[keep].reset_index(drop=True)
    raw_tags = {tag for row in projects["tags"] for tag in row}
    counts = {
        "projects_in": len(projects),
        "projects_kept": len(frame),
        "projects_dropped": int((~keep).sum()),
        "tags_in": len(raw_tags),
        "tags_after_taxonomy": len(frequency),
        "tags_kept": len(kept),
        "tags_dropped_min_freq": len(frequency) - len(kept),
    }
    if len(kept) < 2:
        raise TagifaiError(
            f"{source or 'data'}: only {len(kept)} tag(s) left after the taxonomy, exclude_tags "
            f"and min_tag_freq={params.min_tag_freq}; need at least 2 classes"
        )
    logger.info("prepared %s: %s", source, counts)
    return Dataset(
        frame=frame, classes=sorted(kept), counts=counts, source=source, digest=digest(frame)
    )


def digest(frame: pd.DataFrame) -> str:
    """A short content hash of prepared rows (order-sensitive)."""
    payload = json.dumps(frame.to_dict(orient="list"), sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def label_matrix(tags: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    """Multi-hot matrix (rows x classes) of tag lists; unknown tags are ignored."""
    index = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(tags), len(classes)), dtype=np.float32)
    for row, row_tags in enumerate(tags):
        for tag in row_tags:
            if tag in index:
                matrix[row, index[tag]] = 1.0
    return matrix


def split(dataset: Dataset, params: TextData, seed: int) -> Splits:
    """Split once into train / validation / test, seeded and multi-label stratified.

    Args:
        dataset: Prepared data.
        params: ``train_size`` and ``val_size`` (test gets the rest).
        seed: Seed of the shuffles.

    Returns:
        The three frames.

    Raises:
        TagifaiError: If there are too few rows for three non-empty splits.
    """
    # Imported here: it pulls in scipy.stats, which loading a model for prediction never needs.
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    frame = dataset.frame
    test_size = 1 - params.train_size - params.val_size
    smallest = min(params.train_size, params.val_size, test_size)
    if len(frame) * smallest < 1 or len(frame) < 10:
        raise TagifaiError(
            f"{dataset.source or 'data'}: {len(frame)} projects are too few to split "
            f"{params.train_size:.2f}/{params.val_size:.2f}/{test_size:.2f}"
        )
    labels = label_matrix(frame["tags"].tolist(), dataset.classes)
    first = MultilabelStratifiedShuffleSplit(
        n_splits=1,
        train_size=params.train_size,
        # None: the rest, counted in whole rows. The float 1 - train_size (0.30000000000000004)
        # made scikit-learn ask for one row too many for most row counts that end in 0.
        test_size=None,
        random_state=seed,
    )
    train_idx, rest_idx = next(first.split(np.zeros(len(frame)), labels))
    second = MultilabelStratifiedShuffleSplit(
        n_splits=1, test_size=test_size / (1 - params.train_size), random_state=seed
    )
    val_pos, test_pos = next(second.split(np.zeros(len(rest_idx)), labels[rest_idx]))
    val_idx, test_idx = rest_idx[val_pos], rest_idx[test_pos]
    if min(len(train_idx), len(val_idx), len(test_idx)) == 0:  # stratifying few rows, many tags
        raise TagifaiError(
            f"{dataset.source or 'data'}: {len(frame)} projects are too few to split "
            f"{params.train_size:.2f}/{params.val_size:.2f}/{test_size:.2f} "
            f"(a split came out empty across {len(dataset.classes)} tags)"
        )
    return Splits(
        train=frame.iloc[np.sort(train_idx)].reset_index(drop=True),
        val=frame.iloc[np.sort(val_idx)].reset_index(drop=True),
        test=frame.iloc[np.sort(test_idx)].reset_index(drop=True),
    )


# --- prediction payloads -------------------------------------------------------------


def read_batch(path: Path) -> pd.DataFrame:
    """Read a CSV or JSONL batch of inputs (``text`` or ``title``/``description``).

    Raises:
        TagifaiError: If the file is missing, not UTF-8 or not valid CSV/JSONL.
    """
    text = _read_text(path)
    if path.suffix.lower() == ".csv":
        try:
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise TagifaiError(f"{path}: invalid CSV ({str(exc).splitlines()[0]})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = parse_json(line, f"{path}: line {number}")
        if isinstance(row, str):
            row = {"text": row}
        if not isinstance(row, dict):
            raise TagifaiError(f"{path}: line {number}: expected an object or a string")
        rows.append(row)
    if not rows:
        raise TagifaiError(f"{path}: no inputs in file")
    return pd.DataFrame(rows)
