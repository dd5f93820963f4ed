"""CMCD's kernels on the engine: zero control is AIS with ULA kernels both ways; scores, segments and schedules."""

from __future__ import annotations

import math

import pytest
import torch

from diffsampler import envs
from diffsampler.agents.cmcd import CMCDConfig, CMCDKernel
from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
from diffsampler.agents.policy import PolicyConfig
from diffsampler.envs import process
from diffsampler.envs.engine import clipped_score
from diffsampler.envs.targets import make_target
from diffsampler.envs.targets.base import EvaluationCounter

T, N = 6, 200


def _mdp(name="manywell", **kw):
    return envs.DiffusionMDP(make_target(name, **kw), num_steps=T, reference="vp", dtype=torch.float64)


def _kernel(mdp, clip_score: float = 1e2, **cmcd) -> CMCDKernel:
    config = PolicyConfig(kernel="cmcd", clip_score=clip_score, cmcd=CMCDConfig(**cmcd))
    return CMCDKernel(mdp.dim, mdp.num_steps, mdp.t_scale, config, mdp.reference).double()


def _ais(states: torch.Tensor, target, sigma2: float, scale: float):
    """AIS along given paths, written out independently: p_0 = N(0, sigma2 I), levels b_k = k / T, ULA kernels of
    pi_{b_{k+1}} with step scale / T forward (x_k -> x_{k+1}) and backward (x_{k+1} -> x_k), autograd scores.
    Returns the log-weights and the standardised residuals of the forward and backward moves."""
    x = states.detach()
    steps, d = x.shape[1] - 1, x.shape[2]
    delta = scale / steps
    std = math.sqrt(2 * delta)

    def grad_log_pi(y, b):
        y = y.clone().requires_grad_(True)
        log_pi = b * target.log_reward(y) - (1 - b) * 0.5 * y.square().sum(-1) / sigma2
        return torch.autograd.grad(log_pi.sum(), y)[0]

    p0 = torch.distributions.Normal(torch.zeros(d, dtype=x.dtype), math.sqrt(sigma2))
    log_w = target.log_reward(x[:, -1]).detach() - p0.log_prob(x[:, 0]).sum(-1)
    fwd_res, bwd_res = [], []
    for k in range(steps):
        b = (k + 1) / steps
        fwd_mean = x[:, k] + delta * grad_log_pi(x[:, k], b)
        bwd_mean = x[:, k + 1] + delta * grad_log_pi(x[:, k + 1], b)
        log_f = torch.distributions.Normal(fwd_mean, std).log_prob(x[:, k + 1]).sum(-1)
        log_b = torch.distributions.Normal(bwd_mean, std).log_prob(x[:, k]).sum(-1)
        log_w = log_w + log_b - log_f
        fwd_res.append((x[:, k + 1] - fwd_mean) / std)
        bwd_res.append((x[:, k] - bwd_mean) / std)
    return log_w, torch.stack(fwd_res), torch.stack(bwd_res)


def _standard_normal(res: torch.Tensor) -> None:
    """Mean 0 and variance 1 within 5 standard errors."""
    m, v = res.mean(), res.var()
    se_mean, se_var = 1 / math.sqrt(res.numel()), math.sqrt(2 / res.numel())
    assert abs(float(m)) < 5 * se_mean and abs(float(v) - 1) < 5 * se_var, (float(m), float(v))


def test_zero_control_cmcd_is_ais_with_ula_kernels_both_ways():
    mdp = _mdp(dim=4)
    kernel = _kernel(mdp, clip_score=1e9, step_scale=0.1)  # AIS has no clip
    gen = torch.Generator().manual_seed(0)
    ctx = kernel.context(None, mdp.reference)
    u = kernel.net(torch.randn(3, 4, dtype=torch.float64), ctx.t_emb[0]), ctx.scale
    assert float(u[0].detach().abs().max()) == 0.0 and float(u[1].detach().abs().max()) == 0.0  # a zero control
    forward = mdp.rollout(kernel, N, gen)
    backward = mdp.rollout_backward(mdp.target.sample(N, gen).double(), gen, backward=kernel.backward)
    for paths, moved in ((forward, 1), (backward, 2)):
        traj = mdp.score(kernel, paths, kernel.backward)
        log_w, fwd_res, bwd_res = _ais(paths.states, mdp.target, mdp.t_scale, 0.1)
        torch.testing.assert_close(traj.log_weight, log_w, rtol=1e-9, atol=1e-8)
        _standard_normal(fwd_res if moved == 1 else bwd_res)  # the direction the paths were drawn in is ULA


