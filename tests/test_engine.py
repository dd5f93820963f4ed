"""The trajectory engine: rollouts, backward rollouts and scoring of any kernel, and its single places."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from diffsampler import envs
from diffsampler.agents.baselines.rl_shaping import PotentialShaping
from diffsampler.agents.policy import DiffusionPolicy, PolicyConfig
from diffsampler.envs import process
from diffsampler.envs.engine import Paths, log_weight

ROOT = Path(__file__).resolve().parents[1]


class ReferenceKernel:
    """The reference's own forward kernel ``N(c_k x, v_k)`` as a Gaussian kernel of the engine."""

    gaussian, score_clip = True, None

    def __init__(self, mdp):
        c, v = mdp.reference.forward_coefs()
        self.c = c if isinstance(c, float) else c.float()
        self.v = v if isinstance(v, float) else v.float()

    def context(self, condition=None, reference=None):
        return None

    def _at(self, coef, step):
        return coef if isinstance(coef, float) else (coef.view(-1, 1) if step is None else coef[step])

    def transition(self, x, step, ctx, score=None):
        return self._at(self.c, step) * x, self._at(self.v, step)

    def fixed_std(self, extra_std=0.0, ctx=None):
        return None


class WalkKernel:
    """A non-Gaussian kernel: Laplace increments of scale b, sampled and evaluated by the kernel itself."""

    gaussian, score_clip = False, None

    def __init__(self, b: float):
        self.b = b

    def context(self, condition=None, reference=None):
        return None

    def sample(self, x, step, ctx, generator):
        u = torch.rand(x.shape, generator=generator) - 0.5
        inc = -self.b * u.sign() * torch.log1p(-2 * u.abs())
        return x + inc, self._log_prob(inc)

    def _log_prob(self, inc):
        return (-inc.abs() / self.b - math.log(2 * self.b)).sum(-1)

    def log_prob(self, x, x_next, ctx):
        return self._log_prob(x_next - x)


@pytest.mark.parametrize("reference", ["bridge", "vp"])
def test_the_reference_kernel_scores_log_w_to_log_r_minus_its_terminal_marginal(reference):
    """Under the reference's own forward kernel, detailed balance gives log w = log R(x_T) - log q_1(x_T)."""
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=8, reference=reference)
    kernel = ReferenceKernel(mdp)
    traj = mdp.score(kernel, mdp.rollout(kernel, 500, torch.Generator().manual_seed(0)))
    expected = mdp.target.log_reward(traj.terminal) - mdp.reference.marginal_log_prob(traj.terminal, 1.0)
    torch.testing.assert_close(traj.log_weight, expected, rtol=1e-4, atol=1e-3)


def test_a_kernel_that_is_not_gaussian_records_and_rescores_its_log_probabilities():
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=4, num_steps=6)
    kernel = WalkKernel(0.3)
    paths = mdp.rollout(kernel, 64, torch.Generator().manual_seed(1))
    assert paths.log_pf is not None and paths.states.shape == (64, 7, 4)
    rescored = mdp.score(kernel, Paths(paths.states, paths.log_r))  # log p_F evaluated in one batched call
    torch.testing.assert_close(rescored.log_pf, paths.log_pf)
    torch.testing.assert_close(rescored.log_pb, mdp.reference.log_pb_path(paths.states))


def test_score_of_backward_paths_uses_the_reference_and_the_terminal_reward():
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=8)
    policy = DiffusionPolicy(2, 8, mdp.t_scale, PolicyConfig())
    x = mdp.target.sample(32, torch.Generator().manual_seed(2))
    traj = mdp.score(policy, mdp.rollout_backward(x, torch.Generator().manual_seed(3)))
    assert torch.equal(traj.terminal, x) and torch.equal(traj.states[:, 0], torch.zeros_like(x))
    step = traj.states[:, 1:] - traj.states[:, :-1]  # zero network: the bridge's forward kernel N(x, s^2 dt)
    expected_pf = process.gaussian_log_prob(step, 0.0, mdp.t_scale * mdp.dt)
    torch.testing.assert_close(traj.log_pf, expected_pf)
    torch.testing.assert_close(traj.log_weight, log_weight(mdp.target.log_reward(x), expected_pf, traj.log_pb))


def test_reparameterised_rollout_carries_path_gradients():
    mdp = envs.make_mdp("DiffSampler-Gaussian-v0", dim=2, num_steps=5)
    policy = DiffusionPolicy(2, 5, mdp.t_scale, PolicyConfig())
    paths = mdp.rollout(policy, 16, torch.Generator().manual_seed(0), reparam=True)
    traj = mdp.score(policy, paths)
    (grad,) = torch.autograd.grad(traj.log_weight.mean(), policy.net.last.bias)
    assert grad.abs().sum() > 0  # through x_T into log R and log p_B, not only through log p_F
    assert paths.log_pf is not None  # recorded on the way (the noise's density: no gradient at fixed variance)


