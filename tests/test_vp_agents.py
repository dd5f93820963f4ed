"""Agents on the VP reference: the exact-policy identity, parametrisations (euler, dds, dis) against closed
forms, every objective, the DDS and DIS presets, flows and the learned backward correction."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from scipy.integrate import quad
from torch.distributions import Normal

from diffsampler import envs
from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
from diffsampler.agents.objectives import OBJECTIVES
from diffsampler.agents.policy import DiffusionPolicy, PolicyConfig
from diffsampler.agents.presets import PRESETS
from diffsampler.envs.engine import Paths, clipped_score
from diffsampler.envs.reference import make_reference
from diffsampler.envs.targets import Gaussian

BETA_MIN, BETA_MAX = 0.1, 10.0


def std_normal(var: float) -> Normal:
    """N(0, var) with float64 parameters (a Normal built from Python floats would be float32)."""
    return Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(var, dtype=torch.float64).sqrt())


def beta(tau: float) -> float:
    return BETA_MIN + (BETA_MAX - BETA_MIN) * tau


def step_noise(num_steps: int) -> torch.Tensor:
    """``a_k = 1 - exp(-int beta)`` over step k (diffusion time 1 - t), by quadrature, float64."""
    dt = 1.0 / num_steps
    steps = [-math.expm1(-quad(beta, 1 - (k + 1) * dt, 1 - k * dt)[0]) for k in range(num_steps)]
    return torch.tensor(steps, dtype=torch.float64)


class ExactVPGaussianPolicy(DiffusionPolicy):
    """Kernels = the exact conditionals P(x_{k+1} | x_k) of the path measure N(mu, s^2) x VP reference.

    Under P each coordinate is Gaussian: x_k = rho_k x_{k+1} + sqrt(sigma^2 a_k) eps, so with
    A_k = prod_{j >= k} rho_j: mean m_k = A_k mu, variance V_k = A_k^2 s^2 + sigma^2 (1 - A_k^2) and
    Cov(x_k, x_{k+1}) = rho_k V_{k+1}; P is Markov, so P(x_{k+1} | x_k) is the Gaussian conditional.
    The "time embedding" is the step index, so the tables below are indexed by it.
    """

    def __init__(self, dim, num_steps, t_scale, mu, s):
        super().__init__(dim, num_steps, t_scale, PolicyConfig(), make_reference("vp", num_steps, t_scale))
        a = step_noise(num_steps)
        rho = (1 - a).sqrt()
        big_a = torch.cat([torch.flip(torch.cumprod(torch.flip(rho, [0]), 0), [0]), torch.ones(1, dtype=a.dtype)])
        self.m, self.v = big_a * mu, big_a**2 * s * s + t_scale * (1 - big_a**2)
        gain = rho * self.v[1:] / self.v[:-1]
        self.gain, self.cond_var = gain, self.v[1:] - gain * rho * self.v[1:]

    def time_features(self, t):
        return torch.round(t * self.num_steps).long(), None

    def kernel(self, x, k, lgv_scale=None, score=None, step=None):
        m0, m1, gain, var = self.m[k], self.m[k + 1], self.gain[k], self.cond_var[k]
        if k.dim():
            m0, m1, gain, var = (u.unsqueeze(-1) for u in (m0, m1, gain, var))
        return m1 + gain * (x - m0), var.expand_as(x)


@pytest.mark.parametrize("mu, s, sigma2", [(0.0, 1.0, 1.0), (1.5, 0.7, 2.0), (-2.0, 2.5, 5.0), (0.0, 2.0, 4.0)])
def test_exact_policy_log_weight_on_vp(mu, s, sigma2):
    """log w = log Z + log m_0(x_0) - log p_0(x_0) exactly, for every trajectory: the policy starts
    from p_0 = N(0, sigma^2), not from the path measure's own x_0-marginal m_0 = N(m_0, V_0). When the
    target is the stationary law N(0, sigma^2) (last case) m_0 = p_0 and log w = log Z."""
    num_steps, d, n = 20, 3, 64
    target = Gaussian(dim=d, mean=mu, std=s)
    policy = ExactVPGaussianPolicy(d, num_steps, sigma2, mu, s).double()
    mdp = envs.DiffusionMDP(target, num_steps, sigma2, dtype=torch.float64, reference="vp")
    g = torch.Generator().manual_seed(0)
    states = torch.zeros(n, num_steps + 1, d, dtype=torch.float64)
    states[:, 0] = math.sqrt(sigma2) * torch.randn(n, d, generator=g, dtype=torch.float64)
    for k in range(num_steps):
        mean, var = policy.kernel(states[:, k], torch.tensor(k))
        states[:, k + 1] = mean + var.sqrt() * torch.randn(n, d, generator=g, dtype=torch.float64)
    with torch.no_grad():
        traj = mdp.score(policy, Paths(states, target.log_reward(states[:, -1])))
    x0 = states[:, 0]
    correction = Normal(policy.m[0], policy.v[0].sqrt()).log_prob(x0) - std_normal(sigma2).log_prob(x0)
    torch.testing.assert_close(traj.log_weight, target.log_Z + correction.sum(-1))
    if mu == 0.0 and s * s == sigma2:
        torch.testing.assert_close(traj.log_weight, torch.full((n,), target.log_Z, dtype=torch.float64))


@pytest.mark.parametrize("parametrisation", ["euler", "dds", "dis"])
def test_zero_network_is_the_stationary_reference(parametrisation):
    """With a zero network every parametrisation is the reference's own kernel, so P_F is the stationary OU
    chain and log w = log R(x_T) - log N(x_T; 0, sigma^2) exactly; and x_T ~ N(0, sigma^2)."""
    mdp = envs.make_mdp("DiffSampler-GMM25-v0", num_steps=10, reference="vp")
    policy = DiffusionPolicy(2, 10, mdp.t_scale, PolicyConfig(parametrisation=parametrisation), mdp.reference)
    n = 4000
    traj = mdp.score(policy, mdp.rollout(policy, n, torch.Generator().manual_seed(0)))
    x_t = traj.terminal
    expected = mdp.target.log_reward(x_t) - std_normal(mdp.t_scale).log_prob(x_t).sum(-1)
    torch.testing.assert_close(traj.log_weight, expected, rtol=1e-4, atol=2e-4)
    assert not torch.equal(traj.states[:, 0], torch.zeros_like(x_t))
    for x in (traj.states[:, 0], x_t):
        err = (x.var(0) - mdp.t_scale).abs().max()
        assert err < 4 * mdp.t_scale * math.sqrt(2 / (n - 1)), f"variance off by {err}"


def test_parametrisations_match_their_closed_forms():
    """Constant network output f: euler N(rho x + dt f, s2 a), dds N(rho x + 2 s2 (1 - rho) f, s2 a),
    dis N(rho x + s2 beta dt (f + t (score + x / s2)), s2 a) with beta at the step's start."""
    num_steps, sigma2, d = 10, 2.0, 3
    ref = make_reference("vp", num_steps, sigma2)
    target = Gaussian(dim=d, mean=1.0, std=0.5)
    a, dt = step_noise(num_steps), 1.0 / num_steps
    x = torch.randn(5, d, generator=torch.Generator().manual_seed(0))
    f = torch.tensor([0.3, -0.2, 0.5])
    for name in ("euler", "dds", "dis"):
        policy = DiffusionPolicy(d, num_steps, sigma2, PolicyConfig(parametrisation=name, langevin=True), ref)
        torch.nn.init.constant_(policy.langevin_scale.mlp[-1].bias, 0.0 if name != "dis" else 1.0)
        with torch.no_grad():
            policy.net.joint[-1].bias.copy_(f)
        _, score = clipped_score(target, x, 100.0)
        for k in (0, 4, 9):
            t_emb, scale = policy.time_features(policy.times[k : k + 1])
            mean, var = policy.kernel(x, t_emb[0], scale[0], score, step=k)
            rho, t = math.sqrt(1 - a[k]), k * dt
            if name == "euler":
                exp_mean, exp_var = rho * x + dt * f, sigma2 * a[k]
            elif name == "dds":
                exp_mean, exp_var = rho * x + 2 * sigma2 * (1 - rho) * f, sigma2 * a[k]
            else:
                exp_mean = rho * x + sigma2 * beta(1 - t) * dt * (f + t * (score + x / sigma2))
                exp_var = sigma2 * a[k]
            torch.testing.assert_close(mean, exp_mean.float(), msg=f"{name} k={k}")
            assert float(var) == pytest.approx(float(exp_var), rel=1e-5), f"{name} k={k}"


