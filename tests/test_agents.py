"""Policy, rollouts and agent: exact-policy identity, Langevin parametrisation, determinism."""

import math

import pytest
import torch

from diffsampler import envs
from diffsampler.agents.errors import NonFiniteBatch
from diffsampler.agents.gflownet import GFlowNetAgent, GFlowNetConfig
from diffsampler.agents.policy import DiffusionPolicy, PolicyConfig
from diffsampler.agents.presets import PRESETS
from diffsampler.envs.engine import Paths, clipped_score
from diffsampler.envs.targets import Gaussian


class ExactGaussianPolicy(DiffusionPolicy):
    """Kernels = the exact conditionals P(x_{k+1} | x_k) of the path measure target x bridge.

    Under P = N(mu, s^2) on x_T and the Brownian bridge (variance sigma^2) below it, each coordinate
    is Gaussian with mean t_k mu and covariance C_ij = t_i t_j s^2 + sigma^2 t_i (1 - t_j) (i <= j);
    P is Markov, so P(x_{k+1} | x_k) is the Gaussian conditional of the pair (x_k, x_{k+1}).
    """

    def __init__(self, dim, num_steps, t_scale, mu, s):
        super().__init__(dim, num_steps, t_scale, PolicyConfig())
        self.mu, self.s2 = mu, s * s

    def time_features(self, t):
        return t, None  # the "embedding" is the time itself

    def _cov(self, ti, tj):
        return ti * tj * self.s2 + self.t_scale * ti * (1 - tj)

    def kernel(self, x, t, lgv_scale=None, score=None):
        t = t.unsqueeze(-1) if t.dim() else t
        t1 = t + self.dt
        c11 = self._cov(t1, t1)
        c10 = self._cov(t, t1)
        c00 = self._cov(t, t).clamp_min(1e-30)
        gain = torch.where(t > 0, c10 / c00, torch.zeros_like(c10))
        mean = t1 * self.mu + gain * (x - t * self.mu)
        var = c11 - gain * c10
        return mean, var.expand_as(mean)


@pytest.mark.parametrize("mu, s, sigma2", [(0.0, 1.0, 1.0), (1.5, 0.7, 2.0), (-2.0, 2.5, 5.0)])
def test_exact_policy_gives_log_weight_equal_log_z(mu, s, sigma2):
    target = Gaussian(dim=3, mean=mu, std=s)
    mdp = envs.DiffusionMDP(target, num_steps=20, t_scale=sigma2, dtype=torch.float64)
    policy = ExactGaussianPolicy(3, 20, sigma2, mu, s).double()
    policy.times = policy.times.double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        states = torch.zeros(64, 21, 3, dtype=torch.float64)
        for k in range(20):
            mean, var = policy.kernel(states[:, k], policy.times[k])
            states[:, k + 1] = mean + var.sqrt() * torch.randn(64, 3, generator=g, dtype=torch.float64)
        traj = mdp.score(policy, Paths(states, target.log_reward(states[:, -1])))
    torch.testing.assert_close(traj.log_weight, torch.full((64,), target.log_Z, dtype=torch.float64))


def test_langevin_with_zero_network_is_scaled_clipped_score():
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=4)
    policy = DiffusionPolicy(4, mdp.num_steps, mdp.t_scale, PolicyConfig(langevin=True, clip_score=100.0))
    x = torch.tensor([[0.5, -1.0, 4.0, 0.0], [-3.0, 2.0, 0.1, 1.0]])
    log_r, score = clipped_score(mdp.target, x, 100.0)
    xg = x.clone().requires_grad_(True)
    (raw,) = torch.autograd.grad(mdp.target.log_reward(xg).sum(), xg)
    assert (raw.abs() > 100).any(), "the example must exercise the clipping"
    torch.testing.assert_close(score, raw.clamp(-100, 100))
    torch.testing.assert_close(log_r, mdp.target.log_reward(x))
    t_emb, scale = policy.time_features(policy.times[3:4])
    mean, var = policy.kernel(x, t_emb[0], scale[0], score)
    torch.testing.assert_close(mean, x + mdp.dt * scale[0] * score)
    assert float(scale[0].detach()) == pytest.approx(0.01)  # zero weights, bias 0.01
    assert var == pytest.approx(mdp.t_scale * mdp.dt)


def test_exploration_adds_variance_but_log_pf_uses_own_kernel():
    mdp = envs.make_mdp("DiffSampler-Gaussian-v0", dim=2, num_steps=20)
    agent = GFlowNetAgent(mdp, GFlowNetConfig("tb"))
    n = 4000
    on = mdp.rollout(agent.policy, n, torch.Generator().manual_seed(0), 0.0)
    off = mdp.rollout(agent.policy, n, torch.Generator().manual_seed(0), 0.3)
    # Zero network: x_T ~ N(0, sigma^2 (+ T * 0.09)) per coordinate; compare variances with SE bounds.
    for paths, var in ((on, mdp.t_scale), (off, mdp.t_scale + mdp.num_steps * 0.09)):
        est = paths.states[:, -1].var(0)
        assert torch.all((est - var).abs() < 4 * var * math.sqrt(2 / (n - 1)))
    traj = mdp.score(agent.policy, off)
    step = off.states[:, 1:] - off.states[:, :-1]
    expected = -0.5 * step.square() / (mdp.t_scale * mdp.dt) - 0.5 * math.log(2 * math.pi * mdp.t_scale * mdp.dt)
    torch.testing.assert_close(traj.log_pf, expected.sum(-1))


