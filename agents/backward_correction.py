"""A learned correction of the reference's backward kernel, a backward kernel of the trajectory engine."""

from __future__ import annotations

import torch

from diffsampler.agents.networks import JointNet
from diffsampler.envs import process
from diffsampler.envs.reference import Reference


class BackwardCorrection(JointNet):
    """A learned correction of the reference's backward kernel ``p_B(x_k | x_{k+1}) = N(m_k x_{k+1}, v_k)``:
    ``N(x' (1 - (1 - m_k) c_mu), v_k c_var)`` with ``c = 1 + range * tanh(net)``, a backward kernel of the
    engine (``envs.engine.BackwardKernel``). On the bridge ``1 - m_k = dt / t_{k+1}`` and
    ``v_k = sigma^2 dt t_k / t_{k+1}``."""

    def __init__(self, dim: int, reference: Reference, config, cond_dim: int | None = None):
        c = config
        super().__init__(dim, 2 * dim, c.hidden_dim, c.harmonics, c.joint_layers, True, cond_dim)
        self.dim, self.num_steps, self.range = dim, reference.num_steps, c.backward_range
        self.reference = reference
        m, v = reference.backward_coefs()
        self.register_buffer("back_shrink", (1 - m).float(), persistent=False)
        self.register_buffer("back_var", v.float(), persistent=False)
        self.register_buffer("back_times", process.time_grid(reference.num_steps)[1:], persistent=False)

    def context(self, condition: torch.Tensor | None = None, reference: Reference | None = None):
        """(condition embeddings or None, 1 - m_k, v_k, t_{k+1}) on ``reference``'s grid (default: its own)."""
        c_emb = None if condition is None else self.embed_condition(condition)
        if reference is None or reference.same_as(self.reference):
            return c_emb, self.back_shrink, self.back_var, self.back_times
        m, v = reference.backward_coefs()
        return c_emb, (1 - m).to(self.back_var), v.to(self.back_var), reference.grid_like(self.back_var)[1:]

    def transition(self, x_next, steps, ctx):
        """``(mean, var)`` at steps ``steps`` (an int, ``x_next`` (n, d); or a slice, ``x_next`` (B, len, d))."""
        c_emb, back_shrink, back_var, times = ctx
        emb = self.embed_time(times[steps])
        if c_emb is not None:
            emb = emb + (c_emb.unsqueeze(1) if isinstance(steps, slice) else c_emb)
        out = self(x_next, emb)
        c_mu = 1 + self.range * torch.tanh(out[..., : self.dim])
        c_var = 1 + self.range * torch.tanh(out[..., self.dim :])
        shrink, var = back_shrink[steps], back_var[steps]
        if isinstance(steps, slice):
            shrink, var = shrink.unsqueeze(-1), var.unsqueeze(-1)
        return x_next * (1 - shrink * c_mu), var * c_var
