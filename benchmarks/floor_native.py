#!/usr/bin/env python
"""The floor of a `tb` sampling loop with no Python at all: the loop of ``benchmarks/floor_tb.py`` compiled.

The same T steps (4 ``addmm``, 3 GELUs, the output clip and two adds on (B, hidden) slabs, written into
recorded slabs as diffsampler's rollout does) called from C++ through ATen, on one core or with the batch
split over ``--split`` threads (each thread its own rows, one thread per kernel). Beside it the bare Python
loop of ``floor_tb.py``. Each mode runs in its own process (torch's thread settings are per process), one
after the other, ``--rounds`` times.

Needs a C++ compiler and ninja (``torch.utils.cpp_extension.load_inline``; built once, about 20 s, and
cached under ``TORCH_EXTENSIONS_DIR``).

    python benchmarks/floor_native.py --dim 32 --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor_tb import bare_network, median_ms, sampling_loop  # noqa: E402 - the bare loop and its timer

_SOURCE = r"""
#include <torch/extension.h>
#include <thread>
using at::Tensor;

// One rollout: buf (T + 1, n, d) with buf[0] set, noise (T, n, d) already scaled, emb (T, h); wt: the transposed
// weights (encoder, hidden layers, last); z, a: the (T, n, h) pre-activation and activation records.
void rollout(Tensor buf, Tensor noise, Tensor emb, std::vector<Tensor> wt, std::vector<Tensor> b, Tensor b_last,
             std::vector<Tensor> z, std::vector<Tensor> a, double clip, double g, int64_t split) {
  const int64_t T = noise.size(0), n = noise.size(1), d = noise.size(2), L = z.size();
  auto rows = [&](int64_t part) {
    at::NoGradGuard no_grad;
    if (split > 1) at::set_num_threads(1);  // one thread per kernel: the threads own disjoint rows
    const int64_t r0 = n * part / split, len = n * (part + 1) / split - r0;
    for (int64_t k = 0; k < T; ++k) {
      Tensor x = buf[k].narrow(0, r0, len), h = z[0][k].narrow(0, r0, len);
      at::addmm_out(h, emb[k], x, wt[0]);
      for (int64_t i = 1; i <= L; ++i) {
        Tensor act = a[i - 1][k].narrow(0, r0, len);
        at::gelu_out(act, h);
        if (i == L) {
          Tensor drift = at::hardtanh(at::addmm(b_last, act, wt[L]).narrow(1, 0, d), -clip, clip);
          Tensor next = buf[k + 1].narrow(0, r0, len);
          at::add_out(next, x, drift, g);
          next.add_(noise[k].narrow(0, r0, len));
        } else {
          h = z[i][k].narrow(0, r0, len);
          at::addmm_out(h, b[i - 1], act, wt[i]);
        }
      }
    }
  };
  pybind11::gil_scoped_release no_gil;
  const int prev = at::get_num_threads();
  std::vector<std::thread> helpers;
  for (int64_t part = 1; part < split; ++part) helpers.emplace_back(rows, part);
  rows(0);
  for (auto& t : helpers) t.join();
  if (split > 1) at::set_num_threads(prev);
}
"""


def _measure(mode: str, args) -> float:
    torch.set_num_threads(args.threads)
    n, d, h, T = args.batch, args.dim, args.hidden, args.steps
    g = torch.Generator().manual_seed(0)
    net = bare_network(n, d, h, T, g)
    noise = torch.randn(T, n, d, generator=g).mul_(0.3)
    buf = torch.zeros(T + 1, n, d)

    def python_loop():
        sampling_loop(net, noise, buf)

    if mode == "python":
        return median_ms(python_loop, args.reps)
    from torch.utils.cpp_extension import load_inline

    native = load_inline("diffsampler_floor_native", cpp_sources=_SOURCE, functions=["rollout"], extra_cflags=["-O3"])
    split = int(mode.removeprefix("native"))
    python_loop()
    expected = buf.clone()
    wt = [net.w_in.t(), net.ws[0].t(), net.ws[1].t(), net.w_out.t()]

    def compiled():
        native.rollout(buf, noise, net.t_emb, wt, net.bs, net.b_out, net.z, net.a, 1e4, 0.01, split)

    compiled()
    if not torch.equal(buf, expected):  # the same operations on the same rows: the same values
        raise SystemExit(f"{mode}: the compiled loop's states differ from the Python loop's")
    return median_ms(compiled, args.reps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--batch", type=int, default=300)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--split", type=int, default=2, help="threads the batch is split over in the last mode")
    p.add_argument("--mode", help=argparse.SUPPRESS)  # one measurement, in this process
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(_measure(args.mode, args)))
        return 0
    modes = ["python", "native1", f"native{args.split}"]
    forwarded = [f"--{k}={getattr(args, k)}" for k in ("dim", "batch", "steps", "hidden", "threads", "reps")]
    results: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            command = [sys.executable, __file__, *forwarded, f"--mode={mode}"]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{mode} failed:\n{out.stderr[-2000:]}")
            results[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"d = {args.dim}, batch {args.batch}, T = {args.steps}, hidden {args.hidden}, {args.threads} threads")
    print("sampling loop without its noise, ms (median of each round):")
    labels = {"python": "Python loop", "native1": "compiled, one thread", f"native{args.split}": ""}
    labels[f"native{args.split}"] = f"compiled, batch split over {args.split} threads"
    for mode in modes:
        rounds = ", ".join(f"{v:.2f}" for v in results[mode])
        print(f"  {labels[mode]:<40} {statistics.median(results[mode]):6.2f}   ({rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
