"""Bad input through the real CLI: exit code 2, one ``error:`` line, no traceback, no writes.

Each case writes its bad files into the test's ``workdir`` (own cwd, own sqlite
MLflow store), runs one ``tagifai`` command in-process and checks that:

- the exit code is 2;
- stderr is exactly one line, ``error: ...``, naming the file / field / value;
- no traceback appears anywhere in the output;
- nothing was written: no MLflow store, no ``experiments/`` (so no Optuna study
  either, its default storage lives there), no ``config/best_params.json``.

Cases that need a trained model use one tiny model trained once per module, its
MLflow store copied into the test's workdir; they check instead that the number
of runs did not change and that no file appeared.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from helpers import TINY, private_store
from typer.testing import CliRunner

from tagifai.cli import app
from tagifai.config import SAMPLE_DATA_DIR
from tagifai.errors import MAX_MESSAGE_CHARS
from tagifai.workloads.text.params import TextParams

UNKNOWN_RUN = "deadbeef" * 4
TRACEBACK_MARKERS = ("Traceback", 'File "')

Content = str | bytes | Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Case:
    """One bad invocation.

    Attributes:
        args: CLI arguments; ``{tiny}``, ``{sample}`` and ``{run_id}`` are filled in.
        expected: Substrings the one stderr line must contain.
        files: Files written into the workdir first (name -> content; a callable
            gets the tiny params as a dict and returns the text).
        model: Run against a store holding the module's trained model.
    """

    args: tuple[str, ...]
    expected: tuple[str, ...]
    files: dict[str, Content] = field(default_factory=dict)
    model: bool = False


def case(
    case_id: str,
    *args: str,
    expected: tuple[str, ...],
    files: dict[str, Content] | None = None,
    model: bool = False,
    xfail: pytest.MarkDecorator | None = None,
    without: str | None = None,
) -> Any:
    """A ``pytest.param`` of one :class:`Case`; model cases are marked ``training``;
    ``without`` names a module the case needs absent (skipped where it is installed)."""
    absent = without and pytest.mark.skipif(
        importlib.util.find_spec(without) is not None, reason=f"{without} is installed"
    )
    marks = [mark for mark in (xfail, absent, model and pytest.mark.training) if mark]
    return pytest.param(Case(args, expected, files or {}, model), id=case_id, marks=marks)


def tiny_with(
    data: dict[str, Any] | None = None, model: dict[str, Any] | None = None, **top: Any
) -> Callable[[dict[str, Any]], str]:
    """A params file: the tiny params with overrides of their ``data``, ``model`` and
    top-level keys (bad values allowed)."""

    def write(tiny: dict[str, Any]) -> str:
        merged = {**tiny, **top}
        merged["data"] = {**tiny["data"], **(data or {})}
        merged["model"] = {**tiny["model"], **(model or {})}
        return json.dumps(merged)

    return write


def ngram_space(**space: Any) -> dict[str, Any]:
    """A study's ``search_space`` over the ngram architecture only."""
    return {"architecture": {"ngram": space}}


def study(**overrides: Any) -> str:
    """A cheap valid study YAML (base params: the tiny ones) with ``overrides``."""
    base: dict[str, Any] = {
        "task": "text",
        "study_name": "bad-input",
        "n_trials": 1,
        "params": "{tiny}",
        "sampler": {"name": "Random"},
        "pruner": {"name": "Nop"},
        "search_space": ngram_space(
            dropout_p={"type": "float", "low": 0.0, "high": 0.2, "step": 0.1}
        ),
    }
    return yaml.safe_dump({**base, **overrides})


def project(number: int, **fields: Any) -> dict[str, Any]:
    """A valid project row (two tags alternate, so two classes survive filtering)."""
    tag = "nlp" if number % 2 else "vision"
    row = {"id": number, "title": f"Project {number}", "description": "A model.", "tags": [tag]}
    return {**row, **fields}


def projects(count: int = 12, **second_row: Any) -> str:
    """A projects.json of ``count`` valid rows, the second one overridden."""
    rows = [project(number) for number in range(1, count + 1)]
    rows[1] = project(2, **second_row)
    return json.dumps(rows)


def best_params(**overrides: Any) -> Callable[[dict[str, Any]], str]:
    """A best-params file of the tiny params with top-level ``overrides`` (bad ones too)."""

    def write(tiny: dict[str, Any]) -> str:
        record = {
            "schema_version": 2,
            "task": "text",
            "study_name": "bad-input",
            "metric": "val_f1",
            "direction": "maximize",
            "value": 0.5,
            "trial_number": 0,
            "data_digest": "0" * 16,
            "tuned": {},
            "params": tiny,
            "decision": {"kind": "threshold", "thresholds": [0.5]},
        }
        return json.dumps({**record, **overrides})

    return write


def train(*extra: str) -> tuple[str, ...]:
    """``tagifai train`` on the tiny params."""
    return ("train", "--params", "{tiny}", *extra)


