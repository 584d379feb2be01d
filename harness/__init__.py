"""LLM efficiency benchmark harness.

Data flows one way: suite spec -> planner -> runner -> worker -> scenario -> records -> store ->
compare / asv / reports. The package is built in floors, each importing only from itself or below
(import-linter's contracts in ``pyproject.toml``), from the bottom up: ``base``, ``results``,
``metrics``, the axes (``precisions``, ``training``, ``parallel``, ``engines``, ``models``),
``measure`` and ``analytic``, ``spec``, ``scenarios``, ``pipeline``, ``track``, and the faces
``cli`` and ``pytest_plugin``.

Importing this package needs none of the ML frameworks (torch, transformers, vLLM...): they are
imported lazily by the implementations that run cells, inside the cell's own subprocess.
"""

__version__ = "0.1.0"
