"""Tests of typed config: params files and study configs load frozen, or fail naming file and key.

Params files load through :func:`tagifai.search.load_params_file` into the text workload's
:class:`TextParams`; study configs through :func:`tagifai.search.load_optimize_config`,
whose search space is conditional: ``search_space: {architecture: {<arch>: {<param>: ...}}}``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import ValidationError

from tagifai.errors import TagifaiError
from tagifai.search import (
    ARCHITECTURE,
    MAX_GRID_POINTS,
    CategoricalSpace,
    FloatSpace,
    IntSpace,
    create_sampler,
    load_optimize_config,
    load_params_file,
    params_for,
    suggest_params,
)
from tagifai.workloads.text import WORKLOAD
from tagifai.workloads.text.params import (
    CnnParams,
    LinearParams,
    NgramParams,
    TextData,
    TextParams,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE_PARAMS = {"linear": LinearParams, "ngram": NgramParams, "cnn": CnnParams}


@pytest.fixture(autouse=True)
def quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def write_params(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def write_study(tmp_path: Path, name: str = "study.yaml", **values: Any) -> Path:
    """A study YAML whose base params (ngram, lr 0.01) live in tmp_path too.

    Keys keep their order, so "the second architecture" below is the second written.
    """
    base = {"task": "text", "model": {"architecture": "ngram", "lr": 0.01}}
    params = write_params(tmp_path / "params.json", base)
    path = tmp_path / name
    path.write_text(
        yaml.safe_dump({"params": str(params), **values}, sort_keys=False), encoding="utf-8"
    )
    return path


def space(**architectures: dict[str, Any]) -> dict[str, Any]:
    """``search_space`` of a study config: architecture -> its searched params."""
    return {"architecture": architectures}


def one_error(path: Path, call: Any = None) -> str:
    """The one-line message load_optimize_config raises for ``path``."""
    with pytest.raises(TagifaiError) as info:
        (call or load_optimize_config)(path)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- load_params_file ----------------------------------------------------------------


def test_load_params_good_file(tmp_path):
    payload = {
        "task": "text",
        "data": {"exclude_tags": ["python"], "min_tag_freq": 5},
        "model": {"architecture": "ngram", "lr": 0.02, "batch_size": 16},
    }
    params = load_params_file(WORKLOAD, write_params(tmp_path / "params.json", payload))
    assert isinstance(params, TextParams)
    assert isinstance(params.model, NgramParams)
    assert params.model.lr == 0.02
    assert params.model.batch_size == 16
    assert params.data.exclude_tags == ("python",)
    assert params.data.min_tag_freq == 5
    # Defaults fill the rest, from the one class that declares each field.
    assert params.model.dropout_p == NgramParams().dropout_p
    assert params.data.train_size == TextData().train_size
    assert params.seed == TextParams().seed
    assert params.threshold_mode == "global" and params.class_weights is True


def test_load_params_task_defaults_to_the_workload(tmp_path):
    path = write_params(tmp_path / "params.json", {"model": {"architecture": "cnn"}})
    params = load_params_file(WORKLOAD, path)
    assert params.task == "text"
    assert isinstance(params.model, CnnParams)
    assert params.model.filter_sizes == (1, 2, 3, 4)


def test_load_params_without_model_is_the_linear_default(tmp_path):
    params = load_params_file(WORKLOAD, write_params(tmp_path / "params.json", {}))
    assert params == TextParams()
    assert isinstance(params.model, LinearParams)


def test_params_are_frozen(tmp_path):
    path = write_params(tmp_path / "params.json", {"model": {"architecture": "ngram"}})
    params = load_params_file(WORKLOAD, path)
    with pytest.raises(ValidationError, match="frozen"):
        params.model.lr = 0.5
    with pytest.raises(ValidationError, match="frozen"):
        params.seed = 7
    changed = params.model_copy(update={"model": params.model.model_copy(update={"lr": 0.5})})
    assert changed.model.lr == 0.5
    assert params.model.lr == NgramParams().lr  # the original is untouched


def test_load_shipped_params():
    # config/best_params.json is written by `tagifai optimize`, not shipped.
    path = REPO_ROOT / "config" / "params.json"
    assert json.loads(path.read_text()) == {"task": "text", "model": {"architecture": "linear"}}
    params = load_params_file(WORKLOAD, path)
    assert isinstance(params.model, LinearParams)
    assert params.model.weight_decay > 0
    assert params == TextParams.model_validate(params.model_dump())
    assert params == TextParams()  # the defaults live in the params classes


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # tagifai 0.1's flat params are refused, naming the first old key.
        ({"lr": 0.1}, "lr: unknown key"),
        ({"learning_rate": 0.1}, "learning_rate: unknown key"),
        ({"architecture": "ngram"}, "architecture: unknown key"),
        # A best_params.json is not a params file (tagifai.best_params reads it).
        ({"params": {"model": {"architecture": "ngram"}}}, "params: unknown key"),
        ({"task": "images"}, "task: params for 'images', not text"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0 (got -1)"),
        (
            {"threshold_mode": "both"},
            "threshold_mode: Input should be 'global' or 'per_class' (got 'both')",
        ),
        (
            {"data": {"min_tag_freq": 0}},
            "data.min_tag_freq: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            {"data": {"train_size": 0.8, "val_size": 0.2}},
            "data: train_size + val_size must leave room for a test split, got 0.8 + 0.2",
        ),
        ({"data": {"lr": 0.1}}, "data.lr: unknown key"),
        (
            {"model": {"architecture": "rnn"}},
            "model: Input tag 'rnn' found using 'architecture' does not match any of the "
            "expected tags: 'linear', 'ngram', 'cnn'",
        ),
        (
            {"model": {"lr": 0.1}},
            "model: Unable to extract tag using discriminator 'architecture'",
        ),
    ],
)
def test_load_params_bad_value(tmp_path, payload, expected):
    path = write_params(tmp_path / "bad_params.json", payload)
    with pytest.raises(TagifaiError) as info:
        load_params_file(WORKLOAD, path)
    assert str(info.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize(
    ("model", "key", "reason"),
    [
        ({"architecture": "ngram", "batch_size": "big"}, "batch_size", "Input should be a valid"),
        ({"architecture": "ngram", "num_epochs": 2.5}, "num_epochs", "Input should be a valid"),
        (
            {"architecture": "ngram", "dropout_p": 1.0},
            "dropout_p",
            "Input should be less than 1 (got 1.0)",
        ),
        (
            {"architecture": "cnn", "lr": -0.001},
            "lr",
            "Input should be greater than 0 (got -0.001)",
        ),
        # A knob of another architecture is not one of linear's.
        ({"architecture": "linear", "lr": 0.1}, "lr", "unknown key"),
    ],
)
def test_load_params_bad_model_value(tmp_path, model, key, reason):
    path = write_params(tmp_path / "bad_params.json", {"model": model})
    with pytest.raises(TagifaiError) as info:
        load_params_file(WORKLOAD, path)
    message = str(info.value)
    assert message.startswith(f"{path}: model.")
    assert f".{key}: {reason}" in message


def test_load_params_bad_model_value_names_the_key_as_written(tmp_path):
    path = write_params(
        tmp_path / "bad_params.json", {"model": {"architecture": "ngram", "dropout_p": 1.0}}
    )
    with pytest.raises(TagifaiError) as info:
        load_params_file(WORKLOAD, path)
    assert str(info.value) == f"{path}: model.dropout_p: Input should be less than 1 (got 1.0)"


def test_load_params_reports_how_many_more_errors(tmp_path):
    model = {"architecture": "ngram", "lr": -1, "dropout_p": 2.0}
    path = write_params(tmp_path / "p.json", {"model": model})
    with pytest.raises(TagifaiError, match=r"\[\+1 more\]$"):
        load_params_file(WORKLOAD, path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"seed": 1,\n "model": }', "invalid JSON at line 2"),
        (b'{"seed": "\xff"}', "not UTF-8 text (byte 10)"),
        (b'[{"seed": 1}]', "expected a mapping of keys to values"),
    ],
)
def test_load_params_unreadable(tmp_path, content, expected):
    path = tmp_path / "params.json"
    path.write_bytes(content)
    with pytest.raises(TagifaiError) as info:
        load_params_file(WORKLOAD, path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_load_params_missing_file_and_directory(tmp_path):
    with pytest.raises(TagifaiError, match=r"missing\.json: file not found"):
        load_params_file(WORKLOAD, tmp_path / "missing.json")
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(TagifaiError, match=r"folder\.json: cannot read"):
        load_params_file(WORKLOAD, folder)


# --- load_optimize_config ------------------------------------------------------------

LINEAR_SPACE = {"weight_decay": {"type": "float", "low": 1e-7, "high": 1e-4, "log": True}}
NGRAM_SPACE = {
    "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
    "hidden_dim": {"type": "int", "low": 64, "high": 256, "step": 64},
}
CNN_SPACE = {
    "num_filters": {"type": "int", "low": 8, "high": 32, "step": 8},
    "optimizer": {"type": "categorical", "choices": ["adam", "adamw"]},
}
SEARCH_SPACE = space(linear=LINEAR_SPACE, ngram=NGRAM_SPACE, cnn=CNN_SPACE)


def test_load_optimize_config_valid(tmp_path):
    path = write_study(
        tmp_path,
        study_name="mine",
        n_trials=5,
        sampler={"name": "TPE", "kwargs": {"n_startup_trials": 3}},
        pruner={"name": "Nop"},
        search_space=SEARCH_SPACE,
    )
    config, base, workload = load_optimize_config(path)
    assert workload is WORKLOAD
    assert config.task == "text"
    assert config.study_name == "mine"
    assert config.n_trials == 5
    assert config.metric == "val_f1" and config.direction == "maximize"
    assert config.sampler.name == "TPE" and config.sampler.kwargs == {"n_startup_trials": 3}
    assert config.pruner.name == "Nop"
    assert list(config.architectures) == ["linear", "ngram", "cnn"]
    ngram = config.architectures["ngram"]
    assert ngram["lr"] == FloatSpace(type="float", low=0.001, high=0.1, log=True)
    assert isinstance(ngram["hidden_dim"], IntSpace)
    assert ngram["hidden_dim"].grid() == [64, 128, 192, 256]
    assert config.architectures["cnn"]["optimizer"] == CategoricalSpace(
        type="categorical", choices=("adam", "adamw")
    )
    assert set(config.architectures["linear"]) == {"weight_decay"}
    assert base.model.lr == 0.01 and base.model.architecture == "ngram"


def test_load_shipped_optimize_config(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # its params: path is relative to the project root
    config, base, workload = load_optimize_config(REPO_ROOT / "config" / "optimize.yaml")
    assert workload is WORKLOAD and config.task == "text"
    assert config.n_trials >= 1
    assert config.metric in WORKLOAD.metrics
    assert config.direction == WORKLOAD.metrics[config.metric]
    assert set(config.architectures) == {"linear", "ngram", "cnn"}
    for architecture, params in config.architectures.items():
        fields = set(ARCHITECTURE_PARAMS[architecture].model_fields) - {ARCHITECTURE}
        assert set(params) <= fields, architecture
    assert config.params is not None
    assert base == load_params_file(WORKLOAD, REPO_ROOT / config.params)
    # With no path, the task's default file is read (relative to the project root).
    assert load_optimize_config()[0] == config


def test_load_optimize_config_default_params_path_is_relative_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    base = {"model": {"architecture": "ngram", "lr": 0.0123}}
    write_params(tmp_path / "config" / "params.json", base)
    path = tmp_path / "study.yaml"
    path.write_text("n_trials: 2\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    config, loaded, _ = load_optimize_config(path)
    assert config.params is None  # the workload's params file: config/params.json
    assert loaded.model.lr == 0.0123
    assert config.search_space == {}


def test_load_optimize_config_default_path_is_the_tasks_file(tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    write_params(tmp_path / "config" / "params.json", {"model": {"architecture": "cnn"}})
    (tmp_path / "config" / "optimize.yaml").write_text("study_name: here\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for task in (None, "text"):
        config, base, workload = load_optimize_config(task=task)
        assert config.study_name == "here" and config.task == "text"
        assert base.model.architecture == "cnn" and workload is WORKLOAD


def test_load_optimize_config_cli_overrides_win(tmp_path):
    path = write_study(tmp_path, study_name="from-file", n_trials=20, seed=1)
    config, _, _ = load_optimize_config(path, n_trials=3, seed=None, study_name="from-cli")
    assert config.n_trials == 3
    assert config.study_name == "from-cli"
    assert config.seed == 1  # None means "not given": the file's value stays


def test_load_optimize_config_task_option(tmp_path):
    untagged = write_study(tmp_path, name="untagged.yaml")
    assert load_optimize_config(untagged)[0].task == "text"  # a file naming none is text
    assert load_optimize_config(untagged, task="text")[0].task == "text"
    tagged = write_study(tmp_path, name="tagged.yaml", task="text")
    assert load_optimize_config(tagged, task="text")[0].task == "text"
    message = one_error(tagged, lambda path: load_optimize_config(path, task="images"))
    assert message == f"{tagged}: task: the file is for 'text', not --task images"
    message = one_error(untagged, lambda path: load_optimize_config(path, task="audio"))
    assert message == "--task: unknown task 'audio'; choose from text, images"


def test_load_optimize_config_unknown_task_in_file_names_the_file(tmp_path):
    path = write_study(tmp_path, task="audio")
    message = one_error(path)
    assert message.startswith(f"{path}: task: ")
    assert "'audio'" in message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"metric": "val_loss", "direction": "maximize"},
            "direction: metric val_loss must be minimized, not maximized",
        ),
        (
            {"metric": "val_f1", "direction": "minimize"},
            "direction: metric val_f1 must be maximized, not minimized",
        ),
        (
            {"metric": "val_f1_micro", "direction": "minimize"},
            "direction: metric val_f1_micro must be maximized, not minimized",
        ),
        (
            {"metric": "accuracy"},
            "metric: 'accuracy' is not a text metric; choose from val_f1, val_f1_micro, val_loss",
        ),
        ({"direction": "up"}, "direction: Input should be 'maximize' or 'minimize' (got 'up')"),
    ],
)
def test_load_optimize_config_metric_and_direction(tmp_path, values, expected):
    path = write_study(tmp_path, name="bad_study.yaml", **values)
    assert one_error(path) == f"{path}: {expected}"


def test_metric_and_direction_not_given_are_the_workloads(tmp_path):
    loss = write_study(tmp_path, name="loss.yaml", metric="val_loss")
    config, _, _ = load_optimize_config(loss)
    assert (config.metric, config.direction) == ("val_loss", "minimize")
    images = tmp_path / "images.yaml"
    images.write_text("task: images\n", encoding="utf-8")
    config, _, workload = load_optimize_config(images)
    assert workload.name == "images"
    assert (config.metric, config.direction) == ("val_accuracy", "maximize")


@pytest.mark.parametrize(
    ("metric", "direction"),
    [("val_f1", "maximize"), ("val_f1_micro", "maximize"), ("val_loss", "minimize")],
)
def test_load_optimize_config_every_metric_with_its_direction(tmp_path, metric, direction):
    path = write_study(tmp_path, metric=metric, direction=direction)
    config, _, _ = load_optimize_config(path)
    assert (config.metric, config.direction) == (metric, direction)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"search_space": space(ngram={"lr": {"type": "float", "low": 0.1, "high": 0.01}})},
            "search_space.architecture.ngram.lr.float: low (0.1) > high (0.01)",
        ),
        (
            {"search_space": space(cnn={"hidden_dim": {"type": "int", "low": 256, "high": 64}})},
            "search_space.architecture.cnn.hidden_dim.int: low (256) > high (64)",
        ),
        (
            {"search_space": space(rnn={"lr": {"type": "float", "low": 0.01, "high": 0.1}})},
            "search_space.architecture.rnn: not an architecture of task text",
        ),
        (
            {
                "search_space": space(
                    ngram={"learning_rate": {"type": "float", "low": 0.1, "high": 1}}
                )
            },
            "search_space.architecture.ngram.learning_rate: value 0.1 is not a valid "
            "learning_rate: unknown key",
        ),
        # lr is an ngram/cnn knob: L-BFGS (linear) has none.
        (
            {"search_space": space(linear={"lr": {"type": "float", "low": 0.01, "high": 0.1}})},
            "search_space.architecture.linear.lr: value 0.01 is not a valid lr: unknown key",
        ),
        # Fixed for the study: the data is prepared and split once, from the base params.
        (
            {"search_space": space(ngram={"seed": {"type": "int", "low": 1, "high": 5}})},
            "search_space.architecture.ngram.seed: value 1 is not a valid seed: unknown key",
        ),
        (
            {
                "search_space": space(
                    ngram={"train_size": {"type": "float", "low": 0.5, "high": 0.9}}
                )
            },
            "search_space.architecture.ngram.train_size: value 0.5 is not a valid train_size",
        ),
        (
            {
                "search_space": space(
                    ngram={"architecture": {"type": "categorical", "choices": ["cnn"]}}
                )
            },
            "search_space.architecture.ngram.architecture: the architecture is chosen above it",
        ),
        (
            {
                "search_space": space(
                    ngram={"dropout_p": {"type": "float", "low": 0.0, "high": 1.0}}
                )
            },
            "search_space.architecture.ngram.dropout_p: value 1.0 is not a valid dropout_p: "
            "Input should be less than 1 (got 1.0)",
        ),
        (
            {"search_space": space(cnn={"lr": {"type": "float", "low": -0.1, "high": 0.1}})},
            "search_space.architecture.cnn.lr: value -0.1 is not a valid lr: "
            "Input should be greater than 0 (got -0.1)",
        ),
        (
            {
                "search_space": space(
                    ngram={"optimizer": {"type": "categorical", "choices": ["adam", "sgd"]}}
                )
            },
            "search_space.architecture.ngram.optimizer: value 'sgd' is not a valid optimizer",
        ),
        (
            {"search_space": space(cnn={"max_filter_size": {"type": "int", "low": 2, "high": 20}})},
            "search_space.architecture.cnn.max_filter_size: value 20 is not a valid "
            "max_filter_size: Input should be less than or equal to 16 (got 20)",
        ),
        (
            {"search_space": {"architecture": {}}},
            "(top level): search_space.architecture: name at least one architecture",
        ),
        (
            {"search_space": {"arch": {"ngram": {}}}},
            "search_space.arch.[key]: Input should be 'architecture' (got 'arch')",
        ),
        (
            {"search_space": space(ngram={"lr": {"type": "uniform", "low": 0.1, "high": 0.2}})},
            "search_space.architecture.ngram.lr: Input tag 'uniform' found using 'type'",
        ),
        ({"sampler": {"name": "Bayes"}}, "sampler.name: Input should be 'TPE'"),
        ({"pruner": {"name": "Early"}}, "pruner.name: Input should be 'Median'"),
        ({"n_trials": 0}, "n_trials: Input should be greater than or equal to 1 (got 0)"),
        ({"n_trials": -4}, "n_trials: Input should be greater than or equal to 1 (got -4)"),
        ({"trials": 4}, "trials: unknown key"),
        (
            {"grace_period": 5, "heartbeat_interval": 5},
            "(top level): grace_period (5 s) must be at least twice heartbeat_interval (5 s)",
        ),
    ],
)
def test_load_optimize_config_bad_value(tmp_path, values, expected):
    path = write_study(tmp_path, name="bad_study.yaml", **values)
    message = one_error(path)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_load_optimize_config_bad_override(tmp_path):
    path = write_study(tmp_path, n_trials=5)
    with pytest.raises(TagifaiError, match=r"n_trials: Input should be greater than or equal to 1"):
        load_optimize_config(path, n_trials=0)


@pytest.mark.parametrize(
    ("first", "second", "kind"),
    [
        # Log and linear scales of one name.
        (
            {"type": "float", "low": 1e-7, "high": 1e-4, "log": True},
            {"type": "float", "low": 1e-7, "high": 1e-4},
            "float",
        ),
        # A float range and a choice of floats.
        (
            {"type": "float", "low": 1e-7, "high": 1e-4},
            {"type": "categorical", "choices": [1e-6, 1e-5]},
            "categorical",
        ),
    ],
)
def test_one_param_name_searched_two_ways_is_refused(tmp_path, first, second, kind):
    """Optuna keeps one distribution kind per name across a study's trials."""
    path = write_study(
        tmp_path,
        search_space=space(ngram={"weight_decay": first}, linear={"weight_decay": second}),
    )
    assert one_error(path) == (
        f"{path}: search_space.architecture.linear.weight_decay: searched as {kind} here but "
        "differently under ngram; one name, one kind of range (and the same choices)"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            {"type": "categorical", "choices": ["adam"]},
            {"type": "categorical", "choices": ["adam", "adamw"]},
        ),
        (
            {"type": "int", "low": 16, "high": 64, "step": 16},
            {"type": "categorical", "choices": [32, 64]},
        ),
    ],
)
def test_one_param_name_with_other_choices_or_kinds_is_refused(tmp_path, first, second):
    name = "optimizer" if first["type"] == "categorical" else "batch_size"
    path = write_study(tmp_path, search_space=space(ngram={name: first}, cnn={name: second}))
    message = one_error(path)
    assert message.startswith(f"{path}: search_space.architecture.cnn.{name}: searched as ")
    assert "differently under ngram" in message


