"""Interruptions: Ctrl-C / SIGTERM during optimize leave a resumable study; SIGKILL at
several points (inside a trial, during the summary, while writing best_params.json) never
loses a completed trial, never leaves half a file, and the re-run closes every run."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
import torch
from helpers import subprocess_env
from mlflow.tracking import MlflowClient

from tagifai.best_params import read_best_params
from tagifai.workloads.text.params import TextParams

pytestmark = [pytest.mark.training, pytest.mark.slow]

STUDY = """
task: text
study_name: interrupted
n_trials: 2
seed: 11
params: {params}
heartbeat_interval: 1
grace_period: 3
sampler: {{name: Random}}
pruner: {{name: Nop}}
search_space:
  architecture:
    ngram:
      dropout_p: {{type: float, low: 0.0, high: 0.5, step: 0.1}}
"""
OPTIMIZE = [sys.executable, "-m", "tagifai.cli", "optimize", "--config", "study.yaml"]
EPOCHS = 80  # per slow trial; a trial is interrupted only while it has most of them left


def _study_dir(tmp_path: Path, tiny_params: TextParams, epochs: int) -> Path:
    params = tmp_path / "params.json"
    data = tiny_params.model_dump(mode="json")
    data["model"].update(num_epochs=epochs, patience=epochs)
    params.write_text(json.dumps(TextParams.model_validate(data).model_dump(mode="json")))
    (tmp_path / "study.yaml").write_text(STUDY.format(params=params))
    return tmp_path


@pytest.fixture
def slow_study_dir(tmp_path, tiny_params) -> Path:
    """A study whose trials (seconds each) are long enough to interrupt in the middle."""
    return _study_dir(tmp_path, tiny_params, EPOCHS)


@pytest.fixture
def study_dir(tmp_path, tiny_params) -> Path:
    """A study of tiny trials (failpoints pick the moment, not the trial's length)."""
    return _study_dir(tmp_path, tiny_params, tiny_params.model.num_epochs)


def _default_sigint() -> None:
    # A shell starts background jobs (`make test &`) with SIGINT ignored, and Python keeps
    # an inherited SIG_IGN: give the child the default a terminal would, or Ctrl-C is moot.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        OPTIMIZE,
        cwd=cwd,
        env=subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{cwd / 'mlflow.db'}", **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _study(cwd: Path) -> optuna.Study:
    return optuna.load_study(
        study_name="interrupted", storage=f"sqlite:///{cwd}/experiments/optuna.db"
    )


def _client(cwd: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")


def _completed(study: optuna.Study) -> dict[int, float]:
    return {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}


def _check_resumed(cwd: Path, before: dict[int, float], parent_id: str | None) -> None:
    """Re-run to the end and check nothing was lost, re-run or left open."""
    rerun = _start(cwd)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    study = _study(cwd)
    after = _completed(study)
    assert len(after) == 2
    assert {n: after[n] for n in before} == before  # completed trials kept, not re-run
    client = _client(cwd)
    experiment = client.get_experiment_by_name("interrupted")
    runs = client.search_runs([experiment.experiment_id])
    assert all(run.info.status != "RUNNING" for run in runs)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    if parent_id is not None:
        assert parents[0].info.run_id == parent_id
    best = read_best_params(cwd / "config" / "best_params.json")  # whole and valid
    assert best.trial_number == study.best_trial.number
    assert best.value == pytest.approx(study.best_value)
    assert best.parent_run_id == parents[0].info.run_id


def _interrupt_midway(cwd: Path, sig: int, after_trials: int) -> int:
    """Start optimize, signal it in the middle of a trial once ``after_trials`` trials are
    done (that trial has checkpointed an epoch and has most of its epochs left); return
    the trial's number."""
    proc = _start(cwd)
    interrupted = None
    # A safety net only: the loop ends on the study's state or the process's exit, so a
    # busy machine gets all the time it needs (120 s failed under load, issue 15).
    deadline = time.monotonic() + 600
    while interrupted is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.3)
        if not (cwd / "experiments" / "optuna.db").exists():
            continue
        try:
            study = _study(cwd)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # not created yet, or being created
            continue
        done = _completed(study)
        for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            # Epoch 2 reported means epoch 1 is checkpointed; far from the last epoch, so
            # there is no race with the trial's end.
            midway = 2 <= len(trial.intermediate_values) < EPOCHS // 2
            if len(done) >= after_trials and midway:
                proc.send_signal(sig)
                interrupted = trial.number
                break
    assert interrupted is not None, f"no trial to interrupt: {proc.communicate()[1][-2000:]}"
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    # One line says so: no traceback from Optuna or MLflow (progress lines start with "[").
    said = [line for line in err.splitlines() if not line.startswith("[")]
    assert said == ["interrupted: run the same `tagifai optimize` command again to resume"], err
    return interrupted


def _check_interrupted(cwd: Path, number: int) -> tuple[optuna.trial.FrozenTrial, int]:
    """The interrupted trial is failed, its run KILLED (once) and named, a copy queued, its
    checkpoint kept; return the copy and the epoch the checkpoint holds."""
    study = _study(cwd)
    trial = study.trials[number]
    assert trial.state == optuna.trial.TrialState.FAIL and trial.user_attrs["interrupted"]
    client = _client(cwd)
    run = client.get_run(trial.system_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.info.run_name == f"trial-{number}"
    assert run.data.tags["state"] == "INTERRUPTED"
    (queued,) = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert queued.system_attrs["retry_history"] == [number]
    assert queued.params == trial.params  # the same trial, to go on from its checkpoint
    assert (
        f"trial {queued.number} goes on from its checkpoint" in run.data.tags["mlflow.note.content"]
    )
    (checkpoint,) = (cwd / "experiments" / "checkpoints").rglob(f"{number}.pt")
    epoch = int(torch.load(checkpoint, weights_only=True)["epoch"])
    assert 1 <= epoch < EPOCHS
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    assert client.get_run(parent_id).info.status == "KILLED"
    return queued, epoch


def _check_went_on(cwd: Path, number: int, epoch: int) -> None:
    """The copy of interrupted trial ``number`` went on from its checkpoint after ``epoch``:
    every step reported once, the first ``epoch`` of them the interrupted attempt's."""
    study = _study(cwd)
    first = study.trials[number]
    (retry,) = [t for t in study.trials if t.system_attrs.get("retry_history") == [number]]
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumed_from"] == {"trial": number, "epoch": epoch}
    assert retry.user_attrs["epochs_trained"] == retry.user_attrs["epochs"] - epoch
    assert sorted(retry.intermediate_values) == list(range(1, retry.user_attrs["epochs"] + 1))
    for step in range(1, epoch + 1):
        assert retry.intermediate_values[step] == first.intermediate_values[step]
    run = _client(cwd).get_run(retry.system_attrs["mlflow_run_id"])
    assert run.info.run_name == f"trial-{retry.number}"
    assert run.data.tags["tagifai.retry_of_run"] == first.system_attrs["mlflow_run_id"]
    assert not list((cwd / "experiments" / "checkpoints").rglob("*.pt"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_trial_goes_on_from_its_checkpoint(slow_study_dir, sig):
    """Ctrl-C or SIGTERM mid-trial, then the same command: the trial goes on from the
    epoch it last finished, exactly as a dead worker's trial is retried."""
    number = _interrupt_midway(slow_study_dir, sig, after_trials=1)
    _, epoch = _check_interrupted(slow_study_dir, number)
    parent_id = _study(slow_study_dir).user_attrs["mlflow_parent_run_id"]
    _check_resumed(slow_study_dir, _completed(_study(slow_study_dir)), parent_id)
    _check_went_on(slow_study_dir, number, epoch)


def test_an_interrupted_queued_trial_is_run_again(slow_study_dir):
    """The study's queued known-good trial, interrupted, is neither lost nor sampled anew."""
    config = slow_study_dir / "study.yaml"
    config.write_text(
        config.read_text() + "initial_trials:\n  - {architecture: ngram, dropout_p: 0.2}\n"
    )
    number = _interrupt_midway(slow_study_dir, signal.SIGINT, after_trials=0)
    assert number == 0
    queued, epoch = _check_interrupted(slow_study_dir, number)
    assert queued.params == {"architecture": "ngram", "dropout_p": 0.2}
    _check_resumed(slow_study_dir, {}, _study(slow_study_dir).user_attrs["mlflow_parent_run_id"])
    _check_went_on(slow_study_dir, number, epoch)


@pytest.mark.parametrize("point", ["trial", "summary", "write:config/best_params.json"])
def test_sigkill_at_a_failpoint_then_rerun_finishes(study_dir, point):
    best = study_dir / "config" / "best_params.json"
    best.parent.mkdir(exist_ok=True)
    old = '{"from": "an earlier study"}\n'
    best.write_text(old)
    proc = _start(study_dir, TAGIFAI_FAILPOINT=point)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert best.read_text() == old  # the earlier file, whole, until the new one is renamed in
    if point.startswith("write:"):
        # Killed between writing the new content and renaming it into place.
        (written,) = best.parent.glob(".best_params.json.*.tmp")
        assert json.loads(written.read_text())["study_name"] == "interrupted"
    study = _study(study_dir)
    before = _completed(study)
    if point == "trial":
        assert study.trials[-1].state == optuna.trial.TrialState.RUNNING  # died inside it
    else:
        assert len(before) == 2  # every trial was done; the summary was not
    _check_resumed(study_dir, before, study.user_attrs.get("mlflow_parent_run_id"))


def test_a_killed_train_leaves_its_run_to_the_next_command(tmp_path, tiny_params_file):
    """SIGKILL mid-training cannot end the run; the next train on this host closes it."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    train = [
        sys.executable,
        "-m",
        "tagifai.cli",
        "train",
        "--params",
        str(tiny_params_file),
        "--experiment-name",
        "killed",
    ]
    env = subprocess_env(MLFLOW_TRACKING_URI=store, TAGIFAI_FAILPOINT="epoch")
    killed = subprocess.run(train, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("killed")
    (left,) = client.search_runs([experiment.experiment_id])
    assert left.info.status == "RUNNING"
    pid = left.data.tags["tagifai.pid"]

    again = subprocess.run(
        train,
        cwd=tmp_path,
        env=subprocess_env(MLFLOW_TRACKING_URI=store),
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert "closed 1 run(s) FAILED" in again.stderr and left.info.run_id in again.stderr
    closed = client.get_run(left.info.run_id)
    assert closed.info.status == "FAILED"
    assert f"process {pid} on" in closed.data.tags["tagifai.closed_by"]
    statuses = sorted(r.info.status for r in client.search_runs([experiment.experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs: a disk that really fills up (mounting needs root, as in CI)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Write zeros until the disk refuses; return the file that holds them."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * (1 << 20))
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_full_disk_stops_the_study_with_one_line(small_disk, tiny_params):
    """The disk fills up mid-study: one line, no traceback; after freeing space the same
    command finishes the study, keeps the completed trial and closes every run."""
    cwd = _study_dir(small_disk, tiny_params, EPOCHS)
    (cwd / "study.yaml").write_text(
        (cwd / "study.yaml").read_text().replace("n_trials: 2", "n_trials: 30")
    )
    proc = _start(cwd)
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait for the first trial to end, then fill the disk
        seen.append(line)
        if "trial 0 complete" in line:
            break
    else:
        pytest.fail(f"optimize ended before its first trial did: {''.join(seen)[-2000:]}")
    filler = _fill(small_disk)
    _, rest = proc.communicate(timeout=600)
    err = "".join(seen) + rest
    assert proc.returncode == 1, err[-3000:]
    said = [line for line in err.splitlines() if not line.startswith("[")]
    assert len(said) == 1, err[-3000:]
    assert said[0].startswith("error: no space left") and "`tagifai optimize`" in said[0]

    filler.unlink()
    before = _completed(_study(cwd))
    assert 0 in before
    rerun = subprocess.run(
        [*OPTIMIZE, "--n-trials", str(len(before) + 1)],
        cwd=cwd,
        env=subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{cwd / 'mlflow.db'}"),
        capture_output=True,
        text=True,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _completed(_study(cwd))
    assert {n: after[n] for n in before} == before
    client = _client(cwd)
    experiment = client.get_experiment_by_name("interrupted")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FINISHED"]
