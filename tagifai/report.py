"""``tagifai report``: one self-contained HTML page about a study, to attach to a pull request.

The page holds the data set and its digest, the best trial and its params, the
trials table, the plots (PNG inside the page), the test metrics and per-class
table of the model ``train-best`` trained from the study (when there is one), and
the ids of the MLflow runs (links when the tracking store is a server). It needs
no network and no other file.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from tagifai.errors import TagifaiError
from tagifai.plots import write_plots

__all__ = ["TrainedModel", "find_trained", "parent_run_id", "render_report", "run_links"]

logger = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; } code { background: #f4f4f4; padding: 0 0.2em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.state-PRUNED { color: #a60; } .state-FAIL { color: #b00; }
"""


class TrainedModel:
    """The train-best run of a study, as the report shows it.

    Args:
        run_id: The MLflow run.
        name: Its run name.
        metrics: Its test metrics (``test_*``).
        performance: Its ``performance.json`` (``overall``, ``class``, ...), if read.
    """

    def __init__(
        self, run_id: str, name: str, metrics: dict[str, float], performance: dict[str, Any]
    ) -> None:
        self.run_id = run_id
        self.name = name
        self.metrics = metrics
        self.performance = performance


def render_report(
    study: optuna.Study,
    tracking_uri: str | None,
    run_link: Any = None,
    trained: TrainedModel | None = None,
    train_best: str | None = None,
) -> str:
    """The report page of ``study``.

    Args:
        study: A study made by ``tagifai optimize``.
        tracking_uri: The MLflow store the study's runs are in (``None``: not read).
        run_link: ``run_id -> URL or None``, for links to the MLflow UI.
        trained: The model ``train-best`` trained from the study, if any.
        train_best: The command that trains it, named when there is none (default: the
            ``make`` target for the project's own stores).

    Returns:
        The HTML page.
    """
    attrs = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    link = run_link or (lambda run_id: None)
    parts = [
        f"<h1>Study <code>{_e(study.study_name)}</code></h1>",
        _table(
            [
                ("task", attrs.get("task", "")),
                ("objective", f"{attrs.get('metric', 'value')} ({study.direction.name.lower()})"),
                (
                    "trials",
                    f"{len(trials)}: {states.count('COMPLETE')} complete, "
                    f"{states.count('PRUNED')} pruned, {states.count('FAIL')} failed, "
                    f"{states.count('RUNNING')} running",
                ),
                ("MLflow store", tracking_uri or "not read"),
                ("parent run", _run(attrs.get("mlflow_parent_run_id"), link)),
            ]
        ),
        "<h2>Data</h2>",
        _table(
            [
                ("source", attrs.get("data_source", "")),
                ("second source", attrs.get("extra_source") or "none"),
                ("digest", attrs.get("data_digest", "")),
            ]
        ),
    ]
    parts += _best_section(study, link)
    parts += _trials_section(study, link)
    parts += _plots_section(study)
    task = f" TASK={attrs['task']}" if attrs.get("task") else ""
    train_best = train_best or f"make train-best{task} STUDY={study.study_name}"
    parts += _model_section(trained, link, train_best)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{_e(study.study_name)}: study report</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}</body></html>"
    )


def run_links(tracking_uri: str) -> Any:
    """``run_id -> URL`` in the MLflow UI of a tracking server; ``None`` for a local store."""
    if not tracking_uri.startswith(("http://", "https://")):
        return lambda run_id: None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()

    def link(run_id: str) -> str | None:
        try:
            experiment = client.get_run(run_id).info.experiment_id
        except MlflowException:  # a run the store lost: show its id only
            return None
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"

    return link


# An MLflow run id (uuid hex in every store MLflow ships): anything else, a quote
# included, never reaches a search filter.
RUN_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


def parent_run_id(study: optuna.Study) -> str | None:
    """The study's parent run, as recorded in its storage (``None``: not recorded).

    Raises:
        TagifaiError: If the record is not an MLflow run id.
    """
    parent = study.user_attrs.get("mlflow_parent_run_id")
    if parent is None or parent == "":
        return None
    if not isinstance(parent, str) or not RUN_ID.fullmatch(parent):
        raise TagifaiError(
            f"study {study.study_name!r}: mlflow_parent_run_id {parent!r:.80} in its storage "
            "is not an MLflow run id"
        )
    return parent