@pytest.mark.parametrize("reference", ["bridge", "vp"])
def test_reward_shaping_pays_the_reference_forward_log_density_on_every_reference(reference):
    """With the potential log q_t (the reference's marginal), the shaped soft-RL reward of every step
    before the last is exactly log p_F^ref(x_{k+1} | x_k), pointwise, for any states: detailed balance of
    the reference. (A potential that ignores the reference, as before on VP, breaks this.)"""
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=6, reward_mode="soft_rl", reference=reference)
    n, kernel = 5, ReferenceKernel(mdp)
    gen = torch.Generator().manual_seed(4)
    episodes = mdp.new_batch(n, generator=gen)
    shaping = PotentialShaping(n, mdp, "cpu")
    for k in range(mdp.num_steps - 1):
        x = episodes.x
        x_next = x + torch.randn(n, 2, generator=gen) * 2.0  # arbitrary moves, not the reference's
        reward, _ = episodes.step(x_next)
        shaped = shaping.shape(reward, episodes.observe(), torch.zeros(n, dtype=torch.bool))
        mean, var = kernel.transition(x, k, None)
        torch.testing.assert_close(shaped, process.gaussian_log_prob(x_next, mean, var), rtol=1e-5, atol=1e-4)


def test_one_place_each():
    """The Gaussian log-density constant, log w and the rollout loops are each written once."""
    sources = {p: p.read_text() for d in ("agents", "envs", "buffers") for p in (ROOT / d).rglob("*.py")}
    outside_targets = {p: s for p, s in sources.items() if "targets" not in p.parts}
    two_pi = [p.name for p, s in outside_targets.items() if re.search(r"LOG_2PI|log\(2 \* math\.pi", s)]
    assert two_pi == ["process.py"], two_pi  # process.gaussian_log_density / gaussian_log_prob
    log_w = [p.name for p, s in sources.items() if re.search(r"log_pb\.sum\(-1\) - log_pf\.sum\(-1\)", s)]
    assert log_w == ["trajectories.py"], log_w
    forward = [p.name for p, s in sources.items() for _ in re.finditer(r"for k in range\(T\):", s)]
    backward = [p.name for p, s in sources.items() for _ in re.finditer(r"for k in range\(T - 1, ", s)]
    assert forward == ["engine.py"] and backward == ["engine.py"], (forward, backward)


@pytest.mark.parametrize("preset", ["tb", "tb-expl-lp", "fl-subtb", "dds"])  # dds: per-step coefficients
def test_replayed_activations_give_the_scores_and_gradients_of_a_fresh_forward_pass(preset):
    """score() replays the network activations the rollout recorded (and, at a fixed variance, takes the residuals
    from the rollout's noise): log p_F and the gradients of a fresh pass up to float32 rounding (the replay sums
    the rows in the rollout's time-major order, a fresh pass in batch-major order)."""
    from diffsampler.agents.gflownet import GFlowNetAgent
    from diffsampler.agents.presets import PRESETS

    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=4, num_steps=6, **PRESETS[preset].env_kwargs)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, PRESETS[preset].agent)
    params = list(agent.policy.net.parameters())
    for p in params:
        torch.nn.init.normal_(p, std=0.3)
    paths = mdp.rollout(agent.policy, 20, torch.Generator().manual_seed(1), 0.1, need_log_r_states=True)
    assert paths.record is not None and paths.record.matches(agent.policy.net, paths.states[:, :-1])
    fresh = Paths(**{**paths.__dict__, "record": None})
    a, b = mdp.score(agent.policy, paths), mdp.score(agent.policy, fresh)
    torch.testing.assert_close(a.log_pf, b.log_pf, rtol=1e-5, atol=1e-5 * b.log_pf.abs().max().item())
    for ga, gb in zip(torch.autograd.grad(a.log_pf.sum(), params), torch.autograd.grad(b.log_pf.sum(), params)):
        # float32: a fresh pass recomputes the residuals x_{k+1} - mean_k from rounded states (|x| up to ~100 here)
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-4 * gb.abs().max().item())
    with torch.no_grad():
        params[0].add_(1.0)  # an update: the record no longer describes the network
    assert not paths.record.matches(agent.policy.net, paths.states[:, :-1])
    torch.testing.assert_close(mdp.score(agent.policy, paths).log_pf, mdp.score(agent.policy, fresh).log_pf)


def test_the_time_major_replay_is_used_only_for_the_rollouts_own_unchanged_states():
    """A fixed-variance rollout keeps its time-major states for ``score``; paths changed in place, or other paths
    of the same shape, are scored from their own states."""
    from diffsampler.agents.gflownet import GFlowNetAgent
    from diffsampler.agents.presets import PRESETS

    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=4, num_steps=6)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, PRESETS["tb"].agent)
    net = agent.policy.net
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    paths = mdp.rollout(agent.policy, 20, torch.Generator().manual_seed(1), 0.1)
    emb = agent.policy.context(None).t_emb
    hidden, states, residuals = net.hidden_time_major(paths.states[:, :-1], emb, paths.record)
    assert torch.equal(states.transpose(0, 1), paths.states) and hidden.shape == (6, 20, net.last.in_features)
    with torch.no_grad():  # the kept residuals are x_{k+1} - mean_k
        mean = agent.policy.transition(paths.states[:, :-1], None, agent.policy.context(None), None)[0]
    torch.testing.assert_close(residuals.transpose(0, 1), paths.states[:, 1:] - mean, rtol=0, atol=1e-5)
    other = paths.states.clone()
    assert net.hidden_time_major(other[:, :-1], emb, paths.record) is None
    with torch.no_grad():
        paths.states[3, 2] += 1.0  # changed in place after the rollout: the kept copy no longer describes them
    assert net.hidden_time_major(paths.states[:, :-1], emb, paths.record) is None
    fresh = Paths(**{**paths.__dict__, "record": None})
    torch.testing.assert_close(mdp.score(agent.policy, paths).log_pf, mdp.score(agent.policy, fresh).log_pf)
