"""How a command line ends: exceptions -> one ``error:`` line and an exit status (no traceback for the
failures a user can act on)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from diffsampler.agents.errors import TrainingInterrupted
from diffsampler.cli.args import UsageError

# Exception type -> exit status, first match wins. Anything else is a bug: its traceback is shown.
EXIT_STATUS: tuple[tuple[type, int], ...] = (
    (UsageError, 2),
    (FloatingPointError, 3),  # NonFiniteBatch, TrainingDiverged (agents.guard), non-finite checkpoint
    (FileNotFoundError, 2),
    (ValueError, 2),  # bad values, damaged or foreign run directories, a locked run directory
    (ImportError, 2),  # an optional dependency (RL libraries, ray, scikit-learn) or a --target module
    (OSError, 1),  # I/O: a full disk, a read-only directory
)


INTERRUPTED = "interrupted (a second Ctrl-C or SIGTERM stops at once, without a checkpoint)"


def guarded(run: Callable[[], int | None], interrupted: str = INTERRUPTED) -> int:
    """``run()``'s status (None: 0), or the status of the exception it raised, printed as one line."""
    try:
        return run() or 0
    except TrainingInterrupted as err:
        print(f"\n{err}", file=sys.stderr)
        return 128 + err.signum
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    except Exception as err:
        for kind, status in EXIT_STATUS:
            if isinstance(err, kind):
                text = str(err).strip() or type(err).__name__
                if isinstance(err, OSError) and err.strerror and err.filename is None:
                    text = err.strerror  # our own OSErrors carry the whole message (no "[Errno 28]")
                print(f"error: {text}", file=sys.stderr)
                return status
        raise
