"""What every benchmark shares: inputs, temporary stores, rows, tables and RESULTS.md.

A benchmark never touches the project's ``experiments/`` or ``config/best_params.json``:
it runs inside a temporary working directory (:func:`workspace`) with its own
sqlite MLflow store and Optuna storage (:func:`mlflow_store`, :func:`optuna_url`),
all deleted afterwards. The data is read in place, never copied into the repo.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna

from tagifai import jobs, tracking
from tagifai.config import read_mapping
from tagifai.files import write_bytes_atomic
from tagifai.search import OptimizeConfig, load_optimize_config, load_params_file, params_for
from tagifai.training import NullReporter
from tagifai.workloads import get_workload
from tagifai.workloads.base import DataSet, RunParams, Splits
from tagifai.workloads.text import WORKLOAD as TEXT

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_FASHION_MNIST_DIR",
    "DEFAULT_MNIST_DIR",
    "IMAGES_KEY",
    "OPTIMIZE_CONFIG",
    "PARAMS_FILE",
    "REPO",
    "RESULTS_FILE",
    "SMOKE_PARAMS",
    "SMOKE_RESULTS_FILE",
    "Inputs",
    "Report",
    "Row",
    "Target",
    "add_common_args",
    "add_image_args",
    "child_env",
    "epochs_trained",
    "failed_report",
    "load_inputs_data",
    "machine_info",
    "measured",
    "median",
    "mlflow_store",
    "note",
    "optuna_url",
    "progress",
    "quiet",
    "reset_mlflow_state",
    "resolve_inputs",
    "run_script",
    "smoke_space",
    "stop_process_group",
    "study_config",
    "table",
    "train_params",
    "trial_states",
    "warm_up",
    "workspace",
    "write_results",
]

REPO = Path(__file__).resolve().parents[1]
# The public Made-With-ML files (2021-03-08, commit 03ae938), read in place.
DEFAULT_DATA_DIR = REPO.parent / "shared" / "datasets" / "MLOps" / "2021-03-08_03ae938"
DATA_ENV = "TAGIFAI_BENCH_DATA"  # a directory holding projects.json and tags.json
# Image folders of IDX files (bench_images), read in place.
DEFAULT_FASHION_MNIST_DIR = REPO.parent / "shared" / "datasets" / "FashionMNIST"
DEFAULT_MNIST_DIR = REPO.parent / "shared" / "datasets" / "MNIST"
FASHION_MNIST_ENV = "TAGIFAI_BENCH_FASHION_MNIST"
MNIST_ENV = "TAGIFAI_BENCH_MNIST"
RESULTS_FILE = REPO / "benchmarks" / "RESULTS.md"
SMOKE_RESULTS_FILE = REPO / "benchmarks" / "out" / "RESULTS-smoke.md"  # git-ignored
OPTIMIZE_CONFIG = REPO / "config" / "optimize.yaml"
PARAMS_FILE = REPO / "config" / "params.json"

# --smoke: a training on the 420-project sample takes about a second with these. Every
# architecture has its own defaults, so a smoke study pins them in its search space too.
SMOKE_PARAMS: dict[str, int] = {"num_epochs": 3, "patience": 2}

_STARTED = time.monotonic()
IMAGES_KEY = "images"  # the one benchmark that reads the image folders, not the text data


# --- inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """The data a benchmark runs on.

    Attributes:
        data: ``projects.json`` path (empty when only images are benchmarked).
        tags: ``tags.json`` path, or ``None``.
        smoke: Shipped sample and tiny settings: checks the script, measures nothing.
        fashion_mnist: FashionMNIST IDX folder (``None`` in a smoke run: the digits).
        mnist: MNIST IDX folder (``None`` in a smoke run: the digits).
    """

    data: str
    tags: str | None
    smoke: bool = False
    fashion_mnist: str | None = None
    mnist: str | None = None

    def describe(self, keys: Collection[str]) -> list[str]:
        """The data lines of a results file's header, for the benchmarks in ``keys``."""
        lines = []
        if self.data and set(keys) - {IMAGES_KEY}:
            lines.append(f"- Data: `{self.data}` (tags: `{self.tags}`)")
        if IMAGES_KEY in keys:
            folders = f"`{self.fashion_mnist}`, `{self.mnist}`"
            lines.append(f"- Image data: {'scikit-learn digits' if self.smoke else folders}")
        return lines


