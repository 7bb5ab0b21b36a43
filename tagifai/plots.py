"""A study's plots, drawn for a conditional search space and readable with no network.

A trial samples the architecture first, then only that architecture's knobs
(:func:`tagifai.search.suggest_params`), so one plot over all trials would mix knobs a
trial never used ("None" ticks) and treat the architecture as a number. Here:

- ``slice``, ``parallel_coordinate`` and ``contour`` have one panel (row) per
  architecture with two completed trials or more, best architecture first, each drawn
  by Optuna on a view of the study that holds only that architecture's trials (so no
  "None" for a knob a trial did not use); ``slice`` opens with the objective per
  architecture (a strip plot: the architecture is categorical), and each ``contour``
  panel crosses that architecture's two most important knobs, never the architecture;
- ``param_importances`` splits the variance of the objective by the law of total
  variance: the architecture's share is the spread between the architectures' means,
  and each architecture's share of the rest is split among its knobs by fANOVA on
  that architecture's trials; a panel per architecture then shows its knobs' shares.
  (fANOVA over all trials sees only the params every trial has, and there gave an
  architecture that split the scores 0.70 / 0.58 an importance under 0.01);
- every axis that shows the objective is named after the study's metric.

Each plot is written twice: ``<name>.png`` with Optuna's matplotlib plots, panels
stacked top to bottom (the MLflow artifact viewer shows it inline, and ``tagifai
report`` embeds it), and one plotly figure per plot in ``plots.html``, with plotly.js
inside it (no CDN), for zooming and hovering.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tagifai.search import ARCHITECTURE

__all__ = ["PLOTS", "Plot", "build_plots", "param_importances", "write_plots"]

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
PNG_DPI = 100
SLICE_COLUMNS = 4  # knobs per slice row: wider rows shrink each panel past reading
MIN_TRIALS = 2  # an architecture's knob panels need this many of its trials (one dot says nothing)
ROW_HEIGHT = 380  # pixels per row of an interactive figure
NO_ARCHITECTURE = ""  # the group of a study whose trials sample no architecture


@dataclass
class Plot:
    """One plot of a study, drawn twice.

    Attributes:
        panels: ``(title, matplotlib figure)`` per panel, top to bottom in the PNG; a
            per-architecture plot has one titled with each architecture's name.
        figure: The plotly figure of the same plot, one row per panel.
    """

    panels: list[tuple[str, Any]]
    figure: Any

    def close(self) -> None:
        """Free the matplotlib figures."""
        import matplotlib.pyplot as plt

        for _, panel in self.panels:
            plt.close(panel)


@dataclass
class _Group:
    """The completed trials of one architecture and the knobs they searched."""

    architecture: str
    trials: list[FrozenTrial]
    knobs: list[str]
    view: optuna.Study  # a study holding only these trials

    @property
    def title(self) -> str:
        name = self.architecture or "all trials"
        return f"{name} ({len(self.trials)} trial{'s' if len(self.trials) != 1 else ''})"


def write_plots(study: optuna.Study, folder: Path) -> list[str]:
    """Write every plot the study has data for into ``folder``.

    Args:
        study: A study with at least one completed trial.
        folder: Receives ``<name>.png`` per plot and ``plots.html`` with all of them.

    Returns:
        The names of the plots written (a plot that needs more trials is skipped).
    """
    folder.mkdir(parents=True, exist_ok=True)
    plots = build_plots(study)
    try:
        for name, plot in plots.items():
            _save_stacked([panel for _, panel in plot.panels], folder / f"{name}.png")
    finally:
        for plot in plots.values():
            plot.close()
    if plots:
        pages = [
            f"<h2>{name.replace('_', ' ')}</h2>"
            + plot.figure.to_html(full_html=False, include_plotlyjs=i == 0)
            for i, (name, plot) in enumerate(plots.items())
        ]
        (folder / "plots.html").write_text(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{study.study_name}: plots</title></head><body>{''.join(pages)}</body></html>",
            encoding="utf-8",
        )
    return list(plots)


def build_plots(study: optuna.Study) -> dict[str, Plot]:
    """Every plot the study has data for, by name (in :data:`PLOTS` order).

    The caller closes each :class:`Plot` (``write_plots`` does).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the environment says

    target = str(study.user_attrs.get("metric") or "objective")
    plots: dict[str, Plot] = {}
    # Optuna's matplotlib plots switch the process to the ggplot style: keep it to these.
    with _quiet(), matplotlib.rc_context():
        groups = _groups(study)
        ranked = _rank(groups)
        for name in PLOTS:
            try:
                plot = _DRAW[name](study, groups, ranked, target)
            except (ValueError, RuntimeError, IndexError, KeyError) as exc:
                logger.info("skipped plot %s: %s", name, exc)
                continue
            if plot is not None:
                plots[name] = plot
    return plots


