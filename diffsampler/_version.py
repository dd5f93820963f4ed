"""The package version, read by setuptools (pyproject: dynamic version) and exported as ``diffsampler.__version__``."""

__version__ = "0.2.0.dev0"
