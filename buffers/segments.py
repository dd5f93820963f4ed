"""SCLD's prioritised buffer of sub-trajectories (Chen et al., ICLR 2025, "Sequential Controlled Langevin
Diffusions", Sec. 4 and its code's ``algorithms/scld/prioritised_buffer.py``; written for this library).

A trajectory of T steps is cut into S segments of L = T / S steps; the buffer keeps, for each segment, a ring of
``capacity`` sub-trajectories (their L + 1 states, the clipped scores at those states, ``log R`` at both ends) with
their log-weights. Sampling draws, for every segment, ``n`` entries without replacement with probability
``∝ exp(log w / temperature)`` (the paper's prioritisation; ``temperature = inf`` would be uniform); after the
sampled entries are re-scored under the current sampler, ``update`` writes their new log-weights back. Entries
with a non-finite log-weight are never drawn. Preallocated tensors; adds and samples are batched over segments.
"""

from __future__ import annotations

import math

import torch


class SegmentBuffer:
    """Rings of ``capacity`` sub-trajectories for each of ``segments`` segments of ``length`` steps in ``dim``."""

    def __init__(self, segments: int, length: int, dim: int, capacity: int, temperature: float = 1.0, device="cpu"):
        if capacity < 1 or segments < 1 or length < 1:
            raise ValueError(f"need capacity, segments, length >= 1, got {capacity!r}, {segments!r}, {length!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        self.capacity, self.temperature = capacity, float(temperature)
        shape = (segments, capacity, length + 1, dim)
        self.states = torch.zeros(shape, device=device)
        self.scores = torch.zeros(shape, device=device)
        self.log_r = torch.zeros(segments, capacity, 2, device=device)  # log R at the first and last state
        self.log_w = torch.full((segments, capacity), -math.inf, device=device)
        self.size, self.ptr = 0, 0

    def __len__(self) -> int:
        return self.size

    def add(self, states, scores, log_r, log_w) -> None:
        """Add B sub-trajectories per segment: ``states``, ``scores`` ``(S, B, L + 1, d)``, ``log_r`` ``(S, B, 2)``,
        ``log_w`` ``(S, B)``; the oldest are overwritten first."""
        b = states.shape[1]
        if b > self.capacity:
            raise ValueError(f"cannot add {b} entries to a buffer of capacity {self.capacity}")
        idx = (self.ptr + torch.arange(b, device=states.device)) % self.capacity
        self.states[:, idx], self.scores[:, idx], self.log_r[:, idx] = states, scores, log_r
        self.log_w[:, idx] = torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))
        self.ptr = (self.ptr + b) % self.capacity
        self.size = min(self.size + b, self.capacity)

    def sample(self, n: int, generator=None):
        """``(states, scores, log_r, index)`` of ``n`` entries per segment (``index`` ``(S, n)``), drawn without
        replacement with probability ``∝ exp(log w / temperature)`` among the stored entries."""
        if not 1 <= n <= self.size:
            raise ValueError(f"cannot draw {n} entries without replacement from {self.size}")
        logits = (self.log_w[:, : self.size] / self.temperature).double()
        best = logits.amax(-1, keepdim=True)
        probs = (logits - torch.where(torch.isfinite(best), best, torch.zeros_like(best))).exp()  # -inf: 0
        index = torch.multinomial(_enough(probs, n), n, replacement=False, generator=generator)
        rows = torch.arange(index.shape[0], device=index.device).unsqueeze(-1)
        return self.states[rows, index], self.scores[rows, index], self.log_r[rows, index], index

    def update(self, index: torch.Tensor, log_w: torch.Tensor) -> None:
        """Write re-scored log-weights ``log_w`` ``(S, n)`` of the entries ``index`` ``(S, n)``."""
        rows = torch.arange(index.shape[0], device=index.device).unsqueeze(-1)
        log_w = log_w.detach().to(self.log_w)
        self.log_w[rows, index] = torch.where(torch.isfinite(log_w), log_w, torch.full_like(log_w, -math.inf))

    def diagnostics(self) -> dict[str, float]:
        filled = self.log_w[:, : self.size]
        finite = filled[torch.isfinite(filled)]
        out = {"buffer/size": float(self.size)}
        if finite.numel():
            out |= {"buffer/log_w_median": float(finite.median()), "buffer/log_w_max": float(finite.max())}
        return out

    def state_dict(self) -> dict:
        keep = self.size
        return {
            "states": self.states[:, :keep].clone(),
            "scores": self.scores[:, :keep].clone(),
            "log_r": self.log_r[:, :keep].clone(),
            "log_w": self.log_w[:, :keep].clone(),
            "size": self.size,
            "ptr": self.ptr,
        }

    def load_state_dict(self, state: dict) -> None:
        keep = int(state["size"])
        if keep > self.capacity or tuple(state["states"].shape[2:]) != tuple(self.states.shape[2:]):
            shape = tuple(state["states"].shape[2:])
            raise ValueError(f"a buffer state of {keep} entries of shape {shape} does not fit this buffer")
        for name in ("states", "scores", "log_r", "log_w"):
            getattr(self, name)[:, :keep] = state[name]
        self.size, self.ptr = keep, int(state["ptr"])


def _enough(probs: torch.Tensor, n: int) -> torch.Tensor:
    """Rows with fewer than ``n`` non-zero weights give their zero-weight entries a vanishing one, so that ``n``
    distinct entries can be drawn (those only after every weighted one; a row of zeros becomes uniform)."""
    short = (probs > 0).sum(-1, keepdim=True) < n
    return torch.where(short & (probs == 0), torch.full_like(probs, 1e-300), probs)