CASES = [
    # --- data: tagifai train --data FILE [--tags FILE] --------------------------------
    case(
        "data-missing-file", *train("--data", "nope.json"), expected=("nope.json: file not found",)
    ),
    case(
        "data-not-utf8",
        *train("--data", "latin1.json"),
        files={"latin1.json": b'[{"id": 1, "title": "caf\xe9"}]'},
        expected=("latin1.json", "not UTF-8"),
    ),
    case(
        "data-invalid-json",
        *train("--data", "broken.json"),
        files={"broken.json": '[{"id": 1,'},
        expected=("broken.json", "invalid JSON at line 1"),
    ),
    case(
        "data-json-not-a-list",
        *train("--data", "object.json"),
        files={"object.json": json.dumps(project(1))},
        expected=("object.json", "expected a JSON list of project objects"),
    ),
    case(
        "data-csv-missing-column",
        *train("--data", "projects.csv"),
        files={"projects.csv": 'id,description,tags\n1,A model.,"[""nlp""]"\n'},
        expected=("projects.csv", "missing column 'title'"),
    ),
    case(
        "data-json-missing-description",
        *train("--data", "nodesc.json"),
        files={"nodesc.json": json.dumps([{"id": 1, "title": "t", "tags": ["nlp"]}])},
        expected=("nodesc.json", "missing column 'description'"),
    ),
    case(
        "data-tags-not-a-list",
        *train("--data", "tags_str.json"),
        files={"tags_str.json": projects(tags="nlp")},
        expected=("tags_str.json", "row 2", "tags: expected a list of strings", "'nlp'"),
    ),
    case(
        "data-id-not-int",
        *train("--data", "id_abc.json"),
        files={"id_abc.json": projects(id="abc")},
        expected=("id_abc.json", "row 2", "id: expected an integer", "'abc'"),
    ),
    case(
        "data-duplicate-id",
        *train("--data", "dupes.json"),
        files={"dupes.json": projects(id=1)},
        expected=("dupes.json", "duplicate id 1 (first at row 1)"),
    ),
    case(
        "data-blank-text",
        *train("--data", "blank.json"),
        files={"blank.json": projects(title="   ", description="\t \n")},
        expected=("blank.json", "row 2 (id 2)", "empty text"),
    ),
    case(
        "taxonomy-unknown-parent",
        "train",
        "--params",
        "parents.json",
        "--data",
        "{sample}",
        "--tags",
        "tax.json",
        files={
            "parents.json": tiny_with(data={"add_parent_tags": True}),
            "tax.json": json.dumps([{"tag": "nlp", "parents": ["nowhere"]}, {"tag": "vision"}]),
        },
        expected=("tax.json", "tag 'nlp'", "parent 'nowhere' is not a tag"),
    ),
    case(
        "taxonomy-duplicate-tag",
        *train("--data", "{sample}", "--tags", "tax.json"),
        files={"tax.json": json.dumps([{"tag": "nlp"}, {"tag": "vision"}, {"tag": "nlp"}])},
        expected=("tax.json", "row 3 (nlp)", "duplicate tag"),
    ),
    case(
        "taxonomy-alias-clash",
        *train("--data", "{sample}", "--tags", "tax.json"),
        files={
            "tax.json": json.dumps(
                [{"tag": "nlp", "aliases": ["text"]}, {"tag": "vision", "aliases": ["text"]}]
            )
        },
        expected=("tax.json", "alias 'text' already belongs to 'nlp'"),
    ),
    case(
        "taxonomy-alias-is-a-tag",
        *train("--data", "{sample}", "--tags", "tax.json"),
        files={"tax.json": json.dumps([{"tag": "nlp", "aliases": ["vision"]}, {"tag": "vision"}])},
        expected=("tax.json", "alias 'vision' of 'nlp' is also a tag"),
    ),
    case(
        "data-fewer-than-two-classes",
        "train",
        "--params",
        "rare.json",
        "--data",
        "{sample}",
        files={"rare.json": tiny_with(data={"min_tag_freq": 100_000})},
        expected=("projects.json", "min_tag_freq=100000", "need at least 2 classes"),
    ),
    case(
        "data-too-few-rows",
        "train",
        "--params",
        "freq1.json",
        "--data",
        "five.json",
        files={"freq1.json": tiny_with(data={"min_tag_freq": 1}), "five.json": projects(5)},
        expected=("five.json", "5 projects are too few to split"),
    ),
    # --- params: tagifai train --params FILE ------------------------------------------
    case(
        "params-unknown-key",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(bogus_knob=1)},
        expected=("p.json", "bogus_knob: unknown key"),
    ),
    case(
        "params-wrong-type",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"batch_size": "big"})},
        expected=("p.json", "model.batch_size", "'big'"),
    ),
    case(
        "params-negative-lr",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"lr": -0.1})},
        expected=("p.json", "model.lr: Input should be greater than 0", "-0.1"),
    ),
    case(
        "params-dropout-one",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"dropout_p": 1.0})},
        expected=("p.json", "model.dropout_p: Input should be less than 1", "1.0"),
    ),
    case(
        "params-no-room-for-test",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(data={"train_size": 0.8, "val_size": 0.2})},
        expected=("p.json", "data: train_size + val_size must leave room", "0.8 + 0.2"),
    ),
    case(
        "params-invalid-json",
        "train",
        "--params",
        "p.json",
        files={"p.json": '{"task": "text",\n "model": }'},
        expected=("p.json", "invalid JSON at line 2"),
    ),
    case(
        "params-unknown-optimizer",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"optimizer": "sgdx"})},
        expected=("p.json", "model.optimizer", "'sgdx'"),
    ),
    case(
        "params-negative-seed",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(seed=-1)},
        expected=("p.json", "seed: Input should be greater than or equal to 0", "(got -1)"),
    ),
    # --- study config: tagifai optimize --config FILE ---------------------------------
    case(
        "study-missing-file",
        "optimize",
        "--config",
        "nope.yaml",
        expected=("nope.yaml: file not found",),
    ),
    case(
        "study-invalid-yaml",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": "study_name: bad\nsampler: {name: TPE\nn_trials: 3\n"},
        expected=("s.yaml", "invalid YAML at line"),
    ),
    case(
        "study-invalid-json",
        "optimize",
        "--config",
        "s.json",
        files={"s.json": '{"study_name": "bad", }'},
        expected=("s.json", "invalid JSON at line 1"),
    ),
    case(
        "study-unknown-key",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(n_trails=3)},
        expected=("s.yaml", "n_trails: unknown key"),
    ),
    case(
        "study-low-above-high",
        "optimize",
        "--config",
        "s.yaml",
        files={
            "s.yaml": study(search_space=ngram_space(lr={"type": "float", "low": 0.5, "high": 0.1}))
        },
        expected=("s.yaml", "search_space.architecture.ngram.lr", "low (0.5) > high (0.1)"),
    ),
    case(
        "study-zero-trials",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(n_trials=0)},
        expected=("s.yaml", "n_trials: Input should be greater than or equal to 1", "(got 0)"),
    ),
    case(
        "study-unknown-sampler",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(sampler={"name": "Bayes"})},
        expected=("s.yaml", "sampler.name", "'Bayes'"),
    ),
    case(
        "study-unknown-pruner",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(pruner={"name": "Early"})},
        expected=("s.yaml", "pruner.name", "'Early'"),
    ),
    case(
        "study-unknown-param",
        "optimize",
        "--config",
        "s.yaml",
        files={
            "s.yaml": study(search_space=ngram_space(depth={"type": "int", "low": 1, "high": 3}))
        },
        expected=("s.yaml", "search_space.architecture.ngram.depth", "unknown key"),
    ),
    case(
        "study-knob-of-another-architecture",
        "optimize",
        "--config",
        "s.yaml",
        files={
            "s.yaml": study(
                search_space=ngram_space(nb_scale={"type": "categorical", "choices": [True, False]})
            )
        },
        expected=("s.yaml", "search_space.architecture.ngram.nb_scale", "unknown key"),
    ),
    case(
        "study-unknown-architecture",
        "optimize",
        "--config",
        "s.yaml",
        files={
            "s.yaml": study(
                search_space={
                    "architecture": {"rnn": {"lr": {"type": "float", "low": 0.1, "high": 0.2}}}
                }
            )
        },
        expected=("s.yaml", "search_space.architecture.rnn: not an architecture of task text"),
    ),
    case(
        "study-no-architecture",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(search_space={"architecture": {}})},
        expected=("s.yaml", "search_space.architecture: name at least one architecture"),
    ),
    case(
        "study-one-name-two-kinds-of-range",
        "optimize",
        "--config",
        "s.yaml",
        files={
            "s.yaml": study(
                search_space={
                    "architecture": {
                        "linear": {"weight_decay": {"type": "float", "low": 1e-6, "high": 1e-4}},
                        "ngram": {
                            "weight_decay": {
                                "type": "float",
                                "low": 1e-6,
                                "high": 1e-4,
                                "log": True,
                            }
                        },
                    }
                }
            )
        },
        expected=("s.yaml", "search_space.architecture.ngram.weight_decay", "one kind of range"),
    ),
    case(
        "study-grid-over-two-architectures",
        "optimize",
        "--config",
        "s.yaml",
        files={
            "s.yaml": study(
                sampler={"name": "Grid"},
                search_space={
                    "architecture": {
                        "linear": {"nb_scale": {"type": "categorical", "choices": [True, False]}},
                        "ngram": {"lr": {"type": "float", "low": 0.01, "high": 0.02, "step": 0.01}},
                    }
                },
            )
        },
        expected=("s.yaml", "sampler Grid needs a fixed search space"),
    ),
    case(
        "study-task-mismatch",
        "optimize",
        "--task",
        "images",
        "--config",
        "s.yaml",
        files={"s.yaml": study()},
        expected=("s.yaml", "task: the file is for 'text', not --task images"),
    ),
    case(
        "study-metric-of-another-task",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(metric="val_accuracy")},
        expected=("s.yaml", "metric: 'val_accuracy' is not a text metric"),
    ),
    case(
        "study-range-outside-param",
        "optimize",
        "--config",
        "s.yaml",
        files={
            "s.yaml": study(
                search_space=ngram_space(dropout_p={"type": "float", "low": 0, "high": 1})
            )
        },
        expected=(
            "s.yaml",
            "search_space.architecture.ngram.dropout_p: value 1",
            "not a valid dropout_p",
        ),
    ),
    case(
        "study-sampler-bad-kwargs",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(sampler={"name": "TPE", "kwargs": {"bogus": 1}})},
        expected=("s.yaml", "sampler TPE", "'bogus'"),
    ),
    case(
        "study-pruner-bad-kwargs",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(pruner={"name": "Median", "kwargs": {"patience": 2}})},
        expected=("s.yaml", "pruner Median", "'patience'"),
    ),
    case(
        "study-grace-under-two-heartbeats",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(heartbeat_interval=15, grace_period=20)},
        expected=("s.yaml", "grace_period (20 s) must be at least twice heartbeat_interval (15 s)"),
    ),
    case(
        "study-seed-too-large",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(seed=2**32)},
        expected=("s.yaml", "seed: Input should be less than 4294967296", "(got 4294967296)"),
    ),
    # --- CLI arguments ----------------------------------------------------------------
    case(
        "predict-run-id-and-model-uri",
        "predict",
        "x",
        "--run-id",
        "abc",
        "--model-uri",
        "models:/tagifai/1",
        expected=("--run-id and --model-uri: give one, not both",),
    ),
    case("predict-no-input", "predict", expected=("predict: give inputs or --file",)),
    case(
        "train-unknown-task", "train", "--task", "audio", expected=("--task: unknown task 'audio'",)
    ),
    case(
        "summarize-blank-study",
        *("summarize", "--study", " "),
        expected=("--study: ' ' is not a name",),
    ),
    case(
        "predict-output-without-file",
        "predict",
        "x",
        "--output",
        "out.jsonl",
        expected=("--output: only with --file",),
    ),
    case(
        "predict-threshold-above-one",
        "predict",
        "x",
        "--threshold",
        "1.5",
        expected=("--threshold: must be within [0, 1], got 1.5",),
    ),
    case(
        "train-best-plain-params",
        "train-best",
        "--params",
        "{tiny}",
        expected=("tiny_params.json", "not a best-params file"),
    ),
    case(
        "train-best-schema-1-file",
        "train-best",
        "--params",
        "old_best.json",
        files={
            "old_best.json": json.dumps(
                {"study_name": "old", "value": 0.5, "threshold": 0.5, "params": {"lr": 0.01}}
            )
        },
        expected=("old_best.json", "it has no schema_version", "run a new study"),
    ),
    case(
        "train-best-no-best-params",
        "train-best",
        expected=("config/best_params.json: file not found", "make optimize"),
    ),
    case(
        "evaluate-unknown-run-empty-store",
        "evaluate",
        "--run-id",
        UNKNOWN_RUN,
        expected=("mlflow.db: no MLflow tracking store yet",),
    ),
    case(
        "predict-unknown-model-empty-store",
        "predict",
        "x",
        "--model-uri",
        "models:/nope@champion",
        expected=("mlflow.db: no MLflow tracking store yet",),
    ),
    case(
        "train-best-unknown-run-empty-store",
        "train-best",
        "--from-run",
        "unknownid",
        expected=("mlflow.db: no MLflow tracking store yet",),
    ),
    # --- against a store that holds a model -------------------------------------------
    case(
        "evaluate-unknown-run",
        "evaluate",
        "--run-id",
        UNKNOWN_RUN,
        expected=("--run-id", f"no MLflow run '{UNKNOWN_RUN}'"),
        model=True,
    ),
    case(
        "predict-unknown-model",
        "predict",
        "x",
        "--model-uri",
        "models:/nope@champion",
        expected=("models:/nope@champion",),
        model=True,
    ),
    case(
        "train-best-unknown-run",
        "train-best",
        "--from-run",
        "unknownid",
        expected=("--from-run: no MLflow run 'unknownid'",),
        model=True,
    ),
    case(
        "train-best-from-non-optimize-run",
        "train-best",
        "--from-run",
        "{run_id}",
        expected=("--from-run", "has no best_params.json"),
        model=True,
    ),
    # --- prediction payloads: tagifai predict --file F on the trained model ------------
    case(
        "payload-empty-jsonl",
        "predict",
        "--run-id",
        "{run_id}",
        "--file",
        "empty.jsonl",
        files={"empty.jsonl": "\n\n"},
        expected=("empty.jsonl: no inputs in file",),
        model=True,
    ),
    case(
        "payload-invalid-jsonl-line",
        "predict",
        "--run-id",
        "{run_id}",
        "--file",
        "bad.jsonl",
        files={"bad.jsonl": '{"text": "fine"}\n{"text": \n'},
        expected=("bad.jsonl: line 2: invalid JSON",),
        model=True,
    ),
    case(
        "payload-text-not-a-string",
        "predict",
        "--run-id",
        "{run_id}",
        "--file",
        "num.jsonl",
        files={"num.jsonl": '{"text": "fine"}\n{"text": 42}\n'},
        expected=("row 2", "text: expected a string", "42"),
        model=True,
    ),
    case(
        "payload-csv-without-text-columns",
        "predict",
        "--run-id",
        "{run_id}",
        "--file",
        "batch.csv",
        files={"batch.csv": "name,body\nYOLO,finds cars\n"},
        expected=("expected a 'text' column or 'title'/'description'", "['name', 'body']"),
        model=True,
    ),
    # --- parsers with bounds: aliases, depth, huge integers ---------------------------------
    case(
        "yaml-billion-laughs",
        *("optimize", "--config", "s.yaml"),
        files={
            "s.yaml": "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            )
        },
        expected=("s.yaml: expands to more than 100000 values",),
    ),
    case(
        "yaml-nested-too-deep",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": "a: " + "[" * 40 + "1" + "]" * 40 + "\n"},
        expected=("s.yaml: nested deeper than 32 levels",),
    ),
    case(
        "json-nested-too-deep",
        *("train", "--params", "p.json"),
        files={"p.json": '{"data": ' + "[" * 50 + "]" * 50 + "}"},
        expected=("p.json: nested deeper than 32 levels",),
    ),
    case(
        "json-nested-past-the-recursion-limit",
        "train",
        "--params",
        "p.json",
        files={"p.json": '{"data": ' + "[" * 100_000 + "]" * 100_000 + "}"},
        expected=("p.json: invalid JSON",),
    ),
    case(
        "json-integer-of-5000-digits",
        "train",
        "--params",
        "p.json",
        files={"p.json": '{"seed": ' + "9" * 5000 + "}"},
        expected=("p.json: invalid JSON", "digits"),
    ),
    # --- names that would become paths (study and experiment names are folders) --------
    *(
        case(
            f"study-name-{label}",
            "optimize",
            "--study-name",
            name,
            "--config",
            "s.yaml",
            files={"s.yaml": study()},
            expected=("--study-name: ", shown, "is not a name"),
        )
        for label, name, shown in [
            ("slash", "a/b", "'a/b'"),
            ("dotdot", "../up", "'../up'"),
            ("absolute", "/tmp/x", "'/tmp/x'"),
            ("hidden", ".hidden", "'.hidden'"),
            ("space", "two words", "'two words'"),
            ("huge", "x" * 10_000, "'" + "x" * 60 + "'..."),
            ("non-ascii", "étude", "'étude'"),
        ]
    ),
    case(
        "study-name-in-config",
        "optimize",
        "--config",
        "s.yaml",
        files={"s.yaml": study(study_name="../../etc")},
        expected=("s.yaml", "study_name", "'../../etc' is not a name"),
    ),
    case(
        "experiment-name-slash",
        *train("--experiment-name", "../outside"),
        expected=("--experiment-name: '../outside' is not a name",),
    ),
    case("init-experiment-slash", "init-experiment", "a/b", expected=("NAME: 'a/b' is not",)),
    case("summarize-study-slash", "summarize", "--study", "a/../b", expected=("--study: ",)),
    case(
        "report-study-slash",
        *("report", "--study", "/etc/passwd", "--output", "r.html"),
        expected=("--study: '/etc/passwd' is not a name",),
    ),
    # --- outputs that would destroy inputs ----------------------------------------------
    case(
        "predict-output-is-the-input",
        *("predict", "--run-id", "{run_id}", "--file", "in.jsonl", "--output", "in.jsonl"),
        files={"in.jsonl": '{"text": "a model"}\n'},
        expected=("--output: in.jsonl is the --file input",),
        model=True,
    ),
    case(
        "predict-output-is-the-input-by-another-path",
        *("predict", "--run-id", "{run_id}", "--file", "in.jsonl", "--output", "./sub/../in.jsonl"),
        files={"in.jsonl": '{"text": "a model"}\n', "sub/keep": ""},
        expected=("is the --file input",),
        model=True,
    ),
    case(
        "predict-output-is-a-folder",
        *("predict", "--run-id", "{run_id}", "--file", "in.jsonl", "--output", "sub"),
        files={"in.jsonl": '{"text": "a model"}\n', "sub/keep": ""},
        expected=("--output: sub is a folder",),
        model=True,
    ),
    # --- bounds added with the hardening issue (16): data, payloads, types, keywords -----
    case(
        "data-json-nested-too-deep",
        *train("--data", "deep.json"),
        files={"deep.json": "[" * 100_000 + "]" * 100_000},
        expected=("deep.json: invalid JSON: nested too deeply",),
    ),
    case(
        "data-json-huge-integer",
        *train("--data", "bigint.json"),
        files={"bigint.json": '[{"id": ' + "9" * 5000 + ', "title": "t"}]'},
        expected=("bigint.json: invalid JSON", "digits"),
    ),
    case(
        "data-csv-tags-nested-too-deep",
        *train("--data", "deep.csv"),
        files={"deep.csv": 'id,title,description,tags\n1,t,d,"' + "[" * 60_000 + '"\n'},
        expected=("deep.csv", "row 1 (id 1)", "tags: not a JSON list"),
    ),
    case(
        "data-id-past-64-bits",
        *train("--data", "ids.json"),
        files={"ids.json": projects(id=10**30)},
        expected=("ids.json", "row 2", "id: must be within 0..2**63-1"),
    ),
    case(
        "data-is-a-folder",
        *train("--data", "folder.json"),
        files={"folder.json/x": "not data"},
        expected=("folder.json: a folder, not a file",),
    ),
    case(
        "taxonomy-json-nested-too-deep",
        *train("--data", "{sample}", "--tags", "tax.json"),
        files={"tax.json": "[" * 100_000 + "]" * 100_000},
        expected=("tax.json: invalid JSON: nested too deeply",),
    ),
    case(
        "taxonomy-huge-tag-name-is-cut",
        *train("--data", "{sample}", "--tags", "tax.json"),
        files={"tax.json": json.dumps([{"tag": "t" * 1_000_000}, {"tag": "t" * 1_000_000}])},
        expected=("tax.json", "duplicate tag"),
    ),
    case(
        "params-huge-unknown-key-is-cut",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(**{"k" * 900_000: 1})},
        expected=("p.json", "kkkk"),
    ),
    case(
        "params-batch-size-true",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"batch_size": True})},
        expected=("p.json", "model.batch_size", "valid integer", "(got True)"),
    ),
    case(
        "params-batch-size-float",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"batch_size": 64.0})},
        expected=("p.json", "model.batch_size", "valid integer", "(got 64.0)"),
    ),
    case(
        "params-epochs-as-text",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"num_epochs": "3"})},
        expected=("p.json", "model.num_epochs", "valid integer", "(got '3')"),
    ),
    case(
        "params-lr-as-text",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"lr": "0.01"})},
        expected=("p.json", "model.lr", "valid number", "(got '0.01')"),
    ),
    case(
        "params-lr-nan",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(model={"lr": float("nan")})},
        expected=("p.json", "model.lr", "finite number"),
    ),
    case(
        "params-seed-true",
        "train",
        "--params",
        "p.json",
        files={"p.json": tiny_with(seed=True)},
        expected=("p.json", "seed", "valid integer", "(got True)"),
    ),
    case(
        "params-images-channels-as-text",
        *("train", "--task", "images", "--params", "p.json"),
        files={
            "p.json": json.dumps(
                {"task": "images", "model": {"architecture": "cnn", "channels": "32"}}
            )
        },
        expected=("p.json", "model.channels", "valid integer", "(got '32')"),
    ),
    case(
        "study-n-trials-true",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(n_trials=True)},
        expected=("s.yaml", "n_trials", "valid integer", "(got True)"),
    ),
    case(
        "study-range-bound-as-text",
        *("optimize", "--config", "s.yaml"),
        files={
            "s.yaml": study(
                search_space=ngram_space(lr={"type": "float", "low": "0.01", "high": 0.1})
            )
        },
        expected=("s.yaml", "search_space.architecture.ngram.lr", "valid number"),
    ),
    case(
        "study-categorical-nan",
        *("optimize", "--config", "s.yaml"),
        files={
            "s.yaml": study(
                search_space=ngram_space(lr={"type": "categorical", "choices": [float("nan")]})
            )
        },
        expected=("s.yaml", "search_space.architecture.ngram.lr", "choices"),
    ),
    case(
        "study-grid-of-a-tiny-step",
        *("optimize", "--config", "s.yaml"),
        files={
            "s.yaml": study(
                sampler={"name": "Grid"},
                search_space=ngram_space(
                    lr={"type": "float", "low": 0.01, "high": 0.02, "step": 1e-300}
                ),
            )
        },
        expected=("s.yaml: search_space.architecture.ngram.lr: step 1e-300 makes a grid",),
    ),
    case(
        "study-sampler-kwarg-as-text",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(sampler={"name": "TPE", "kwargs": {"n_startup_trials": "abc"}})},
        expected=("s.yaml: sampler TPE: kwargs: n_startup_trials", "valid integer", "'abc'"),
    ),
    case(
        "study-sampler-kwarg-true",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(sampler={"name": "TPE", "kwargs": {"n_startup_trials": True}})},
        expected=("s.yaml: sampler TPE: kwargs: n_startup_trials", "valid integer", "True"),
    ),
    case(
        "study-sampler-no-candidates",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(sampler={"name": "TPE", "kwargs": {"n_ei_candidates": 0}})},
        expected=("s.yaml: sampler TPE: kwargs: n_ei_candidates", "greater than or equal to 1"),
    ),
    case(
        "study-sampler-a-function-keyword",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(sampler={"name": "TPE", "kwargs": {"gamma": 0.5}})},
        expected=(
            "s.yaml: sampler TPE: 'gamma': a Python object, not a config value",
            "it takes consider_prior, prior_weight",
        ),
    ),
    case(
        "study-sampler-own-seed",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(sampler={"name": "Random", "kwargs": {"seed": 1}})},
        expected=("s.yaml: sampler Random: seed: set the study's seed",),
    ),
    case(
        "study-sampler-population-of-a-billion",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(sampler={"name": "NSGAII", "kwargs": {"population_size": 10**9}})},
        expected=("s.yaml: sampler NSGAII: kwargs: population_size", "less than or equal to 10000"),
    ),
    case(
        "study-pruner-hyperband-factor-one",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(pruner={"name": "Hyperband", "kwargs": {"reduction_factor": 1}})},
        expected=(
            "s.yaml: pruner Hyperband: kwargs: reduction_factor",
            "greater than or equal to 2",
        ),
    ),
    case(
        "study-pruner-warmup-nan",
        *("optimize", "--config", "s.yaml"),
        files={
            "s.yaml": study(pruner={"name": "Median", "kwargs": {"n_warmup_steps": float("nan")}})
        },
        expected=("s.yaml: pruner Median: kwargs: n_warmup_steps", "valid integer"),
    ),
    case(
        "study-pruner-threshold-nan",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(pruner={"name": "Threshold", "kwargs": {"lower": float("nan")}})},
        expected=("s.yaml: pruner Threshold: kwargs: lower", "finite number"),
    ),
    case(
        "study-pruner-patient-without-patience",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(pruner={"name": "Patient"})},
        expected=("s.yaml: pruner Patient: kwargs: patience: Field required",),
    ),
    case(
        "study-yaml-aliases-expand-to-gigabytes",
        *("optimize", "--config", "s.yaml"),
        files={
            "s.yaml": "big: &big "
            + "x" * 200_000
            + "\nsampler:\n  name: TPE\n  kwargs:\n"
            + "    weights: ["
            + ", ".join(["*big"] * 1000)
            + "]\n"
        },
        expected=("s.yaml: expands to more than 4,194,304 characters",),
    ),
    case(
        "option-n-trials-over-the-bound",
        *("optimize", "--config", "s.yaml", "--n-trials", "1000000"),
        files={"s.yaml": study()},
        expected=("--n-trials: n_trials: Input should be less than or equal to 100000",),
    ),
    case(
        "option-timeout-inf",
        *("optimize", "--config", "s.yaml", "--timeout", "inf"),
        files={"s.yaml": study()},
        expected=("--timeout: timeout", "finite number"),
    ),
    case(
        "idx-declares-gigabytes",
        *("train", "--task", "images", "--params", "p.json", "--data", "idx"),
        files={
            "p.json": json.dumps({"task": "images"}),
            "idx/train-images-idx3-ubyte": bytes([0, 0, 8, 3])
            + (2_000_000).to_bytes(4, "big")
            + (100).to_bytes(4, "big") * 2,
            "idx/train-labels-idx1-ubyte": bytes([0, 0, 8, 1]) + (2_000_000).to_bytes(4, "big"),
        },
        expected=("train-images-idx3-ubyte", "over the 2147483648 limit"),
    ),
    case(
        "idx-images-wider-than-predict-takes",
        *("train", "--task", "images", "--params", "p.json", "--data", "idx"),
        files={
            "p.json": json.dumps({"task": "images"}),
            "idx/train-images-idx3-ubyte": bytes([0, 0, 8, 3])
            + (40).to_bytes(4, "big")
            + (600).to_bytes(4, "big") * 2
            + bytes(40 * 600 * 600),
            "idx/train-labels-idx1-ubyte": bytes([0, 0, 8, 1])
            + (40).to_bytes(4, "big")
            + bytes(40),
        },
        expected=("train-images-idx3-ubyte", "images of 600x600; each side must be 1..512"),
    ),
    case(
        "idx-label-outside-the-classes",
        *("train", "--task", "images", "--params", "p.json", "--data", "idx"),
        files={
            "p.json": json.dumps({"task": "images"}),
            "idx/train-images-idx3-ubyte": bytes([0, 0, 8, 3])
            + (12).to_bytes(4, "big")
            + (2).to_bytes(4, "big") * 2
            + bytes(12 * 2 * 2),
            "idx/train-labels-idx1-ubyte": bytes([0, 0, 8, 1])
            + (12).to_bytes(4, "big")
            + bytes([0, 1, 2, 0, 1, 2, 0, 12, 2, 0, 1, 2]),
        },
        expected=("train-labels-idx1-ubyte: label 12 at index 7 is outside 0..2",),
    ),
    case(
        "payload-jsonl-nested-too-deep",
        *("predict", "--run-id", "{run_id}", "--file", "deep.jsonl"),
        files={"deep.jsonl": '{"text": "fine"}\n' + "[" * 100_000 + "]" * 100_000 + "\n"},
        expected=("deep.jsonl: line 2: invalid JSON: nested too deeply",),
        model=True,
    ),
    case(
        "payload-jsonl-huge-integer",
        *("predict", "--run-id", "{run_id}", "--file", "big.jsonl"),
        files={"big.jsonl": '{"text": ' + "9" * 5000 + "}\n"},
        expected=("big.jsonl: line 1: invalid JSON", "digits"),
        model=True,
    ),
    case(
        "payload-too-many-texts",
        *("predict", "--run-id", "{run_id}", "--file", "many.jsonl"),
        files={"many.jsonl": '{"text": "YOLO finds cars"}\n' * 10_001},
        expected=("input: 10,001 texts; at most 10,000 at once",),
        model=True,
    ),
    case(
        "payload-file-is-a-folder",
        *("predict", "--run-id", "{run_id}", "--file", "in.jsonl"),
        files={"in.jsonl/x": "{}"},
        expected=("in.jsonl: a folder, not a file",),
        model=True,
    ),
    case(
        "study-storage-not-a-database-url",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(storage="foo://bar")},
        expected=("s.yaml: storage: not a database URL", "NoSuchModuleError"),
    ),
    case(
        "option-storage-sqlite-in-a-missing-folder",
        *("optimize", "--config", "s.yaml", "--storage", "sqlite:////nonexistent/dir/x.db"),
        files={"s.yaml": study()},
        expected=("--storage: storage: the SQLite file's folder /nonexistent/dir does not exist",),
    ),
    case(
        "option-storage-password-not-echoed",
        *("optimize", "--config", "s.yaml", "--storage", "nodriver://user:s3cret@host/db"),
        files={"s.yaml": study()},
        expected=("--storage: storage: not a database URL",),
    ),
    case(
        "best-params-trial-number-a-string",
        *("train-best", "--params", "best.json"),
        files={"best.json": best_params(trial_number="3")},
        expected=("best.json: trial_number: Input should be a valid integer (got '3')",),
    ),
    case(
        "best-params-value-a-string",
        *("train-best", "--params", "best.json"),
        files={"best.json": best_params(value="0.5")},
        expected=("best.json: value: Input should be a valid number (got '0.5')",),
    ),
    case(
        "best-params-threshold-a-string",
        *("train-best", "--params", "best.json"),
        files={"best.json": best_params(decision={"kind": "threshold", "thresholds": ["0.5"]})},
        expected=("best.json: decision.thresholds.0: Input should be a valid number",),
    ),
    case(
        "study-storage-driver-not-installed",
        *("optimize", "--config", "s.yaml"),
        files={"s.yaml": study(storage="mysql://user:s3cret@localhost/db")},
        expected=("s.yaml: storage: a mysql URL needs the Python package mysqlclient",),
        without="MySQLdb",
    ),
    case(
        "option-storage-driver-not-installed",
        *("optimize", "--config", "s.yaml", "--storage", "mysql+pymysql://u:s3cret@host/db"),
        files={"s.yaml": study()},
        expected=("--storage: storage: a mysql+pymysql URL needs the Python package pymysql",),
        without="pymysql",
    ),
    case(
        "model-uri-s3-without-boto3",
        *("predict", "some text", "--model-uri", "s3://bucket/model"),
        expected=("model s3://bucket/model: its artifact store needs the Python package boto3",),
        model=True,
        without="botocore",
    ),
    case(
        "model-uri-gs-without-its-client",
        *("check-model", "gs://bucket/model"),
        expected=("gs://bucket/model: its artifact store needs the Python package google-cloud",),
        model=True,
        without="google.cloud",
    ),
    case(
        "study-grid-step-that-overflows",
        *("optimize", "--config", "s.yaml"),
        files={
            "s.yaml": study(
                sampler={"name": "Grid"},
                search_space=ngram_space(
                    weight_decay={"type": "float", "low": 0.0, "high": 1.0, "step": 5e-324}
                ),
            )
        },
        expected=("s.yaml: search_space.architecture.ngram.weight_decay: step 5e-324",),
    ),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One tiny model trained through the CLI: (its store folder, its run id).

    Module-scoped, so it cannot use the function-scoped ``tiny_params_file``:
    the same tiny params are built here from ``helpers.TINY``.
    """
    store = tmp_path_factory.mktemp("trained")
    params_file = store / "tiny_params.json"
    params_file.write_text(json.dumps(TextParams.model_validate(TINY).model_dump(mode="json")))
    with private_store(store):
        result = CliRunner().invoke(
            app, ["train", "--params", str(params_file), "--experiment-name", "bad-input"]
        )
        assert result.exit_code == 0, result.output
        run_id = result.stdout.split("run_id: ", 1)[1].split()[0]
    yield store, run_id


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def _run_count(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM runs").fetchone()[0])


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_is_one_error_line_and_writes_nothing(
    bad: Case,
    workdir: Path,
    tiny_params_file: Path,
    tiny_params: TextParams,
    request: pytest.FixtureRequest,
) -> None:
    values = {"tiny": str(tiny_params_file), "sample": str(SAMPLE_DATA_DIR / "projects.json")}
    store: Path | None = None
    if bad.model:
        store, values["run_id"] = request.getfixturevalue("trained")
        shutil.copy(store / "mlflow.db", workdir / "mlflow.db")
    tiny = tiny_params.model_dump(mode="json")
    for name, content in bad.files.items():
        content = content(tiny) if callable(content) else content
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (workdir / name).write_bytes(content)
        else:
            (workdir / name).write_text(_fill(content, values), encoding="utf-8")
    before = _tree(workdir)
    store_before = _tree(store) if store is not None else set()
    runs_before = _run_count(workdir / "mlflow.db") if bad.model else 0

    result = CliRunner().invoke(app, [_fill(arg, values) for arg in bad.args])

    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[:3000]
    assert len(lines[0]) <= len("error: ") + MAX_MESSAGE_CHARS, lines[0][:3000]
    for expected in bad.expected:
        assert _fill(expected, values) in lines[0]
    assert "s3cret" not in output  # a URL's password is never repeated
    assert not any(marker in output for marker in TRACEBACK_MARKERS), output
    assert _tree(workdir) == before
    if store is not None:
        assert _tree(store) == store_before
        assert _run_count(workdir / "mlflow.db") == runs_before
    else:
        assert not (workdir / "mlflow.db").exists()
        assert not (workdir / "experiments").exists()
        assert not (workdir / "config" / "best_params.json").exists()


def test_summarize_refuses_a_study_tagifai_did_not_make(workdir: Path) -> None:
    """A study from another tool (or one of the lock studies) is named, not half-summarised."""
    import optuna

    storage = f"sqlite:///{workdir / 'foreign.db'}"
    study = optuna.create_study(study_name="foreign", storage=storage)
    study.add_trial(
        optuna.trial.create_trial(
            params={"x": 1.0},
            distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
            value=0.5,
        )
    )
    mlflow.search_experiments()  # the tracking store exists (summarize never creates one)
    before = _tree(workdir)

    result = CliRunner().invoke(app, ["summarize", "--study", "foreign", "--storage", storage])

    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "study 'foreign' was not made by tagifai optimize" in lines[0]
    assert "base_params" in lines[0]
    assert _tree(workdir) == before  # no artifact or best_params.json
    assert _run_count(workdir / "mlflow.db") == 0  # no parent run started for it


def test_report_refuses_a_parent_run_id_that_is_no_run_id(workdir: Path) -> None:
    """A study whose storage records a parent run id with a quote (it would go into an
    MLflow search filter): one line naming it, no page written."""
    import optuna

    storage = f"sqlite:///{workdir / 'study.db'}"
    study = optuna.create_study(study_name="quoted", storage=storage)
    study.set_user_attr("mlflow_parent_run_id", "x' or attributes.status != '")
    before = _tree(workdir)

    result = CliRunner().invoke(
        app, ["report", "--study", "quoted", "--storage", storage, "--output", "r.html"]
    )

    assert result.exit_code == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "study 'quoted': mlflow_parent_run_id \"x' or attributes" in lines[0], lines[0]
    assert "is not an MLflow run id" in lines[0]
    assert not any(marker in result.output for marker in TRACEBACK_MARKERS)
    assert _tree(workdir) == before  # no report, no tracking store


# A model from another tool: importing its module, loading or predicting with it writes
# MARKER (as any code in a model could do anything).
FOREIGN_MODEL_CODE = """
import pathlib

