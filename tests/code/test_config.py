"""Tests of tagifai.config: params and study configs load typed, or fail naming file and key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tagifai.config import (
    CategoricalSpace,
    FloatSpace,
    IntSpace,
    Params,
    load_optimize_config,
    load_params,
)
from tagifai.errors import TagifaiError

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_params(path: Path, **values: Any) -> Path:
    path.write_text(json.dumps(values), encoding="utf-8")
    return path


def write_study(tmp_path: Path, name: str = "study.yaml", **values: Any) -> Path:
    """A study YAML whose base params file lives in tmp_path too."""
    params = write_params(tmp_path / "params.json", lr=0.01, architecture="ngram")
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"params": str(params), **values}), encoding="utf-8")
    return path


# --- load_params ---------------------------------------------------------------------


def test_load_params_good_file(tmp_path):
    path = write_params(tmp_path / "params.json", lr=0.02, batch_size=16, exclude_tags=["python"])
    params = load_params(path)
    assert params.lr == 0.02
    assert params.batch_size == 16
    assert params.exclude_tags == ("python",)
    assert params.dropout_p == Params().dropout_p  # defaults fill the rest
    assert params.filter_sizes == (1, 2, 3, 4)


def test_params_are_frozen(tmp_path):
    params = load_params(write_params(tmp_path / "params.json"))
    with pytest.raises(ValueError, match="frozen"):
        params.lr = 0.5
    assert params.model_copy(update={"lr": 0.5}).lr == 0.5
    assert params.lr == Params().lr


def test_load_shipped_params():
    # config/best_params.json is written by `tagifai optimize`, not shipped.
    params = load_params(REPO_ROOT / "config" / "params.json")
    assert params.architecture == "linear" and params.weight_decay > 0
    assert params == Params.model_validate(params.model_dump())


def test_load_params_best_params_shape(tmp_path):
    path = tmp_path / "best_params.json"
    payload = {"study_name": "s", "value": 0.7, "params": {"lr": 0.005, "architecture": "ngram"}}
    path.write_text(json.dumps(payload), encoding="utf-8")
    params = load_params(path)
    assert params.lr == 0.005
    assert params.architecture == "ngram"


def test_load_params_params_key_without_study_name_is_unknown(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"params": {"lr": 0.005}}), encoding="utf-8")
    with pytest.raises(TagifaiError) as info:
        load_params(path)
    assert str(info.value) == f"{path}: params: unknown key"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"learning_rate": 0.1}, "learning_rate: unknown key"),
        ({"batch_size": "big"}, "batch_size: Input should be a valid integer"),
        ({"num_epochs": 2.5}, "num_epochs: Input should be a valid integer"),
        (
            {"architecture": "rnn"},
            "architecture: Input should be 'linear', 'ngram' or 'cnn' (got 'rnn')",
        ),
        ({"dropout_p": 1.0}, "dropout_p: Input should be less than 1 (got 1.0)"),
        ({"lr": -0.001}, "lr: Input should be greater than 0 (got -0.001)"),
        ({"min_tag_freq": 0}, "min_tag_freq: Input should be greater than or equal to 1 (got 0)"),
        (
            {"train_size": 0.8, "val_size": 0.2},
            "(top level): train_size + val_size must leave room for a test split, got 0.8 + 0.2",
        ),
    ],
)
def test_load_params_bad_value(tmp_path, values, expected):
    path = write_params(tmp_path / "bad_params.json", **values)
    with pytest.raises(TagifaiError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_load_params_reports_how_many_more_errors(tmp_path):
    path = write_params(tmp_path / "p.json", lr=-1, dropout_p=2.0)
    with pytest.raises(TagifaiError, match=r"\[\+1 more\]$"):
        load_params(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"lr": 0.01,\n "batch_size": }', "invalid JSON at line 2"),
        (b'{"seed": "\xff"}', "not UTF-8 text (byte 10)"),
        (b'[{"lr": 0.01}]', "expected a mapping of keys to values"),
    ],
)
def test_load_params_unreadable(tmp_path, content, expected):
    path = tmp_path / "params.json"
    path.write_bytes(content)
    with pytest.raises(TagifaiError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_load_params_missing_file_and_directory(tmp_path):
    with pytest.raises(TagifaiError, match=r"missing\.json: file not found"):
        load_params(tmp_path / "missing.json")
    folder = tmp_path / "folder.json"
    folder.mkdir()
    with pytest.raises(TagifaiError, match=r"folder\.json: cannot read"):
        load_params(folder)


# --- load_optimize_config ------------------------------------------------------------


SEARCH_SPACE = {
    "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
    "hidden_dim": {"type": "int", "low": 64, "high": 256, "step": 64},
    "architecture": {"type": "categorical", "choices": ["ngram", "cnn"]},
}


def test_load_optimize_config_valid(tmp_path):
    path = write_study(
        tmp_path,
        study_name="mine",
        n_trials=5,
        sampler={"name": "Random", "kwargs": {"seed": 1}},
        pruner={"name": "Nop"},
        search_space=SEARCH_SPACE,
    )
    config, base = load_optimize_config(path)
    assert config.study_name == "mine"
    assert config.n_trials == 5
    assert config.metric == "val_f1" and config.direction == "maximize"
    assert config.sampler.name == "Random" and config.sampler.kwargs == {"seed": 1}
    assert config.pruner.name == "Nop"
    assert config.search_space["lr"] == FloatSpace(type="float", low=0.001, high=0.1, log=True)
    assert isinstance(config.search_space["hidden_dim"], IntSpace)
    assert config.search_space["hidden_dim"].grid() == [64, 128, 192, 256]
    assert config.search_space["architecture"] == CategoricalSpace(
        type="categorical", choices=("ngram", "cnn")
    )
    assert base.lr == 0.01 and base.architecture == "ngram"


def test_load_shipped_optimize_config(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # its params: path is relative to the project root
    config, base = load_optimize_config(REPO_ROOT / "config" / "optimize.yaml")
    assert config.n_trials >= 1
    assert set(config.search_space) <= set(Params.model_fields)
    assert base == load_params(REPO_ROOT / config.params)


def test_load_optimize_config_default_params_path_is_relative_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    write_params(tmp_path / "config" / "params.json", lr=0.0123)
    path = tmp_path / "study.yaml"
    path.write_text("n_trials: 2\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    _, base = load_optimize_config(path)
    assert base.lr == 0.0123


def test_load_optimize_config_cli_overrides_win(tmp_path):
    path = write_study(tmp_path, study_name="from-file", n_trials=20, seed=1)
    config, _ = load_optimize_config(path, n_trials=3, seed=None, study_name="from-cli")
    assert config.n_trials == 3
    assert config.study_name == "from-cli"
    assert config.seed == 1  # None means "not given": the file's value stays


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (
            {"search_space": {"lr": {"type": "float", "low": 0.1, "high": 0.01}}},
            "search_space.lr.float: low (0.1) > high (0.01)",
        ),
        (
            {"search_space": {"hidden_dim": {"type": "int", "low": 256, "high": 64}}},
            "search_space.hidden_dim.int: low (256) > high (64)",
        ),
        (
            {"search_space": {"learning_rate": {"type": "float", "low": 0.1, "high": 0.2}}},
            "search_space has unknown params: learning_rate",
        ),
        ({"search_space": {"seed": {"type": "int", "low": 1, "high": 5}}}, "may not tune 'seed'"),
        ({"sampler": {"name": "Bayes"}}, "sampler.name: Input should be 'TPE'"),
        ({"pruner": {"name": "Early"}}, "pruner.name: Input should be 'Median'"),
        (
            {"metric": "val_loss", "direction": "maximize"},
            "metric val_loss must be minimized, not maximized",
        ),
        (
            {"metric": "val_f1", "direction": "minimize"},
            "metric val_f1 must be maximized, not minimized",
        ),
        ({"n_trials": 0}, "n_trials: Input should be greater than or equal to 1 (got 0)"),
        ({"n_trials": -4}, "n_trials: Input should be greater than or equal to 1 (got -4)"),
        ({"trials": 4}, "trials: unknown key"),
        (
            {"search_space": {"dropout_p": {"type": "float", "low": 0.0, "high": 1.0}}},
            "search_space.dropout_p: value 1.0 is not a valid dropout_p: "
            "Input should be less than 1 (got 1.0)",
        ),
        (
            {"search_space": {"lr": {"type": "float", "low": -0.1, "high": 0.1}}},
            "search_space.lr: value -0.1 is not a valid lr",
        ),
        (
            {"search_space": {"optimizer": {"type": "categorical", "choices": ["adam", "sgd"]}}},
            "search_space.optimizer: value 'sgd' is not a valid optimizer",
        ),
        (
            {"search_space": {"train_size": {"type": "float", "low": 0.5, "high": 0.9}}},
            "search_space may not tune 'train_size' (fixed for the study)",
        ),
    ],
)
def test_load_optimize_config_bad_value(tmp_path, values, expected):
    path = write_study(tmp_path, name="bad_study.yaml", **values)
    with pytest.raises(TagifaiError) as info:
        load_optimize_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_load_optimize_config_bad_override(tmp_path):
    path = write_study(tmp_path, n_trials=5)
    with pytest.raises(TagifaiError, match=r"n_trials: Input should be greater than or equal to 1"):
        load_optimize_config(path, n_trials=0)


def test_load_optimize_config_grid_needs_float_step(tmp_path):
    space = {"dropout_p": {"type": "float", "low": 0.0, "high": 0.5}}
    path = write_study(tmp_path, sampler={"name": "Grid"}, search_space=space)
    with pytest.raises(TagifaiError) as info:
        load_optimize_config(path)
    assert str(info.value) == (
        f"{path}: search_space.dropout_p: the grid sampler needs a step on float ranges"
    )
    # The same range without a step is fine for any other sampler ...
    ok = write_study(tmp_path, name="tpe.yaml", search_space=space)
    assert load_optimize_config(ok)[0].search_space["dropout_p"].step is None
    # ... and with a step it makes a grid.
    stepped = {"dropout_p": {**space["dropout_p"], "step": 0.1}}
    grid = write_study(tmp_path, name="grid.yaml", sampler={"name": "Grid"}, search_space=stepped)
    config, _ = load_optimize_config(grid)
    assert config.search_space["dropout_p"].grid() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]


def test_load_optimize_config_bad_base_params_names_that_file(tmp_path):
    params = write_params(tmp_path / "base.json", dropout_p=1.5)
    path = tmp_path / "study.yaml"
    path.write_text(f"params: {params}\n", encoding="utf-8")
    with pytest.raises(TagifaiError) as info:
        load_optimize_config(path)
    assert str(info.value).startswith(f"{params}: dropout_p: Input should be less than 1")


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
    with pytest.raises(TagifaiError) as info:
        load_optimize_config(path)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_load_optimize_config_missing_file(tmp_path):
    with pytest.raises(TagifaiError, match=r"absent\.yaml: file not found"):
        load_optimize_config(tmp_path / "absent.yaml")
