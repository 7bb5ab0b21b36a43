"""The ``tagifai`` command line: parse, validate, call plain functions, print.

Every command prints one line on stderr and exits with code 2 on bad input (a
:class:`~tagifai.errors.TagifaiError`); no traceback is shown for those.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tagifai.config import (
    DEFAULT_OPTIMIZE_CONFIG,
    DEFAULT_PARAMS_FILE,
    SAMPLE_PROJECTS,
    SAMPLE_TAGS,
    load_params,
)
from tagifai.errors import TagifaiError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tag ML projects: train, optimize, evaluate and predict, tracked in MLflow.",
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _is_environment_error(exc: BaseException) -> bool:
    """A storage or tracking server that refused (imported late: they are slow to import)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, MlflowException | SQLAlchemyError)


def command(name: str) -> Callable[[F], F]:
    """Register a CLI command whose project errors become one stderr line and exit code 2.

    Ctrl-C becomes exit code 130 with a line saying the work can be resumed.
    """

    def register(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except TagifaiError as exc:
                err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            except OSError as exc:
                # Disk full, a read-only or unwritable folder: say where, no traceback.
                where = exc.filename or "output"
                err_console.print(
                    f"error: {where}: {exc.strerror or exc}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(1) from None
            except Exception as exc:
                if not _is_environment_error(exc):
                    raise
                # A storage or tracking server that refuses: one line, no traceback.
                message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
                err_console.print(
                    f"error: {type(exc).__name__}: {message}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(1) from None
            except KeyboardInterrupt:
                err_console.print(
                    f"interrupted: run the same `tagifai {name}` command again to resume",
                    markup=False,
                    highlight=False,
                )
                raise typer.Exit(130) from None

        app.command(name)(wrapper)
        return func

    return register


DataOption = Annotated[
    str | None,
    typer.Option("--data", help="Projects file (JSON/CSV), path or http(s) URL. [default: sample]"),
]
TagsOption = Annotated[
    str | None,
    typer.Option(
        "--tags", help="tags.json taxonomy. [default: the sample's, with the sample data]"
    ),
]
# Commands that reuse a study's or run's data default to the files it recorded.
RecordedDataOption = Annotated[
    str | None,
    typer.Option("--data", help="Projects file. [default: the data the study or run used]"),
]
RecordedTagsOption = Annotated[
    str | None,
    typer.Option("--tags", help="Taxonomy. [default: the taxonomy the study or run used]"),
]


def _data_sources(data: str | None, tags: str | None) -> tuple[str, str | None]:
    """The shipped sample unless the user points elsewhere ("" counts as not given)."""
    data, tags = data or None, tags or None
    if data is None:
        return str(SAMPLE_PROJECTS), str(tags or SAMPLE_TAGS)
    return data, tags


class _EpochProgress:
    """A rich progress bar over epochs (early stopping may end it sooner)."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.task_id = progress.add_task("training", total=total)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.progress.update(
            self.task_id,
            completed=epoch,
            description=f"epoch {epoch} val_f1={metrics['val_f1']:.3f}",
        )


WORKER_ENV = "TAGIFAI_WORKER"  # set for the helper processes of `optimize --workers`
THREADS_ENV = "TAGIFAI_TORCH_THREADS"  # torch threads of such a helper


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal or os.environ.get(WORKER_ENV) == "1",
    )


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=title)
    for column in ("metric", "value"):
        table.add_column(column)
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@command("train")
def train_command(
    data: DataOption = None,
    tags: TagsOption = None,
    params_file: Annotated[
        Path, typer.Option("--params", help="Training params JSON.")
    ] = DEFAULT_PARAMS_FILE,
    experiment_name: Annotated[
        str, typer.Option("--experiment-name", help="MLflow experiment.")
    ] = "tagifai-train",
) -> None:
    """Train one model and record the run in MLflow."""
    from tagifai import jobs, tracking

    params = load_params(params_file)
    dataset, splits = jobs.load_data(params, *_data_sources(data, tags))
    tracking.configure()
    with _progress() as progress:
        outcome = jobs.train_and_log(
            params,
            dataset,
            splits,
            experiment_name,
            reporter=_EpochProgress(progress, params.num_epochs),
        )
    console.print(f"run_id: {outcome.run_id}")
    _print_metrics("test metrics", outcome.test_metrics["overall"])


@command("train-best")
def train_best_command(
    params_file: Annotated[
        Path | None,
        typer.Option(
            "--params", help="best_params.json of a study. [default: config/best_params.json]"
        ),
    ] = None,
    from_run: Annotated[
        str | None,
        typer.Option("--from-run", help="Optimize parent run whose best_params.json to use."),
    ] = None,
    data: RecordedDataOption = None,
    tags: RecordedTagsOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Make the new version champion whatever its score.")
    ] = False,
) -> None:
    """Train the study's best params, log and register the model as `tagifai`."""
    from tagifai import jobs, tracking
    from tagifai.config import BEST_PARAMS_FILE

    if params_file is None and from_run is None:
        params_file = BEST_PARAMS_FILE
        if not params_file.is_file():
            raise TagifaiError(f"{params_file}: file not found; run `make optimize` first")
    if from_run:
        tracking.configure(read_only=True)
    payload = jobs.load_best_params(params_file, from_run or None)
    dataset, splits = jobs.load_best_data(payload, data or None, tags or None)
    tracking.configure()
    epochs = int(payload["params"].get("num_epochs", 1))
    with _progress() as progress:
        outcome = jobs.train_best(
            payload, dataset, splits, force=force, reporter=_EpochProgress(progress, epochs)
        )
    console.print(f"run_id: {outcome.run_id}")
    _print_metrics("test metrics", outcome.test_metrics["overall"])
    previous = outcome.champion_f1
    versus = (
        "no previous champion" if previous is None else f"previous champion test F1 {previous:.4f}"
    )
    if not outcome.comparable:
        versus += " on another test split: not comparable"
        versus += "" if outcome.promoted else ", --force to promote"
    verdict = "is now @champion" if outcome.promoted else "stays a challenger"
    console.print(f"{jobs.MODEL_NAME} version {outcome.version} {verdict} ({versus})")


def _resolve_model_uri(run_id: str | None, model_uri: str | None) -> str:
    if run_id and model_uri:
        raise TagifaiError("--run-id and --model-uri: give one, not both")
    if run_id:
        return f"runs:/{run_id}/model"
    return model_uri or "models:/tagifai@champion"


def _load_predictor(uri: str) -> Any:
    from tagifai import tracking

    tracking.configure(read_only=True)
    return tracking.load_predictor(uri)


@command("evaluate")
def evaluate_command(
    run_id: Annotated[str, typer.Option("--run-id", help="Run whose model to evaluate.")],
    data: RecordedDataOption = None,
    tags: RecordedTagsOption = None,
) -> None:
    """Re-score a run's model on its test split (the run's data unless --data is given)."""
    from tagifai import jobs, tracking

    tracking.configure(read_only=True)
    metrics = jobs.evaluate_run(run_id, data or None, tags or None)
    _print_metrics(f"test metrics of run {run_id}", metrics["overall"])
    console.print_json(json.dumps({"slices": metrics["slices"]}))


@command("predict")
def predict_command(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to tag.")] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Model of this run.")] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri", help="Any MLflow model URI. [default: models:/tagifai@champion]"
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="One cut-off in [0, 1] for every tag.")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="CSV or JSONL with text or title/description.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write results here (JSONL).")
    ] = None,
) -> None:
    """Print tags with probabilities for texts (or a file of them)."""
    import pandas as pd

    from tagifai.files import write_jsonl_atomic

    if bool(texts) == bool(file):
        raise TagifaiError("predict: give texts or --file, exactly one of them")
    if output is not None and file is None:
        raise TagifaiError("--output: only with --file")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise TagifaiError(f"--threshold: must be within [0, 1], got {threshold}")
    if file is not None:
        from tagifai.predict import read_batch

        raw = read_batch(file)
    else:
        raw = pd.DataFrame({"text": texts})
    predictor = _load_predictor(_resolve_model_uri(run_id, model_uri))
    results = predictor.predict(raw, threshold=threshold)
    if output is not None:
        write_jsonl_atomic(output, results)
        console.print(f"wrote {len(results)} predictions to {output}")
        return
    for text, result in zip(raw.iloc[:, 0].tolist(), results, strict=True):
        top = {tag: p for tag, p in result["probabilities"].items() if p >= 0.05}
        console.print_json(
            json.dumps({"input": text, "tags": result["tags"], "probabilities": top})
        )