import mlflow
from mlflow.pyfunc import PythonModel

MARKER = pathlib.Path({marker!r})
MARKER.write_text("module imported")


class Foreign(PythonModel):
    def load_context(self, context):
        MARKER.write_text("load_context ran")

    def predict(self, context, model_input, params=None):
        MARKER.write_text("predict ran")
        return model_input


mlflow.models.set_model(Foreign())
"""


class PickledForeign(mlflow.pyfunc.PythonModel):
    """A pickled model whose unpickling writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).write_text("unpickled")
        self.__dict__.update(state)

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        Path(self.marker).write_text("predict ran")
        return model_input


@pytest.mark.parametrize(
    ("where", "kind", "claims_tagifai"),
    [
        ("run", "code", False),
        ("folder", "code", False),
        ("run", "code", True),  # its MLmodel says tagifai format 2, its code is not ours
        ("folder", "pickle", False),
        ("folder", "pickle", True),
    ],
    ids=[
        "logged-code-model",
        "saved-code-model-folder",
        "logged-code-model-claiming-tagifai",
        "saved-pickled-model-folder",
        "saved-pickled-model-claiming-tagifai",
    ],
)
@pytest.mark.parametrize("command", ["predict", "serve", "check-model"])
def test_loading_refuses_a_model_tagifai_did_not_write(
    workdir: Path, where: str, kind: str, claims_tagifai: bool, command: str
) -> None:
    """`tagifai predict/serve/check-model` on another tool's model: one line, exit 2, and
    none of the model's code runs (not its module, nor load_context, nor unpickling)."""
    from helpers import free_port

    marker = workdir / "foreign_code_ran"
    code = workdir / "foreign_model.py"
    code.write_text(FOREIGN_MODEL_CODE.format(marker=str(marker)))
    model: Any = str(code) if kind == "code" else PickledForeign(str(marker))
    metadata = {"tagifai_model_format": 2, "task": "text"} if claims_tagifai else None
    if where == "run":
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(name="model", python_model=model, metadata=metadata)
        uri = f"runs:/{run.info.run_id}/model"
    else:
        folder = workdir / "foreign"
        mlflow.pyfunc.save_model(path=str(folder), python_model=model, metadata=metadata)
        mlflow.search_experiments()  # predict reads from an existing tracking store
        uri = str(folder)
    marker.unlink(missing_ok=True)  # MLflow may run a model's code while saving it
    before = _tree(workdir)

    args = {
        "predict": ["predict", "some text", "--model-uri", uri],
        "serve": ["serve", "--model-uri", uri, "--port", str(free_port())],
        "check-model": ["check-model", uri],
    }[command]
    result = CliRunner().invoke(app, args)

    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert uri in lines[0] and "not a tagifai model" in lines[0]
    assert not any(trace in output for trace in TRACEBACK_MARKERS), output
    assert not marker.exists(), marker.read_text()  # its code never ran
    assert _tree(workdir) == before
    # The marker does tell: MLflow's own loader runs the model's code.
    mlflow.pyfunc.load_model(uri)
    assert marker.exists()


