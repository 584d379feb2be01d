"""LLM efficiency benchmark harness.

Data flows one way: suite spec -> planner -> runner -> records -> store -> reports.
Importing this package needs none of the ML frameworks (torch, transformers, vLLM...): they are
imported lazily by the implementations that run cells, inside the cell's own subprocess.
"""

__version__ = "0.1.0"
