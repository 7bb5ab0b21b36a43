"""Tracking: every MLflow call that shapes runs lives here.

- :func:`configure` picks the tracking store (``MLFLOW_TRACKING_URI`` wins over
  the default ``sqlite:///experiments/mlflow.db``); nothing happens at import.
- :func:`train_run` / :func:`log_training` record one ``tagifai train``.
- :class:`StudyTracker` owns an optimize study's parent run and the
  ``optuna_integration.MLflowCallback`` that nests one child run per trial.
- :func:`log_predictor` logs a model as an MLflow pyfunc (state_dict + JSON).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow.entities import Metric, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

import tagifai
from tagifai.config import EXPERIMENTS_DIR, Params
from tagifai.data import Dataset, Splits
from tagifai.errors import TagifaiError
from tagifai.files import write_json_atomic
from tagifai.predict import Predictor, TagifaiPyfunc

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MlflowReporter",
    "StudyTracker",
    "configure",
    "download_best_params",
    "ensure_experiment",
    "git_commit",
    "load_predictor",
    "log_predictor",
    "log_study_config",
    "log_training",
    "log_trial_model",
    "register_version",
    "run_record",
    "threshold_value",
    "train_run",
]

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = f"sqlite:///{EXPERIMENTS_DIR}/mlflow.db"
ARTIFACTS_DIR = EXPERIMENTS_DIR / "artifacts"  # artifact root of experiments we create
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attribute holding the parent run id
TRIAL_RUN_ATTR = "mlflow_run_id"  # trial system attribute the MLflowCallback sets
# Where a logged model's code comes from: the installed package, so the model
# loads wherever MLflow runs without installing tagifai there.
PACKAGE_DIR = Path(tagifai.__file__).parent
INPUT_COLUMNS = ("text", "title", "description")
# What loading and predicting import: a served model's environment is built from these.
# Training-only packages (optuna, iterative-stratification) stay out.
PIP_REQUIREMENTS = [
    "torch==2.13.0",
    "mlflow>=3.17,<3.18",
    "numpy",
    "pandas",
    "numpyencoder",
    "pydantic>=2",
    "pyyaml",
]
STOPWORDS_REQUIREMENT = "scikit-learn"  # its stopword list, for params.stopwords models


def configure(tracking_uri: str | None = None, read_only: bool = False) -> str:
    """Point MLflow at the tracking store and return its URI.

    Order: the argument, then ``MLFLOW_TRACKING_URI``, then the default sqlite
    store under ``experiments/`` (created on first use). The model registry
    uses the same store.

    Args:
        tracking_uri: An explicit store, e.g. ``http://127.0.0.1:5000``.
        read_only: For commands that only read (predict, evaluate): a sqlite
            store that does not exist is an error instead of a new empty store.

    Returns:
        The URI in use.

    Raises:
        TagifaiError: If ``read_only`` and the sqlite store does not exist.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri == DEFAULT_TRACKING_URI:
        uri = f"sqlite:///{(Path.cwd() / EXPERIMENTS_DIR / 'mlflow.db').as_posix()}"
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        if read_only and not database.is_file():
            raise TagifaiError(f"{database}: no MLflow tracking store yet (train a model first)")
        database.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
    return uri


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
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return str(experiment.experiment_id)
    location = None
    if _is_local_store(mlflow.get_tracking_uri()):
        location = (Path.cwd() / ARTIFACTS_DIR / name).as_uri()
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # another worker created it first
        if experiment is None:
            raise
        return str(experiment.experiment_id)


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


