"""Tracking: which MLflow store, and the few reads every command shares.

- :func:`configure` picks the tracking store (``MLFLOW_TRACKING_URI`` wins over
  MLflow's own default, ``./mlflow.db`` in the project folder, so that ``mlflow run``,
  ``mlflow ui`` and every tagifai command agree without a variable); nothing happens
  at import;
- :func:`ensure_experiment` creates an experiment with its artifacts under
  ``experiments/`` and opens it in the UI's model-training view;
- :func:`check_reachable` fails fast on a tracking server that is down;
- a server that goes away mid-command is retried by MLflow's client (minutes of backoff);
  :class:`OutageNotice` says so in one line, and :func:`note_reachable` in one more when
  its requests go through again.

Who owns what else: :mod:`tagifai.runs` the shape of runs (a training run, a
study's parent and children), :mod:`tagifai.logged_models` logging and loading
models, :mod:`tagifai.registry` the registry and its promotion policy.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import tagifai
from tagifai.config import EXPERIMENTS_DIR, check_name
from tagifai.errors import TagifaiError

__all__ = [
    "DEFAULT_TRACKING_URI",
    "OutageNotice",
    "check_reachable",
    "configure",
    "download_best_params",
    "ensure_experiment",
    "git_commit",
    "note_reachable",
    "run_record",
    "store_uri",
]

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default, relative to the project
ARTIFACTS_DIR = EXPERIMENTS_DIR / "artifacts"  # artifact root of experiments we create
PACKAGE_DIR = Path(tagifai.__file__).parent
# The MLflow 3 UI opens an experiment in its GenAI view unless this tag says otherwise.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def configure(tracking_uri: str | None = None, read_only: bool = False) -> str:
    """Point MLflow at the tracking store and return its URI.

    Order: the argument, then ``MLFLOW_TRACKING_URI``, then MLflow's own default,
    ``./mlflow.db`` (created on first use). The model registry
    uses the same store.

    Args:
        tracking_uri: An explicit store, e.g. ``http://127.0.0.1:5000``.
        read_only: For commands that only read (predict, evaluate): a sqlite
            store that does not exist is an error instead of a new empty store.

    Returns:
        The URI in use.

    Raises:
        TagifaiError: If ``read_only`` and the sqlite store does not exist, or if a
            tracking server does not answer (in seconds, instead of MLflow's minutes
            of retries): every command that needs the store asks here first.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri == DEFAULT_TRACKING_URI:
        uri = f"sqlite:///{(Path.cwd() / 'mlflow.db').as_posix()}"
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if read_only and not database.is_file():
            raise TagifaiError(f"{database}: no MLflow tracking store yet (train a model first)")
        database.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A tracking server makes MLflow print two "View run" lines per run: one per trial.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Database migrations and artifact-repo chatter are not for the user's console.
    for name in (
        "alembic",
        "mlflow.store.db.utils",
        "mlflow.tracking.fluent",
        "mlflow.pyfunc",
        "mlflow.models",
        "mlflow.tracking._tracking_service.client",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    if uri.startswith(("http://", "https://")):
        check_reachable()
        retries = logging.getLogger("urllib3.connectionpool")
        if not any(isinstance(f, OutageNotice) for f in retries.filters):
            retries.addFilter(OutageNotice(uri))
    return uri


class OutageNotice(logging.Filter):
    """Turns urllib3's retry warnings for the tracking server into one line per outage.

    MLflow's client retries a failed request with backoff for minutes, and urllib3
    warns at every retry. The first retry of an outage becomes one warning naming the
    server; the rest are dropped. :func:`note_reachable` ends the outage.
    """

    down_since: float | None = None  # shared: one outage at a time, whichever client

    def __init__(self, uri: str) -> None:
        super().__init__()
        self.uri = uri

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop urllib3's retry lines; say the first of an outage once."""
        if "Retrying" not in record.getMessage():
            return True
        if OutageNotice.down_since is None:
            OutageNotice.down_since = time.monotonic()
            logger.warning(
                "MLflow tracking server %s is not answering; retrying its requests "
                "(trials go on, their results are kept in the Optuna storage)",
                self.uri,
            )
        return False


def note_reachable() -> None:
    """Requests to the tracking server went through: end an outage, in one line."""
    if OutageNotice.down_since is not None:
        seconds = time.monotonic() - OutageNotice.down_since
        OutageNotice.down_since = None
        logger.warning(
            "MLflow tracking server %s answers again (after %.0f s); its writes went through",
            mlflow.get_tracking_uri(),
            seconds,
        )


def _is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("postgresql") or uri.startswith("mysql")


def ensure_experiment(name: str) -> str:
    """Return the id of experiment ``name``, creating it if needed (race-safe).

    Experiments created against a local database store keep their artifacts under
    ``experiments/artifacts/<name>`` instead of MLflow's ``./mlruns`` default.

    Args:
        name: Experiment name.

    Returns:
        The experiment id.
    """
    try:
        check_name(name)  # it becomes a folder under experiments/artifacts/
    except ValueError as exc:
        raise TagifaiError(f"experiment name: {exc}") from None
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        for key, value in EXPERIMENT_KIND.items():
            if key not in experiment.tags:  # e.g. made by `mlflow run --experiment-name`
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return str(experiment.experiment_id)
    location = None
    if _is_local_store(mlflow.get_tracking_uri()):
        location = (Path.cwd() / ARTIFACTS_DIR / name).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # another worker created it first
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def store_uri() -> str:
    """The tracking store in use, a sqlite path made absolute (one store, one name)."""
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve().as_posix()}"
    return uri.rstrip("/")


def git_commit() -> str:
    """The commit of the checkout tagifai runs from (``-dirty`` with tracked changes).

    Read from the package's own folder, so it is right whatever the working
    directory; ``unknown`` outside a git checkout (an installed wheel).
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PACKAGE_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def run_record(run_id: str) -> tuple[dict[str, str], dict[str, str]]:
    """A run's params and tags.

    Raises:
        TagifaiError: If there is no such run.
    """
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        raise TagifaiError(
            f"--run-id: no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}"
        ) from None
    return dict(run.data.params), dict(run.data.tags)


def download_best_params(run_id: str) -> Path:
    """Download the ``best_params.json`` artifact of an optimize parent run.

    Raises:
        TagifaiError: If the run does not exist or has no such artifact.
    """
    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        raise TagifaiError(
            f"--from-run: no MLflow run {run_id!r} in {mlflow.get_tracking_uri()}"
        ) from None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="best_params.json")
    except (MlflowException, OSError):
        raise TagifaiError(
            f"--from-run: run {run_id} has no best_params.json (not an optimize run?)"
        ) from None
    return Path(path)


def check_reachable(timeout: int = 10) -> None:
    """Fail fast with one line if the tracking store cannot be reached.

    MLflow retries HTTP requests with backoff for minutes by default; this one
    check does not retry, so a wrong or down server is reported in seconds.
    """
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    saved = {key: os.environ.get(key) for key in quick}
    os.environ.update(quick)
    try:
        MlflowClient().search_experiments(max_results=1)
    except Exception as exc:
        raise TagifaiError(
            f"MLflow tracking store {mlflow.get_tracking_uri()} is unreachable: "
            f"{str(exc).splitlines()[0][:200]}"
        ) from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