def add_common_args(parser: argparse.ArgumentParser, trials: int | str | None = None) -> None:
    """``--data``, ``--tags``, ``--smoke``, ``--out`` (and ``--trials`` if ``trials`` is given).

    Args:
        parser: The script's parser.
        trials: Default number of trials of the script's studies (``None``: no flag).
    """
    parser.add_argument(
        "--data",
        help=f"projects.json [default: ${DATA_ENV}/projects.json, else {DEFAULT_DATA_DIR}]",
    )
    parser.add_argument(
        "--tags", help="tags.json [default: the one next to the projects file, if any]"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run on the shipped sample with tiny settings (checks the script; seconds)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="also write the results as markdown here (run_all: default benchmarks/RESULTS.md)",
    )
    if trials is not None:
        parser.add_argument(
            "--trials", type=int, default=None, help=f"trials per study [default: {trials}]"
        )


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """``--fashion-mnist`` and ``--mnist``: the IDX folders of :mod:`benchmarks.bench_images`."""
    parser.add_argument(
        "--fashion-mnist",
        help=f"FashionMNIST IDX folder [default: ${FASHION_MNIST_ENV}, else "
        f"{DEFAULT_FASHION_MNIST_DIR}]",
    )
    parser.add_argument(
        "--mnist",
        help=f"MNIST IDX folder [default: ${MNIST_ENV}, else {DEFAULT_MNIST_DIR}]",
    )


def resolve_inputs(args: argparse.Namespace, text: bool = True) -> Inputs:
    """The data: ``--smoke`` sample, else flags, else ``$TAGIFAI_BENCH_*``, else shared.

    Image folders (``--fashion-mnist``, ``--mnist``) are resolved but not checked here:
    only :mod:`benchmarks.bench_images` reads them, and checks them when it does.

    Args:
        args: Parsed flags (:func:`add_common_args`, maybe :func:`add_image_args`).
        text: Whether the text data is needed (``False``: images only, ``data`` empty).

    Raises:
        SystemExit: If the projects or tags file does not exist.
    """
    if args.smoke:
        projects, tags_file = TEXT.default_data() if text else ("", None)
        return Inputs(projects or "", tags_file, smoke=True)
    fashion = getattr(args, "fashion_mnist", None) or os.environ.get(FASHION_MNIST_ENV)
    mnist = getattr(args, "mnist", None) or os.environ.get(MNIST_ENV)
    images = {
        "fashion_mnist": str(Path(fashion or DEFAULT_FASHION_MNIST_DIR).resolve()),
        "mnist": str(Path(mnist or DEFAULT_MNIST_DIR).resolve()),
    }
    if not text:
        return Inputs("", None, **images)
    folder = Path(os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)
    data = Path(args.data) if args.data else folder / "projects.json"
    tags = Path(args.tags) if args.tags else data.parent / "tags.json"
    if not data.is_file():
        raise SystemExit(f"error: {data}: projects file not found (use --data or ${DATA_ENV})")
    if args.tags and not tags.is_file():
        raise SystemExit(f"error: {tags}: tags file not found")
    return Inputs(str(data.resolve()), str(tags.resolve()) if tags.is_file() else None, **images)


def train_params(inputs: Inputs) -> RunParams:
    """``config/params.json``, shrunk by :data:`SMOKE_PARAMS` in a smoke run."""
    params = load_params_file(TEXT, PARAMS_FILE)
    return _shrink(params) if inputs.smoke else params