class MlflowReporter:
    """Logs each epoch's metrics to the active run as ``epoch_<name>``, with the epoch as step.

    The plain names (``val_f1``, ``val_loss``) are kept for the kept weights'
    final values, which is also what an optimize trial's objective reports.

    Epochs are sent in batches, at most every :attr:`flush_seconds`, so the UI's
    curves lag by that much; one write per epoch cost ~9 ms on sqlite, a few percent
    of a study of fast trials. MLflow's asynchronous logging (``synchronous=False``)
    was the other way out, but its background thread slowed training itself (30 ngram
    epochs 7.6 s -> 10.1 s). Use it as a context manager: leaving it flushes the queue,
    however training ended.

    Args:
        also: Another reporter to forward every epoch to (a progress bar, a pruner).
        flush_seconds: Longest time an epoch's metrics wait before they are written.
    """

    def __init__(self, also: Any = None, flush_seconds: float = 5.0) -> None:
        self.also = also
        self.flush_seconds = flush_seconds
        self.run_id = _active_run_id()
        self._pending: list[Metric] = []
        self._flushed_at = time.monotonic()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Queue ``metrics`` at ``step=epoch`` (written if the last write is old), then
        forward them."""
        timestamp = int(time.time() * 1000)
        self._pending.extend(
            Metric(f"epoch_{key}", float(value), timestamp, epoch) for key, value in metrics.items()
        )
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()
        if self.also is not None:
            self.also.on_epoch_end(epoch, metrics)

    def __enter__(self) -> MlflowReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()

    def flush(self) -> None:
        """Write the queued metrics to the run."""
        if self._pending:
            MlflowClient().log_batch(self.run_id, metrics=self._pending)
            self._pending = []
        self._flushed_at = time.monotonic()


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("MlflowReporter needs an active MLflow run")
    return run.info.run_id


@contextlib.contextmanager
def train_run(
    experiment_name: str, run_name: str | None = None, tags: dict[str, str] | None = None
) -> Iterator[str]:
    """Start one MLflow run for a training job and yield its id.

    An exception inside ends the run FAILED (KILLED on Ctrl-C), never RUNNING.

    Args:
        experiment_name: Experiment to log into (created if missing).
        run_name: Display name.
        tags: Extra tags.

    Yields:
        The run id.
    """
    experiment_id = ensure_experiment(experiment_name)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
    status = RunStatus.FINISHED
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        status = RunStatus.KILLED
        raise
    except BaseException:
        status = RunStatus.FAILED
        raise
    finally:
        mlflow.end_run(RunStatus.to_string(status))


def log_params(params: Params) -> None:
    """Log every training param of the active run (lists as JSON)."""
    flat = {
        key: json.dumps(value) if isinstance(value, list | tuple) else value
        for key, value in params.model_dump(mode="json").items()
    }
    mlflow.log_params(flat)


def log_dataset(dataset: Dataset, splits: Splits) -> None:
    """Record the input data (with its digest) and the split sizes on the active run."""
    frame = dataset.frame.assign(
        id=dataset.frame["id"].astype("float64"),  # MLflow schemas want nullable numbers
        tags=dataset.frame["tags"].map(json.dumps),
    )
    source = dataset.source if "://" in dataset.source else str(Path(dataset.source).resolve())
    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and warns that the path is ambiguous.
        warnings.filterwarnings("ignore", message="The specified dataset source")
        mlflow_dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
            frame, source=source, targets="tags", name="projects", digest=dataset.digest
        )
    mlflow.log_input(mlflow_dataset, context="training")
    mlflow.set_tags(
        {
            "data_digest": dataset.digest,
            "test_split": splits.test_digest,
            "git_commit": git_commit(),
        }
    )
    mlflow.log_params(
        {
            "data_source": dataset.source,
            "tags_source": dataset.tags_source or "",
            "num_classes": len(dataset.classes),
            "train_rows": len(splits.train),
            "val_rows": len(splits.val),
            "test_rows": len(splits.test),
            **{f"prep_{key}": value for key, value in dataset.counts.items()},
        }
    )


def threshold_value(threshold: np.ndarray) -> float | list[float]:
    """A single number when every class shares the cut-off, else the list."""
    values = [float(value) for value in threshold]
    return values[0] if len(set(values)) == 1 else values


def log_training(
    predictor: Predictor,
    test_metrics: dict[str, Any],
    extra_metrics: dict[str, float],
) -> None:
    """Log a finished training job's results and artifacts to the active run.

    Artifacts: ``params.json`` (params + threshold), ``encoder.json``,
    ``label_encoder.json`` and ``performance.json`` (test metrics).

    Args:
        predictor: The trained model.
        test_metrics: Output of :func:`tagifai.evaluate.get_metrics` on test.
        extra_metrics: Validation metrics, best epoch and the like.
    """
    overall = test_metrics["overall"]
    mlflow.log_metrics(
        {
            **{f"test_{key}": float(value) for key, value in overall.items()},
            **{key: float(value) for key, value in extra_metrics.items()},
            "threshold": predictor.default_threshold,
        }
    )
    threshold = threshold_value(predictor.threshold)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_json_atomic(
            folder / "params.json",
            {**predictor.params.model_dump(mode="json"), "threshold": threshold},
        )
        write_json_atomic(folder / "encoder.json", predictor.encoder.to_dict(), indent=None)
        write_json_atomic(folder / "label_encoder.json", {"classes": predictor.classes})
        write_json_atomic(folder / "performance.json", test_metrics)
        mlflow.log_artifacts(str(folder))


def log_predictor(
    predictor: Predictor,
    name: str = "model",
    input_example: bool = True,
    registered_model_name: str | None = None,
) -> ModelInfo:
    """Log a predictor as an MLflow pyfunc model into the active run.

    The model holds the predictor's files (weights as a ``state_dict``, encoder,
    classes, params and threshold as JSON) and the ``tagifai`` code, so it loads
    with ``mlflow.pyfunc.load_model`` in any process with MLflow and torch. The
    signature has a ``threshold`` param whose default is the tuned cut-off.

    Args:
        predictor: The trained model.
        name: Model name within the run.
        input_example: Store an input example (skipped for trial models: it
            costs a model load to validate).
        registered_model_name: Also register a new version under this name.

    Returns:
        MLflow's record of the model (``model_uri``, ``registered_model_version``).
    """
    example = pd.DataFrame(
        {
            "text": [
                "Transformers for text classification with PyTorch",
                "Detecting objects in images",
            ]
        }
    )
    signature = ModelSignature(
        # Either a text column, or title and/or description columns.
        inputs=Schema([ColSpec(DataType.string, name, required=False) for name in INPUT_COLUMNS]),
        outputs=Schema(
            [
                ColSpec(Array(DataType.string), "tags"),
                ColSpec(DataType.string, "probabilities"),  # JSON object: tag -> probability
            ]
        ),
        params=ParamSchema([ParamSpec("threshold", DataType.double, predictor.default_threshold)]),
    )
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        folder = predictor.save(Path(tmp) / "predictor")
        code = Path(tmp) / "code" / PACKAGE_DIR.name
        code.mkdir(parents=True)
        for module in PACKAGE_DIR.glob("*.py"):  # not the sample data, nor caches
            shutil.copyfile(module, code / module.name)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(PACKAGE_DIR / "pyfunc_model.py"),
            artifacts={"predictor": str(folder)},
            code_paths=[str(code)],
            signature=signature,
            input_example=example if input_example else None,
            pip_requirements=[
                *PIP_REQUIREMENTS,
                *([STOPWORDS_REQUIREMENT] if predictor.params.stopwords else []),
            ],
            registered_model_name=registered_model_name,
        )
    return info


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


def register_version(
    name: str,
    version: str,
    alias: str,
    score: float,
    split_digest: str,
    force: bool,
    tags: dict[str, str],
    description: str,
) -> tuple[bool, float | None, bool]:
    """Describe a new model version and move ``alias`` to it if it scores higher.

    Scores are compared only between versions scored on the same test split: F1 on
    another split (other data, seed or preparation) says nothing about which model
    is better, so such a champion is replaced only with ``force``.

    Args:
        name: Registered model name.
        version: The new version.
        alias: Alias to maybe move (``champion``).
        score: The new version's test F1 (its ``test_f1`` tag).
        split_digest: Digest of the test split it was scored on (its ``test_split`` tag).
        force: Move the alias whatever the scores.
        tags: Version tags (metrics, the study it came from).
        description: Version description.

    Returns:
        Whether the alias now points at the new version, the previous holder's
        score (``None`` if there was none), and whether the two were comparable.
    """
    client = MlflowClient()
    for key, value in {**tags, "test_split": split_digest}.items():
        client.set_model_version_tag(name, version, key, value)
    client.update_model_version(name, version, description=description)
    try:
        current = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        current = None
    current_score = float(current.tags.get("test_f1", "nan")) if current is not None else None
    if current_score is not None and np.isnan(current_score):
        current_score = None
    # A version registered before splits were recorded carries no tag: compared as before.
    comparable = current is None or current.tags.get("test_split", split_digest) == split_digest
    promote = force or current_score is None or (comparable and score > current_score)
    if promote:
        client.set_registered_model_alias(name, alias, version)
    return promote, current_score, comparable


def load_predictor(model_uri: str) -> Predictor:
    """Load a logged tagifai model (any MLflow model URI) as a :class:`Predictor`.

    Raises:
        TagifaiError: If the URI names no model, or a model that is not tagifai's.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)
            model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as exc:
        raise TagifaiError(f"model {model_uri}: {str(exc).splitlines()[0][:200]}") from None
    python_model = model.unwrap_python_model()
    if not isinstance(python_model, TagifaiPyfunc):
        raise TagifaiError(f"model {model_uri}: not a tagifai model")
    return python_model.predictor