def test_backward_paths_end_at_given_states_and_start_at_zero():
    mdp = envs.make_mdp("DiffSampler-GMM25-v0")
    agent = GFlowNetAgent(mdp, GFlowNetConfig("tb", policy=PolicyConfig(langevin=True)))
    x = mdp.target.sample(50, torch.Generator().manual_seed(0))
    paths = mdp.rollout_backward(x, torch.Generator().manual_seed(1), score_clip=agent.policy.score_clip)
    assert torch.equal(paths.states[:, -1], x) and torch.equal(paths.states[:, 0], torch.zeros_like(x))
    assert paths.scores.shape == (50, mdp.num_steps, 2)
    torch.testing.assert_close(
        paths.log_r_states, mdp.target.log_reward(paths.states[:, :-1].reshape(-1, 2)).view(50, -1)
    )


def _train(preset, env_id, steps, seed=0, **env_kwargs):
    mdp = envs.make_mdp(env_id, num_steps=10, **{**PRESETS[preset].env_kwargs, **env_kwargs})
    torch.manual_seed(seed)
    agent = GFlowNetAgent(mdp, PRESETS[preset].agent)
    g = torch.Generator().manual_seed(seed)
    for it in range(steps):
        agent.train_step(it, g, g)
    return agent


@pytest.mark.parametrize("preset", sorted(n for n, p in PRESETS.items() if isinstance(p.agent, GFlowNetConfig)))
def test_presets_train_and_are_bit_identical_under_a_seed(preset):
    a = _train(preset, "DiffSampler-Manywell-v0", 3, dim=4)
    b = _train(preset, "DiffSampler-Manywell-v0", 3, dim=4)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    c = _train(preset, "DiffSampler-Manywell-v0", 3, seed=1, dim=4)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.state_dict().values(), c.state_dict().values()))


def test_training_reduces_tb_loss_on_gaussian():
    mdp = envs.make_mdp("DiffSampler-Gaussian-v0", num_steps=10, dim=2, mean=1.0)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, GFlowNetConfig("tb", batch_size=64))
    g = torch.Generator().manual_seed(0)
    losses = [float(agent.train_step(it, g)["loss"]) for it in range(60)]
    assert sum(losses[-10:]) < 0.2 * sum(losses[:10])


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="nope"):
        GFlowNetConfig("nope")
    with pytest.raises(ValueError, match="-1"):
        GFlowNetConfig(exploration_std=-1.0)
    with pytest.raises(ValueError, match="pis"):
        GFlowNetConfig("pis", exploration_std=0.1)
    with pytest.raises(ValueError, match="hidden_dim"):
        PolicyConfig(hidden_dim=0)


def test_nan_energy_raises_clear_error():
    class NaNTarget(Gaussian):
        def log_reward(self, x):
            return torch.full(x.shape[:-1], float("nan"))

    mdp = envs.DiffusionMDP(NaNTarget(2), num_steps=5)
    agent = GFlowNetAgent(mdp, GFlowNetConfig("tb", batch_size=4))
    with pytest.raises(NonFiniteBatch, match="NaNTarget.*returned NaN at iteration 0"):
        agent.train_step(0, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("objective", ["subtb", "fl-subtb", "fl-db"])
def test_learned_log_z_of_flow_agents_is_the_initial_flow(objective):
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=4, num_steps=10)
    torch.manual_seed(0)
    agent = GFlowNetAgent(mdp, GFlowNetConfig(objective))
    torch.nn.init.normal_(agent.flow.joint[-1].weight)  # a non-trivial flow
    paths = mdp.rollout(agent.policy, 5, torch.Generator().manual_seed(0), need_log_r_states=True)
    with torch.no_grad():
        log_f = agent.log_flows(paths)
    torch.testing.assert_close(log_f[:, 0], agent.learned_log_z().expand(5))
    torch.testing.assert_close(log_f[:, -1], paths.log_r)


def test_learned_variance_and_backward_start_at_the_fixed_kernels_and_then_move():
    """Zero-initialised heads give tanh(0) = 0: exactly the fixed variance and the plain bridge."""
    mdp = envs.make_mdp("DiffSampler-Manywell-v0", dim=4, num_steps=10)
    torch.manual_seed(0)
    plain = DiffusionPolicy(4, 10, mdp.t_scale, PolicyConfig())
    torch.manual_seed(0)
    learned = DiffusionPolicy(4, 10, mdp.t_scale, PolicyConfig(learn_variance=True, learn_backward=True))
    x = mdp.target.sample(32, torch.Generator().manual_seed(0))
    paths = mdp.rollout_backward(x, torch.Generator().manual_seed(1), backward=learned.backward)
    assert torch.equal(paths.states[:, -1], x) and torch.equal(paths.states[:, 0], torch.zeros_like(x))
    with torch.no_grad():
        a, b = mdp.score(learned, paths, learned.backward), mdp.score(plain, paths)
        torch.testing.assert_close(a.log_pb, b.log_pb)
        torch.testing.assert_close(a.log_pf, b.log_pf)
        torch.nn.init.normal_(learned.net.joint[-1].weight, std=0.1)
        torch.nn.init.normal_(learned.backward.joint[-1].weight, std=0.1)
        a = mdp.score(learned, paths, learned.backward)
        assert not torch.allclose(a.log_pf, b.log_pf)
        assert not torch.allclose(a.log_pb, b.log_pb)
        _, var = learned.kernel(x, learned.time_features(learned.times[3:4])[0][0])
        base = mdp.t_scale * mdp.dt
        assert torch.all(var >= base * math.exp(-4) * 0.999) and torch.all(var <= base * math.exp(4) * 1.001)
