"""Critics that start at the reference process: ``Q(s, a) = log N(a; 0, sigma^2 dt) + f(s, a)``, ``f(., .) = 0``
at initialisation (``RLConfig.critic_prior``).

Why. With the potential-based shaping of ``rl_shaping`` (potential ``log N(x; 0, sigma^2 t)``, the reference's
marginal) the soft Q-function of the reference policy is, up to a constant, the reference's own log-density of
the step: ``log p_B(x | x') + Phi(x') - Phi(x) = log N(x' - x; 0, sigma^2 dt)`` (detailed balance of Brownian
motion). A library critic starts as a random function of the action instead, whose action-gradient moves the
actor away from a policy that starts at the reference (``init_at_reference``) long before the terminal reward has
been propagated back over T bootstrapped steps; on the standard Gaussian, where the reference is exact, SB3 SAC
ends 3,000,000 env steps at Δlog Z^RW 0.53 from an exact start (``benchmarks/results/rl_sweep.jsonl``). Writing the
critic as the reference's step log-density plus a network whose last layer starts at zero makes the initial
actor soft-greedy with respect to the initial critic, so training moves it only as the data asks.

This changes the function class's parametrisation, not the objective: ``f`` is the library's own MLP, and any
``Q`` the library could represent, this critic can too. Both libraries feed their critics the squashed action
``a`` in [-1, 1] (SB3 stores scaled actions; Tianshou stores the policy's output and remaps it only for the env),
and the env's increment is ``a * B * sigma sqrt(dt)`` with ``B = action_bound_std``, so the prior is
``-B^2 |a|^2 / 2`` (its constant dropped). The identity is that of the default Brownian reference on a uniform
grid; with another reference the prior is only a starting point, and the objective is still the same.
"""

from __future__ import annotations

import torch


def reference_prior(actions: torch.Tensor, bound_std: float) -> torch.Tensor:
    """``log N(a B sigma sqrt(dt); 0, sigma^2 dt)`` up to a constant: ``-B^2 |a|^2 / 2``, shape ``(n, 1)``."""
    return -0.5 * bound_std**2 * actions.square().sum(-1, keepdim=True)


def last_linear(module: torch.nn.Module) -> torch.nn.Linear:
    """The last ``nn.Linear`` of ``module`` (its output layer)."""
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]


def zero_last_linear(module: torch.nn.Module) -> None:
    """Zero the weights and bias of the last ``nn.Linear`` of ``module`` (the network starts at 0)."""
    last = last_linear(module)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
