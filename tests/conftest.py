"""Test-session set-up: where the reference data live, a private cache, and skipping what needs absent data.

The LGCP target reads the pines from ``$DIFFSAMPLER_DATA``; tests default it to ``../shared/data`` from
the project root (the layout of the project's checkouts). Without the file, tests parametrised with the
``lgcp`` target or the ``DiffSampler-LGCP-v0`` id are skipped with the reason (the synthetic LGCP, which
needs no data, still runs). The default VAE target (trained on first use, a few seconds) caches into a
session directory, never the user's ~/.cache; VAE tests that must see the library's own default (no data
path) use the ``no_data_path`` fixture.
"""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "DIFFSAMPLER_DATA" not in os.environ and SHARED_DATA.is_dir():
    os.environ["DIFFSAMPLER_DATA"] = str(SHARED_DATA)
NEEDS_PINES = {"lgcp", "DiffSampler-LGCP-v0"}


def pines_available() -> bool:
    from diffsampler.envs.targets.lgcp import pines_file

    try:
        pines_file()
    except FileNotFoundError:
        return False
    return True


def pytest_collection_modifyitems(config, items):
    if pines_available():
        return
    skip = pytest.mark.skip(reason="pines data not found: set DIFFSAMPLER_DATA to a data directory (see lgcp.py)")
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        flat = [v for p in params.values() for v in (p if isinstance(p, tuple) else (p,))]
        if any(isinstance(v, str) and v in NEEDS_PINES for v in flat):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def hermetic_cache(tmp_path_factory):
    saved = os.environ.get("DIFFSAMPLER_CACHE")
    os.environ["DIFFSAMPLER_CACHE"] = str(tmp_path_factory.mktemp("diffsampler-cache"))
    yield
    if saved is None:
        os.environ.pop("DIFFSAMPLER_CACHE", None)
    else:
        os.environ["DIFFSAMPLER_CACHE"] = saved


@pytest.fixture
def no_data_path(monkeypatch):
    """``DIFFSAMPLER_DATA`` unset: targets fall back to the library's own defaults (the digits VAE)."""
    monkeypatch.delenv("DIFFSAMPLER_DATA", raising=False)
