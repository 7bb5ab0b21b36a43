"""The ``tagifai`` command line: parse, validate, call plain functions, print.

Every command prints one line on stderr and exits with code 2 on bad input (a
:class:`~tagifai.errors.TagifaiError`); no traceback is shown for those.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shlex
import signal
import sys
import threading
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

# Typer 0.29 vendors Click: its usage errors are these classes, not click's.
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from tagifai.errors import TagifaiError, VisibleLogText, disk_full, visible
from tagifai.serving import LOOPBACK_HOSTS, MAX_CONNECTIONS, READ_TIMEOUT_SECONDS

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tune, train, register and serve PyTorch models (text tags, image classes) with "
    "Optuna and MLflow.",
)
# Soft wrap: a run id or path is never split across lines. No markup: a path holding
# "[bold]" or "[/x]" is printed as it is, never read as style.
console = Console(soft_wrap=True, markup=False)
err_console = Console(stderr=True, soft_wrap=True, markup=False)

F = TypeVar("F", bound=Callable[..., Any])


def _is_environment_error(exc: BaseException) -> bool:
    """A storage or tracking server that refused (imported late: they are slow to import)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return isinstance(exc, MlflowException | SQLAlchemyError)


def _say(line: str) -> None:
    """One line on stderr, printed as it is (control characters written out)."""
    err_console.print(visible(line), markup=False, highlight=False, soft_wrap=True)


def _print(line: str, style: str | None = None) -> None:
    """One line on stdout, printed as it is: whatever names or values from outside it
    quotes are neither markup nor terminal control."""
    console.print(visible(line), markup=False, highlight=False, style=style)


def command(name: str) -> Callable[[F], F]:
    """Register a CLI command whose project errors become one stderr line and exit code 2.

    A full disk, an unwritable folder or a storage that refuses is one line and exit
    code 1; Ctrl-C (and SIGTERM) is exit code 130 with a line saying the work can be
    resumed.
    """

    def register(func: F) -> F:
        options = _option_names(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                _refuse_empty(kwargs, options)
                return func(*args, **kwargs)
            except TagifaiError as exc:
                _say(f"error: {exc}")
                raise typer.Exit(2) from None
            except KeyboardInterrupt:
                _say(f"interrupted: run the same `tagifai {name}` command again to resume")
                raise typer.Exit(130) from None
            except Exception as exc:
                full = disk_full(exc)
                if full is not None:
                    _say(
                        f"error: {full}: free some space, then run the same `tagifai {name}` "
                        "command again (runs left open are closed FAILED by the next command)"
                    )
                elif isinstance(exc, OSError):  # a read-only or unwritable folder: say where
                    _say(f"error: {exc.filename or 'output'}: {exc.strerror or exc}")
                elif _is_environment_error(exc):  # a storage or tracking server that refuses
                    first = (str(exc).strip() or repr(exc)).splitlines()[0]
                    _say(f"error: {type(exc).__name__}: {first[:300]}")
                else:
                    raise
                raise typer.Exit(1) from None

        app.command(name)(wrapper)
        return func

    return register


def _option_names(func: Callable[..., Any]) -> dict[str, str]:
    """Each parameter's option as the user types it (``n_trials`` -> ``--n-trials``)."""
    names = {}
    for name, hint in typing.get_type_hints(func, include_extras=True).items():
        # Under Annotated, typer keeps an option's first declaration as its ``default``.
        declared = [
            str(meta.default)
            for meta in getattr(hint, "__metadata__", ())
            if isinstance(meta, typer.models.OptionInfo) and str(meta.default).startswith("-")
        ]
        names[name] = declared[0] if declared else name
    return names


def _refuse_empty(kwargs: dict[str, Any], options: dict[str, str]) -> None:
    """No value means "the default" by being left out, never by being empty."""
    for name, value in kwargs.items():
        if value == "" or (isinstance(value, list) and "" in value):
            raise TagifaiError(
                f"{options.get(name, name)}: empty value (leave it out for its default)"
            )


class _QuietEndings(logging.Filter):
    """Drop the tracebacks Optuna and MLflow log for an interrupt or a full disk.

    The command ends on those with one line of its own (:func:`command`); Optuna's
    "Trial N failed" warnings with their tracebacks, and MLflow's logged SQLAlchemy
    errors, would bury it. Any other failure is still logged in full.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ended = False  # an ending was dropped: drop the "failed with value" line after it

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (isinstance(exc, KeyboardInterrupt) or disk_full(exc)):
            self.ended = True
            return False
        if self.ended and "failed with value" in record.getMessage():
            self.ended = False
            return False
        return True


TaskOption = Annotated[
    str,
    typer.Option("--task", help="Workload: text (tags of project texts) or images (classes)."),
]
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Data: a text projects file (JSON/CSV, path or URL), or an image folder "
        "(IDX files or one subfolder per class). [default: the embedded sample]",
    ),
]
TagsOption = Annotated[
    str | None,
    typer.Option("--tags", help="Text only: tags.json taxonomy. [default: the sample's]"),
]
# Commands that reuse a study's or run's data default to the files it recorded.
RecordedDataOption = Annotated[
    str | None,
    typer.Option("--data", help="Data. [default: the data the study or run used]"),
]
RecordedTagsOption = Annotated[
    str | None,
    typer.Option("--tags", help="Text taxonomy. [default: the one the study or run used]"),
]


def _workload(task: str) -> Any:
    from tagifai.workloads import get_workload

    return get_workload(task)


def _data_sources(
    workload: Any, data: str | None, tags: str | None
) -> tuple[str | None, str | None]:
    """The embedded sample unless the user points elsewhere."""
    if tags is not None and workload.extra_option != "--tags":
        raise TagifaiError(f"--tags: the {workload.name} task takes no taxonomy")
    if data is None:
        sample, sample_extra = workload.default_data()
        return sample, tags or sample_extra
    return data, tags


class _EpochProgress:
    """A rich progress bar over epochs (early stopping may end it sooner)."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.task_id = progress.add_task("training", total=total)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = next((f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith("val_")), "")
        self.progress.update(self.task_id, completed=epoch, description=f"epoch {epoch} {shown}")


def _progress() -> Progress:
    from tagifai.workers import is_helper

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal or is_helper(),
    )


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    table = Table(title=visible(title))
    for column in ("metric", "value"):
        table.add_column(column)
    for key, value in metrics.items():
        if isinstance(value, dict | list):
            continue  # per-class tables and the like: in performance.json on the run
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


