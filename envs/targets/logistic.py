"""Bayesian logistic regression: the posterior of the weights, a real-data target without known log Z."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from diffsampler.envs.process import LOG_2PI
from diffsampler.envs.targets.base import Target, bounded_rows, like

# |w_j| beyond this: the prior density is below exp(-1e29); -inf there keeps w @ X^T free of inf - inf.
_BOUND = 1e15


class BayesianLogisticRegression(Target):
    """``log R(w) = log N(w; 0, prior_std^2 I) + sum_i log sigmoid(s_i <w, (1, x_i)>)``, ``s_i = 2 y_i - 1``.

    ``w = (bias, weights)``, so ``dim = n_features + 1``. The prior's normaliser is included, so Z is the
    model evidence p(y | X); it has no closed form (``log_Z`` None) and there are no exact samples.

    Args:
        features: (N, p) design matrix (without the constant column).
        labels: (N,) labels in {0, 1}.
        prior_std: standard deviation of the isotropic Gaussian prior on all p + 1 weights.
        t_scale: reference variance sigma^2 (default 1: the posterior is narrow).
    """

    def __init__(self, features, labels, prior_std: float = 1.0, t_scale: float = 1.0, plot_bounds=(-4.0, 4.0)):
        features = torch.as_tensor(features, dtype=torch.float64)
        labels = torch.as_tensor(labels, dtype=torch.float64)
        if features.dim() != 2 or labels.shape != features.shape[:1]:
            shapes = f"{tuple(features.shape)}, {tuple(labels.shape)}"
            raise ValueError(f"features (N, p) and labels (N,) expected, got {shapes}")
        if not bool(torch.isfinite(features).all()) or not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError("features must be finite and labels in {0, 1}")
        if not (isinstance(prior_std, (int, float)) and math.isfinite(prior_std) and prior_std > 0):
            raise ValueError(f"prior_std must be a finite number > 0, got {prior_std!r}")
        design = torch.cat([torch.ones(len(features), 1, dtype=torch.float64), features], 1)
        self.signed_design = (2.0 * labels - 1.0).unsqueeze(-1) * design  # row i: s_i (1, x_i)
        self.dim = design.shape[1]
        self.prior_std = float(prior_std)
        self.t_scale = t_scale
        self.plot_bounds = plot_bounds

    def log_reward(self, w: torch.Tensor) -> torch.Tensor:
        w, ok = bounded_rows(w, 0.0, _BOUND)
        log_lik = F.logsigmoid(w @ like(self.signed_design, w).T).sum(-1)
        var = self.prior_std**2
        log_prior = -0.5 * w.square().sum(-1) / var - 0.5 * self.dim * (LOG_2PI + math.log(var))
        return torch.where(ok, log_lik + log_prior, torch.full_like(log_lik, -math.inf))


def breast_cancer(prior_std: float = 1.0, t_scale: float = 1.0) -> BayesianLogisticRegression:
    """Bayesian logistic regression on scikit-learn's bundled Wisconsin breast-cancer data (d = 31).

    569 cases, 30 features standardised to mean 0 and (population) standard deviation 1, a bias, and
    scikit-learn's labels (1 = benign, 0 = malignant); prior N(0, I). (The paper's code instead divides
    the features by their standard deviation without centring and uses a flat or N(0, 10^2) prior.)
    Reference, not exact: importance sampling with 5 x 10^6 draws from a multivariate t_5 around the
    Laplace approximation gives log Z = -55.23 (spread of 5 repeats 0.01; the Laplace value is -55.63).
    """
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as err:
        raise ImportError(
            "the breast-cancer target needs scikit-learn's bundled data: pip install 'scikit-learn>=1.3' "
            "(or the diffsampler[targets] extra)"
        ) from err
    x, y = load_breast_cancer(return_X_y=True)
    x = torch.as_tensor(x, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0, unbiased=False)
    return BayesianLogisticRegression(x, torch.as_tensor(y), prior_std, t_scale)
