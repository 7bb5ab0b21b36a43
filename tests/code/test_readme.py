"""The README works as written: every command of its ```bash blocks, verbatim and in order,
on a fresh clone (``scripts/readme_commands.py``), servers on the README's own ports; and
what a user is told to run next works as printed (make targets, with the study's stores).

The clone shares this test's virtual environment instead of building its own (a link at
``.venv``; the clone's ``pyproject.toml`` and ``constraints.txt`` dated before the venv's
install stamp, so ``make`` sees it built), and imports its own ``tagifai`` first
(``PYTHONPATH``), as the editable install of a fresh clone would.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from helpers import REPO
from typer.testing import CliRunner

from tagifai import study, tracking
from tagifai.cli import _next_commands, app
from tagifai.errors import TagifaiError
from tagifai.logged_models import download_model

# Only these are skipped: the suite this test is part of, placeholders and the real data.
EXPECTED_SKIPS = ("the test suite, which CI runs", "a placeholder to fill in", "reads ../shared")
# Commands whose passing is the point of the README; each must have run, not been skipped.
MUST_RUN = {
    "make optimize": "PASS",
    "make train-best": "PASS",
    "make serve": "UP",
    "make optimize TASK=images": "PASS",
    "make predict TASK=images IMAGE=digit.png": "PASS",
    "make serve TASK=images": "UP",
    "make optimize-parallel": "PASS",
}


@pytest.fixture
def clone() -> Iterator[Path]:
    """A clone of this checkout's HEAD sharing its venv, in a folder PostgreSQL's own user
    can enter (``make servers-start`` keeps its cluster in the clone's ``.servers``)."""
    venv = Path(sys.prefix)
    stamp = venv / ".installed"
    if venv == Path(sys.base_prefix) or not stamp.is_file():
        pytest.skip("needs the project's .venv, built by make install")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        if os.environ.get("TAGIFAI_REQUIRE_SERVERS") == "1":
            pytest.fail("PostgreSQL is not installed (.ci/run installs postgresql-15)")
        pytest.skip("PostgreSQL is not installed (the README's make servers-start needs it)")
    root = Path(tempfile.mkdtemp(prefix="tagifai-readme-", dir="/tmp"))
    root.chmod(0o755)
    target = root / "clone"
    try:
        subprocess.run(
            ["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(target)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        (target / ".venv").symlink_to(venv)
        built = stamp.stat().st_mtime - 1
        for name in ("pyproject.toml", "constraints.txt"):
            os.utime(target / name, (built, built))
        yield target
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.training
def test_every_readme_command_works_verbatim_on_a_fresh_clone(clone):
    env = {**os.environ, "PYTHONPATH": str(clone)}
    done = subprocess.run(
        [sys.executable, str(clone / "scripts" / "readme_commands.py"), str(clone)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=3600,  # a safety net: the script waits on each command and port
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    lines = re.findall(r"^\[\s*\d+\] (\w+)\s+(?:[\d.]+s)?\s+(.*)$", done.stdout, re.M)
    seen: dict[str, str] = {}  # command -> PASS / UP / SKIP
    for result, rest in lines:
        command, _, note = rest.partition("  (")
        seen.setdefault(command.strip(), result)
        if result == "SKIP":
            assert note.startswith(EXPECTED_SKIPS), rest
    for command, result in MUST_RUN.items():
        assert seen.get(command) == result, (command, output[-6000:])
    parallel = "make train-best report STUDY=tagifai-parallel STORAGE="  # the README's stores
    assert [r for c, r in seen.items() if c.startswith(parallel)] == ["PASS"], output[-6000:]
    assert "README:" in done.stdout and " 0 passed" not in done.stdout
    # Everything the commands wrote is an ignored output: the clone is as clean as cloned.
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True
    )
    assert status.stdout == "", status.stdout


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


def test_next_commands_keep_a_dollar_from_make(workdir):
    lines = _next_commands("s", "text", "postgresql://u:pa$s@127.0.0.1/optuna", "http://h:1")
    assert "STORAGE='postgresql://u:pa$$s@127.0.0.1/optuna'" in lines[0]


def test_the_report_names_train_best_with_the_studys_own_storage(workdir, tmp_path):
    storage = f"sqlite:///{tmp_path}/studies.db"
    made = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    made.set_user_attr("task", "images")
    made.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    output = tmp_path / "s.html"
    args = ["report", "--study", "s", "--storage", storage, "--output", str(output)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    page = html.unescape(output.read_text(encoding="utf-8"))
    assert f"make train-best TASK=images STUDY=s STORAGE={storage}" in page


def test_a_missing_champion_names_the_make_command_that_registers_it(workdir, tmp_path):
    tracking.configure()
    with pytest.raises(TagifaiError, match=r"make train-best TASK=images\)"):
        download_model("models:/tagifai-images@champion", tmp_path)
    with pytest.raises(TagifaiError) as unknown:  # no workload's model: no hint to give
        download_model("models:/someone-else@champion", tmp_path)
    assert "make train-best" not in str(unknown.value)