@command("train")
def train_command(
    task: TaskOption = "text",
    data: DataOption = None,
    tags: TagsOption = None,
    params_file: Annotated[
        str | None, typer.Option("--params", help="Params JSON. [default: the task's config/]")
    ] = None,
    experiment_name: Annotated[
        str | None,
        typer.Option("--experiment-name", help="MLflow experiment. [default: <model>-train]"),
    ] = None,
) -> None:
    """Train one model and record the run in MLflow."""
    from tagifai import jobs, tracking
    from tagifai.search import load_params_file

    workload = _workload(task)
    if experiment_name:
        _check_name("--experiment-name", experiment_name)
    params = load_params_file(workload, params_file or workload.params_file)
    dataset, splits = jobs.load_data(params, *_data_sources(workload, data, tags))
    tracking.configure()
    with _progress() as progress:
        outcome = jobs.train_and_log(
            params,
            dataset,
            splits,
            experiment_name or f"{workload.model_name}-train",  # tagifai-train for text
            reporter=_EpochProgress(progress, params.model.num_epochs),
        )
    _print(f"run_id: {outcome.run_id}")
    _print_metrics("test metrics", outcome.test_metrics["overall"])


@command("train-best")
def train_best_command(
    task: Annotated[
        str | None,
        typer.Option("--task", help="Workload whose best params to train. [default: text]"),
    ] = None,
    params_path: Annotated[
        str | None,
        typer.Option(
            "--params",
            help="best_params.json of a study. [default: the task's config/best_params*.json]",
        ),
    ] = None,
    from_run: Annotated[
        str | None,
        typer.Option("--from-run", help="Optimize parent run whose best_params.json to use."),
    ] = None,
    study_name: Annotated[
        str | None,
        typer.Option("--study", help="Study whose best trial to train (read from its storage)."),
    ] = None,
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage of --study. [default: sqlite]")
    ] = None,
    data: RecordedDataOption = None,
    tags: RecordedTagsOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Make the new version champion whatever its score.")
    ] = False,
) -> None:
    """Train a study's best params, log and register the model, maybe as @champion.

    The params come from --study (the study itself), --params (a best_params.json) or
    --from-run (an optimize parent run); by default from the task's config/best_params*.json,
    which the last study run wrote.
    """
    from tagifai import jobs, tracking

    workload = _workload(task or "text")
    params_file = Path(params_path) if params_path is not None else None
    if sum(source is not None for source in (params_file, from_run, study_name)) > 1:
        raise TagifaiError("train-best: give one of --study, --params and --from-run")
    if params_file is None and from_run is None and study_name is None:
        params_file = workload.best_params_file
        if not params_file.is_file():
            raise TagifaiError(
                f"{params_file}: file not found; run `make optimize TASK={workload.name}` first"
            )
    if from_run:
        tracking.configure(read_only=True)
    if study_name is not None:
        best = _best_of_study(study_name, storage)
    else:
        best = jobs.load_best_params(params_file, from_run)
    if task is not None and best.task != task:
        raise TagifaiError(
            f"{params_file or from_run or study_name}: params of task {best.task}, "
            f"not --task {task}"
        )
    best_workload = _workload(best.task)
    if tags and best_workload.extra_option != "--tags":
        raise TagifaiError(f"--tags: the {best.task} task takes no taxonomy")
    data_location = data or best.data_source
    extra = tags or (best.extra_source if not data else None)
    dataset, splits = jobs.load_data(best.run_params(), data_location, extra)
    tracking.configure()
    epochs = best.run_params().model.num_epochs
    with _progress() as progress:
        outcome = jobs.train_best(
            best, dataset, splits, force=force, reporter=_EpochProgress(progress, epochs)
        )
    _print(f"run_id: {outcome.run_id}")
    _print_metrics("test metrics", outcome.test_metrics["overall"])
    _print(outcome.threshold_note)
    previous = outcome.champion_score
    score = f"test {best_workload.score_metric}"
    versus = (
        "no previous champion" if previous is None else f"previous champion {score} {previous:.4f}"
    )
    if not outcome.comparable:
        versus += " on another test split: not comparable"
        versus += "" if outcome.promoted else ", --force to promote"
    verdict = "is now @champion" if outcome.promoted else "stays a challenger"
    _print(f"{best_workload.model_name} version {outcome.version} {verdict} ({versus})")


