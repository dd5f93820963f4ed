"""Evaluation of amortised samplers of conditional targets (the paper's Table 2, VAE latent posterior).

For each of the target's M evaluation conditions, K on-policy trajectories give log-weights
``log w`` (M, K). Reported (all averaged over the M conditions):

* ``log_z``: the ELBO, mean over k of log w (the paper's log Ẑ);
* ``log_z_rw``: the per-condition importance-weighted bound log mean_k exp(log w), a consistent
  estimate of each log Z(c) = log p(image) as K grows;
* ``log_z_rw_across_conditions``: the statistic the paper's code reports as log Ẑ^RW: the
  log-mean-exp over the M conditions of *one* trajectory each (averaged here over the K independent
  replicates). It mixes different normalisers and is dominated by the easiest images, so it is far
  above the per-condition bound (about -47 vs about -99 on MNIST); it is reported for comparison only;
* ``ess``: mean normalised effective sample size per condition.

There is no exact log Z, so the delta metrics are None.
"""

from __future__ import annotations

import torch

from diffsampler.agents import metrics

CHUNK = 2000  # trajectories sampled at once (bounds the memory of the batched log-probability pass)


@torch.no_grad()
def sample_per_condition(agent, conditions: torch.Tensor, per_condition: int, generator=None, mdp=None):
    """Terminal states (M, K, d) and log-weights (M, K) of ``per_condition`` trajectories per condition."""
    if per_condition < 1:
        raise ValueError(f"trajectories per condition must be >= 1, got {per_condition!r}")
    m = conditions.shape[0]
    rows_per_chunk = max(1, CHUNK // per_condition)
    xs, log_ws = [], []
    for start in range(0, m, rows_per_chunk):
        c = conditions[start : start + rows_per_chunk].repeat_interleave(per_condition, 0)
        traj = agent.sample(c.shape[0], generator, condition=c, mdp=mdp)
        xs.append(traj.terminal.view(-1, per_condition, agent.mdp.dim))
        log_ws.append(traj.log_weight.view(-1, per_condition))
    return torch.cat(xs), torch.cat(log_ws)


def summarize_conditional(log_w: torch.Tensor) -> dict[str, float | None]:
    """Flat dict of metrics of per-condition log-weights ``(M, K)`` (see the module docstring)."""
    if log_w.dim() != 2:
        raise ValueError(f"log_w must be (conditions, trajectories per condition), got {tuple(log_w.shape)}")
    out: dict[str, float | None] = {
        "log_z": float(metrics.elbo(log_w).mean()),
        "log_z_rw": float(metrics.iw_log_z(log_w).mean()),
        "delta_log_z": None,
        "delta_log_z_rw": None,
        "w2": None,
        "eubo": None,
        "ess": float(metrics.ess(log_w).mean()),
        "log_z_rw_across_conditions": float(metrics.iw_log_z(log_w.t()).mean()),
        "conditions": log_w.shape[0],
        "trajectories_per_condition": log_w.shape[1],
    }
    return out


def default_per_condition(eval_samples: int, n_conditions: int) -> int:
    """Trajectories per evaluation condition when not set: the evaluation budget shared out, at least 2."""
    return max(2, eval_samples // n_conditions)


@torch.no_grad()
def evaluate_conditional(agent, per_condition: int, generator=None, mdp=None) -> tuple[dict, torch.Tensor]:
    """Metrics over the target's evaluation conditions, and the samples (M, K, d) for figures (``mdp``: the
    agent's MDP on another time grid)."""
    conditions = agent.target.eval_conditions.to(agent.mdp.device)
    x, log_w = sample_per_condition(agent, conditions, per_condition, generator, mdp)
    result = summarize_conditional(log_w)
    learned = agent.learned_log_z(conditions)
    result["log_z_learned"] = None if learned is None else float(learned.mean())
    return result, x
