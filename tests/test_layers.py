"""The floors of the house hold (import-linter's contracts in pyproject.toml), the contracts bite on a
deliberate upward import, and the light faces work with the ML frameworks made unimportable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300)


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(REPO / "harness", root / "harness", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_floors_hold():
    res = _lint(REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 kept, 0 broken" in res.stdout


@pytest.mark.parametrize("module, line, broken", [
    # the bottom floor reaching for the gate
    ("harness/base/errors.py", "from harness.track import compare", "harness.base.errors -> harness.track.compare"),
    # an axis reaching for the planner (the circle this layout removed)
    ("harness/precisions/dense.py", "from harness.pipeline.planner import Plan",
     "harness.precisions.dense -> harness.pipeline.planner"),
    # an import needed only for a type annotation counts too
    ("harness/engines/hf_static.py", "if False:\n    from harness.spec.cell import Cell",
     "harness.engines.hf_static -> harness.spec.cell"),
])
def test_an_upward_import_breaks_the_floors(tmp_path, module, line, broken):
    root = _copy(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    res = _lint(root)
    assert res.returncode == 1, res.stdout
    assert "Floors: faces > track" in res.stdout and "BROKEN" in res.stdout
    assert broken in res.stdout


def test_an_axis_importing_another_breaks_their_independence(tmp_path):
    root = _copy(tmp_path)
    path = root / "harness/training/lora.py"
    path.write_text(path.read_text() + "\nfrom harness.precisions.bnb4 import BnB4bit  # noqa\n")
    res = _lint(root)
    assert res.returncode == 1, res.stdout
    assert "The axes do not import each other BROKEN" in res.stdout
    assert "harness.training.lora -> harness.precisions.bnb4" in res.stdout


# Every framework import fails (finding the package still works, as for a broken install).
BLOCK_FRAMEWORKS = """
import importlib.abc, importlib.machinery, sys
class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'vllm', 'bitsandbytes', 'peft', 'gptqmodel', 'accelerate'):
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ImportError(f'{spec.name} is blocked: the light faces must not need it')
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Block())
"""


def test_the_light_faces_work_without_the_frameworks(tmp_path):
    from harness.results.environment import capture
    from harness.results.records import Metric, Record
    from harness.results.store import Store

    suite = REPO / "suites" / "default.yaml"
    env = capture()
    for side, tok_s in (("base", 100.0), ("new", 80.0)):
        Store(tmp_path / side).append(Record(
            record_id=side, suite="s", cell_id="s-serve-x", cell_key="k", code_key="c", cell={"scenario": "serve"},
            status="ok", environment=env, seed=0, started_at="2026-01-01T00:00:00Z", duration_s=1.0, command="x",
            metrics={"output_tok_s": Metric(value=tok_s, unit="tok/s")}))
    runs = {
        "import harness": ([], 0),
        "validate": (["validate", str(suite)], 0),
        "plan": (["plan", str(suite)], 0),
        "compare": (["compare", str(tmp_path / "base"), str(tmp_path / "new")], 1),  # a 20 % throughput drop
        "report": (["report", str(tmp_path / "new"), "--out", str(tmp_path / "report")], 0),
    }
    for name, (args, want) in runs.items():
        code = BLOCK_FRAMEWORKS + (f"import sys\nfrom harness.cli import app\nsys.argv = ['harness', *{args!r}]\napp()"
                                   if args else "import harness")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert res.returncode == want, f"{name}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        assert "is blocked" not in res.stderr, f"{name} needed a framework:\n{res.stderr[-3000:]}"
    assert "regression" in subprocess.run([sys.executable, "-c", BLOCK_FRAMEWORKS + (
        "import sys\nfrom harness.cli import app\n"
        f"sys.argv = ['harness', 'compare', {str(tmp_path / 'base')!r}, {str(tmp_path / 'new')!r}]\napp()")],
        capture_output=True, text=True, timeout=120).stdout
    assert (tmp_path / "report" / "report.html").is_file()