def param_importances(study: optuna.Study) -> dict[str, float] | None:
    """Each param's share of the variance of the objective, largest first (sum 1).

    ``architecture`` is the share of the spread between the architectures' mean
    values; ``KNOB (ARCHITECTURE)`` is that architecture's within-variance share times
    the knob's fANOVA importance on that architecture's trials; ``other (ARCHITECTURE)``
    is a within-variance share no knob could be ranked for.

    Returns:
        The importances, or ``None`` when the completed trials' values do not vary.
    """
    with _quiet():
        return _rank(_groups(study)).total


# --- groups and importances -------------------------------------------------------------


def _groups(study: optuna.Study) -> list[_Group]:
    """The completed trials by architecture, best architecture first."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    by_architecture: dict[str, list[FrozenTrial]] = {}
    for trial in complete:
        key = str(trial.params.get(ARCHITECTURE, NO_ARCHITECTURE))
        by_architecture.setdefault(key, []).append(trial)
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
    groups = []
    for architecture, trials in by_architecture.items():
        knobs: list[str] = []
        for trial in trials:
            for knob, distribution in trial.distributions.items():
                if knob != ARCHITECTURE and knob not in knobs and not distribution.single():
                    knobs.append(knob)
        groups.append(_Group(architecture, trials, knobs, _view(study, trials)))
    return sorted(groups, key=lambda g: -max(sign * float(t.value or 0) for t in g.trials))


def _view(study: optuna.Study, trials: list[FrozenTrial]) -> optuna.Study:
    """An in-memory study of ``trials`` under their own numbers: every other number
    holds a failed, empty trial, which no plot or importance reads."""
    kept = {t.number: t for t in trials}
    view = optuna.create_study(direction=study.direction)
    view.add_trials(
        [
            kept.get(number) or optuna.trial.create_trial(state=TrialState.FAIL)
            for number in range(max(kept) + 1)
        ]
    )
    return view


@dataclass
class _Ranking:
    total: dict[str, float] | None  # every param's share, as param_importances returns it
    within: dict[str, list[str]]  # each architecture's knobs, most important first


def _rank(groups: list[_Group]) -> _Ranking:
    """Importances by the law of total variance (see :func:`param_importances`)."""
    values = [float(t.value or 0) for g in groups for t in g.trials]
    within: dict[str, list[str]] = {}
    if len(values) < 2:
        return _Ranking(None, within)
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    shares: dict[str, float] = {}
    if len(groups) > 1 or groups[0].architecture != NO_ARCHITECTURE:
        between = sum(len(g.trials) * (_mean(g) - mean) ** 2 for g in groups) / len(values)
        shares[ARCHITECTURE] = between / variance if variance > 0 else 0.0
    for group in groups:
        knob_weights = _fanova(group)
        within[group.architecture] = list(knob_weights)
        group_values = [float(t.value or 0) for t in group.trials]
        spread = sum((v - _mean(group)) ** 2 for v in group_values) / len(values)
        share = spread / variance if variance > 0 else 0.0
        if share <= 0:
            continue
        weight_sum = sum(knob_weights.values())
        if weight_sum <= 0:
            shares[_label("other", group.architecture)] = share
            continue
        for knob, weight in knob_weights.items():
            shares[_label(knob, group.architecture)] = share * weight / weight_sum
    if variance <= 0 or not (ARCHITECTURE in shares or any(within.values())):
        return _Ranking(None, within)  # no param to rank
    return _Ranking(dict(sorted(shares.items(), key=lambda kv: -kv[1])), within)


def _fanova(group: _Group) -> dict[str, float]:
    """fANOVA importances of the group's knobs on its own trials ({} if not ranked)."""
    if len(group.trials) < 2 or not group.knobs:
        return {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # same plots each run
    try:
        return dict(
            optuna.importance.get_param_importances(
                group.view, evaluator=evaluator, params=group.knobs
            )
        )
    except (RuntimeError, ValueError) as exc:
        logger.info("no importances for %s: %s", group.architecture, exc)
        return {}


def _mean(group: _Group) -> float:
    return sum(float(t.value or 0) for t in group.trials) / len(group.trials)


def _label(knob: str, architecture: str) -> str:
    return f"{knob} ({architecture})" if architecture else knob


# --- the plots --------------------------------------------------------------------------


def _history(
    study: optuna.Study, groups: list[_Group], ranked: _Ranking, target: str
) -> Plot | None:
    import optuna.visualization as interactive
    import optuna.visualization.matplotlib as static

    figure = interactive.plot_optimization_history(study, target_name=target)
    panel = _figure_of(static.plot_optimization_history(study, target_name=target))
    return Plot([("optimization history", panel)], figure)


def _intermediate(
    study: optuna.Study, groups: list[_Group], ranked: _Ranking, target: str
) -> Plot | None:
    """Each trial's value after each epoch (what the pruner compared)."""
    import optuna.visualization as interactive
    import optuna.visualization.matplotlib as static

    if not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        return None
    figure = interactive.plot_intermediate_values(study)
    figure.update_layout(title=f"{target} after each epoch")
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text=target)
    axes = static.plot_intermediate_values(study)
    axes.set(title=f"{target} after each epoch", xlabel="epoch", ylabel=target)
    return Plot([("intermediate values", _figure_of(axes))], figure)


