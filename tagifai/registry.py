"""The model registry and its promotion policy.

Every ``train-best`` registers a new version of its workload's model; the
``champion`` alias (what ``predict`` and ``serve`` load by default) moves to it
only if it scores higher on the same test split as the current champion. This is
the one decision the test split takes part in, between finished models.

Two rules keep the registry consistent when commands race or die:

- **A version is complete or it is not used.** A version is created in one call
  with all its tags (score, test split, model format, the study) and
  ``tagifai.complete`` (:func:`register_version`), so no process, killed or not,
  leaves a version without them. A version without it (registered by hand, by an
  older tagifai, or by a process killed inside MLflow's registration) is never
  compared with, promoted over, nor loaded (:func:`check_complete`); the next
  ``train-best`` deletes those whose run has ended (:func:`remove_incomplete`).
- **Promotion is atomic across processes** (:func:`promotion_lock`). Reading the
  champion, comparing and moving the alias happen under one lock that every
  process promoting into the same store takes: for a SQLite store, an exclusive
  ``flock`` on a file beside the database (a SQLite store is only reachable on its
  host, and SQLite itself cannot be held locked while MLflow writes to it through
  another connection); for PostgreSQL and MySQL, a session advisory lock in the
  same database (``pg_advisory_lock``, ``GET_LOCK``). All of them are released by
  the kernel or the database when the holder dies, so a SIGKILL never leaves the
  registry locked. A tracking server (``http(s)://``) offers no lock nor
  compare-and-set to its clients; there each promoter, after moving the alias,
  re-reads the registry and moves it again to the best complete version scored
  since the champion it replaced (:func:`_settle`), until it stands: whichever
  writes last, it writes the best.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tagifai.errors import TagifaiError
from tagifai.faults import failpoint

__all__ = [
    "CHAMPION",
    "COMPLETE_TAG",
    "check_complete",
    "is_complete",
    "promotion_lock",
    "register_version",
    "remove_incomplete",
]

logger = logging.getLogger(__name__)

CHAMPION = "champion"  # the alias predict and serve load by default
FORMAT_TAG = "model_format"  # version tag: the model files' format
COMPLETE_TAG = "tagifai.complete"  # version tag: created with all its tags by tagifai
SETTLE_ROUNDS = 20  # re-reads of a tracking server's registry before giving up
_LOCK_TIMEOUT_S = 600  # MySQL's GET_LOCK wait; a promotion takes well under a second


def is_complete(version: ModelVersion) -> bool:
    """Whether a version was registered whole by tagifai (or, before ``tagifai.complete``,
    had its format tag set: the last tag the earlier tagifai wrote)."""
    tags = version.tags or {}
    return tags.get(COMPLETE_TAG) == "true" or FORMAT_TAG in tags


def register_version(
    name: str,
    model_uri: str,
    run_id: str,
    alias: str,
    score_name: str,
    score: float,
    split_digest: str,
    force: bool,
    tags: dict[str, str],
    description: str,
    model_format: str,
) -> tuple[str, bool, float | None, bool]:
    """Register a logged model as a new, complete version; move ``alias`` to it if it
    scores higher.

    Scores are compared only between versions scored on the same test split: a score on
    another split (other data, seed or preparation) says nothing about which model
    is better, so such a champion is replaced only with ``force``.

    Args:
        name: Registered model name.
        model_uri: The logged model (``models:/m-...``).
        run_id: The run that logged it.
        alias: Alias to maybe move (``champion``).
        score_name: The version tag holding the score (e.g. ``test_f1``).
        score: The new version's test score (higher is better).
        split_digest: Digest of the test split it was scored on (its ``test_split`` tag).
        force: Move the alias whatever the scores.
        tags: Version tags (metrics, the study it came from).
        description: Version description.
        model_format: The format the version's files are in; a champion in another
            format cannot be loaded by this tagifai, so it is replaced (its score ignored).

    Returns:
        The new version, whether the alias now points at it, the previous holder's
        score (``None`` if there was none), and whether the two were comparable.
    """
    client = MlflowClient()
    own = {score_name: repr(score), "test_split": split_digest, FORMAT_TAG: model_format}
    with contextlib.suppress(MlflowException):  # it exists already
        client.create_registered_model(name)
    # One call, all tags: the version is never seen without them.
    version = client.create_model_version(
        name,
        model_uri,
        run_id=run_id,
        tags={**tags, **own, COMPLETE_TAG: "true"},
        description=description,
        model_id=_logged_model_id(model_uri),  # a tracking server refuses the source without it
    ).version
    failpoint("registered")  # killed between registering and promoting
    with promotion_lock() as locked:
        current = _champion(client, name, alias, model_format)
        current_score = _score(current, score_name)
        # A version registered before splits were recorded carries no tag: compared as before.
        comparable = current is None or current.tags.get("test_split", split_digest) == split_digest
        promote = force or current_score is None or (comparable and score > current_score)
        if promote:
            client.set_registered_model_alias(name, alias, str(version))
    if promote and not locked and not force:
        _settle(client, name, alias, score_name, split_digest, model_format, current)
    return str(version), promote, current_score, comparable


def _logged_model_id(model_uri: str) -> str | None:
    """The id in a logged model's ``models:/<model_id>`` URI (not a registered model's
    ``models:/<name>/<version>`` or ``@alias``), as ``mlflow.register_model`` passes it."""
    rest = model_uri.removeprefix("models:/")
    if rest == model_uri or not rest or "/" in rest or "@" in rest:
        return None
    return rest


def _champion(
    client: MlflowClient, name: str, alias: str, model_format: str
) -> ModelVersion | None:
    """The alias holder, if it is a complete version this tagifai can load."""
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    if not is_complete(current) or current.tags.get(FORMAT_TAG) != model_format:
        return None  # e.g. a tagifai 0.1 model: predict refuses it, so it is no champion
    return current


def _score(version: ModelVersion | None, score_name: str) -> float | None:
    """A version's score tag, ``None`` when absent or not a number."""
    if version is None:
        return None
    try:
        value = float(version.tags.get(score_name, "nan"))
    except ValueError:
        return None
    return None if np.isnan(value) else value


