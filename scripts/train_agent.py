#!/usr/bin/env python
"""Train one diffusion sampler from a checkout: the same command as the console script ``diffsampler-train``
(``diffsampler/cli/train.py``; ``python scripts/train_agent.py --help``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffsampler.cli.train import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