def _importances(
    study: optuna.Study, groups: list[_Group], ranked: _Ranking, target: str
) -> Plot | None:
    """The architecture's share and each architecture's knobs' share of the variance,
    then per architecture its knobs' shares of its own variance."""
    if not ranked.total:
        return None
    total = ranked.total
    if all(g.architecture == NO_ARCHITECTURE for g in groups):
        axis = f"share of the variance of {target}"
        rows = [_bars(f"Importance: {axis}", total, axis)]
        return _stacked(rows, rows[0][0])
    within = {
        g.architecture: {
            k.removesuffix(f" ({g.architecture})"): v
            for k, v in total.items()
            if k.endswith(f" ({g.architecture})")
        }
        for g in groups
    }
    overall = {ARCHITECTURE: total.get(ARCHITECTURE, 0.0)}
    overall.update({f"{a}: its knobs": sum(shares.values()) for a, shares in within.items()})
    rows = [_bars(f"Share of the variance of {target}", overall, f"share of {target}'s variance")]
    for group in groups:
        shares = within[group.architecture]
        spread = sum(shares.values())
        if spread > 0:
            rows.append(
                _bars(
                    f"{group.title}: its knobs",
                    {k: v / spread for k, v in shares.items()},
                    f"share of {group.architecture}'s variance of {target}",
                )
            )
    return _stacked(rows, f"Importances: architecture, then knobs per architecture ({target})")


def _bars(title: str, shares: dict[str, float], axis: str) -> tuple[str, Any, Any]:
    """A bar chart of shares, largest on top: (title, matplotlib figure, plotly figure).
    Optuna's own importance plot needs every bar to be one param of the study."""
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    ordered = sorted(shares.items(), key=lambda kv: -kv[1])
    names, values = [k for k, _ in ordered], [v for _, v in ordered]
    labels = [f"{v:.2f}" if v >= 0.01 else "<0.01" if v > 0 else "0" for v in values]
    figure = go.Figure(
        go.Bar(x=values, y=names, orientation="h", text=labels, textposition="outside"),
        layout={
            "xaxis": {"title": axis, "range": [0, 1.15]},
            "yaxis": {"autorange": "reversed"},
        },
    )
    panel, ax = plt.subplots(figsize=(7.5, 1.4 + 0.3 * len(names)))
    ax.barh(names[::-1], values[::-1], color="#4c72b0")
    for y, (value, label) in enumerate(zip(values[::-1], labels[::-1], strict=True)):
        ax.text(value + 0.01, y, label, va="center")
    ax.set(xlabel=axis, xlim=(0, 1.15))
    return title, panel, figure


def _parallel(
    study: optuna.Study, groups: list[_Group], ranked: _Ranking, target: str
) -> Plot | None:
    import optuna.visualization as interactive
    import optuna.visualization.matplotlib as static

    rows = []
    for group in groups:
        if not group.knobs or len(group.trials) < MIN_TRIALS:
            continue
        knobs = _ordered(group, ranked)
        figure = interactive.plot_parallel_coordinate(group.view, params=knobs, target_name=target)
        panel = _figure_of(
            static.plot_parallel_coordinate(group.view, params=knobs, target_name=target)
        )
        # One axis per knob plus the objective's: room for each one's tick labels.
        panel.set_size_inches(max(6.4, 1.6 * (len(knobs) + 1)), 4.8)
        rows.append((group.title, panel, figure))
    return _stacked(rows, f"Parallel coordinates per architecture: {target}")


