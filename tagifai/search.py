"""How a study searches: its config, the conditional search space, samplers and pruners.

The search space is keyed by architecture::

    search_space:
      architecture:
        linear: {weight_decay: {type: float, low: 1.0e-7, high: 1.0e-4, log: true}}
        cnn:    {lr: {...}, embedding_dim: {...}}

A trial samples the architecture first, then only that architecture's params
(Optuna's define-by-run conditional space), so a trial tunes and logs only what
its model uses. Every range is checked against the architecture's params model
when the config is loaded, and the sampler and pruner are built once then, so a
bad value or keyword fails before any run or study exists.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import optuna
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    create_model,
    model_validator,
)

from tagifai.config import (
    EXPERIMENTS_DIR,
    Name,
    describe_validation_error,
    read_mapping,
    validate,
)
from tagifai.errors import TagifaiError, missing_package
from tagifai.workloads import get_workload
from tagifai.workloads.base import RunParams, Workload

__all__ = [
    "ARCHITECTURE",
    "CategoricalSpace",
    "FloatSpace",
    "IntSpace",
    "OptimizeConfig",
    "PrunerConfig",
    "SamplerConfig",
    "create_pruner",
    "create_sampler",
    "initial_trials",
    "load_optimize_config",
    "load_params_file",
    "params_for",
    "suggest_params",
]

ARCHITECTURE = "architecture"  # the first (and only unconditional) param of every trial
# Samplers that model a fixed set of params: one architecture only.
FIXED_SPACE_SAMPLERS = ("Grid", "QMC", "CMA-ES")
MAX_GRID_POINTS = 100_000  # a grid bigger than this is a config mistake
FiniteFloat = Annotated[StrictFloat, Field(allow_inf_nan=False)]


class IntSpace(BaseModel):
    """An integer parameter: ``suggest_int(low, high, step, log)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["int"]
    low: StrictInt
    high: StrictInt
    step: StrictInt = Field(1, ge=1)
    log: StrictBool = False

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

    def size(self) -> int:
        """How many values the grid sampler would try."""
        return (self.high - self.low) // self.step + 1

    def grid(self) -> list[Any]:
        """Every value of the range, for the grid sampler."""
        return list(range(self.low, self.high + 1, self.step))

    def contains(self, value: Any) -> bool:
        """Whether the range can yield ``value``."""
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )


class FloatSpace(BaseModel):
    """A float parameter: ``suggest_float(low, high, step=..., log=...)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["float"]
    low: StrictFloat = Field(allow_inf_nan=False)
    high: StrictFloat = Field(allow_inf_nan=False)
    step: StrictFloat | None = Field(None, gt=0, allow_inf_nan=False)
    log: StrictBool = False

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

    def size(self) -> int:
        """How many values the grid sampler would try (it needs a step)."""
        if self.step is None:
            raise ValueError("the grid sampler needs a step on float ranges")
        steps = (self.high - self.low) / self.step
        if not math.isfinite(steps) or steps > 10 * MAX_GRID_POINTS:
            raise ValueError(f"step {self.step} makes a grid of more than {MAX_GRID_POINTS} points")
        return math.floor(steps + 1e-9) + 1

    def grid(self) -> list[Any]:
        """Every value of the range, for the grid sampler (needs a step)."""
        count, step = self.size(), float(self.step or 0.0)
        return [round(self.low + i * step, 12) for i in range(count)]

    def contains(self, value: Any) -> bool:
        """Whether the range can yield ``value``."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        steps = (value - self.low) / self.step
        return abs(steps - round(steps)) < 1e-9


class CategoricalSpace(BaseModel):
    """A choice among values: ``suggest_categorical(choices)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["categorical"]
    choices: tuple[StrictBool | StrictInt | FiniteFloat | str, ...] = Field(
        min_length=1, max_length=1000
    )

    def values(self) -> list[Any]:
        """Every choice (for validation)."""
        return list(self.choices)

    def size(self) -> int:
        """How many values the grid sampler would try."""
        return len(self.choices)

    def grid(self) -> list[Any]:
        """Every choice, for the grid sampler."""
        return list(self.choices)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices (``true`` is not ``1``)."""
        return any(type(value) is type(c) and value == c for c in self.choices)


SearchSpace = Annotated[IntSpace | FloatSpace | CategoricalSpace, Field(discriminator="type")]
ArchitectureSpace = dict[str, dict[str, SearchSpace]]