def test_one_param_name_with_other_bounds_is_fine(tmp_path):
    """Different bounds of the same kind are one Optuna distribution kind: allowed."""
    lr_ngram = {"type": "float", "low": 0.001, "high": 0.01, "log": True}
    lr_cnn = {"type": "float", "low": 0.01, "high": 0.1, "log": True}
    path = write_study(tmp_path, search_space=space(ngram={"lr": lr_ngram}, cnn={"lr": lr_cnn}))
    config, _, _ = load_optimize_config(path)
    assert config.architectures["ngram"]["lr"].high == config.architectures["cnn"]["lr"].low


@pytest.mark.parametrize("sampler", ["Grid", "QMC", "CMA-ES"])
def test_fixed_space_samplers_refuse_several_architectures(tmp_path, sampler):
    dropout = {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1}
    path = write_study(
        tmp_path,
        sampler={"name": sampler},
        search_space=space(ngram={"dropout_p": dropout}, cnn={"dropout_p": dropout}),
    )
    assert one_error(path) == (
        f"{path}: sampler {sampler} needs a fixed search space; the space searches "
        "2 architectures: search one, or use TPE"
    )


@pytest.mark.parametrize("sampler", ["QMC", "CMA-ES"])
def test_fixed_space_samplers_take_one_architecture(tmp_path, sampler):
    dropout = {"type": "float", "low": 0.0, "high": 0.5}
    path = write_study(
        tmp_path, sampler={"name": sampler}, search_space=space(cnn={"dropout_p": dropout})
    )
    config, _, _ = load_optimize_config(path)
    assert config.sampler.name == sampler and list(config.architectures) == ["cnn"]


