"""Paths and typed, frozen configuration: training params and the optimize study.

Every hyperparameter lives in a versioned file under ``config/`` and loads into a
frozen pydantic model here. A bad value fails at load time with one line naming
the file, the key and the reason. Nothing in this module touches the disk or
MLflow when imported.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tagifai.errors import TagifaiError

__all__ = [
    "BEST_PARAMS_FILE",
    "CONFIG_DIR",
    "DATA_CACHE_DIR",
    "DEFAULT_OPTIMIZE_CONFIG",
    "DEFAULT_PARAMS_FILE",
    "EXPERIMENTS_DIR",
    "SAMPLE_PROJECTS",
    "SAMPLE_TAGS",
    "CategoricalSpace",
    "FloatSpace",
    "IntSpace",
    "OptimizeConfig",
    "Params",
    "PrunerConfig",
    "SamplerConfig",
    "describe_validation_error",
    "load_optimize_config",
    "load_params",
]

# Paths are relative to the working directory (the project root when run through
# the Makefile or `mlflow run .`), except the sample data shipped inside the package.
SAMPLE_DATA_DIR = Path(__file__).parent / "sample_data"
SAMPLE_PROJECTS = SAMPLE_DATA_DIR / "projects.json"
SAMPLE_TAGS = SAMPLE_DATA_DIR / "tags.json"
CONFIG_DIR = Path("config")
DEFAULT_PARAMS_FILE = CONFIG_DIR / "params.json"
DEFAULT_OPTIMIZE_CONFIG = CONFIG_DIR / "optimize.yaml"
BEST_PARAMS_FILE = CONFIG_DIR / "best_params.json"
EXPERIMENTS_DIR = Path("experiments")
DATA_CACHE_DIR = Path("data")

# Tags too general to say anything about a project (as in the original pipeline).
GENERAL_TAGS = (
    "machine-learning",
    "deep-learning",
    "data-science",
    "neural-networks",
    "python",
    "r",
    "visualization",
)


class Params(BaseModel):
    """Everything needed to prepare the data, build the model and train it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Literal["text"] = "text"  # which Task turns raw data into tensors (tagifai.task)

    # Data preparation (applied before the split).
    lower: bool = True  # lowercase the text
    stopwords: bool = False  # drop English stopwords (scikit-learn's list)
    exclude_tags: tuple[str, ...] = GENERAL_TAGS  # labels too general to be useful
    min_tag_freq: int = Field(30, ge=1)  # tags on fewer projects are dropped
    add_parent_tags: bool = False  # also tag a project with its tags' parents
    train_size: float = Field(0.7, gt=0, lt=1)  # fraction of projects for training
    val_size: float = Field(0.15, gt=0, lt=1)  # for early stopping, tuning, threshold
    short_text_words: int = Field(8, ge=1)  # texts up to this many words form a slice

    # Tokens.
    char_level: bool = False  # characters instead of words as CNN tokens
    max_length: int = Field(256, ge=8)  # tokens kept per text (longer ones are cut)
    min_token_freq: int = Field(1, ge=1)  # rarer tokens map to <unk>
    max_ngrams: int = Field(2**17, ge=1)  # n-grams kept per family (linear, ngram), most frequent

    # Model.
    # linear: logistic regression on TF-IDF n-grams; ngram: mean of n-gram embeddings + MLP;
    # cnn: the original text CNN over word (or character) tokens.
    architecture: Literal["linear", "ngram", "cnn"] = "cnn"
    # linear only: scale each tag's features by their naive-Bayes log-count ratio while
    # fitting (NBSVM, Wang & Manning 2012); n-grams that tell a tag apart are penalised less.
    nb_scale: bool = False
    embedding_dim: int = Field(128, ge=1)
    num_filters: int = Field(128, ge=1)  # per filter size (cnn)
    max_filter_size: int = Field(4, ge=1, le=16)  # filter sizes 1..max (cnn)
    hidden_dim: int = Field(128, ge=1)
    dropout_p: float = Field(0.3, ge=0, lt=1)

    # Training.
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(0.0, ge=0)  # L2 penalty (the only regulariser of linear)
    batch_size: int = Field(64, ge=1)
    num_epochs: int = Field(30, ge=1)  # upper bound; early stopping usually ends sooner
    patience: int = Field(5, ge=1)  # epochs without val improvement before stopping
    lr_patience: int = Field(2, ge=1)  # epochs without val improvement before lr *= lr_factor
    lr_factor: float = Field(0.5, gt=0, lt=1)
    # Weigh each tag's positives and negatives equally (scikit-learn's class_weight="balanced"),
    # so rare tags are not drowned by their negatives.
    class_weights: bool = True
    threshold_mode: Literal["global", "per_class"] = "global"  # one cut-off or one per tag
    seed: int = Field(1234, ge=0, lt=2**32)  # numpy's seed range (split and initial weights)

    @model_validator(mode="after")
    def _check_split(self) -> Params:
        if self.train_size + self.val_size >= 1:
            raise ValueError(
                f"train_size + val_size must leave room for a test split, "
                f"got {self.train_size} + {self.val_size}"
            )
        return self

    @property
    def filter_sizes(self) -> tuple[int, ...]:
        """Convolution widths of the CNN: 1, 2, ..., max_filter_size."""
        return tuple(range(1, self.max_filter_size + 1))


