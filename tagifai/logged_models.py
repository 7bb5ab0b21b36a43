"""Logging a trained model as an MLflow pyfunc, and loading it back safely.

A logged model holds the predictor's plain files (weights as a ``state_dict``,
encoder and params as JSON) and the ``tagifai`` package as code, loaded through
MLflow's "models from code" (``pyfunc_model.py``): no pickle, anywhere. The sha256
of every code and data file is recorded in ``MLmodel``'s metadata when the model is
logged, and the sha256 of ``MLmodel`` and MLflow's other files in the tracking store
(a tag of the logged model: :data:`~tagifai.pyfunc_model.RECORD_TAG`). Loading reads
the ``MLmodel`` metadata first and refuses, with one line, a model tagifai did not
write, or one with a file changed, added or removed since it was logged, before
MLflow runs any of its code (MLflow's own loader runs the same check from
``pyfunc_model.py`` before it imports the rest of the model).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.models.model import ModelInfo

import tagifai
from tagifai import pyfunc_model
from tagifai.errors import TagifaiError, missing_package
from tagifai.predict import MODEL_FORMAT, Predictor
from tagifai.pyfunc_model import FILES_KEY, MLFLOW_FILES, RECORD_TAG, file_digest
from tagifai.registry import check_complete
from tagifai.workloads import workload_of_model

__all__ = [
    "PIP_REQUIREMENTS",
    "check_model",
    "download_model",
    "inspect_model",
    "load_predictor",
    "log_predictor",
]

logger = logging.getLogger(__name__)

# Where a logged model's code comes from: the installed package, so the model loads
# wherever MLflow runs without installing tagifai there.
PACKAGE_DIR = Path(tagifai.__file__).parent
# What loading and predicting import: a served model's environment is built from these.
# Training-only packages (optuna, scikit-learn, iterative-stratification) stay out.
# The workload adds its own (Workload.pip_requirements).
PIP_REQUIREMENTS = [
    "torch==2.14.1",
    "mlflow>=3.17,<3.18",
    "numpy",
    "pandas",
    "numpyencoder",
    "pydantic>=2",
    "pyyaml",
]
METADATA_KEY = "tagifai_model_format"  # in MLmodel's metadata: which tagifai wrote it
CODE_MODEL_LOADER = "mlflow.pyfunc.loaders.code_model"  # models from code: no pickle
ENTRY_FILE = "pyfunc_model.py"  # the code MLflow runs first, at the top of the model folder
PREDICTOR_DIR = "artifacts/predictor"  # the predictor's files in the model folder


def log_predictor(
    predictor: Predictor,
    name: str = "model",
    input_example: bool = True,
) -> ModelInfo:
    """Log a predictor as an MLflow pyfunc model into the active run.

    Args:
        predictor: The trained model.
        name: Model name within the run.
        input_example: Store an input example (skipped for trial models: it
            costs a model load to validate).

    Returns:
        MLflow's record of the model (``model_uri``); registering it is the registry's
        (:func:`~tagifai.registry.register_version`).
    """
    signature, example = predictor.workload.signature(predictor.decision.summary)
    requirements = [*PIP_REQUIREMENTS, *predictor.workload.pip_requirements(predictor.params)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        warnings.catch_warnings(),
        _no_bytecode(),
        _logging(),
    ):
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        folder = predictor.save(Path(tmp) / "predictor")
        code = Path(tmp) / "code" / PACKAGE_DIR.name
        # The package's modules only: not the sample data, nor caches.
        shutil.copytree(
            PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "sample_data")
        )
        entry = PACKAGE_DIR / "pyfunc_model.py"
        # Where MLflow puts each file in the model folder: the digests it is checked against.
        files = {
            ENTRY_FILE: file_digest(entry),
            **_digests(folder, PREDICTOR_DIR),
            **_digests(code, f"code/{code.name}"),
        }
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={"predictor": str(folder)},
            code_paths=[str(code)],
            signature=signature,
            input_example=example if input_example else None,
            pip_requirements=requirements,
            metadata={
                METADATA_KEY: MODEL_FORMAT,
                "task": predictor.params.task,
                FILES_KEY: files,
            },
        )
        _record_mlflow_files(info, Path(tmp) / "mlflow_files")
    return info


def _record_mlflow_files(info: ModelInfo, folder: Path) -> None:
    """Keep the digests of the files MLflow wrote (``MLmodel``, which holds every other
    file's) in the tracking store, as read back from the artifact store."""
    names = [
        Path(entry.path).name
        for entry in mlflow.artifacts.list_artifacts(artifact_uri=info.model_uri)
        if not entry.is_dir and Path(entry.path).name in MLFLOW_FILES
    ]
    for name in names:
        # By location: MLflow reads ``models:/m-.../MLmodel`` as a registered model's name.
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{info.artifact_path}/{name}", dst_path=str(folder)
        )
    digests = pyfunc_model.mlflow_file_digests(folder)
    mlflow.MlflowClient().set_logged_model_tags(
        info.model_id, {RECORD_TAG: json.dumps(digests, sort_keys=True)}
    )


