#!/usr/bin/env python
"""Benchmark samplers from a checkout: the same command as the console script ``diffsampler-benchmark``
(``diffsampler/cli/benchmark.py``; ``python scripts/benchmark.py --help``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffsampler.cli.benchmark import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