# --- the optimize study --------------------------------------------------------------


class IntSpace(BaseModel):
    """An integer parameter: ``suggest_int(low, high, step, log)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntSpace:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if self.log and (self.step != 1 or self.low < 1):
            raise ValueError("log=true needs step 1 and low >= 1")
        return self

    def values(self) -> list[Any]:
        """The bounds (for validation) of this range."""
        return [self.low, self.high]

    def grid(self) -> list[Any]:
        """Every value of the range, for the grid sampler."""
        return list(range(self.low, self.high + 1, self.step))


class FloatSpace(BaseModel):
    """A float parameter: ``suggest_float(low, high, step=..., log=...)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatSpace:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if self.log and (self.step is not None or self.low <= 0):
            raise ValueError("log=true needs low > 0 and no step")
        return self

    def values(self) -> list[Any]:
        """The bounds (for validation) of this range."""
        return [self.low, self.high]

    def grid(self) -> list[Any]:
        """Every value of the range, for the grid sampler (needs a step)."""
        if self.step is None:
            raise ValueError("the grid sampler needs a step on float ranges")
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]


class CategoricalSpace(BaseModel):
    """A choice among values: ``suggest_categorical(choices)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["categorical"]
    choices: tuple[bool | int | float | str, ...] = Field(min_length=1)

    def values(self) -> list[Any]:
        """Every choice (for validation)."""
        return list(self.choices)

    def grid(self) -> list[Any]:
        """Every choice, for the grid sampler."""
        return list(self.choices)


SearchSpace = Annotated[IntSpace | FloatSpace | CategoricalSpace, Field(discriminator="type")]

# Params applied before the split, once per study.
DATA_PARAMS = (
    "lower",
    "stopwords",
    "exclude_tags",
    "min_tag_freq",
    "add_parent_tags",
    "train_size",
    "val_size",
)
SAMPLERS = ("TPE", "Random", "CMA-ES", "QMC", "Grid", "NSGAII", "GP")
PRUNERS = ("Median", "Percentile", "SuccessiveHalving", "Hyperband", "Patient", "Threshold", "Nop")
# Validation metrics the objective can return, with the only direction that makes sense.
METRIC_DIRECTIONS = {
    "val_f1": "maximize",  # weighted F1 at the threshold tuned on validation
    "val_f1_micro": "maximize",
    "val_loss": "minimize",
}


class SamplerConfig(BaseModel):
    """An Optuna sampler by name, with keyword arguments for its constructor."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Literal["TPE", "Random", "CMA-ES", "QMC", "Grid", "NSGAII", "GP"] = "TPE"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class PrunerConfig(BaseModel):
    """An Optuna pruner by name, with keyword arguments for its constructor."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: Literal[
        "Median", "Percentile", "SuccessiveHalving", "Hyperband", "Patient", "Threshold", "Nop"
    ] = "Median"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class OptimizeConfig(BaseModel):
    """One Optuna study: what to optimise, how to search and where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    study_name: str = Field("tagifai", min_length=1)  # also the MLflow experiment name
    metric: Literal["val_f1", "val_f1_micro", "val_loss"] = "val_f1"
    direction: Literal["maximize", "minimize"] = "maximize"
    n_trials: int = Field(20, ge=1)  # total for the study, resumed runs included
    timeout: float | None = Field(None, gt=0)  # seconds for this invocation
    seed: int = Field(42, ge=0, lt=2**32)  # sampler seed: same seed and config, same trials
    storage: str | None = None  # Optuna storage URL; default sqlite under experiments/
    heartbeat_interval: int = Field(5, ge=1)  # seconds between a running trial's heartbeats
    grace_period: int = Field(20, ge=2)  # seconds without heartbeat before a trial is dead
    max_retry: int = Field(2, ge=0)  # times a dead worker's trial is queued again
    params: str = str(DEFAULT_PARAMS_FILE)  # base params every trial starts from
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    search_space: dict[str, SearchSpace] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> OptimizeConfig:
        expected = METRIC_DIRECTIONS[self.metric]
        if self.direction != expected:
            raise ValueError(
                f"metric {self.metric} must be {expected}d, not {self.direction}d "
                "(pruning and the objective both use it)"
            )
        if self.grace_period < 2 * self.heartbeat_interval:
            # A live trial that misses one heartbeat (a slow storage write) must not be
            # taken for dead, failed and run again; Optuna's own default is 2x.
            raise ValueError(
                f"grace_period ({self.grace_period} s) must be at least twice "
                f"heartbeat_interval ({self.heartbeat_interval} s)"
            )
        unknown = sorted(set(self.search_space) - set(Params.model_fields))
        if unknown:
            raise ValueError(f"search_space has unknown params: {', '.join(unknown)}")
        # The data is prepared and split once per study, from the base params: a
        # trial changing these would not see its own value (and serving would).
        for name in (*DATA_PARAMS, "task", "seed"):
            if name in self.search_space:
                raise ValueError(f"search_space may not tune {name!r} (fixed for the study)")
        return self


