"""The exceptions a run may end with, importable without torch (the command lines map them to exit statuses
before torch is loaded; ``diffsampler.cli.outcome``)."""

from __future__ import annotations


class NonFiniteBatch(FloatingPointError):
    """A training batch whose log-rewards, loss or gradient are not finite (policy ``"error"``;
    ``agents.guard``)."""


class TrainingDiverged(FloatingPointError):
    """The training loss exploded (``agents.guard.DIVERGENCE_FACTOR``)."""


class TrainingInterrupted(Exception):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM after saving its checkpoint; ``signum`` says which."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
