"""A logged model runs only the code that was logged, and its files are checked before use.

A real model is trained and logged once; each test changes a copy of its files (as
anyone with write access to the artifact store could) and runs the real entry points
on it: ``tagifai check-model``, ``predict`` and ``serve`` refuse it with one line
naming the file, and a marker file the planted code would write proves none of it
ran. ``mlflow.pyfunc.load_model`` in a fresh process (importing the model's own
copy of tagifai) refuses it too. Rewriting the digests in ``MLmodel`` changes
``MLmodel``, whose digest the tracking store keeps: refused the same way. A model
whose record in the tracking store is rewritten too (as if it had been logged so)
still meets training's bounds before anything is allocated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from helpers import TINY, free_port, private_store, subprocess_env
from typer.testing import CliRunner

from tagifai import jobs, registry, tracking
from tagifai.cli import app
from tagifai.pyfunc_model import FILES_KEY, RECORD_TAG, file_digest, mlflow_file_digests
from tagifai.workloads.text.params import TextParams

TRACEBACK_MARKERS = ("Traceback", 'File "')
# Planted code: importing it writes the marker (as any code in a model could do anything).
PLANTED = "\nimport pathlib\npathlib.Path({marker!r}).write_text('planted code ran')\n"


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The files of one tiny text model, trained and logged by tagifai."""
    store = tmp_path_factory.mktemp("logged")
    with private_store(store):
        tracking.configure()
        params = TextParams.model_validate(TINY)
        dataset, splits = jobs.load_data(params, None, None)
        outcome = jobs.train_and_log(params, dataset, splits, "trust")
        folder = Path(
            mlflow.artifacts.download_artifacts(outcome.model_uri, dst_path=str(store / "model"))
        )
    yield folder


@pytest.fixture(scope="module")
def other_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tracking store that has never seen the model."""
    path = tmp_path_factory.mktemp("other") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def model(logged: Path, workdir: Path) -> Path:
    """A private copy of the logged model's files, and a tracking store to read from."""
    # A copy of an existing store: the commands read one, never create it (and a new one
    # costs seconds of migrations).
    shutil.copy(logged.parent / "mlflow.db", workdir / "mlflow.db")
    return Path(shutil.copytree(logged, workdir / "model"))


def _flip_last_byte(name: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        content = bytearray((folder / name).read_bytes())
        content[-1] ^= 0xFF
        (folder / name).write_bytes(bytes(content))

    return change


def _plant_compiled(folder: Path) -> None:
    """A compiled module: Python would run it instead of its (unchanged) source."""
    (folder / "code/tagifai/__pycache__").mkdir()
    (folder / "code/tagifai/__pycache__/pyfunc.cpython-311.pyc").write_bytes(b"\x00" * 16)


def _plant(marker: Path) -> dict[str, Callable[[Path], None]]:
    """Ways to change a model, each by one file."""

    def append(name: str, text: str) -> Callable[[Path], None]:
        def change(folder: Path) -> None:
            with (folder / name).open("a", encoding="utf-8") as handle:
                handle.write(text)

        return change

    code = PLANTED.format(marker=str(marker))
    return {
        "pyfunc_model.py": append("pyfunc_model.py", code),
        "code/tagifai/pyfunc.py": append("code/tagifai/pyfunc.py", code),
        "code/tagifai/workloads/text/models.py": append(
            "code/tagifai/workloads/text/models.py", code
        ),
        "code/tagifai/sitecustomize.py": lambda f: (f / "code/tagifai/sitecustomize.py").write_text(
            code
        ),
        "code/tagifai/errors.py": lambda f: (f / "code/tagifai/errors.py").unlink(),
        "artifacts/predictor/model.pt": _flip_last_byte("artifacts/predictor/model.pt"),
        "artifacts/predictor/predictor.json": append("artifacts/predictor/predictor.json", " "),
        "code/tagifai/__pycache__/pyfunc.cpython-311.pyc": _plant_compiled,
        "MLmodel": lambda f: _set_digests(f, None),
        "requirements.txt": append("requirements.txt", "evil-package==1.0\n"),
        "conda.yaml": lambda f: (f / "conda.yaml").unlink(),
    }


CHANGES = list(_plant(Path("x")))


def _set_digests(folder: Path, files: dict[str, str] | None) -> None:
    """Rewrite the digests in MLmodel (``None``: remove them), as an attacker could."""
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    if files is None:
        spec["metadata"].pop(FILES_KEY)
    else:
        spec["metadata"][FILES_KEY] = files
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))