def _slice(study: optuna.Study, groups: list[_Group], ranked: _Ranking, target: str) -> Plot | None:
    import optuna.visualization as interactive
    import optuna.visualization.matplotlib as static

    rows = []
    if any(g.architecture != NO_ARCHITECTURE for g in groups):
        # The architecture is categorical: its slice is a strip plot of the objective.
        view = _view(study, [t for g in groups for t in g.trials])
        rows.append(
            (
                f"{target} per architecture",
                _figure_of(static.plot_slice(view, params=[ARCHITECTURE], target_name=target)),
                interactive.plot_slice(view, params=[ARCHITECTURE], target_name=target),
            )
        )
    for group in groups:
        knobs = _ordered(group, ranked) if len(group.trials) >= MIN_TRIALS else []
        for start in range(0, len(knobs), SLICE_COLUMNS):
            chunk = knobs[start : start + SLICE_COLUMNS]
            title = group.title if start == 0 else f"{group.title}, continued"
            rows.append(
                (
                    title,
                    _figure_of(static.plot_slice(group.view, params=chunk, target_name=target)),
                    interactive.plot_slice(group.view, params=chunk, target_name=target),
                )
            )
    return _stacked(rows, f"Slices per architecture: {target}")


def _contour(
    study: optuna.Study, groups: list[_Group], ranked: _Ranking, target: str
) -> Plot | None:
    """Per architecture, its two most important knobs (the architecture is no axis)."""
    import optuna.visualization as interactive
    import optuna.visualization.matplotlib as static

    rows = []
    for group in groups:
        knobs = _ordered(group, ranked)[:2]
        if len(knobs) < 2 or len(group.trials) < MIN_TRIALS:
            continue
        rows.append(
            (
                f"{group.title}: {knobs[0]} x {knobs[1]}",
                _figure_of(static.plot_contour(group.view, params=knobs, target_name=target)),
                interactive.plot_contour(group.view, params=knobs, target_name=target),
            )
        )
    return _stacked(rows, f"Contours per architecture: {target}")


_DRAW = {
    "optimization_history": _history,
    "intermediate_values": _intermediate,
    "param_importances": _importances,
    "parallel_coordinate": _parallel,
    "slice": _slice,
    "contour": _contour,
}


def _ordered(group: _Group, ranked: _Ranking) -> list[str]:
    """The group's knobs, most important first (search order when not ranked)."""
    first = [k for k in ranked.within.get(group.architecture, []) if k in group.knobs]
    return first + [k for k in group.knobs if k not in first]


# --- putting panels together ------------------------------------------------------------


def _stacked(rows: list[tuple[str, Any, Any]], title: str) -> Plot | None:
    """One plot of ``rows`` (title, matplotlib figure, plotly figure), top to bottom."""
    if not rows:
        return None
    for row_title, panel, _ in rows:
        for ax in panel.axes:
            if ax.get_title() in ("Slice Plot", "Contour Plot", "Parallel Coordinate Plot"):
                ax.set_title("")
        panel.suptitle(row_title)
        _deepen(panel)
    return Plot([(t, p) for t, p, _ in rows], _grid([(t, f) for t, _, f in rows], title))