# The samplers and pruners a config names, by the name it uses.
SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "TPE": optuna.samplers.TPESampler,
    "Random": optuna.samplers.RandomSampler,
    "CMA-ES": optuna.samplers.CmaEsSampler,
    "QMC": optuna.samplers.QMCSampler,
    "Grid": optuna.samplers.GridSampler,
    "NSGAII": optuna.samplers.NSGAIISampler,
    "GP": optuna.samplers.GPSampler,
}
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "Median": optuna.pruners.MedianPruner,
    "Percentile": optuna.pruners.PercentilePruner,
    "SuccessiveHalving": optuna.pruners.SuccessiveHalvingPruner,
    "Hyperband": optuna.pruners.HyperbandPruner,
    "Patient": optuna.pruners.PatientPruner,
    "Threshold": optuna.pruners.ThresholdPruner,
    "Nop": optuna.pruners.NopPruner,
}
# A config sets the keywords whose annotation (in the constructor's own signature) is made
# of these; strictly typed, so `"10"` is not a count and `true` not a number. Optuna checks
# their ranges when it builds the object, which loading a config does once.
KEYWORD_LIMIT = 100_000  # every count a sampler or pruner takes (startup trials, candidates)
_SCALARS: dict[str, Any] = {
    "int": Annotated[StrictInt, Field(ge=0, le=KEYWORD_LIMIT)],
    "float": Annotated[StrictFloat, Field(allow_inf_nan=False)],
    "bool": StrictBool,
    "str": Annotated[str, Field(max_length=100)],
    "None": None,
}


# The few bounds Optuna does not check when it builds the object (it would fail, or hang,
# at the first trial): sizes of at least one (two for a population), populations bounded.
_MINIMUMS = {"n_ei_candidates": 1, "interval_steps": 1, "n_min_trials": 1, "inc_popsize": 1}
_MINIMUMS |= {"population_size": 2, "popsize": 2, "reduction_factor": 2}
_MAXIMUMS = {"population_size": 10_000, "popsize": 10_000, "n_ei_candidates": 10_000}


def _bounded(name: str, kind: Any) -> Any:
    if kind is _SCALARS["int"] and (name in _MINIMUMS or name in _MAXIMUMS):
        limits = Field(ge=_MINIMUMS.get(name, 0), le=_MAXIMUMS.get(name, KEYWORD_LIMIT))
        return Annotated[StrictInt, limits]
    return kind


def _keywords(constructor: Callable[..., Any]) -> type[BaseModel]:
    """The keywords of ``constructor`` a config may set, as a strict model built from its
    signature (``seed`` is the study's; callables and objects cannot come from a file)."""
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(constructor).parameters.items():
        annotation = parameter.annotation
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        parts = [part.strip() for part in str(text).split("|")]
        if name in ("self", "seed") or not all(part in _SCALARS for part in parts):
            continue
        kinds = tuple(_bounded(name, _SCALARS[part]) for part in parts)
        kind = kinds[0] if len(kinds) == 1 else Union[kinds]  # noqa: UP007
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[name] = (kind, default)
    config = ConfigDict(frozen=True, extra="forbid")
    return create_model(f"{constructor.__name__}Keywords", __config__=config, **fields)


def _checked_kwargs(
    kind: str, name: str, kwargs: dict[str, Any], constructor: Callable[..., Any]
) -> dict[str, Any]:
    """``kwargs`` as given, if they fit ``name``'s constructor: known keys, strict types
    (``TagifaiError`` naming the keyword otherwise)."""
    schema = _keywords(constructor)
    for key in kwargs:
        if key == "seed":
            raise TagifaiError(f"{kind} {name}: seed: set the study's seed (top level) instead")
        if key not in schema.model_fields:
            takes = ", ".join(schema.model_fields) or "no keywords"
            what = (
                "a Python object, not a config value"
                if key in inspect.signature(constructor).parameters
                else "unknown keyword"
            )
            raise TagifaiError(f"{kind} {name}: {key!r:.60}: {what}; it takes {takes}")
    try:
        schema.model_validate(kwargs)
    except ValidationError as exc:
        where = describe_validation_error(exc, "kwargs", kwargs)
        raise TagifaiError(f"{kind} {name}: {where}") from None
    return kwargs


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