@command("optimize")
def optimize_command(
    config: Annotated[
        Path, typer.Option("--config", help="Study config YAML.")
    ] = DEFAULT_OPTIMIZE_CONFIG,
    data: DataOption = None,
    tags: TagsOption = None,
    n_trials: Annotated[
        int | None,
        typer.Option("--n-trials", min=0, help="Total trials of the study (0: the config's)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="Stop starting trials after S seconds (0: none)."),
    ] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study name.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL.")] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", min=-1, help="Sampler seed (-1: the config's).")
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes on this machine.")
    ] = 1,
) -> None:
    """Run, resume or join an Optuna study; one MLflow parent run, one child per trial.

    Every process started with the same --study-name and --storage (on this
    machine with --workers, or on others) works on the same study.
    """
    import optuna

    from tagifai import jobs, optimize, tracking
    from tagifai.config import load_optimize_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar tells the story

    # 0 from `mlflow run`'s defaults means "not given" for these two.
    study_config, base = load_optimize_config(
        config,
        n_trials=n_trials or None,
        timeout=timeout or None,
        study_name=study_name or None,
        storage=storage or None,
        seed=None if seed is None or seed < 0 else seed,
    )
    data_path, tags_path = _data_sources(data, tags)
    dataset, splits = jobs.load_data(base, data_path, tags_path)
    if os.environ.get(THREADS_ENV):
        import torch

        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    tracking.configure()
    tracking.check_reachable()
    helpers: list[subprocess.Popen[bytes]] = []
    if workers > 1:
        import torch

        # Share the cores: N workers with torch's default threads each would oversubscribe.
        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        optimize.open_study(study_config, storage or None)  # creates the schema once
        # The helpers get this process's resolved settings, so all workers agree, and a
        # seed of their own: with one seed they would all sample the same start-up trials.
        command = [
            *(sys.executable, "-m", "tagifai.cli", "optimize", "--config", str(config)),
            *("--data", data_path, "--study-name", study_config.study_name),
            *("--n-trials", str(study_config.n_trials)),
            *(("--tags", tags_path) if tags_path else ()),
            *(("--storage", storage) if storage else ()),
            *(("--timeout", str(study_config.timeout)) if study_config.timeout else ()),
        ]
        env = {**os.environ, WORKER_ENV: "1", THREADS_ENV: str(threads)}
        helpers = [
            subprocess.Popen([*command, "--seed", str((study_config.seed + i) % 2**32)], env=env)
            for i in range(1, workers)
        ]
    try:
        with _progress() as progress:
            task_id = progress.add_task(
                f"study {study_config.study_name}", total=study_config.n_trials
            )
            result = optimize.run_study(
                study_config,
                base,
                dataset,
                splits,
                tags_path,
                storage=storage or None,
                on_trial=lambda done, total: progress.update(task_id, completed=done, total=total),
            )
    except BaseException:
        for helper in helpers:  # Ctrl-C, SIGTERM or an error here: stop the helpers too
            helper.send_signal(signal.SIGTERM)
        raise
    finally:
        codes = [helper.wait() for helper in helpers]
    if any(codes):
        raise TagifaiError(f"optimize: {sum(1 for c in codes if c)} worker(s) failed: exit {codes}")
    if os.environ.get(WORKER_ENV) == "1":
        return  # the process that started this helper reports
    study = result.study
    states = [t.state.name for t in study.trials]
    if result.trials_run == 0:
        console.print(
            f"study {study.study_name!r} already has {study_config.n_trials} finished trials: "
            "nothing to do (raise --n-trials to run more)"
        )
    console.print(
        f"study {study.study_name!r}: {states.count('COMPLETE')} complete, "
        f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed; "
        f"parent run {result.parent_run_id}; {result.seconds:.1f}s"
    )
    if result.best_params is not None:
        console.print(
            f"best {study_config.metric} = {result.best_params['value']:.4f} "
            f"(trial {result.best_params['trial_number']}); params in config/best_params.json"
        )


