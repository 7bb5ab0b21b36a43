"""optimize: one parent run, one nested child per trial with truthful statuses and only
its own architecture's params, best_params.json equal to the best trial, the run-table view
that shows the best trial first, resume, seeded suggestions, config errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from helpers import TINY, copy_project, subprocess_env
from mlflow.entities import RunStatus
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient
from PIL import Image
from typer.testing import CliRunner

from tagifai import jobs, study, tracking
from tagifai.best_params import read_best_params
from tagifai.cli import app
from tagifai.plots import PLOTS
from tagifai.search import load_optimize_config, suggest_params
from tagifai.study_runs import VIEW_TAG_PREFIX, view_link
from tagifai.workloads.text import WORKLOAD as TEXT

TINY_STUDY = """
task: text
study_name: {name}
n_trials: {n_trials}
seed: 3
params: {params}
sampler: {{name: Random}}
pruner: {{name: Median, kwargs: {{n_startup_trials: 2, n_warmup_steps: 0}}}}
search_space:
  architecture:
    ngram:
      lr: {{type: float, low: 0.00001, high: 0.05, log: true}}
      dropout_p: {{type: float, low: 0.0, high: 0.5, step: 0.1}}
"""
# Two architectures, each with tiny settings: linear's are searched over one value (the
# base params are TINY's ngram, so a linear trial starts from linear's defaults).
MIXED_STUDY = """
task: text
study_name: {name}
n_trials: 2
seed: 3
params: {params}
sampler: {{name: Random, kwargs: {{}}}}
pruner: {{name: Nop}}
search_space:
  architecture:
    linear:
      weight_decay: {{type: float, low: 1.0e-7, high: 1.0e-4, log: true}}
      num_epochs: {{type: int, low: 3, high: 3}}
      max_ngrams: {{type: int, low: {max_ngrams}, high: {max_ngrams}}}
    ngram:
      weight_decay: {{type: float, low: 1.0e-7, high: 1.0e-4, log: true}}
      lr: {{type: float, low: 0.01, high: 0.05, log: true}}
