"""Optimize: an Optuna study over training params, resumable, one MLflow parent run.

The objective trains on the train split and returns a **validation** metric;
pruning reports that same metric, in the study's direction, every epoch; each
trial's threshold is chosen on validation. The test split is never read here.
Every MLflow call goes through :mod:`tagifai.tracking`.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from tagifai import data, tracking
from tagifai.config import (
    BEST_PARAMS_FILE,
    EXPERIMENTS_DIR,
    OptimizeConfig,
    Params,
    PrunerConfig,
    SamplerConfig,
    SearchSpace,
)
from tagifai.errors import TagifaiError
from tagifai.predict import write_json_atomic
from tagifai.train import train

__all__ = [
    "DEFAULT_STORAGE",
    "OptimizeResult",
    "best_params_payload",
    "create_pruner",
    "create_sampler",
    "make_figures",
    "open_study",
    "run_study",
    "suggest",
]

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = f"sqlite:///{EXPERIMENTS_DIR}/optuna.db"  # separate from MLflow's database
DONE_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass
class OptimizeResult:
    """What one ``tagifai optimize`` invocation did.

    Attributes:
        study: The study (all trials, this and earlier invocations).
        parent_run_id: The MLflow parent run.
        trials_run: Trials started by this invocation.
        best_params: The content written to ``best_params.json``.
        seconds: Wall time of this invocation.
    """

    study: optuna.Study
    parent_run_id: str | None
    trials_run: int
    best_params: dict[str, Any] | None
    seconds: float


def create_sampler(
    config: SamplerConfig, seed: int, search_space: dict[str, SearchSpace]
) -> optuna.samplers.BaseSampler:
    """Build the configured sampler, seeded.

    Raises:
        TagifaiError: If the kwargs do not fit the sampler.
    """
    samplers: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
        "TPE": optuna.samplers.TPESampler,
        "Random": optuna.samplers.RandomSampler,
        "CMA-ES": optuna.samplers.CmaEsSampler,
        "QMC": optuna.samplers.QMCSampler,
        "NSGAII": optuna.samplers.NSGAIISampler,
        "GP": optuna.samplers.GPSampler,
    }
    kwargs = {"seed": seed, **config.kwargs}
    try:
        if config.name == "Grid":
            grid = {name: space.grid() for name, space in search_space.items()}
            return optuna.samplers.GridSampler(grid, **kwargs)
        return samplers[config.name](**kwargs)
    except (TypeError, ValueError, ImportError) as exc:
        raise TagifaiError(f"sampler {config.name}: {exc}") from None


def create_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner:
    """Build the configured pruner.

    Raises:
        TagifaiError: If the kwargs do not fit the pruner.
    """
    pruners: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
        "Median": optuna.pruners.MedianPruner,
        "Percentile": optuna.pruners.PercentilePruner,
        "SuccessiveHalving": optuna.pruners.SuccessiveHalvingPruner,
        "Hyperband": optuna.pruners.HyperbandPruner,
        "Patient": optuna.pruners.PatientPruner,
        "Threshold": optuna.pruners.ThresholdPruner,
        "Nop": optuna.pruners.NopPruner,
    }
    kwargs = dict(config.kwargs)
    if config.name == "Patient":
        kwargs.setdefault("wrapped_pruner", None)
    try:
        return pruners[config.name](**kwargs)
    except (TypeError, ValueError) as exc:
        raise TagifaiError(f"pruner {config.name}: {exc}") from None


def suggest(trial: optuna.Trial, search_space: dict[str, SearchSpace]) -> dict[str, Any]:
    """Ask the trial for one value per searched param."""
    values: dict[str, Any] = {}
    for name, space in search_space.items():
        if space.type == "int":
            values[name] = trial.suggest_int(
                name, space.low, space.high, step=space.step, log=space.log
            )
        elif space.type == "float":
            values[name] = trial.suggest_float(
                name, space.low, space.high, step=space.step, log=space.log
            )
        else:
            values[name] = trial.suggest_categorical(name, list(space.choices))
    return values


def open_study(config: OptimizeConfig, storage: str | None = None) -> optuna.Study:
    """Create the study, or load it if it exists in the storage (resume).

    Args:
        config: Study settings.
        storage: Optuna storage URL; default sqlite under ``experiments/``.

    Returns:
        The study with the configured sampler and pruner.
    """
    url = storage or config.storage or DEFAULT_STORAGE
    if url == DEFAULT_STORAGE:
        EXPERIMENTS_DIR.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=config.study_name,
        storage=url,
        direction=config.direction,
        sampler=create_sampler(config.sampler, config.seed, config.search_space),
        pruner=create_pruner(config.pruner),
        load_if_exists=True,
    )


class _TrialReporter:
    """Per epoch: log metrics to the child run, report the study metric, maybe prune."""

    def __init__(self, trial: optuna.Trial, metric: str, track: bool) -> None:
        self.trial = trial
        self.metric = metric
        self.mlflow = tracking.MlflowReporter() if track else None
        self.epochs = 0

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs = epoch
        if self.mlflow is not None:
            self.mlflow.on_epoch_end(epoch, metrics)
        self.trial.report(metrics[self.metric], step=epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr("epochs", epoch)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


def make_objective(
    config: OptimizeConfig,
    base: Params,
    dataset: data.Dataset,
    splits: data.Splits,
    track: bool = True,
) -> Callable[[optuna.Trial], float]:
    """The objective: train with the trial's params, return the validation metric.

    Args:
        config: Study settings (metric and search space).
        base: Params every trial starts from.
        dataset: Prepared data.
        splits: Train/val/test; only train and val are read.
        track: Log params, epochs, threshold and model to the trial's MLflow run.

    Returns:
        A function of one trial.
    """
    base_values = base.model_dump()

    def objective(trial: optuna.Trial) -> float:
        params = Params.model_validate({**base_values, **suggest(trial, config.search_space)})
        if track:
            tracking.log_params(params)
        reporter = _TrialReporter(trial, config.metric, track)
        result = train(params, dataset, splits, reporter=reporter)
        trial.set_user_attr("epochs", result.epochs_run)
        trial.set_user_attr("best_epoch", result.best_epoch)
        if track:
            tracking.StudyTracker.log_trial(trial, result.predictor.threshold)
            tracking.log_trial_model(result.predictor, result.val_metrics, config.metric)
        else:
            trial.set_user_attr("threshold", tracking.threshold_value(result.predictor.threshold))
        return float(result.val_metrics[config.metric])

    return objective


def best_params_payload(
    study: optuna.Study,
    config: OptimizeConfig,
    base: Params,
    dataset: data.Dataset,
    tags_location: str | None = None,
) -> dict[str, Any]:
    """Everything needed to retrain the best trial, plus where it came from."""
    best = study.best_trial
    params = Params.model_validate({**base.model_dump(), **best.params})
    return {
        "study_name": study.study_name,
        "metric": config.metric,
        "direction": config.direction,
        "value": best.value,
        "trial_number": best.number,
        "mlflow_run_id": best.system_attrs.get(tracking.TRIAL_RUN_ATTR),
        "parent_run_id": study.user_attrs.get(tracking.PARENT_RUN_ATTR),
        "data_source": dataset.source,
        "tags_source": tags_location,
        "data_digest": dataset.digest,
        "threshold": best.user_attrs.get("threshold"),
        "tuned": best.params,
        "params": params.model_dump(mode="json"),
    }


def make_figures(study: optuna.Study, max_contour_params: int = 4) -> dict[str, Any]:
    """Optuna's plots as (plotly, matplotlib) pairs; plots that need more trials are skipped.

    Args:
        study: A study with at least one completed trial.
        max_contour_params: Contour plots grow quadratically: limit them to the
            most important params.

    Returns:
        Name -> (plotly figure, matplotlib axes or ``None``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    important: list[str] | None = None
    figures: dict[str, Any] = {}
    with warnings.catch_warnings():
        # Optuna's matplotlib plots are "experimental", and matplotlib warns about
        # flat axes when a param took a single value: neither is news to the user.
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        if len(completed) >= 2 and len(study.best_trial.params) >= 2:
            try:
                importances = optuna.importance.get_param_importances(study)
                important = list(importances)[:max_contour_params]
            except (RuntimeError, ValueError) as exc:
                logger.info("no param importances: %s", exc)
        plots: dict[str, tuple[Callable[..., Any], Callable[..., Any], dict[str, Any]]] = {
            "optimization_history": (
                vis.plot_optimization_history,
                vis_mpl.plot_optimization_history,
                {},
            ),
            "param_importances": (vis.plot_param_importances, vis_mpl.plot_param_importances, {}),
            "parallel_coordinate": (
                vis.plot_parallel_coordinate,
                vis_mpl.plot_parallel_coordinate,
                {},
            ),
            "contour": (vis.plot_contour, vis_mpl.plot_contour, {"params": important}),
            "slice": (vis.plot_slice, vis_mpl.plot_slice, {}),
        }
        for name, (interactive, static, kwargs) in plots.items():
            if name in ("param_importances", "contour") and important is None:
                continue
            try:
                html = interactive(study, **kwargs)
                png = static(study, **kwargs)
                axes = png.flat[0] if hasattr(png, "flat") else png
                figures[name] = (html, axes)
            except (ValueError, RuntimeError, IndexError) as exc:
                logger.info("skipped plot %s: %s", name, exc)
    return figures


def close_figures(figures: dict[str, Any]) -> None:
    """Free the matplotlib figures of :func:`make_figures`."""
    import matplotlib.pyplot as plt

    for _, axes in figures.values():
        if axes is not None:
            plt.close(axes.figure)


def remaining_trials(study: optuna.Study, n_trials: int) -> int:
    """Trials still to run for the study to hold ``n_trials`` completed or pruned ones."""
    done = len(study.get_trials(deepcopy=False, states=DONE_STATES))
    return max(0, n_trials - done)


def run_study(
    config: OptimizeConfig,
    base: Params,
    dataset: data.Dataset,
    splits: data.Splits,
    tags_location: str | None = None,
    storage: str | None = None,
    best_params_file: Path | None = BEST_PARAMS_FILE,
    track: bool = True,
    show_progress: bool = True,
) -> OptimizeResult:
    """Run (or resume) a study to ``config.n_trials`` trials and write its summary.

    Args:
        config: Study settings, CLI overrides applied.
        base: Params every trial starts from.
        dataset: Prepared data (read and validated before anything is logged).
        splits: Its split; trials read train and validation only.
        tags_location: The taxonomy file, recorded in ``best_params.json``.
        storage: Optuna storage URL (overrides ``config.storage``).
        best_params_file: Where to write ``best_params.json`` (``None``: don't).
        track: Log to MLflow (a no-op tracker otherwise, for benchmarks).
        show_progress: Optuna's progress bar.

    Returns:
        What this invocation did.
    """
    started = time.perf_counter()
    study = open_study(config, storage)
    recorded = study.user_attrs.get("data_digest")
    if recorded is not None and recorded != dataset.digest:
        raise TagifaiError(
            f"study {config.study_name!r} was run on data with digest {recorded}; "
            f"{dataset.source} has digest {dataset.digest}: use another --study-name"
        )
    study.set_user_attr("data_digest", dataset.digest)
    todo = remaining_trials(study, config.n_trials)
    tracker = tracking.StudyTracker(config.metric) if track else None
    parent_run_id = None
    if tracker is not None:
        parent_run_id = tracker.start(study, experiment_name=config.study_name)
        tracking.log_study_config(config, base, dataset, splits)
    status = "FINISHED"
    try:
        if todo:
            objective = make_objective(config, base, dataset, splits, track)
            study.optimize(
                tracker.track(objective) if tracker else objective,
                n_trials=todo,
                timeout=config.timeout,
                catch=(Exception,),
                callbacks=[tracker.callback] if tracker else None,
                show_progress_bar=show_progress,
            )
        payload = None
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            payload = best_params_payload(study, config, base, dataset, tags_location)
            if tracker is not None:
                figures = make_figures(study)
                tracker.log_summary(study, payload, figures, study.trials_dataframe())
                close_figures(figures)
            if best_params_file is not None:
                write_json_atomic(best_params_file, payload)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if tracker is not None:
            tracker.end(status)
    return OptimizeResult(
        study=study,
        parent_run_id=parent_run_id,
        trials_run=todo,
        best_params=payload,
        seconds=time.perf_counter() - started,
    )


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """The study's trials, one row each (number, state, value, params)."""
    return study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs"))