def _rehash(folder: Path) -> None:
    """Record the digests of the files as they are now in ``MLmodel`` (the attacker covers
    their tracks in the artifact store)."""
    spec = yaml.safe_load((folder / "MLmodel").read_text())
    _set_digests(folder, {name: file_digest(folder / name) for name in spec["metadata"][FILES_KEY]})


def _record(folder: Path) -> None:
    """Also rewrite the tracking store's record, as if the model had been logged so."""
    model_id = yaml.safe_load((folder / "MLmodel").read_text())["model_id"]
    mlflow.MlflowClient().set_logged_model_tags(
        model_id, {RECORD_TAG: json.dumps(mlflow_file_digests(folder))}
    )


def _refused(args: list[str]) -> str:
    """Run a command that must refuse: exit 2 and one ``error:`` line, which is returned."""
    result = CliRunner().invoke(app, args)
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not any(trace in output for trace in TRACEBACK_MARKERS), output
    return lines[0]


def _commands(uri: str) -> dict[str, list[str]]:
    return {
        "check-model": ["check-model", uri],
        "predict": ["predict", "a transformer for text", "--model-uri", uri],
        "serve": ["serve", "--model-uri", uri, "--port", str(free_port())],
    }


def test_an_unchanged_model_is_ready(model: Path) -> None:
    """The control: the same commands accept the model as logged."""
    result = CliRunner().invoke(app, ["check-model", str(model)])
    assert result.exit_code == 0, result.output
    assert "ready to serve" in result.stdout
    result = CliRunner().invoke(app, _commands(str(model))["predict"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["check-model", "predict", "serve"])
@pytest.mark.parametrize("changed", CHANGES)
def test_a_changed_model_file_is_refused_before_its_code_runs(
    model: Path, workdir: Path, changed: str, command: str
) -> None:
    """Any file changed, added or removed: one line naming it, and no planted code ran."""
    marker = workdir / "planted_code_ran"
    _plant(marker)[changed](model)

    line = _refused(_commands(str(model))[command])

    assert changed in line and "refused before loading" in line, line
    assert not marker.exists(), marker.read_text()


def test_a_model_changed_in_the_registry_is_refused(workdir: Path) -> None:
    """The same through a registered version: the stored file itself is changed."""
    tracking.configure()
    params = TextParams.model_validate(TINY)
    dataset, splits = jobs.load_data(params, None, None)
    outcome = jobs.train_and_log(params, dataset, splits, "trust")
    version, *_ = registry.register_version(
        "tagifai",
        outcome.model_uri,
        outcome.run_id,
        "champion",
        "test_f1",
        outcome.score,
        "split",
        False,
        {},
        "",
        "2",
    )
    stored = Path(mlflow.artifacts.download_artifacts(outcome.model_uri))  # local store: in place
    marker = workdir / "planted_code_ran"
    with (stored / "pyfunc_model.py").open("a") as handle:
        handle.write(PLANTED.format(marker=str(marker)))
    uri = f"models:/tagifai/{version}"
    for args in _commands(uri).values():
        line = _refused(args)
        assert uri in line and "pyfunc_model.py: changed" in line, line
    assert not marker.exists()


@pytest.mark.parametrize("command", ["check-model", "predict", "serve"])
def test_rewritten_digests_are_refused(model: Path, workdir: Path, command: str) -> None:
    """Code planted and its digest rewritten in MLmodel: MLmodel itself no longer matches
    the tracking store's record."""
    marker = workdir / "planted_code_ran"
    _plant(marker)["code/tagifai/pyfunc.py"](model)
    _rehash(model)

    line = _refused(_commands(str(model))[command])

    assert "MLmodel: changed since the model was logged" in line, line
    assert "tracking store" in line, line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("other store", "is not in this tracking store"),
        ("record removed", "holds no record of its files"),
        ("model_id removed", "names no logged model"),
    ],
)
def test_a_model_without_its_record_is_refused(
    model: Path, workdir: Path, other_store: Path, change: str, expected: str
) -> None:
    """The record is read from the tracking store the model was logged to: a model read
    against another store, one whose record is gone, or an MLmodel naming no logged
    model is refused, and the model's code has not run."""
    marker = workdir / "planted_code_ran"
    _plant(marker)["pyfunc_model.py"](model)
    model_id = yaml.safe_load((model / "MLmodel").read_text())["model_id"]
    if change == "other store":
        shutil.copy(other_store, workdir / "mlflow.db")
    elif change == "record removed":
        mlflow.MlflowClient().delete_logged_model_tag(model_id, RECORD_TAG)
    else:
        spec = yaml.safe_load((model / "MLmodel").read_text())
        del spec["model_id"]
        (model / "MLmodel").write_text(yaml.safe_dump(spec))

    line = _refused(_commands(str(model))["check-model"])

    assert expected in line, line
    assert not marker.exists()


