"""Files from tagifai 0.1 (model format 1, best_params schema 1) are refused with one line
naming the version gap; files tagifai did not write are refused before any code runs."""

from __future__ import annotations

import json

import pytest
import yaml

from tagifai.best_params import read_best_params
from tagifai.errors import TagifaiError
from tagifai.logged_models import load_predictor
from tagifai.predict import Predictor


def _mlmodel(folder, pyfunc: dict, metadata: dict | None = None) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"flavors": {"python_function": pyfunc}, "mlflow_version": "3.17.2"}
    if metadata is not None:
        spec["metadata"] = metadata
    (folder / "MLmodel").write_text(yaml.safe_dump(spec))
    return str(folder)


def test_a_model_of_tagifai_0_1_is_refused_naming_the_format(tmp_path):
    uri = _mlmodel(
        tmp_path / "old",
        {"loader_module": "mlflow.pyfunc.loaders.code_model", "model_code_path": "pyfunc_model.py"},
    )
    with pytest.raises(TagifaiError, match=r"tagifai 0\.1 \(model format 1\).*format 2"):
        load_predictor(uri)


@pytest.mark.parametrize(
    ("pyfunc", "metadata"),
    [
        ({"loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl"}, None),
        (
            {"loader_module": "mlflow.pyfunc.model", "python_model": "python_model.pkl"},
            {"tagifai_model_format": 2, "task": "text"},  # claims to be ours, but pickled
        ),
        ({"loader_module": "mlflow.sklearn"}, {"tagifai_model_format": 2}),
    ],
)
def test_a_model_tagifai_did_not_write_is_refused(tmp_path, pyfunc, metadata):
    uri = _mlmodel(tmp_path / "foreign", pyfunc, metadata)
    with pytest.raises(TagifaiError, match="not a tagifai model"):
        load_predictor(uri)


def test_another_model_format_is_refused(tmp_path):
    uri = _mlmodel(
        tmp_path / "future",
        {"loader_module": "mlflow.pyfunc.loaders.code_model", "model_code_path": "pyfunc_model.py"},
        {"tagifai_model_format": 3},
    )
    with pytest.raises(TagifaiError, match="model format 3; this tagifai reads format 2"):
        load_predictor(uri)


def test_a_predictor_folder_of_tagifai_0_1_is_refused(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"params": {}, "threshold": [0.5]}))
    with pytest.raises(TagifaiError, match="model format 1"):
        Predictor.load(tmp_path)


def test_a_best_params_file_of_tagifai_0_1_is_refused(tmp_path):
    old = tmp_path / "best_params.json"
    old.write_text(json.dumps({"study_name": "s", "params": {"lr": 0.1}, "threshold": 0.4}))
    with pytest.raises(TagifaiError, match="schema 1"):
        read_best_params(old)