"""
# Knobs of the minibatch architectures (ngram, cnn) that a linear model does not have.
NOT_LINEAR = {"embedding_dim", "hidden_dim", "lr", "optimizer", "batch_size", "dropout_p"}
NOT_LINEAR |= {"num_filters"}
NOT_NGRAM = {"nb_scale"}  # linear's
# A pruned trial is no crash: its run ends FINISHED, its state tag and description say
# pruned (KILLED is for interrupted trials, tests/code/test_interrupts.py).
STATUS = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}


def _study_config(path: Path, params_file: Path, name: str, n_trials: int = 4) -> Path:
    path.write_text(TINY_STUDY.format(name=name, n_trials=n_trials, params=params_file))
    return path


def _mixed_config(path: Path, params_file: Path, name: str) -> Path:
    max_ngrams = TINY["model"]["max_ngrams"]
    path.write_text(MIXED_STUDY.format(name=name, params=params_file, max_ngrams=max_ngrams))
    return path


def _runs(experiment_name: str) -> list[mlflow.entities.Run]:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _experiment_tags(experiment_name: str) -> dict[str, str]:
    experiment = MlflowClient().get_experiment_by_name(experiment_name)
    assert experiment is not None
    return dict(experiment.tags)


def _split(runs: list[mlflow.entities.Run]) -> tuple[list, list]:
    """(parents, children) by the nesting tag."""
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    return parents, children


@pytest.mark.training
def test_study_is_one_parent_with_truthful_children(
    workdir, tiny_params_file, sample_paths, experiment_name, monkeypatch
):
    config_file = _study_config(workdir / "study.yaml", tiny_params_file, experiment_name, 5)
    config, base, workload = load_optimize_config(config_file)
    assert workload is TEXT

    # Fault injection: the trial that draws dropout 0.1 crashes; the study must go on.
    real_train = TEXT.train

    def flaky_train(params, *args, **kwargs):
        if params.model.dropout_p == pytest.approx(0.1):
            raise RuntimeError("injected failure")
        return real_train(params, *args, **kwargs)

    monkeypatch.setattr(TEXT, "train", flaky_train)
    # Every status write reaches the store through update_run_info: record them.
    writes: list[tuple[str, str]] = []
    real_update = SqlAlchemyStore.update_run_info

    def recording_update(self, run_id, run_status, end_time, run_name):
        writes.append((run_id, RunStatus.to_string(run_status)))
        return real_update(self, run_id, run_status, end_time, run_name)

    monkeypatch.setattr(SqlAlchemyStore, "update_run_info", recording_update)
    tracking.configure()
    dataset, splits = jobs.load_data(base, *sample_paths)
    best_file = workdir / "config" / "best_params.json"
    result = study.run_study(config, base, dataset, splits, best_params_file=best_file)
    trials = result.study.trials
    states = [trial.state.name for trial in trials]
    # n_trials counts completed and pruned trials: the failed one is made up for
    assert len(states) == 6 and states.count("FAIL") == 1, states
    assert {"COMPLETE", "PRUNED", "FAIL"} <= set(states)
    assert result.trials_run == 6

    parents, children = _split(_runs(experiment_name))
    assert [run.info.run_id for run in parents] == [result.parent_run_id]
    assert parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["mlflow.runName"] == experiment_name  # named after the study
    assert len(children) == len(trials)
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {result.parent_run_id}

    by_id = {run.info.run_id: run for run in children}
    client = MlflowClient()
    for trial in trials:
        run = by_id[trial.system_attrs["mlflow_run_id"]]
        assert run.info.status == STATUS[trial.state.name], trial.number
        # One owner, one status write: the trial's final state, once.
        assert [w for r, w in writes if r == run.info.run_id] == [STATUS[trial.state.name]]
        assert run.data.tags["state"] == trial.state.name
        assert run.data.tags["mlflow.runName"] == f"trial-{trial.number}"
        # MLflowCallback's tags name each knob's distribution (and only the trial's knobs).
        knobs = {
            tag.removesuffix("_distribution")
            for tag in run.data.tags
            if tag.endswith("_distribution")
        }
        assert knobs == set(trial.distributions), trial.number
        if trial.state.name != "FAIL":
            steps = [p.step for p in client.get_metric_history(run.info.run_id, "epoch_val_f1")]
            assert steps == list(range(1, len(steps) + 1)) and steps
            assert run.data.params["lr"] == str(trial.params["lr"])
            assert run.data.params["dropout_p"] == str(trial.params["dropout_p"])
        if trial.state.name == "COMPLETE":
            assert run.data.metrics["val_f1"] == pytest.approx(trial.value)
            assert 0.0 < run.data.metrics["threshold"] < 1.0
            assert trial.user_attrs["decision"]["kind"] == "threshold"
        else:  # a pruned trial's value is its last epoch's, not a model's: no objective
            assert "val_f1" not in run.data.metrics
        if trial.state.name == "PRUNED":
            note = run.data.tags["mlflow.note.content"]
            assert note.startswith(f"Pruned after epoch {trial.last_step} (not a crash):"), note

    best = result.study.best_trial
    written = json.loads(best_file.read_text())
    assert written["trial_number"] == best.number
    assert written["value"] == pytest.approx(best.value)
    assert written["decision"] == best.user_attrs["decision"]
    assert written["tuned"] == best.params
    assert written["params"]["model"]["lr"] == best.params["lr"]
    assert written["mlflow_run_id"] == best.system_attrs["mlflow_run_id"]
    assert written["parent_run_id"] == result.parent_run_id
    assert result.best is not None and result.best.model_dump(mode="json") == written

    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags["best_run_id"] == best.system_attrs["mlflow_run_id"]
    # The best child says so (a tag and a description); no other child does.
    best_run = client.get_run(best.system_attrs["mlflow_run_id"])
    assert best_run.data.tags["tagifai.best"] == "true"
    assert best_run.data.tags["mlflow.note.content"].startswith(
        f"Best trial of the study: val_f1 = {best.value:.4f} after {len(trials)} trials"
    )
    others = [r for r in children if r.info.run_id != best_run.info.run_id]
    assert not [r for r in others if "tagifai.best" in client.get_run(r.info.run_id).data.tags]
    assert not [r for r in others if "Best trial" in r.data.tags.get("mlflow.note.content", "")]
    # The parent's row in the run table: the objective under its own name, the best trial
    # by name (a tag and the description).
    assert parent.data.metrics["val_f1"] == pytest.approx(best.value)
    assert parent.data.metrics["best_val_f1"] == pytest.approx(best.value)
    assert parent.data.tags["best_trial"] == f"trial-{best.number}"
    assert parent.data.tags["mlflow.note.content"].startswith(
        f"The study's best: trial-{best.number}, val_f1 = {best.value:.4f} "
        f"({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, 1 failed trials)"
    )
    _check_view(experiment_name, best, result.parent_run_id, len(trials))
    names = {item.path for item in client.list_artifacts(result.parent_run_id)}
    assert {"best_params.json", "trials.csv", "plots", "optimize_config.json"} <= names
    plots = {item.path for item in client.list_artifacts(result.parent_run_id, "plots")}
    assert plots == {f"plots/{name}.png" for name in PLOTS} | {"plots/plots.html"}
    local = Path(mlflow.artifacts.download_artifacts(run_id=result.parent_run_id))
    for name in PLOTS:  # images the artifact viewer shows with no network
        with Image.open(local / "plots" / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) >= 200
    # The interactive page carries plotly.js once (no CDN) and every plot.
    page = (local / "plots" / "plots.html").read_text(encoding="utf-8")
    assert page.count("Plotly.newPlot") == len(PLOTS)
    assert 'src="https://cdn.plot.ly' not in page and len(page) > 1_000_000
    assert json.loads((local / "best_params.json").read_text()) == written


def _check_view(
    name: str, best: optuna.trial.FrozenTrial, parent_id: str | None, n_runs: int
) -> None:
    """The study's saved run-table view (the UI's envelope) selects the study's runs and
    sorts the best trial first, the parent beside it, runs without the objective last;
    ``python -m tagifai.study_runs link`` prints the address that opens it."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    views = [key for key in experiment.tags if key.startswith(VIEW_TAG_PREFIX)]
    assert views == [f"{VIEW_TAG_PREFIX}trials.{name}"]
    envelope = json.loads(experiment.tags[views[0]])
    assert envelope["name"] == f"{name}: trials, best val_f1 first"
    assert isinstance(envelope["createdAt"], int) and envelope["updatedAt"] >= envelope["createdAt"]
    state = json.loads(envelope["state"])
    assert state["selectedColumns"] == [
        "metrics.`val_f1`",
        "tags.`state`",
        "attributes.`Description`",
    ]
    assert state["orderByKey"] == "metrics.`val_f1`" and state["orderByAsc"] is False
    # What the UI asks the store for when it opens the view.
    shown = client.search_runs(
        [experiment.experiment_id],
        filter_string=state["searchFilter"],
        order_by=[f"{state['orderByKey']} DESC"],
    )
    assert len(shown) == n_runs + 1  # the trials and their parent
    assert shown[0].info.run_id == best.system_attrs["mlflow_run_id"]
    assert shown[1].info.run_id == parent_id
    ranked = [run.data.metrics.get("val_f1") for run in shown]
    scored = [value for value in ranked if value is not None]
    assert scored == sorted(scored, reverse=True)
    assert ranked == scored + [None] * (len(ranked) - len(scored))  # pruned and failed last

    url = "http://127.0.0.1:5000"
    link = view_link(name, url)
    assert link == (
        f"{url}/#/experiments/{experiment.experiment_id}/runs"
        f"?viewStateShareKey=trials.{name}&workflowType=machine_learning"
    )
    printed = subprocess.run(
        [sys.executable, "-m", "tagifai.study_runs", "link", name, url],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert printed.stdout.strip() == f"Study {name}, trials best first: {link}"
    assert view_link("no-such-study", url) is None


@pytest.mark.training
def test_each_trial_logs_only_its_architectures_knobs(
    workdir, tiny_params_file, sample_paths, experiment_name
):
    """A conditional space: a linear trial's child run has no minibatch knobs, an ngram
    trial's none of linear's; the data preparation is on the parent run only."""
    config, base, _ = load_optimize_config(
        _mixed_config(workdir / "mixed.yaml", tiny_params_file, experiment_name)
    )
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    queued = study.open_study(config, storage)
    for architecture in ("linear", "ngram"):  # one trial of each, whatever the sampler draws
        queued.enqueue_trial({"architecture": architecture})
    tracking.configure()
    dataset, splits = jobs.load_data(base, *sample_paths)
    result = study.run_study(config, base, dataset, splits, storage=storage)

    trials = result.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert [t.params["architecture"] for t in trials] == ["linear", "ngram"]
    parents, children = _split(_runs(experiment_name))
    assert [run.info.run_id for run in parents] == [result.parent_run_id]
    assert parents[0].data.tags["mlflow.runName"] == experiment_name
    by_id = {run.info.run_id: run for run in children}
    assert set(by_id) == {t.system_attrs["mlflow_run_id"] for t in trials}
    linear, ngram = (by_id[t.system_attrs["mlflow_run_id"]] for t in trials)

    assert linear.data.params["architecture"] == "linear"
    assert not NOT_LINEAR & set(linear.data.params), sorted(linear.data.params)
    assert linear.data.params["nb_scale"] == "True"  # the knobs it has are there
    assert linear.data.params["num_epochs"] == "3"  # the searched value, not linear's default
    assert linear.data.params["weight_decay"] == str(trials[0].params["weight_decay"])

    assert ngram.data.params["architecture"] == "ngram"
    assert not NOT_NGRAM & set(ngram.data.params), sorted(ngram.data.params)
    assert ngram.data.params["lr"] == str(trials[1].params["lr"])
    assert ngram.data.params["embedding_dim"] == str(TINY["model"]["embedding_dim"])

    for trial, child in zip(trials, (linear, ngram), strict=True):
        assert not [key for key in child.data.params if key.startswith("data.")], trial.number
        assert child.data.tags["mlflow.runName"] == f"trial-{trial.number}"
        tagged = {
            t.removesuffix("_distribution") for t in child.data.tags if t.endswith("_distribution")
        }
        assert tagged == set(trial.params), trial.number  # MLflowCallback's: the trial's knobs
        assert child.info.status == "FINISHED"
    parent_params = parents[0].data.params
    assert parent_params["data.min_tag_freq"] == str(base.data.min_tag_freq)
    assert {key for key in parent_params if key.startswith("data.")} == set(base.data_params())


@pytest.mark.training
def test_best_params_file_trains_again_with_its_decision_rule(
    workdir, tiny_params_file, experiment_name
):
    """best_params.json of a study is a valid record with the decision rule; train-best
    --params trains it again and says how the re-tuned threshold compares."""
    config_file = _study_config(workdir / "study.yaml", tiny_params_file, experiment_name, 2)
    runner = CliRunner()
    done = runner.invoke(app, ["optimize", "--config", str(config_file)])
    assert done.exit_code == 0, done.output
    best_file = workdir / "config" / "best_params.json"
    best = read_best_params(best_file)
    assert best.task == "text" and best.study_name == experiment_name
    assert best.decision.kind == "threshold"
    assert all(0.0 < t < 1.0 for t in best.decision.thresholds)
    trial = optuna.load_study(study_name=experiment_name, storage=study.DEFAULT_STORAGE).best_trial
    assert best.decision.model_dump(mode="json") == trial.user_attrs["decision"]
    assert best.run_params().model.lr == trial.params["lr"]

    result = runner.invoke(app, ["train-best", "--params", str(best_file)])
    assert result.exit_code == 0, result.output
    line = re.search(
        r"decision threshold re-tuned on validation: (\d\.\d{4}) \((.*)\)", result.output
    )
    assert line is not None, result.output
    # Same params, seed and data as the trial: the model and its threshold are the trial's.
    assert line.group(1) == f"{best.decision.summary:.4f}"
    assert line.group(2) == "the same as the study's"
    run_id = result.output.split("run_id:")[1].split()[0]
    run = MlflowClient().get_run(run_id)
    assert run.data.metrics["threshold"] == pytest.approx(best.decision.summary)
    assert run.data.tags["tagifai.parent_run_id"] == best.parent_run_id
    assert "tagifai version 1 is now @champion" in result.output


@pytest.mark.training
def test_rerun_resumes_the_same_study_and_parent(workdir, tiny_params_file, experiment_name):
    config_file = _study_config(workdir / "study.yaml", tiny_params_file, experiment_name, 2)
    runner = CliRunner()
    first = runner.invoke(app, ["optimize", "--config", str(config_file)])
    assert first.exit_code == 0, first.output
    runs_after_first = _runs(experiment_name)
    assert len(runs_after_first) == 3  # parent + 2 children
    view = f"{VIEW_TAG_PREFIX}trials.{experiment_name}"
    created = json.loads(_experiment_tags(experiment_name)[view])

    again = runner.invoke(app, ["optimize", "--config", str(config_file)])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    assert len(_runs(experiment_name)) == 3

    more = runner.invoke(app, ["optimize", "--config", str(config_file), "--n-trials", "3"])
    assert more.exit_code == 0, more.output
    runs = _runs(experiment_name)
    parents, children = _split(runs)
    assert len(parents) == 1 and len(children) == 3
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parents[0].info.run_id}
    resumed = optuna.load_study(study_name=experiment_name, storage=study.DEFAULT_STORAGE)
    assert [trial.number for trial in resumed.trials] == [0, 1, 2]
    first_ids = {run.info.run_id for run in runs_after_first}
    assert first_ids <= {run.info.run_id for run in runs}  # nothing lost or re-run
    assert all(run.info.status != "RUNNING" for run in runs)
    saved = json.loads(_experiment_tags(experiment_name)[view])
    assert saved["createdAt"] == created["createdAt"]  # the same view, saved again
    assert saved["updatedAt"] > created["updatedAt"]


