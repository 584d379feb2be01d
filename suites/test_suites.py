"""Pytest entry of the declarative suites: one ``test_cell[<cell id>]`` per cell of each *.yaml here.

Run ``pytest suites/ --benchmark-only`` (add ``--benchmark-json PATH`` for pytest-benchmark's JSON,
``--harness-model REF`` to point every suite at another model).
"""

from harness.pytest_plugin import run_cell_benchmark


def test_cell(request, harness_cell, benchmark, harness_runner, harness_store):
    run_cell_benchmark(request, harness_cell, benchmark, harness_runner, harness_store)