# --- optimize studies ----------------------------------------------------------------


def log_trial_model(predictor: Predictor, val_metrics: dict[str, float], objective: str) -> None:
    """Inside a trial's child run: its validation metrics and its model.

    The objective metric itself is left to the MLflowCallback, which logs it
    under the same name once the trial is over.
    """
    mlflow.log_metrics({key: value for key, value in val_metrics.items() if key != objective})
    log_predictor(predictor, input_example=False)


def log_study_config(config: Any, base: Params, dataset: Dataset, splits: Splits) -> None:
    """On the parent run: the data it searched over and the study config as JSON.

    Params are immutable in MLflow and a resumed study may change ``n_trials``,
    so the config goes in an artifact and tags rather than params.
    """
    log_dataset(dataset, splits)
    mlflow.set_tags(
        {
            "optuna.metric": config.metric,
            "optuna.direction": config.direction,
            "optuna.sampler": config.sampler.name,
            "optuna.pruner": config.pruner.name,
            "optuna.n_trials": str(config.n_trials),
        }
    )
    mlflow.log_dict(
        {"config": config.model_dump(mode="json"), "base_params": base.model_dump(mode="json")},
        "optimize_config.json",
    )


def _mlflow_callback(metric_name: str, experiment_id: str) -> Any:
    """The Optuna MLflowCallback, configured to nest trials under the active run.

    optuna-integration deprecated ``MLflowCallback`` in 4.9 and plans its removal
    in 6.0; tagifai pins ``optuna-integration<6`` and touches it only here, so
    its deprecation warning is silenced here rather than shown on every run.
    """
    from optuna_integration import MLflowCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        return MLflowCallback(
            metric_name=metric_name,
            create_experiment=False,  # the experiment is ours (or `mlflow run`'s)
            mlflow_kwargs={"nested": True, "experiment_id": experiment_id},
            tag_trial_user_attrs=True,
        )