def _settle(
    client: MlflowClient,
    name: str,
    alias: str,
    score_name: str,
    split_digest: str,
    model_format: str,
    replaced: ModelVersion | None,
) -> None:
    """Without a lock: move the alias to the best complete version on this split that was
    registered after the champion this promotion replaced, until it stands.

    Each promoter settles after its own write, and a version is complete before its
    promoter reads anything, so the last promoter to settle sees every competitor.
    """
    base = int(replaced.version) if replaced is not None else 0
    for _ in range(SETTLE_ROUNDS):
        holder = _champion(client, name, alias, model_format)
        candidates = [
            version
            for version in client.search_model_versions(f"name = '{name}'")
            if int(version.version) > base
            and is_complete(version)
            and version.tags.get(FORMAT_TAG) == model_format
            and version.tags.get("test_split") == split_digest
            and _score(version, score_name) is not None
        ]
        if holder is not None and all(
            (_score(v, score_name) or 0.0) <= (_score(holder, score_name) or 0.0)
            for v in candidates
        ):
            return
        if not candidates:
            return
        best = max(candidates, key=lambda v: (_score(v, score_name), -int(v.version)))
        client.set_registered_model_alias(name, alias, str(best.version))
    logger.warning("%s@%s: the registry did not settle in %d rounds", name, alias, SETTLE_ROUNDS)


@contextlib.contextmanager
def promotion_lock(tracking_uri: str | None = None) -> Iterator[bool]:
    """Hold the registry's promotion lock (see the module docstring) while the block runs.

    Args:
        tracking_uri: The store (default: MLflow's current one).

    Yields:
        ``True`` when a lock is held; ``False`` for a store that has none to offer (a
        tracking server), where the caller settles after writing instead.
    """
    import mlflow

    uri = tracking_uri or mlflow.get_registry_uri() or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        with _file_lock(Path(uri.removeprefix("sqlite:///") + ".promotion.lock")):
            yield True
    elif re.match(r"(postgresql|mysql)(\+\w+)?://", uri):
        with _database_lock(uri):
            yield True
    else:
        yield False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with path.open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released on close, or by the kernel on death
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _database_lock(uri: str) -> Iterator[None]:
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(b"tagifai.promotion").digest()[:7], "big")
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            if uri.startswith("postgresql"):
                connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                release = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
            else:
                connection.execute(
                    sqlalchemy.text("SELECT GET_LOCK('tagifai.promotion', :t)"),
                    {"t": _LOCK_TIMEOUT_S},
                )
                release = sqlalchemy.text("SELECT RELEASE_LOCK('tagifai.promotion')")
            try:
                yield
            finally:
                connection.execute(release, {"k": key})
    finally:
        engine.dispose()


def remove_incomplete(name: str) -> list[str]:
    """Delete the versions of ``name`` that are not complete and whose run has ended (their
    registration was cut off; a version of a run still going may be one being made).

    Returns:
        The versions deleted.
    """
    client = MlflowClient()
    removed: list[str] = []
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return removed
    for version in versions:
        if is_complete(version):
            continue
        try:
            status = client.get_run(version.run_id).info.status if version.run_id else "FINISHED"
        except MlflowException:
            status = "FINISHED"  # its run is gone
        if status == "RUNNING":
            continue
        client.delete_model_version(name, version.version)
        removed.append(str(version.version))
    if removed:
        logger.warning(
            "deleted incomplete version(s) %s of %s (their registration was cut off)",
            ", ".join(removed),
            name,
        )
    return removed


def check_complete(model_uri: str) -> None:
    """Refuse a registry URI (``models:/name/N``, ``models:/name@alias``) that names an
    incomplete version; other URIs pass.

    Raises:
        TagifaiError: If the version is not complete.
    """
    match = re.fullmatch(r"models:/([^/@]+)(?:/(\d+)|@([^/]+))/?", model_uri)
    if match is None or match.group(1).startswith("m-"):
        return
    name, number, alias = match.groups()
    client = MlflowClient()
    try:
        version: Any = (
            client.get_model_version(name, number)
            if number is not None
            else client.get_model_version_by_alias(name, alias)
        )
    except MlflowException:
        return  # the download says what is missing
    if not is_complete(version):
        raise TagifaiError(
            f"model {model_uri}: version {version.version} is incomplete (its registration "
            "was cut off; the next train-best deletes it)"
        )