def test_grid_needs_float_step(tmp_path):
    dropout = {"type": "float", "low": 0.0, "high": 0.5}
    path = write_study(
        tmp_path, sampler={"name": "Grid"}, search_space=space(ngram={"dropout_p": dropout})
    )
    assert one_error(path) == (
        f"{path}: search_space.architecture.ngram.dropout_p: "
        "the grid sampler needs a step on float ranges"
    )
    # The same range without a step is fine for any other sampler ...
    ok = write_study(tmp_path, name="tpe.yaml", search_space=space(ngram={"dropout_p": dropout}))
    assert load_optimize_config(ok)[0].architectures["ngram"]["dropout_p"].step is None
    # ... and with a step it makes a grid.
    stepped = {**dropout, "step": 0.1}
    grid = write_study(
        tmp_path,
        name="grid.yaml",
        sampler={"name": "Grid"},
        search_space=space(ngram={"dropout_p": stepped}),
    )
    config, _, _ = load_optimize_config(grid)
    assert config.architectures["ngram"]["dropout_p"].grid() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]


def test_grid_with_one_architecture_runs_every_point_once(tmp_path):
    cnn = {
        "dropout_p": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
        "batch_size": {"type": "categorical", "choices": [32, 64]},
    }
    path = write_study(tmp_path, sampler={"name": "Grid"}, search_space=space(cnn=cnn))
    config, base, _ = load_optimize_config(path)
    study = optuna.create_study(sampler=create_sampler(config))
    seen = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, config, base)
        seen.append((params.model.architecture, params.model.dropout_p, params.model.batch_size))
        return 0.0

    study.optimize(objective, n_trials=20)  # the grid sampler stops the study when done
    assert len(study.trials) == 6
    assert sorted(seen) == [
        ("cnn", dropout, batch) for dropout in (0.0, 0.1, 0.2) for batch in (32, 64)
    ]


