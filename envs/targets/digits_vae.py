"""The library's default VAE: the paper's architecture on scikit-learn's bundled 8 x 8 digits.

So that ``DiffSampler-VAE-v0`` works on a fresh machine with no data files, a VAE of the paper's
shape (encoder 64 -> 400 -> 2 x 20, decoder 20 -> 400 -> 64; ReLU hidden layers, Bernoulli pixels)
is trained on the 1,797 digits of ``sklearn.datasets.load_digits`` (pixel values / 16, in [0, 1]),
with a fixed seed, on first use (a few seconds on one CPU thread), and cached on disk. A fixed
seeded permutation holds out 100 digits as evaluation images; the other 1,697 train the VAE (and
are the conditions the amortised sampler trains on).

Cache: ``$DIFFSAMPLER_CACHE`` or ``~/.cache/diffsampler`` (or an explicit ``cache_dir``), one file per
recipe version and seed, written atomically (temporary file, then ``os.replace``).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

RECIPE_VERSION = 1  # bump when the recipe below changes, so stale caches are not reused
N_EVAL = 100
LATENT, HIDDEN = 20, 400
WB = ("weight", "bias")


def cache_directory(cache_dir: str | os.PathLike | None = None) -> Path:
    root = cache_dir or os.environ.get("DIFFSAMPLER_CACHE") or Path.home() / ".cache" / "diffsampler"
    return Path(root).expanduser()


def load_digit_images() -> torch.Tensor:
    """The 1,797 bundled 8 x 8 digits as (1797, 64) float32 in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the default VAE target is trained on scikit-learn's bundled digits: install scikit-learn "
            "(pip install 'diffsampler[vae]'), or pass data_path= the paper's MNIST VAE"
        ) from None
    return torch.from_numpy(load_digits().data).to(torch.float32) / 16.0


def _linear(fan_in: int, fan_out: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    bound = 1.0 / math.sqrt(fan_in)
    w = (torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=gen) * 2 - 1) * bound
    return w.requires_grad_(True), b.requires_grad_(True)


def train_digits_vae(seed: int = 0, epochs: int = 150, batch_size: int = 128, lr: float = 1e-3) -> dict:
    """Train the default VAE (Adam on the negative ELBO: Bernoulli cross-entropy + KL) on one thread.

    Returns ``{"state_dict", "train", "eval", "seed", "epochs", "recipe", "train_elbo"}`` with the
    paper's state-dict keys (fc1, fc21, fc22, fc3, fc4) and the train / held-out images.
    """
    images = load_digit_images()
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(images), generator=gen)
    eval_images, train_images = images[perm[:N_EVAL]], images[perm[N_EVAL:]]
    pixels = images.shape[1]
    shapes = {"fc1": (pixels, HIDDEN), "fc21": (HIDDEN, LATENT), "fc22": (HIDDEN, LATENT)}
    shapes |= {"fc3": (LATENT, HIDDEN), "fc4": (HIDDEN, pixels)}
    params = {name: _linear(*shape, gen) for name, shape in shapes.items()}
    opt = torch.optim.Adam([p for pair in params.values() for p in pair], lr=lr)

    def layer(name, x):
        return F.linear(x, *params[name])

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices; one thread also makes the result independent of the machine's
    try:
        n = len(train_images)
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            total = torch.zeros(())
            for start in range(0, n, batch_size):
                x = train_images[order[start : start + batch_size]]
                h = torch.relu(layer("fc1", x))
                mu, logvar = layer("fc21", h), layer("fc22", h)
                z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
                logits = layer("fc4", torch.relu(layer("fc3", z)))
                rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
                kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum()
                loss = (rec + kl) / len(x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(x)
    finally:
        torch.set_num_threads(threads)
    state = {f"{name}.{kind}": t.detach().clone() for name, pair in params.items() for kind, t in zip(WB, pair)}
    return {
        "state_dict": state,
        "train": train_images,
        "eval": eval_images,
        "seed": seed,
        "epochs": epochs,
        "recipe": RECIPE_VERSION,
        "train_elbo": float(-total / n),
    }


def default_digits_vae(cache_dir: str | os.PathLike | None = None, seed: int = 0) -> dict:
    """The cached default VAE (see ``train_digits_vae``), trained and cached on first use."""
    directory = cache_directory(cache_dir)
    path = directory / f"digits_vae_recipe{RECIPE_VERSION}_seed{seed}.pt"
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    model = train_digits_vae(seed)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(model, f)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole new file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return model