def _shrink(params: RunParams) -> RunParams:
    model = {**params.model.model_dump(), **SMOKE_PARAMS}
    return type(params).model_validate({**params.model_dump(exclude={"model"}), "model": model})


def smoke_space(search_space: dict[str, Any]) -> dict[str, Any]:
    """A study config's raw ``search_space`` with every architecture's epochs pinned.

    A trial of an architecture other than the base params' starts from that
    architecture's defaults (up to 60 epochs), so shrinking the base is not enough.
    """
    pinned = {
        name: {"type": "int", "low": value, "high": value} for name, value in SMOKE_PARAMS.items()
    }
    architectures = search_space.get("architecture") or {}
    return {"architecture": {name: {**knobs, **pinned} for name, knobs in architectures.items()}}


def study_config(
    inputs: Inputs,
    study_name: str,
    storage: str,
    n_trials: int | None = None,
    config_file: Path = OPTIMIZE_CONFIG,
    params_file: Path = PARAMS_FILE,
    **overrides: Any,
) -> tuple[OptimizeConfig, RunParams]:
    """A study config (default ``config/optimize.yaml``) with a fresh name and storage.

    Args:
        inputs: Data and smoke flag (smoke shrinks the epochs of every architecture).
        study_name: A name no earlier study used.
        storage: The Optuna storage URL of this study.
        n_trials: Override the config's ``n_trials`` (``None``: keep it).
        config_file: The study config.
        params_file: Its base params, by absolute path (benchmarks run in a temp dir).
        **overrides: Other config values to override (e.g. ``timeout``).

    Returns:
        The study config and the base params of its trials.
    """
    if inputs.smoke:
        raw = read_mapping(config_file)
        overrides["search_space"] = smoke_space(raw.get("search_space", {}))
        # Queued trials are pinned too: they give every searched knob.
        overrides["initial_trials"] = [
            {**trial, **SMOKE_PARAMS} for trial in raw.get("initial_trials") or []
        ]
    config, base, _ = load_optimize_config(
        config_file,
        params=str(params_file),
        study_name=study_name,
        storage=storage,
        n_trials=n_trials,
        **overrides,
    )
    return config, _shrink(base) if inputs.smoke else base


def load_inputs_data(params: RunParams, inputs: Inputs) -> tuple[DataSet, Splits]:
    """Read, prepare and split the text data exactly as ``tagifai`` does."""
    return jobs.load_data(params, inputs.data, inputs.tags)


# --- temporary stores ----------------------------------------------------------------

_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")


@contextlib.contextmanager
def workspace(key: str) -> Iterator[Path]:
    """A temporary working directory, deleted on exit, with MLflow state restored.

    tagifai writes relative to the working directory (``experiments/artifacts``,
    ``config/best_params.json``), so running here keeps the project tree clean.
    """
    saved_env = {name: os.environ.get(name) for name in _MLFLOW_ENV}
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"):
        os.environ.pop(name, None)
    cwd = Path.cwd()
    folder = Path(tempfile.mkdtemp(prefix=f"tagifai-bench-{key}-"))
    os.chdir(folder)
    try:
        yield folder
    finally:
        reset_mlflow_state()
        os.chdir(cwd)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def mlflow_store(folder: Path) -> str:
    """Point MLflow (this process and its children) at a new sqlite store in ``folder``.

    The store's schema is created here, so that one-off cost stays out of any timing.
    ``MLFLOW_TRACKING_URI`` is set too: ``jobs.train_best`` re-reads it.

    Returns:
        The tracking URI.
    """
    folder.mkdir(parents=True, exist_ok=True)
    reset_mlflow_state()
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    tracking.configure(uri)
    tracking.check_reachable()
    return uri