def test_grid_too_big_is_refused(tmp_path):
    huge = {"max_ngrams": {"type": "int", "low": 1, "high": 1_000_000}}
    path = write_study(tmp_path, sampler={"name": "Grid"}, search_space=space(ngram=huge))
    assert one_error(path) == (f"{path}: the grid has 1000000 points; at most {MAX_GRID_POINTS}")


def test_grid_without_search_space_is_refused_at_load(tmp_path):
    path = write_study(tmp_path, sampler={"name": "Grid"})
    assert one_error(path) == f"{path}: sampler Grid needs a search_space to make a grid of"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"sampler": {"name": "TPE", "kwargs": {"bogus": 1}}}, ("sampler TPE", "'bogus'")),
        (
            {"pruner": {"name": "Median", "kwargs": {"patience": 2}}},
            ("pruner Median", "'patience'"),
        ),
    ],
)
def test_bad_sampler_or_pruner_kwargs_name_the_file(tmp_path, values, expected):
    path = write_study(tmp_path, **values)
    message = one_error(path)
    assert message.startswith(f"{path}: {expected[0]}: ")
    assert expected[1] in message


def test_bad_sampler_or_pruner_kwargs_fail_at_load(tmp_path):
    """Whatever the prefix, a keyword the sampler or pruner rejects fails when loading."""
    sampler = write_study(tmp_path, name="s.yaml", sampler={"name": "TPE", "kwargs": {"bogus": 1}})
    assert "sampler TPE: " in one_error(sampler) and "'bogus'" in one_error(sampler)
    pruner = write_study(tmp_path, name="p.yaml", pruner={"name": "Median", "kwargs": {"x": 2}})
    assert "pruner Median: " in one_error(pruner) and "'x'" in one_error(pruner)


