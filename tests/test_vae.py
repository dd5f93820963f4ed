"""The VAE latent-posterior target (envs/targets/vae.py) and the default digits VAE (digits_vae.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal

from diffsampler.envs.targets import ConditionalTarget, digits_vae, make_target
from diffsampler.envs.targets.digits_vae import default_digits_vae, train_digits_vae
from diffsampler.envs.targets.vae import IMAGES_FILE, WEIGHTS_FILE, VAEPosterior

# The library's own default VAE (digits), whatever $DIFFSAMPLER_DATA says (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("no_data_path")

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
HAVE_DATA = (DATA / "vae" / WEIGHTS_FILE).is_file() and (DATA / "vae" / IMAGES_FILE).is_file()
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"the paper's MNIST VAE is not at {DATA / 'vae'} (../shared/data from the repo root)"
)


def tiny_vae(dim=3, pixels=6, hidden=5, n=4, scale=1.0, seed=0, prob_eps=1e-5) -> VAEPosterior:
    """A random decoder and random binary images: no data file needed."""
    g = torch.Generator().manual_seed(seed)
    decoder = {
        "fc3.weight": scale * torch.randn(hidden, dim, generator=g),
        "fc3.bias": torch.randn(hidden, generator=g),
        "fc4.weight": scale * torch.randn(pixels, hidden, generator=g),
        "fc4.bias": torch.randn(pixels, generator=g),
    }
    images = (torch.rand(n, pixels, generator=g) > 0.5).float()
    return VAEPosterior(decoder, images, images[:2], (pixels,), prob_eps=prob_eps, t_scale=1.0)


def reference_log_reward(target: VAEPosterior, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """N(z; 0, I) x Bernoulli(image; clamp(sigmoid(decoder(z)))) by torch.distributions, in float64."""
    z, image = z.double(), image.double()
    h = torch.relu(z @ target.w3.double().T + target.b3.double())
    probs = torch.sigmoid(h @ target.w4.double().T + target.b4.double())
    probs = probs.clamp(target.prob_eps, 1 - target.prob_eps)
    prior = Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
    return prior + Bernoulli(probs=probs).log_prob(image).sum(-1)


@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: saturated logits, where the probability clamp is active
def test_log_reward_matches_torch_distributions(scale):
    target = tiny_vae(scale=scale)
    g = torch.Generator().manual_seed(1)
    z = 2 * torch.randn(64, target.dim, generator=g, dtype=torch.float64)
    image = target.conditions[torch.randint(len(target.conditions), (64,), generator=g)].double()
    ours = target.log_reward(z, image)
    ref = reference_log_reward(target, z, image)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-9)
    if scale > 1:  # the clamp bound was reached somewhere, so the test covers it
        assert bool((target.logits(z).abs() > target.logit_bound).any())


def test_log_reward_broadcasts_batched_and_is_differentiable():
    target = tiny_vae()
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 7, target.dim, generator=g, dtype=torch.float64)
    image = target.conditions[:4].double()
    paths = target.log_reward(z, image.unsqueeze(1))  # (4, 7): one image per path, over its states
    flat = target.log_reward(z.reshape(28, -1), image.repeat_interleave(7, 0)).view(4, 7)
    torch.testing.assert_close(paths, flat)
    rows = torch.stack([target.log_reward(z[i, j], image[i]) for i in range(4) for j in range(7)]).view(4, 7)
    torch.testing.assert_close(paths, rows)
    zz = z[:, 0].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: target.log_reward(v, image), (zz,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_reward_never_nan_on_extreme_inputs(dtype):
    target = tiny_vae(scale=10.0)
    big = torch.finfo(torch.float32).max / 10
    values = [0.0, 1e-30, 1.0, 1e4, 1e15, big, -big, -1e15]
    z = torch.tensor(values, dtype=dtype).unsqueeze(-1).expand(-1, target.dim).contiguous()
    image = target.conditions[:1].to(dtype).expand(len(values), -1)
    out = target.log_reward(z, image)
    assert out.shape == (len(values),) and bool((torch.isfinite(out) | (out == -math.inf)).all()), out
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(target.log_reward(zg, image).sum(), zg)
    assert bool(torch.isfinite(grad[:4]).all())  # moderate z: finite scores


def test_bad_inputs_are_clear_errors():
    target = tiny_vae()
    with pytest.raises(ValueError, match=r"expected z \(\.\.\., 3\) and image \(\.\.\., 6\)"):
        target.log_reward(torch.zeros(2, 3), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="prob_eps"):
        tiny_vae(prob_eps=0.0)
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        VAEPosterior(_decoder_of(tiny_vae()), torch.full((2, 6), 2.0), torch.zeros(1, 6), (6,))
    with pytest.raises(ValueError, match="lacks"):
        VAEPosterior({"fc3.weight": torch.zeros(5, 3)}, torch.zeros(2, 6), torch.zeros(1, 6), (6,))
    with pytest.raises(FileNotFoundError, match="GFNOrg/gfn-diffusion"):
        make_target("vae", data_path="/nonexistent/diffsampler-data")


def _decoder_of(target: VAEPosterior) -> dict:
    return {"fc3.weight": target.w3, "fc3.bias": target.b3, "fc4.weight": target.w4, "fc4.bias": target.b4}


def test_default_digits_vae_trains_once_caches_and_reloads_identically(tmp_path, monkeypatch):
    calls = []

    def quick(seed):  # the real recipe, one epoch: this test is about caching
        calls.append(seed)
        return train_digits_vae(seed, epochs=1)

    monkeypatch.setattr(digits_vae, "train_digits_vae", quick)
    first = default_digits_vae(tmp_path)  # a miss: trains and caches
    files = list(tmp_path.iterdir())
    assert calls == [0] and len(files) == 1 and files[0].suffix == ".pt"  # no temporary file left
    again = default_digits_vae(tmp_path)  # a hit: reloads
    assert calls == [0]
    for key, value in first["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key]), key
    assert torch.equal(first["train"], again["train"]) and torch.equal(first["eval"], again["eval"])


def test_default_digits_vae_is_a_useful_model():
    model = default_digits_vae()  # the session's cache (tests/conftest.py): trained once per test session
    train, held_out = model["train"], model["eval"]
    assert train.shape == (1697, 64) and held_out.shape == (100, 64) and model["epochs"] == 150
    assert not bool((torch.cdist(held_out, train) == 0).any())  # held-out digits are not training digits
    # its ELBO per digit beats a pixel-independent Bernoulli model's log-likelihood
    p = train.mean(0).clamp(1e-3, 1 - 1e-3)
    independent = (train * p.log() + (1 - train) * (1 - p).log()).sum(-1).mean()
    assert model["train_elbo"] > float(independent) + 2
    target = make_target("vae")
    assert isinstance(target, ConditionalTarget) and target.dim == 20 and target.cond_dim == 64
    assert torch.equal(target.conditions, train) and torch.equal(target.eval_conditions, held_out)


def test_digits_training_is_seeded():
    a, b, c = train_digits_vae(seed=3, epochs=1), train_digits_vae(seed=3, epochs=1), train_digits_vae(seed=4, epochs=1)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert not torch.equal(a["state_dict"]["fc4.weight"], c["state_dict"]["fc4.weight"])


@needs_data
def test_paper_mnist_vae_loads_from_any_path_form(monkeypatch):
    targets = [make_target("vae", data_path=p) for p in (DATA, DATA / "vae", DATA / "vae" / WEIGHTS_FILE)]
    monkeypatch.setenv("DIFFSAMPLER_DATA", str(DATA))
    targets.append(make_target("vae"))
    z = torch.randn(5, 20, generator=torch.Generator().manual_seed(0))
    values = [t.log_reward(z, t.conditions[:5]) for t in targets]
    for t, v in zip(targets, values):
        assert t.dim == 20 and t.cond_dim == 784 and len(t.conditions) == len(t.eval_conditions) == 100
        torch.testing.assert_close(v, values[0])
    images = np.load(DATA / "vae" / IMAGES_FILE)
    assert np.array_equal(targets[0].conditions.numpy(), images.reshape(100, 784))  # grey values, not binarised


@needs_data
def test_paper_mnist_vae_importance_sampling_log_likelihood():
    """With the VAE's own encoder as proposal, log p(image) comes out near the paper's ~ -100 per image
    (the encoder is independent of our log-reward, so this checks the decoder wiring and likelihood)."""
    target = make_target("vae", data_path=DATA)
    state = torch.load(DATA / "vae" / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    x = target.eval_conditions[:10]
    h = torch.relu(x @ state["fc1.weight"].T + state["fc1.bias"])
    mu, logvar = h @ state["fc21.weight"].T + state["fc21.bias"], h @ state["fc22.weight"].T + state["fc22.bias"]
    q = Normal(mu, (0.5 * logvar).exp())
    z = q.mean + q.stddev * torch.randn(500, 10, 20, generator=torch.Generator().manual_seed(0))
    log_w = target.log_reward(z, x) - q.log_prob(z).sum(-1)
    log_px = torch.logsumexp(log_w, 0) - math.log(500)
    elbo = log_w.mean(0)
    assert bool((log_px >= elbo).all())
    assert -130 < float(log_px.mean()) < -60, log_px
    ours = target.encoder_log_z(x, 500, torch.Generator().manual_seed(0))  # the same draws
    torch.testing.assert_close(ours[0], elbo, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(ours[1], log_px, rtol=1e-5, atol=1e-3)
