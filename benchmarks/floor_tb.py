#!/usr/bin/env python
"""The floor of a `tb` iteration: the same tensor operations as diffsampler's step, in a bare loop.

The sampling loop (T steps of 4 ``addmm``, 3 GELUs, the output clip and two adds on (B, hidden) slabs, with
and without drawing its noise) and the replayed backward pass (GELU and linear backward over all T B rows),
on random weights: no library code around them. And the floor of a reparameterised (PIS) step: the same
sampling loop under autograd, then the backward pass of a scalar of x_T through all T steps. Compare with
``benchmarks/profile_iteration.py`` or a timed ``train_step`` in the same sitting (``floor_vs_reference.sh``
does, beside the reference); the difference is what the library adds.

    python benchmarks/floor_tb.py --dim 32 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def median_ms(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def bare_network(n: int, d: int, h: int, T: int, generator: torch.Generator) -> SimpleNamespace:
    """Random weights of the policy's shape (encoder d -> h, two hidden h -> h layers, last h -> d), a time
    embedding (T, h) and the (T, n, h) slabs that record the pre-activations ``z`` and activations ``a``."""
    g = generator
    w_in, w_out = 0.1 * torch.randn(h, d, generator=g), 0.01 * torch.randn(d, h, generator=g)
    ws, bs = [0.1 * torch.randn(h, h, generator=g) for _ in range(2)], [torch.randn(h, generator=g) for _ in range(2)]
    b_out, t_emb = torch.zeros(d), torch.randn(T, h, generator=g)
    z, a = [torch.empty(T, n, h) for _ in range(3)], [torch.empty(T, n, h) for _ in range(3)]
    return SimpleNamespace(w_in=w_in, w_out=w_out, ws=ws, bs=bs, b_out=b_out, t_emb=t_emb, z=z, a=a)


def sampling_loop(net: SimpleNamespace, noise: torch.Tensor, buf: torch.Tensor) -> None:
    """The T steps of a fixed-variance rollout from ``buf[0]``, writing the states into ``buf`` (T + 1, n, d)
    and the layers into ``net.z`` / ``net.a``; ``noise`` (T, n, d) is the steps' scaled noise."""
    x, z, a = buf[0], net.z, net.a
    for k in range(noise.shape[0]):
        hk = torch.addmm(net.t_emb[k], x, net.w_in.t(), out=z[0][k])
        for i in range(2):
            hk = torch.addmm(net.bs[i], torch._C._nn.gelu(hk, out=a[i][k]), net.ws[i].t(), out=z[i + 1][k])
        out = F.hardtanh(torch.addmm(net.b_out, torch._C._nn.gelu(hk, out=a[2][k]), net.w_out.t()), -1e4, 1e4)
        x = torch.add(torch.add(x, out, alpha=0.01), noise[k], out=buf[k + 1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--batch", type=int, default=300)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=15)
    args = p.parse_args(argv)
    from diffsampler.agents.runtime import retain_freed_memory

    torch.set_num_threads(args.threads)
    retain_freed_memory()
    n, d, h, T = args.batch, args.dim, args.hidden, args.steps
    g = torch.Generator().manual_seed(0)
    net = bare_network(n, d, h, T, g)
    w_in, w_out, ws, bs, b_out, t_emb, z, a = (net.w_in, net.w_out, net.ws, net.bs, net.b_out, net.t_emb, net.z, net.a)

    def rollout(draw: bool):
        noise = torch.randn(T, n, d, generator=g).mul_(0.3) if draw else torch.zeros(T, n, d)
        sampling_loop(net, noise, torch.zeros(T + 1, n, d))

    rollout(True)
    grad, x_all = torch.randn(T, n, h, generator=g), torch.randn(T, n, d, generator=g)

    def backward():
        gk = torch.ops.aten.gelu_backward(grad, z[2])
        for i in (2, 1):
            g2 = gk.reshape(-1, h)
            g2.t().mm(a[i - 1].reshape(-1, h))
            g2.sum(0)
            gk = torch.ops.aten.gelu_backward(gk.matmul(ws[i - 1]), z[i - 1])
        gk.reshape(-1, h).t().mm(x_all.reshape(-1, d))
        gk.sum(1)

    leaves = [t.clone().requires_grad_(True) for t in (w_in, w_out, *ws, *bs, b_out, t_emb)]

    def path_gradient():  # PIS: x_{k+1} = x_k + 0.01 clip(f(x_k, t_k)) + noise_k with autograd, then backward
        pw_in, pw_out, pw1, pw2, pb1, pb2, pb_out, pt_emb = leaves
        noise = torch.randn(T, n, d, generator=g).mul_(0.3)
        x = torch.zeros(n, d)
        for k in range(T):
            hk = F.gelu(torch.addmm(pt_emb[k], x, pw_in.t()))
            hk = F.gelu(torch.addmm(pb1, hk, pw1.t()))
            hk = F.gelu(torch.addmm(pb2, hk, pw2.t()))
            x = x + 0.01 * F.hardtanh(torch.addmm(pb_out, hk, pw_out.t()), -1e4, 1e4) + noise[k]
        x.square().sum().backward()  # the least a path-gradient loss needs: a scalar of x_T

    print(f"d = {d}, batch {n}, T = {T}, hidden {h}, {args.threads} threads (median ms)")
    print(f"sampling loop with its noise:    {median_ms(lambda: rollout(True), args.reps):.2f}")
    print(f"sampling loop without the noise: {median_ms(lambda: rollout(False), args.reps):.2f}")
    print(f"replayed backward pass:          {median_ms(backward, args.reps):.2f}")
    print(f"path gradient (PIS), whole:      {median_ms(path_gradient, args.reps):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