def _check_storage_url(url: str) -> str:
    """A database URL SQLAlchemy can open (an SQLite file's folder must exist); the
    message never repeats the URL, which may hold a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        dialect = parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ValueError(
            "not a database URL (sqlite:///PATH, postgresql://HOST/DB, mysql://HOST/DB): "
            f"{type(exc).__name__}"
        ) from None
    try:
        dialect.import_dbapi()  # what opening the storage imports first
    except ImportError as exc:
        raise ValueError(
            f"a {parsed.drivername} URL needs the Python package {missing_package(exc)}, "
            "which is not installed"
        ) from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).parent
        if not folder.is_dir() and folder != EXPERIMENTS_DIR:  # experiments/ is made on use
            raise ValueError(f"the SQLite file's folder {str(folder)[:200]} does not exist")
    return url


class OptimizeConfig(BaseModel):
    """One Optuna study: its workload, what to optimise, how to search and where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str = "text"  # the workload (tagifai.workloads)
    study_name: Name = "tagifai"  # also the experiment (a folder name under experiments/)
    metric: str = "val_f1"  # a validation metric of the workload; not given: its first
    direction: Literal["maximize", "minimize"] = "maximize"  # not given: the metric's
    n_trials: StrictInt = Field(20, ge=1, le=100_000)  # total for the study, resumed runs included
    timeout: StrictFloat | None = Field(None, gt=0, allow_inf_nan=False)  # seconds, this invocation
    seed: StrictInt = Field(42, ge=0, lt=2**32)  # sampler seed: same seed and config, same trials
    # Optuna storage URL; default sqlite under experiments/
    storage: Annotated[str, AfterValidator(_check_storage_url)] | None = None
    heartbeat_interval: StrictInt = Field(5, ge=1, le=3600)  # seconds between a trial's heartbeats
    grace_period: StrictInt = Field(20, ge=2, le=86_400)  # seconds without heartbeat: trial is dead
    max_retry: StrictInt = Field(2, ge=0, le=100)  # times a dead worker's trial is queued again
    params: str | None = None  # base params file; None: the workload's config/ file
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    search_space: dict[Literal["architecture"], ArchitectureSpace] = Field(default_factory=dict)
    # Trials queued before the sampler's own, once per study (a known-good start): each
    # names an architecture and any of its searched knobs; knobs it does not name take
    # the base params' values (that architecture's defaults).
    initial_trials: list[dict[str, Any]] = Field(default_factory=list, max_length=100)

    @model_validator(mode="before")
    @classmethod
    def _workload_defaults(cls, data: Any) -> Any:
        """A metric not given is the workload's first; a direction not given, the metric's."""
        if not isinstance(data, dict) or ("metric" in data and "direction" in data):
            return data
        try:
            workload = get_workload(str(data.get("task", "text")))
        except TagifaiError:
            return data  # an unknown task is reported by the loader, naming the file
        metric = data.get("metric") or next(iter(workload.metrics))
        direction = data.get("direction") or workload.metrics.get(str(metric), "maximize")
        return {**data, "metric": metric, "direction": direction}

    @model_validator(mode="after")
    def _check(self) -> OptimizeConfig:
        if self.grace_period < 2 * self.heartbeat_interval:
            # A live trial that misses one heartbeat (a slow storage write) must not be
            # taken for dead, failed and run again; Optuna's own default is 2x.
            raise ValueError(
                f"grace_period ({self.grace_period} s) must be at least twice "
                f"heartbeat_interval ({self.heartbeat_interval} s)"
            )
        if self.search_space and not self.architectures:
            raise ValueError("search_space.architecture: name at least one architecture")
        return self

    @property
    def architectures(self) -> ArchitectureSpace:
        """Architecture -> its searched params."""
        return self.search_space.get("architecture") or {}


def create_sampler(config: OptimizeConfig) -> optuna.samplers.BaseSampler:
    """Build the configured sampler, seeded.

    Raises:
        TagifaiError: If the kwargs do not fit the sampler.
    """
    name = config.sampler.name
    sampler = SAMPLERS[name]
    kwargs = {
        **_checked_kwargs("sampler", name, config.sampler.kwargs, sampler),
        "seed": config.seed,
    }
    if name == "Grid":
        grid: dict[str, list[Any]] = {ARCHITECTURE: list(config.architectures)}
        for space in config.architectures.values():
            grid.update({param: s.grid() for param, s in space.items()})
        kwargs["search_space"] = grid
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
            return sampler(**kwargs)
    except (TypeError, ValueError, ImportError) as exc:
        raise TagifaiError(f"sampler {name}: {str(exc).splitlines()[0][:200]}") from None


def create_pruner(config: PrunerConfig) -> optuna.pruners.BasePruner:
    """Build the configured pruner.

    Raises:
        TagifaiError: If the kwargs do not fit the pruner.
    """
    pruner = PRUNERS[config.name]
    kwargs = dict(_checked_kwargs("pruner", config.name, config.kwargs, pruner))
    if config.name == "Patient":
        kwargs.setdefault("wrapped_pruner", None)
    try:
        return pruner(**kwargs)
    except (TypeError, ValueError) as exc:
        raise TagifaiError(f"pruner {config.name}: {str(exc).splitlines()[0][:200]}") from None


