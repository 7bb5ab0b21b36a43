"""What a user is told to run next works as printed: make targets, with the study's stores."""

from __future__ import annotations

import pytest

from tagifai import study, tracking
from tagifai.cli import _next_commands
from tagifai.errors import TagifaiError
from tagifai.logged_models import download_model

# -- what a user is told to run next works as printed ----------------------------------


def test_next_commands_after_a_study_on_the_project_stores_are_plain_make_targets(workdir):
    lines = _next_commands("tagifai", "text", study.DEFAULT_STORAGE, tracking.configure())
    commands = [line.split("  #")[0].strip() for line in lines]
    assert commands == [
        "make train-best TASK=text STUDY=tagifai",
        "make report STUDY=tagifai",
        "make dashboard",
        "make ui",
    ]


def test_next_commands_after_a_parallel_study_carry_its_stores():
    storage = "postgresql://postgres@127.0.0.1:5433/optuna"
    lines = _next_commands("tagifai-parallel", "images", storage, "http://127.0.0.1:5002")
    stores = f"STORAGE={storage} MLFLOW_TRACKING_URI=http://127.0.0.1:5002"
    assert lines[0].startswith(f"make train-best TASK=images STUDY=tagifai-parallel {stores}  #")
    assert lines[1].startswith(f"make report STUDY=tagifai-parallel {stores}  #")
    assert lines[2].startswith(f"make dashboard STORAGE={storage}  #")
    assert lines[3] == "# MLflow UI: http://127.0.0.1:5002"  # a server has its own UI


def test_next_commands_quote_what_the_shell_would_split(workdir):
    storage = "sqlite:///my studies/optuna.db"
    lines = _next_commands("s", "text", storage, "sqlite:///other store.db")
    assert "STORAGE='sqlite:///my studies/optuna.db'" in lines[0]
    assert "MLFLOW_TRACKING_URI='sqlite:///other store.db'" in lines[0]
    assert lines[3].startswith("make ui MLFLOW_TRACKING_URI='sqlite:///other store.db'  #")


def test_a_missing_champion_names_the_make_command_that_registers_it(workdir, tmp_path):
    tracking.configure()
    with pytest.raises(TagifaiError, match=r"make train-best TASK=images\)"):
        download_model("models:/tagifai-images@champion", tmp_path)
    with pytest.raises(TagifaiError) as unknown:  # no workload's model: no hint to give
        download_model("models:/someone-else@champion", tmp_path)
    assert "make train-best" not in str(unknown.value)