def _best_of_study(name: str, storage: str | None) -> Any:
    """The best-params record of study ``name``, read from its storage."""
    from tagifai import study

    loaded = _load_study(name, storage)
    if "base_params" not in loaded.user_attrs:
        raise TagifaiError(f"--study: study {name!r} was not made by tagifai optimize")
    complete = [t for t in loaded.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise TagifaiError(f"--study: study {name!r} has no completed trial yet")
    return study.best_params_of(loaded)


def _load_study(name: str, storage: str | None) -> Any:
    """An existing study (``TagifaiError`` naming the storage when there is none)."""
    import optuna

    from tagifai import study
    from tagifai.config import validate
    from tagifai.search import OptimizeConfig

    _check_name("--study", name)
    config = validate(OptimizeConfig, {"study_name": name, "storage": storage}, "--study")
    url = study.storage_url(config)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise TagifaiError(f"--storage: {url} does not exist (run tagifai optimize first)")
    try:
        return optuna.load_study(study_name=name, storage=study.make_storage(url, config))
    except KeyError:
        raise TagifaiError(f"--study: no study {name!r} in {url}") from None


def _resolve_model_uri(workload: Any, run_id: str | None, model_uri: str | None) -> str:
    if run_id and model_uri:
        raise TagifaiError("--run-id and --model-uri: give one, not both")
    if run_id:
        return f"runs:/{run_id}/model"
    return model_uri or f"models:/{workload.model_name}@champion"


@command("evaluate")
def evaluate_command(
    run_id: Annotated[str, typer.Option("--run-id", help="Run whose model to evaluate.")],
    data: RecordedDataOption = None,
    tags: RecordedTagsOption = None,
) -> None:
    """Re-score a run's model on its test split (the run's data unless --data is given)."""
    from tagifai import jobs, tracking

    tracking.configure(read_only=True)
    metrics = jobs.evaluate_run(run_id, data, tags)
    _print_metrics(f"test metrics of run {run_id}", metrics["overall"])
    if "slices" in metrics:
        console.print_json(json.dumps({"slices": metrics["slices"]}))


@command("predict")
def predict_command(
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Texts to tag, or image files to classify.")
    ] = None,
    task: TaskOption = "text",
    run_id: Annotated[str | None, typer.Option("--run-id", help="Model of this run.")] = None,
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri", help="Any MLflow model URI. [default: models:/<task's model>@champion]"
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="One cut-off in [0, 1] instead of the tuned one."),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="CSV or JSONL of inputs (text: text or title/description)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write results here (JSONL).")
    ] = None,
) -> None:
    """Print predictions with probabilities for inputs (or a file of them)."""
    from tagifai import tracking
    from tagifai.files import write_jsonl_atomic
    from tagifai.logged_models import load_predictor
    from tagifai.workloads.base import InputPolicy

    workload = _workload(task)
    if bool(inputs) == bool(file):
        raise TagifaiError("predict: give inputs or --file, exactly one of them")
    if output is not None and file is None:
        raise TagifaiError("--output: only with --file")
    if output is not None and file is not None:
        _check_output(output, inputs=[file])
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise TagifaiError(f"--threshold: must be within [0, 1], got {threshold}")
    uri = _resolve_model_uri(workload, run_id, model_uri)
    raw = workload.read_batch(file) if file is not None else workload.raw_from_cli(inputs or [])
    tracking.configure(read_only=True)
    predictor = load_predictor(uri)
    if predictor.params.task != workload.name:
        raise TagifaiError(
            f"model is a {predictor.params.task} model: predict with --task {predictor.params.task}"
        )
    # The user of the command line names their own files (`path` inputs); a server never.
    results = predictor.predict(raw, threshold=threshold, policy=InputPolicy(read_files=True))
    if output is not None:
        write_jsonl_atomic(output, results)
        _print(f"wrote {len(results)} predictions to {output}")
        return
    labels = inputs if inputs else raw.iloc[:, 0].astype(str).tolist()
    for label, result in zip(labels, results, strict=True):
        shown = dict(result)
        shown["probabilities"] = {k: p for k, p in result["probabilities"].items() if p >= 0.05}
        console.print_json(json.dumps({"input": label, **shown}))