def test_load_optimize_config_bad_base_params_names_that_file(tmp_path):
    params = write_params(
        tmp_path / "base.json", {"model": {"architecture": "ngram", "dropout_p": 1.5}}
    )
    path = tmp_path / "study.yaml"
    path.write_text(f"params: {params}\n", encoding="utf-8")
    message = one_error(path)
    assert message.startswith(f"{params}: model.")
    assert "dropout_p: Input should be less than 1" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("n_trials: [1,\n", "invalid YAML"),
        ("- n_trials: 3\n", "expected a mapping of keys to values"),
        ("", "expected a mapping of keys to values"),
    ],
)
def test_load_optimize_config_unreadable(tmp_path, content, expected):
    path = tmp_path / "odd.yaml"
    path.write_text(content, encoding="utf-8")
    assert one_error(path).startswith(f"{path}: {expected}")


def test_load_optimize_config_missing_file(tmp_path):
    with pytest.raises(TagifaiError, match=r"absent\.yaml: file not found"):
        load_optimize_config(tmp_path / "absent.yaml")


# --- suggest_params: a conditional space on a real Optuna trial ------------------------


@pytest.fixture
def searched(tmp_path) -> tuple[Any, TextParams]:
    config, base, _ = load_optimize_config(write_study(tmp_path, search_space=SEARCH_SPACE))
    assert isinstance(base, TextParams)
    return config, base