def test_dds_and_dis_need_the_vp_reference():
    for name in ("dds", "dis"):
        with pytest.raises(ValueError, match=f"parametrisation '{name}' needs the reference 'vp', got 'bridge'"):
            DiffusionPolicy(2, 10, 1.0, PolicyConfig(parametrisation=name))
    with pytest.raises(ValueError, match="'heun'"):
        PolicyConfig(parametrisation="heun")


def _agent(env_id, config: GFlowNetConfig, num_steps=10, **env_kwargs):
    mdp = envs.make_mdp(env_id, num_steps=num_steps, **{"reference": "vp", **env_kwargs})
    assert mdp.reference.name == "vp"
    torch.manual_seed(0)
    return GFlowNetAgent(mdp, config)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_every_objective_trains_on_vp(objective):
    config = {"batch_size": 32, "backward_source": "exact" if objective == "bwd-mle" else None}
    agent = _agent("DiffSampler-GMM25-v0", GFlowNetConfig(objective, **config))
    before = [p.detach().clone() for p in agent.parameters()]
    g = torch.Generator().manual_seed(0)
    for it in range(3):
        batch = agent.next_batch(it, g, g)
        traj = agent.training_trajectories(it, batch, torch.Generator().manual_seed(it))
        assert not torch.equal(traj.states[:, 0], torch.zeros_like(traj.states[:, 0]))  # x_0 ~ N(0, sigma^2)
        assert torch.isfinite(traj.log_weight).all()
        loss = agent.train_step(it, g, batch=batch)["loss"]
        assert torch.isfinite(loss)
    assert any(not torch.equal(p, q) for p, q in zip(agent.parameters(), before, strict=True))
    learned = agent.learned_log_z()
    assert learned is None or math.isfinite(float(learned))