@command("optimize")
def optimize_command(
    task: Annotated[
        str | None,
        typer.Option("--task", help="Workload: text or images. [default: the config's, text]"),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="Study config YAML. [default: the task's]")
    ] = None,
    data: DataOption = None,
    tags: TagsOption = None,
    n_trials: Annotated[
        int | None,
        typer.Option(
            "--n-trials", min=1, help="Total trials of the study. [default: the config's]"
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            help="Stop starting trials after S seconds. [default: the config's, none]",
        ),
    ] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study name.")] = None,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna storage URL.")] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", min=0, max=2**32 - 1, help="Sampler seed. [default: the config's]"),
    ] = None,
    workers: Annotated[
        int,
        # Checked here, before anything is written; workers.MAX_LOCAL_WORKERS bounds it too.
        typer.Option("--workers", min=1, max=32, help="Worker processes on this machine."),
    ] = 1,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Also print every epoch of every trial.")
    ] = False,
) -> None:
    """Run, resume or join an Optuna study; one MLflow parent run, one child per trial.

    Every process started with the same --study-name and --storage (on this
    machine with --workers, or on others) works on the same study.
    """
    import optuna

    from tagifai import jobs, study, tracking
    from tagifai import workers as local
    from tagifai.progress import EPOCH_LINES_AFTER_SECONDS, StudyProgress
    from tagifai.search import load_optimize_config
    from tagifai.training import THREADS_ENV

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar tells the story

    if study_name:
        _check_name("--study-name", study_name)
    study_config, base, workload = load_optimize_config(
        config,
        task=task,
        n_trials=n_trials,
        timeout=timeout,
        study_name=study_name,
        storage=storage,
        seed=seed,
    )
    data_path, tags_path = _data_sources(workload, data, tags)
    dataset, splits = jobs.load_data(base, data_path, tags_path)
    if os.environ.get(THREADS_ENV):
        import torch

        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    tracking_uri = tracking.configure()  # a tracking server that is down is one line here
    if workers > 1:
        study.open_study(study_config, storage)  # creates the schema once
    # The helpers get this process's resolved settings, so all workers agree.
    helper_command = [
        *("optimize", "--task", workload.name),
        *(("--config", config) if config else ()),
        *(("--data", data_path) if data_path else ()),
        *(("--tags", tags_path) if tags_path else ()),
        *("--study-name", study_config.study_name, "--n-trials", str(study_config.n_trials)),
        *(("--storage", storage) if storage else ()),
        *(("--timeout", str(study_config.timeout)) if study_config.timeout else ()),
    ]
    with (
        local.local_workers(workers, helper_command, study_config.seed),
        StudyProgress(
            err_console,
            study_config.study_name,
            study_config.metric,
            study_config.n_trials,
            quiet=local.is_helper(),  # the process that started the helpers reports
            epoch_lines_after=float(os.environ.get(EPOCH_LINES_ENV, EPOCH_LINES_AFTER_SECONDS)),
        ) as progress,
        _epoch_lines(verbose),
    ):
        result = study.run_study(
            study_config,
            base,
            dataset,
            splits,
            storage=storage,
            best_params_file=workload.best_params_file,
            on_trial=progress.on_trial,
            on_epoch=progress.on_epoch,
        )
    if local.is_helper():
        return  # the process that started this helper reports
    _print_study_summary(result, study_config.n_trials, workload)
    if result.best is not None:
        _print("next:")
        for line in _next_commands(
            result.study.study_name, workload.name, study.storage_url(study_config), tracking_uri
        ):
            _print(f"  {line}")