@pytest.mark.parametrize("architecture", ["linear", "ngram", "cnn"])
def test_suggest_params_samples_only_the_chosen_architecture(searched, architecture):
    config, base = searched
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({ARCHITECTURE: architecture})
    trial = study.ask()
    params = suggest_params(trial, config, base)

    searched_here = config.architectures[architecture]
    assert set(trial.params) == {ARCHITECTURE, *searched_here}
    assert isinstance(params.model, ARCHITECTURE_PARAMS[architecture])
    assert params.model.architecture == architecture
    for name, bounds in searched_here.items():
        value = getattr(params.model, name)
        assert value == trial.params[name]
        if bounds.type == "categorical":
            assert value in bounds.choices
        else:
            assert bounds.low <= value <= bounds.high
    # Data preparation, seed and the rest are the base's: a trial changes only its model.
    assert params.model_dump(exclude={"model"}) == base.model_dump(exclude={"model"})
    assert params.model_copy(update={"model": base.model}) == base
    # The same params come back from the values Optuna stored.
    assert params_for(base, trial.params) == params


def test_suggest_params_distributions_are_the_configs(searched):
    config, base = searched
    study = optuna.create_study()
    study.enqueue_trial({ARCHITECTURE: "ngram"})
    trial = study.ask()
    suggest_params(trial, config, base)
    assert trial.distributions == {
        ARCHITECTURE: CategoricalDistribution(("linear", "ngram", "cnn")),
        "lr": FloatDistribution(0.001, 0.1, log=True),
        "hidden_dim": IntDistribution(64, 256, step=64),
    }


