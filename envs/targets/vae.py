"""Latent posterior of a Bernoulli VAE decoder: p(z | image) ∝ N(z; 0, I) · Bernoulli(image; decoder(z)).

The decoder is the paper's MLP ``z -> ReLU(fc3 z) -> fc4 -> logits`` (sigmoid probabilities), d = 20.

Two sources of weights and images:

* the paper's pretrained MNIST VAE (``bernoulli_mnist_vae_epochs_100_seed_1.pt``, 784 pixels) and its
  100 evaluation images (``mnist_evaluation_subset.npy``: the first 100 MNIST test images), read from
  ``data_path`` or the ``DIFFSAMPLER_DATA`` environment variable. No MNIST training set is available
  offline, so the sampler is trained *and* evaluated on those same 100 images: this is amortised
  posterior inference for those images, not generalisation to unseen ones.
* with no path, a VAE of the same shape trained by the library on scikit-learn's bundled 8 x 8
  digits (64 pixels; ``envs.targets.digits_vae``), cached on disk. Its sampler trains on the VAE's
  1,697 training digits and is evaluated on 100 held-out digits.

Images are *not* binarised: as in the paper's code, grey values in [0, 1] are used directly as
Bernoulli targets, ``sum_i x_i log p_i + (1 - x_i) log(1 - p_i)`` (for non-binary x this is the
usual cross-entropy "likelihood", not a normalised density over images). Probabilities are clamped
to [eps, 1 - eps] with eps = 1e-5 as in the paper's code; here that is done exactly and stably in
logit space (logits clamped to ±log((1 - eps) / eps), then the BCE-with-logits form
``x * l - softplus(l)``), so the log-likelihood is never NaN.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffsampler.envs.process import LOG_2PI
from diffsampler.envs.targets.conditional import ConditionalTarget

WEIGHTS_FILE = "bernoulli_mnist_vae_epochs_100_seed_1.pt"
IMAGES_FILE = "mnist_evaluation_subset.npy"
DECODER_KEYS = ("fc3.weight", "fc3.bias", "fc4.weight", "fc4.bias")
ENCODER_KEYS = ("fc1.weight", "fc1.bias", "fc21.weight", "fc21.bias", "fc22.weight", "fc22.bias")
_Z_BOUND = 1e4  # the decoder sees z clamped here, so a huge finite z cannot overflow its logits


class VAEPosterior(ConditionalTarget):
    """``log R(z | x) = log N(z; 0, I) + sum_i [x_i l_i(z) - softplus(l_i(z))]`` with decoder logits l.

    Args:
        decoder: the VAE's state dict: ``fc3.weight`` (h, d), ``fc3.bias``, ``fc4.weight`` (c, h),
            ``fc4.bias``; with the encoder's keys (fc1, fc21, fc22) too, ``encoder_log_z`` gives
            reference values of log Z(image).
        conditions: (N, c) training images in [0, 1], flattened.
        eval_conditions: (M, c) evaluation images.
        image_shape: shape of one image, for figures (e.g. (28, 28)).
        prob_eps: Bernoulli probabilities are clamped to [eps, 1 - eps] (the paper: 1e-5); in (0, 0.5).
        t_scale: reference variance (the paper's VAE runs use its code's default, 5).
        source: a short description of where the weights came from.
    """

    condition_bounds = (0.0, 1.0)

    def __init__(
        self,
        decoder: dict,
        conditions: torch.Tensor,
        eval_conditions: torch.Tensor,
        image_shape: tuple[int, ...],
        prob_eps: float = 1e-5,
        t_scale: float = 5.0,
        source: str = "",
    ):
        missing = [k for k in DECODER_KEYS if k not in decoder]
        if missing:
            raise ValueError(f"decoder state dict lacks {missing}; has {sorted(decoder)}")
        w3, b3, w4, b4 = (decoder[k].detach().to(torch.float32) for k in DECODER_KEYS)
        hidden, dim = w3.shape
        if b3.shape != (hidden,) or w4.shape[1] != hidden or b4.shape != (w4.shape[0],):
            raise ValueError(f"inconsistent decoder shapes: fc3 {tuple(w3.shape)}, fc4 {tuple(w4.shape)}")
        if not (isinstance(prob_eps, (int, float)) and 0 < prob_eps < 0.5):
            raise ValueError(f"prob_eps must be in (0, 0.5), got {prob_eps!r}")
        self.w3, self.b3, self.w4, self.b4 = w3, b3, w4, b4
        has_encoder = all(k in decoder for k in ENCODER_KEYS)
        self.encoder = {k: decoder[k].detach().to(torch.float32) for k in ENCODER_KEYS} if has_encoder else None
        self.dim, self.cond_dim = int(dim), int(w4.shape[0])
        self.conditions = self._check_images(conditions, "conditions")
        self.eval_conditions = self._check_images(eval_conditions, "eval_conditions")
        if math.prod(image_shape) != self.cond_dim:
            raise ValueError(f"image_shape {image_shape} does not have {self.cond_dim} pixels")
        self.image_shape = tuple(image_shape)
        self.prob_eps = float(prob_eps)
        self.logit_bound = math.log((1 - prob_eps) / prob_eps)
        self.t_scale = t_scale
        self.plot_bounds = (-4.0, 4.0)
        self.source = source

    def _check_images(self, images: torch.Tensor, name: str) -> torch.Tensor:
        images = torch.as_tensor(images, dtype=torch.float32).reshape(len(images), -1)
        if images.shape[1] != self.cond_dim or len(images) == 0:
            raise ValueError(f"{name} must be (N >= 1, {self.cond_dim}) images, got {tuple(images.shape)}")
        if not bool(((images >= 0) & (images <= 1)).all()):
            raise ValueError(f"{name} must have pixel values in [0, 1]")
        return images.contiguous()

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder logits ``(..., c)`` of latents ``(..., d)``."""
        h = torch.relu(F.linear(z.clamp(-_Z_BOUND, _Z_BOUND), self.w3.to(z), self.b3.to(z)))
        return F.linear(h, self.w4.to(z), self.b4.to(z))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel probabilities ``(..., c)`` (clamped as in the likelihood)."""
        return torch.sigmoid(self.logits(z).clamp(-self.logit_bound, self.logit_bound))

    def log_likelihood(self, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        logits = self.logits(z).clamp(-self.logit_bound, self.logit_bound)
        return (image * logits - F.softplus(logits)).sum(-1)

    def log_reward(self, z: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.dim or image.shape[-1] != self.cond_dim:
            raise ValueError(
                f"{self!r}: expected z (..., {self.dim}) and image (..., {self.cond_dim}), "
                f"got {tuple(z.shape)} and {tuple(image.shape)}"
            )
        log_prior = -0.5 * (z.square().sum(-1) + self.dim * LOG_2PI)
        return log_prior + self.log_likelihood(z, image)

    @torch.no_grad()
    def encoder_log_z(self, images: torch.Tensor, samples: int = 1000, generator=None):
        """Reference estimates of log Z(image) = log p(image) by importance sampling from the VAE's own
        encoder q(z | image): ``(ELBO, IW bound)``, each (M,), from ``samples`` draws per image.

        The IW bound tightens as ``samples`` grows; it is independent of any trained sampler, so it is
        the yardstick for a sampler's per-image ``log_z_rw``.
        """
        if self.encoder is None:
            raise ValueError(f"{self!r} was built without the encoder's weights (fc1, fc21, fc22)")
        e = self.encoder
        elbo, iw = [], []
        for chunk in images.split(max(1, 200_000 // samples)):  # bounds the (samples, chunk, pixels) logits
            h = torch.relu(F.linear(chunk, e["fc1.weight"], e["fc1.bias"]))
            mu, log_var = F.linear(h, e["fc21.weight"], e["fc21.bias"]), F.linear(h, e["fc22.weight"], e["fc22.bias"])
            eps = torch.randn(samples, *mu.shape, generator=generator)
            z = mu + (0.5 * log_var).exp() * eps  # (samples, chunk, d)
            log_q = -0.5 * (eps.square() + LOG_2PI + log_var).sum(-1)
            log_w = self.log_reward(z, chunk) - log_q
            elbo.append(log_w.mean(0))
            iw.append(torch.logsumexp(log_w, 0) - math.log(samples))
        return torch.cat(elbo), torch.cat(iw)

    def __repr__(self) -> str:
        return f"VAEPosterior(dim={self.dim}, pixels={self.cond_dim}, conditions={len(self.conditions)}, {self.source})"


def resolve_data_file(data_path, filename: str, subdir: str) -> Path | None:
    """The file ``filename`` from ``data_path`` (the file itself, a directory holding it, or a data root
    holding ``subdir/filename``), else from ``$DIFFSAMPLER_DATA``; None when neither is given."""
    root = data_path if data_path is not None else os.environ.get("DIFFSAMPLER_DATA") or None
    if root is None:
        return None
    root = Path(root).expanduser()
    for candidate in (root, root / filename, root / subdir / filename):
        if candidate.is_file() and candidate.name == filename:
            return candidate
    if root.is_file():  # a file under another name: take it as given
        return root
    where = "data_path" if data_path is not None else "$DIFFSAMPLER_DATA"
    raise FileNotFoundError(
        f"{filename} not found at {where}={str(root)!r} (looked at {root}, {root / filename} and "
        f"{root / subdir / filename}); the paper's pretrained VAE and its evaluation images come from "
        "the public code of Sendera et al. 2024 (GFNOrg/gfn-diffusion, vae/energies/data/)"
    )


def load_mnist_vae(weights: Path, prob_eps: float = 1e-5, t_scale: float = 5.0) -> VAEPosterior:
    """The paper's MNIST VAE; its 100 evaluation images (beside the weights) are both condition sets."""
    images_file = weights.with_name(IMAGES_FILE)
    if not images_file.is_file():
        raise FileNotFoundError(f"evaluation images {IMAGES_FILE} not found beside the VAE weights at {images_file}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    images = torch.from_numpy(np.load(images_file).astype(np.float32)).reshape(-1, 28 * 28)
    source = f"MNIST VAE {weights.name}, trained and evaluated on the {len(images)} images of {images_file.name}"
    return VAEPosterior(state, images, images, (28, 28), prob_eps, t_scale, source)


def vae(
    data_path: str | os.PathLike | None = None,
    prob_eps: float = 1e-5,
    t_scale: float = 5.0,
    cache_dir: str | os.PathLike | None = None,
) -> VAEPosterior:
    """The VAE latent-posterior target: the paper's MNIST VAE from ``data_path`` / ``$DIFFSAMPLER_DATA``,
    or, with neither, the library's default digits VAE (trained on first use, cached in ``cache_dir``,
    ``$DIFFSAMPLER_CACHE`` or ``~/.cache/diffsampler``)."""
    weights = resolve_data_file(data_path, WEIGHTS_FILE, "vae")
    if weights is not None:
        return load_mnist_vae(weights, prob_eps, t_scale)
    from diffsampler.envs.targets.digits_vae import default_digits_vae

    model = default_digits_vae(cache_dir)
    source = f"default 8x8 digits VAE ({len(model['train'])} training / {len(model['eval'])} held-out digits)"
    return VAEPosterior(model["state_dict"], model["train"], model["eval"], (8, 8), prob_eps, t_scale, source)
