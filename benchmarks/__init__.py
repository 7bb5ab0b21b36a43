"""Benchmarks: quality and speed of tagifai on the real Made-With-ML and image data.

Benchmarks are not tests: each script measures one thing, prints a markdown table
of value / target / met, and returns its rows. ``python -m benchmarks.run_all``
runs them all in one process and rewrites ``benchmarks/RESULTS.md``.

- :mod:`benchmarks.bench_quality`: test F1 of the default study's best params vs a TF-IDF baseline.
- :mod:`benchmarks.bench_overhead`: what MLflow tracking adds to a study's wall time.
- :mod:`benchmarks.bench_pruning`: epochs saved by the configured pruner, and F1 kept.
- :mod:`benchmarks.bench_predict`: pyfunc load time, batch throughput, served latency.
- :mod:`benchmarks.bench_workers`: trials per hour with 1 and 2 worker processes.
- :mod:`benchmarks.bench_images`: time-bounded image study on FashionMNIST and MNIST, test
  accuracy vs an untuned baseline, predict throughput and served latency.

Every script takes ``--smoke``: the shipped sample (the digits for images) and tiny
settings, to check in seconds that the script works (its numbers are not measurements).
"""