def test_suggest_params_unsearched_knobs_keep_base_or_defaults(searched):
    """The base's architecture keeps its unsearched values; another starts from defaults."""
    config, base = searched
    study = optuna.create_study()
    trials = {}
    for architecture in ("ngram", "cnn"):
        study.enqueue_trial({ARCHITECTURE: architecture})
        trial = study.ask()
        trials[architecture] = suggest_params(trial, config, base)
    ngram, cnn = trials["ngram"].model, trials["cnn"].model
    assert isinstance(ngram, NgramParams) and isinstance(cnn, CnnParams)
    assert base.model.architecture == "ngram"
    # Every ngram knob but the two searched ones is the base's.
    base_ngram = base.model.model_copy(update={"lr": ngram.lr, "hidden_dim": ngram.hidden_dim})
    assert ngram == base_ngram
    assert cnn.lr == CnnParams().lr != base.model.lr  # the base's lr 0.01 is not carried over
    assert cnn == CnnParams(num_filters=cnn.num_filters, optimizer=cnn.optimizer)


def test_suggest_params_without_a_space_is_the_base(tmp_path):
    config, base, _ = load_optimize_config(write_study(tmp_path))
    trial = optuna.create_study().ask()
    assert suggest_params(trial, config, base) is base
    assert trial.params == {}
    assert params_for(base, {}) is base


