"""A prioritised replay buffer of terminal states: preallocated ring tensors, O(batch) adds.

Sampling is uniform, reward-prioritised (``p ∝ exp(beta * log R)``) or rank-prioritised
(``p ∝ 1 / (k N + rank)``, rank 0 = highest log-reward, k = 0.01 by default). Priorities are
recomputed lazily, at most once per ``sample`` call that follows adds, never on ``add``.

An ``indexed`` buffer also stores an integer per state (the index of its condition, for a
conditional target) and returns it with ``sample_with_index``.
"""

from __future__ import annotations

import math

import torch

SAMPLING = ("uniform", "reward", "rank")


class ReplayBuffer:
    """Ring buffer of positions ``(capacity, d)``, log-rewards and insertion steps on one device.

    Args:
        dim: dimension of the stored states.
        capacity: maximum number of states; the oldest are overwritten first.
        sampling: "uniform", "reward" or "rank".
        rank_k: k of the rank weights ``1 / (k N + rank)``.
        beta: inverse temperature of the reward weights ``exp(beta * log R)``.
        indexed: also store an integer index per state (e.g. its condition).
    """

    def __init__(
        self,
        dim: int,
        capacity: int = 600_000,
        sampling: str = "rank",
        rank_k: float = 0.01,
        beta: float = 1.0,
        device: str | torch.device = "cpu",
        indexed: bool = False,
    ):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity!r}")
        if sampling not in SAMPLING:
            raise ValueError(f"unknown buffer sampling {sampling!r}; expected one of {SAMPLING}")
        if not rank_k > 0 or not math.isfinite(beta):
            raise ValueError(f"rank_k must be > 0 and beta finite, got rank_k={rank_k!r}, beta={beta!r}")
        self.dim, self.capacity, self.sampling, self.rank_k, self.beta = dim, capacity, sampling, rank_k, beta
        self.device = torch.device(device)
        self.x = torch.empty(capacity, dim, device=self.device)
        self.log_r = torch.empty(capacity, device=self.device)
        self.step = torch.empty(capacity, dtype=torch.long, device=self.device)
        self.index = torch.empty(capacity, dtype=torch.long, device=self.device) if indexed else None
        self.size = 0
        self.ptr = 0  # next slot to write
        self._cdf = None  # cached cumulative priorities; None when stale
        self._order = None  # for rank sampling: slot indices by decreasing log-reward

    def __len__(self) -> int:
        return self.size

    def add(self, x: torch.Tensor, log_r: torch.Tensor, step: int = 0, index: torch.Tensor | None = None) -> None:
        """Append a batch (wrapping around at capacity); cost O(batch), no copy of the buffer.

        ``index`` (n,): the states' integer indices, required by (and only by) an indexed buffer.
        """
        n = x.shape[0]
        if x.dim() != 2 or x.shape[1] != self.dim or log_r.shape != (n,):
            raise ValueError(
                f"add expects x (n, {self.dim}) and log_r (n,), got {tuple(x.shape)}, {tuple(log_r.shape)}"
            )
        if (index is None) != (self.index is None) or (index is not None and index.shape != (n,)):
            need = f"an index of shape ({n},)" if self.index is not None else "no index"
            raise ValueError(f"this buffer takes {need}, got {None if index is None else tuple(index.shape)}")
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` survive
            x, log_r, n = x[-self.capacity :], log_r[-self.capacity :], self.capacity
            index = None if index is None else index[-self.capacity :]
        first = min(n, self.capacity - self.ptr)
        for dst, src in ((slice(self.ptr, self.ptr + first), slice(0, first)), (slice(0, n - first), slice(first, n))):
            self.x[dst] = x[src]
            self.log_r[dst] = log_r[src]
            self.step[dst] = step
            if index is not None:
                self.index[dst] = index[src]
        self.ptr = (self.ptr + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self._cdf = None

    def _priorities(self):
        if self._cdf is None:
            log_r = self.log_r[: self.size]
            if self.sampling == "uniform":
                self._cdf = torch.arange(1, self.size + 1, device=self.device, dtype=torch.float64)
            elif self.sampling == "reward":
                w = torch.softmax(self.beta * log_r.double(), 0)
                self._cdf = w.cumsum(0)
            else:
                self._order = torch.argsort(log_r, descending=True)
                ranks = torch.arange(self.size, device=self.device, dtype=torch.float64)
                self._cdf = (1.0 / (self.rank_k * self.size + ranks)).cumsum(0)
        return self._cdf

    def probabilities(self) -> torch.Tensor:
        """Sampling probability of each stored slot ``(size,)`` (for tests and diagnostics)."""
        cdf = self._priorities()
        p = torch.diff(cdf, prepend=cdf.new_zeros(1)) / cdf[-1]
        if self.sampling == "rank":
            out = torch.empty_like(p)
            out[self._order] = p
            return out
        return p

    def _draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Slots of ``n`` draws (with replacement) by the buffer's priorities."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        cdf = self._priorities()
        u = torch.rand(n, generator=generator, device=self.device, dtype=torch.float64) * cdf[-1]
        idx = torch.searchsorted(cdf, u, right=True).clamp_max(self.size - 1)
        return self._order[idx] if self.sampling == "rank" else idx

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` states (with replacement) and their log-rewards, drawn by the buffer's priorities."""
        idx = self._draw(n, generator)
        return self.x[idx], self.log_r[idx]

    def sample_with_index(self, n: int, generator: torch.Generator | None = None):
        """``(states, log-rewards, indices)`` of ``n`` draws from an indexed buffer."""
        if self.index is None:
            raise RuntimeError("sample_with_index needs a buffer built with indexed=True")
        idx = self._draw(n, generator)
        return self.x[idx], self.log_r[idx], self.index[idx]

    def quantiles(self, q=(0.0, 0.5, 0.9, 1.0)) -> dict[str, float]:
        """Log-reward quantiles of the stored states (for logging)."""
        if self.size == 0:
            return {}
        values = torch.quantile(
            self.log_r[: self.size].double().cpu()[:1_000_000], torch.tensor(q, dtype=torch.float64)
        )
        return {f"q{int(100 * p)}": float(v) for p, v in zip(q, values)}

    def state_dict(self) -> dict:
        return {
            "x": self.x[: self.size].clone(),
            "log_r": self.log_r[: self.size].clone(),
            "step": self.step[: self.size].clone(),
            "index": None if self.index is None else self.index[: self.size].clone(),
            "ptr": self.ptr,
            "size": self.size,
        }

    def load_state_dict(self, state: dict) -> None:
        size = state["size"]
        if size > self.capacity or state["x"].shape[1] != self.dim:
            raise ValueError(
                f"buffer state of size {size}, dim {state['x'].shape[1]} does not fit "
                f"capacity {self.capacity}, dim {self.dim}"
            )
        self.x[:size] = state["x"][:size].to(self.device)
        self.log_r[:size] = state["log_r"].to(self.device)
        self.step[:size] = state["step"].to(self.device)
        if (state.get("index") is None) != (self.index is None):
            raise ValueError("buffer state and buffer disagree on whether states carry an index")
        if self.index is not None:
            self.index[:size] = state["index"].to(self.device)
        self.size, self.ptr = size, state["ptr"]
        self._cdf = None
