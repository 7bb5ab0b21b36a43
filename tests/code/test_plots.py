"""Plots of a conditional space: one panel per architecture, the architecture as a category
(strip plot, its own importance, never a contour axis), no "None" for a knob a trial did
not use, and the objective's axes named after the study's metric.

The study is sampled by the real ``suggest_params`` over the shipped text config (the
architecture first, then only its knobs), with made-up values: linear ~0.70, ngram ~0.58,
cnn ~0.62, and within each architecture a value that follows one knob."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import optuna
import pytest
from helpers import REPO
from PIL import Image

from tagifai.plots import PLOTS, build_plots, param_importances, write_plots
from tagifai.search import load_optimize_config, suggest_params

METRIC = "val_f1"
MEANS = {"linear": 0.70, "ngram": 0.58, "cnn": 0.62}


def _study(
    architectures: tuple[str, ...] = ("linear", "ngram", "cnn"), n: int = 24
) -> optuna.Study:
    config, base, _ = load_optimize_config(
        REPO / "config" / "optimize.yaml", params=str(REPO / "config" / "params.json")
    )
    config = config.model_copy(
        update={
            "search_space": {"architecture": {a: config.architectures[a] for a in architectures}}
        }
    )
    noise = random.Random(0)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    study.set_user_attr("metric", METRIC)

    def objective(trial: optuna.Trial) -> float:
        model = suggest_params(trial, config, base).model
        # Within an architecture the value follows its weight decay (log scale).
        value = MEANS[model.architecture] + 0.01 * math.log10(model.weight_decay / 1e-7)
        value += noise.gauss(0, 0.002)
        for epoch in range(1, 4):
            trial.report(value - 0.05 / epoch, step=epoch)
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n)
    return study


@pytest.fixture(scope="module")
def plots():
    study = _study()
    built = build_plots(study)
    yield study, built
    for plot in built.values():
        plot.close()


def _architectures(study: optuna.Study) -> set[str]:
    return {t.params["architecture"] for t in study.trials}


def test_every_plot_is_drawn_with_the_metric_on_its_objective_axes(plots):
    _, built = plots
    assert list(built) == list(PLOTS)
    history = built["optimization_history"]
    assert history.panels[0][1].axes[0].get_ylabel() == METRIC
    assert history.figure.layout.yaxis.title.text == METRIC
    epochs = built["intermediate_values"]
    assert epochs.panels[0][1].axes[0].get_ylabel() == METRIC
    assert epochs.figure.layout.yaxis.title.text == METRIC
    for name in ("slice", "parallel_coordinate", "contour"):
        text = " ".join(
            label
            for _, panel in built[name].panels
            for ax in panel.axes
            for label in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title())
        ) + " ".join(t.get_text() for _, panel in built[name].panels for t in panel.texts)
        assert METRIC in text, name
        assert "Objective" not in text, name
        assert METRIC in built[name].figure.layout.title.text
    layout = built["param_importances"].figure.layout
    assert METRIC in layout.xaxis.title.text
    assert METRIC in built["param_importances"].panels[0][1].axes[0].get_xlabel()


def test_slice_has_an_architecture_strip_and_a_row_per_architecture(plots):
    study, built = plots
    panels = built["slice"].panels
    assert panels[0][0] == f"{METRIC} per architecture"
    strip = panels[0][1].axes[0]
    assert strip.get_xlabel() == "architecture"
    ticks = {t.get_text().strip("'") for t in strip.get_xticklabels()}  # Optuna shows repr
    assert ticks == _architectures(study)
    # Best architecture first: linear scores highest.
    titled = [title.split(" (")[0] for title, _ in panels[1:] if "continued" not in title]
    assert titled == ["linear", "cnn", "ngram"]
    # Each architecture's row holds only its own knobs (ngram's 7 knobs: a row of 4, then 3).
    ngram = [panel for title, panel in panels if title.startswith("ngram")]
    labels = [ax.get_xlabel() for panel in ngram for ax in panel.axes if ax.get_xlabel()]
    assert sorted(labels) == sorted(
        [
            "lr",
            "optimizer",
            "batch_size",
            "embedding_dim",
            "hidden_dim",
            "dropout_p",
            "weight_decay",
        ]
    )
    linear = next(panel for title, panel in panels if title.startswith("linear"))
    assert [ax.get_xlabel() for ax in linear.axes if ax.get_xlabel()] == ["weight_decay"]
    # The interactive figure: one row per panel, titled the same.
    titles = [a.text for a in built["slice"].figure.layout.annotations]
    assert titles == [title for title, _ in panels]


def test_parallel_coordinates_have_no_none_and_one_panel_per_architecture(plots):
    study, built = plots
    plot = built["parallel_coordinate"]
    assert {title.split(" (")[0] for title, _ in plot.panels} == _architectures(study)
    for title, panel in plot.panels:
        ticks = [t.get_text() for t in panel.texts] + [
            t.get_text() for ax in panel.axes for t in ax.get_yticklabels()
        ]
        assert "None" not in ticks, title
    layout = plot.figure.layout
    rows = [layout[k].ticktext for k in layout if k.startswith("xaxis") and layout[k].ticktext]
    assert len(rows) == len(plot.panels)
    for labels in rows:
        assert labels[0] == METRIC
    # No knob of another architecture: linear's only knob is weight_decay.
    assert [METRIC, "weight_decay"] in [list(labels) for labels in rows]
    assert "None" not in [a.text for a in layout.annotations]


def test_contour_crosses_each_architectures_own_knobs_never_the_architecture(plots):
    _, built = plots
    plot = built["contour"]
    # linear has one knob: no contour; then cnn and ngram, best first.
    assert [title.split(" (")[0] for title, _ in plot.panels] == ["cnn", "ngram"]
    for title, panel in plot.panels:
        labels = {ax.get_xlabel() for ax in panel.axes} | {ax.get_ylabel() for ax in panel.axes}
        assert "architecture" not in labels, title
        # The value follows weight_decay: the most important knob is on an axis.
        assert "weight_decay" in labels, title
        assert METRIC in labels, title  # the colour bar
    layout = plot.figure.layout
    axes = [
        layout[key].title.text
        for key in layout
        if re.fullmatch(r"[xy]axis\d*", key) and layout[key].title.text
    ]
    assert "architecture" not in axes and "weight_decay" in axes


def test_importance_gives_a_splitting_architecture_its_weight(plots):
    study, built = plots
    shares = param_importances(study)
    assert shares is not None
    assert sum(shares.values()) == pytest.approx(1.0)
    # The architectures' means differ by 0.04-0.12, each one's values by ~0.03: the
    # architecture explains most of the variance, and weight decay most of the rest.
    assert next(iter(shares)) == "architecture" and shares["architecture"] > 0.6
    for architecture in ("ngram", "cnn"):
        knobs = {k: v for k, v in shares.items() if k.endswith(f"({architecture})")}
        assert max(knobs, key=knobs.__getitem__) == f"weight_decay ({architecture})"
    # The plot: the architecture against each architecture's knobs, then a panel per
    # architecture with its knobs' shares of its own variance.
    plot = built["param_importances"]
    titles = [title for title, _ in plot.panels]
    assert titles[0] == f"Share of the variance of {METRIC}"
    assert [t.split(" (")[0] for t in titles[1:]] == ["linear", "cnn", "ngram"]
    first = plot.panels[0][1].axes[0]
    assert [t.get_text() for t in first.get_yticklabels()][-1] == "architecture"
    assert set(plot.figure.data[0].y) == {"architecture"} | {f"{a}: its knobs" for a in MEANS}
    ngram = dict(zip(plot.figure.data[3].y, plot.figure.data[3].x, strict=True))
    assert next(iter(ngram)) == "weight_decay" and sum(ngram.values()) == pytest.approx(1.0)
    assert "ngram" in plot.figure.layout.xaxis4.title.text


def test_one_architecture_study_and_a_study_without_a_search_space(tmp_path: Path):
    single = _study(("ngram",), n=6)
    assert set(write_plots(single, tmp_path / "single")) == set(PLOTS)
    shares = param_importances(single)
    assert shares is not None and shares["architecture"] == 0.0
    # A study whose trials searched nothing: the plots that need params are skipped.
    plain = optuna.create_study()
    plain.add_trials(
        [optuna.trial.create_trial(value=v, intermediate_values={1: v}) for v in (0.1, 0.2)]
    )
    assert write_plots(plain, tmp_path / "plain") == ["optimization_history", "intermediate_values"]


def test_write_plots_writes_a_png_per_plot_and_one_page(plots, tmp_path: Path):
    study, _ = plots
    written = write_plots(study, tmp_path)
    assert written == list(PLOTS)
    for name in written:
        with Image.open(tmp_path / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) >= 200
    page = (tmp_path / "plots.html").read_text(encoding="utf-8")
    assert page.count("Plotly.newPlot") == len(PLOTS)
    assert "Objective Value" not in page