def test_suggest_params_over_many_trials_covers_every_architecture(searched):
    config, base = searched
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(15):
        trial = study.ask()
        params = suggest_params(trial, config, base)
        architecture = trial.params[ARCHITECTURE]
        assert params.model.architecture == architecture
        assert set(trial.params) - {ARCHITECTURE} == set(config.architectures[architecture])
        seen.add(architecture)
        study.tell(trial, 0.0)
    assert seen == {"linear", "ngram", "cnn"}


@pytest.mark.parametrize("sampler", ["TPE", "Random", "CMA-ES", "QMC", "Grid", "NSGAII", "GP"])
def test_every_sampler_samples_valid_params(tmp_path, sampler):
    """Each listed sampler is installed and its trials make params that validate (CMA-ES
    needs the cmaes package; GP needs torch and scipy)."""
    dropout = {"type": "float", "low": 0.0, "high": 0.5, "step": 0.1}
    hidden = {"type": "int", "low": 16, "high": 64, "step": 16}
    path = write_study(
        tmp_path,
        sampler={"name": sampler},
        search_space=space(ngram={"dropout_p": dropout, "hidden_dim": hidden}),
    )
    config, base, _ = load_optimize_config(path)
    study = optuna.create_study(sampler=create_sampler(config), direction="maximize")
    seen = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, config, base)
        seen.append((params.model.dropout_p, params.model.hidden_dim))
        return params.model.dropout_p + params.model.hidden_dim / 64

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental samplers, independent sampling notes
        study.optimize(objective, n_trials=4)
    assert len(seen) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert all(0.0 <= d <= 0.5 and h in (16, 32, 48, 64) for d, h in seen)


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-3` as a string; the config reader reads it as YAML 1.2
    and JSON do, so strict float fields take it (and a quoted one stays a string)."""
    path = write_study(tmp_path)
    path.write_text(
        path.read_text()
        + "search_space:\n  architecture:\n    ngram:\n"
        + "      lr: {type: float, low: 1e-4, high: 5E-2, log: true}\n"
    )
    config, _, _ = load_optimize_config(path)
    assert config.architectures["ngram"]["lr"] == FloatSpace(
        type="float", low=1e-4, high=5e-2, log=True
    )
    quoted = write_study(tmp_path, name="q.yaml")
    quoted.write_text(
        quoted.read_text()
        + "search_space:\n  architecture:\n    ngram:\n"
        + "      lr: {type: float, low: '1e-4', high: 0.05}\n"
    )
    assert "valid number" in one_error(quoted)


def test_an_option_replaces_the_files_value_before_it_is_checked(tmp_path, monkeypatch):
    """A file's storage in a folder that does not exist is no error when --storage replaces
    it; the default folder experiments/ is made on first use, so naming it is fine too."""
    monkeypatch.chdir(tmp_path)
    path = write_study(tmp_path, storage="sqlite:////nonexistent/dir/x.db")
    assert "storage: the SQLite file's folder /nonexistent/dir does not exist" in one_error(path)
    config, _, _ = load_optimize_config(path, storage="sqlite:///experiments/optuna.db")
    assert config.storage == "sqlite:///experiments/optuna.db"
    assert not (tmp_path / "experiments").exists()  # nothing made by loading
