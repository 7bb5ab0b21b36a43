"""MLflow "models from code" entry: MLflow runs this file to build the pyfunc model.

Logging the model by file path instead of a pickled object means a saved model
holds code and plain files only. MLflow executes this file (from the model's own
folder, under a module name of its own) when a model is logged and when it is
loaded; before it imports anything of the model, it checks every file of the
model folder against the digests recorded when the model was logged
(:func:`changed_file`), so a model runs only the code that was logged.

:func:`changed_file` is the one implementation of that check: ``tagifai
check-model``, ``predict`` and ``serve`` import it from the installed package
(:mod:`tagifai.logged_models`); inside a model it can use only the standard library
and what MLflow has already imported, since the model's other files are not trusted
yet.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import mlflow

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
_ENTRY_CACHE = "__pycache__/pyfunc_model."  # this file, compiled by Python to run it


def file_digest(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    metadata = mlflow.models.Model.load(str(folder / "MLmodel")).metadata or {}
    problem = changed_file(folder, metadata.get(FILES_KEY), inside=True)
    if problem is not None:
        raise RuntimeError(f"tagifai model {folder}: {problem}; refused before loading")


if __name__ != "tagifai.pyfunc_model":  # run by MLflow as a model's entry, not imported
    # Compiled files are neither read from (checked above) nor written into the folder.
    sys.dont_write_bytecode = True
    _verify_here()
    from tagifai.pyfunc import TagifaiPyfunc

    mlflow.models.set_model(TagifaiPyfunc())
