"""Jobs the CLI runs: plain functions composing data, training, evaluation and tracking."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagifai import data, evaluate, tracking
from tagifai.config import Params, load_params
from tagifai.errors import TagifaiError
from tagifai.task import get_task
from tagifai.train import Reporter, train

__all__ = [
    "MODEL_NAME",
    "TrainOutcome",
    "evaluate_run",
    "load_best_data",
    "load_best_params",
    "load_data",
    "study_data",
    "train_and_log",
    "train_best",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "tagifai"  # the registered model
CHAMPION = "champion"  # the alias predict and serve load by default


@dataclass
class TrainOutcome:
    """What a training job logged.

    Attributes:
        run_id: The MLflow run.
        test_metrics: Metrics on the test split (reported, never used to select).
        model_uri: URI of the logged model.
        data_digest: Digest of the prepared data.
        version: Registered model version, if registered.
        promoted: Whether that version became ``champion``.
        champion_f1: Test F1 of the previous champion, if any.
        comparable: Whether the previous champion was scored on the same test split
            (if not, the scores say nothing and only ``--force`` promotes).
    """

    run_id: str
    test_metrics: dict[str, Any]
    model_uri: str
    data_digest: str
    version: str | None = None
    promoted: bool = False
    champion_f1: float | None = None
    comparable: bool = True


def load_data(
    params: Params, data_location: str, tags_location: str | None
) -> tuple[data.Dataset, data.Splits]:
    """Read, validate, prepare and split the data (before anything is logged)."""
    dataset = get_task(params.task).load(data_location, tags_location, params)
    return dataset, data.split(dataset, params)


def train_and_log(
    params: Params,
    dataset: data.Dataset,
    splits: data.Splits,
    experiment_name: str,
    run_tags: dict[str, str] | None = None,
    registered_model_name: str | None = None,
    reporter: Reporter | None = None,
) -> TrainOutcome:
    """Train one model as one MLflow run: params, epochs, test metrics, artifacts, model.

    The threshold is chosen on validation inside :func:`tagifai.train.train`; the
    test split is scored once, after training, for the record.

    Args:
        params: Training params.
        dataset: Prepared data (:func:`load_data`).
        splits: Its split.
        experiment_name: MLflow experiment.
        run_tags: Extra run tags (e.g. the study a model came from).
        registered_model_name: Also register the model under this name.
        reporter: Also receives every epoch's metrics (e.g. a progress bar).

    Returns:
        The run id, test metrics and model URI.
    """
    with tracking.train_run(experiment_name, tags=run_tags) as run_id:
        tracking.log_params(params)
        tracking.log_dataset(dataset, splits)
        # Leaving the reporter writes its queued epochs, also when training fails.
        with tracking.MlflowReporter(also=reporter) as epochs:
            result = train(params, dataset, splits, reporter=epochs)
        test_metrics = evaluate.evaluate_predictor(result.predictor, splits.test, dataset.classes)
        tracking.log_training(
            result.predictor,
            test_metrics,
            {
                **result.val_metrics,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
            },
        )
        model = tracking.log_predictor(
            result.predictor, registered_model_name=registered_model_name
        )
    version = model.registered_model_version
    return TrainOutcome(
        run_id=run_id,
        test_metrics=test_metrics,
        model_uri=str(model.model_uri),
        data_digest=dataset.digest,
        version=None if version is None else str(version),
    )


def evaluate_run(
    run_id: str, data_location: str | None, tags_location: str | None
) -> dict[str, Any]:
    """Re-score a run's model on the test split it was scored on when trained.

    The data defaults to the run's own; the prepared rows must have the digest
    the run recorded, or the split would not be the run's.

    Raises:
        TagifaiError: If the run is unknown or the data differs from the run's.
    """
    params, tags = tracking.run_record(run_id)
    predictor = tracking.load_predictor(f"runs:/{run_id}/model")
    data_location, tags_location = _recorded_data(
        params, data_location, tags_location, f"run {run_id} records no data_source: pass --data"
    )
    dataset, splits = load_data(predictor.params, data_location, tags_location)
    recorded = tags.get("data_digest")
    if recorded and recorded != dataset.digest:
        raise TagifaiError(
            f"{data_location}: data digest {dataset.digest} is not run {run_id}'s {recorded}; "
            "its test split would not be the one the model was scored on (check --data/--tags)"
        )
    recorded = tags.get("test_split")
    if recorded and recorded != splits.test_digest:
        raise TagifaiError(
            f"{data_location}: the test split made now ({splits.test_digest}) is not run "
            f"{run_id}'s {recorded} (another scikit-learn or iterative-stratification version?)"
        )
    return evaluate.evaluate_predictor(predictor, splits.test, predictor.classes)


def load_best_params(params_file: Path | None, from_run: str | None) -> dict[str, Any]:
    """The ``best_params.json`` of a study, from a file or an optimize parent run.

    Raises:
        TagifaiError: If both or neither source is usable, or the file is not one.
    """
    if params_file is not None and from_run is not None:
        raise TagifaiError("--params and --from-run: give one, not both")
    if from_run is not None:
        params_file = tracking.download_best_params(from_run)
    assert params_file is not None
    load_params(params_file)  # validates, with the file's name in any error
    payload: dict[str, Any] = json.loads(Path(params_file).read_text(encoding="utf-8"))
    if "study_name" not in payload or "params" not in payload:
        raise TagifaiError(
            f"{params_file}: not a best_params.json from `tagifai optimize` "
            "(no study_name/params); use `tagifai train --params` for plain params"
        )
    return payload


def study_data(
    payload: dict[str, Any], data_location: str | None, tags_location: str | None
) -> tuple[str, str | None]:
    """The data to train the study's best params on: as given, else the study's own.

    Raises:
        TagifaiError: If neither names a data file.
    """
    return _recorded_data(
        payload,
        data_location,
        tags_location,
        "train-best: no --data given and best_params.json names no data_source",
    )


def _recorded_data(
    record: dict[str, Any], data_location: str | None, tags_location: str | None, missing: str
) -> tuple[str, str | None]:
    """The data given, else the ``data_source``/``tags_source`` a run or study recorded.

    Raises:
        TagifaiError: ``missing``, if neither names a data file.
    """
    if data_location is None:
        data_location = record.get("data_source")
        tags_location = tags_location or record.get("tags_source") or None
    if not data_location:
        raise TagifaiError(missing)
    return data_location, tags_location


def load_best_data(
    payload: dict[str, Any], data_location: str | None = None, tags_location: str | None = None
) -> tuple[data.Dataset, data.Splits]:
    """:func:`load_data` for a study's best params on :func:`study_data`."""
    params = Params.model_validate(payload["params"])
    return load_data(params, *study_data(payload, data_location, tags_location))


