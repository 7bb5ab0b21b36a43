"""Paths, and reading typed config files with one-line errors.

Every hyperparameter lives in a versioned file under ``config/`` and loads into a
frozen pydantic model of its workload (``tagifai.workloads.<name>.params``). This
module holds what every loader shares: where files are, how a JSON/YAML mapping is
read, and how a pydantic error becomes one line naming the file, the key and the
value. It imports neither optuna nor torch, and touches nothing when imported.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

from tagifai.errors import TagifaiError

__all__ = [
    "CONFIG_DIR",
    "DATA_CACHE_DIR",
    "EXPERIMENTS_DIR",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_CHARS",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_VALUES",
    "NAME_RULE",
    "SAMPLE_DATA_DIR",
    "Name",
    "check_name",
    "describe_validation_error",
    "parse_json",
    "read_mapping",
    "validate",
]

# Paths are relative to the working directory (the project root when run through
# the Makefile or `mlflow run .`), except the sample data shipped inside the package.
SAMPLE_DATA_DIR = Path(__file__).parent / "sample_data"
CONFIG_DIR = Path("config")
EXPERIMENTS_DIR = Path("experiments")
DATA_CACHE_DIR = Path("data")
MAX_CONFIG_BYTES = 1024 * 1024  # a params or study file is a few KB; refuse anything huge
MAX_CONFIG_DEPTH = 32  # a config nests 4-5 levels; deeper is a mistake or an attack
MAX_CONFIG_VALUES = 100_000  # values a config holds, YAML aliases expanded (a few hundred)
MAX_CONFIG_CHARS = 4 * 1024 * 1024  # characters of text, aliases expanded (the file: 1 MiB)

M = TypeVar("M", bound=BaseModel)

# Study and experiment names become folder names (experiments/artifacts/<name>) and
# MLflow search strings: one path component of safe characters, checked at the edge.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"


def check_name(name: str) -> str:
    """``name`` if it is a valid study/experiment name.

    Raises:
        ValueError: Naming the rule (pydantic turns it into a field error).
    """
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{name[:60]!r}{'...' if len(name) > 60 else ''} is not a name: {NAME_RULE}"
        )
    return name


Name = Annotated[str, AfterValidator(check_name)]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a number as YAML 1.2 (and JSON) do.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``), so ``1e-3`` would
    be the string "1e-3", which a strict float field then refuses.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def describe_validation_error(exc: ValidationError, source: str, data: Any = None) -> str:
    """Turn a pydantic error into one line: ``source: key.path: reason (got value)``.

    Args:
        exc: The error.
        source: The file (or other input) it is about.
        data: The validated input: with it, the path names keys as the file writes them
            (a discriminated union adds its tag, e.g. ``model.cnn.lr``, for ``model.lr``).
    """
    err = exc.errors()[0]
    where = ".".join(_written_path(err["loc"], data))[:120] or "(top level)"
    message = err["msg"].removeprefix("Value error, ")
    got = f" (got {err['input']!r:.80})" if err["type"] not in ("missing", "value_error") else ""
    if err["type"] == "extra_forbidden":
        message, got = "unknown key", ""
    more = f" [+{len(exc.errors()) - 1} more]" if len(exc.errors()) > 1 else ""
    return f"{source}: {where}: {message}{got}{more}"


def _written_path(loc: tuple[int | str, ...], data: Any) -> list[str]:
    """The error's location with the keys the input does not have (union tags) left out."""
    if data is None:
        return [str(part) for part in loc]
    path, node = [], data
    for position, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif isinstance(node, dict) and position < len(loc) - 1:
            continue  # a union's tag: not a key of the input
        path.append(str(part))
    return path


def parse_json(text: str, where: str) -> Any:
    """``json.loads``, with every way it fails as one line naming ``where``.

    Besides malformed JSON: nesting past Python's recursion limit, and integers past
    the 4,300 digits Python converts.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TagifaiError(f"{where}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise TagifaiError(f"{where}: invalid JSON: nested too deeply") from None
    except ValueError as exc:
        raise TagifaiError(f"{where}: invalid JSON: {str(exc).split(':')[0][:80]}") from None


def read_mapping(path: Path | str) -> dict[str, Any]:
    """Read a JSON or YAML file holding one mapping, with errors that name the file.

    Raises:
        TagifaiError: If the file is missing, too big, not UTF-8 or not one mapping.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise TagifaiError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a config file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TagifaiError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise TagifaiError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise TagifaiError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix == ".json":
        data = parse_json(text, str(path))
    else:
        try:
            data = yaml.load(text, _Loader)
        except (yaml.YAMLError, RecursionError, ValueError) as exc:
            # ValueError: an integer of more digits than Python converts (a number too large).
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).split(":")[0]
            raise TagifaiError(f"{path}: invalid YAML{line}: {str(problem)[:120]}") from None
    if not isinstance(data, dict):
        raise TagifaiError(f"{path}: expected a mapping of keys to values")
    depth, values, chars = _shape(data)
    if chars > MAX_CONFIG_CHARS:
        raise TagifaiError(f"{path}: expands to more than {MAX_CONFIG_CHARS:,} characters")
    if values > MAX_CONFIG_VALUES:
        # YAML aliases share one object: a few aliases of aliases (the "billion laughs")
        # make a small file that any reader of it walks for ever.
        raise TagifaiError(f"{path}: expands to more than {MAX_CONFIG_VALUES} values")
    if depth > MAX_CONFIG_DEPTH:
        raise TagifaiError(f"{path}: nested deeper than {MAX_CONFIG_DEPTH} levels")
    return data


def _shape(value: Any) -> tuple[int, int, int]:
    """How deeply ``value`` nests, how many values and how many characters of text it
    holds, counted as a reader walks them (shared ones once per reference); the count
    stops past any bound."""
    deepest, values, chars, stack = 0, 0, 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest, values = max(deepest, level), values + 1
        if level > MAX_CONFIG_DEPTH or values > MAX_CONFIG_VALUES or chars > MAX_CONFIG_CHARS:
            break
        if isinstance(item, str):
            chars += len(item)
        elif isinstance(item, dict):
            chars += sum(len(str(key)) for key in item)
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest, values, chars


def validate(model: type[M], data: Any, source: str) -> M:
    """``model.model_validate(data)``, with a pydantic error turned into one line.

    Raises:
        TagifaiError: Naming ``source``, the key and the reason.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise TagifaiError(describe_validation_error(exc, source, data)) from None