# --- loading -------------------------------------------------------------------------


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """Turn a pydantic error into one line: ``source: key.path: reason (got value)``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    message = err["msg"].removeprefix("Value error, ")
    got = f" (got {err['input']!r})" if err["type"] not in ("missing", "value_error") else ""
    if err["type"] == "extra_forbidden":
        message, got = "unknown key", ""
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"{source}: {where}: {message}{got}{more}"


def _read_mapping(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML file holding one mapping, with errors that name the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TagifaiError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise TagifaiError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise TagifaiError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise TagifaiError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise TagifaiError(f"{path}: invalid YAML{line}") from None
    if not isinstance(data, dict):
        raise TagifaiError(f"{path}: expected a mapping of keys to values")
    return data


def load_params(path: Path | str = DEFAULT_PARAMS_FILE) -> Params:
    """Load training params from a JSON file.

    A ``best_params.json`` written by ``tagifai optimize`` is accepted too: its
    ``params`` entry is read and the study metadata around it ignored.

    Args:
        path: JSON file of params.

    Returns:
        The validated, frozen params.

    Raises:
        TagifaiError: If the file is missing, unreadable or holds a bad value.
    """
    path = Path(path)
    data = _read_mapping(path)
    if "params" in data and isinstance(data["params"], dict) and "study_name" in data:
        data = data["params"]
    try:
        return Params.model_validate(data)
    except ValidationError as exc:
        raise TagifaiError(describe_validation_error(exc, str(path))) from None


def load_optimize_config(
    path: Path | str = DEFAULT_OPTIMIZE_CONFIG, **overrides: Any
) -> tuple[OptimizeConfig, Params]:
    """Load a study config and its base params; CLI overrides win over the file.

    Every range in the search space is checked against the params model, so a
    dropout of 1.0 or a negative lr fails here, before anything is logged.

    Args:
        path: YAML (or JSON) study config.
        **overrides: Values from the command line; ``None`` means "not given".

    Returns:
        The study config and the base params the trials start from.

    Raises:
        TagifaiError: On any unreadable file or invalid value.
    """
    path = Path(path)
    data = _read_mapping(path)
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        config = OptimizeConfig.model_validate(data)
    except ValidationError as exc:
        raise TagifaiError(describe_validation_error(exc, str(path))) from None
    base = load_params(config.params)
    base_dict = base.model_dump()
    for name, space in config.search_space.items():
        for value in space.values():
            try:
                Params.model_validate({**base_dict, name: value})
            except ValidationError as exc:
                reason = describe_validation_error(exc, str(path)).split(": ", 2)[-1]
                raise TagifaiError(
                    f"{path}: search_space.{name}: value {value!r} is not a valid {name}: {reason}"
                ) from None
    if config.sampler.name == "Grid":
        for name, space in config.search_space.items():
            try:
                space.grid()
            except ValueError as exc:
                raise TagifaiError(f"{path}: search_space.{name}: {exc}") from None
    _check_sampler_and_pruner(config, path)
    return config, base


def _check_sampler_and_pruner(config: OptimizeConfig, path: Path) -> None:
    """Build the sampler and pruner once, so kwargs they reject fail at load time.

    Otherwise a bad kwarg would only fail once the study is opened, after the
    tracking store and the study storage were created. Optuna stays in
    :mod:`tagifai.optimize` (imported here, late, to avoid a cycle).
    """
    from tagifai.optimize import create_pruner, create_sampler

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature notes: shown when it runs
            create_sampler(config.sampler, config.seed, config.search_space)
            create_pruner(config.pruner)
    except TagifaiError as exc:
        raise TagifaiError(f"{path}: {exc}") from None
