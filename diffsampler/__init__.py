"""diffsampler: diffusion samplers of unnormalised densities, trained as GFlowNets and RL agents.

Subpackages: ``diffsampler.envs`` (targets, the diffusion MDP, Gymnasium environments),
``diffsampler.agents`` (samplers, objectives, metrics, training, baselines) and
``diffsampler.buffers`` (replay buffer and local search).

The repository keeps these as its top-level folders ``envs/``, ``agents/`` and ``buffers/``; the
installed distribution maps them into this package (setuptools ``package-dir``), so that the
distribution claims no generic top-level import name. In a source checkout (this folder beside
``pyproject.toml`` and ``envs/``) the package's path also covers the checkout's root, so that every
checkout (a git worktree, a CI clone) imports its own folders, whichever checkout is installed in
editable mode.

Console scripts: ``diffsampler-train`` and ``diffsampler-benchmark`` (``diffsampler.cli``).
``diffsampler.__version__`` is the package version.

Importing the package registers the Gymnasium ids ``DiffSampler-*-v0`` (string entry points; torch is
not imported), so ``gymnasium.make("diffsampler:DiffSampler-GMM25-v0")`` works without a prior import.
"""

from pathlib import Path as _Path

_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "envs" / "__init__.py").is_file():
    __path__.append(str(_root))  # noqa: F821 - the package's own __path__
del _Path, _root

from diffsampler._version import __version__  # noqa: E402, F401 - single-sourced (pyproject reads it)
from diffsampler.registration import register_builtin_envs as _register  # noqa: E402 - needs the __path__ above

_register()
del _register
