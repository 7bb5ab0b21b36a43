"""A study's plots, readable with no network.

Each plot is written twice:

- ``<name>.png`` with Optuna's matplotlib plots: the MLflow artifact viewer shows it
  inline, and ``tagifai report`` embeds it;
- one interactive page, ``plots.html``, with every plotly plot and plotly.js inside it
  (no CDN), for zooming and hovering.

Param importances are computed once (fANOVA fits a forest: the slowest step) and
reused for the importance plots and to pick the contour's two params.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna

__all__ = ["PLOTS", "write_plots"]

logger = logging.getLogger(__name__)

# In the order a reader wants them.
PLOTS = (
    "optimization_history",
    "intermediate_values",
    "param_importances",
    "parallel_coordinate",
    "slice",
    "contour",
)
CONTOUR_PARAMS = 2  # the contour of the two most important params
PNG_DPI = 100


class _Known(optuna.importance.BaseImportanceEvaluator):
    """An importance evaluator that returns importances computed before."""

    def __init__(self, importances: dict[str, float]) -> None:
        self.importances = importances

    def evaluate(
        self,
        study: optuna.Study,
        params: list[str] | None = None,
        *,
        target: Callable[[optuna.trial.FrozenTrial], float] | None = None,
    ) -> dict[str, float]:
        """The importances given at construction (of ``params`` when named)."""
        return {k: v for k, v in self.importances.items() if params is None or k in params}


def write_plots(study: optuna.Study, folder: Path) -> list[str]:
    """Write every plot the study has data for into ``folder``.

    Args:
        study: A study with at least one completed trial.
        folder: Receives ``<name>.png`` per plot and ``plots.html`` with all of them.

    Returns:
        The names of the plots written (a plot that needs more trials is skipped).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the environment says
    import matplotlib.pyplot as plt
    import optuna.visualization as interactive
    import optuna.visualization.matplotlib as static

    folder.mkdir(parents=True, exist_ok=True)
    with _quiet():
        importances = _importances(study)
        figures: dict[str, Any] = {}
        for name in PLOTS:
            kwargs = _kwargs(name, importances)
            if kwargs is None:
                continue
            try:
                figures[name] = getattr(interactive, f"plot_{name}")(study, **kwargs)
                axes = getattr(static, f"plot_{name}")(study, **kwargs)
            except (ValueError, RuntimeError, IndexError, KeyError) as exc:
                logger.info("skipped plot %s: %s", name, exc)
                figures.pop(name, None)
                continue
            figure = _figure_of(axes)
            figure.savefig(folder / f"{name}.png", dpi=PNG_DPI, bbox_inches="tight")
            plt.close(figure)
    if figures:
        pages = [
            f"<h2>{name.replace('_', ' ')}</h2>"
            + figure.to_html(full_html=False, include_plotlyjs=i == 0)
            for i, (name, figure) in enumerate(figures.items())
        ]
        (folder / "plots.html").write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{study.study_name}: plots</title></head><body>{''.join(pages)}</body></html>",
            encoding="utf-8",
        )
    return list(figures)


def _importances(study: optuna.Study) -> dict[str, float] | None:
    """Normalised param importances, or ``None`` when they cannot be ranked."""
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 2 or len(study.best_trial.params) < 2:
        return None
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError) as exc:
        logger.info("no param importances: %s", exc)
        return None


def _kwargs(name: str, importances: dict[str, float] | None) -> dict[str, Any] | None:
    """The plot's keyword arguments; ``None`` skips it."""
    if name == "param_importances":
        return None if importances is None else {"evaluator": _Known(importances)}
    if name == "contour":
        if importances is None or len(importances) < CONTOUR_PARAMS:
            return None
        return {"params": list(importances)[:CONTOUR_PARAMS]}
    return {}


def _figure_of(axes: Any) -> Any:
    """The matplotlib figure of what an Optuna plot returned (one Axes or an array)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.get_figure()


@contextmanager
def _quiet() -> Iterator[None]:
    """Few trials make Optuna warn about each param it cannot plot well; the plots are
    still right for what there is, so the console stays quiet."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