def _suggest(trial: optuna.Trial, name: str, space: Any) -> Any:
    if space.type == "int":
        return trial.suggest_int(name, space.low, space.high, step=space.step, log=space.log)
    if space.type == "float":
        return trial.suggest_float(name, space.low, space.high, step=space.step, log=space.log)
    return trial.suggest_categorical(name, list(space.choices))


def suggest_params(trial: optuna.Trial, config: OptimizeConfig, base: RunParams) -> RunParams:
    """The trial's params: the architecture first, then only that architecture's knobs.

    Knobs the space does not search keep the base params' values when the trial's
    architecture is the base's, else that architecture's defaults.
    """
    architectures = config.architectures
    if not architectures:
        return base
    architecture = str(trial.suggest_categorical(ARCHITECTURE, list(architectures)))
    values = {name: _suggest(trial, name, s) for name, s in architectures[architecture].items()}
    return base.model_copy(update={"model": _model_params(base, architecture, values)})


def initial_trials(config: OptimizeConfig, base: RunParams) -> list[dict[str, Any]]:
    """The config's ``initial_trials`` as Optuna params: every searched knob given.

    Raises:
        TagifaiError: If one names no searched architecture, a knob its architecture
            does not search, or a value (given or default) outside its range.
    """
    resolved = []
    for index, given in enumerate(config.initial_trials):
        where = f"initial_trials[{index}]"
        architecture = given.get(ARCHITECTURE)
        if architecture not in config.architectures:
            raise TagifaiError(
                f"{where}.{ARCHITECTURE}: {architecture!r:.60} is not in the search space; "
                f"choose from {', '.join(config.architectures)}"
            )
        space = config.architectures[architecture]
        defaults = _model_params(base, architecture, {})
        trial: dict[str, Any] = {ARCHITECTURE: architecture}
        for name in given:
            if name != ARCHITECTURE and name not in space:
                raise TagifaiError(
                    f"{where}.{name}: not a searched knob of {architecture}; "
                    f"searched: {', '.join(space) or 'none'}"
                )
        for name, bounds in space.items():
            value = given[name] if name in given else getattr(defaults, name)
            if not bounds.contains(value):
                source = "" if name in given else f" (the {architecture} default)"
                raise TagifaiError(
                    f"{where}.{name}: {value!r:.60}{source} is outside its search range "
                    f"{bounds.model_dump(exclude={'type'})}"
                )
            trial[name] = value
        resolved.append(trial)
    return resolved


def params_for(base: RunParams, tuned: dict[str, Any]) -> RunParams:
    """The params a trial used, from its sampled values (``trial.params``)."""
    if not tuned:
        return base
    values = {name: value for name, value in tuned.items() if name != ARCHITECTURE}
    architecture = str(tuned.get(ARCHITECTURE, base.model.architecture))
    return base.model_copy(update={"model": _model_params(base, architecture, values)})


def _model_params(base: RunParams, architecture: str, values: dict[str, Any]) -> Any:
    """Validated params of ``architecture`` with ``values`` over its starting point."""
    start = base.model.model_dump() if base.model.architecture == architecture else {}
    merged = {**start, **values, ARCHITECTURE: architecture}
    # Validated through the params type, so the discriminated union picks the class.
    return type(base).model_validate({**base.model_dump(exclude={"model"}), "model": merged}).model


