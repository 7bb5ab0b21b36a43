"""Run every benchmark in one process, quality first, and rewrite ``benchmarks/RESULTS.md``.

Each benchmark's table is printed as it finishes and the results file is rewritten
after each one (atomically), so an interrupted run still leaves the finished
benchmarks on record. A benchmark that raises is recorded as a missed row naming
the error, and the rest still run. ``--smoke`` runs everything on the shipped
sample with tiny settings and writes ``benchmarks/out/RESULTS-smoke.md`` instead
(git-ignored), so a smoke run never overwrites real results.

The image benchmark (``images``, last: its two studies are time-bounded, 20 + 10
minutes) reads the FashionMNIST and MNIST IDX folders (``--fashion-mnist``,
``--mnist``); ``--smoke`` runs it on scikit-learn's digits.

Run: ``python -m benchmarks.run_all [--data F --tags F] [--fashion-mnist D --mnist D]
[--only quality,predict] [--smoke] [--out FILE]`` (``make bench``, ``make bench-smoke``).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from benchmarks import (
    bench_images,
    bench_overhead,
    bench_predict,
    bench_pruning,
    bench_quality,
    bench_scale,
    bench_workers,
)
from benchmarks.common import (
    RESULTS_FILE,
    SMOKE_RESULTS_FILE,
    Inputs,
    Report,
    add_common_args,
    add_image_args,
    failed_report,
    progress,
    quiet,
    resolve_inputs,
    write_results,
)

__all__ = ["BENCHMARKS", "main"]

# In the order they run: quality first (the number that matters most), images last
# (the longest, and on other data).
BENCHMARKS: dict[str, tuple[str, Callable[[Inputs], Report]]] = {
    "quality": (bench_quality.TITLE, bench_quality.run),
    "overhead": (bench_overhead.TITLE, bench_overhead.run),
    "pruning": (bench_pruning.TITLE, bench_pruning.run),
    "predict": (bench_predict.TITLE, bench_predict.run),
    "workers": (bench_workers.TITLE, bench_workers.run),
    "scale": (bench_scale.TITLE, bench_scale.run),
    "images": (bench_images.TITLE, bench_images.run),
}


def build_parser() -> argparse.ArgumentParser:
    """Flags: ``--data``, ``--tags``, ``--fashion-mnist``, ``--mnist``, ``--smoke``, ``--out``,
    ``--only``."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run_all",
        description="Run all benchmarks and rewrite benchmarks/RESULTS.md.",
    )
    add_common_args(parser)
    add_image_args(parser)
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of: {','.join(BENCHMARKS)} [default: all]",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> list[Report]:
    """Run the selected benchmarks; returns their reports."""
    args = build_parser().parse_args(argv)
    selected = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"error: --only: unknown benchmark(s) {', '.join(unknown)}")
    inputs = resolve_inputs(args)
    out = args.out or (SMOKE_RESULTS_FILE if inputs.smoke else RESULTS_FILE)
    command = " ".join(
        ["python -m benchmarks.run_all", *(argv if argv is not None else sys.argv[1:])]
    )
    quiet()
    started = time.perf_counter()
    reports: list[Report] = []
    for key in selected:
        title, run = BENCHMARKS[key]
        progress(key, "start")
        key_started = time.perf_counter()
        try:
            report = run(inputs)
        except Exception as exc:
            traceback.print_exc()
            report = failed_report(key, title, exc, time.perf_counter() - key_started, inputs.smoke)
        reports.append(report)
        print(report.markdown(), flush=True)
        write_results(reports, out, command, inputs, time.perf_counter() - started)
        progress(key, f"done in {report.seconds / 60:.1f} min; wrote {out}")
    return reports


if __name__ == "__main__":
    main()