def optuna_url(folder: Path) -> str:
    """A new sqlite Optuna storage URL in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'optuna.db'}"


def reset_mlflow_state() -> None:
    """End runs left active and forget the active experiment (between stores)."""
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run()
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    # mlflow.set_experiment keeps the id in module state as well as in the environment.
    with contextlib.suppress(AttributeError):
        mlflow.tracking.fluent._active_experiment_id = None


def child_env(**extra: str) -> dict[str, str]:
    """Environment of a child process: this one's, minus MLflow run state, venv first on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the process group a child leads (``start_new_session=True``), SIGKILL it later.

    Only the group of a process this benchmark started is signalled.
    """
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def quiet() -> None:
    """Keep the console for the tables: Optuna's per-trial lines and library chatter off."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*git.*")  # MLflow without a git repo in cwd


def progress(key: str, message: str) -> None:
    """One progress line on stderr, with the time since the process started."""
    elapsed = int(time.monotonic() - _STARTED)
    print(f"[{elapsed // 60:3d}:{elapsed % 60:02d} {key}] {message}", file=sys.stderr, flush=True)


# --- studies ---------------------------------------------------------------------------


def trial_states(study: optuna.Study) -> dict[str, int]:
    """Number of COMPLETE, PRUNED and FAIL trials."""
    states = [trial.state.name for trial in study.trials]
    return {name: states.count(name) for name in ("COMPLETE", "PRUNED", "FAIL")}


