"""The benchmark harness behind ``scripts/benchmark.py``: methods x targets x seeds, resumable, local or Ray.

- ``jobs``: one run per (target, preset, seed), its run directory and its results record;
- ``backends``: a local process pool, Ray tasks, or this process (``BACKENDS``);
- ``harness``: ``BenchmarkConfig`` and ``run_benchmark`` (plan, skip finished runs, dispatch, write);
- ``tables``: table.md in the paper's Table 1 layout, the paper comparison and an importer;
- ``figures``: sample panels per method.
"""

from diffsampler.agents.benchmark.harness import QUICK, BenchmarkConfig, Summary, run_benchmark

__all__ = ["QUICK", "BenchmarkConfig", "Summary", "run_benchmark"]