def _print_study_summary(result: Any, n_trials: int, workload: Any) -> None:
    """What the study did, its best trial and where its outputs are."""
    name = result.study.study_name
    states = [t.state.name for t in result.study.trials]
    if result.trials_run == 0:
        _print(
            f"study {name!r} already has {n_trials} finished trials: nothing to do "
            "(raise --n-trials to run more)"
        )
    _print(
        f"study {name!r}: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
        f"{states.count('FAIL')} failed in {result.seconds:.1f}s; parent run {result.parent_run_id}"
    )
    best = result.best
    if best is None:
        return
    params = ", ".join(f"{k}={_short(v)}" for k, v in best.tuned.items())
    _print(f"best {best.metric} = {best.value:.4f} (trial {best.trial_number}): {params}")
    _print(f"decision rule: {best.decision.kind} {best.decision.summary:.4f}")
    _print(
        f"best params: {workload.best_params_file}, and best_params.json, trials.csv and "
        f"plots/ (PNG + plots.html) on run {result.parent_run_id}"
    )


def _next_commands(study_name: str, task: str, storage: str, tracking_uri: str) -> list[str]:
    """The commands to run after a study, each a ``make`` target (no venv to activate)
    with a comment: the study's storage and tracking store are passed along unless they
    are the project's own, so each command works as printed."""
    from tagifai import study, tracking

    def value(text: str) -> str:  # make expands $ in a variable: $$ is one $
        return shlex.quote(text.replace("$", "$$"))

    stores = ""
    if _absolute_sqlite(storage) != _absolute_sqlite(study.DEFAULT_STORAGE):
        stores += f" STORAGE={value(storage)}"
    tracked = ""
    if _absolute_sqlite(tracking_uri) != _absolute_sqlite(tracking.DEFAULT_TRACKING_URI):
        tracked = f" MLFLOW_TRACKING_URI={value(tracking_uri)}"
    commands = [
        (
            f"make train-best TASK={task} STUDY={study_name}{stores}{tracked}",
            "train its best params, register the model",
        ),
        (f"make report STUDY={study_name}{stores}{tracked}", f"reports/{study_name}.html"),
        (f"make dashboard{stores}", "Optuna's dashboard, live"),
    ]
    if tracking_uri.startswith(("http://", "https://")):  # a server: its own UI
        commands.append((f"# MLflow UI: {tracking_uri}", ""))
    else:
        commands.append((f"make ui{tracked}", "the MLflow UI"))
    return [f"{command}  # {note}" if note else command for command, note in commands]


