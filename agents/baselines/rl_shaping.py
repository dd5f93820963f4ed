"""Potential-based reward shaping with the reference marginal: the same returns, learnable by TD.

In ``soft_rl`` mode each step pays ``log p_B(x_k | x_{k+1})`` (the first one minus ``log p_0(x_0)``) and
the last one adds ``log R(x_T)``. The reference process satisfies detailed balance with its own
marginals q_t, ``p_B(x_k | x_{k+1}) q_{k+1}(x_{k+1}) = p_F^ref(x_{k+1} | x_k) q_k(x_k)``, so for a policy at
the reference the step reward minus ``log pi`` is ``log q_k(x_k) - log q_{k+1}(x_{k+1})``: it pays for
leaving the reference's typical set, and only the terminal reward, T steps away, pays it back. A
bootstrapped critic learns the immediate part first, so SAC drifts away (|x_T| in the hundreds at
T = 100) before the terminal reward has propagated back.

With the potential ``Phi(x, t) = log q_t(x)``, the reference's marginal (``reference.marginal_log_prob``:
``N(0, sigma^2 t)`` on the bridge, ``N(0, sigma^2)`` on VP), taken as 0 at t = 0 and at termination, the
shaped reward ``r + Phi(s') - Phi(s)`` (Ng et al., 1999) is ``log p_F^ref(x_{k+1} | x_k)`` (with the
entropy bonus, a per-step KL to the reference) before the last step, and
``log R(x_T) - log q_1(x_T) + log p_F^ref(x_T | x_{T-1})`` at it. Since Phi vanishes at both ends, every
episode's return is unchanged, so the max-entropy objective (the ELBO), the optimal policy and all
metrics are exactly those of the unshaped env.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import torch


def reference_potential(obs: torch.Tensor, mdp) -> torch.Tensor:
    """``Phi = log q_t(x)`` (the reference's marginal) of observations ``[x, t, (c)]`` (n, obs dim); 0 where t = 0."""
    d = mdp.dim
    x, t = obs[..., :d], obs[..., d]
    lp = mdp.reference.marginal_log_prob(x, t.clamp_min(mdp.dt))
    return torch.where(t > 0, lp, torch.zeros_like(lp))


class PotentialShaping:
    """Shapes the rewards of ``n`` episodes of ``mdp`` stepped together (all start at t = 0, where Phi = 0)."""

    def __init__(self, n: int, mdp, device):
        self.mdp = mdp
        self.phi = torch.zeros(n, device=device)

    def reset(self, rows: torch.Tensor | None = None) -> None:
        if rows is None:
            self.phi.zero_()
        else:
            self.phi[rows] = 0.0

    def shape(self, reward, next_obs, terminated, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Shaped rewards of the envs ``rows`` (all if None); ``next_obs`` is before any autoreset."""
        phi_next = reference_potential(next_obs, self.mdp)
        phi_next = torch.where(terminated, torch.zeros_like(phi_next), phi_next).to(self.phi.dtype)
        phi_prev = self.phi if rows is None else self.phi[rows]
        shaped = reward + phi_next.to(reward.dtype) - phi_prev.to(reward.dtype)
        if rows is None:
            self.phi = phi_next
        else:
            self.phi[rows] = phi_next
        return shaped


class ReferenceShapingWrapper(gymnasium.Wrapper):
    """The same shaping for one ``gymnasium.make`` env (numpy observations ``[x, t]``)."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        self._mdp = env.unwrapped.mdp
        self._phi = 0.0

    def reset(self, **kwargs):
        self._phi = 0.0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        phi = 0.0 if terminated else float(reference_potential(torch.as_tensor(np.asarray(obs)), self._mdp))
        shaped = reward + phi - self._phi
        self._phi = phi
        return obs, shaped, terminated, truncated, info