TRIAL_STATUS = {
    optuna.trial.TrialState.COMPLETE: RunStatus.FINISHED,
    optuna.trial.TrialState.PRUNED: RunStatus.KILLED,
    optuna.trial.TrialState.FAIL: RunStatus.FAILED,
}


class StudyTracker:
    """An Optuna study's MLflow side: one parent run, one nested child per trial.

    The parent is, in order: the parent recorded in the study's user attributes
    (a resumed or joined study); the run ``mlflow run`` passed in ``MLFLOW_RUN_ID``;
    a new run in the experiment named after the study.

    Args:
        metric_name: Name of the objective value in the child runs.
    """

    def __init__(self, metric_name: str) -> None:
        self.metric_name = metric_name
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self.trial_run_id: str | None = None
        self._callback: Any = None

    def start(
        self,
        study: optuna.Study,
        experiment_name: str,
        claim: Callable[[str], bool] | None = None,
        storage: optuna.storages.BaseStorage | None = None,
    ) -> str:
        """Start, resume or join the study's parent run, created once for all workers.

        The one process that claims ``<study>.mlflow-parent`` creates the parent run
        and records its id in the study; every other process waits for that id and
        adopts the run.

        Args:
            study: The Optuna study.
            experiment_name: Experiment for a new parent (usually the study name).
            claim: Atomic claim of a name across processes (``optimize.claim``).
            storage: The study's storage, to re-read the recorded parent.

        Returns:
            The parent run id.
        """
        client = MlflowClient()
        launched = os.environ.pop("MLFLOW_RUN_ID", None)  # set by `mlflow run`
        recorded = self._recorded_parent(study)
        if (
            recorded is None
            and claim is not None
            and storage is not None
            and not claim(f"{study.study_name}.mlflow-parent")
        ):
            recorded = self._wait_for_parent(study, storage)
        if launched and recorded and launched != recorded:
            # `mlflow run` resuming or joining an existing study: trials go under the
            # study's parent; the launcher's run points there.
            client.set_tag(launched, "tagifai.study_parent_run_id", recorded)
            client.set_tag(launched, "mlflow.note.content", f"Trials are in run {recorded}.")
        parent_id = recorded or launched
        if parent_id is not None:
            self.experiment_id = client.get_run(parent_id).info.experiment_id
            mlflow.set_experiment(experiment_id=self.experiment_id)
            run = mlflow.start_run(run_id=parent_id)
        else:
            self.experiment_id = ensure_experiment(experiment_name)
            mlflow.set_experiment(experiment_id=self.experiment_id)
            run = mlflow.start_run(run_name=f"study-{study.study_name}")
        self.parent_run_id = run.info.run_id
        if recorded is None:
            study.set_user_attr(PARENT_RUN_ATTR, self.parent_run_id)
        mlflow.set_tags({"optuna.study_name": study.study_name, "git_commit": git_commit()})
        self._callback = _mlflow_callback(self.metric_name, self.experiment_id)
        return self.parent_run_id

    @staticmethod
    def _recorded_parent(study: optuna.Study) -> str | None:
        recorded = study.user_attrs.get(PARENT_RUN_ATTR)
        if recorded is None:
            return None
        try:
            MlflowClient().get_run(recorded)
        except MlflowException:
            return None  # the tracking store was reset: a new parent is made
        return str(recorded)

    def _wait_for_parent(
        self, study: optuna.Study, storage: optuna.storages.BaseStorage, seconds: float = 30.0
    ) -> str | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            fresh = optuna.load_study(study_name=study.study_name, storage=storage)
            if fresh.user_attrs.get(PARENT_RUN_ATTR):
                return self._recorded_parent(fresh)
            time.sleep(0.5)
        # The claimant died before recording a parent: make one (and record it).
        logger.warning(
            "study %s: no parent run recorded %.0fs after another worker claimed it; creating one",
            study.study_name,
            seconds,
        )
        return None

    def track(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        """Wrap the objective so everything it logs lands in the trial's child run."""

        def remember_run(trial: optuna.Trial) -> float:
            active = mlflow.active_run()
            self.trial_run_id = active.info.run_id if active is not None else None
            return objective(trial)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            return self._callback.track_in_mlflow()(remember_run)

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Optuna callback: log the trial, then set its run's true status.

        MLflowCallback reopens the child run to log the value and params and ends
        it FINISHED whatever the trial's state; pruned trials become KILLED and
        failed ones FAILED here. A trial that never started a run (refused as
        surplus) gets none.
        """
        self.trial_run_id = None  # the trial is over: an interrupt now is not in it
        run_id = trial.system_attrs.get(TRIAL_RUN_ATTR)
        if run_id is None:
            return
        self._callback(study, trial)
        status = TRIAL_STATUS.get(trial.state, RunStatus.FAILED)
        MlflowClient().set_terminated(run_id, RunStatus.to_string(status))

    @staticmethod
    def close_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A dead worker's trial was marked FAIL: close its child run FAILED too."""
        run_id = trial.system_attrs.get(TRIAL_RUN_ATTR)
        if run_id is None:
            return
        client = MlflowClient()
        client.set_tag(run_id, "state", "FAIL")
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))

    def abort(self, interrupted: bool) -> None:
        """After Ctrl-C/SIGTERM or an error: the open trial's run is KILLED
        (interrupted) or FAILED, the parent is left KILLED/FAILED and resumable."""
        status = "KILLED" if interrupted else "FAILED"
        active = mlflow.active_run()
        if active is not None and active.info.run_id != self.parent_run_id:
            mlflow.end_run(status)
        elif interrupted and self.trial_run_id is not None:
            # The child's `with start_run()` already ended it FAILED on the way out.
            MlflowClient().set_terminated(self.trial_run_id, status)
        self.end(status)

    def end(self, status: str = "FINISHED") -> None:
        """End this process's hold on the parent run with ``status``.

        ``RUNNING`` leaves it open for other workers: the one that sees the study
        complete ends it FINISHED.
        """
        while mlflow.active_run() is not None:
            active = mlflow.active_run()
            assert active is not None
            mlflow.end_run("KILLED" if active.info.run_id != self.parent_run_id else status)

    @staticmethod
    def log_trial(trial: optuna.Trial, threshold: np.ndarray) -> None:
        """Inside a trial: record the threshold as a user attribute and a metric."""
        value = threshold_value(threshold)
        trial.set_user_attr("threshold", value)
        mlflow.log_metric("threshold", float(np.mean(threshold)))

    def log_summary(
        self,
        study: optuna.Study,
        best_params: dict[str, Any],
        figures: dict[str, Any],
        trials: pd.DataFrame,
    ) -> None:
        """Log the study's result on the parent run.

        Args:
            study: The study (its best trial is summarised).
            best_params: The content of ``best_params.json``.
            figures: Name -> plotly figure.
            trials: ``study.trials_dataframe()``.
        """
        best = study.best_trial
        finished = [t for t in study.trials if t.state.is_finished()]
        mlflow.log_metrics(
            {
                f"best_{self.metric_name}": float(best.value or 0.0),
                "best_trial_number": best.number,
                "trials_complete": sum(t.state.name == "COMPLETE" for t in finished),
                "trials_pruned": sum(t.state.name == "PRUNED" for t in finished),
                "trials_failed": sum(t.state.name == "FAIL" for t in finished),
            },
            step=len(finished),
        )
        mlflow.set_tags(
            {
                "best_trial_number": str(best.number),
                "best_run_id": str(best.system_attrs.get(TRIAL_RUN_ATTR, "")),
                f"best_{self.metric_name}": f"{best.value:.6f}",
                **{f"best.{key}": str(value) for key, value in best.params.items()},
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            write_json_atomic(folder / "best_params.json", best_params)
            trials.to_csv(folder / "trials.csv", index=False)
            plots = folder / "plots"
            plots.mkdir()
            # One small page per plot (plotly.js from its CDN), and every plot in one
            # page with plotly.js inside, for browsing without internet access.
            for name, figure in figures.items():
                figure.write_html(plots / f"{name}.html", include_plotlyjs="cdn")
            if figures:
                pages = [
                    figure.to_html(full_html=False, include_plotlyjs=i == 0)
                    for i, figure in enumerate(figures.values())
                ]
                body = "".join(pages)
                (plots / "all_offline.html").write_text(
                    f"<html><head><meta charset='utf-8'></head><body>{body}</body></html>",
                    encoding="utf-8",
                )
            mlflow.log_artifacts(str(folder))


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
