"""What an axis may read of a cell: small structural protocols, so no axis imports the spec or the planner.

A cell (:class:`harness.spec.cell.Cell`) is built from the axes' config classes; typing the axes'
``supports(cell, host)``, ``prepare(model, cell)`` and ``start(cell, model)`` against the cell class
itself would tie every axis to the spec floor above it (and the spec to every axis: a circle).
These protocols name only what the axes use; :class:`~harness.spec.cell.Cell` satisfies them.
"""

from __future__ import annotations

from typing import Any, Protocol


class PrecisionView(Protocol):
    """A precision as other axes see it."""

    kind: str

    @property
    def label(self) -> str: ...

    @property
    def quantized(self) -> bool: ...

    @property
    def dtype(self) -> str: ...


class CellView(Protocol):
    """A resolved cell as the axes see it: its coordinates on every axis and its settings."""

    suite: str
    id: str
    scenario: str
    device: str
    seed: int
    timeout_s: float
    group: str | None
    settings: dict[str, Any]
    precision: Any  # a PrecisionView; Any here so that each axis' own config class type-checks
    reference: Any
    mode: Any
    parallel: Any
    engine: Any
    workload: Any
    model: Any


class StepView(Protocol):
    """A training cell's step settings as a parallel engine sees them (:class:`harness.spec.training.StepSettings`)."""

    batch_size: int
    seq_len: int
    grad_accum: int
    optimizer: str
    lr: float
