"""Session-wide test settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def hermetic_vae_cache(tmp_path_factory):
    """The default VAE target (trained on first use, a few seconds) caches into a session directory,
    never the user's ~/.cache; ``DIFFSAMPLER_DATA`` is ignored so that defaults are the library's own."""
    saved = {k: os.environ.get(k) for k in ("DIFFSAMPLER_CACHE", "DIFFSAMPLER_DATA")}
    os.environ["DIFFSAMPLER_CACHE"] = str(tmp_path_factory.mktemp("diffsampler-cache"))
    os.environ.pop("DIFFSAMPLER_DATA", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
