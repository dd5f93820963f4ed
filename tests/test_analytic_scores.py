"""Targets' closed-form scores (``log_reward_and_score``) equal autograd's, and are used only where they
describe the target's own ``log_reward``."""

import pytest
import torch

from diffsampler.envs.engine import clipped_score
from diffsampler.envs.targets.base import EvaluationCounter, analytic_score
from diffsampler.envs.targets.funnel import easy_funnel, funnel
from diffsampler.envs.targets.gmm import gmm9, gmm25
from diffsampler.envs.targets.manywell import Manywell

TARGETS = {"manywell8": lambda: Manywell(8), "funnel": funnel, "easy_funnel": easy_funnel, "25gmm": gmm25, "9gmm": gmm9}


def _autograd(target, x):
    xg = x.clone().requires_grad_(True)
    log_r = target.log_reward(xg)
    return log_r.detach(), torch.autograd.grad(log_r.sum(), xg)[0]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_closed_form_scores_equal_autograd(name):
    target = TARGETS[name]()
    gen = torch.Generator().manual_seed(0)
    x = 3.0 * torch.randn(400, target.dim, generator=gen, dtype=torch.float64)
    if name.endswith("funnel"):
        x[0, 1:] = 0.0  # the guarded rows: rest == 0, and a large x0
        x[1, 0] = 40.0
    log_r, grad = analytic_score(target)(x)
    ref_log_r, ref_grad = _autograd(target, x)
    torch.testing.assert_close(log_r, ref_log_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-9)


def test_a_changed_log_reward_gets_autograd_scores_of_itself():
    class Tilted(Manywell):
        def log_reward(self, x):
            return super().log_reward(x) + x[..., 0]

    tilted = Tilted(4)
    assert analytic_score(tilted) is None  # the subclass's closed form would describe the parent
    x = torch.randn(5, 4)
    torch.testing.assert_close(clipped_score(tilted, x, 1e2)[1], _autograd(tilted, x)[1].clamp(-1e2, 1e2))
    patched = Manywell(4)
    patched.log_reward = lambda x: x.sum(-1) * float("nan")  # e.g. a broken energy patched in
    assert analytic_score(patched) is None
    assert torch.isnan(clipped_score(patched, x, 1e2)[0]).all()


def test_the_evaluation_counter_counts_closed_form_calls_once_per_row():
    target = Manywell(4)
    counter = EvaluationCounter(target)
    assert analytic_score(target) is not None  # still used once counted
    clipped_score(target, torch.randn(7, 4), 1e2)
    target.log_reward(torch.randn(3, 4))
    assert counter.count == 10
