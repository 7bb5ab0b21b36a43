"""MLflow "models from code" entry: MLflow runs this file to build the pyfunc model.

Logging the model by file path instead of a pickled object means a saved model
holds code and plain files only. MLflow executes this file (from the model's own
folder, under a module name of its own) when a model is logged and when it is
loaded; before it imports anything of the model, it checks every file of the
model folder against the digests recorded when the model was logged
(:func:`unchanged`), so a model runs only the code that was logged.

The record has two links. The files MLflow writes (``MLmodel`` first) are checked
against digests kept in the tracking store, as a tag of the logged model
(:data:`RECORD_TAG`), not in the artifact store beside them; ``MLmodel``, so
checked, holds the digests of every other file (:data:`FILES_KEY`). Changing any
byte of a model's files, digests included, takes write access to the tracking
store as well as to the artifacts.

:func:`unchanged` is the one implementation of that check: ``tagifai
check-model``, ``predict`` and ``serve`` import it from the installed package
(:mod:`tagifai.logged_models`); inside a model it can use only the standard library
and what MLflow has already imported, since the model's other files are not trusted
yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

FILES_KEY = "tagifai_files"  # in MLmodel's metadata: {relative path: sha256} of code and data
# Files MLflow writes around a model (its description and environment), not code of it.
MLFLOW_FILES = frozenset(
    {
        "MLmodel",
        "conda.yaml",
        "python_env.yaml",
        "requirements.txt",
        "input_example.json",
        "serving_input_example.json",
        "registered_model_meta",  # written by MLflow when it downloads a registered version
    }
)
DOWNLOAD_FILES = frozenset({"registered_model_meta"})  # written on download: not recorded
# On the logged model, in the tracking store: {MLflow's file: sha256}, as JSON.
RECORD_TAG = "tagifai.mlflow_files_sha256"
_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")  # what MLflow names a logged model
# True while tagifai logs a model: MLflow loads it once from its temporary folder to
# check the input example, before the tracking store holds its record.
LOGGING = False
_ENTRY_CACHE = "__pycache__/pyfunc_model."  # this file, compiled by Python to run it


def file_digest(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def mlflow_file_digests(folder: Path) -> dict[str, str]:
    """``{name: sha256}`` of the files MLflow wrote at the top of a model folder."""
    return {
        name: file_digest(folder / name)
        for name in sorted(MLFLOW_FILES - DOWNLOAD_FILES)
        if (folder / name).is_file()
    }


def unchanged(folder: Path, inside: bool = False) -> str | None:
    """What is not as logged in a model folder (``"<file>: <how>"``), or ``None``.

    First MLflow's files (``MLmodel`` included) against the tracking store's record of
    the logged model ``MLmodel`` names, then every other file against ``MLmodel``.

    Args:
        folder: The model folder (holding ``MLmodel``).
        inside: The check runs inside the model (:func:`changed_file`).
    """
    spec = mlflow.models.Model.load(str(folder / "MLmodel"))
    if not (inside and _logging_now()):
        problem = _changed_mlflow_file(folder, spec.model_id)
        if problem is not None:
            return problem
    return changed_file(folder, (spec.metadata or {}).get(FILES_KEY), inside=inside)


def _logging_now() -> bool:
    """Whether this process is logging a model (the installed module's flag)."""
    installed = sys.modules.get("tagifai.pyfunc_model")
    return bool(getattr(installed, "LOGGING", False))


def _changed_mlflow_file(folder: Path, model_id: Any) -> str | None:
    """MLflow's files against the record the tracking store holds for ``model_id``."""
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
        return "MLmodel: names no logged model (model_id), so nothing records its files"
    try:
        tags = mlflow.MlflowClient().get_logged_model(model_id).tags
    except MlflowException:
        return (
            f"MLmodel: logged model {model_id} is not in this tracking store "
            "(MLFLOW_TRACKING_URI); a model is checked against the store it was logged to"
        )
    try:
        recorded = json.loads(tags[RECORD_TAG])
    except (KeyError, ValueError):
        recorded = None
    if not isinstance(recorded, dict) or not recorded:
        return (
            f"MLmodel: the tracking store holds no record of its files ({RECORD_TAG} on "
            f"logged model {model_id}): logged by an earlier tagifai? train it again"
        )
    present = mlflow_file_digests(folder)
    for name in sorted(set(present) | {str(key) for key in recorded}):
        if name not in recorded:
            return f"{name}: not a file of the logged model"
        if name not in present:
            return f"{name}: missing (logged with the model)"
        if present[name] != recorded[name]:
            return (
                f"{name}: changed since the model was logged "
                "(sha256 differs from the tracking store's record)"
            )
    return None


def changed_file(folder: Path, recorded: Any, inside: bool = False) -> str | None:
    """The first file of a model folder that is not as it was logged, and how, or ``None``.

    Every file must be listed in ``recorded`` with its digest, except MLflow's own
    files (:data:`MLFLOW_FILES`, at the top of the folder); a listed file must exist.
    A compiled ``__pycache__`` file is not listed: Python would run it instead of
    its checked source.

    Args:
        folder: The model folder (holding ``MLmodel``).
        recorded: The ``tagifai_files`` metadata the model was logged with.
        inside: The check runs inside the model, from this file: Python compiled it
            (``__pycache__/pyfunc_model.*.pyc``) just before running it, so that file
            is expected. From outside (``check-model``) it is refused like any other.

    Returns:
        ``"<relative path>: <what is wrong>"``, or ``None`` when every file is as logged.
    """
    if not isinstance(recorded, dict) or not recorded:
        return f"MLmodel: no {FILES_KEY} digests (not written by this tagifai, or removed)"
    present: list[str] = []
    for root, dirs, files in os.walk(folder):  # links are not followed
        for name in sorted([*dirs, *files]):
            path = Path(root, name)
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                return f"{relative}: a link, not a file of the logged model"
            if path.is_file():
                present.append(relative)
    for name in sorted(present):
        if name in MLFLOW_FILES or (inside and name.startswith(_ENTRY_CACHE)):
            continue
        if name not in recorded:
            return f"{name}: not a file of the logged model"
        if file_digest(folder / name) != recorded[name]:
            return f"{name}: changed since the model was logged (sha256 differs)"
    for name in sorted(str(key) for key in recorded):
        if name not in present:
            return f"{name}: missing (logged with the model)"
    return None


def _verify_here() -> None:
    """Refuse to go on (raise) if this model's files are not as logged."""
    folder = Path(__file__).resolve().parent
    if not (folder / "MLmodel").exists():
        return  # MLflow runs the package's own file while logging: no model folder yet
    problem = unchanged(folder, inside=True)
    if problem is not None:
        raise RuntimeError(f"tagifai model {folder}: {problem}; refused before loading")


if __name__ != "tagifai.pyfunc_model":  # run by MLflow as a model's entry, not imported
    # Compiled files are neither read from (checked above) nor written into the folder.
    sys.dont_write_bytecode = True
    _verify_here()
    from tagifai.pyfunc import TagifaiPyfunc

    mlflow.models.set_model(TagifaiPyfunc())
