"""The three kinds of cells: inference (quality and speed of a precision), training (a few steps
of a training mode) and serving (an engine under a workload). Each scenario module holds its
settings model (a block of the suite) and the function that runs one cell in a worker process.
"""

from __future__ import annotations

from typing import Callable

from harness.registry import load_attr

# scenario key -> (suite block name, "module:function" running one cell)
SCENARIOS: dict[str, tuple[str, str]] = {
    "infer": ("inference", "harness.scenarios.inference:run"),
    "train": ("training", "harness.scenarios.training:run"),
    "serve": ("serving", "harness.scenarios.serving:run"),
}


def runner_for(scenario: str) -> Callable:
    """The function that runs a cell of ``scenario`` (imported lazily)."""
    return load_attr(SCENARIOS[scenario][1])  # type: ignore[return-value]