def test_same_seed_same_suggestions(workdir, tiny_params_file):
    sequences = []
    for name in ("a", "b"):
        config, base, _ = load_optimize_config(
            _mixed_config(workdir / f"{name}.yaml", tiny_params_file, name), seed=7
        )
        config = config.model_copy(
            update={"sampler": config.sampler.model_copy(update={"name": "TPE"})}
        )
        opened = study.open_study(config, storage=f"sqlite:///{workdir / 'seed.db'}")
        values = []
        for i in range(6):
            trial = opened.ask()
            values.append(suggest_params(trial, config, base).model_dump(mode="json"))
            opened.tell(trial, float(i % 3))
        sequences.append(values)
    assert sequences[0] == sequences[1]
    # the architecture is a seeded choice too: both occur in these six trials
    assert {v["model"]["architecture"] for v in sequences[0]} == {"linear", "ngram"}


def test_config_error_exits_2_and_logs_nothing(workdir, tiny_params_file):
    bad = workdir / "bad.yaml"
    bad.write_text(
        f"task: text\nparams: {tiny_params_file}\nsearch_space:\n  architecture:\n"
        "    ngram:\n      lr: {type: float, low: 0.1, high: 0.01}\n"
    )
    result = CliRunner().invoke(app, ["optimize", "--config", str(bad)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "bad.yaml" in lines[0] and "search_space.architecture.ngram.lr" in lines[0]
    assert "low (0.1) > high (0.01)" in lines[0]
    assert not (workdir / "mlflow.db").exists()
    assert not (workdir / "experiments").exists()
    assert not (workdir / "config" / "best_params.json").exists()


def _clean_env() -> dict[str, str]:
    """A fresh shell with only the venv activated: no MLFLOW_* variable at all."""
    return {k: v for k, v in subprocess_env().items() if not k.startswith("MLFLOW_")}


def _until(check, what: str, seconds: float = 300.0) -> None:
    """Wait for ``check()`` (a safety net of minutes, not a clock the test relies on)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.training
def test_mlflow_run_as_the_readme_types_it_extends_the_study(tmp_path):
    """`tagifai optimize`, then in a clean shell the README's `mlflow run` command: the same
    store (./mlflow.db), the same study and parent, one child per trial, every run of the
    study in its experiment, and no other store."""
    project = copy_project(tmp_path / "project")
    env = _clean_env()
    first = subprocess.run(
        ["tagifai", "optimize", "--n-trials", "2"],
        env=env, capture_output=True, text=True, timeout=600, cwd=project,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    done = subprocess.run(
        ["mlflow", "run", ".", "-e", "optimize", "--env-manager", "local", "-P", "n_trials=3"],
        env=env, capture_output=True, text=True, timeout=600, cwd=project,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    launched = re.search(r"Run \(ID '(\w+)'\) succeeded", done.stderr)
    assert launched is not None, done.stderr[-3000:]

    store = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(store)
    # `mlflow run`'s own run is folded into the parent, then deleted once it is closed.
    _until(
        lambda: client.get_run(launched.group(1)).info.lifecycle_stage == "deleted",
        "mlflow run's run to be deleted",
    )
    experiment = client.get_experiment_by_name("tagifai")
    everything = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {run.info.experiment_id for run in everything} == {experiment.experiment_id}
    parents, children = _split(everything)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert sorted(run.info.run_name for run in children) == ["trial-0", "trial-1", "trial-2"]
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    # The parent has the project's lineage and the -P values the user gave.
    assert parent.data.tags["mlflow.project.entryPoint"] == "optimize"
    assert parent.data.tags["tagifai.mlflow_run"] == "mlflow run -e optimize -P n_trials=3"
    loaded = optuna.load_study(
        study_name="tagifai", storage=f"sqlite:///{project / 'experiments' / 'optuna.db'}"
    )
    assert loaded.user_attrs["mlflow_parent_run_id"] == parent.info.run_id
    assert len(loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,
                                         optuna.trial.TrialState.PRUNED))) == 3  # fmt: skip
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.db")) == [
        "project/experiments/optuna.db",
        "project/mlflow.db",
    ]
    assert not (project / "mlruns").exists()
    read_best_params(project / "config" / "best_params.json")  # a valid record


@pytest.mark.slow
@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("n_trials=0", "'--n-trials': Input should be greater than or equal to 1"),
        ("seed=-1", "'--seed': Input should be greater than or equal to 0"),
        ("timeout=0", "'--timeout': Input should be greater than or equal to 1"),
    ],
)
def test_mlflow_run_refuses_what_the_cli_refuses(tmp_path, given, message):
    """A -P value is never read as "the default": 0 and -1 are refused like the CLI's."""
    project = copy_project(tmp_path / "project")
    done = subprocess.run(
        ["mlflow", "run", ".", "-e", "optimize", "--env-manager", "local", "-P", given],
        env=_clean_env(), capture_output=True, text=True, timeout=600, cwd=project,
    )  # fmt: skip
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-3000:]
    assert not (project / "experiments").exists()
