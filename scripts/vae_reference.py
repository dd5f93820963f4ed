#!/usr/bin/env python
"""Reference values of log Z(image) = log p(image) for the VAE target's evaluation images.

Importance sampling from the VAE's own encoder q(z | image) (independent of any trained sampler):

* ``encoder_elbo``: mean over images of the encoder's ELBO (the amortised VAE's own bound);
* ``log_p``: mean over images of the importance-weighted bound with ``--samples`` draws, a
  near-exact mean log p(image): the yardstick of a sampler's ``log_z_rw`` (and an upper reference
  for its ``log_z``);
* ``log_p_across_images``: log-mean-exp over the images of log p(image): the value that the paper's
  log Ẑ^RW statistic (``log_z_rw_across_conditions``) approaches for a perfect sampler.

    python scripts/vae_reference.py --data-path ../shared/data --samples 5000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", default=None, help="the paper's VAE data (default: $DIFFSAMPLER_DATA, else digits)")
    p.add_argument("--samples", type=int, default=5000, help="encoder draws per image")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = p.parse_args(argv)

    import torch

    from diffsampler.envs.targets import make_target

    torch.set_num_threads(1)
    try:
        target = make_target("vae", data_path=args.data_path)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elbo, log_p = target.encoder_log_z(target.eval_conditions, args.samples, torch.Generator().manual_seed(args.seed))
    result = {
        "target": repr(target),
        "images": len(log_p),
        "samples": args.samples,
        "encoder_elbo": float(elbo.mean()),
        "log_p": float(log_p.mean()),
        "log_p_across_images": float(torch.logsumexp(log_p, 0) - math.log(len(log_p))),
        "log_p_min": float(log_p.min()),
        "log_p_max": float(log_p.max()),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