@command("summarize")
def summarize_command(
    study_name: Annotated[str, typer.Option("--study", help="Study to summarise.")],
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL. [default: local sqlite]")
    ] = None,
) -> None:
    """Write a study's summary to its parent run and config/best_params.json.

    Workers write it themselves when the study completes; this is for a summary
    that was cut short (a killed process) or wanted before the study ends.
    """
    from tagifai import optimize, tracking
    from tagifai.config import OptimizeConfig

    if not study_name.strip():
        raise TagifaiError("--study: give the name of a study")
    tracking.configure(read_only=True)
    config = OptimizeConfig(study_name=study_name, storage=storage)
    url = optimize.storage_url(config)
    try:
        study = optuna_load(study_name, optimize.make_storage(url, config))
    except KeyError:
        raise TagifaiError(f"--study: no study {study_name!r} in {url}") from None
    payload = optimize.write_summary(study)
    if payload is None:
        raise TagifaiError(f"study {study_name!r} has no completed trial to summarise")
    console.print(
        f"best {payload['metric']} = {payload['value']:.4f} (trial {payload['trial_number']}); "
        "params in config/best_params.json"
    )


def optuna_load(study_name: str, storage: Any) -> Any:
    """Load an existing study (``KeyError`` if there is none)."""
    import optuna

    return optuna.load_study(study_name=study_name, storage=storage)


@command("init-experiment")
def init_experiment_command(name: Annotated[str, typer.Argument(help="Experiment name.")]) -> None:
    """Create an MLflow experiment with artifacts under experiments/ (used before `mlflow run`)."""
    from tagifai import tracking

    tracking.configure()
    console.print(tracking.ensure_experiment(name))


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    """Entry point: run the app; project errors become one line and exit code 2.

    SIGTERM is handled like Ctrl-C: the running trial is recorded as interrupted
    and the study is left resumable.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except TagifaiError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
