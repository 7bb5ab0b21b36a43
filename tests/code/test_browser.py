"""What a user sees, in a real headless Chromium: the MLflow UI, optuna-dashboard, the report.

One tiny study and its train-best model are made once for the module; each test
starts its server on 127.0.0.1 and drives Debian's ``/usr/bin/chromium`` with
Playwright. The browser may reach 127.0.0.1 only (every other request is aborted),
so a page that needs the internet fails here. Screenshots are written to
``test-artifacts/screenshots/`` (or ``$TAGIFAI_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from helpers import REPO, TINY, free_port, http_server, private_store, subprocess_env
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tagifai.cli import app
from tagifai.plots import PLOTS

pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.training]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
DECODED = "img => img.complete && img.naturalWidth > 100"  # an image the browser could draw
TIMEOUT_MS = 120_000  # a safety net: every wait below ends on what the page shows
STUDY = "browser-study"
# The tiny study with a pruner, so the UI has a pruned trial to show: two good trials first
# (two complete ones make every plot), then a slow one (lowest lr, most dropout) that the
# median of the first two stops early.
BROWSER_STUDY_YAML = """
task: text
study_name: {name}
n_trials: 3
seed: 3
params: {params}
sampler: {{name: Random}}
pruner: {{name: Median, kwargs: {{n_startup_trials: 2, n_warmup_steps: 0}}}}
initial_trials:
  - {{architecture: ngram, lr: 0.05, dropout_p: 0.0}}
  - {{architecture: ngram, lr: 0.04, dropout_p: 0.1}}
  - {{architecture: ngram, lr: 0.01, dropout_p: 0.5}}
search_space:
  architecture:
    ngram:
      lr: {{type: float, low: 0.01, high: 0.05, log: true}}
      dropout_p: {{type: float, low: 0.0, high: 0.5, step: 0.1}}
