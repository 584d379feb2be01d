"""How cells get run: the planner expands a suite into cells and decides skips before anything runs
(:mod:`.planner`, pure), the runner runs each cell (or engine-start group) in its own process and
turns whatever happens into records (:mod:`.runner`), and the worker is that process
(:mod:`.worker`, ``python -m harness.pipeline.worker``)."""