LOAD_IN_A_FRESH_PROCESS = """
import sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
import tagifai
print("tagifai from", tagifai.__file__)
print(model.predict({"text": "a transformer for text"}).iloc[0]["tags"])
"""


def _load_in_a_fresh_process(folder: Path) -> subprocess.CompletedProcess[str]:
    """``mlflow.pyfunc.load_model`` where tagifai is the model's own copy (``code/``), with
    Python free to write compiled files."""
    env = subprocess_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_FRESH_PROCESS, str(folder)],
        cwd=folder.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mlflow_loads_the_logged_model_with_its_own_code(model: Path) -> None:
    """The control for the next test: MLflow's loader imports the model's copy of tagifai,
    twice (Python's compiled files do not count as a change)."""
    for _ in range(2):
        result = _load_in_a_fresh_process(model)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"tagifai from {model / 'code' / 'tagifai'}" in result.stdout, result.stdout
    # Python compiled the entry file before it ran (and before any check could); nothing
    # of the package: its code is read from the checked sources only.
    assert not list((model / "code").rglob("*.pyc"))
    line = _refused(["check-model", str(model)])  # from outside, the compiled entry is not
    assert "__pycache__/pyfunc_model." in line, line  # trusted: it would run instead


@pytest.mark.parametrize(
    "changed", ["code/tagifai/pyfunc.py", "code/tagifai/sitecustomize.py", "code/tagifai/errors.py"]
)
def test_mlflow_load_model_refuses_a_changed_model(
    model: Path, workdir: Path, changed: str
) -> None:
    """MLflow's own loader (what `mlflow models serve` runs) checks before it imports."""
    marker = workdir / "planted_code_ran"
    _plant(marker)[changed](model)

    result = _load_in_a_fresh_process(model)

    assert result.returncode != 0, result.stdout
    assert f"{changed}: " in result.stderr and "refused before loading" in result.stderr
    assert not marker.exists()


def test_mlflow_load_model_refuses_rewritten_digests(model: Path, workdir: Path) -> None:
    """MLflow's own loader reads the tracking store's record too (the store the model
    was logged to: the one in ``MLFLOW_TRACKING_URI``, as `mlflow models serve` reads)."""
    marker = workdir / "planted_code_ran"
    _plant(marker)["code/tagifai/pyfunc.py"](model)
    _rehash(model)

    result = _load_in_a_fresh_process(model)

    assert result.returncode != 0, result.stdout
    assert "MLmodel: changed since the model was logged" in result.stderr, result.stderr[-2000:]
    assert not marker.exists()