"""


def _screenshots() -> Path:
    folder = Path(os.environ.get("TAGIFAI_TEST_ARTIFACTS", REPO / "test-artifacts"))
    (folder / "screenshots").mkdir(parents=True, exist_ok=True)
    return folder / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium; skipped without it, unless CI requires it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - a dev install has it
        sync_playwright = None
    if sync_playwright is None or not CHROMIUM.exists():
        if os.environ.get("TAGIFAI_REQUIRE_SERVERS") == "1":
            pytest.fail("Chromium or playwright is missing (.ci/run installs chromium)")
        pytest.skip("Chromium (/usr/bin/chromium) or playwright is not installed")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _page(browser: Any) -> Any:
    """A page that may load from 127.0.0.1 (and data:/blob:/file:) only."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)

    def local_only(route: Any) -> None:
        url = urllib.parse.urlsplit(route.request.url)
        if url.scheme in ("data", "blob", "file") or url.hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    page.route("**/*", local_only)
    return page


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A tiny study (3 trials, one pruned at least), its train-best model and its report,
    in one store."""
    folder = tmp_path_factory.mktemp("browser")
    params = folder / "tiny.json"
    params.write_text(json.dumps(TINY))
    config = folder / "study.yaml"
    config.write_text(BROWSER_STUDY_YAML.format(name=STUDY, params=params))
    with private_store(folder) as uri:
        runner = CliRunner()
        for args in (
            ["optimize", "--config", str(config)],
            ["train-best"],
            ["report", "--study", STUDY, "--output", "report.html"],
        ):
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
        storage = f"sqlite:///{folder / 'experiments' / 'optuna.db'}"
        study = optuna.load_study(study_name=STUDY, storage=storage)
        states = [trial.state.name for trial in study.trials]
        assert "PRUNED" in states and "COMPLETE" in states, states
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(STUDY)
        assert experiment is not None
        yield {
            "folder": folder,
            "uri": uri,
            "storage": storage,
            "study": study,
            "experiment_id": experiment.experiment_id,
            "parent": study.user_attrs["mlflow_parent_run_id"],
        }


@pytest.fixture(scope="module")
def mlflow_ui(project: dict[str, Any]) -> Iterator[str]:
    """``mlflow server`` (the UI) on the project's store; yields its base URL."""
    port = free_port()
    command = [
        str(REPO / ".venv" / "bin" / "mlflow"), "server", "--backend-store-uri", project["uri"],
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with http_server(command, project["folder"], f"{base}/health", "mlflow-ui"):
        yield base


# The 3.17 UI opens in its GenAI view unless the URL (or a saved choice) asks for the
# model-training one: every link tagifai prints carries this.
TRAINING_VIEW = "workflowType=machine_learning"


def test_ui_lists_the_parent_under_the_study_name_with_its_trials(browser, project, mlflow_ui):
    page = _page(browser)
    page.goto(f"{mlflow_ui}/#/experiments/{project['experiment_id']}/runs?{TRAINING_VIEW}")
    name_cell = page.locator("[role=gridcell][col-id='attributes.`Run Name`']")
    parent = name_cell.filter(has=page.get_by_role("link", name=STUDY, exact=True))
    parent.locator("button").first.click()  # expand the nested runs
    for number in range(3):
        page.get_by_role("link", name=f"trial-{number}", exact=True).wait_for()
    assert page.get_by_role("link", name=f"train-best-{STUDY}", exact=True).is_visible()
    assert page.get_by_text("Model training", exact=True).is_visible()
    page.screenshot(path=_screenshots() / "mlflow-nested-runs.png")
    page.close()


def _row(page: Any, run_name: str) -> str:
    """The text of the run table's row of ``run_name`` (its pinned and scrolled parts)."""
    name = page.get_by_role("link", name=run_name, exact=True)
    index = page.locator("[role=row]").filter(has=name).get_attribute("row-index")
    return " | ".join(page.locator(f"[role=row][row-index='{index}']").all_inner_texts())


def test_ui_run_table_shows_the_best_trial_and_the_pruned_ones(browser, project, mlflow_ui):
    """The link ``make ui`` prints opens the study's saved view: the study's runs sorted by
    the objective, the best trial first and its parent beside it (both naming the best),
    and every pruned trial reading PRUNED with its description, not a crash."""
    printed = subprocess.run(
        [sys.executable, "-m", "tagifai.study_runs", "link", STUDY, mlflow_ui],
        env=subprocess_env(MLFLOW_TRACKING_URI=project["uri"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    link = printed.stdout.split(": ", 1)[1].strip()
    assert link.startswith(f"{mlflow_ui}/#/experiments/{project['experiment_id']}/runs?")
    study = project["study"]
    best = study.best_trial
    pruned = [t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]

    page = _page(browser)
    page.goto(link)
    page.get_by_role("button", name="Sort: val_f1").wait_for()
    first = page.locator("[role=row][row-index='0']").filter(
        has=page.get_by_role("link", name=f"trial-{best.number}", exact=True)
    )
    first.wait_for()  # sorted: the best trial heads the table
    best_row = _row(page, f"trial-{best.number}")
    assert str(best.value)[:6] in best_row and "COMPLETE" in best_row, best_row
    assert "Best trial of the study" in best_row, best_row
    second = page.locator("[role=row][row-index='1']").filter(
        has=page.get_by_role("link", name=STUDY, exact=True)
    )
    assert second.count() == 1  # the parent, with the same objective, names the best
    assert f"The study's best: trial-{best.number}" in _row(page, STUDY)
    for number in pruned:
        row = _row(page, f"trial-{number}")
        assert "PRUNED" in row and "Pruned after epoch" in row, row
        assert "Killed" not in row and "Failed" not in row, row
    for header in ("val_f1", "state", "Description"):
        assert page.get_by_role("columnheader", name=header).first.is_visible()
    assistant = page.locator("[data-component-id='mlflow.assistant.chat_panel.close']")
    if assistant.is_visible():  # its side panel hides the table's right half
        assistant.click()
        assistant.wait_for(state="detached")
    page.screenshot(path=_screenshots() / "mlflow-run-table.png")
    page.close()


def test_ui_shows_the_parents_best_params_and_plot_pngs(browser, project, mlflow_ui):
    page = _page(browser)
    run_page = f"#/experiments/{project['experiment_id']}/runs/{project['parent']}/artifacts"
    page.goto(f"{mlflow_ui}/{run_page}?{TRAINING_VIEW}")
    for name in ("best_params.json", "trials.csv", "plots"):
        page.get_by_text(name, exact=True).first.wait_for()
    page.get_by_text("plots", exact=True).first.click()
    for name in PLOTS:
        page.get_by_text(f"{name}.png", exact=True).wait_for()
    page.get_by_text("contour.png", exact=True).click()
    # The artifact viewer shows the PNG itself: an image that decoded (its natural size).
    image = page.locator("img[src^='data:image/png'], img[src^='blob:']").last
    image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 100", arg=image.element_handle()
    )
    page.screenshot(path=_screenshots() / "mlflow-plot-artifact.png")
    page.close()


def test_ui_shows_the_registered_models_champion_alias(browser, project, mlflow_ui):
    page = _page(browser)
    page.goto(f"{mlflow_ui}/#/models/tagifai?{TRAINING_VIEW}")
    row = page.get_by_role("row").filter(has_text="Version 1")
    row.wait_for()
    assert re.search(r"@\s*champion", row.inner_text())
    page.screenshot(path=_screenshots() / "mlflow-registered-model.png")
    page.close()


def test_dashboard_renders_the_studys_trials(browser, project):
    port = free_port()
    command = [
        str(REPO / ".venv" / "bin" / "optuna-dashboard"), project["storage"],
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    study = project["study"]
    with http_server(command, project["folder"], f"{base}/api/studies", "dashboard"):
        page = _page(browser)
        page.goto(f"{base}/dashboard/studies/{study._study_id}/trials")
        for trial in study.trials:
            page.get_by_text(f"Trial {trial.number}", exact=True).first.wait_for()
        body = page.inner_text("body")
        assert f"{STUDY} (id={study._study_id})" in body
        assert f"{len(study.trials)} Trials" in body and "Best Trial" in body
        page.screenshot(path=_screenshots() / "optuna-dashboard.png")
        page.close()


def test_report_renders_offline_with_every_plot(browser, project):
    report = project["folder"] / "report.html"
    page = _page(browser)
    page.goto(report.as_uri())
    page.get_by_role("heading", name=f"Study {STUDY}").wait_for()
    images = page.locator("img")
    assert images.count() == len(PLOTS)
    for index in range(images.count()):
        handle = images.nth(index).element_handle()
        page.wait_for_function(DECODED, arg=handle)
    assert page.get_by_role("heading", name="Per class (test)").is_visible()
    page.screenshot(path=_screenshots() / "study-report.png", full_page=True)
    shutil.copy(report, _screenshots().parent / "study-report.html")
    page.close()