def _absolute_sqlite(url: str) -> str:
    """A ``sqlite:///`` URL with a relative path made absolute (from here); others as given."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"sqlite:///{(Path.cwd() / url.removeprefix('sqlite:///')).as_posix()}"
    return url


@contextlib.contextmanager
def _epoch_lines(verbose: bool) -> Iterator[None]:
    """With --verbose, one line per epoch of every trial on stderr while inside."""
    if not verbose:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    epochs = logging.getLogger("tagifai.study")
    level = epochs.level
    epochs.setLevel(logging.INFO)
    epochs.addHandler(handler)
    try:
        yield
    finally:
        epochs.removeHandler(handler)
        epochs.setLevel(level)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@command("summarize")
def summarize_command(
    study_name: Annotated[str, typer.Option("--study", help="Study to summarise.")],
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL. [default: local sqlite]")
    ] = None,
) -> None:
    """Write a study's summary to its parent run and its task's config/best_params*.json.

    Workers write it themselves when the study completes; this is for a summary
    that was cut short (a killed process) or wanted before the study ends.
    """
    import optuna

    from tagifai import study, tracking
    from tagifai.config import validate
    from tagifai.search import OptimizeConfig

    _check_name("--study", study_name)
    tracking.configure(read_only=True)
    config = validate(OptimizeConfig, {"study_name": study_name, "storage": storage}, "--study")
    url = study.storage_url(config)
    try:
        loaded = optuna.load_study(study_name=study_name, storage=study.make_storage(url, config))
    except KeyError:
        raise TagifaiError(f"--study: no study {study_name!r} in {url}") from None
    workload = _workload(str(loaded.user_attrs.get("task", "text")))
    best = study.write_summary(loaded, workload.best_params_file)
    if best is None:
        raise TagifaiError(f"study {study_name!r} has no completed trial to summarise")
    _print(
        f"best {best.metric} = {best.value:.4f} (trial {best.trial_number}); "
        f"params in {workload.best_params_file}"
    )


@command("report")
def report_command(
    study_name: Annotated[str, typer.Option("--study", help="Study to report on.")],
    output: Annotated[Path, typer.Option("--output", help="HTML file to write.")],
    storage: Annotated[
        str | None, typer.Option("--storage", help="Optuna storage URL. [default: local sqlite]")
    ] = None,
) -> None:
    """Write one self-contained HTML page about a study: data, best trial, trials, plots,
    the trained model's per-class metrics, MLflow run ids."""
    from tagifai import report, study, tracking
    from tagifai.files import write_bytes_atomic

    _check_name("--study", study_name)
    if output.suffix.lower() not in (".html", ".htm"):
        raise TagifaiError(f"--output: {output} is not an .html file")
    if output.is_dir():
        raise TagifaiError(f"--output: {output} is a folder")
    loaded = _load_study(study_name, storage)
    report.parent_run_id(loaded)  # a record that could not be a run id: one line, no page
    try:
        uri: str | None = tracking.configure(read_only=True)
        trained = report.find_trained(loaded)
        link = report.run_links(uri or "")
    except TagifaiError as exc:  # no tracking store: the study's own record still reports
        _print(f"note: {exc}; the report has no MLflow section", style="yellow")
        uri, trained, link = None, None, None
    # The page names the command that trains the study's model, with its stores.
    train_best = _next_commands(
        study_name,
        str(loaded.user_attrs.get("task", "text")),
        storage or study.DEFAULT_STORAGE,
        uri or tracking.DEFAULT_TRACKING_URI,
    )[0].split("  # ")[0]
    page = report.render_report(loaded, uri, link, trained, train_best)
    write_bytes_atomic(output, page.encode("utf-8"))
    _print(f"wrote {output} ({len(page) / 1e6:.1f} MB)")


@command("check-model")
def check_model_command(
    model_uri: Annotated[str, typer.Argument(help="MLflow model URI (models:/, runs:/, ...).")],
) -> None:
    """Check that a URI names a tagifai model, reading only its MLmodel file (before serving).

    A model tagifai did not write is refused before any of its code could run.
    """
    from tagifai import tracking
    from tagifai.logged_models import inspect_model

    tracking.configure(read_only=True)
    metadata = inspect_model(model_uri)
    _print(f"{model_uri}: a tagifai {metadata.get('task', '')} model, ready to serve")