def load_optimize_config(
    path: Path | str | None = None, task: str | None = None, **overrides: Any
) -> tuple[OptimizeConfig, RunParams, Workload]:
    """Load a study config and its base params; CLI overrides win over the file.

    Every range of every architecture is checked against that architecture's params,
    and the sampler and pruner are built once, so a dropout of 1.0, a negative lr or
    a keyword the sampler rejects fails here, before anything is logged.

    Args:
        path: YAML (or JSON) study config; ``None``: the task's default.
        task: ``--task``; ``None``: the file's ``task`` (text if it names none).
        **overrides: Values from the command line; ``None`` means "not given".

    Returns:
        The study config, the base params the trials start from, and the workload.

    Raises:
        TagifaiError: On any unreadable file or invalid value.
    """
    if task is not None:
        get_workload(task)  # an unknown --task is the option's fault, not the file's
    if path is None:
        path = get_workload(task or "text").optimize_file
    path = Path(path)
    data = read_mapping(path)
    if task is not None:
        if data.get("task", task) != task:
            raise TagifaiError(f"{path}: task: the file is for {data['task']!r}, not --task {task}")
        data["task"] = task
    given = {key: value for key, value in overrides.items() if value is not None}
    # The file's own values first (those an option replaces are not the file's problem).
    config = validate(OptimizeConfig, {k: v for k, v in data.items() if k not in given}, str(path))
    try:  # an override is the option's fault, not the file's
        config = OptimizeConfig.model_validate({**data, **given})
    except ValidationError as exc:
        key = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        option = f"--{key.replace('_', '-')}" if key in given else str(path)
        raise TagifaiError(describe_validation_error(exc, option, {**data, **given})) from None
    try:
        workload = get_workload(config.task)
    except TagifaiError as exc:
        raise TagifaiError(f"{path}: task: {str(exc).removeprefix('--task: ')}") from None
    if config.metric not in workload.metrics:
        raise TagifaiError(
            f"{path}: metric: {config.metric!r} is not a {config.task} metric; "
            f"choose from {', '.join(workload.metrics)}"
        )
    if config.direction != workload.metrics[config.metric]:
        raise TagifaiError(
            f"{path}: direction: metric {config.metric} must be "
            f"{workload.metrics[config.metric]}d, not {config.direction}d"
        )
    params_file = Path(config.params) if config.params else workload.params_file
    base = load_params_file(workload, params_file)
    _check_space(config, base, path)
    try:
        initial_trials(config, base)
    except TagifaiError as exc:
        raise TagifaiError(f"{path}: {exc}") from None
    try:  # built once here, so a keyword they reject fails before anything is made
        create_sampler(config)
        create_pruner(config.pruner)
    except TagifaiError as exc:
        raise TagifaiError(f"{path}: {exc}") from None
    return config, base, workload


def load_params_file(workload: Workload, path: Path | str) -> RunParams:
    """A workload's params from a JSON file (``TagifaiError`` naming the file and key)."""
    data = read_mapping(path)
    data.setdefault("task", workload.name)
    if data["task"] != workload.name:
        raise TagifaiError(f"{path}: task: params for {data['task']!r:.40}, not {workload.name}")
    return validate(workload.params_type, data, str(path))


def _check_space(config: OptimizeConfig, base: RunParams, path: Path) -> None:
    """Every bound of every architecture's range must make valid params."""
    seen: dict[str, tuple[str, Any]] = {}
    for architecture, space in config.architectures.items():
        where = f"{path}: search_space.architecture.{architecture}"
        try:
            _model_params(base, architecture, {})
        except ValidationError:  # an unknown architecture fails the union's discriminator
            raise TagifaiError(f"{where}: not an architecture of task {config.task}") from None
        for name, bounds in space.items():
            if name == ARCHITECTURE:
                raise TagifaiError(f"{where}.{name}: the architecture is chosen above it")
            for value in bounds.values():
                try:
                    _model_params(base, architecture, {name: value})
                except ValidationError as exc:
                    reason = describe_validation_error(exc, "").split(": ", 2)[-1]
                    raise TagifaiError(
                        f"{where}.{name}: value {value!r} is not a valid {name}: {reason}"
                    ) from None
            # Optuna keeps one distribution type per param name across a study's trials.
            kind = (bounds.type, getattr(bounds, "log", None), getattr(bounds, "choices", None))
            if name in seen and seen[name][1] != kind:
                raise TagifaiError(
                    f"{where}.{name}: searched as {kind[0]} here but differently under "
                    f"{seen[name][0]}; one name, one kind of range (and the same choices)"
                )
            seen[name] = (architecture, kind)
        if config.sampler.name == "Grid":
            for name, bounds in space.items():
                try:
                    bounds.size()  # counted, not built: a step of 1e-300 is a huge grid
                except ValueError as exc:
                    raise TagifaiError(f"{where}.{name}: {exc}") from None
    if config.sampler.name == "Grid" and not config.architectures:
        raise TagifaiError(f"{path}: sampler Grid needs a search_space to make a grid of")
    if config.sampler.name in FIXED_SPACE_SAMPLERS and len(config.architectures) > 1:
        raise TagifaiError(
            f"{path}: sampler {config.sampler.name} needs a fixed search space; the space "
            f"searches {len(config.architectures)} architectures: search one, or use TPE"
        )
    if config.sampler.name == "Grid":
        only = next(iter(config.architectures.values()), {})
        points = math.prod(bounds.size() for bounds in only.values())
        if points > MAX_GRID_POINTS:
            raise TagifaiError(f"{path}: the grid has {points} points; at most {MAX_GRID_POINTS}")