@pytest.mark.parametrize("preset", ["dds", "dis"])
@pytest.mark.parametrize("env_id", ["DiffSampler-GMM25-v0", "DiffSampler-Funnel-v0"])
def test_dds_and_dis_presets_run(preset, env_id):
    agent = _agent(env_id, PRESETS[preset].agent, **PRESETS[preset].env_kwargs)
    assert agent.objective.path_gradient and agent.policy.config.parametrisation == preset
    g = torch.Generator().manual_seed(0)
    losses = [float(agent.train_step(it, g)["loss"]) for it in range(3)]
    assert all(math.isfinite(v) for v in losses)
    traj = agent.sample(64, torch.Generator().manual_seed(1))
    assert torch.isfinite(traj.log_weight).all() and traj.states.shape == (64, 11, agent.mdp.dim)


@pytest.mark.parametrize("preset", ["dds", "dis"])
def test_dds_and_dis_learn_a_gaussian(preset):
    """A few dozen KL steps on an off-centre Gaussian improve the ELBO by a clear margin."""
    mdp = envs.make_mdp("DiffSampler-Gaussian-v0", num_steps=10, dim=2, mean=2.0, reference="vp")
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, dataclasses.replace(PRESETS[preset].agent, batch_size=64))
    g = torch.Generator().manual_seed(0)

    def elbo():
        return float(agent.sample(2000, torch.Generator().manual_seed(1)).log_weight.mean())

    start = elbo()
    for it in range(40):
        agent.train_step(it, g)
    assert mdp.target.log_Z - elbo() < 0.5 * (mdp.target.log_Z - start)


def test_forward_looking_flow_at_the_start_is_the_network_and_learned_log_z_averages_it():
    agent = _agent("DiffSampler-GMM25-v0", GFlowNetConfig("fl-subtb"))
    torch.nn.init.normal_(agent.flow.joint[-1].weight)
    paths = agent.mdp.rollout(agent.policy, 5, torch.Generator().manual_seed(0), need_log_r_states=True)
    with torch.no_grad():
        log_f = agent.log_flows(paths)
        t0 = agent.policy.times[:1]
        net = agent.flow(paths.states[:, 0], agent.flow.embed_time(t0)).squeeze(-1)
    torch.testing.assert_close(log_f[:, 0], net)  # q_0 = p_0 on VP: the forward-looking term vanishes
    torch.testing.assert_close(log_f[:, -1], paths.log_r)
    x0 = agent.mdp.reference.initial_sample(4096, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        flows = agent.flow(x0, agent.flow.embed_time(t0)).squeeze(-1)
    torch.testing.assert_close(agent.learned_log_z(), torch.logsumexp(flows, 0) - math.log(4096))


def test_learned_backward_on_vp_starts_at_the_reference_and_samples_a_random_start():
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=4, num_steps=10, reference="vp")
    torch.manual_seed(0)
    policy = DiffusionPolicy(4, 10, mdp.t_scale, PolicyConfig(learn_backward=True), mdp.reference)
    x = mdp.target.sample(64, torch.Generator().manual_seed(0))
    paths = mdp.rollout_backward(x, torch.Generator().manual_seed(1), backward=policy.backward)
    assert torch.equal(paths.states[:, -1], x) and (paths.states[:, 0] != 0).all()
    with torch.no_grad():
        reference = mdp.reference.log_pb_path(paths.states)
        torch.testing.assert_close(mdp.score(policy, paths, policy.backward).log_pb, reference)
        torch.nn.init.normal_(policy.backward.joint[-1].weight, std=0.1)
        assert not torch.allclose(mdp.score(policy, paths, policy.backward).log_pb, reference)


def test_grad_clip_bounds_the_gradient_norm_and_is_validated():
    agent = _agent("DiffSampler-Funnel-v0", GFlowNetConfig("pis", batch_size=32, grad_clip=1e-3))
    agent.train_step(0, torch.Generator().manual_seed(0))
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in agent.parameters() if p.grad is not None]))
    assert float(norm) == pytest.approx(1e-3, rel=1e-4)  # the raw gradient is far larger: it was clipped
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match=f"grad_clip must be None or a finite number > 0, got {bad}"):
            GFlowNetConfig("pis", grad_clip=bad)