def train_best(
    payload: dict[str, Any],
    dataset: data.Dataset,
    splits: data.Splits,
    force: bool = False,
    reporter: Reporter | None = None,
) -> TrainOutcome:
    """Train the study's best params, register the model, maybe promote it to champion.

    The run goes into the study's experiment, tagged with the study's parent run.
    The new version becomes ``champion`` only if its test F1 beats the current
    champion's on the same test split (or ``force``). Tracking must be configured.

    Args:
        payload: Content of ``best_params.json``.
        dataset: Prepared data (:func:`load_data` of :func:`study_data`).
        splits: Its split.
        force: Promote whatever the scores, and train even on data other than the study's.
        reporter: Also receives every epoch's metrics.

    Returns:
        Run id, metrics, model URI, registered version and whether it was promoted.
    """
    params = Params.model_validate(payload["params"])
    if payload.get("data_digest") not in (None, dataset.digest) and not force:
        raise TagifaiError(
            f"{dataset.source}: data digest {dataset.digest} is not the study's "
            f"{payload['data_digest']}: the params were tuned on other data "
            "(--force to train anyway)"
        )
    tags = {
        "tagifai.job": "train-best",
        "tagifai.study_name": str(payload["study_name"]),
        "tagifai.parent_run_id": str(payload.get("parent_run_id") or ""),
        "tagifai.best_trial_number": str(payload.get("trial_number")),
        "tagifai.best_trial_run_id": str(payload.get("mlflow_run_id") or ""),
    }
    outcome = train_and_log(
        params,
        dataset,
        splits,
        experiment_name=str(payload["study_name"]),
        run_tags=tags,
        registered_model_name=MODEL_NAME,
        reporter=reporter,
    )
    test_f1 = float(outcome.test_metrics["overall"]["f1"])
    outcome.promoted, outcome.champion_f1, outcome.comparable = tracking.register_version(
        MODEL_NAME,
        str(outcome.version),
        alias=CHAMPION,
        score=test_f1,
        split_digest=splits.test_digest,
        force=force,
        tags={**tags, "run_id": outcome.run_id, "test_f1": repr(test_f1)},
        description=(
            f"Trained from study {payload['study_name']!r} trial {payload.get('trial_number')} "
            f"({payload.get('metric')}={payload.get('value')}); test F1 {test_f1:.4f}."
        ),
    )
    return outcome
