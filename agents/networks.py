"""Networks of the PIS-style architecture used by the paper.

Time enters through Fourier features ``sin/cos(freq * t + phase)`` (64 harmonics, frequencies spread
over [0.1, 100], a learned phase) followed by an MLP. Every network here takes a precomputed *time
embedding* rather than raw times: a batch of trajectories on a shared time grid has only T distinct
times, so the embedding is computed once per time and broadcast over the batch.

For a conditional target a network also embeds the condition (an MLP of the flattened image, computed
once per trajectory) and adds it to the time embedding: the "time embedding" a network receives is
then the per-trajectory context ``embed_time(t) + embed_condition(c)``.
"""

from __future__ import annotations

import torch
from torch import nn


class FourierTimeEmbedding(nn.Module):
    """``t -> MLP([sin(f t + phi), cos(f t + phi)])`` with ``harmonics`` frequencies in [0.1, 100]."""

    def __init__(self, harmonics: int = 64, hidden_dim: int = 64, out_dim: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.linspace(0.1, 100.0, harmonics))
        self.phase = nn.Parameter(torch.randn(harmonics))
        self.mlp = nn.Sequential(nn.Linear(2 * harmonics, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` of shape ``(...,)`` -> embedding ``(..., out_dim)``."""
        arg = t.unsqueeze(-1) * self.freqs + self.phase
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=-1))


def condition_mlp(cond_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """A GELU MLP ``cond_dim -> hidden -> hidden -> out_dim`` embedding a (flattened) condition."""
    return nn.Sequential(
        nn.Linear(cond_dim, hidden_dim),
        nn.GELU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.GELU(),
        nn.Linear(hidden_dim, out_dim),
    )


def _zero_(layer: nn.Linear, bias: float = 0.0) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.constant_(layer.bias, bias)
    return layer


class JointNet(nn.Module):
    """``(x, t) -> out``: a linear state encoder, summed with a time embedding, then a GELU MLP.

    Used for the policy (``out_dim = 2 d``: drift and log-variance, zero-initialised last layer), the
    conditional log-flow (``out_dim = 1``) and the backward-kernel correction (``out_dim = 2 d``).
    With ``cond_dim`` it also has a condition embedding (``embed_condition``), added to the time embedding.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        hidden_dim: int = 64,
        harmonics: int = 64,
        joint_layers: int = 2,
        zero_init: bool = True,
        cond_dim: int | None = None,
    ):
        super().__init__()
        self.state_encoder = nn.Linear(dim, hidden_dim)
        self.time_embedding = FourierTimeEmbedding(harmonics, hidden_dim, hidden_dim)
        self.condition_embedding = condition_mlp(cond_dim, hidden_dim, hidden_dim) if cond_dim else None
        layers: list[nn.Module] = [nn.GELU()]
        for _ in range(joint_layers):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
        last = nn.Linear(hidden_dim, out_dim)
        layers.append(_zero_(last) if zero_init else last)
        self.joint = nn.Sequential(*layers)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """Time embedding with the state encoder's bias folded in: ``(..., hidden)``."""
        return self.time_embedding(t) + self.state_encoder.bias

    def embed_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """``(B, hidden)`` condition embeddings, to add to ``embed_time`` outputs (conditional nets only)."""
        return self.condition_embedding(condition)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """``x`` ``(..., d)`` and an ``embed_time`` output (plus a condition embedding, if any)
        broadcastable to ``(..., hidden)``."""
        return self.joint(self._encode(x, t_emb))

    def hidden(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        """The features ``(..., hidden)`` the last layer (``self.last``) maps to the output."""
        return self.joint[:-1](self._encode(x, t_emb))

    @property
    def last(self) -> nn.Linear:
        return self.joint[-1]

    def _encode(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        w = self.state_encoder.weight
        if x.dim() == 2 and t_emb.dim() <= 2:
            return torch.addmm(t_emb, x, w.t())  # one fused op per sampling step
        return torch.nn.functional.linear(x, w) + t_emb


class LangevinScaleNet(nn.Module):
    """``t -> scale(t)`` multiplying the clipped score in the Langevin parametrisation.

    Output per dimension (``out_dim = d``) or scalar (``out_dim = 1``); the last layer has zero weights
    and bias ``init`` (0.01: training starts from a small multiple of the score).
    """

    def __init__(self, out_dim: int = 1, hidden_dim: int = 64, harmonics: int = 64, layers: int = 3, init=0.01):
        super().__init__()
        self.register_buffer("freqs", torch.linspace(0.1, 100.0, harmonics))
        self.phase = nn.Parameter(torch.randn(harmonics))
        mods: list[nn.Module] = [nn.Linear(2 * harmonics, hidden_dim)]
        for _ in range(layers - 1):
            mods += [nn.GELU(), nn.Linear(hidden_dim, hidden_dim)]
        mods += [nn.GELU(), _zero_(nn.Linear(hidden_dim, out_dim), bias=init)]
        self.mlp = nn.Sequential(*mods)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = t.unsqueeze(-1) * self.freqs + self.phase
        return self.mlp(torch.cat([arg.sin(), arg.cos()], dim=-1))


class LogZ(nn.Module):
    """A scalar learned log-partition function (the initial flow of trajectory balance)."""

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        return self.value


class ConditionalLogZ(nn.Module):
    """``c -> log Z(c)``: the learned log-partition function of a conditional target, an MLP of the condition."""

    def __init__(self, cond_dim: int, hidden_dim: int = 64):
        super().__init__()
        self.mlp = condition_mlp(cond_dim, hidden_dim, 1)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        """``(B, cond_dim) -> (B,)``."""
        return self.mlp(condition).squeeze(-1)
