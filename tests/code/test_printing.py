"""What is printed is never interpreted: file names holding Rich markup (``[/x]``,
``[bold]``) or terminal escape codes are printed as they are, through the real CLI.

Each command runs as a user runs it (a ``tagifai`` process in its own folder and
store) and must exit with its usual code, print no traceback and no raw control
character, and show the name literally (its control characters written out, e.g.
``\\x1b``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO, TINY, TINY_STUDY_YAML, subprocess_env

pytestmark = pytest.mark.training

# Markup that Rich would read as a closing tag (a MarkupError) or a style (the name
# printed without it), and an escape code that would turn the terminal red. "[/" makes
# a folder "NAME[" in a path: the tests make it first.
MARKUP = "[/x][bold]"
ESCAPE = "\x1b[31m"
SHOWN_ESCAPE = "\\x1b[31m"  # how it is printed


@dataclass(frozen=True)
class Store:
    """A folder with its own MLflow store, one trained text model and one study."""

    folder: Path
    run_id: str
    study: str


def _tagifai(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tagifai ARGS`` in ``folder`` against its store."""
    return subprocess.run(
        [str(REPO / ".venv" / "bin" / "tagifai"), *args],
        cwd=folder,
        env=subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}"),
        capture_output=True,
        text=True,
        timeout=600,  # a safety net for a busy machine
    )


def _shown_as_it_is(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The output of a command that must exit with ``code``, with no traceback and no
    raw control character."""
    output = done.stdout + done.stderr
    assert done.returncode == code, output[-3000:]
    assert "Traceback" not in output and "MarkupError" not in output, output[-3000:]
    assert "\x1b" not in output, output[-3000:]
    return output


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    folder = tmp_path_factory.mktemp("printing")
    (folder / "tiny.json").write_text(json.dumps(TINY))
    trained = _tagifai(folder, "train", "--params", "tiny.json")
    assert trained.returncode == 0, trained.stderr[-3000:]
    run_id = trained.stdout.split("run_id: ", 1)[1].split()[0]
    config = TINY_STUDY_YAML.format(name="printing", n_trials=1, params=folder / "tiny.json")
    (folder / "study.yaml").write_text(config)
    studied = _tagifai(folder, "optimize", "--config", "study.yaml")
    assert studied.returncode == 0, studied.stderr[-3000:]
    yield Store(folder, run_id, "printing")


def test_predict_output_and_input_names_are_printed_literally(store: Store) -> None:
    source = f"in{MARKUP}{ESCAPE}.jsonl"
    (store.folder / "in[").mkdir()
    (store.folder / "out[").mkdir()
    (store.folder / source).write_text('{"text": "YOLO finds cars"}\n')
    output = f"out{MARKUP}{ESCAPE}.jsonl"
    done = _tagifai(
        store.folder, "predict", "--run-id", store.run_id, "--file", source, "--output", output
    )
    shown = _shown_as_it_is(done, 0)
    assert f"wrote 1 predictions to out{MARKUP}{SHOWN_ESCAPE}.jsonl" in shown
    assert json.loads((store.folder / output).read_text())["tags"] is not None

    missing = f"gone{MARKUP}{ESCAPE}.jsonl"
    done = _tagifai(store.folder, "predict", "--run-id", store.run_id, "--file", missing)
    shown = _shown_as_it_is(done, 2)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and f"gone{MARKUP}{SHOWN_ESCAPE}.jsonl" in lines[0], lines


def test_check_model_names_a_model_folder_literally(store: Store) -> None:
    import mlflow

    folder = store.folder / f"model{MARKUP}{ESCAPE}"
    folder.mkdir(parents=True)
    mlflow.set_tracking_uri(f"sqlite:///{store.folder / 'mlflow.db'}")
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{store.run_id}/model", dst_path=str(folder)
    )
    done = _tagifai(store.folder, "check-model", local)
    shown = _shown_as_it_is(done, 0)
    literal = local.replace(ESCAPE, SHOWN_ESCAPE)
    assert f"{literal}: a tagifai text model, ready to serve" in shown

    done = _tagifai(store.folder, "check-model", str(store.folder / f"none{MARKUP}{ESCAPE}"))
    shown = _shown_as_it_is(done, 2)
    assert f"none{MARKUP}{SHOWN_ESCAPE}" in done.stderr and len(done.stderr.splitlines()) == 1


def test_report_output_name_is_printed_literally(store: Store) -> None:
    output = f"report{MARKUP}{ESCAPE}.html"
    (store.folder / "report[").mkdir()
    done = _tagifai(store.folder, "report", "--study", store.study, "--output", output)
    shown = _shown_as_it_is(done, 0)
    assert f"wrote report{MARKUP}{SHOWN_ESCAPE}.html (" in shown
    assert (store.folder / output).is_file()

    done = _tagifai(store.folder, "report", "--study", store.study, "--output", f"r{ESCAPE}.txt")
    shown = _shown_as_it_is(done, 2)
    assert f"--output: r{SHOWN_ESCAPE}.txt is not an .html file" in done.stderr


def test_a_logged_warning_shows_a_file_name_literally(store: Store) -> None:
    """A warning that names a file (a taxonomy parent that is not a tag) is logged with
    the name's control characters written out."""
    tags = json.loads((REPO / "tagifai" / "sample_data" / "tags.json").read_text())
    tags[0]["parents"] = ["no-such-tag"]
    name = f"tags{MARKUP}{ESCAPE}.json"
    (store.folder / "tags[").mkdir()
    (store.folder / name).write_text(json.dumps(tags))
    done = _tagifai(store.folder, "train", "--params", "tiny.json", "--tags", name)
    _shown_as_it_is(done, 0)
    assert f"tags{MARKUP}{SHOWN_ESCAPE}.json: ignoring 1 parent(s)" in done.stderr, done.stderr
