"""What a user sees: one tracking store per study, queued first trials, the study report."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import termios
from pathlib import Path

import mlflow
import optuna
import pytest
from helpers import REPO, TINY, TINY_STUDY_YAML, subprocess_env
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from tagifai import study
from tagifai.cli import EPOCH_LINES_ENV, app
from tagifai.errors import TagifaiError
from tagifai.plots import PLOTS
from tagifai.search import initial_trials, load_optimize_config

STUDY = TINY_STUDY_YAML + "{extra}"


def _config(path: Path, params: Path, name: str, n_trials: int = 2, extra: str = "") -> Path:
    path.write_text(STUDY.format(name=name, n_trials=n_trials, params=params, extra=extra))
    return path


def _top_level_runs(uri: str) -> list[mlflow.entities.Run]:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids) if ids else []
    return [run for run in runs if "mlflow.parentRunId" not in run.data.tags]


# -- one store per study -------------------------------------------------------------


@pytest.mark.training
def test_a_study_refuses_a_store_without_its_parent(
    workdir, tiny_params_file, experiment_name, monkeypatch
):
    config = _config(workdir / "study.yaml", tiny_params_file, experiment_name)
    first = CliRunner().invoke(app, ["optimize", "--config", str(config)])
    assert first.exit_code == 0, first.output
    home = f"sqlite:///{workdir / 'mlflow.db'}"
    parent = _top_level_runs(home)[0].info.run_id

    other = f"sqlite:///{workdir / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    again = CliRunner().invoke(app, ["optimize", "--config", str(config), "--n-trials", "3"])
    assert again.exit_code == 2
    line = again.stderr.strip()
    assert "\n" not in line
    assert parent in line and str(workdir / "mlflow.db") in line and "MLFLOW_TRACKING_URI" in line
    assert _top_level_runs(other) == []  # nothing was re-linked or made there
    loaded = optuna.load_study(study_name=experiment_name, storage=study.DEFAULT_STORAGE)
    assert len(loaded.trials) == 2  # and no trial ran
    assert loaded.user_attrs["mlflow_parent_run_id"] == parent

    # Back on its own store, the study goes on under the same parent.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", home)
    resumed = CliRunner().invoke(app, ["optimize", "--config", str(config), "--n-trials", "3"])
    assert resumed.exit_code == 0, resumed.output
    assert [run.info.run_id for run in _top_level_runs(home)] == [parent]


# -- initial trials ------------------------------------------------------------------


def test_initial_trials_take_the_architecture_defaults(workdir, tiny_params_file):
    extra = "initial_trials:\n  - {architecture: ngram, lr: 0.02}\n  - {architecture: ngram}\n"
    config, base, _ = load_optimize_config(
        _config(workdir / "s.yaml", tiny_params_file, "init", extra=extra)
    )
    # The second names no knob: lr and dropout_p are the base params' (tiny ngram's).
    assert initial_trials(config, base) == [
        {"architecture": "ngram", "lr": 0.02, "dropout_p": 0.0},
        {"architecture": "ngram", "lr": 0.05, "dropout_p": 0.0},
    ]


@pytest.mark.parametrize(
    ("trial", "message"),
    [
        ("{architecture: cnn}", "initial_trials[0].architecture: 'cnn' is not in the search space"),
        ("{lr: 0.02}", "initial_trials[0].architecture: None is not in the search space"),
        ("{architecture: ngram, hidden_dim: 8}", "initial_trials[0].hidden_dim: not a searched"),
        ("{architecture: ngram, lr: 0.5}", "initial_trials[0].lr: 0.5 is outside its search"),
        ("{architecture: ngram, dropout_p: 0.25}", "initial_trials[0].dropout_p: 0.25 is outside"),
        ("{architecture: ngram, lr: '0.02'}", "initial_trials[0].lr: '0.02' is outside"),
    ],
)
def test_bad_initial_trials_are_refused_at_load(workdir, tiny_params_file, trial, message):
    path = _config(
        workdir / "s.yaml", tiny_params_file, "bad", extra=f"initial_trials:\n  - {trial}\n"
    )
    with pytest.raises(TagifaiError) as caught:
        load_optimize_config(path)
    assert str(caught.value).startswith(f"{path}: {message}"), caught.value
    assert not (workdir / "experiments").exists()


def test_a_default_outside_the_range_is_named(workdir, tiny_params_file):
    # The tiny ngram's lr (0.05) is outside a range of [0.001, 0.01]: the trial must say it.
    path = workdir / "s.yaml"
    path.write_text(
        STUDY.format(name="d", n_trials=1, params=tiny_params_file, extra="").replace(
            "low: 0.01, high: 0.05", "low: 0.001, high: 0.01"
        )
        + "initial_trials:\n  - {architecture: ngram}\n"
    )
    with pytest.raises(TagifaiError, match=r"lr: 0.05 \(the ngram default\) is outside"):
        load_optimize_config(path)


@pytest.mark.training
def test_initial_trials_run_first_once_per_study(workdir, tiny_params_file, experiment_name):
    extra = "initial_trials:\n  - {architecture: ngram, lr: 0.02, dropout_p: 0.1}\n"
    config = _config(workdir / "s.yaml", tiny_params_file, experiment_name, 2, extra)
    assert CliRunner().invoke(app, ["optimize", "--config", str(config)]).exit_code == 0
    more = CliRunner().invoke(app, ["optimize", "--config", str(config), "--n-trials", "3"])
    assert more.exit_code == 0, more.output
    trials = optuna.load_study(study_name=experiment_name, storage=study.DEFAULT_STORAGE).trials
    assert trials[0].params == {"architecture": "ngram", "lr": 0.02, "dropout_p": 0.1}
    assert [t.params for t in trials].count(trials[0].params) == 1  # not queued again


# -- the study report ----------------------------------------------------------------


@pytest.mark.training
def test_report_is_one_self_contained_page(workdir, tiny_params_file, experiment_name):
    runner = CliRunner()
    config = _config(workdir / "study.yaml", tiny_params_file, experiment_name, n_trials=3)
    assert runner.invoke(app, ["optimize", "--config", str(config)]).exit_code == 0
    trained = runner.invoke(app, ["train-best"])
    assert trained.exit_code == 0, trained.output
    output = workdir / "out" / "study.html"
    result = runner.invoke(app, ["report", "--study", experiment_name, "--output", str(output)])
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")

    loaded = optuna.load_study(study_name=experiment_name, storage=study.DEFAULT_STORAGE)
    attrs = loaded.user_attrs
    assert attrs["data_digest"] in page and experiment_name in page
    best = loaded.best_trial
    assert f"<th>trial</th><td>{best.number}</td>" in page
    for name, value in best.params.items():
        assert re.search(rf"<th>{name}</th><td>{re.escape(str(value))}</td>", page)
    for trial in loaded.trials:  # one row per trial, with its MLflow run
        assert trial.system_attrs["mlflow_run_id"] in page
    assert attrs["mlflow_parent_run_id"] in page
    # Every plot is a PNG inside the page; nothing is fetched from elsewhere.
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == len(PLOTS)
    for data in images:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            assert image.format == "PNG"
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    # The train-best model: its run, test metrics and per-class table.
    run = MlflowClient().search_runs(
        [e.experiment_id for e in MlflowClient().search_experiments()],
        filter_string="tags.mlflow.runName = 'train-best-" + experiment_name + "'",
    )[0]
    assert run.info.run_id in page
    assert f"{run.data.metrics['test_f1']:.4f}" in page
    performance = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="performance.json"
            )
        ).read_text()
    )
    assert "Per class (test)" in page
    for name in performance["class"]:
        assert f"<th>{name}</th>" in page


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope", "--output", "r.html"], "--study: no study 'nope'"),
        (["--study", "nope", "--output", "r.txt"], "--output: r.txt is not an .html file"),
        (["--study", "nope", "--output", "."], "is not an .html file"),
        (["--study", "a/../b", "--output", "r.html"], "--study"),
    ],
)
def test_report_bad_arguments_get_one_line(workdir, args, message):
    (workdir / "experiments").mkdir()
    optuna.create_study(study_name="other", storage=study.DEFAULT_STORAGE)
    result = CliRunner().invoke(app, ["report", *args])
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert not (workdir / "r.html").exists()


@pytest.mark.training
def test_train_best_trains_the_study_it_is_asked_for(workdir, tiny_params_file):
    runner = CliRunner()
    parents = {}
    for name in ("first-study", "second-study"):
        config = _config(workdir / f"{name}.yaml", tiny_params_file, name)
        assert runner.invoke(app, ["optimize", "--config", str(config)]).exit_code == 0
        loaded = optuna.load_study(study_name=name, storage=study.DEFAULT_STORAGE)
        parents[name] = loaded.user_attrs["mlflow_parent_run_id"]
    # config/best_params.json now holds the second study's; --study picks the first.
    result = runner.invoke(app, ["train-best", "--study", "first-study"])
    assert result.exit_code == 0, result.output
    version = MlflowClient().get_model_version_by_alias("tagifai", "champion")
    run = MlflowClient().get_run(version.run_id)
    assert run.data.tags["tagifai.parent_run_id"] == parents["first-study"]
    assert run.info.run_name == "train-best-first-study"
    for args, message in [
        (["--study", "nope"], "--study: no study 'nope'"),
        (["--study", "first-study", "--params", "x.json"], "give one of --study, --params"),
    ]:
        refused = runner.invoke(app, ["train-best", *args])
        assert refused.exit_code == 2 and message in refused.stderr, refused.output


@pytest.mark.training
def test_progress_off_a_terminal_is_plain_lines_per_trial_and_long_trials_epochs(
    workdir, tiny_params_file, experiment_name, monkeypatch
):
    config = _config(workdir / "study.yaml", tiny_params_file, experiment_name, n_trials=2)
    quiet = CliRunner().invoke(app, ["optimize", "--config", str(config)])
    assert quiet.exit_code == 0, quiet.output
    # Not a terminal here: a line as each trial starts (its first epoch) and one as it
    # ends with the best so far; these trials are short, so no other epoch is shown.
    lines = [line for line in quiet.stderr.splitlines() if line.startswith("[")]
    assert [line.split()[0:5] for line in lines if " epoch " in line] == [
        ["[0/2]", "trial", "0", "epoch", f"1/{TINY['model']['num_epochs']}"],
        ["[1/2]", "trial", "1", "epoch", f"1/{TINY['model']['num_epochs']}"],
    ]
    ends = [line for line in lines if " epoch " not in line]
    assert [line.split()[0:3] for line in ends] == [
        ["[1/2]", "trial", "0"],
        ["[2/2]", "trial", "1"],
    ]
    assert all("best" in line for line in ends)
    # The end: best value and params, where they are, what to run next.
    assert "best val_f1 = " in quiet.stdout and "decision rule: threshold" in quiet.stdout
    assert "make train-best TASK=text STUDY=" + experiment_name in quiet.stdout

    # A trial that has run long enough (0 s here) shows every epoch; --verbose adds the
    # full metrics of every epoch of every trial.
    monkeypatch.setenv(EPOCH_LINES_ENV, "0")
    more = ["optimize", "--config", str(config), "--n-trials", "3", "--verbose"]
    verbose = CliRunner().invoke(app, more)
    assert verbose.exit_code == 0, verbose.output
    trial = optuna.load_study(study_name=experiment_name, storage=study.DEFAULT_STORAGE).trials[2]
    plain = [
        line for line in verbose.stderr.splitlines() if line.startswith("[2/3] trial 2 epoch ")
    ]
    assert [line.split()[4].split("/")[0] for line in plain] == [
        str(epoch) for epoch in range(1, trial.user_attrs["epochs"] + 1)
    ]
    assert all("val_f1=" in line for line in plain)
    epochs = [line for line in verbose.stderr.splitlines() if line.startswith("trial 2 epoch ")]
    assert len(epochs) == trial.user_attrs["epochs"] and "val_f1=" in epochs[0]


ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.training
def test_live_progress_fits_an_80_column_terminal_and_shows_epochs(tmp_path, tiny_params_file):
    """In a real pseudo-terminal 80 columns wide: the live line is never wider, shows the
    running trial's epoch k/E, and the study still ends with its summary."""
    params = json.loads(tiny_params_file.read_text())
    params["model"].update(num_epochs=60, patience=60)  # seconds of epochs to watch
    slow = tmp_path / "params.json"
    slow.write_text(json.dumps(params))
    config = _config(tmp_path / "study.yaml", slow, "live", n_trials=2)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in subprocess_env().items() if k not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "tagifai"), "optimize", "--config", str(config)],
        stdin=follower, stdout=follower, stderr=follower, cwd=tmp_path, env=env,
    )  # fmt: skip
    os.close(follower)
    output = b""
    while True:  # until the child closes the terminal (EIO on Linux)
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert proc.wait(timeout=600) == 0, output.decode(errors="replace")[-3000:]
    screen = ESCAPES.sub("", output.decode(errors="replace"))
    live = [part for part in re.split(r"[\r\n]", screen) if "/2 trials" in part]
    assert live, screen[-3000:]
    assert max(len(part) for part in live) <= 80, max(live, key=len)
    assert any(re.search(r"trial \d epoch \d+/60 val_f1=0\.\d{4}", part) for part in live)
    assert any("ETA" in part for part in live)
    assert "best val_f1 = " in screen  # the summary after the live line
