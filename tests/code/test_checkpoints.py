"""Checkpoint-resumed retries: a worker killed mid-trial (SIGKILL, right after a checkpoint)
leaves its trial to a retry that goes on from that epoch, with every step reported once."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
from helpers import TINY, subprocess_env

from tagifai.checkpoints import CHECKPOINTS_DIR
from tagifai.training import GeneratorState, fit_epochs

pytestmark = [pytest.mark.slow, pytest.mark.training]

EPOCHS = 6
KILLED_AFTER = 3
STUDY = """
task: text
study_name: ckpt
n_trials: 1
seed: 5
params: {params}
heartbeat_interval: 1
grace_period: 2
max_retry: 1
sampler: {{name: Random}}
pruner: {{name: Nop}}
search_space:
  architecture:
    ngram:
      dropout_p: {{type: float, low: 0.3, high: 0.3}}
"""


def _optimize(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tagifai.cli", "optimize", "--config", "study.yaml"],
        env=subprocess_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_killed_trial_is_retried_from_its_checkpoint(workdir):
    params = {**TINY, "model": {**TINY["model"], "num_epochs": EPOCHS, "patience": EPOCHS}}
    (workdir / "params.json").write_text(json.dumps(params))
    (workdir / "study.yaml").write_text(STUDY.format(params=workdir / "params.json"))

    killed = _optimize(workdir, TAGIFAI_FAILPOINT=f"checkpoint:{KILLED_AFTER}")
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL, right after epoch 3's file
    # The next worker finds the dead trial (no heartbeat), fails it and runs its retry.
    done = _optimize(workdir)
    assert done.returncode == 0, done.stderr[-3000:]

    study = optuna.load_study(
        study_name="ckpt", storage=f"sqlite:///{workdir}/experiments/optuna.db"
    )
    first, retry = study.trials
    assert first.state == optuna.trial.TrialState.FAIL
    assert retry.state == optuna.trial.TrialState.COMPLETE
    assert retry.user_attrs["resumed_from"] == {"trial": 0, "epoch": KILLED_AFTER}
    # It trained only the epochs the first attempt had not finished...
    assert retry.user_attrs["epochs_trained"] == EPOCHS - KILLED_AFTER
    assert retry.user_attrs["epochs"] == EPOCHS
    # ...and reported every step once: the first attempt's three, then its own.
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))
    for step in range(1, KILLED_AFTER + 1):
        assert retry.intermediate_values[step] == first.intermediate_values[step]
    # The retry's MLflow run says whose work it continued, and holds every epoch.
    client = mlflow.MlflowClient()
    run = client.get_run(retry.system_attrs["mlflow_run_id"])
    assert run.data.tags["tagifai.retry_of_run"] == first.system_attrs["mlflow_run_id"]
    assert run.data.tags["tagifai.resumed_after_epoch"] == str(KILLED_AFTER)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch_val_f1")]
    assert sorted(steps) == list(range(1, EPOCHS + 1))
    # The trial is over: no checkpoint is left behind.
    assert not [p for p in (workdir / CHECKPOINTS_DIR).rglob("*.pt")]


class _Recorder:
    """A checkpointing reporter that keeps states in memory."""

    def __init__(self, restore_from: dict | None = None, stop_after: int | None = None) -> None:
        self.saved: list[dict] = []
        self.reported: list[tuple[int, float]] = []
        self.restore_from = restore_from
        self.stop_after = stop_after

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.reported.append((epoch, metrics["val"]))

    def restore(self) -> dict | None:
        return self.restore_from

    def save(self, state: dict) -> None:
        self.saved.append(state)
        if self.stop_after is not None and state["epoch"] == self.stop_after:
            raise KeyboardInterrupt  # the process "dies" right after this checkpoint


def _train(reporter: _Recorder) -> tuple[torch.nn.Module, list[float]]:
    """A tiny model whose epochs use the generator (batch order) and dropout (global RNG)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=torch.Generator().manual_seed(2)), torch.randn(64, 1)
    losses: list[float] = []

    def train_epoch() -> float:
        for index in torch.randperm(64, generator=generator).split(16):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
        losses.append(loss.item())
        return loss.item()

    def validate() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            return {"val": -torch.nn.functional.mse_loss(model(x), y).item()}

    fit_epochs(
        model, train_epoch, validate, monitor="val", num_epochs=EPOCHS, patience=EPOCHS,
        reporter=reporter, after_validate=lambda metrics: scheduler.step(),
        resumable={
            "optimizer": optimizer, "scheduler": scheduler, "generator": GeneratorState(generator)
        },
    )  # fmt: skip
    return model, losses


def test_a_resumed_loop_ends_where_an_uninterrupted_one_does():
    """Weights, optimizer, schedule, batch order and dropout draws all come back: the
    resumed run's remaining epochs are the uninterrupted run's, number for number."""
    whole = _Recorder()
    model, losses = _train(whole)
    died = _Recorder(stop_after=KILLED_AFTER)
    with pytest.raises(KeyboardInterrupt):
        _train(died)
    state = died.saved[-1]
    # Through bytes and back, as the file would be, with weights_only.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    restored = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    resumed = _Recorder(restore_from=restored)
    model_again, losses_again = _train(resumed)
    assert resumed.reported == whole.reported  # epochs 1-3 replayed, 4-6 trained: the same
    assert losses_again == losses[KILLED_AFTER:]  # only the missing epochs were trained
    for a, b in zip(model.state_dict().values(), model_again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