def _grid(rows: list[tuple[str, Any]], title: str) -> Any:
    """One plotly figure with each of Optuna's figures in ``rows`` as one row of subplots.

    A figure's subplots become the row's columns; its traces, axes, and the shapes and
    annotations drawn on its axes (parallel coordinates' ticks) move with them.

    Args:
        rows: ``(title, figure)`` per row.
        title: The figure's title.
    """
    from plotly.subplots import make_subplots

    columns = max(_columns(figure) for _, figure in rows)
    grid = make_subplots(
        rows=len(rows),
        cols=columns,
        subplot_titles=[t for row_title, _ in rows for t in [row_title] + [""] * (columns - 1)],
        vertical_spacing=min(0.3 / len(rows), 0.12),
        horizontal_spacing=0.06,
    )
    for r, (_, figure) in enumerate(rows, start=1):
        refs: dict[str, str] = {}  # the figure's axis ("x2") -> the grid's ("x7")
        for column in range(1, _columns(figure) + 1):
            subplot = grid.get_subplot(r, column)
            suffix = "" if column == 1 else str(column)
            for axis, target in (("x", subplot.xaxis), ("y", subplot.yaxis)):
                refs[axis + suffix] = target.plotly_name.replace("axis", "")
                source = figure.layout[f"{axis}axis{suffix}"].to_plotly_json()
                target.update({k: v for k, v in source.items() if k not in _GRID_OWNED})
        for column in range(_columns(figure) + 1, columns + 1):  # a shorter row: no empty frames
            subplot = grid.get_subplot(r, column)
            subplot.xaxis.update(visible=False)
            subplot.yaxis.update(visible=False)
        for trace in figure.data:
            grid.add_trace(trace, row=r, col=_column(trace))
        for kind in ("shapes", "annotations"):
            for item in figure.layout[kind]:
                moved = _moved(item.to_plotly_json(), refs)
                if moved is not None:
                    getattr(grid, f"add_{kind[:-1]}")(moved)
        low, high = _row_span(grid, r)
        for trace in grid.data[len(grid.data) - len(figure.data) :]:
            for holder in (trace, getattr(trace, "marker", None), getattr(trace, "line", None)):
                if holder is not None and hasattr(holder, "colorbar"):
                    holder.colorbar.update(y=(low + high) / 2, len=high - low, yanchor="middle")
    grid.update_layout(title=title, height=ROW_HEIGHT * len(rows), showlegend=False)
    return grid


def _deepen(panel: Any) -> None:
    """Drop the lightest quarter of Optuna's Blues: its near-white lines and dots vanish
    on the grey ggplot background (the colour bars follow their plots)."""
    import numpy as np
    from matplotlib.colors import LinearSegmentedColormap

    for ax in panel.axes:
        for artist in ax.collections:
            cmap = artist.get_cmap()
            if cmap.name in ("Blues", "Blues_r"):
                span = (0.0, 0.75) if cmap.name.endswith("_r") else (0.25, 1.0)
                colors = cmap(np.linspace(*span, 256))
                artist.set_cmap(LinearSegmentedColormap.from_list(f"{cmap.name}_deep", colors))


_GRID_OWNED = ("anchor", "domain", "matches")  # axis keys the grid sets for its own layout


def _moved(item: dict[str, Any], refs: dict[str, str]) -> dict[str, Any] | None:
    """A shape or annotation of a row's figure, on the grid's axes (``None``: on paper)."""
    moved = dict(item)
    for key, default in (("xref", "x"), ("yref", "y")):
        axis, _, domain = str(item.get(key, default)).partition(" ")
        if axis not in refs:
            return None
        moved[key] = f"{refs[axis]} {domain}".strip()
    return moved


def _columns(figure: Any) -> int:
    """How many x axes (subplots side by side) one of Optuna's figures has."""
    return max((_column(trace) for trace in figure.data), default=1)


def _column(trace: Any) -> int:
    """The subplot (x axis ``x``, ``x2``, ...) a trace of Optuna's figure is drawn in."""
    return int((trace.xaxis or "x")[1:] or 1)


def _row_span(grid: Any, row: int) -> tuple[float, float]:
    """The vertical extent (0..1) of a row of ``grid``."""
    subplot = grid.get_subplot(row, 1)
    domain = subplot.yaxis.domain if hasattr(subplot, "yaxis") else subplot.y
    return float(domain[0]), float(domain[1])


def _save_stacked(panels: list[Any], path: Path) -> None:
    """Write ``panels`` (matplotlib figures) as one PNG, top to bottom."""
    from PIL import Image

    images = []
    for panel in panels:
        buffer = io.BytesIO()
        panel.savefig(buffer, format="png", dpi=PNG_DPI, bbox_inches="tight")
        buffer.seek(0)
        with Image.open(buffer) as image:
            images.append(image.convert("RGB"))
    canvas = Image.new(
        "RGB", (max(i.width for i in images), sum(i.height for i in images)), "white"
    )
    top = 0
    for row in images:
        canvas.paste(row, (0, top))
        top += row.height
    canvas.save(path, format="PNG", optimize=True)


def _figure_of(axes: Any) -> Any:
    """The matplotlib figure of what an Optuna plot returned (one Axes or an array)."""
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    return first.get_figure()


@contextmanager
def _quiet() -> Iterator[None]:
    """Few trials make Optuna warn about each param it cannot plot well, and every view
    of the study logs its creation; the plots are still right for what there is."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
