"""The best-params artifact: one typed record of a study's result, for train-best and inference.

``tagifai optimize`` writes it (as ``best_params.json`` on the study's parent run and
under ``config/``): the study and its best trial, the params that trial used, and
the decision rule with its threshold, stored once. Reading validates it against
this schema and the params against their workload's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

from tagifai.config import read_mapping, validate
from tagifai.errors import TagifaiError
from tagifai.files import write_json_atomic
from tagifai.workloads import get_workload
from tagifai.workloads.base import DecisionRule, RunParams

__all__ = ["SCHEMA_VERSION", "BestParams", "read_best_params", "write_best_params"]

SCHEMA_VERSION = 2  # 1: tagifai 0.1 (flat text params, threshold in four shapes)


class BestParams(BaseModel):
    """A study's best trial, enough to train it again and to predict with its rule."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[2] = 2  # SCHEMA_VERSION
    task: str
    study_name: str
    metric: str
    direction: Literal["maximize", "minimize"]
    # Strict, like every file tagifai reads: "3" is not a trial number.
    value: StrictFloat = Field(allow_inf_nan=False)
    trial_number: StrictInt = Field(ge=0)
    mlflow_run_id: str | None = None  # the best trial's child run
    parent_run_id: str | None = None
    data_source: str | None = None  # None: the workload's embedded sample
    extra_source: str | None = None  # e.g. the text taxonomy
    data_digest: str
    tuned: dict[str, bool | int | float | str]  # what the sampler chose
    params: dict[str, Any]  # every param of the trial (the workload's params, as JSON)
    decision: DecisionRule  # tuned on validation, in the best trial

    def run_params(self, source: str = "best_params.json") -> RunParams:
        """The trial's params as its workload's typed model."""
        workload = get_workload(self.task)
        return validate(workload.params_type, self.params, f"{source}: params")


def read_best_params(path: Path | str) -> BestParams:
    """Read and validate a best-params file (its params included).

    Raises:
        TagifaiError: If the file is missing, of another schema version, or invalid.
    """
    data = read_mapping(path)
    if "schema_version" not in data:
        hint = "it has no schema_version" if "study_name" in data else "not a best-params file"
        raise TagifaiError(
            f"{path}: {hint}; tagifai 0.1 wrote best_params.json without one (schema 1): "
            f"run a new study to write schema {SCHEMA_VERSION}"
        )
    best = validate(BestParams, data, str(path))
    best.run_params(str(path))  # the params must be valid for their workload too
    return best


def write_best_params(path: Path | str, best: BestParams) -> None:
    """Write the record atomically."""
    write_json_atomic(path, best.model_dump(mode="json"))