def _digests(folder: Path, prefix: str) -> dict[str, str]:
    """``{prefix/relative path: sha256}`` of every file under ``folder``."""
    return {
        f"{prefix}/{path.relative_to(folder).as_posix()}": file_digest(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@contextlib.contextmanager
def _logging() -> Iterator[None]:
    """MLflow loads the model while logging it, before its record is in the tracking
    store: the model's check of that record waits for the next load."""
    before = pyfunc_model.LOGGING
    pyfunc_model.LOGGING = True
    try:
        yield
    finally:
        pyfunc_model.LOGGING = before


@contextlib.contextmanager
def _no_bytecode() -> Iterator[None]:
    """No ``__pycache__`` is written while MLflow saves (and test-loads) the model, so
    the logged folder holds exactly the files whose digests were recorded."""
    before = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.dont_write_bytecode = before


def check_model(model_dir: Path, model_uri: str) -> dict[str, Any]:
    """Read a downloaded model's ``MLmodel`` (no code runs); refuse one tagifai did not write.

    Returns:
        Its metadata.

    Raises:
        TagifaiError: If it is not a tagifai model of this format.
    """
    try:
        spec = Model.load(model_dir / "MLmodel")
    except (MlflowException, OSError, ValueError) as exc:
        raise TagifaiError(f"model {model_uri}: no readable MLmodel ({str(exc)[:120]})") from None
    metadata = spec.metadata or {}
    pyfunc = spec.flavors.get("python_function", {})
    if METADATA_KEY not in metadata:
        # tagifai 0.1 wrote no metadata, but its own model file: name the gap.
        if str(pyfunc.get("model_code_path", "")).endswith("pyfunc_model.py"):
            raise TagifaiError(
                f"model {model_uri}: a model of tagifai 0.1 (model format 1); this tagifai "
                f"reads format {MODEL_FORMAT}: train it again (`make train-best`)"
            )
        raise TagifaiError(f"model {model_uri}: not a tagifai model (refused before loading)")
    if metadata[METADATA_KEY] != MODEL_FORMAT:
        raise TagifaiError(
            f"model {model_uri}: model format {metadata[METADATA_KEY]!r:.20}; "
            f"this tagifai reads format {MODEL_FORMAT}"
        )
    if (
        pyfunc.get("loader_module") != CODE_MODEL_LOADER
        or "python_model" in pyfunc
        or Path(str(pyfunc.get("model_code_path", ""))).name != ENTRY_FILE
        or pyfunc.get("code") != "code"
        or _predictor_path(pyfunc) != PREDICTOR_DIR
    ):
        # A pickled python_model would run its code on load: tagifai never writes one.
        raise TagifaiError(f"model {model_uri}: not a tagifai model (refused before loading)")
    problem = pyfunc_model.unchanged(model_dir)
    if problem is not None:
        raise TagifaiError(f"model {model_uri}: {problem}; refused before loading")
    return dict(metadata)


def _predictor_path(pyfunc: dict[str, Any]) -> Any:
    """Where the pyfunc flavor says the predictor's files are."""
    artifacts = pyfunc.get("artifacts")
    entry = artifacts.get("predictor") if isinstance(artifacts, dict) else None
    return entry.get("path") if isinstance(entry, dict) else None


def load_predictor(model_uri: str) -> Predictor:
    """Load a logged tagifai model (any MLflow model URI) as a :class:`Predictor`.

    The model's files are downloaded and its ``MLmodel`` checked (:func:`check_model`);
    then the predictor's files are read directly, so no code from the artifact store runs.

    Raises:
        TagifaiError: If the URI names no model, or a model that is not tagifai's.
    """
    with tempfile.TemporaryDirectory() as tmp:
        local = download_model(model_uri, Path(tmp))
        check_model(local, model_uri)
        return Predictor.load(local / PREDICTOR_DIR)


def inspect_model(model_uri: str) -> dict[str, Any]:
    """The metadata of a logged tagifai model, read without loading it (for ``make serve``).

    Raises:
        TagifaiError: If the URI names no model, or a model that is not tagifai's.
    """
    with tempfile.TemporaryDirectory() as tmp:
        return check_model(download_model(model_uri, Path(tmp)), model_uri)


def download_model(model_uri: str, folder: Path) -> Path:
    """The model's files, downloaded into ``folder`` (nothing is loaded).

    Raises:
        TagifaiError: If the URI names no model, or a registered version that is not
            complete (:func:`~tagifai.registry.check_complete`).
    """
    check_complete(model_uri)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Path(
                mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(folder))
            )
    except ImportError as exc:  # s3://, gs://, ... without their client package
        raise TagifaiError(
            f"model {model_uri}: its artifact store needs the Python package "
            f"{missing_package(exc)}, which is not installed"
        ) from None
    except (MlflowException, OSError) as exc:
        reason = str(exc).splitlines()[0][:200]
        if model_uri.startswith("models:/") and "not found" in reason.lower():
            reason += _register_hint(model_uri)
        raise TagifaiError(f"model {model_uri}: {reason}") from None


def _register_hint(model_uri: str) -> str:
    """How to register the model a ``models:/NAME...`` URI names, when a workload owns NAME."""
    name = re.split(r"[/@]", model_uri.removeprefix("models:/"), maxsplit=1)[0]
    workload = workload_of_model(name)
    if workload is None:
        return ""
    return f" (train and register one first: make train-best TASK={workload.name})"