def test_scores_are_evaluated_once_per_state_and_reused():
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=T, reference="vp")
    kernel = CMCDKernel(2, T, mdp.t_scale, PolicyConfig(kernel="cmcd"), mdp.reference)
    counter, gen = EvaluationCounter(mdp.target), torch.Generator().manual_seed(1)
    with torch.no_grad():
        paths = mdp.rollout(kernel, 10, gen)
        traj = mdp.score(kernel, paths, kernel.backward)
    assert counter.count == 10 * (T + 2)  # T scores, log R(x_T), and the one missing score (x_T's) in score
    back = mdp.rollout_backward(mdp.target.sample(10, gen), gen, backward=kernel.backward, score_clip=100.0)
    _, expected = clipped_score(mdp.target, back.states.reshape(-1, 2), 100.0)
    scores = torch.cat([back.scores, back.terminal_score.unsqueeze(1)], 1)
    torch.testing.assert_close(scores, expected.view(10, T + 1, 2))
    counted = counter.count
    rescored = mdp.score(kernel, back, kernel.backward)
    assert counter.count == counted  # backward paths carry every score
    stripped = type(back)(back.states, back.log_r)  # no recorded scores: all evaluated in one batched call
    torch.testing.assert_close(mdp.score(kernel, stripped, kernel.backward).log_pb, rescored.log_pb)
    with pytest.raises(ValueError, match="score clip"):
        mdp.rollout_backward(back.states[:, -1], gen, backward=kernel.backward, score_clip=5.0)
    assert torch.isfinite(traj.log_weight).all()


def test_segments_score_like_the_whole_path():
    mdp = _mdp("gmm25")
    kernel = _kernel(mdp, annealing="learned", learn_step_size=True)
    torch.manual_seed(0)
    for p in kernel.parameters():  # a non-zero control and a non-linear schedule
        torch.nn.init.normal_(p, std=0.1)
    gen = torch.Generator().manual_seed(2)
    paths = mdp.rollout(kernel, 32, gen)
    whole = mdp.score(kernel, paths, kernel.backward)
    for a, b in ((0, 2), (2, 5), (5, 6)):
        seg = type(paths)(paths.states[:, a : b + 1], paths.log_r, paths.scores[:, a:b], first_step=a)
        part = mdp.score(kernel, seg, kernel.backward)
        torch.testing.assert_close(part.log_pf, whole.log_pf[:, a:b])
        torch.testing.assert_close(part.log_pb, whole.log_pb[:, a:b])  # incl. - log p_0(x_0) when a = 0
    start = paths.states[:, 2]
    segment = mdp.rollout(kernel, 32, gen, start=start, steps=(2, 5))
    assert segment.first_step == 2 and segment.states.shape == (32, 4, 2) and torch.equal(segment.states[:, 0], start)
    with pytest.raises(ValueError, match="steps"):
        mdp.rollout(kernel, 4, gen, steps=(3, 3))


def test_schedules_are_monotone_and_pinned_on_any_grid():
    mdp = _mdp("gmm25")
    kernel = _kernel(mdp, annealing="learned", learn_step_size=True, step_schedule="cosine")
    torch.nn.init.normal_(kernel.beta_logits, std=2.0)
    torch.nn.init.normal_(kernel.log_step, std=0.5)
    for times in (kernel.times, process.random_grid(9, torch.Generator().manual_seed(3)).double()):
        b = kernel.levels(times)
        assert b[0] == 0 and b[-1] == 1 and bool((b.diff() > 0).all())
        assert bool((kernel.step_sizes(times) > 0).all())
    own = kernel.levels(kernel.times)
    torch.testing.assert_close(kernel.levels(kernel.times.clone() + 0.0), own)
    b = kernel.levels(kernel.times)
    b.sum().backward()
    assert kernel.beta_logits.grad is not None and float(kernel.beta_logits.grad.abs().sum()) > 0


def test_cmcd_trains_with_every_objective_family_and_a_local_search_buffer():
    from diffsampler.buffers.local_search import LocalSearchConfig
    from diffsampler.buffers.source import BufferConfig

    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=T, reference="vp")
    ls = BufferConfig(buffer_sampling="uniform", local_search=LocalSearchConfig(ls_steps=3, ls_burn_in=1))
    policy = PolicyConfig(kernel="cmcd", cmcd=CMCDConfig(annealing="learned"))
    for config in (
        GFlowNetConfig("tb", policy, batch_size=16, exploration_std=0.1, backward_source="buffer", buffer=ls),
        GFlowNetConfig("vargrad", policy, batch_size=16, time_grid="random"),
        GFlowNetConfig("fl-subtb", policy, batch_size=16),
    ):
        agent = GFlowNetAgent(mdp, config)
        before = [p.detach().clone() for p in agent.policy.parameters()]
        gen = torch.Generator().manual_seed(0)
        for it in range(3):
            assert math.isfinite(float(agent.train_step(it, gen, gen)["loss"]))
        assert any(not torch.equal(a, p) for a, p in zip(before, agent.policy.parameters()))


def test_invalid_cmcd_settings_are_named():
    with pytest.raises(ValueError, match="learn_variance"):
        PolicyConfig(kernel="cmcd", learn_variance=True)
    with pytest.raises(ValueError, match="kernel"):
        PolicyConfig(kernel="nope")
    with pytest.raises(ValueError, match="step_scale"):
        CMCDConfig(step_scale=-1.0)
    with pytest.raises(ValueError, match="path gradients"):
        GFlowNetConfig("pis", PolicyConfig(kernel="cmcd"))
    bridge = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=T)
    with pytest.raises(ValueError, match="reference='vp'"):
        GFlowNetAgent(bridge, GFlowNetConfig("tb", PolicyConfig(kernel="cmcd")))