def find_trained(study: optuna.Study) -> TrainedModel | None:
    """The latest finished ``train-best`` run of the study, from the tracking store in use."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    parent = parent_run_id(study)
    if parent is None:
        return None
    client = MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=(
            f"tags.`tagifai.parent_run_id` = '{parent}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    performance: dict[str, Any] = {}
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="performance.json"
        )
        performance = json.loads(Path(path).read_text(encoding="utf-8"))
    except (MlflowException, OSError, ValueError) as exc:  # the metrics still show
        logger.info("run %s: no performance.json (%s)", run.info.run_id, exc)
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    return TrainedModel(run.info.run_id, run.info.run_name or "", metrics, performance)


def _best_section(study: optuna.Study, link: Any) -> list[str]:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return ["<h2>Best trial</h2><p>No trial has completed yet.</p>"]
    best = study.best_trial
    decision = best.user_attrs.get("decision", {})
    rows = [
        ("trial", best.number),
        ("value", f"{best.value:.4f}"),
        ("MLflow run", _run(best.system_attrs.get("mlflow_run_id"), link)),
        ("epochs run", best.user_attrs.get("epochs", "")),
        ("best epoch", best.user_attrs.get("best_epoch", "")),
        ("decision rule", json.dumps(decision)),
    ]
    return [
        "<h2>Best trial</h2>",
        _table(rows),
        "<h3>Its params</h3>",
        _table(sorted(best.params.items())),
    ]


def _trials_section(study: optuna.Study, link: Any) -> list[str]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        value = "" if trial.value is None else f"{trial.value:.4f}"
        seconds = trial.duration.total_seconds() if trial.duration is not None else None
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        rows.append(
            f"<tr class='state-{trial.state.name}'><td>{trial.number}</td>"
            f"<td>{trial.state.name}</td><td>{value}</td>"
            f"<td>{'' if seconds is None else f'{seconds:.1f}'}</td>"
            f"<td>{_e(params)}</td>"
            f"<td>{_run(trial.system_attrs.get('mlflow_run_id'), link)}</td></tr>"
        )
    header = "<tr><th>#</th><th>state</th><th>value</th><th>seconds</th><th>params</th>"
    return [
        "<h2>Trials</h2>",
        f"<table>{header}<th>MLflow run</th></tr>{''.join(rows)}</table>",
    ]


def _plots_section(study: optuna.Study) -> list[str]:
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return []
    parts = ["<h2>Plots</h2>"]
    with tempfile.TemporaryDirectory() as tmp:
        names = write_plots(study, Path(tmp))
        for name in names:
            data = base64.b64encode((Path(tmp) / f"{name}.png").read_bytes()).decode("ascii")
            parts.append(
                f"<h3>{_e(name.replace('_', ' '))}</h3>"
                f"<img alt='{_e(name)}' src='data:image/png;base64,{data}'>"
            )
    return parts


def _model_section(trained: TrainedModel | None, link: Any, train_best: str) -> list[str]:
    if trained is None:
        return [
            "<h2>Trained model</h2><p>No <code>train-best</code> run of this study was found "
            f"(run <code>{_e(train_best)}</code>).</p>"
        ]
    parts = [
        "<h2>Trained model</h2>",
        _table(
            [
                ("run", _Markup(f"{_e(trained.name)} {_run(trained.run_id, link)}")),
                *((name, f"{value:.4f}") for name, value in sorted(trained.metrics.items())),
            ]
        ),
    ]
    per_class = trained.performance.get("class")
    if isinstance(per_class, dict) and per_class:
        frame = pd.DataFrame.from_dict(per_class, orient="index")
        parts += [
            "<h3>Per class (test)</h3>",
            frame.to_html(float_format=lambda v: f"{v:.4f}", escape=True, border=0),
        ]
    return parts


def _table(rows: Iterable[tuple[Any, Any]]) -> str:
    body = "".join(
        f"<tr><th>{_e(key)}</th><td>{value if isinstance(value, _Markup) else _e(value)}</td></tr>"
        for key, value in rows
    )
    return f"<table>{body}</table>"


class _Markup(str):
    """Text that is already HTML (escaped where it came from outside)."""


def _run(run_id: Any, link: Any) -> _Markup:
    if not run_id:
        return _Markup("")
    url = link(str(run_id))
    text = f"<code>{_e(run_id)}</code>"
    return _Markup(f"<a href='{_e(url)}'>{text}</a>" if url else text)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
