"""Energy budgets: evaluation marks on the axis of energy evaluations spent by training.

A mark ``b`` stands for "the sampler after ``b`` energy evaluations": the last state of a run whose
cumulative training evaluations are at most ``b`` (the iterations whose forward, backward and local-search
evaluations fit). A step's cost is known only once it has run (a local-search refresh spends 60,000
evaluations at once), so a runner that steps in uneven amounts keeps a copy of its model before each step
while a mark is pending (``snapshot``; a copy of the parameters, no host sync) and, when a step crosses
marks, evaluates that copy for them (``crossed``). A runner whose steps cost a known amount (an RL run
spends one evaluation per finished episode, ``episode_batch`` at a time) evaluates before the step that
would cross (``due``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def check_marks(marks: Iterable[int], name: str = "eval_energy") -> tuple[int, ...]:
    """``marks`` as a sorted tuple of distinct positive integers, or a ValueError naming ``name``."""
    marks = tuple(marks)
    bad = [m for m in marks if isinstance(m, bool) or not isinstance(m, int) or m < 1]
    if bad:
        raise ValueError(f"{name} must hold positive integers (energy evaluations), got {bad!r}")
    return tuple(sorted(set(marks)))


def parse_energies(text: str) -> tuple[int, ...]:
    """``"1e5,1e6"`` -> ``(100000, 1000000)``; a ValueError for anything not a positive whole number."""
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"energy budget {item!r} is not a number (e.g. 1e5)") from None
        if not (math.isfinite(value) and value >= 1 and value.is_integer()):
            raise ValueError(f"energy budget {item!r} must be a positive whole number")
        out.append(int(value))
    if not out:
        raise ValueError(f"no energy budgets in {text!r}")
    return tuple(sorted(set(out)))


class EnergyMarks:
    """The marks of a run not yet evaluated (those at or above the energy already spent)."""

    def __init__(self, marks: Iterable[int], spent: int = 0):
        self.pending = [b for b in check_marks(marks) if b >= spent]

    def __bool__(self) -> bool:
        return bool(self.pending)

    def crossed(self, before: int, after: int) -> list[int]:
        """Marks a step from ``before`` to ``after`` evaluations went past (``before <= b < after``): the state
        before that step is their point. They are no longer pending."""
        out = [b for b in self.pending if before <= b < after]
        self.pending = [b for b in self.pending if b not in out]
        return out

    def due(self, spent: int, step_cost: int) -> list[int]:
        """Marks the next step of ``step_cost`` evaluations would go past (``spent + step_cost > b``): the
        current state is their point. They are no longer pending."""
        return self.crossed(spent, spent + step_cost)


def snapshot(module) -> dict:
    """A detached copy of ``module.state_dict()`` (to evaluate later with ``module.load_state_dict``)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}
