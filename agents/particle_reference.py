"""Reference samples of the particle targets (DW-4, LJ-13, LJ-55) by long MCMC, cached on first use.

These targets have no exact sampler, and the reference sets of Klein et al. 2023 (used by DEM and its
successors) cannot be downloaded here: the library makes its own. **They are not Klein et al.'s sets**:
same energies (``envs.targets.particles``), our own sampler and protocol. Compared with Klein et al.'s
data as shipped with DEM (``test_split_*.npy``): LJ-13 mean energy -42.8 +- 0.1 here (seeds 0 and 1:
-42.77, -42.80), -43.13 there; energy W2 between the two sets 0.37 (0.23 between two halves of ours),
distance W2 0.009 (0.003). DW-4 mean energy -22.54 here, -22.45 there, and the two main modes
(configurations with two or with four pairs in the inner well, r < 4) hold 51 % / 41 % of our samples
against 44 % / 47 % of theirs; MALA chains started *from their configurations* drift to 51-53 % within
~6,000 steps (and chains from ours stay there), so under this energy their DW-4 set is not at
equilibrium in its mode proportions, and ours is closer (distance W2 between the sets 0.19; 0.026
between two halves of ours).

Protocol (``ReferenceProtocol``; one per target in ``PROTOCOLS``, all seeded):

1. SMC (``agents.baselines.mcmc.smc``): ``particles`` particles annealed from N(0, t_scale I) to the
   target along a geometric path of ``temperatures`` steps, ``smc_mala_steps`` MALA moves each,
   resampling when ESS/N < 0.5. This puts every chain in a typical configuration, in proportions set
   by the importance weights (plain MALA chains from a Gaussian start get stuck: a clump of
   overlapping particles, or a pair stretched far into the quartic wall, needs a far smaller step
   than the rest, and the step size is shared).
2. One systematic resampling by the final weights, then ``burn_in`` MALA steps at the target (the
   kernel of ``buffers.local_search``, step size carried from SMC and adapted toward acceptance
   0.574), discarded: they equilibrate and decorrelate the resampled duplicates.
3. ``steps`` more MALA steps with the step size frozen, keeping every ``thin``-th state of every chain.

The kept states are centred (centre of mass removed: the energies are translation invariant and the
chains' centres of mass random-walk), shuffled by a seeded permutation and stored as float32.
Cache: ``$DIFFSAMPLER_CACHE`` or ``~/.cache/diffsampler``, one file per target and protocol, written
atomically. Measured on one CPU thread of a busy machine (load 3-5 on 2 cores): DW-4 100 s, LJ-13
3.7 min, LJ-55 4.1 min. Stationarity check, the Stein identity ``E[(x - x_com) . grad E] = (n - 1) D``:
6.00 +- 0.12 (target 6) for DW-4 (Klein et al.'s set: 5.3 +- 0.4), 36.08 +- 0.19 (target 36) for LJ-13.
LJ-55 is the least certain: 157.3 +- 1.7 against 162 (standard errors that ignore the chains'
autocorrelation, so too small), mean energy -324.7; doubling the burn-in to 12,000 steps gives 158.0
and -325.6 +- 0.8, no significant change. Per-coordinate variance 1.00 (no peer data here to compare
with; DEM plots LJ-55 energies in [-380, -180]).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from diffsampler.agents.baselines.mcmc import SMCConfig, smc
from diffsampler.agents.baselines.particles import resample
from diffsampler.buffers.local_search import adapt_step_size, mala_init, mala_step
from diffsampler.envs.targets import make_target
from diffsampler.envs.targets.base import Target
from diffsampler.envs.targets.digits_vae import cache_directory

RECIPE_VERSION = 1  # bump when the procedure (not the protocol numbers) changes


@dataclass(frozen=True)
class ReferenceProtocol:
    """SMC, then burn-in and kept MALA steps at the target (module docstring). Validated on construction."""

    particles: int
    temperatures: int
    smc_mala_steps: int
    burn_in: int
    steps: int
    thin: int
    seed: int = 0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value, low = getattr(self, field.name), 0 if field.name in ("burn_in", "seed", "smc_mala_steps") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ReferenceProtocol.{field.name} must be an integer >= {low}, got {value!r}")
        if self.particles < 2:
            raise ValueError(f"ReferenceProtocol.particles must be >= 2, got {self.particles!r}")

    @property
    def kept_per_chain(self) -> int:
        return -(-self.steps // self.thin)

    @property
    def n_samples(self) -> int:
        return self.particles * self.kept_per_chain

    def key(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


PROTOCOLS: dict[str, ReferenceProtocol] = {
    # 100,000 states. MALA switches a configuration between its two main modes (two or four pairs in the
    # inner well) slowly: the indicator's autocorrelation is 0.47 at 1,000 steps, 0.09 at 4,000, so each
    # chain runs 16,000 kept steps (SMC alone fixes the mode proportions only to a few per cent).
    "dw4": ReferenceProtocol(particles=500, temperatures=100, smc_mala_steps=5, burn_in=2000, steps=16000, thin=80),
    # 100,000 states; the mean energy settles within ~2,500 MALA steps from the SMC particles.
    "lj13": ReferenceProtocol(particles=1000, temperatures=100, smc_mala_steps=5, burn_in=3000, steps=3000, thin=30),
    # 10,000 states from 100 chains (1,485 pairs per configuration); the mean energy settles within
    # ~5,000 MALA steps from the SMC particles (it drifts from -248 to -323 over them).
    "lj55": ReferenceProtocol(particles=100, temperatures=100, smc_mala_steps=5, burn_in=6000, steps=2000, thin=20),
}


class ReferenceRun(NamedTuple):
    samples: torch.Tensor  # (S, chains, d) kept states, centred, in chain order (for standard errors)
    log_r: torch.Tensor  # (S, chains)
    acceptance: float  # mean MALA acceptance probability over the kept phase
    step_size: float  # the frozen MALA step size
    energy_evaluations: int
    seconds: float


def run_reference_chains(target: Target, protocol: ReferenceProtocol) -> ReferenceRun:
    """Run the protocol on ``target`` (CPU, seeded); no caching. See the module docstring."""
    p, start = protocol, time.perf_counter()
    gen = torch.Generator().manual_seed(p.seed)
    config = SMCConfig(
        particles=p.particles, temperatures=p.temperatures, mala_steps=p.smc_mala_steps, schedule="geometric"
    )
    annealed = smc(target, config, gen)
    state = mala_init(target.log_reward, annealed.x[resample(annealed.log_w, p.particles, "systematic", gen)])
    eta, count = annealed.step_size[-1], annealed.energy_evaluations + p.particles
    kept_x, kept_r, rates = [], [], []
    for i in range(p.burn_in + p.steps):
        state, info = mala_step(state, target.log_reward, eta, gen)
        if i < p.burn_in:
            eta = adapt_step_size(eta, info.acceptance_rate, 0.574)
        else:
            rates.append(info.acceptance_rate)
            if (i - p.burn_in) % p.thin == 0:
                kept_x.append(target.remove_mean(state.x))
                kept_r.append(state.log_r)
    count += p.particles * (p.burn_in + p.steps)
    acceptance = float(torch.stack(rates).mean())
    seconds = time.perf_counter() - start
    return ReferenceRun(torch.stack(kept_x), torch.stack(kept_r), acceptance, float(eta), count, seconds)


def reference_samples(
    name: str, n: int | None = None, *, protocol: ReferenceProtocol | None = None, cache_dir=None
) -> torch.Tensor:
    """``(n, d)`` float32 reference samples of the registered particle target ``name`` (all if ``n`` is None).

    Generated by ``PROTOCOLS[name]`` (or ``protocol``) on first use and cached; the first ``n`` of a
    seeded shuffle of all kept states, so they mix chains and times.
    """
    if name not in PROTOCOLS and protocol is None:
        raise ValueError(f"no reference protocol for target {name!r}; available: {sorted(PROTOCOLS)}")
    protocol = protocol or PROTOCOLS[name]
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= protocol.n_samples):
        raise ValueError(f"n must be an integer in [1, {protocol.n_samples}] for this protocol, got {n!r}")
    directory = cache_directory(cache_dir)
    path = directory / f"particle_reference_{name}_recipe{RECIPE_VERSION}_{protocol.key()}.pt"
    if path.is_file():
        samples = torch.load(path, map_location="cpu", weights_only=True)["samples"]
    else:
        run = run_reference_chains(make_target(name, zero_com=False), protocol)
        flat = run.samples.reshape(-1, run.samples.shape[-1])
        perm = torch.randperm(len(flat), generator=torch.Generator().manual_seed(protocol.seed))
        samples = flat[perm].to(torch.float32).contiguous()
        record = {"samples": samples, "protocol": dataclasses.asdict(protocol), "recipe": RECIPE_VERSION}
        record |= {"acceptance": run.acceptance, "step_size": run.step_size, "seconds": run.seconds}
        record |= {"energy_evaluations": run.energy_evaluations}
        _atomic_save(record, directory, path)
    return samples if n is None else samples[:n]


def _atomic_save(obj, directory: Path, path: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)  # atomic: a concurrent reader sees no file or the whole file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
