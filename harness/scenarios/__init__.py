"""The three kinds of cells: inference (quality and speed of a precision), training (a few steps
of a training mode) and serving (an engine under a workload). Each scenario package holds the
function that runs one cell in a worker process (``run.py``); its settings are a block of the suite
(:mod:`harness.spec`). The scenarios do not import each other.
"""

from __future__ import annotations

from typing import Callable

from harness.base.registry import load_attr

# scenario key -> (suite block name, "module:function" running one cell)
SCENARIOS: dict[str, tuple[str, str]] = {
    "infer": ("inference", "harness.scenarios.inference.run:run"),
    "train": ("training", "harness.scenarios.training.run:run"),
    "serve": ("serving", "harness.scenarios.serving.run:run"),
}


def runner_for(scenario: str) -> Callable:
    """The function that runs a cell of ``scenario`` (imported lazily)."""
    return load_attr(SCENARIOS[scenario][1])  # type: ignore[return-value]