def epochs_trained(study: optuna.Study) -> int:
    """Epochs trained over the study: the ``epochs`` user attribute of done trials."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(int(t.user_attrs.get("epochs", 0)) for t in study.trials if t.state in done)


def warm_up(config: OptimizeConfig, base: RunParams, dataset: DataSet, splits: Splits) -> None:
    """Pay first-use costs (lazy imports, torch kernels) before any arm is timed.

    One one-epoch training per architecture the study may try, and the imports the
    tracked summary needs; otherwise whichever arm runs first would pay them.
    """
    import optuna.visualization  # noqa: F401
    import optuna_integration  # noqa: F401

    workload = get_workload(config.task)
    for architecture in list(config.architectures) or [base.model.architecture]:
        params = params_for(base, {"architecture": architecture, "num_epochs": 1})
        workload.train(params, dataset, splits, NullReporter())


def median(values: Sequence[float]) -> float:
    """The median (of a few repeats)."""
    return float(statistics.median(values))


# --- rows, tables, RESULTS.md ------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A fixed target: ``value <op> bound``, shown as ``text``."""

    op: Literal[">=", "<="]
    bound: float
    text: str

    def holds(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value >= self.bound if self.op == ">=" else value <= self.bound


@dataclass(frozen=True)
class Row:
    """One measurement.

    Attributes:
        name: What was measured.
        shown: The value as printed.
        value: The value as a number (``None``: not measured).
        target: The target as printed (empty: context only).
        met: Whether the target was met (``None``: no target).
        note: How it was measured, counts, caveats.
    """

    name: str
    shown: str
    value: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


def measured(
    name: str,
    value: float | None,
    fmt: str = "{:.4f}",
    target: Target | None = None,
    note: str = "",
) -> Row:
    """A row for a number; with a target, a missing value counts as missed."""
    shown = "n/a" if value is None else fmt.format(value)
    met = None if target is None else (value is not None and target.holds(value))
    return Row(name, shown, value, target.text if target else "", met, note)


def note(name: str, shown: str, text: str = "") -> Row:
    """A context row: no target."""
    return Row(name, shown, note=text)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _met(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(str(cell)) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Report:
    """What one benchmark script measured.

    Attributes:
        key: Short name (``quality``).
        title: Heading.
        about: One paragraph: what is measured and how.
        rows: The measurements.
        sections: Extra (title, markdown) blocks, e.g. a per-class table.
        seconds: Wall time of the script.
        smoke: Whether this was a smoke run (numbers are not measurements).
    """

    key: str
    title: str
    about: str
    rows: list[Row]
    sections: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    smoke: bool = False

    def table(self) -> str:
        """The rows as a markdown table."""
        return table(
            ("measurement", "value", "target", "met", "notes"),
            [(r.name, r.shown, r.target or "—", _met(r.met), r.note) for r in self.rows],
        )

    def markdown(self, level: int = 2) -> str:
        """Heading, description, table and extra sections."""
        smoke = " — SMOKE RUN (sample data, tiny settings: not a measurement)" if self.smoke else ""
        parts = [
            f"{'#' * level} {self.title}{smoke}",
            self.about,
            self.table(),
            f"_{self.key}: {self.seconds / 60:.1f} min wall time._",
        ]
        for title, body in self.sections:
            parts.append(f"<details><summary>{title}</summary>\n\n{body}\n\n</details>")
        return "\n\n".join(parts) + "\n"


def failed_report(key: str, title: str, exc: BaseException, seconds: float, smoke: bool) -> Report:
    """The report of a benchmark that raised: one missed row naming the error."""
    message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    row = Row("benchmark finished", "no", target="yes", met=False, note=message[:300])
    return Report(key, title, "The benchmark raised an error.", [row], seconds=seconds, smoke=smoke)


def machine_info() -> dict[str, str]:
    """CPU model, core count, RAM and library versions."""
    import mlflow
    import sklearn
    import torch

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "machine": (
            f"{cpu}, {os.cpu_count()} cores ({usable} usable), {ram} RAM, "
            f"torch threads {torch.get_num_threads()}"
        ),
        "versions": (
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"mlflow {mlflow.__version__}, optuna {optuna.__version__}, "
            f"scikit-learn {sklearn.__version__}"
        ),
    }


def write_results(
    reports: Sequence[Report], path: Path, command: str, inputs: Inputs, seconds: float
) -> None:
    """Write the reports as one markdown file (temp file + rename: never half a file).

    Args:
        reports: The benchmarks run, in order.
        path: Target file (``benchmarks/RESULTS.md``).
        command: The command that produced them.
        inputs: The data they ran on.
        seconds: Wall time of the whole command so far.
    """
    info = machine_info()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        "# Benchmark results",
        "",
        "Written by `benchmarks/run_all.py`; do not edit by hand. Targets are fixed; "
        "a missed target stays in the table.",
        "",
    ]
    if inputs.smoke:
        header += ["**SMOKE RUN: shipped sample, tiny settings. These are not measurements.**", ""]
    header += [
        f"- Date: {when}",
        f"- Machine: {info['machine']}",
        f"- Versions: {info['versions']}",
        f"- Git commit: `{tracking.git_commit()}`",
        f"- Command: `{command}`",
        *inputs.describe([report.key for report in reports]),
        f"- Total wall time: {seconds / 60:.1f} min",
        "",
        "## Summary",
        "",
        table(
            ("benchmark", "measurement", "value", "target", "met"),
            [
                (report.key, row.name, row.shown, row.target, _met(row.met))
                for report in reports
                for row in report.rows
                if row.target
            ],
        ),
        "",
    ]
    body = "\n".join(header) + "\n" + "\n".join(report.markdown(level=2) for report in reports)
    write_bytes_atomic(path, body.encode("utf-8"))


def run_script(
    module: str,
    parser: argparse.ArgumentParser,
    run: Any,
    argv: Sequence[str] | None = None,
    text: bool = True,
) -> list[Row]:
    """``main`` of a benchmark script: parse, run, print the table, maybe write ``--out``.

    Args:
        module: ``benchmarks.bench_x`` (for the command line shown in the results).
        parser: The script's parser (with :func:`add_common_args`).
        run: ``run(inputs, args) -> Report``.
        argv: Arguments (default ``sys.argv[1:]``).
        text: Whether the script reads the text data (see :func:`resolve_inputs`).

    Returns:
        The report's rows.
    """
    args = parser.parse_args(argv)
    inputs = resolve_inputs(args, text=text)
    quiet()
    report: Report = run(inputs, args)
    print(report.markdown())
    if args.out is not None:
        command = " ".join(["python -m", module, *(argv if argv is not None else sys.argv[1:])])
        write_results([report], args.out, command, inputs, report.seconds)
        progress(report.key, f"wrote {args.out}")
    return report.rows
