"""Jobs the CLI runs: plain functions composing a workload, training, tracking and registry."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagifai import registry, runs, tracking
from tagifai.best_params import BestParams, read_best_params
from tagifai.errors import TagifaiError
from tagifai.logged_models import load_predictor, log_predictor
from tagifai.predict import MODEL_FORMAT, Predictor
from tagifai.training import NullReporter, Reporter
from tagifai.workloads import get_workload
from tagifai.workloads.base import DataSet, DecisionRule, RunParams, Splits

__all__ = [
    "TrainOutcome",
    "evaluate_run",
    "load_best_params",
    "load_data",
    "train_and_log",
    "train_best",
]

logger = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    """What a training job logged.

    Attributes:
        run_id: The MLflow run.
        test_metrics: Metrics on the test split (reported, never used to select).
        model_uri: URI of the logged model.
        data_digest: Digest of the prepared data.
        score: The test score the registry compares (``score_metric`` of the workload).
        version: Registered model version, if registered.
        promoted: Whether that version became ``champion``.
        champion_score: Test score of the previous champion, if any.
        comparable: Whether the previous champion was scored on the same test split
            (if not, the scores say nothing and only ``--force`` promotes).
        decision: The decision rule, tuned on validation.
        threshold_note: How the decision rule compares with the study's (train-best).
    """

    run_id: str
    test_metrics: dict[str, Any]
    model_uri: str
    data_digest: str
    score: float
    version: str | None = None
    promoted: bool = False
    champion_score: float | None = None
    comparable: bool = True
    decision: DecisionRule | None = None
    threshold_note: str = ""


def load_data(
    params: RunParams, data_location: str | None, extra_location: str | None
) -> tuple[DataSet, Splits]:
    """Read, validate, prepare and split the data (before anything is logged).

    ``None`` for the data means the workload's embedded sample.
    """
    workload = get_workload(params.task)
    dataset = workload.load_data(data_location, extra_location, params)
    return dataset, workload.split(dataset, params)


def train_and_log(
    params: RunParams,
    dataset: DataSet,
    splits: Splits,
    experiment_name: str,
    run_name: str | None = None,
    run_tags: dict[str, str] | None = None,
    reporter: Reporter | None = None,
) -> TrainOutcome:
    """Train one model as one MLflow run: params, epochs, test metrics, artifacts, model.

    The decision rule is chosen on validation inside the workload's training; the
    test split is scored once, after training, for the record.

    Args:
        params: Training params.
        dataset: Prepared data (:func:`load_data`).
        splits: Its split.
        experiment_name: MLflow experiment.
        run_name: The run's name in the UI.
        run_tags: Extra run tags (e.g. the study a model came from).
        reporter: Also receives every epoch's metrics (e.g. a progress bar).

    Returns:
        The run id, test metrics and model URI.
    """
    workload = get_workload(params.task)
    with runs.train_run(experiment_name, run_name=run_name, tags=run_tags) as run_id:
        runs.log_run_params(params)
        runs.log_dataset(workload, dataset, splits)
        # Leaving the reporter writes its queued epochs, also when training fails.
        with runs.MlflowReporter(also=reporter or NullReporter()) as epochs:
            result = workload.train(params, dataset, splits, epochs)
        predictor = Predictor(
            params, dataset.classes, result.encoder, result.model, result.decision
        )
        test_metrics = workload.evaluate(predictor, splits.test)
        runs.log_training(
            predictor,
            test_metrics,
            {
                **result.val_metrics,
                "best_epoch": result.best_epoch,
                "epochs_run": result.epochs_run,
            },
        )
        model = log_predictor(predictor)
    return TrainOutcome(
        run_id=run_id,
        test_metrics=test_metrics,
        model_uri=str(model.model_uri),
        data_digest=dataset.digest,
        score=float(test_metrics["overall"][workload.score_metric]),
        decision=result.decision,
    )


def evaluate_run(
    run_id: str, data_location: str | None, extra_location: str | None
) -> dict[str, Any]:
    """Re-score a run's model on the test split it was scored on when trained.

    The data defaults to the run's own; the prepared rows must have the digest
    the run recorded, or the split would not be the run's.

    Raises:
        TagifaiError: If the run is unknown or the data differs from the run's.
    """
    params, tags = tracking.run_record(run_id)
    predictor = load_predictor(f"runs:/{run_id}/model")
    if data_location is None:
        data_location = params.get("data_source") or None
        extra_location = extra_location or params.get("extra_source") or None
    dataset, splits = load_data(predictor.params, data_location, extra_location)
    recorded = tags.get("data_digest")
    if recorded and recorded != dataset.digest:
        raise TagifaiError(
            f"{dataset.source}: data digest {dataset.digest} is not run {run_id}'s {recorded}; "
            "its test split would not be the one the model was scored on (check --data)"
        )
    recorded = tags.get("test_split")
    if recorded and recorded != splits.test_digest:
        raise TagifaiError(
            f"{dataset.source}: the test split made now ({splits.test_digest}) is not run "
            f"{run_id}'s {recorded} (another scikit-learn or iterative-stratification version?)"
        )
    return predictor.workload.evaluate(predictor, splits.test)


def load_best_params(params_file: Path | None, from_run: str | None) -> BestParams:
    """A study's best-params record, from a file or an optimize parent run.

    Raises:
        TagifaiError: If both or neither source is usable, or the file is not one.
    """
    if params_file is not None and from_run is not None:
        raise TagifaiError("--params and --from-run: give one, not both")
    if from_run is not None:
        params_file = tracking.download_best_params(from_run)
    if params_file is None:
        raise TagifaiError("train-best: give --params or --from-run")
    return read_best_params(params_file)


def train_best(
    best: BestParams,
    dataset: DataSet,
    splits: Splits,
    force: bool = False,
    reporter: Reporter | None = None,
) -> TrainOutcome:
    """Train the study's best params, register the model, maybe promote it to champion.

    The run goes into the study's experiment, tagged with the study's parent run.
    The model's decision rule is tuned again on validation (the model is a new
    fit); the outcome says whether it matches the study's. The new version becomes
    ``champion`` only if its test score beats the current champion's on the same
    test split (or ``force``). Tracking must be configured.

    Args:
        best: The study's best-params record.
        dataset: Prepared data (:func:`load_data` of the study's data).
        splits: Its split.
        force: Promote whatever the scores, and train even on data other than the study's.
        reporter: Also receives every epoch's metrics.

    Returns:
        Run id, metrics, model URI, registered version and whether it was promoted.
    """
    params = best.run_params()
    workload = get_workload(best.task)
    if best.data_digest != dataset.digest and not force:
        raise TagifaiError(
            f"{dataset.source}: data digest {dataset.digest} is not the study's "
            f"{best.data_digest}: the params were tuned on other data (--force to train anyway)"
        )
    tags = {
        "tagifai.job": "train-best",
        "tagifai.study_name": best.study_name,
        "tagifai.parent_run_id": best.parent_run_id or "",
        "tagifai.best_trial_number": str(best.trial_number),
        "tagifai.best_trial_run_id": best.mlflow_run_id or "",
    }
    outcome = train_and_log(
        params,
        dataset,
        splits,
        experiment_name=best.study_name,
        run_name=f"train-best-{best.study_name}",
        run_tags=tags,
        reporter=reporter,
    )
    assert outcome.decision is not None
    retuned, study_rule = outcome.decision.thresholds, best.decision.thresholds
    same = len(retuned) == len(study_rule) and all(
        abs(a - b) < 1e-6 for a, b in zip(retuned, study_rule, strict=True)
    )
    outcome.threshold_note = (
        f"decision threshold re-tuned on validation: {outcome.decision.summary:.4f} "
        + ("(the same as the study's)" if same else f"(the study's: {best.decision.summary:.4f})")
    )
    score_name = f"test_{workload.score_metric}"
    # Versions a killed train-best left half-registered (their runs were closed when this
    # one started) are never loaded: remove them.
    registry.remove_incomplete(workload.model_name)
    (
        outcome.version,
        outcome.promoted,
        outcome.champion_score,
        outcome.comparable,
    ) = registry.register_version(
        workload.model_name,
        outcome.model_uri,
        outcome.run_id,
        alias=registry.CHAMPION,
        score_name=score_name,
        score=outcome.score,
        split_digest=splits.test_digest,
        force=force,
        tags={**tags, "run_id": outcome.run_id},
        description=(
            f"Trained from study {best.study_name!r} trial {best.trial_number} "
            f"({best.metric}={best.value:.4f}); {score_name} {outcome.score:.4f}."
        ),
        model_format=str(MODEL_FORMAT),
    )
    return outcome