@command("serve")
def serve_command(
    model_uri: Annotated[
        str | None,
        typer.Option(
            "--model-uri", help="Any MLflow model URI. [default: models:/<task's model>@champion]"
        ),
    ] = None,
    task: TaskOption = "text",
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind (loopback: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on.", min=1, max=65535)
    ] = 5001,
    allowed_hosts: Annotated[
        str,
        typer.Option(
            "--allowed-hosts",
            help="Comma-separated Host header values answered; others get a 400.",
        ),
    ] = ",".join(LOOPBACK_HOSTS),
    read_timeout: Annotated[
        float,
        typer.Option(
            "--read-timeout",
            help="Seconds a client has to send a request's headers, and again its body "
            "(else the connection is closed; a late body gets a 408).",
            min=0.1,
            max=3600,
        ),
    ] = READ_TIMEOUT_SECONDS,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            help="Connections served at once; a request on one more gets a 503.",
            min=1,
            max=10_000,
        ),
    ] = MAX_CONNECTIONS,
) -> None:
    """Serve a tagifai model: MLflow's scoring server (/invocations), foreign models
    refused, Host header checked, requests bounded in size and time, connections capped;
    a request's payload never names a file of the server."""
    from tagifai import serving, tracking

    hosts = [name.strip() for name in allowed_hosts.split(",") if name.strip()]
    if not hosts:
        raise TagifaiError(f"--allowed-hosts: no host name in {allowed_hosts!r:.80}")
    uri = _resolve_model_uri(_workload(task), None, model_uri)
    tracking.configure(read_only=True)
    serving.serve(uri, host, port, hosts, read_timeout, max_connections)


@command("init-experiment")
def init_experiment_command(name: Annotated[str, typer.Argument(help="Experiment name.")]) -> None:
    """Create an MLflow experiment with artifacts under experiments/ (used before `mlflow run`)."""
    from tagifai import tracking

    _check_name("NAME", name)
    tracking.configure()
    _print(tracking.ensure_experiment(name))


def _check_output(output: Path, inputs: list[Path]) -> None:
    """An ``--output`` may not be a folder or one of the command's inputs (by any path,
    links included): writing it would destroy what the command reads."""
    if output.is_dir():
        raise TagifaiError(f"--output: {output} is a folder")
    for source in inputs:
        if output.resolve() == source.resolve():
            raise TagifaiError(f"--output: {output} is the --file input {source}: choose another")


def _check_name(option: str, value: str) -> None:
    """A study or experiment name (it becomes a folder) must follow the name rule."""
    from tagifai.config import check_name

    try:
        check_name(value)
    except ValueError as exc:
        raise TagifaiError(f"{option}: {exc}") from None


# Off a terminal, a trial's epochs are shown once it has run this long (tests set 0).
EPOCH_LINES_ENV = "TAGIFAI_EPOCH_LINES_AFTER"


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    """A background thread (Optuna's heartbeat) that met a full disk ends quietly: the
    main thread meets it too, and says so in one line."""
    if args.exc_value is not None and disk_full(args.exc_value):
        logging.getLogger(__name__).debug("thread %s: %s", args.thread, args.exc_value)
        return
    threading.__excepthook__(args)


def main() -> None:
    """Entry point: run the app; project errors become one line and exit code 2.

    SIGTERM is handled like Ctrl-C: the running trial is recorded as interrupted
    and the study is left resumable.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(VisibleLogText())  # a logged file name cannot drive the terminal
    quiet = _QuietEndings()
    for name in ("optuna.study._optimize", "mlflow.store.db.utils"):
        logging.getLogger(name).addFilter(quiet)
    threading.excepthook = _thread_excepthook
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(prog_name="tagifai", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # bare `tagifai`: the help, as usual
        print(exc.format_message())
        sys.exit(2)
    except UsageError as exc:  # a bad option or value: one line, not a boxed panel
        where = exc.ctx.command_path if exc.ctx is not None else "tagifai"
        _say(f"error: {where}: {exc.format_message()} (see {where} --help)")
        sys.exit(2)
    except typer.Abort:  # Ctrl-C outside a command
        sys.exit(130)
    except TagifaiError as exc:
        _say(f"error: {exc}")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
