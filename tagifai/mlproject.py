"""The MLproject's entry points, through one adapter: ``python -m tagifai.mlproject ...``.

``mlflow run`` substitutes every ``-P`` parameter into the entry point's command,
given or not; the MLproject declares each optional one as a string whose default is
empty. This adapter drops an option whose value is empty (``--data ''``) before the
``tagifai`` CLI parses the rest, so "not given" reaches the CLI as an absent option and
the CLI itself can refuse ``0``, negative and empty values (``-P n_trials=0`` is
refused like ``tagifai optimize --n-trials 0``). It is used by the MLproject only.
"""

from __future__ import annotations

import sys

from tagifai import cli

__all__ = ["given_options", "main"]


def given_options(args: list[str]) -> list[str]:
    """``args`` without the options whose value is empty (``--name ''``)."""
    kept: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg.startswith("--") and "=" not in arg:
            value = next(rest, None)
            if value == "":
                continue  # not given: the CLI's default
            kept.append(arg)
            if value is not None:
                kept.append(value)
            continue
        kept.append(arg)
    return kept


def main() -> None:
    """Run ``tagifai`` with the given options only."""
    sys.argv = ["tagifai", *given_options(sys.argv[1:])]
    cli.main()


if __name__ == "__main__":
    main()
