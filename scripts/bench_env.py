"""Speed of one batched episode of the diffusion MDP, through the torch core and the vector env.

The policy is the zero-drift Gaussian (the reference process): ``x_next = x + sqrt(t_scale * dt) * noise``.
Prints the median wall time in ms per episode (``num_envs`` environments x ``num_steps`` steps)::

    python scripts/bench_env.py                      # Manywell d=32, 300 x 100
    python scripts/bench_env.py --env DiffSampler-GMM25-v0 --num-envs 1000 --repeats 20
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import gymnasium as gym
import torch

from diffsampler import envs


def episode_core(mdp: envs.DiffusionMDP, batch, gen: torch.Generator) -> torch.Tensor:
    """One episode through ``EpisodeBatch`` with the zero-drift Gaussian policy; summed rewards (n,)."""
    batch.reset()
    scale = math.sqrt(mdp.t_scale * mdp.dt)
    total = torch.zeros(batch.n, device=mdp.device)
    for _ in range(mdp.num_steps):
        noise = torch.randn(batch.n, mdp.dim, generator=gen, device=mdp.device)
        reward, _ = batch.step(batch.x + scale * noise)
        total += reward
    return total


def episode_vector(vec, gen: torch.Generator) -> torch.Tensor:
    """The same episode through ``DiffSamplerVectorEnv`` (actions are increments)."""
    vec.reset()
    mdp = vec.mdp
    scale = math.sqrt(mdp.t_scale * mdp.dt)
    total = torch.zeros(vec.num_envs, device=mdp.device)
    for _ in range(mdp.num_steps):
        noise = torch.randn(vec.num_envs, mdp.dim, generator=gen, device=mdp.device)
        _, reward, _, _, _ = vec.step(scale * noise)
        total += reward
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device: torch.device, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="DiffSampler-Manywell-v0", help="registered env id")
    parser.add_argument("--num-envs", type=int, default=300)
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10, help="timed episodes (median reported)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    device = torch.device(args.device)
    mdp = envs.make_mdp(args.env, num_steps=args.num_steps, device=device)
    batch = mdp.new_batch(args.num_envs)
    vec = gym.make_vec(args.env, num_envs=args.num_envs, num_steps=args.num_steps, device=device, backend="torch")
    gen = torch.Generator(device=device).manual_seed(0)

    print(
        f"{args.env} (d={mdp.dim}, t_scale={mdp.t_scale}), {args.num_envs} envs x {args.num_steps} steps, "
        f"device={device}, torch threads={torch.get_num_threads()}, median of {args.repeats}"
    )
    # Both episodes include the policy's noise; its cost alone is the last line.
    rows = {
        "torch core (EpisodeBatch)": lambda: episode_core(mdp, batch, gen),
        "DiffSamplerVectorEnv": lambda: episode_vector(vec, gen),
        "policy noise only (randn per step)": lambda: [
            torch.randn(args.num_envs, mdp.dim, generator=gen, device=device) for _ in range(args.num_steps)
        ],
    }
    for name, fn in rows.items():
        times = time_ms(fn, device, args.repeats)
        print(f"{name:36s} {statistics.median(times):8.2f} ms/episode  (min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