# Every command that needs the tracking store, against a server that is not there.
GONE_SERVER_COMMANDS = [
    pytest.param(("train", "--params", "{tiny}"), id="train"),
    pytest.param(("optimize", "--config", "s.yaml"), id="optimize"),
    pytest.param(("predict", "some text"), id="predict"),
    pytest.param(("evaluate", "--run-id", UNKNOWN_RUN), id="evaluate"),
    pytest.param(("summarize", "--study", "bad-input"), id="summarize"),
    pytest.param(("check-model", "models:/tagifai@champion"), id="check-model"),
    pytest.param(("serve", "--model-uri", "models:/tagifai@champion"), id="serve"),
    pytest.param(("train-best", "--from-run", UNKNOWN_RUN), id="train-best"),
    pytest.param(("init-experiment", "somewhere"), id="init-experiment"),
]


@pytest.mark.parametrize("args", GONE_SERVER_COMMANDS)
def test_a_tracking_server_that_is_gone_is_one_line(
    args: tuple[str, ...], workdir: Path, tiny_params_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No retries for minutes: one line naming the server, exit 2, nothing written."""
    from helpers import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    (workdir / "s.yaml").write_text(study().replace("{tiny}", str(tiny_params_file)))
    before = _tree(workdir)
    result = CliRunner().invoke(app, [_fill(a, {"tiny": str(tiny_params_file)}) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and f"MLflow tracking store {uri} is unreachable" in lines[0], lines
    assert _tree(workdir) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("optimize", "--n-trials", "abc"), "Invalid value for '--n-trials'"),
        (("optimize", "--workers", "0"), "Invalid value for '--workers'"),
        (("optimize", "--bogus"), "No such option: --bogus"),
        (("predict", "--threshold", "x"), "Invalid value for '--threshold'"),
        (("serve", "--port", "70000"), "Invalid value for '--port'"),
        (("nosuchcommand",), "No such command 'nosuchcommand'"),
    ],
    ids=["not-an-int", "below-its-range", "unknown-option", "not-a-number", "port", "command"],
)
def test_a_bad_option_is_one_line(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    """The real entry point (not Typer's boxed panel): one line naming the option, exit 2."""
    import subprocess
    import sys

    from helpers import subprocess_env

    result = subprocess.run(
        [sys.executable, "-m", "tagifai.cli", *args],
        cwd=tmp_path,
        env=subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: tagifai"), result.stderr
    assert expected in lines[0] and "--help" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_sizes_too_large_together_are_one_line_before_any_memory(workdir: Path) -> None:
    """Each size is within its bound, the network is not (3.4 G parameters): one line
    from a dry run on the meta device, before any weight is allocated; the run is FAILED."""
    (workdir / "big.json").write_text(
        json.dumps(
            {
                "task": "text",
                "model": {
                    "architecture": "cnn",
                    "embedding_dim": 4096,
                    "num_filters": 4096,
                    "max_filter_size": 16,
                    "hidden_dim": 16384,
                },
            }
        )
    )
    result = CliRunner().invoke(app, ["train", "--params", "big.json"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "parameters, over the limit of 100,000,000" in lines[0], lines
    runs = mlflow.search_runs(search_all_experiments=True)
    assert list(runs["status"]) == ["FAILED"]