class _Planted:
    """Unpickling this writes the marker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (Path.write_text, (Path(self.marker), "unpickled"))  # type: ignore[return-value]


def _json_edit(name: str, edit: Callable[[dict], None]) -> Callable[[Path, Path], None]:
    def change(folder: Path, marker: Path) -> None:
        path = folder / "artifacts" / "predictor" / name
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))

    return change


def _huge_image_mlp(folder: Path, marker: Path) -> None:
    predictor = folder / "artifacts" / "predictor"
    stored = json.loads((predictor / "predictor.json").read_text())
    stored["task"] = "images"
    stored["params"] = {
        "task": "images",
        "data": {"image_size": 512},
        "model": {"architecture": "mlp", "num_layers": 8, "hidden_units": 8192},
    }
    stored["decision"] = {"kind": "confidence", "thresholds": [0.5]}
    (predictor / "predictor.json").write_text(json.dumps(stored))
    encoder = {"kind": "image", "height": 512, "width": 512, "mean": 0.5, "std": 0.2}
    (predictor / "encoder.json").write_text(json.dumps(encoder))


def _grey_background(folder: Path, marker: Path) -> None:
    """A small image model whose encoder records a background that is no background."""
    predictor = folder / "artifacts" / "predictor"
    stored = json.loads((predictor / "predictor.json").read_text())
    stored["task"] = "images"
    stored["params"] = {
        "task": "images",
        "data": {"image_size": 8},
        "model": {"architecture": "mlp"},
    }
    stored["decision"] = {"kind": "confidence", "thresholds": [0.5]}
    (predictor / "predictor.json").write_text(json.dumps(stored))
    encoder = {"kind": "image", "height": 8, "width": 8, "mean": 0.5, "std": 0.2}
    (predictor / "encoder.json").write_text(json.dumps({**encoder, "background": "grey"}))


def _weights(edit: Callable[[dict, Path], object]) -> Callable[[Path, Path], None]:
    def change(folder: Path, marker: Path) -> None:
        path = folder / "artifacts" / "predictor" / "model.pt"
        state = torch.load(path, weights_only=True)
        torch.save(edit(state, marker), path)

    return change


def _reshape_first(state: dict, marker: Path) -> dict:
    key = next(iter(state))
    return {**state, key: torch.zeros(3, 5)}


BOUNDS = {
    "an 8x8192 MLP on 512x512 images": (_huge_image_mlp, "over the limit of 100,000,000"),
    "an image background neither dark nor light": (
        _grey_background,
        "encoder.json: background 'grey' must be 'dark', 'light' or null",
    ),
    "5 thresholds for 12 tags": (
        _json_edit("predictor.json", lambda d: d["decision"].update(thresholds=[0.5] * 5)),
        "decision: 5 thresholds for 12 classes",
    ),
    "a duplicate class": (
        _json_edit("predictor.json", lambda d: d["classes"].__setitem__(1, d["classes"][0])),
        "appears twice",
    ),
    "a size out of bounds": (
        _json_edit("predictor.json", lambda d: d["params"]["model"].update(hidden_dim=10**9)),
        "hidden_dim",
    ),
    "an idf too short": (
        _json_edit("encoder.json", lambda d: d.update(idf=d["idf"][:-1])),
        "encoder.json: idf: expected",
    ),
    "a tokenizer for an n-gram model": (
        _json_edit(
            "encoder.json",
            lambda d: (
                d.clear(),
                d.update(kind="tokenizer", char_level=False, max_length=8, token_to_index={}),
            ),
        ),
        "encoder.json: not an encoder for architecture 'ngram'",
    ),
    "wrong weight shapes": (_weights(_reshape_first), "shape (3, 5), the network's is"),
    "a weight missing": (
        _weights(lambda state, marker: dict(list(state.items())[1:])),
        ": missing",
    ),
    "a pickled model.pt": (
        _weights(lambda state, marker: {**state, "x": _Planted(str(marker))}),
        "model.pt: not a file of plain weights",
    ),
}


@pytest.mark.parametrize("case", list(BOUNDS))
def test_predictor_files_meet_the_training_bounds(model: Path, workdir: Path, case: str) -> None:
    """Files changed and their digests rewritten to match: still one line each, before any
    allocation or unpickling (the marker proves the pickle never ran)."""
    change, expected = BOUNDS[case]
    marker = workdir / "planted_code_ran"
    change(model, marker)
    _rehash(model)
    _record(model)

    line = _refused(_commands(str(model))["predict"])

    assert expected in line, line
    assert not marker.exists()
